"""The attribution engine: samples of many images and classes share batched runtime calls.

``attribute(runtime, x, targets, method, context)`` computes, for every image i and class k of
``targets[i]``, z = Σ_s contribution(∇f_k(x̂_s), Δ_s) (divided by S for the means) over the samples x̂_s that
``method.sampler`` draws for image i. The samples of an image are drawn once and shared by all its classes
(paired, which attribution distributions need). Rows (image, sample, class) from several images are packed
into runtime calls of at most ``runtime.max_batch`` rows, and at most ``group_rows`` rows are held in memory.

Determinism: the draws of an image come from ``default_rng([seed, crc32(image bytes)])``, so the same image
gets the same samples whatever the batch size, its position in the call, or the other images; and each
(image, class) sums its samples' contributions in one reduction of a fixed shape, so the batch size does not
change the order of that sum (an image of more than ``STREAMED_ROWS`` rows sums its blocks in turn, blocks of
a fixed size). Results are then bit-identical for every batch size wherever the runtime gives a
row the same gradient in any batch (every bundled model on ONNX Runtime's CPU provider; tested).
"""

from __future__ import annotations

import numpy as np

from harness import DEFAULT_SEED
from harness.attribution.aggregators import Aggregator, get_aggregator
from harness.attribution.gradcam import grad_cam
from harness.attribution.methods import Method
from harness.attribution.samplers import Context, Sampler, image_rng, make_baseline
from harness.core.errors import HarnessError
from harness.runtime.protocol import Runtime

# Rows (sample x class) of one image held at once where its samples are streamed: an image with more samples
# than STREAMED_ROWS // K (for K classes) is computed block by block, whatever its count (a million samples
# take long, not memory). A constant, so the blocks, hence the order of every sum, never depend on the batch.
STREAMED_ROWS = 256


def attribute(runtime: Runtime, x: np.ndarray, targets: np.ndarray, method: Method, context: Context,
              seed: int = DEFAULT_SEED, group_rows: int | None = None, progress=None) -> np.ndarray:
    """Attributions [N, K, C, H, W] (float32) of images ``x`` [N, C, H, W] (model-input space) for the
    classes ``targets`` [N, K]; Grad-CAM gives one channel, [N, K, 1, H, W]."""
    x = np.asarray(x, np.float32)
    targets = np.asarray(targets, np.int64)
    if x.ndim != 4 or targets.ndim != 2 or len(targets) != len(x):
        raise HarnessError(f"attribute needs images [N, C, H, W] and targets [N, K]; got {x.shape} and "
                           f"{targets.shape}")
    if method.aggregator.on_layer:

        result = grad_cam(runtime, x, targets, method.sampler, context, seed)
    elif method.sampler.adaptive:
        result = _adaptive(runtime, x, targets, method, context, seed)
    else:
        result = _sampled(runtime, x, targets, method.sampler, [method.aggregator], context, seed,
                          group_rows, progress)[0]
    if method.times_input:
        result *= x[:, None]
    return result


def aggregate_samples(runtime: Runtime, x: np.ndarray, targets: np.ndarray, sampler: Sampler, aggregators,
                      context: Context, seed: int = DEFAULT_SEED) -> dict[str, np.ndarray]:
    """Several aggregates [N, K, C, H, W] of one set of samples, each gradient computed once: e.g. E|∇f| and
    E[∇f²] of the same suppressed images (the p-sweep). Sampling samplers only (not Guided IG or Grad-CAM)."""
    aggregators = [get_aggregator(name) for name in aggregators]
    if sampler.adaptive or any(a.on_layer for a in aggregators):
        raise HarnessError("aggregate_samples takes sampling samplers and input-gradient aggregators only")
    results = _sampled(runtime, np.asarray(x, np.float32), np.asarray(targets, np.int64), sampler, aggregators,
                       context, seed, None, None)
    return {a.name: result for a, result in zip(aggregators, results)}


