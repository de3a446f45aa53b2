"""The resumable run, written once: what the leaderboard and the p-sweep share.

A run names its models and, per model, the units of work it asks for (a method under a name: the leaderboard's
method names, the p-sweep's ``p=0.7``), each stored as a method with canonical parameters. It computes only the
(model, method, image) rows that its store lacks, on any engine, and writes each unit's rows in one transaction
with the record of what the run asked for (its *selection*), so a killed run resumes and a report shows
exactly the latest run's rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from harness.attribution.engine import Method
from harness.attribution.methods import describe
from harness.engines import Engine, Outcome, Work, missing_units, run_work
from harness.store import ResultsStore, canonical


@dataclass(frozen=True)
class Planned:
    """One unit name of a model's plan: its method, the method name its rows carry in the store, and the
    method's canonical parameters (part of each row's identity)."""
    method: Method
    stored_as: str
    parameters: str


def plan_methods(config, names: list[str], methods_for: Callable) -> dict[str, dict[str, Planned]]:
    """Per model name, its plan: ``methods_for(config.for_model(name))`` gives {unit name: (stored name,
    Method)}; ``per_model`` settings for a model the run does not have are refused first."""
    config.check_model_names(names)
    plans = {}
    for name in names:
        chosen = methods_for(config.for_model(name))
        plans[name] = {unit: Planned(method, stored, canonical(describe(method)))
                       for unit, (stored, method) in chosen.items()}
    return plans


def selection(models: dict, plans: dict, seed: int) -> list[dict]:
    """What a run asks for, as its store records it: per model and unit, the model, method, parameters, seed
    and images ({image key: name})."""
    return [{"model": model.name, "model_key": model.key, "method": planned.stored_as,
             "parameters": planned.parameters, "seed": seed, "images": dict(zip(model.image_keys, model.data.names))}
            for model in models.values() for planned in plans[model.name].values()]


def missing_work(store: ResultsStore, models: dict, plans: dict, metrics: dict, seed: int, chunk: int,
                 task: Callable | None = None) -> Work:
    """The units (``chunk`` images each) of every model and planned unit whose rows of ``metrics[model]`` the
    store lacks (one query per unit name). The engine computes those metrics by name, unless a ``task`` of the
    run's own computes its rows (it is then handed no metric)."""
    methods = {name: {unit: p.method for unit, p in plan.items()} for name, plan in plans.items()}
    work = (Work(models, methods, metrics) if task is None else
            Work(models, methods, {name: [] for name in metrics}, task=task))
    for model in models.values():
        for unit, planned in plans[model.name].items():
            done = store.done(model.key, planned.stored_as, planned.parameters, seed, metrics[model.name])
            work.units += missing_units(model.name, unit, model.image_keys, done, chunk)
    return work


class RunWriter:
    """Writes each outcome in one transaction together with the run's record (the selection and ``facts``,
    written once and only where the latest run asked otherwise). Subclasses store the outcome's rows."""

    def __init__(self, store: ResultsStore, asked: list[dict], facts: dict | None = None):
        self.store, self.asked, self.facts = store, asked, facts or {}
        self.recorded = False

    def record_run(self) -> None:
        """Record what the run asked for, once (in a transaction of its own)."""
        if not self.recorded:
            with self.store.transaction():
                self._record()

    def _record(self) -> None:
        if not self.recorded and not self.store.asked_last(self.asked):
            for key, value in self.facts.items():
                self.store.set_fact(key, value)
            self.store.add_run(self.asked)
        self.recorded = True

    def write(self, outcome: Outcome) -> None:
        """Store one unit's outcome with the run's record."""
        with self.store.transaction():
            self._record()
            self.store_outcome(outcome)

    def store_outcome(self, outcome: Outcome) -> None:
        """The outcome's rows (inside the transaction)."""
        raise NotImplementedError


def run_resumable(engine: Engine, work: Work, writer: RunWriter, desc: str, quiet: bool) -> None:
    """Compute ``work``'s units on ``engine``, each outcome written as it arrives, then record the run (also
    where nothing was missing: the run still asked for those rows)."""
    run_work(engine, work, writer.write, desc, quiet)
    if writer.store.exists:
        writer.record_run()
