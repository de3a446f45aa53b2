"""Report figures from the results store (matplotlib, PNG): a Figure-1-style gallery per model and the
Figure-5-style bar chart of MI normalised to IG."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from harness.model_card import ModelCard
from harness.metrics.certainty import NORMALISED_MI
from harness.visual import heatmap_rgb, image_rgb

FIGURES_DIR = "figures"


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (imported here, after the backend is chosen)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: Path) -> Path:
    """Lay out, write as PNG (110 dpi) creating the folder, and close ``figure``; returns ``path``."""
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    pyplot().close(figure)
    return path


def _model_input(pixels: np.ndarray, facts: dict) -> np.ndarray:
    """An image's model input, from the card facts a results store keeps (pixels as they are where the card
    states no preprocessing)."""
    card = ModelCard(**{k: tuple(v) if isinstance(v, list) else v for k, v in facts.items()})
    return card.to_model(pixels[None])[0] if card.states_preprocessing else pixels


def gallery(store, run_dir: Path) -> dict[str, str]:
    """Per model of the store's latest run: rows of images; the input, then each method's heatmap ("bwr",
    min-max normalised), first as is and then × input. Returns {model: path relative to ``run_dir``}."""
    plt = pyplot()
    selection = store.latest_run() or []
    wanted = {(s["model_key"], s["method"], s["parameters"], s["seed"]): s for s in selection}
    seeds = {s["model_key"]: s["seed"] for s in selection}
    inputs = {(m, img): a for m, _, _, img, seed, a in store.arrays("input") if seeds.get(m) == seed}
    maps: dict = defaultdict(lambda: defaultdict(dict))     # model name -> image name -> method -> map
    keys, cards = {}, {}
    for model_key, method, parameters, image_key, seed, array in store.arrays("map"):
        chosen = wanted.get((model_key, method, parameters, seed))
        if chosen is None or image_key not in chosen["images"]:
            continue
        name = chosen["images"][image_key]
        maps[chosen["model"]][name][method] = array
        keys[(chosen["model"], name)] = (model_key, image_key)
        cards[chosen["model"]] = (store.fact(f"model:{model_key}") or {}).get("card", {})
    written = {}
    configured = list(dict.fromkeys(s["method"] for s in selection))
    for model, per_image in maps.items():
        card = cards[model]
        images = sorted(per_image)
        methods = [m for m in configured if any(m in per_method for per_method in per_image.values())]
        columns = 1 + 2 * len(methods)
        figure, axes = plt.subplots(len(images), columns, figsize=(1.3 * columns, 1.4 * len(images)),
                                    squeeze=False)
        for r, image in enumerate(images):
            pixels = inputs.get(keys[(model, image)])
            x = None if pixels is None else _model_input(pixels, card)
            panels = [("image", None if pixels is None else image_rgb(pixels))]
            panels += [(m, heatmap_rgb(per_image[image][m]) if m in per_image[image] else None) for m in methods]
            panels += [(f"{m}\n× input", heatmap_rgb(per_image[image][m] * x)
                        if m in per_image[image] and x is not None else None) for m in methods]
            for c, (title, panel) in enumerate(panels):
                axis = axes[r, c]
                axis.axis("off")
                if panel is not None:
                    axis.imshow(panel, interpolation="nearest")
                if r == 0:
                    axis.set_title(title, fontsize=7)
        relative = f"{FIGURES_DIR}/gallery-{model.replace('/', '-')}.png"
        save_figure(figure, run_dir / relative)
        written[model] = relative
    return written


def figure_5(tables: dict, run_dir: Path) -> str | None:
    """Bars of MI normalised to IG, per model and method, with 95% CIs; None without IG in the store."""
    models = [m for m, t in tables.items() if NORMALISED_MI in t["columns"]]
    if not models:
        return None
    plt = pyplot()
    methods = sorted({r["method"] for m in models for r in tables[m]["rows"]})
    width = 0.8 / len(methods)
    figure, axis = plt.subplots(figsize=(max(6.0, 0.22 * len(methods) * len(models) + 1.5), 4.2))
    colours = plt.get_cmap("tab10")
    for j, method in enumerate(methods):
        means, errors = [], [[], []]
        for model in models:
            cell = next((r[NORMALISED_MI] for r in tables[model]["rows"] if r["method"] == method), None)
            mean = cell.mean if cell is not None else np.nan
            means.append(mean)
            errors[0].append(mean - cell.low if cell is not None else 0)
            errors[1].append(cell.high - mean if cell is not None else 0)
        positions = np.arange(len(models)) + (j - (len(methods) - 1) / 2) * width
        axis.bar(positions, means, width, yerr=np.nan_to_num(errors), label=method, color=colours(j % 10),
                 capsize=2)
    axis.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    axis.set_xticks(np.arange(len(models)), models, fontsize=8)
    axis.set_ylabel("MI / MI of IG")
    axis.set_title("Explanation certainty normalised to IG (mean, 95% bootstrap CI)", fontsize=9)
    axis.legend(fontsize=7, ncol=min(5, len(methods)), loc="upper center", bbox_to_anchor=(0.5, -0.1))
    relative = f"{FIGURES_DIR}/figure5-normalised-mi.png"
    save_figure(figure, run_dir / relative)
    return relative
