"""The model under evaluation: one way to read a model's card, data, targets and identity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.runs.config import RunConfig
from harness.runs.subject import ModelUnderTest

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "exported_models" / "digits_cnn.onnx"


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def test_a_run_configuration_and_explicit_arguments_make_the_same_model():
    config = RunConfig.load(None, models=[str(DIGITS)], images=5, seed=3, batch_size=4, gallery=2)
    from_config = ModelUnderTest.from_config(DIGITS, config)
    explicit = ModelUnderTest(DIGITS, images=5, seed=3, batch_size=4, gallery=2)
    assert from_config.key == explicit.key and from_config.image_keys == explicit.image_keys
    np.testing.assert_array_equal(from_config.x, explicit.x)
    assert (from_config.seed, from_config.batch_size, from_config.gallery) == (3, 4, 2)


def test_targets_are_the_labels_where_known_and_the_predictions_elsewhere():
    model = ModelUnderTest(DIGITS, images=6)
    np.testing.assert_array_equal(model.predictions, model.runtime.forward(model.x).argmax(axis=1))
    np.testing.assert_array_equal(model.targets, model.data.labels)        # the digits are labelled
    unlabelled = ModelUnderTest(DIGITS, images=6)
    unlabelled.data.labels[:3] = -1
    np.testing.assert_array_equal(unlabelled.targets[:3], unlabelled.predictions[:3])


def test_the_key_changes_with_the_card_and_not_with_the_name():
    plain = ModelUnderTest(DIGITS, images=2)
    assert ModelUnderTest(DIGITS, images=2, name="other").key == plain.key
    changed = ModelUnderTest(DIGITS, images=2, card_overrides={"mean": [0.4], "std": [0.2]})
    assert changed.key != plain.key


def test_photo_references_are_not_the_photos_under_test():
    """Every seed starts the photos with the same ten centre crops; the reference set skips them, so no image
    under test is its own baseline."""
    from harness.data.photos import PHOTO_NAMES
    from harness.runs.subject import REFERENCE_IMAGES

    model = ModelUnderTest(DIGITS, dataset="photos", images=len(PHOTO_NAMES))
    assert model.references.shape == (REFERENCE_IMAGES, 1, 32, 32)
    under_test = {image.tobytes() for image in model.data.images}
    assert not any(reference.tobytes() in under_test for reference in model.references)


def test_the_key_covers_the_reference_set():
    """Expected Gradients depends on the references: other references, another key, so no row is reused."""
    plain = ModelUnderTest(DIGITS, images=2)
    other = ModelUnderTest(DIGITS, images=2, references=plain.references[::-1].copy())
    assert other.key != plain.key and other.image_keys == plain.image_keys
