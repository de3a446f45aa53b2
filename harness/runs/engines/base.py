"""What engines share: the registry, a unit of work, its outcome, a run's work (with the task each unit runs),
and the engine protocol."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol

import numpy as np
from tqdm.auto import tqdm

from harness.core.errors import HarnessError
from harness.core.escaping import terminal_text
from harness.core.registry import Registry

ENGINES = Registry("engine", HarnessError)


def evaluate(subject, method, images: np.ndarray, metrics: dict) -> tuple[dict, dict, float]:
    """The leaderboard's task: :meth:`harness.runs.subject.ModelUnderTest.evaluate` of the unit's images."""
    return subject.evaluate(method, images, metrics)


@dataclass(frozen=True)
class Unit:
    """One piece of work: ``method`` on the images ``images`` (indices) of the model named ``model``."""
    model: str
    method: str
    images: tuple[int, ...]


@dataclass(frozen=True)
class Outcome:
    """A unit's results, as :meth:`harness.runs.subject.ModelUnderTest.evaluate` returns them: per image its metric
    values, the gallery maps among the images, and the seconds the attributions took."""
    unit: Unit
    values: dict
    maps: dict
    seconds: float


@dataclass
class Work:
    """What a run asks an engine to compute: the models (by name), each model's methods and applicable metric
    names, the units, in the order a local run takes them, and the task each unit runs: ``task(subject, method,
    images, metrics) -> (values, maps, seconds)`` (a module-level function, so that a worker process can import
    it), by default the leaderboard's :func:`evaluate`."""
    models: dict
    methods: dict                    # {model: {method name: Method}}
    metrics: dict                    # {model: [metric names]}
    units: list = field(default_factory=list)
    task: Callable = evaluate


class Engine(Protocol):
    """What :func:`harness.runs.leaderboard.run_leaderboard` needs of an engine."""

    name: str

    def run(self, work: Work) -> Iterator[Outcome]:
        """Compute every unit of ``work``; yield each outcome as it is done (in any order)."""


def missing_units(model: str, method: str, image_keys, done, chunk: int) -> list[Unit]:
    """The units of ``method`` on ``model``'s images whose keys are not in ``done``, ``chunk`` images each, in
    image order."""
    todo = [i for i, key in enumerate(image_keys) if key not in done]
    return [Unit(model, method, tuple(todo[start:start + chunk])) for start in range(0, len(todo), chunk)]


def run_work(engine: Engine, work: Work, write: Callable[[Outcome], None], desc: str, quiet: bool) -> None:
    """Compute ``work``'s units on ``engine`` (not even starting it when there are none) and hand each outcome
    to ``write`` as it arrives, with a progress bar over the images."""
    with tqdm(total=sum(len(unit.images) for unit in work.units), desc=terminal_text(desc), disable=quiet,
              unit="image") as bar:
        for outcome in (engine.run(work) if work.units else ()):
            write(outcome)
            bar.update(len(outcome.unit.images))
