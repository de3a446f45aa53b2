"""Engines that compute a run's units of work: in this process or on a Ray cluster.

In this process (``local``, the default) or on a Ray cluster (``ray``, the optional extra ``harness[ray]``).

A unit is one model, one method with its parameters, and a chunk of that model's images: exactly what the
local engine evaluates in one call. An engine takes a :class:`Work` (the units and what they need) and yields
one :class:`Outcome` per unit; the caller (:func:`harness.runs.leaderboard.run_leaderboard`) stays the single
writer of the results store, so resuming, the identity of results and the report do not depend on the engine.
Every draw is seeded per image (:func:`harness.attribution.samplers.image_rng`), so where a unit runs does not
change its numbers.
"""

from __future__ import annotations

import importlib

from harness.core.errors import HarnessError
from harness.runs.engines.base import ENGINES, Engine, Outcome, Unit, Work, missing_units, run_work
from harness.runs.engines.local import LocalEngine

__all__ = ["ENGINES", "Engine", "LocalEngine", "Outcome", "Unit", "Work", "engine_names", "get_engine",
           "missing_units", "run_work"]

OPTIONAL = {"ray": "harness.runs.engines.ray_cluster"}     # engines whose module needs an optional extra


def get_engine(name: str, **options) -> Engine:
    """The engine ``name`` built with ``options``; an unknown name is an error naming the known ones, and a
    missing optional extra an error naming the extra to install."""
    if name in OPTIONAL and name not in ENGINES:
        try:
            importlib.import_module(OPTIONAL[name])     # registers the engine; needs the optional extra
        except ImportError as error:
            raise HarnessError(f"the {name} engine needs the optional extra: pip install 'harness[{name}]' "
                               f"({error})") from None
    return ENGINES.lookup(name)(**options)


def engine_names() -> list[str]:
    """Every engine's name, the optional ones included."""
    return list(dict.fromkeys([*ENGINES, *OPTIONAL]))
