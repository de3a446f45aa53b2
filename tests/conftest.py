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
