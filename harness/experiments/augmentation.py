"""``augmentation``: explanations of the bundled ResNet and of its twin fine-tuned with Gaussian-noise and
luminance augmentation (main paper, Figure 2), per method: a gallery of both models' heatmaps on the same
images, and each method's mean MI on each model (and its ratio twin / original)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.attribution import explain, get_method
from harness.core.bundled import BUNDLED_MODELS_DIR
from harness.core.errors import HarnessError
from harness.experiments import register, save_with_caption, write_csv
from harness.metrics import get_metric
from harness.report.figures import pyplot
from harness.report.visual import heatmap_rgb, image_rgb
from harness.runs.subject import ModelUnderTest

PAIR = ("shapes_resnet", "shapes_resnet_augmented")


@register("augmentation")
def run(config, quiet: bool = False) -> list[Path]:
    """Figure 2: each method's MI on the shapes ResNet and on its augmentation-trained twin, and their ratio;
    writes the CSV and the figure with its caption."""
    if config.per_model:
        raise HarnessError("the augmentation experiment runs the same methods and images on both models of its "
                           "pair; it takes no per_model settings")
    paths = {Path(m).stem: m for m in config.models}
    paths = {name: paths.get(name, str(BUNDLED_MODELS_DIR / f"{name}.onnx")) for name in PAIR}
    if not all(Path(p).exists() for p in paths.values()):
        raise HarnessError(f"the augmentation experiment needs {' and '.join(PAIR)}")
    mi = get_metric("mi")
    out = Path(config.out) / "experiments"
    maps, rows = {}, []
    models = {name: ModelUnderTest.from_config(path, config) for name, path in paths.items()}
    for method_name in config.methods:
        method = get_method(method_name, **config.method_parameters.get(method_name, {}))
        scores = {}
        for name, model in models.items():
            z = explain(model.runtime, model.x, method, labels=model.targets, context=model.context,
                        seed=config.seed)
            maps[name, method_name] = z[0]
            scores[name] = float(np.nanmean(mi(images=model.x, attributions=z)))
        rows.append({"method": method_name, "mi_original": scores[PAIR[0]], "mi_augmented": scores[PAIR[1]],
                     "ratio": scores[PAIR[1]] / scores[PAIR[0]] if scores[PAIR[0]] else float("nan")})
    csv_path = out / "augmentation.csv"
    write_csv(csv_path, rows)
    return [csv_path, *_figure(models, maps, config.methods, out / "augmentation.png")]


def _figure(models: dict, maps: dict, methods: list, path: Path) -> list[Path]:
    """Per model a row: the first image, then each method's heatmap of it."""
    plt = pyplot()
    figure, axes = plt.subplots(len(models), 1 + len(methods), figsize=(1.4 * (1 + len(methods)), 1.6 * len(models)),
                                squeeze=False)
    for r, (name, model) in enumerate(models.items()):
        axes[r, 0].imshow(image_rgb(model.data.images[0]), interpolation="nearest")
        axes[r, 0].set_ylabel(name, fontsize=7)
        for c, method in enumerate(methods, start=1):
            axes[r, c].imshow(heatmap_rgb(maps[name, method]), interpolation="nearest")
            if r == 0:
                axes[r, c].set_title(method, fontsize=7)
        for axis in axes[r]:
            axis.set_xticks([])
            axis.set_yticks([])
    caption = (f"The first image and each method's heatmap of it on {PAIR[0]} (top) and on its twin fine-tuned with "
               "Gaussian-noise and luminance augmentation (bottom); the CSV gives each method's mean MI on both and "
               "their ratio. The paper (Figure 2, a ResNet50 fine-tuned on ImageNet with the same augmentations) "
               "reports the noise-sampling explanations degrading on the augmented model, which learns to ignore "
               "the added noise.")
    return save_with_caption(figure, path, "Explanations before and after augmentation training (paper Fig. 2)",
                             caption)
