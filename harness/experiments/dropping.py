"""``dropping``: an image with random pixels dropped at keep ratios 0.7 down to 0.2 (main paper, Figure 3),
and how confident the model stays: the probability of the true class at each ratio, averaged over images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.special import softmax

from harness.attribution.samplers import Suppression, image_rng
from harness.experiments import register, write_csv
from harness.figures import pyplot, save_figure
from harness.subject import ModelUnderTest, model_names
from harness.visual import image_rgb

KEEP_RATIOS = (1.0, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2)


@register("dropping")
def run(config, quiet: bool = False) -> list[Path]:


    """Figure 3: the true class's probability as pixels are kept at random (keep ratio 1 down to 0.1), per
    model; writes the CSV and one figure per model."""
    out = Path(config.out) / "experiments"
    rows, written = [], []
    for model_path, name in zip(config.models, model_names(config.models)):
        model = ModelUnderTest.from_config(model_path, config, name)
        droppers = {keep: Suppression(samples=1, p=1 - keep) for keep in KEEP_RATIOS}
        dropped = {keep: np.stack([dropper.draw(x, image_rng(config.seed, x), model.context).points[0]
                                   for x in model.x]) for keep, dropper in droppers.items()}
        for keep, points in dropped.items():
            probabilities = softmax(model.runtime.forward(points), axis=1)
            rows.append({"model": model.name, "keep_ratio": keep,
                         "true_class_probability": float(probabilities[np.arange(len(points)),
                                                                       model.targets].mean()),
                         "accuracy": float((probabilities.argmax(1) == model.targets).mean()),
                         "images": len(points)})
        written.append(_figure(model, dropped, out / f"dropping-{model.name.replace('/', '-')}.png"))
    csv_path = out / "dropping.csv"
    write_csv(csv_path, rows)
    return [csv_path, *written]


def _figure(model, dropped: dict, path: Path) -> Path:
    plt = pyplot()
    figure, axes = plt.subplots(1, len(dropped), figsize=(1.5 * len(dropped), 1.8), squeeze=False)
    for axis, (keep, points) in zip(axes[0], dropped.items()):
        axis.imshow(image_rgb(model.card.preprocessing.to_pixels(points[:1])[0]), interpolation="nearest")
        axis.set_title(f"keep {keep:.0%}", fontsize=8)
        axis.axis("off")
    return save_figure(figure, path)
