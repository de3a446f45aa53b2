"""The harness's Guided IG against PAIR saliency's ``GuidedIG`` on the same network and hardware.

    python benchmarks/versus_pair.py --arch resnet50 --size 224 --images 2 --steps 50 --threads 2

One random-weight network (plain torch, ``export_scripts/architectures.py``) is exported to ONNX. The harness
runs Guided IG on its gradient graph under ONNX Runtime, one runtime call per step for all images at once; PAIR
saliency 0.2.1 runs ``GuidedIG.GetMask`` per image with a gradient callback on the torch module (PAIR's
algorithm asks for one gradient per step). Both use ``--steps`` steps, max_dist 0.02 and fraction 0.25 from a
black (zero) baseline, and ``--threads`` threads. Rounds alternate the order; the table gives medians of the
rounds and the spread of the per-round ratio. Needs torch and saliency (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import saliency.core as saliency
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "export_scripts"))
from architectures import build  # noqa: E402
from exporting import export_onnx  # noqa: E402

from harness.attribution import Context, attribute, get_method  # noqa: E402
from harness.runtime import GradientRuntime  # noqa: E402

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


def main() -> None:
    """Time both implementations in interleaved rounds; print seconds per image and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    numpy_2_quantile()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    net = build(args.arch, num_classes=1000).eval()
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    x = np.random.default_rng(0).standard_normal((args.images, 3, args.size, args.size)).astype(np.float32)
    with tempfile.TemporaryDirectory() as scratch:
        path = export_onnx(net, Path(scratch) / "net.onnx", input_size=(3, args.size, args.size))
        runtime = GradientRuntime(str(path), max_batch=32, threads=args.threads, use_cache=False)
    targets = runtime.forward(x).argmax(axis=1)
    context = Context(black=np.zeros((3, 1, 1), np.float32), white=np.ones((3, 1, 1), np.float32))
    method = get_method("guided-ig", steps=args.steps, max_dist=MAX_DIST, fraction=FRACTION)

    def ours():
        attribute(runtime, x, targets[:, None], method, context, 0)

    def theirs():
        for i in range(args.images):
            saliency.GuidedIG().GetMask(x[i], torch_callback(net, int(targets[i])), x_steps=args.steps,
                                        x_baseline=np.zeros_like(x[i]), max_dist=MAX_DIST, fraction=FRACTION)

    times: dict[str, list[float]] = {"harness": [], "pair": []}
    for r in range(args.rounds):
        order = [("harness", ours), ("pair", theirs)]
        for label, call in (order if r % 2 == 0 else order[::-1]):
            started = time.perf_counter()
            call()
            times[label].append((time.perf_counter() - started) / args.images)
    ratios = [p / h for h, p in zip(times["harness"], times["pair"])]
    print(f"{args.arch} {args.size}x{args.size}, {args.images} images, {args.steps} steps, {args.threads} threads, "
          f"{args.rounds} rounds")
    print(f"guided-ig    harness {statistics.median(times['harness']):.2f} s/img  PAIR "
          f"{statistics.median(times['pair']):.2f} s/img  PAIR / harness {statistics.median(ratios):.2f} "
          f"({min(ratios):.2f} to {max(ratios):.2f})")


if __name__ == "__main__":
    main()