def _sampled(runtime, x, targets, sampler: Sampler, aggregators: list[Aggregator], context, seed, group_rows,
             progress) -> list[np.ndarray]:
    n, k = targets.shape
    per_image = sampler.count * k
    block = max(1, STREAMED_ROWS // k)
    if sampler.count > block:
        return _streamed(runtime, x, targets, sampler, aggregators, context, seed, block, progress)
    group_rows = max(group_rows or 8 * runtime.max_batch, per_image)
    results = [np.zeros((n, k, *x.shape[1:]), np.float32) for _ in aggregators]
    images_per_group = max(1, group_rows // per_image)
    needs_path = any(a.needs_path for a in aggregators)
    # Samplers that can write in place fill one buffer reused by every group (no concatenation, no fresh pages).
    buffer = (np.empty((min(n, images_per_group) * sampler.count, *x.shape[1:]), np.float32)
              if sampler.in_place and not needs_path else None)
    start = 0
    while start < n:
        stop = min(n, start + images_per_group)
        _attribute_group(runtime, x, targets, sampler, aggregators, context, seed, start, stop, results, buffer,
                         needs_path)
        if progress is not None:
            progress.update(stop - start)
        start = stop
    for aggregator, result in zip(aggregators, results):
        if aggregator.is_mean:
            result /= sampler.count
    return results


def _attribute_group(runtime, x, targets, sampler: Sampler, aggregators: list[Aggregator], context, seed,
                     start: int, stop: int, results: list[np.ndarray], buffer: np.ndarray | None,
                     needs_path: bool) -> None:
    """Draw the samples of images start..stop-1, run their rows in full batches, add into ``results``."""
    k, s = targets.shape[1], sampler.count
    deltas = None
    if buffer is not None:
        points = buffer[: (stop - start) * s]
        for j, i in enumerate(range(start, stop)):
            sampler.draw_into(x[i], image_rng(seed, x[i]), context, points[j * s:(j + 1) * s])
    else:
        drawn = [sampler.draw(x[i], image_rng(seed, x[i]), context) for i in range(start, stop)]
        points = np.concatenate([d.points for d in drawn]).astype(np.float32, copy=False)
        deltas = np.concatenate([d.deltas for d in drawn]) if needs_path else None
    # Row r = (image, sample, class), class fastest: the same sample point serves all classes of its image.
    point_index = np.repeat(np.arange(len(points)), k)
    classes = targets[start:stop][np.repeat(np.arange(stop - start), s * k), np.tile(np.arange(k), len(points))]
    contributions = _contributions(runtime, points, deltas, point_index, classes, k, aggregators)
    # Each (image, class) sums its S rows in one reduction of a fixed shape, once all are in: how the rows were
    # split into runtime calls (the batch size) cannot change the order of the sum, so neither the result.
    for contribution, result in zip(contributions, results):
        result[start:stop] += contribution.reshape(stop - start, s, k, *x.shape[1:]).sum(axis=1)


def _streamed(runtime, x, targets, sampler: Sampler, aggregators: list[Aggregator], context, seed, block: int,
              progress) -> list[np.ndarray]:
    """Images whose samples exceed ``block`` (x their classes, ``STREAMED_ROWS`` rows) one at a time, their
    samples drawn and reduced block by block (:meth:`Sampler.blocks`): memory stays that of one block whatever
    the count; ``progress`` advances by each block's share of an image."""
    n, k = targets.shape
    needs_path = any(a.needs_path for a in aggregators)
    results = [np.zeros((n, k, *x.shape[1:]), np.float32) for _ in aggregators]
    for i in range(n):
        for samples in sampler.blocks(x[i], image_rng(seed, x[i]), context, block):
            points = samples.points.astype(np.float32, copy=False)
            deltas = samples.deltas if needs_path else None
            point_index = np.repeat(np.arange(len(points)), k)
            classes = np.tile(targets[i], len(points))
            contributions = _contributions(runtime, points, deltas, point_index, classes, k, aggregators)
            for contribution, result in zip(contributions, results):
                result[i] += contribution.reshape(len(points), k, *x.shape[1:]).sum(axis=0)
            if progress is not None:
                progress.update(len(points) / sampler.count)
    for aggregator, result in zip(aggregators, results):
        if aggregator.is_mean:
            result /= sampler.count
    return results


def _contributions(runtime, points, deltas, point_index, classes, k: int, aggregators) -> list[np.ndarray]:
    """Each aggregator's contribution of every row (point_index[r], classes[r]), in runtime calls of at most
    ``runtime.max_batch`` rows."""
    contributions = [np.empty((len(point_index), *points.shape[1:]), np.float32) for _ in aggregators]
    for lo in range(0, len(point_index), runtime.max_batch):
        rows = slice(lo, lo + runtime.max_batch)
        # With one class per image the rows are the points themselves: slice (a view), don't gather.
        take = rows if k == 1 else point_index[rows]
        _, grads = runtime.class_gradients(points[take], classes[rows])
        for j, aggregator in enumerate(aggregators):
            # contributions may work in place (abs, square): every aggregator but the last gets a copy
            mine = grads if j == len(aggregators) - 1 else grads.copy()
            contributions[j][rows] = aggregator.contribution(mine, None if deltas is None else deltas[take])
    return contributions


def _adaptive(runtime, x, targets, method, context, seed) -> np.ndarray:
    """Guided IG: one walk per (image, class), all walks advancing together, one runtime call per step."""
    n, k = targets.shape
    flat_x = np.repeat(x, k, axis=0)
    flat_classes = targets.reshape(-1)
    baselines = np.stack([make_baseline(method.sampler.baseline, x[i], image_rng(seed, x[i]), context)
                          for i in range(n)])
    flat_baselines = np.repeat(baselines, k, axis=0)

    def grad_fn(points: np.ndarray) -> np.ndarray:
        return runtime.class_gradients(points.astype(np.float32, copy=False), flat_classes)[1]

    attributions = method.sampler.walk(flat_x, flat_baselines, grad_fn)
    return attributions.astype(np.float32).reshape(n, k, *x.shape[1:])
