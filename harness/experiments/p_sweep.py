"""``p-sweep``: feature suppression with p from 0 to 1 (main paper, Figure 4b).

For each p, every model's images are explained by suppression (E|∇f|) and the mean MI between image and
explanation is recorded, together with the network activation the samples leave: the root-mean-square
gradient norm sqrt(E_x̂ ||∇f(x̂)||²), from the ``square-mean`` aggregator over the same samples. The paper
reports the MI optimum for p in [0.6, 0.8], with the gradient norm shrinking as more pixels are dropped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from harness.attribution import get_method
from harness.attribution.engine import aggregate_samples
from harness.experiments import register, write_csv
from harness.figures import pyplot, save_figure
from harness.metrics import get_metric
from harness.subject import ModelUnderTest, model_names

P_VALUES = tuple(round(0.1 * i, 1) for i in range(11))


@register("p-sweep")
def run(config, quiet: bool = False, samples: int = 20) -> list[Path]:


    """Figure 4b: suppression's mean MI and the RMS gradient norm of its samples for p from 0 to 1, per
    model; writes the CSV and the figure."""
    mi = get_metric("mi")
    out = Path(config.out) / "experiments"
    rows = []
    for model_path, name in zip(config.models, model_names(config.models)):
        model = ModelUnderTest.from_config(model_path, config, name)
        targets = model.targets[:, None]
        for p in tqdm(P_VALUES, desc=f"p-sweep {model.name}", disable=quiet):
            sampler = get_method("suppression", p=p, samples=samples).sampler
            aggregates = aggregate_samples(model.runtime, model.x, targets, sampler, ("abs-mean", "square-mean"),
                                           model.context, config.seed)
            magnitude, energy = aggregates["abs-mean"][:, 0], aggregates["square-mean"][:, 0]
            values = mi(images=model.x, attributions=magnitude)
            norms = np.sqrt(energy.reshape(len(energy), -1).sum(axis=1))
            rows.append({"model": model.name, "p": p, "mean_mi": float(np.nanmean(values)),
                         "mean_gradient_norm": float(norms.mean()), "images": len(values)})
    csv_path = out / "p-sweep.csv"
    write_csv(csv_path, rows)
    return [csv_path, _figure(rows, out / "p-sweep.png")]


def _figure(rows: list[dict], path: Path) -> Path:
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(8, 3))
    for model in sorted({r["model"] for r in rows}):
        mine = [r for r in rows if r["model"] == model]
        ps = [r["p"] for r in mine]
        left.plot(ps, [r["mean_mi"] for r in mine], marker="o", label=model)
        right.plot(ps, [r["mean_gradient_norm"] / max(r["mean_gradient_norm"] for r in mine) for r in mine],
                   marker="o", label=model)
    left.set(xlabel="p (share of pixels dropped)", ylabel="mean MI (nats)", title="certainty")
    right.set(xlabel="p (share of pixels dropped)", ylabel="RMS gradient norm / max", title="activation")
    left.axvspan(0.6, 0.8, color="grey", alpha=0.15)
    right.legend(fontsize=7)
    return save_figure(figure, path)
