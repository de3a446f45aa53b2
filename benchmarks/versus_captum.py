"""The harness against Captum on the same hardware: seconds per image of SmoothGrad, IG and suppression.

    python benchmarks/versus_captum.py --arch resnet50 --size 224 --images 2 --samples 50 --batch 32 --threads 2

One random-weight network (plain torch, ``export_scripts/architectures.py``) is exported to ONNX; the harness
runs its gradient graph under ONNX Runtime, Captum 0.9 runs the torch module, both with ``--threads`` threads and
``--batch`` rows per call:

* SmoothGrad (``--samples`` noisy copies, noise 0.15 of the image's range) against
  ``NoiseTunnel(Saliency).attribute(nt_type="smoothgrad", stdevs=0.15 * range)``;
* IG (``--samples`` steps from black) against ``IntegratedGradients.attribute(n_steps=...)``;
* suppression (``--samples`` masks, p = 0.7) against ``NoiseTunnel(Saliency(abs=True))``, the same number of
  gradients per image.

Each round times every pair back to back, in alternating order; the table gives medians of the rounds and the
spread of the per-round ratio, and the last line the harness's SmoothGrad over its suppression per round (the
same number of gradient rows, so the same runtime work). Needs torch and captum (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "export_scripts"))
from architectures import build  # noqa: E402
from exporting import export_onnx  # noqa: E402

from harness.attribution import Context, attribute, get_method  # noqa: E402
from harness.runtime import GradientRuntime  # noqa: E402

NOISE, P = 0.15, 0.7


def harness_methods(samples: int) -> dict:
    """The harness's three methods at ``samples`` gradients per image."""
    return {"smoothgrad": get_method("smoothgrad", samples=samples, level=NOISE),
            "ig": get_method("ig", steps=samples),
            "suppression": get_method("suppression", samples=samples, p=P)}


def captum_calls(net, x: torch.Tensor, targets: torch.Tensor, samples: int, batch: int) -> dict:
    """Captum's counterparts, each a function of no arguments."""
    stdev = NOISE * float(x.max() - x.min())

    def smoothgrad():
        NoiseTunnel(Saliency(net)).attribute(x, nt_type="smoothgrad", nt_samples=samples, stdevs=stdev,
                                             nt_samples_batch_size=batch, target=targets, abs=False)

    def ig():
        IntegratedGradients(net).attribute(x, baselines=torch.zeros_like(x), target=targets, n_steps=samples,
                                           internal_batch_size=batch)

    def suppression():
        NoiseTunnel(Saliency(net)).attribute(x, nt_type="smoothgrad", nt_samples=samples, stdevs=stdev,
                                             nt_samples_batch_size=batch, target=targets, abs=True)

    return {"smoothgrad": smoothgrad, "ig": ig, "suppression": suppression}


def main() -> None:
    """Time each method pair in interleaved rounds; print seconds per image and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--without-captum", action="store_true",
                        help="time the harness's methods alone, alternating (no torch calls between them)")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    net = build(args.arch, num_classes=1000).eval()
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.images, 3, args.size, args.size)).astype(np.float32)
    with tempfile.TemporaryDirectory() as scratch:
        path = export_onnx(net, Path(scratch) / "net.onnx", input_size=(3, args.size, args.size))
        runtime = GradientRuntime(str(path), max_batch=args.batch, threads=args.threads, use_cache=False)
    targets = runtime.forward(x).argmax(axis=1)
    context = Context(black=np.zeros((3, 1, 1), np.float32), white=np.ones((3, 1, 1), np.float32))  # IG from 0
    ours = {name: (lambda m=method: attribute(runtime, x, targets[:, None], m, context, 0))
            for name, method in harness_methods(args.samples).items()}
    theirs = captum_calls(net, torch.from_numpy(x), torch.from_numpy(targets), args.samples, args.batch)
    times = {name: {"harness": [], "captum": []} for name in ours}
    for r in range(args.rounds):
        for name in ours:
            order = [("harness", ours[name])] + ([] if args.without_captum else [("captum", theirs[name])])
            for label, call in (order if r % 2 == 0 else order[::-1]):
                started = time.perf_counter()
                call()
                times[name][label].append((time.perf_counter() - started) / args.images)
    print(f"{args.arch} {args.size}x{args.size}, {args.images} images, {args.samples} samples or steps, "
          f"{args.batch} rows per call, {args.threads} threads, {args.rounds} rounds")
    print(f"{'method':12} {'harness s/img':>14}" + ("" if args.without_captum else
                                                      f" {'captum s/img':>13} {'captum / harness':>17}  (rounds)"))
    for name, measured in times.items():
        if args.without_captum:
            print(f"{name:12} {statistics.median(measured['harness']):14.2f}")
            continue
        ratios = [c / h for h, c in zip(measured["harness"], measured["captum"])]
        ours_median, theirs_median = statistics.median(measured["harness"]), statistics.median(measured["captum"])
        print(f"{name:12} {ours_median:14.2f} {theirs_median:13.2f} {statistics.median(ratios):17.2f}  "
              f"({min(ratios):.2f} to {max(ratios):.2f})")
    same_work = [s / m for s, m in zip(times["smoothgrad"]["harness"], times["suppression"]["harness"])]
    print(f"harness smoothgrad / suppression (the same runtime work): {statistics.median(same_work):.2f} "
          f"({min(same_work):.2f} to {max(same_work):.2f})")


if __name__ == "__main__":
    main()
