"""Users' images: a folder per class, a plain folder of unlabelled images, or a CSV of ``path,label`` rows.

Every image goes through one pipeline, whatever its file format:

* **Geometry.** The image is scaled, keeping its aspect ratio, so that it just covers the target H x W (for a
  square target: its shorter side becomes the target size), and the centre H x W is cut out — the standard
  ImageNet evaluation pipeline in spirit, without the extra 256/224 margin. Both steps are one antialiased
  bicubic Pillow resize of the centre box, so the crop is positioned to the sub-pixel. JPEGs are decoded at a
  reduced scale (``Image.draft``) when they are at least twice the size needed. EXIF orientation is applied.
* **Channels.** Grey (``1``, ``L``, ``I;16``, ``I``, ``F``) becomes RGB by repetition when the model wants three
  channels; colour becomes grey by ITU-R 601 luminance when it wants one. CMYK, YCbCr, HSV and palette images
  are converted to RGB. Transparency (``RGBA``, ``LA``, ``PA``, palette or colour-key transparency) is
  composited over **black**, the value the harness treats as "absent": a fully transparent pixel becomes 0.
* **Depth.** 8-bit pixels are divided by 255; 16-bit pixels (``I;16``) by 65535; 32-bit integer pixels (``I``)
  by 65535 when they all lie in 0..65535 (how Pillow holds 16-bit data), and floating-point pixels (``F``) are
  kept when they lie in [0, 1]. Other ranges are ambiguous, so such images are skipped. (Pillow itself
  reduces 16-bit-per-channel colour PNGs to 8 bits.)

Files that cannot be used soundly — corrupt or truncated files, non-images with an image extension, unreadable
files, images over ``max_pixels`` (a decompression-bomb guard), unknown pixel formats — are skipped with a
:class:`DataWarning` that names the file and the reason; a run never stops on one bad image. A truncated image
is skipped rather than padded (``ImageFile.LOAD_TRUNCATED_IMAGES`` is left alone). When nothing loads, the
loader raises :class:`DataError`.
"""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from harness import DEFAULT_SEED
from harness.core.errors import DataWarning, SkippedFileWarning, SkippedImage
from harness.core.files import open_regular, read_text
from harness.data.base import DataError, ImageSet, match_channels

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
MAX_PIXELS = 10_000 * 10_000     # images with more pixels are skipped (decompression-bomb guard)
RESAMPLE = Image.Resampling.BICUBIC
UNLABELLED = -1
PATH_HEADERS = {"path", "file", "filename", "file_name", "filepath", "image", "image_path"}
LABEL_HEADERS = {"label", "class", "class_name", "target", "category"}


