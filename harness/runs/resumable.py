"""The resumable run, written once: what the leaderboard and the p-sweep share.

A run names its models and, per model, the units of work it asks for (a method under a name: the leaderboard's
method names, the p-sweep's ``p=0.7``), each stored as a method with canonical parameters. It computes only the
(model, method, image) rows that its store lacks, on any engine, and writes each unit's rows in one transaction
with the record of what the run asked for (its *selection*), so a killed run resumes and a report shows
exactly the latest run's rows (:func:`selected_rows` reads them back).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

from harness.attribution import Method
from harness.attribution.methods import describe
from harness.core.errors import HarnessError
from harness.runs.engines import Engine, Outcome, Work, missing_units, run_work
from harness.runs.store import ResultsStore, canonical, seconds_key


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


def method_seconds(store) -> dict[tuple[str, str], float]:
    """{(model, method): attribution seconds per image} for the store's latest run, from the times its runs
    recorded (the machine that computed the rows; runtime and sampling, not the metrics)."""
    seconds = {}
    for chosen in store.latest_run() or []:
        timing = store.fact(seconds_key(chosen["model_key"], chosen["method"], chosen["parameters"],
                                        chosen["seed"]))
        if timing and timing.get("images"):
            seconds[(chosen["model"], chosen["method"])] = timing["seconds"] / timing["images"]
    return seconds


def selected_rows(store) -> tuple[list[dict], list[dict]]:
    """The rows of the store's latest run (exactly the configuration it asked for: models by their key,
    methods with their parameters, the seed and the images), and a summary of every other configuration the
    store holds: [{"model", "model_key", "method", "parameters", "seed", "rows"}]."""
    selection = store.latest_run()
    if selection is None:
        raise HarnessError(f"the store {store.path} records no run")
    wanted = {(s["model_key"], s["method"], s["parameters"], s["seed"], key): s["model"]
              for s in selection for key in s["images"]}
    chosen, others = [], defaultdict(int)
    for row in store.rows():
        name = wanted.get((row["model_key"], row["method"], row["parameters"], row["seed"], row["image_key"]))
        if name is None:
            others[(row["model"], row["model_key"], row["method"], row["parameters"], row["seed"])] += 1
        else:
            chosen.append({**row, "model": name})
    other = [{"model": m, "model_key": k, "method": meth, "parameters": p, "seed": seed, "rows": n}
             for (m, k, meth, p, seed), n in sorted(others.items())]
    return chosen, other
