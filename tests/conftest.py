import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
for path in (TESTS, TESTS.parent):  # test helpers, and export_scripts/ as a package
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


import pytest  # noqa: E402


@pytest.fixture
def numpy_2_quantile(monkeypatch):
    """PAIR saliency 0.2.1 calls np.quantile(..., interpolation=), which numpy 2 removed: map it to method=."""
    import numpy as np

    quantile = np.quantile

    def compatible(a, q, *args, interpolation=None, **kwargs):
        if interpolation is not None:
            kwargs["method"] = interpolation
        return quantile(a, q, *args, **kwargs)

    monkeypatch.setattr(np, "quantile", compatible)


@pytest.fixture
def rule_off_by(monkeypatch):
    """``rule_off_by(op_type, factor)`` replaces the op's gradient rule by one whose input gradients are
    ``factor`` times the correct ones: a subtly wrong rule, for tests that must see it fail."""
    from harness.gradients import VJP_RULES
    from harness.gradients.registry import load_rules

    load_rules()

    def install(op_type: str, factor: float) -> None:
        correct = VJP_RULES[op_type]

        def scaled(ctx):
            correct(ctx)
            ctx.input_grads = {i: ctx.op("Mul", g, ctx.scalar(factor, g)) for i, g in ctx.input_grads.items()}

        monkeypatch.setitem(VJP_RULES, op_type, scaled)

    return install
