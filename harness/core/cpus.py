"""The cores this process may use, which every thread pool of the harness (ONNX Runtime's streams, the
certainty estimator's workers) divides among its work."""

from __future__ import annotations

import os

from harness.core.errors import HarnessError


def cpu_budget() -> int:
    """The cores this process may use: $HARNESS_CPUS where set (a Ray worker sets its share of the node), else
    the cores of its affinity mask, or the machine's where the platform has no such mask."""
    setting = os.environ.get("HARNESS_CPUS", "").strip()
    if setting:
        if not setting.isdigit() or int(setting) < 1:
            raise HarnessError(f"HARNESS_CPUS={setting!r} is not understood; set it to a positive whole number, or "
                               "leave it unset")
        return int(setting)
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else (os.cpu_count() or 1)
