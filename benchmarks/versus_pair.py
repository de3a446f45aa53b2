"""The harness's Guided IG against PAIR saliency's ``GuidedIG`` on the same network and hardware.

    python benchmarks/versus_pair.py --arch resnet50 --size 224 --images 2 --steps 50 --threads 2

One random-weight network (plain torch, ``export_scripts/architectures.py``) is exported to ONNX. The harness
runs Guided IG on its gradient graph under ONNX Runtime, one runtime call per step for all images at once; PAIR
saliency 0.2.1 runs ``GuidedIG.GetMask`` per image with a gradient callback on the torch module (PAIR's
algorithm asks for one gradient per step). Both use ``--steps`` steps, max_dist 0.02 and fraction 0.25 from a
black (zero) baseline, and ``--threads`` pinned threads (``timing.pin_threads``). Both are called once
untimed, then in interleaved rounds whose order alternates; each run prints seconds per image (median and IQR
over rounds) and PAIR / harness per round against its target in ``targets.py`` (at least 2x) with its verdict, for each
of ``--runs`` runs. Needs torch and saliency (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import saliency.core as saliency
import torch

import targets
from timing import (Run, add_options, header, interleaved_rounds, per_unit, pin_threads, ratio, repeats,
                    write_json)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "export_scripts"))
from architectures import build  # noqa: E402
from exporting import export_onnx  # noqa: E402

from harness.attribution import Context, attribute, get_method  # noqa: E402
from harness.runtime.gradient import GradientRuntime  # noqa: E402

MAX_DIST, FRACTION = 0.02, 0.25     # both libraries' defaults


def numpy_2_quantile() -> None:
    """saliency 0.2.1 calls ``np.quantile(..., interpolation=)``, which numpy 2 removed: map it to ``method=``."""
    quantile = np.quantile

    def compatible(a, q, *args, interpolation=None, **kwargs):
        if interpolation is not None:
            kwargs["method"] = interpolation
        return quantile(a, q, *args, **kwargs)

    np.quantile = compatible


def torch_callback(net, target: int):
    """PAIR's gradient callback on the torch module: the input gradient of the target logit per point."""
    def call_model(points, call_model_args=None, expected_keys=None):
        x = torch.from_numpy(np.asarray(points, np.float32)).requires_grad_(True)
        net(x)[:, target].sum().backward()
        return {saliency.INPUT_OUTPUT_GRADIENTS: x.grad.numpy()}

    return call_model


def measure(ours, theirs, images: int, rounds: int, index: int) -> Run:
    """One run: the harness beside PAIR in interleaved rounds (the first run warms both once)."""
    times = interleaved_rounds({"harness": ours, "pair": theirs}, rounds, warmup=1 if index == 0 else 0)
    guided = ratio("guided-ig PAIR / harness", times, "pair", "harness", targets.PAIR)
    return Run(per_unit(times, images), (guided,), time_unit="s")


def main() -> None:
    """Time both implementations in interleaved rounds, ``--runs`` times; print seconds per image, the ratio and
    its verdict."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    add_options(parser)
    args = parser.parse_args()
    pinned = pin_threads(args.threads)
    numpy_2_quantile()
    torch.manual_seed(0)
    net = build(args.arch, num_classes=1000).eval()
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    x = np.random.default_rng(0).standard_normal((args.images, 3, args.size, args.size)).astype(np.float32)
    with tempfile.TemporaryDirectory() as scratch:
        path = export_onnx(net, Path(scratch) / "net.onnx", input_size=(3, args.size, args.size))
        runtime = GradientRuntime(str(path), max_batch=32, threads=args.threads, use_cache=False)
    pinned.append(f"harness: {args.threads} threads in {runtime.streams} streams")
    classes = runtime.forward(x).argmax(axis=1)
    context = Context(black=np.zeros((3, 1, 1), np.float32), white=np.ones((3, 1, 1), np.float32))
    method = get_method("guided-ig", steps=args.steps, max_dist=MAX_DIST, fraction=FRACTION)

    def ours():
        attribute(runtime, x, classes[:, None], method, context, 0)

    def theirs():
        for i in range(args.images):
            saliency.GuidedIG().GetMask(x[i], torch_callback(net, int(classes[i])), x_steps=args.steps,
                                        x_baseline=np.zeros_like(x[i]), max_dist=MAX_DIST, fraction=FRACTION)

    title = f"{args.arch} {args.size}x{args.size}, {args.images} images, {args.steps} steps, {args.threads} threads"
    for line in header(title, args.rounds, args.runs, pinned):
        print(line)
    runs = repeats(lambda index: measure(ours, theirs, args.images, args.rounds, index), args.runs)
    write_json(args.json, title, pinned, runs, images=args.images, steps=args.steps, rounds=args.rounds)


if __name__ == "__main__":
    main()