def load_image_folder(path: str | Path, input_size, label_names=None, limit: int | None = None,
                      extensions=IMAGE_EXTENSIONS, max_pixels: int = MAX_PIXELS,
                      seed: int = DEFAULT_SEED) -> ImageSet:
    """The images under ``path`` as an :class:`ImageSet` of float32 pixels in [0, 1], [N, C, H, W].

    ``path`` is one of:

    * a folder with one subfolder per class (images found recursively inside each; hidden entries ignored);
      a subfolder's class is its position in ``label_names`` (e.g. the model card's labels) — or its integer
      name as an index — and without ``label_names`` the sorted subfolder names are the classes;
    * a plain folder of images with no class subfolders: every label is -1 (unknown), so audits that need no
      labels can run on unlabelled images;
    * a CSV file of ``path,label`` rows (an optional header row; extra columns ignored). Relative paths are
      relative to the CSV's folder. A label is a name in ``label_names`` or an integer index; an empty label
      or -1 means unknown. Without ``label_names``, all-integer labels are indices named ``"0"``, ``"1"``, ...
      and otherwise each distinct label is a class, in sorted order. The header is a first row naming a
      column (``path``, ``file``, ``image``, ... or ``label``, ``class``, ...) that is not itself a file.

    ``input_size`` is (C, H, W) with C 1 or 3. The images are a seeded, class-balanced sample: ``seed`` shuffles
    the images of each label and the order of the labels, then the labels take turns (one image of each label,
    then a second of each, ...), and the first ``limit`` that load are kept. A smaller ``limit`` under the same
    seed takes a prefix of a larger one, and the sample does not depend on the order the files are listed in
    (names are sorted before the draw). Files without one of
    ``extensions`` (case-insensitive) are ignored; unusable image files — and images over ``max_pixels``
    pixels — are skipped with a :class:`DataWarning`, and a missing CSV file likewise. Raises
    :class:`DataError` when nothing loads.
    """
    channels, height, width = _checked_size(input_size)
    if limit is not None and limit < 1:
        raise DataError(f"limit must be a positive number of images, not {limit}")
    root = Path(path)
    if root.is_file():
        entries, classes = _csv_entries(root, label_names)
    elif root.is_dir():
        entries, classes = _folder_entries(root, label_names, {e.lower() for e in extensions})
    else:
        raise DataError(f"{path} is neither an image folder nor a CSV file")
    entries = _balanced_sample(sorted(entries, key=lambda entry: entry[0]), seed)
    wanted = len(entries) if limit is None else min(limit, len(entries))
    images = np.empty((wanted, channels, height, width), np.float32)
    labels, names, skipped = [], [], 0
    for name, file, label in entries:
        if len(names) == wanted:
            break
        try:
            images[len(names)] = read_image(file, input_size, max_pixels)
        except SkippedImage as error:
            skipped += 1
            warnings.warn(f"skipped {name}: {error}", SkippedFileWarning, stacklevel=2)
            continue
        labels.append(label)
        names.append(name)
    if not names:
        raise DataError(f"no usable images in {path}: " + (f"all {skipped} image files were skipped (see the "
                        "warnings)" if skipped else f"no files ending in {', '.join(extensions)} were found"))
    if skipped:
        warnings.warn(f"skipped {skipped} unusable image file(s) in {path}", DataWarning, stacklevel=2)
    images = images[:len(names)].copy() if len(names) < wanted else images
    return ImageSet(images, np.asarray(labels, np.int64), tuple(names), tuple(classes))


def _balanced_sample(entries: list, seed: int) -> list:
    """Sorted (name, file, label) entries in a seeded, class-balanced order: each label's entries shuffled, the
    labels in a shuffled order, and the labels taking turns (every label's first entry, then every second)."""
    rng = np.random.default_rng(seed)
    by_label: dict = {}
    for entry in entries:
        by_label.setdefault(entry[2], []).append(entry)
    labels = list(by_label)
    turn = {labels[i]: position for position, i in enumerate(rng.permutation(len(labels)))}
    keyed = []
    for label, members in by_label.items():
        keyed.extend((rank, turn[label], members[i]) for rank, i in enumerate(rng.permutation(len(members))))
    return [entry for _, _, entry in sorted(keyed, key=lambda item: item[:2])]


