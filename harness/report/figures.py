"""Report figures from the results store (matplotlib, PNG): a Figure-1-style gallery per model, the main
paper's Figure 5 under its protocol, and the bar chart of every method's MI normalised to IG. Each figure comes
with its caption."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib import cm, colors

from harness.core.escaping import file_stem
from harness.metrics.certainty import NORMALISED_MI
from harness.model.card import ModelCard
from harness.report.visual import COLOUR_BARS, colour_scale, coloured, image_rgb

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


def gallery(store, run_dir: Path, scheme: str = "auto") -> dict[str, dict]:
    """Per model of the store's latest run, a Figure-1-style gallery: a column per image (its map, then the map
    × input), a row per method, the images on top; coloured by ``scheme`` (:mod:`harness.report.visual`) with a
    colour bar per colour map used. Returns {model: {"src": path relative to ``run_dir``, "caption"}}."""
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
        cards[chosen["model"]] = store.model_facts(model_key).get("card", {})
    written = {}
    configured = list(dict.fromkeys(s["method"] for s in selection))
    for model, per_image in maps.items():
        images = sorted(per_image)
        methods = [m for m in configured if any(m in per_method for per_method in per_image.values())]
        panels, used = _gallery_panels(per_image, images, methods, inputs, keys, model, cards[model], scheme)
        relative = f"{FIGURES_DIR}/gallery-{file_stem(model)}.png"
        _draw_gallery(plt, panels, images, methods, used, run_dir / relative)
        written[model] = {"src": relative, "caption": (
            f"{model}: explanations of the first {len(images)} images (a column per image: the map, then the map "
            "× input; a row per method), as in the main paper's Figure 1. Maps are summed over channels and "
            "scaled one by one: " + "; ".join(COLOUR_BARS[name][2] for name in used) + ".")}
    return written


def _gallery_panels(per_image, images, methods, inputs, keys, model, card, scheme):
    """{(row, column): RGB panel} and the colour maps used; row 0 holds the images."""
    panels, used = {}, []
    for c, image in enumerate(images):
        pixels = inputs.get(keys[(model, image)])
        x = None if pixels is None else _model_input(pixels, card)
        if pixels is not None:
            panels[(0, 2 * c)] = image_rgb(pixels)
        for r, method in enumerate(methods, start=1):
            attribution = per_image[image].get(method)
            if attribution is None:
                continue
            for offset, shown in ((0, attribution), (1, None if x is None else attribution * x)):
                if shown is None:
                    continue
                scaled, name = colour_scale(shown, scheme)
                used.append(name)
                panels[(r, 2 * c + offset)] = coloured(scaled, name)
    return panels, list(dict.fromkeys(used))


def _draw_gallery(plt, panels, images, methods, used, path: Path) -> Path:
    """Lay the panels out on a grid with row and column titles and one colour bar per colour map."""
    rows, columns = 1 + len(methods), 2 * len(images)
    label_inches = 0.075 * max(len(m) for m in ("image", *methods)) + 0.25   # the row titles, at 9 pt
    width, height = 1.25 * columns + label_inches + 0.15, 1.25 * rows + 1.3
    figure, axes = plt.subplots(rows, columns, figsize=(width, height), squeeze=False)
    for (r, c), axis in np.ndenumerate(axes):
        axis.set_xticks([])
        axis.set_yticks([])
        for spine in axis.spines.values():
            spine.set_visible(False)
        if (r, c) in panels:
            axis.imshow(panels[(r, c)], interpolation="nearest")
        if r == 0:
            axis.set_title(f"{images[c // 2]}" if c % 2 == 0 else "× input", fontsize=8)
        if c == 0:
            axis.set_ylabel("image" if r == 0 else methods[r - 1], fontsize=9, rotation=0, ha="right",
                            va="center")
    for k, name in enumerate(used):
        low, high, label = COLOUR_BARS[name]
        bar = figure.add_axes((label_inches / width + 0.47 * k * (1 - label_inches / width), 0.55 / height,
                               0.4 * (1 - label_inches / width), 0.12 / height))
        mappable = cm.ScalarMappable(norm=colors.Normalize(low, high), cmap=name)
        figure.colorbar(mappable, cax=bar, orientation="horizontal").set_label(label, fontsize=8)
        bar.tick_params(labelsize=7)
    figure.subplots_adjust(left=label_inches / width, right=0.99, top=1 - 0.35 / height, bottom=1.05 / height,
                           wspace=0.05, hspace=0.08)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def figure_5(tables: dict, run_dir: Path) -> dict | None:
    """Bars of MI normalised to IG, per model and method, with 95% CIs; None without IG in the store."""
    models = [m for m, t in tables.items() if NORMALISED_MI in t["columns"]]
    if not models:
        return None
    plt = pyplot()
    methods = sorted({r["method"] for m in models for r in tables[m]["rows"]})
    relative = f"{FIGURES_DIR}/figure5-normalised-mi.png"
    _bars(plt, models, methods, lambda model, method: next(
        (r[NORMALISED_MI] for r in tables[model]["rows"] if r["method"] == method), None),
        "MI / MI of ig", "Every method's certainty normalised to IG (mean, 95% bootstrap CI)", run_dir / relative)
    return {"src": relative, "caption": (
        "Every method's MI normalised to IG's on the same images, per model (bars: ratio of means; whiskers: 95% "
        "paired bootstrap CI; dashed line: IG).")}


def protocol_chart(tables: dict, run_dir: Path, protocol: str = "figure-5") -> dict | None:
    """The main paper's Figure 5 as a chart: per model, the protocol's methods normalised to its reference
    (95% CIs); None where no model has the protocol's methods."""
    chosen = {m: next(p for p in t["protocols"] if p["protocol"].name == protocol)
              for m, t in tables.items() if any(p["protocol"].name == protocol for p in t["protocols"])}
    if not chosen:
        return None
    plt = pyplot()
    first = next(iter(chosen.values()))["protocol"]
    methods = [m for m in first.methods if m != first.reference]

    def cell(model, method):
        return next((r["ratio"] for r in chosen[model]["rows"] if r["method"] == method), None)

    relative = f"{FIGURES_DIR}/{protocol}-protocol.png"
    _bars(plt, list(chosen), methods, cell, f"MI / MI of {first.reference}", first.title, run_dir / relative)
    return {"src": relative, "caption": (
        f"{first.title}: {first.description}. Bars: MI as a ratio of means to {first.reference}'s on the same "
        "images (dashed line); whiskers: 95% paired bootstrap CI. The paper reports suppression above the other "
        "distributions on ImageNet models.")}


