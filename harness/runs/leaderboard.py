"""Leaderboard runs: models x methods x images x metrics into the results store, resumable.

The unit of work is (model, method, a chunk of images): its attributions are computed in one batched pass,
every applicable metric is evaluated on them, and all its rows (plus the gallery arrays) land in one
transaction. A result is identified by what produced it (:mod:`harness.runs.store`): a rerun skips the images
whose every metric is stored for the same model, card, method parameters and seed, so an interrupted run
resumes where it stopped, never duplicates a row, and never reuses a row of another configuration.
"""

from __future__ import annotations

from pathlib import Path

from harness.attribution import get_method
from harness.metrics import get_metric, metric_names
from harness.runs.config import RunConfig
from harness.runs.engines import Engine, LocalEngine, Outcome
from harness.runs.resumable import RunWriter, missing_work, plan_methods, run_resumable, selection
from harness.runs.store import ResultsStore, seconds_key
from harness.runs.subject import ModelUnderTest, model_names


def _methods(config: RunConfig) -> dict:
    """A model's methods under ``config``: {name: (name, Method)} (each stored under its own name)."""
    return {name: (name, get_method(name, **config.method_parameters.get(name, {}))) for name in config.methods}


def run_leaderboard(config: RunConfig, quiet: bool = False, engine: Engine | None = None) -> Path:
    """Fill the store of ``config.out`` with every missing result; returns the run directory.

    Every model is read and its images made before anything is written, so bad input is refused before any
    work; a model's runtime is built only when some of its results are missing, so a rerun of a finished run
    costs seconds. ``engine`` computes the missing units (default: :class:`harness.runs.engines.LocalEngine`); this
    process alone writes the store, as each unit's outcome arrives (:mod:`harness.runs.resumable`)."""
    names = model_names(config.models)
    plans = plan_methods(config, names, _methods)
    metrics = {name: {metric: get_metric(metric) for metric in (config.for_model(name).metrics or metric_names())}
               for name in names}
    run_dir = Path(config.out)
    with ResultsStore(run_dir) as store:    # a store that is not ours, or another run's, is refused first
        models = {name: ModelUnderTest.from_config(path, config, name) for path, name in zip(config.models, names)}
        for name, model in models.items():
            model.check_methods(p.method for p in plans[name].values())
        applicable = {name: [k for k, m in metrics[name].items() if model.can_compute(m)]
                      for name, model in models.items()}
        work = missing_work(store, models, plans, applicable, config.seed, config.chunk)
        writer = _StoreWriter(store, config, selection(models, plans, config.seed), models, plans)
        run_resumable(engine or LocalEngine(), work, writer, "leaderboard", quiet)
    return run_dir


class _StoreWriter(RunWriter):
    """Writes outcomes into the store, each in one transaction: the run's selection and the model's facts and
    gallery inputs with its first rows, then the rows, the attribution time and the gallery maps."""

    def __init__(self, store: ResultsStore, config: RunConfig, asked: list[dict], models: dict, plans: dict):
        super().__init__(store, asked, {"config": config.as_dict()})
        self.config, self.models, self.plans = config, models, plans
        self.introduced = set()

    def store_outcome(self, outcome: Outcome) -> None:
        """One unit's rows, its attribution time and gallery maps (and, with a model's first rows, its facts and
        gallery inputs)."""
        unit, store, seed = outcome.unit, self.store, self.config.seed
        model, parameters = self.models[unit.model], self.plans[unit.model][unit.method].parameters
        timing_key = seconds_key(model.key, unit.method, parameters, seed)
        if model.name not in self.introduced:
            store.set_model_facts(model.key, model.facts())
            for i in range(min(self.config.gallery, len(model.data))):
                store.add_array("input", model.key, "", "", model.image_keys[i], seed, model.pixels(i))
            self.introduced.add(model.name)
        store.add_results(model.name, model.key, unit.method, parameters, seed, outcome.values)
        timing = store.fact(timing_key, {"seconds": 0.0, "images": 0})
        store.set_fact(timing_key, {"seconds": timing["seconds"] + outcome.seconds,
                                    "images": timing["images"] + len(unit.images)})
        for i, attribution in outcome.maps.items():
            store.add_array("map", model.key, unit.method, parameters, model.image_keys[i], seed, attribution)
