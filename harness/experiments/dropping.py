"""``dropping``: images with random pixels dropped at keep ratios 0.7 down to 0.2 (main paper, Figure 3), and how
confident each model stays: the probability of the true class at each ratio, averaged over images, with its 95%
bootstrap interval, and the accuracy.

Every image's pixels are dropped as the ``suppression`` sampler drops them (one mask for all channels, a dropped
pixel black), with p = 1 - keep ratio and the draws seeded by the seed and the image, so every model sees the
same dropped images; each model's figure shows one of them at every ratio and, under them, that model's own
confidence against the keep ratio.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.special import softmax

from harness.attribution.samplers import Suppression, image_rng
from harness.core.escaping import file_stem
from harness.experiments import register, save_with_caption, write_csv
from harness.metrics.intervals import bootstrap
from harness.report.figures import pyplot
from harness.report.visual import image_rgb
from harness.runs.subject import ModelUnderTest, model_names

KEEP_RATIOS = (1.0, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2)


@register("dropping")
def run(config, quiet: bool = False) -> list[Path]:
    """Figure 3: the true class's probability and the accuracy as pixels are kept at random (keep ratio 1, then
    0.7 down to 0.2), per model; writes the CSV and, per model, a figure of its result with its caption."""
    out = Path(config.out) / "experiments"
    rows, written = [], []
    names = model_names(config.models)
    config.check_model_names(names)
    for model_path, name in zip(config.models, names):
        model = ModelUnderTest.from_config(model_path, config, name)
        mine = []
        dropped = {keep: drop_pixels(model, keep, config.seed) for keep in KEEP_RATIOS}
        for keep, points in dropped.items():
            probabilities = softmax(model.runtime.forward(points), axis=1)
            true_class = bootstrap(probabilities[np.arange(len(points)), model.targets])
            mine.append({"model": model.name, "keep_ratio": keep, "true_class_probability": true_class.mean,
                         "probability_low": true_class.low, "probability_high": true_class.high,
                         "accuracy": float((probabilities.argmax(1) == model.targets).mean()),
                         "images": len(points)})
        rows += mine
        written += _figure(model, dropped, mine, out / f"dropping-{file_stem(model.name)}.png")
    csv_path = write_csv(out / "dropping.csv", rows)
    return [csv_path, *written]


def drop_pixels(model: ModelUnderTest, keep: float, seed: int) -> np.ndarray:
    """``model``'s images [N, C, H, W] with each pixel kept with probability ``keep`` and otherwise black
    (Figure 3), one draw per image seeded by ``seed`` and the image (the same for every model of the data)."""
    dropper = Suppression(samples=1, p=1 - keep)
    return np.stack([dropper.draw(x, image_rng(seed, x), model.context).points[0] for x in model.x])


def _figure(model: ModelUnderTest, dropped: dict, rows: list[dict], path: Path) -> list[Path]:
    """The first image at every keep ratio (top row) and the model's confidence against the ratio (below)."""
    plt = pyplot()
    figure = plt.figure(figsize=(7.6, 4.6))
    grid = figure.add_gridspec(2, len(dropped), height_ratios=(1, 1.7))
    for column, (keep, points) in enumerate(dropped.items()):
        axis = figure.add_subplot(grid[0, column])
        axis.imshow(image_rgb(model.card.preprocessing.to_pixels(points[:1])[0]), interpolation="nearest")
        axis.set_title("reference" if keep == 1.0 else f"keep {keep:.0%}", fontsize=8)
        axis.axis("off")
    plot = figure.add_subplot(grid[1, :])
    keeps = [r["keep_ratio"] for r in rows]
    plot.plot(keeps, [r["true_class_probability"] for r in rows], marker="o", color="C0",
              label="mean true-class probability")
    plot.fill_between(keeps, [r["probability_low"] for r in rows], [r["probability_high"] for r in rows],
                      color="C0", alpha=0.2, lw=0, label="95% bootstrap interval")
    plot.plot(keeps, [r["accuracy"] for r in rows], marker="s", ls="--", color="C1", label="accuracy")
    plot.set(xlabel="keep ratio (share of pixels kept)", ylabel=f"probability, accuracy ({rows[0]['images']} images)",
             ylim=(-0.02, 1.02))
    plot.invert_xaxis()
    plot.legend(fontsize=7)
    caption = (f"Top: one of {model.name}'s images with pixels kept at random at ratios 0.7 down to 0.2 (the rest "
               f"black), beside the reference; below: {model.name}'s mean probability of the true class (95% "
               f"bootstrap band) and its accuracy over {rows[0]['images']} images against the keep ratio. The paper "
               "(Figure 3, an ImageNet photo at the same ratios) shows the object still recognisable with 80% of its "
               "pixels dropped, and gives no model's numbers.")
    return save_with_caption(figure, path, f"{model.name}: confidence as pixels are dropped (paper Fig. 3)",
                             caption)
