"""``load_dataset``: every source through one interface, shaped by the model card."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
from PIL import Image

from harness.data import DATASETS, DataError, Preprocessing, load_dataset, match_channels, normalise
from harness.data.shapes import SHAPE_CLASSES
from harness.model.card import ModelCard


def card(channels=3, size=32, labels=SHAPE_CLASSES, mean=None, std=None):
    return ModelCard(input_name="input", layout="NCHW", input_size=(channels, size, size),
                     mean=mean or (0.5,) * channels, std=std or (0.25,) * channels, labels=tuple(labels))


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_bundled_source_fits_the_card(name):
    images = load_dataset(name, card(3, 32), n=5, seed=3)
    assert images.images.shape == (5, 3, 32, 32) and images.images.dtype == np.float32
    assert len(images.labels) == len(images.names) == 5
    assert 0.0 <= images.images.min() and images.images.max() <= 1.0
    again = load_dataset(name, card(3, 32), n=5, seed=3)
    assert again.images.tobytes() == images.images.tobytes()


def test_channels_follow_the_card():
    grey = load_dataset("shapes", card(1, 32), n=3)
    rgb = load_dataset("shapes", card(3, 32), n=3)
    assert grey.images.shape == (3, 1, 32, 32)
    np.testing.assert_allclose(grey.images[:, 0], rgb.images.transpose(0, 2, 3, 1) @ [0.299, 0.587, 0.114],
                               atol=1e-6)
    digits = load_dataset("digits", card(3, 32, labels=[str(d) for d in range(10)]), n=4)
    np.testing.assert_array_equal(digits.images[:, 0], digits.images[:, 2])   # grey repeated to RGB


def test_generated_masks_survive_and_grid_needs_square_even_images():
    grid = load_dataset("shapes-grid", card(3, 32), n=2)
    assert grid.segments.shape == (2, 32, 32) and grid.masks.any()
    with pytest.raises(DataError, match="square"):
        load_dataset("shapes", ModelCard("input", "NCHW", (3, 32, 48), (0.5,) * 3, (0.25,) * 3, SHAPE_CLASSES))


def test_a_folder_loads_through_the_same_interface(tmp_path):
    for label, colour in (("disc", (255, 0, 0)), ("ring", (0, 0, 255))):
        (tmp_path / label).mkdir()
        Image.new("RGB", (40, 40), colour).save(tmp_path / label / "a.png")
    images = load_dataset(tmp_path, card(3, 32))
    assert images.images.shape == (2, 3, 32, 32)
    assert sorted(images.label_names[i] for i in images.labels) == ["disc", "ring"]
    disc = images.names.index("disc/a.png")
    np.testing.assert_allclose(images.images[disc, :, 5, 5], [1, 0, 0])


def test_photos_are_centre_crops_first_then_seeded_crops_of_the_same_photos():
    from_seed = load_dataset("photos", card(3, 48), n=14, seed=2)
    assert len({name.split("-")[-1] for name in from_seed.names[:10]}) == 10          # each photo once
    assert (from_seed.labels == -1).all()
    assert load_dataset("photos", card(3, 48), n=4, seed=2).images.tobytes() == from_seed.images[:4].tobytes()
    other = load_dataset("photos", card(3, 48), n=14, seed=3)
    assert other.names[:10] != from_seed.names[:10]                                   # the seed orders them
    for name, image in zip(from_seed.names[:10], from_seed.images[:10]):             # centre crops: same pixels
        np.testing.assert_array_equal(image, other.images[other.names.index(name)])
    assert not np.array_equal(from_seed.images[10:], other.images[10:])
    wide = load_dataset("photos", ModelCard("input", "NCHW", (1, 20, 40), (0.5,), (0.25,), None), n=12)
    assert wide.images.shape == (12, 1, 20, 40) and 0 <= wide.images.min() and wide.images.max() <= 1


def test_a_photo_crop_is_the_photo_resized():
    """The coffee photo's centre crop at 40x60 (its own aspect) is the whole photo, downsampled."""
    data = load_dataset("photos", ModelCard("input", "NCHW", (3, 40, 60), (0.5,) * 3, (0.25,) * 3, None), n=10)
    coffee = data.images[data.names.index("photos-coffee")]
    whole = np.asarray(Image.fromarray(skimage.data.coffee()).resize((60, 40), Image.Resampling.BICUBIC,
                                                                        reducing_gap=3.0), np.float32) / 255
    np.testing.assert_allclose(coffee, whole.transpose(2, 0, 1), atol=1e-6)


def test_unknown_source_is_named():
    with pytest.raises(DataError, match="no-such-thing is neither a bundled dataset"):
        load_dataset("no-such-thing", card())


def test_normalisation_and_black_value():
    pixels = np.zeros((1, 3, 2, 2), np.float32)
    pixels[..., 0, 0] = 1.0
    x = normalise(pixels, (0.5, 0.4, 0.3), (0.25, 0.2, 0.1))
    np.testing.assert_allclose(x[0, :, 0, 0], [2.0, 3.0, 7.0], rtol=1e-6)
    np.testing.assert_allclose(Preprocessing((0.5, 0.4, 0.3), (0.25, 0.2, 0.1)).value_of(0.0, 3)[:, 0, 0],
                               [-2.0, -2.0, -3.0])
    with pytest.raises(DataError, match="channels"):
        normalise(pixels, (0.5,), (0.25,))
    with pytest.raises(DataError, match="cannot convert"):
        match_channels(pixels, 2)