def read_image(file: str | Path, input_size, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """One image file as float32 [C, H, W] in [0, 1], preprocessed as this module describes.

    Raises :class:`SkippedImage` with the reason when the file cannot be used soundly. Warnings Pillow raises
    while decoding are re-raised as :class:`DataWarning` naming the file.
    """
    channels, height, width = _checked_size(input_size)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with open_regular(file, "image file", SkippedImage) as handle, Image.open(handle) as image:
                pixels = _decoded(image, height, width, max_pixels)
        except SkippedImage:
            raise
        except Image.DecompressionBombError as error:
            raise SkippedImage(f"too many pixels ({error})") from None
        except Exception as error:  # corrupt, truncated, not an image, unreadable: skip, never crash mid-run
            raise SkippedImage(f"not a readable image ({type(error).__name__}: {error})") from None
    for warning in caught:
        if not issubclass(warning.category, Image.DecompressionBombWarning):  # max_pixels is checked instead
            warnings.warn(f"{file}: {warning.message}", DataWarning, stacklevel=2)
    return np.clip(match_channels(pixels[None], channels)[0], 0.0, 1.0)


def _decoded(image: Image.Image, height: int, width: int, max_pixels: int) -> np.ndarray:
    """Decode, orient, flatten, resize and crop an opened image to float32 [K, H, W], K 1 or 3."""
    w, h = image.size
    if w < 1 or h < 1:
        raise SkippedImage(f"the image is empty ({w}x{h})")
    if w * h > max_pixels:
        raise SkippedImage(f"{w}x{h} = {w * h:,} pixels is over the limit of {max_pixels:,}")
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # unreadable EXIF: use the image as stored
        orientation = 1
    if image.format == "JPEG":
        oriented = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
        scale = max(width / oriented[0], height / oriented[1])
        image.draft(None, (max(1, int(np.ceil(w * scale))), max(1, int(np.ceil(h * scale)))))
    image.load()  # raises for truncated or corrupt data
    if orientation != 1:
        image = ImageOps.exif_transpose(image)
    return resized_crop(_flattened(image), height, width)


def centre_box(size: tuple[int, int], height: int, width: int) -> tuple[float, float, float, float]:
    """The largest box of aspect ``width : height`` centred in an image of ``size`` (w, h): what a resize that
    just covers H x W followed by a centre crop keeps."""
    w, h = size
    scale = max(width / w, height / h)
    crop_w, crop_h = width / scale, height / scale
    return ((w - crop_w) / 2, (h - crop_h) / 2, (w + crop_w) / 2, (h + crop_h) / 2)


def resized_crop(image: Image.Image, height: int, width: int, box=None) -> np.ndarray:
    """The ``box`` (default: :func:`centre_box`) of an ``L``/``RGB``/``F`` image resized to H x W in one
    antialiased bicubic step (sub-pixel placement), as float32 [K, H, W] in [0, 1]."""
    box = centre_box(image.size, height, width) if box is None else box
    pixels = np.asarray(image.resize((width, height), RESAMPLE, box=box, reducing_gap=3.0), np.float32)
    if image.mode != "F":
        pixels = pixels / np.float32(255)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _flattened(image: Image.Image) -> Image.Image:
    """The image as ``L`` or ``RGB`` (8-bit, transparency composited over black) or ``F`` (scaled to [0, 1])."""
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_scaled_high_depth(np.asarray(image), mode))
    transparent = "transparency" in image.info and mode in ("L", "RGB", "P")
    if mode in ("PA", "RGBa") or (mode == "P" and transparent) or (mode == "RGB" and transparent):
        image = image.convert("RGBA")
    elif mode == "La" or (mode == "L" and transparent):
        image = image.convert("LA")
    elif mode == "1":
        image = image.convert("L")
    elif mode in ("P", "CMYK", "YCbCr", "HSV", "RGBX"):
        image = image.convert("RGB")
    elif mode not in ("L", "RGB", "LA", "RGBA"):
        raise SkippedImage(f"unsupported pixel mode {mode}")
    if image.mode in ("LA", "RGBA"):
        flat = Image.new(image.mode[:-1], image.size, 0)
        flat.paste(image.convert(flat.mode), (0, 0), image.getchannel("A"))
        return flat
    return image


def _scaled_high_depth(pixels: np.ndarray, mode: str) -> np.ndarray:
    """16-bit, 32-bit integer or float pixels as float32 in [0, 1], by their format's real range."""
    if mode == "F":
        if not (np.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() <= 1):
            raise SkippedImage("floating-point pixels outside [0, 1] have no known range")
        return pixels.astype(np.float32)
    if pixels.dtype.kind == "u":
        return (pixels / np.float32(np.iinfo(pixels.dtype).max)).astype(np.float32)
    if pixels.min() < 0 or pixels.max() > 65535:
        raise SkippedImage(f"{mode} pixels outside 0..65535 have no known range")
    return (pixels / np.float32(65535)).astype(np.float32)


