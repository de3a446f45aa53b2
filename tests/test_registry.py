"""One registry idiom (harness/core/registry.py): every table of named things is a Registry, a second object under
one name is a bug of ours, and an unknown name is the user's error naming the known ones."""

from __future__ import annotations

import pytest

from harness.attribution import NAMED_METHODS, SAMPLERS
from harness.attribution.aggregators import AGGREGATORS
from harness.core.errors import DataError, HarnessError, SamplingError
from harness.core.registry import Registry
from harness.data import DATASETS
from harness.experiments import EXPERIMENTS
from harness.gradients import VJP_RULES
from harness.gradients.freeze import FREEZERS
from harness.metrics import METRICS


@pytest.mark.parametrize("registry", [VJP_RULES, FREEZERS, SAMPLERS, AGGREGATORS, NAMED_METHODS, METRICS,
                                      EXPERIMENTS, DATASETS])
def test_every_table_of_named_things_is_a_registry(registry):
    assert isinstance(registry, Registry)


def test_a_second_object_under_one_name_is_a_bug_not_a_user_error():
    registry = Registry("widget")
    registry.add("a", 1)
    with pytest.raises(RuntimeError, match="widget a is registered twice") as caught:
        registry.add("a", 2)
    assert not isinstance(caught.value, HarnessError) and registry["a"] == 1


def test_an_unknown_name_raises_the_registry_error_listing_the_known_ones():
    with pytest.raises(SamplingError, match="unknown aggregator 'magic'; known: abs-mean, mean"):
        AGGREGATORS.lookup("magic")
    with pytest.raises(DataError, match="unknown dataset 'magic'; known: shapes, shapes-multi"):
        DATASETS.lookup("magic")
    sorted_registry = Registry("thing", sorted_names=True, entries=[("b", 1), ("a", 2)])
    with pytest.raises(HarnessError, match="known: a, b"):
        sorted_registry.lookup("c")


def test_the_decorator_registers_under_every_name():
    registry = Registry("rule")

    @registry.register("Relu", "LeakyRelu")
    def rule():
        return None

    assert registry.lookup("Relu") is rule and registry.names() == ["Relu", "LeakyRelu"]


def test_the_gradient_runtime_is_the_runtime_the_engine_declares(tmp_path, monkeypatch):
    from pathlib import Path

    from harness.runtime.gradient import GradientRuntime
    from harness.runtime.protocol import Runtime

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    model = Path(__file__).resolve().parents[1] / "exported_models" / "digits_cnn.onnx"
    assert isinstance(GradientRuntime(str(model)), Runtime)
