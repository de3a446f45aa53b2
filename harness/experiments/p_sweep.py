"""``p-sweep``: feature suppression with p from 0 to 1 (main paper, Figure 4b).

For each p, every model's images are explained by suppression (E|∇f|) and the MI between image and explanation
is recorded per image, together with the network activation the samples leave: the root-mean-square gradient
norm sqrt(Σ_pixels E_x̂ (∇f)²), from the ``square-mean`` aggregator over the same samples. The paper reports
both maximised for p in [0.6, 0.8].

The sweep's suppression is the leaderboard's (its parameters from the run's ``method_parameters``, its samples per
image from ``config.samples`` where given, else the sampler's own default), with p set: at p = 0.7, with the
samples the leaderboard's ``suppression`` uses, its MI is that method's MI of the same images, bit for bit.
Per-image rows live in a results store of their own, ``OUT/experiments/p-sweep`` (the leaderboard's store and report
never see them), keyed like the leaderboard's by model, method parameters, image and seed: a rerun computes only
what is missing, and a killed run resumes. Its units of work (a model, a p, a chunk of images) run on any engine,
the Ray engine included (``harness experiment p-sweep --engine ray``); draws are per image, so the rows do not
depend on where. The CSV and the figure are views of the rows of the latest run: per model and p, the mean MI and
the mean RMS gradient norm with 95% bootstrap intervals, the number of images, and the p of the highest mean MI.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from harness.attribution import Method, get_method
from harness.attribution.batched import aggregate_samples
from harness.core.errors import HarnessError
from harness.experiments import register, save_with_caption, write_csv
from harness.metrics import get_metric
from harness.metrics.intervals import bootstrap
from harness.report.figures import pyplot
from harness.runs.engines import Engine, LocalEngine, Outcome
from harness.runs.resumable import RunWriter, missing_work, plan_methods, run_resumable, selected_rows, selection
from harness.runs.store import ResultsStore
from harness.runs.subject import ModelUnderTest, model_names

P_VALUES = tuple(round(0.1 * i, 1) for i in range(11))
PAPER_OPTIMUM = (0.6, 0.8)
METHOD = "suppression"
MI, NORM = "mi", "rms-gradient-norm"
STORE_DIR = "p-sweep"          # the sweep's results store, under OUT/experiments


def sweep_methods(config) -> dict[float, Method]:
    """Per p of ``P_VALUES``, the sweep's suppression (Figure 4b): the run's suppression parameters, its samples
    per image from ``config.samples`` where given (else the sampler's default), and p."""
    base = dict(config.method_parameters.get(METHOD, {}))
    if base.get("times_input"):
        raise HarnessError("the p-sweep measures E|∇f| itself (Figure 4b); it does not take times_input")
    if config.samples is not None:
        base["samples"] = config.samples
    return {p: get_method(METHOD, **{**base, "p": p}) for p in P_VALUES}


def _units(config) -> dict:
    """The sweep's units under a model's ``config``: {"p=0.7": ("suppression", Method)}, one per p."""
    return {f"p={p}": (METHOD, method) for p, method in sweep_methods(config).items()}


@register("p-sweep", engines=True)
def run(config, quiet: bool = False, engine: Engine | None = None) -> list[Path]:
    """Figure 4b: suppression's MI and the RMS gradient norm of its samples for p from 0 to 1, per model and
    image into the sweep's results store (only what is missing, computed by ``engine``: default this process;
    :mod:`harness.runs.resumable`), then the CSV, the figure and its caption."""
    out = Path(config.out) / "experiments"
    names = model_names(config.models)
    plans = plan_methods(config, names, _units)      # {model: {"p=0.7": Planned}}
    models = {name: ModelUnderTest.from_config(path, config, name) for path, name in zip(config.models, names)}
    with ResultsStore(out / STORE_DIR) as store:     # a second run on the same OUT is refused here
        work = missing_work(store, models, plans, {name: [MI, NORM] for name in names}, config.seed, config.chunk,
                            task=sweep_unit)
        run_resumable(engine or LocalEngine(), work, _SweepWriter(store, selection(models, plans, config.seed),
                                                                  models, plans, config.seed), "p-sweep", quiet)
        rows = selected_rows(store)[0]
    p_of = {name: {planned.parameters: float(unit[2:]) for unit, planned in plan.items()}
            for name, plan in plans.items()}
    table = summarise(rows, names, p_of, {name: plan[f"p={P_VALUES[0]}"].method.sampler.count
                                         for name, plan in plans.items()})
    csv_path = write_csv(out / "p-sweep.csv", table)
    return [csv_path, *_figure(table, out / "p-sweep.png")]


def measure(model: ModelUnderTest, method: Method, chunk: np.ndarray, seed: int) -> dict:
    """Figure 4b's two numbers for the images ``chunk`` of ``model``, from one set of samples each:
    ``{(image_key, image_name): {"mi": I(x; E|∇f|), "rms-gradient-norm": sqrt(Σ_pixels E(∇f)²)}}``."""
    x = model.x[chunk]
    aggregates = aggregate_samples(model.runtime, x, model.targets[chunk][:, None], method.sampler,
                                   ("abs-mean", "square-mean"), model.context, seed)
    magnitude, energy = aggregates["abs-mean"][:, 0], aggregates["square-mean"][:, 0]
    information = get_metric(MI)(images=x, attributions=magnitude)
    norms = np.sqrt(energy.reshape(len(chunk), -1).sum(axis=1, dtype=np.float64))
    return {(model.image_keys[i], model.data.names[i]): {MI: float(m), NORM: float(g)}
            for i, m, g in zip(chunk, information, norms)}


def sweep_unit(model: ModelUnderTest, method: Method, chunk: np.ndarray, metrics: dict) -> tuple[dict, dict, float]:
    """The sweep's task for an engine (:class:`harness.runs.engines.Work`): :func:`measure` of one (p, chunk) unit,
    with the model's own seed; no gallery maps."""
    started = time.perf_counter()
    values = measure(model, method, chunk, model.seed)
    return values, {}, time.perf_counter() - started


class _SweepWriter(RunWriter):
    """The sweep's rows of each unit (a model, a p, a chunk of images), with the run's record."""

    def __init__(self, store: ResultsStore, asked: list[dict], models: dict, plans: dict, seed: int):
        super().__init__(store, asked)
        self.models, self.plans, self.seed = models, plans, seed

    def store_outcome(self, outcome: Outcome) -> None:
        """The unit's MI and RMS-gradient-norm rows."""
        model = self.models[outcome.unit.model]
        self.store.add_results(model.name, model.key, METHOD, self.plans[model.name][outcome.unit.method].parameters,
                               self.seed, outcome.values)


def summarise(rows: list[dict], models: list[str], p_of: dict[str, dict[str, float]],
              samples: dict[str, int]) -> list[dict]:
    """Figure 4b's table from the store's rows (``p_of[model][parameters]`` is the p of a model's method, and
    ``samples[model]`` its samples per image): per model and p, the mean MI and the mean RMS gradient norm with
    their 95% bootstrap intervals (:func:`harness.metrics.intervals.bootstrap`), the number of images with a
    finite MI, and ``argmax``: True on the p of the model's highest mean MI."""
    values: dict = defaultdict(lambda: defaultdict(list))     # (model, p) -> metric -> per-image values
    for row in rows:
        values[row["model"], p_of[row["model"]][row["parameters"]]][row["metric"]].append(
            np.nan if row["value"] is None else row["value"])
    table = []
    for model in models:
        mine = []
        for p in P_VALUES:
            information, norm = bootstrap(values[model, p][MI]), bootstrap(values[model, p][NORM])
            mine.append({"model": model, "p": p, "samples": samples[model], "mean_mi": information.mean,
                         "mi_low": information.low, "mi_high": information.high,
                         "mean_gradient_norm": norm.mean, "gradient_norm_low": norm.low,
                         "gradient_norm_high": norm.high, "images": information.n, "argmax": False})
        finite = [r for r in mine if np.isfinite(r["mean_mi"])]
        if finite:
            max(finite, key=lambda r: r["mean_mi"])["argmax"] = True     # the smallest such p on a tie
        table += mine
    return table


def _argmax_text(table: list[dict]) -> str:
    best = [f"{r['model']} at p = {r['p']:.1f}" for r in table if r["argmax"]]
    return ", ".join(best) or "none (no finite MI)"


def _figure(table: list[dict], path: Path) -> list[Path]:
    """MI with its band (left) and the gradient norm over its maximum with its band (right), one line per model,
    the arg-max starred and the paper's optimum shaded."""
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(7.6, 3.8))
    for axis in (left, right):
        axis.axvspan(*PAPER_OPTIMUM, color="grey", alpha=0.15, lw=0, label="paper's optimum, p in [0.6, 0.8]")
    for index, model in enumerate(dict.fromkeys(r["model"] for r in table)):
        mine, colour = [r for r in table if r["model"] == model], f"C{index}"
        ps = [r["p"] for r in mine]
        information = np.array([[r["mean_mi"], r["mi_low"], r["mi_high"]] for r in mine], float)
        norm = np.array([[r["mean_gradient_norm"], r["gradient_norm_low"], r["gradient_norm_high"]] for r in mine],
                        float)
        peak = np.nanmax(norm[:, 0]) if np.isfinite(norm[:, 0]).any() else np.nan
        norm /= peak if peak > 0 else 1.0
        for axis, curve in ((left, information), (right, norm)):
            axis.plot(ps, curve[:, 0], marker="o", ms=3, color=colour, label=model)
            axis.fill_between(ps, curve[:, 1], curve[:, 2], color=colour, alpha=0.2, lw=0)
        for r in mine:
            if r["argmax"]:
                left.plot([r["p"]], [r["mean_mi"]], marker="*", ms=13, color=colour, mec="black", ls="none",
                          label=f"arg-max, p = {r['p']:.1f}", zorder=3)
    left.set(xlabel="p (share of pixels dropped)", ylabel="mean MI (nats), 95% CI", title="explanation certainty")
    right.set(xlabel="p (share of pixels dropped)", ylabel="RMS gradient norm / its max, 95% CI",
              title="network activation")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    sizes = "; ".join(dict.fromkeys(f"{r['model']}: {r['images']} images at {r['samples']} samples" for r in table))
    title = f"Feature suppression sweep (paper Fig. 4b): MI arg-max: {_argmax_text(table)}"
    caption = (f"Left: the mean mutual information between image and suppression explanation E|∇f| against the "
               f"share p of pixels dropped, per model, with 95% bootstrap intervals ({sizes}), starred at its "
               f"arg-max ({_argmax_text(table)}); right: the RMS gradient "
               "norm of the same samples over its largest mean. The paper (Figure 4b, a ResNet50 on ImageNet) "
               "reports both the MI and the network activation maximised for p in [0.6, 0.8], shaded here.")
    return save_with_caption(figure, path, title, caption)