def _checked_size(input_size) -> tuple[int, int, int]:
    try:
        channels, height, width = (int(d) for d in input_size)
    except (TypeError, ValueError):
        raise DataError(f"input_size must be (channels, height, width), got {input_size!r}") from None
    if channels not in (1, 3) or height < 1 or width < 1:
        raise DataError(f"input_size must be (1 or 3 channels, height, width), got {tuple(input_size)}")
    return channels, height, width


def _folder_entries(root: Path, label_names, extensions: set[str]):
    """(name, file, label) for a folder of class subfolders, or of unlabelled images; and the class names."""
    def images_in(folder: Path, recursive: bool):
        found = folder.rglob("*") if recursive else folder.iterdir()
        return sorted(f for f in found if f.suffix.lower() in extensions and not f.is_dir()   # special files are
                                                                                        # skipped, with why
                      and not any(part.startswith(".") for part in f.relative_to(root).parts))

    subfolders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    class_files = {d.name: files for d in subfolders if (files := images_in(d, recursive=True))}
    loose = images_in(root, recursive=False)
    if not class_files:
        return [(f.relative_to(root).as_posix(), f, UNLABELLED) for f in loose], tuple(label_names or ())
    if loose:
        warnings.warn(f"{root} has class subfolders; the {len(loose)} image(s) directly inside it are ignored",
                      DataWarning, stacklevel=3)
    classes = tuple(label_names) if label_names is not None else tuple(sorted(class_files))
    entries = []
    for folder, files in class_files.items():
        label = _label_index(folder, classes)
        if label is None or label == UNLABELLED:
            raise DataError(f"class folder {folder!r} in {root} is not one of the {len(classes)} labels "
                            f"({_shown(classes)}) nor an index into them")
        entries += [(f.relative_to(root).as_posix(), f, label) for f in files]
    return entries, classes


def _csv_entries(table: Path, label_names):
    """(name, file, label) for each row of a ``path,label`` CSV, and the class names."""
    text = read_text(table, "CSV", DataError)
    try:
        rows = [(number, [cell.strip() for cell in row])
                for number, row in enumerate(csv.reader(io.StringIO(text, newline="")), 1)
                if any(cell.strip() for cell in row)]
    except csv.Error as error:
        raise DataError(f"cannot read the CSV {table} ({error})") from None
    base = table.parent
    if rows:
        first = rows[0][1] + [""]
        if ((first[0].lower() in PATH_HEADERS or first[1].lower() in LABEL_HEADERS)
                and not (base / first[0]).is_file()):
            rows = rows[1:]
    raw = [(number, row[0], row[1] if len(row) > 1 else "") for number, row in rows]
    if label_names is not None:
        classes = tuple(label_names)
    elif all(_integer(label) is not None for _, _, label in raw if label):
        classes = tuple(str(i) for i in range(max([_integer(label) for _, _, label in raw if label] + [-1]) + 1))
    else:
        classes = tuple(sorted({label for _, _, label in raw if label}))
    entries = []
    for number, name, label in raw:
        index = _label_index(label, classes) if label else UNLABELLED
        if index is None:
            raise DataError(f"row {number} of {table} ({name},{label}) has label {label!r}, which is not one of "
                            f"the {len(classes)} labels ({_shown(classes)}) nor an index into them")
        file = base / name
        if not file.exists():
            warnings.warn(f"skipped {name}: row {number} of {table} names a file that does not exist",
                          SkippedFileWarning, stacklevel=3)
            continue
        entries.append((name, file, index))
    return entries, classes


def _label_index(label: str, classes: tuple) -> int | None:
    """A class name's position in ``classes``, else an integer index (or -1, unknown); None if neither."""
    if label in classes:
        return classes.index(label)
    index = _integer(label)
    return index if index is not None and -1 <= index < len(classes) else None


def _integer(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _shown(names) -> str:
    return ", ".join(map(repr, names[:10])) + (f", ... {len(names) - 10} more" if len(names) > 10 else "")
