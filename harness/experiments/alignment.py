"""``alignment``: do the samples of each distribution look like natural images to the model? (main paper,
Figure 4a).

Penultimate-layer embeddings (the card's ``embedding`` tensor) of 1000 samples each from linear scaling
(IG's path), normal noise (levels 0.1 to 0.9) and feature suppression (p 0.1 to 0.9), and of the natural
images, projected together with scikit-learn's cosine-kernel PCA; the centre of each group is marked. The CSV
gives each centre and its distance to the natural images' centre in the projection, and the mean cosine
similarity of each group's embeddings to the natural images' mean embedding (in the full space).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.decomposition import KernelPCA
from tqdm.auto import tqdm

from harness.attribution.samplers import Linear, Normal, Suppression, image_rng
from harness.core.escaping import file_stem, terminal_text
from harness.experiments import register, save_with_caption, write_csv
from harness.report.figures import pyplot
from harness.runs.subject import ModelUnderTest, model_names

LEVELS = (0.1, 0.3, 0.5, 0.7, 0.9)
PER_GROUP = 1000


def sampler_groups() -> dict:
    """Per group name, a function of the sample count that makes the group's sampler (the straight path,
    normal noise and suppression at each level)."""
    groups = {"linear": lambda s: Linear(steps=s, rule="right")}
    groups.update({f"normal {level}": (lambda s, level=level: Normal(samples=s, level=level)) for level in LEVELS})
    groups.update({f"suppression {p}": (lambda s, p=p: Suppression(samples=s, p=p)) for p in LEVELS})
    return groups


@register("alignment")
def run(config, quiet: bool = False) -> list[Path]:
    """Figure 4a: project each model's penultimate embeddings of natural images and of each group's samples
    with a cosine-kernel PCA; write the centres' distances (CSV) and one figure per model, with its caption."""
    out = Path(config.out) / "experiments"
    rows, written = [], []
    names = model_names(config.models)
    config.check_model_names(names)
    for model_path, name in zip(config.models, names):
        model = ModelUnderTest.from_config(model_path, config, name, expose_embedding=True)

        def embed(points: np.ndarray) -> np.ndarray:
            return model.runtime.forward_tensor(points, model.card.embedding).reshape(len(points), -1)

        per_image = max(1, -(-PER_GROUP // len(model.x)))
        embeddings = {"natural": embed(model.x)}
        for group, make in tqdm(sampler_groups().items(), desc=terminal_text(f"alignment {model.name}"), disable=quiet):
            sampler = make(per_image)
            points = np.concatenate([sampler.draw(x, image_rng(config.seed, x), model.context).points
                                     for x in model.x])[:PER_GROUP]
            embeddings[group] = embed(points)
        stacked = np.concatenate(list(embeddings.values()))
        projection = KernelPCA(n_components=2, kernel="cosine", random_state=config.seed).fit_transform(stacked)
        bounds = np.cumsum([0] + [len(e) for e in embeddings.values()])
        centres = {g: projection[bounds[i]:bounds[i + 1]].mean(axis=0) for i, g in enumerate(embeddings)}
        natural_mean = embeddings["natural"].mean(axis=0)
        for group, points in embeddings.items():
            cosine = points @ natural_mean / (np.linalg.norm(points, axis=1) * np.linalg.norm(natural_mean) + 1e-12)
            rows.append({"model": model.name, "group": group, "samples": len(points),
                         "centre_x": float(centres[group][0]), "centre_y": float(centres[group][1]),
                         "centre_distance_to_natural": float(np.linalg.norm(centres[group] - centres["natural"])),
                         "mean_cosine_to_natural_mean": float(cosine.mean())})
        written += _figure(model.name, projection, bounds, list(embeddings), centres,
                           out / f"alignment-{file_stem(model.name)}.png")
    csv_path = out / "alignment.csv"
    write_csv(csv_path, rows)
    return [csv_path, *written]


def _figure(model: str, projection, bounds, groups, centres, path: Path) -> list[Path]:
    """Every group's projected embeddings, shaded by level, and its centre (a cross)."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 5))
    colours = {"natural": "black", "linear": "tab:green"}
    blues, reds = plt.get_cmap("Blues"), plt.get_cmap("Reds")
    for i, group in enumerate(groups):
        kind, _, level = group.partition(" ")
        colour = colours.get(group) or (blues if kind == "normal" else reds)(0.3 + 0.7 * float(level or 0))
        points = projection[bounds[i]:bounds[i + 1]]
        axis.scatter(points[:, 0], points[:, 1], s=2, alpha=0.25, color=colour)
        axis.scatter(*centres[group], s=80, marker="X", color=colour, edgecolor="white", label=group, zorder=3)
    axis.set(xlabel="component 1", ylabel="component 2")
    axis.legend(fontsize=6, ncol=2, markerscale=0.7)
    natural = bounds[1] - bounds[0]
    caption = (f"{model}'s penultimate-layer embeddings of {natural} natural images and of up to {PER_GROUP} samples "
               "of each group (linear scaling, normal noise at levels 0.1 to 0.9, suppression at p 0.1 to 0.9), "
               "projected together by a cosine-kernel PCA, each group's centre a cross. The paper (Figure 4a, a "
               "ResNet50 on ImageNet) reports the linear and suppression samples aligned with the natural images "
               "and the normal-noise samples not.")
    return save_with_caption(figure, path, f"{model}: embeddings of samples, cosine-kernel PCA (paper Fig. 4a)",
                             caption)
