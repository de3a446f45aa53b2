"""Image folders and CSV lists: labels, preprocessing, odd formats, and skipping what cannot be read."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from harness.data import DataError, load_dataset
from harness.data.folders import DataWarning, SkippedImage, load_image_folder, read_image
from harness.model.card import ModelCard


def save(path, pixels, mode=None, **options):
    """Write ``pixels`` (uint8/uint16 array) as an image file, creating folders; return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.asarray(pixels))
    (image.convert(mode) if mode else image).save(path, **options)
    return path


def flat(value, size=(8, 8), channels=3):
    return np.full((*size, channels) if channels > 1 else size, value, np.uint8)


def load_warning_of(names, *args, **kwargs):
    """Load, expecting a DataWarning that names each of ``names`` (and a summary); return the ImageSet."""
    with pytest.warns(DataWarning) as record:
        data = load_image_folder(*args, **kwargs)
    messages = [str(w.message) for w in record]
    for name in names:
        assert any(f"skipped {name}:" in m for m in messages), messages
    return data


def load_quietly(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load_image_folder(*args, **kwargs)


def by_name(data):
    """The images in name order (the loader's own order is a seeded sample)."""
    return data.subset(np.argsort(np.asarray(data.names)))


@pytest.fixture
def classes(tmp_path):
    """cat/ with two grey-60 images, dog/ with one grey-200 image."""
    save(tmp_path / "cat" / "b.png", flat(60))
    save(tmp_path / "cat" / "a.png", flat(60))
    save(tmp_path / "dog" / "x.jpg", flat(200), quality=95)
    return tmp_path


def test_class_folders_give_sorted_classes_labels_and_names(classes):
    data = load_quietly(classes, (3, 4, 4))
    assert data.label_names == ("cat", "dog")
    assert data.labels[:2].tolist() in ([0, 1], [1, 0])                 # classes taking turns
    data = by_name(data)
    assert data.names == ("cat/a.png", "cat/b.png", "dog/x.jpg")
    assert data.labels.tolist() == [0, 0, 1]
    assert data.labels.dtype == np.int64
    assert data.images.shape == (3, 3, 4, 4) and data.images.dtype == np.float32
    np.testing.assert_allclose(data.images[0], 60 / 255, atol=1e-6)
    np.testing.assert_allclose(data.images[2], 200 / 255, atol=3 / 255)


def test_label_names_from_a_card_set_the_indices(classes):
    data = by_name(load_quietly(classes, (3, 4, 4), label_names=("bird", "dog", "cat")))
    assert data.label_names == ("bird", "dog", "cat")
    assert data.labels.tolist() == [2, 2, 1]


def test_load_dataset_takes_size_and_labels_from_the_card(classes):
    card = ModelCard("x", "NCHW", (1, 5, 6), (0.5,), (0.25,), ("dog", "cat"))
    data = by_name(load_dataset(classes, card, n=2))
    assert data.images.shape == (2, 1, 5, 6)
    assert data.names[1] == "dog/x.jpg" and data.labels.tolist() == [1, 0]      # one image of each class


def test_a_class_folder_not_among_the_labels_is_an_error(classes):
    with pytest.raises(DataError, match="'dog'"):
        load_image_folder(classes, (3, 4, 4), label_names=("cat", "bird"))


def test_a_plain_folder_loads_unlabelled(tmp_path):
    for name in ("2.png", "1.png", "notes.txt"):
        (save(tmp_path / name, flat(10)) if name.endswith(".png") else (tmp_path / name).write_text("hi"))
    data = by_name(load_quietly(tmp_path, (3, 4, 4), label_names=("a", "b")))
    assert data.names == ("1.png", "2.png")
    assert data.labels.tolist() == [-1, -1]
    assert data.label_names == ("a", "b")
    assert load_quietly(tmp_path, (3, 4, 4)).label_names == ()


def test_limit_takes_a_class_balanced_subset(classes):
    data = load_quietly(classes, (3, 4, 4), limit=2)
    assert sorted(data.labels.tolist()) == [0, 1]
    with pytest.raises(DataError):
        load_image_folder(classes, (3, 4, 4), limit=0)


def test_a_limited_take_is_a_seeded_class_balanced_sample(tmp_path):
    """Three classes of 4, 6 and 10 files: every take of 3k holds k of each class while each has that many;
    the seed decides which files, a smaller take is a prefix of a larger one, and the sample does not follow the
    sorted order of the names."""
    for label, count in (("a", 4), ("b", 6), ("c", 10)):
        for i in range(count):
            save(tmp_path / label / f"{i:02d}.png", flat(10 * i, size=(2, 2)))
    full = load_quietly(tmp_path, (1, 2, 2), seed=5)
    assert sorted(full.names) == sorted(set(full.names)) and len(full) == 20
    for take in (3, 6, 9, 12):
        data = load_quietly(tmp_path, (1, 2, 2), limit=take, seed=5)
        assert np.bincount(data.labels, minlength=3).tolist() == [take // 3] * 3
        assert data.names == full.names[:take]
    assert np.bincount(load_quietly(tmp_path, (1, 2, 2), limit=14, seed=5).labels).tolist() == [4, 5, 5]
    samples = {load_quietly(tmp_path, (1, 2, 2), limit=6, seed=seed).names for seed in range(6)}
    assert len(samples) > 3
    assert all(names != tuple(sorted(names)) for names in samples)
    again = load_quietly(tmp_path, (1, 2, 2), limit=6, seed=5)
    assert again.names == full.names[:6] and again.images.tobytes() == full.images[:6].tobytes()


@pytest.mark.parametrize("header", ["path,label\n", ""])
def test_csv_with_or_without_header_names_and_indices(tmp_path, header):
    save(tmp_path / "imgs" / "one.png", flat(0))
    save(tmp_path / "imgs" / "two.png", flat(255))
    save(tmp_path / "three.png", flat(128))
    table = tmp_path / "list.csv"
    table.write_text(header + "imgs/two.png,dog\nimgs/one.png,0\nthree.png,\n")
    data = by_name(load_quietly(table, (3, 4, 4), label_names=("cat", "dog")))
    assert data.names == ("imgs/one.png", "imgs/two.png", "three.png")
    assert data.labels.tolist() == [0, 1, -1]
    assert data.images[0].max() == 0.0 and data.images[1].min() == 1.0


def test_csv_without_label_names(tmp_path):
    save(tmp_path / "a.png", flat(0))
    save(tmp_path / "b.png", flat(0))
    (tmp_path / "names.csv").write_text("a.png,zebra\nb.png,ant\n")
    (tmp_path / "ints.csv").write_text("a.png,2\nb.png,0\n")
    named = by_name(load_quietly(tmp_path / "names.csv", (1, 4, 4)))
    assert named.label_names == ("ant", "zebra") and named.labels.tolist() == [1, 0]
    indexed = by_name(load_quietly(tmp_path / "ints.csv", (1, 4, 4)))
    assert indexed.label_names == ("0", "1", "2") and indexed.labels.tolist() == [2, 0]


def test_csv_with_absolute_paths(tmp_path):
    image = save(tmp_path / "far" / "a.png", flat(0))
    table = tmp_path / "lists" / "l.csv"
    table.parent.mkdir()
    table.write_text(f"{image},1\n")
    data = load_quietly(table, (3, 4, 4), label_names=("x", "y"))
    assert data.names == (str(image),) and data.labels.tolist() == [1]


def test_csv_label_outside_the_labels_is_an_error_naming_the_row(tmp_path):
    save(tmp_path / "a.png", flat(0))
    (tmp_path / "l.csv").write_text("path,label\na.png,cat\na.png,horse\n")
    with pytest.raises(DataError, match="row 3.*horse"):
        load_image_folder(tmp_path / "l.csv", (3, 4, 4), label_names=("cat", "dog"))
    (tmp_path / "l.csv").write_text("a.png,7\n")
    with pytest.raises(DataError, match="row 1"):
        load_image_folder(tmp_path / "l.csv", (3, 4, 4), label_names=("cat", "dog"))


def test_csv_missing_file_is_skipped_with_a_warning(tmp_path):
    save(tmp_path / "a.png", flat(0))
    (tmp_path / "l.csv").write_text("a.png,0\ngone.png,1\n")
    data = load_warning_of(["gone.png"], tmp_path / "l.csv", (3, 4, 4), label_names=("cat", "dog"))
    assert data.names == ("a.png",)


def test_unknown_path_is_an_error(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        load_image_folder(tmp_path / "nowhere", (3, 4, 4))


def test_grey_to_rgb_and_rgb_to_grey(tmp_path):
    save(tmp_path / "grey.png", flat(51, channels=1))
    colour = np.zeros((8, 8, 3), np.uint8)
    colour[..., 0] = 255
    save(tmp_path / "red.png", colour)
    grey = read_image(tmp_path / "grey.png", (3, 4, 4))
    assert grey.shape == (3, 4, 4)
    np.testing.assert_allclose(grey, 0.2, atol=1e-6)
    red = read_image(tmp_path / "red.png", (1, 4, 4))
    assert red.shape == (1, 4, 4)
    np.testing.assert_allclose(red, 0.299, atol=1e-5)


def test_one_bit_and_cmyk_and_palette_images(tmp_path):
    save(tmp_path / "bw.png", flat(255, channels=1), mode="1")
    save(tmp_path / "c.jpg", flat(255), mode="CMYK", quality=100)
    save(tmp_path / "p.png", flat(255), mode="P")
    np.testing.assert_allclose(read_image(tmp_path / "bw.png", (3, 4, 4)), 1.0)
    np.testing.assert_allclose(read_image(tmp_path / "c.jpg", (3, 4, 4)), 1.0, atol=2 / 255)
    np.testing.assert_allclose(read_image(tmp_path / "p.png", (3, 4, 4)), 1.0)


def test_transparency_is_composited_over_black(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3] = 255                 # white everywhere
    rgba[:, 4:, 3] = 255                # right half opaque, left half fully transparent
    save(tmp_path / "rgba.png", rgba)
    pixels = read_image(tmp_path / "rgba.png", (3, 8, 8))
    assert pixels[:, :, 0].max() == 0.0 and pixels[:, :, -1].min() == 1.0
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    palette.paste(0, (0, 0, 4, 8))              # left half index 0 (black), right half index 1 (white)
    palette.save(tmp_path / "p.png", transparency=1)      # white is the transparent index
    np.testing.assert_allclose(read_image(tmp_path / "p.png", (3, 8, 8)), 0.0)
    key = Image.fromarray(flat(255))
    key.save(tmp_path / "key.png", transparency=(255, 255, 255))   # colour-key transparency
    np.testing.assert_allclose(read_image(tmp_path / "key.png", (3, 4, 4)), 0.0)
    half = np.stack([flat(255, channels=1), flat(128, channels=1)], -1)   # LA, alpha 128
    save(tmp_path / "la.png", half, mode="LA")
    np.testing.assert_allclose(read_image(tmp_path / "la.png", (1, 4, 4)), 128 / 255, atol=1 / 255)


def test_sixteen_bit_images_use_their_full_range(tmp_path):
    pixels = np.zeros((8, 8), np.uint16)
    pixels[:, :4] = 65535
    pixels[:, 4:] = 32768
    save(tmp_path / "deep.png", pixels)
    with Image.open(tmp_path / "deep.png") as image:
        assert image.mode == "I;16"
    loaded = read_image(tmp_path / "deep.png", (3, 8, 8))
    np.testing.assert_allclose(loaded[:, :, 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(loaded[:, :, -1], 32768 / 65535, atol=1e-6)
    save(tmp_path / "dim.png", np.full((8, 8), 255, np.uint16))   # 255 of 65535: dark, not clipped to white
    assert read_image(tmp_path / "dim.png", (1, 4, 4)).max() < 0.01


def truncated(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_truncated_files_are_skipped_and_named(tmp_path, suffix):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
    save(tmp_path / f"good.{suffix}", noise)
    truncated(save(tmp_path / f"cut.{suffix}", noise))
    data = load_warning_of([f"cut.{suffix}"], tmp_path, (3, 8, 8))
    assert data.names == (f"good.{suffix}",)


def test_a_text_file_with_an_image_extension_is_skipped(tmp_path):
    save(tmp_path / "a.png", flat(0))
    (tmp_path / "x.png").write_text("not an image")
    data = load_warning_of(["x.png"], tmp_path, (3, 4, 4))
    assert data.names == ("a.png",)


def test_images_over_max_pixels_are_skipped(tmp_path):
    save(tmp_path / "small.png", flat(0, size=(10, 10)))
    save(tmp_path / "huge.png", flat(0, size=(100, 100)))
    data = load_warning_of(["huge.png"], tmp_path, (3, 4, 4), max_pixels=5_000)
    assert data.names == ("small.png",)
    with pytest.raises(SkippedImage, match="10,000 pixels is over the limit of 5,000"):
        read_image(tmp_path / "huge.png", (3, 4, 4), max_pixels=5_000)


def test_a_decompression_bomb_does_not_escape(tmp_path, monkeypatch):
    save(tmp_path / "bomb.png", flat(0, size=(100, 100)))
    save(tmp_path / "ok.png", flat(0, size=(4, 4)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)    # Pillow's own guard now errors on bomb.png
    data = load_warning_of(["bomb.png"], tmp_path, (3, 4, 4))
    assert data.names == ("ok.png",)


def test_nothing_usable_is_an_error(tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG junk")
    (tmp_path / "b.jpg").write_bytes(b"")
    with warnings.catch_warnings(record=True) as record, pytest.raises(DataError, match="all 2 image files"):
        warnings.simplefilter("always")
        load_image_folder(tmp_path, (3, 4, 4))
    assert {str(w.message).split(":")[0] for w in record} == {"skipped a.png", "skipped b.jpg"}
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty"):
        load_image_folder(empty, (3, 4, 4))


def test_resize_and_centre_crop_geometry(tmp_path):
    """A 40x20 image (W x H) with a white 10x10 square in the middle, into 10x10: the shorter side (20) becomes
    10, the width becomes 20 and its centre 10 columns are kept, so the square covers the centre 5x5."""
    pixels = np.zeros((20, 40), np.uint8)
    pixels[5:15, 15:25] = 255
    save(tmp_path / "wide.png", pixels)
    loaded = read_image(tmp_path / "wide.png", (1, 10, 10))[0]
    inside = loaded[3:7, 3:7]
    assert inside.min() > 0.9
    assert loaded[:, 0].max() < 0.05 and loaded[:, -1].max() < 0.05
    assert loaded[0].max() < 0.05 and loaded[-1].max() < 0.05
    np.testing.assert_allclose(loaded, loaded[::-1, ::-1], atol=1e-3)   # centred: symmetric both ways
    # a tall image into a non-square target: the cut keeps the full width and the middle rows
    tall = np.zeros((60, 10), np.uint8)
    tall[25:35] = 255
    save(tmp_path / "tall.png", tall)
    rows = read_image(tmp_path / "tall.png", (1, 4, 10))[0].mean(axis=1)
    assert rows.min() > 0.95    # the 10 middle rows, white, fill the 4-row output


def test_large_jpeg_is_decoded_at_reduced_size_with_the_same_result(tmp_path):
    big = np.zeros((800, 800, 3), np.uint8)
    big[:, 400:] = 255
    save(tmp_path / "big.jpg", big, quality=95)
    loaded = read_image(tmp_path / "big.jpg", (3, 16, 16))
    assert loaded[:, :, :7].max() < 0.05 and loaded[:, :, 9:].min() > 0.95


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((8, 16), np.uint8)       # wide, white left half
    pixels[:, :8] = 255
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6                           # stored rotated: display turns it 90 degrees clockwise
    image.save(tmp_path / "r.jpg", exif=exif, quality=100)
    loaded = read_image(tmp_path / "r.jpg", (1, 16, 8))[0]
    assert loaded.shape == (16, 8)
    assert loaded[:6].max() > 0.9 and loaded[:6].min() > 0.9 and loaded[10:].max() < 0.1


def test_output_is_float32_in_unit_range(tmp_path):
    noise = np.random.default_rng(1).integers(0, 256, (37, 53, 3), np.uint8)
    save(tmp_path / "n.png", noise)
    step = np.zeros((4, 4), np.uint16)
    step[:, 2:] = 65535                        # upscaling a sharp 16-bit edge: bicubic overshoots, clipped
    save(tmp_path / "step.png", step)
    data = load_quietly(tmp_path, (3, 11, 13))
    assert data.images.dtype == np.float32 and data.images.shape == (2, 3, 11, 13)
    assert data.images.min() == 0.0 and data.images.max() == 1.0
    assert 0.4 < data.images[0].mean() < 0.6


def test_32_bit_integer_and_float_pixels(tmp_path):
    save(tmp_path / "i.tif", np.array([[0, 65535, 32768]], np.int32))
    save(tmp_path / "f.tif", np.array([[0, 0.25, 1]], np.float32))
    np.testing.assert_allclose(read_image(tmp_path / "i.tif", (1, 1, 3))[0, 0], [0, 1, 32768 / 65535], atol=1e-6)
    np.testing.assert_allclose(read_image(tmp_path / "f.tif", (1, 1, 3))[0, 0], [0, 0.25, 1], atol=1e-6)
    save(tmp_path / "wide.tif", np.array([[0, 70000, 5]], np.int32))
    save(tmp_path / "hdr.tif", np.array([[0, 2.5, 1]], np.float32))
    with pytest.raises(SkippedImage, match="no known range"):
        read_image(tmp_path / "wide.tif", (1, 1, 3))
    with pytest.raises(SkippedImage, match="no known range"):
        read_image(tmp_path / "hdr.tif", (1, 1, 3))