def _bars(plt, models, methods, cell, ylabel: str, title: str, path: Path) -> Path:
    """Grouped bars with CI whiskers: a group per model, a bar per method, a dashed line at 1."""
    width = 0.8 / len(methods)
    figure, axis = plt.subplots(figsize=(max(6.5, 0.3 * len(methods) * len(models) + 2), 4.2))
    colours = plt.get_cmap("tab10")
    for j, method in enumerate(methods):
        cells = [cell(model, method) for model in models]
        means = [c.mean if c is not None else np.nan for c in cells]
        errors = [[c.mean - c.low if c is not None else 0 for c in cells],
                  [c.high - c.mean if c is not None else 0 for c in cells]]
        positions = np.arange(len(models)) + (j - (len(methods) - 1) / 2) * width
        axis.bar(positions, means, width, yerr=np.nan_to_num(errors), label=method, color=colours(j % 10),
                 capsize=2)
    axis.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    crowded = sum(len(m) for m in models) > 10 * len(models)       # long names would overlap side by side
    axis.set_xticks(np.arange(len(models)), models, fontsize=9, rotation=20 if crowded else 0,
                    ha="right" if crowded else "center")
    axis.set_ylabel(ylabel, fontsize=10)
    axis.set_title(title, fontsize=11)
    axis.legend(fontsize=8, ncol=min(5, len(methods)), loc="upper center",
                bbox_to_anchor=(0.5, -0.34 if crowded else -0.12))
    return save_figure(figure, path)
