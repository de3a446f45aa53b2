"""The local engine: every unit in this process, one after another (the default)."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from harness.metrics import get_metric
from harness.runs.engines.base import ENGINES, Outcome, Work


@ENGINES.register("local")
class LocalEngine:
    """Runs each unit's task in order with the run's own models (each runtime built at its model's first unit)."""

    name = "local"

    def run(self, work: Work) -> Iterator[Outcome]:
        """Run the task of each unit of ``work`` in turn; yield its outcome."""
        metrics = {model: {name: get_metric(name) for name in names} for model, names in work.metrics.items()}
        for unit in work.units:
            values, maps, seconds = work.task(work.models[unit.model], work.methods[unit.model][unit.method],
                                              np.asarray(unit.images), metrics[unit.model])
            yield Outcome(unit, values, maps, seconds)
