"""The shapes generator: deterministic bytes, exact masks, correct geometry, and the three variants."""

from __future__ import annotations

import numpy as np
import pytest

from harness.data import DataError
from harness.data.shapes import (POLYGONS, SHAPE_CLASSES, VARIANTS, _texture, _variant_key, generate_shapes,
                                 quadrant_labels, shape_mask)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_same_seed_same_bytes_and_images_independent_of_set_size(variant):
    a = generate_shapes(6, 32, seed=11, variant=variant)
    b = generate_shapes(6, 32, seed=11, variant=variant)
    assert a.images.tobytes() == b.images.tobytes() and a.segments.tobytes() == b.segments.tobytes()
    assert np.array_equal(a.labels, b.labels) and a.names == b.names
    tail = generate_shapes(2, 32, seed=11, variant=variant, start=4)
    assert tail.images.tobytes() == a.images[4:].tobytes() and tail.names == a.names[4:]
    other = generate_shapes(6, 32, seed=12, variant=variant)
    assert not np.array_equal(other.images, a.images)


def test_masks_cover_exactly_the_object_pixels():
    size, seed = 48, 5
    images = generate_shapes(12, size, seed=seed)
    for i in range(len(images)):
        rng = np.random.default_rng([seed, i, _variant_key("single")])
        assert int(rng.integers(len(SHAPE_CLASSES))) == images.labels[i]
        background = _texture(rng, size)
        mask, image = images.masks[i], images.images[i]
        assert mask.any()
        np.testing.assert_array_equal(image[:, ~mask], background[:, ~mask])      # untouched outside
        colours = np.unique(image[:, mask].T, axis=0)
        assert len(colours) == 1                                                  # one flat colour inside
        assert np.any(image[:, mask] != background[:, mask])


@pytest.mark.parametrize("name", SHAPE_CLASSES)
def test_shape_area_matches_its_geometry(name):
    radius, size = 200.0, 512
    mask = shape_mask(name, size, (size / 2, size / 2), radius, angle=0.3)
    if name == "disc":
        expected = np.pi * (0.85 * radius) ** 2
    elif name == "ring":
        expected = np.pi * radius ** 2 * (1 - 0.55 ** 2)
    else:
        x, y = POLYGONS[name].T * radius
        expected = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))   # shoelace
    assert mask.sum() == pytest.approx(expected, rel=0.01)


def test_classes_are_balanced_and_distinguishable():
    images = generate_shapes(600, 32, seed=3)
    counts = np.bincount(images.labels, minlength=len(SHAPE_CLASSES))
    assert counts.min() > 60, counts
    areas = {name: shape_mask(name, 64, (32, 32), 28, 0.0).sum() for name in SHAPE_CLASSES}
    assert len(set(areas.values())) == len(SHAPE_CLASSES)
    assert images.images.dtype == np.float32 and 0 <= images.images.min() and images.images.max() <= 1


def test_multi_objects_have_different_classes_and_do_not_overlap():
    images = generate_shapes(20, 64, variant="multi")
    for label, segments, mask in zip(images.labels, images.segments, images.masks):
        present = set(np.unique(segments)) - {-1}
        assert 2 <= len(present) <= 3 and label in present
        np.testing.assert_array_equal(mask, segments == label)


def test_grid_quadrants_hold_four_different_classes():
    images = generate_shapes(10, 64, variant="grid")
    quadrants = quadrant_labels(images.segments)
    assert quadrants.shape == (10, 4)
    assert all(len(set(row)) == 4 for row in quadrants.tolist())
    np.testing.assert_array_equal(quadrants[:, 0], images.labels)
    top_left = images.segments[:, :32, :32]
    assert set(np.unique(top_left[0])) == {-1, images.labels[0]}


def test_bad_requests_raise_clear_errors():
    with pytest.raises(DataError, match="unknown shapes variant 'blobs'"):
        generate_shapes(1, 32, variant="blobs")
    with pytest.raises(DataError, match="even image size"):
        generate_shapes(1, 33, variant="grid")
