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

Every call is made once untimed, then each round calls all six, the harness beside Captum for each method,
the whole order reversed every other round (``timing.interleaved_rounds``, threads pinned by
``timing.pin_threads``). Each run prints seconds per image (median and IQR over rounds), Captum / harness per
round against its target in ``targets.py`` (at least 2x) with its verdict, and the harness's SmoothGrad over its
suppression per round (the same number of gradient rows, so the same runtime work); ``--runs`` runs. Needs
torch and captum (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

import targets
from timing import (Run, add_options, header, interleaved_rounds, per_unit, pin_threads, ratio, repeats,
                    write_json)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "export_scripts"))
from architectures import build  # noqa: E402
from exporting import export_onnx  # noqa: E402

from harness.attribution import Context, attribute, get_method  # noqa: E402
from harness.runtime.gradient import GradientRuntime  # noqa: E402

NOISE, P = 0.15, 0.7


def harness_methods(samples: int) -> dict:
    """The harness's three methods at ``samples`` gradients per image."""
    return {"smoothgrad": get_method("smoothgrad", samples=samples, level=NOISE),
            "ig": get_method("ig", steps=samples),
            "suppression": get_method("suppression", samples=samples, p=P)}


def captum_calls(net, x: torch.Tensor, classes: torch.Tensor, samples: int, batch: int) -> dict:
    """Captum's counterparts, each a function of no arguments."""
    stdev = NOISE * float(x.max() - x.min())

    def smoothgrad():
        NoiseTunnel(Saliency(net)).attribute(x, nt_type="smoothgrad", nt_samples=samples, stdevs=stdev,
                                             nt_samples_batch_size=batch, target=classes, abs=False)

    def ig():
        IntegratedGradients(net).attribute(x, baselines=torch.zeros_like(x), target=classes, n_steps=samples,
                                           internal_batch_size=batch)

    def suppression():
        NoiseTunnel(Saliency(net)).attribute(x, nt_type="smoothgrad", nt_samples=samples, stdevs=stdev,
                                             nt_samples_batch_size=batch, target=classes, abs=True)

    return {"smoothgrad": smoothgrad, "ig": ig, "suppression": suppression}


def measure(ours: dict, theirs: dict, images: int, rounds: int, index: int) -> Run:
    """One run: every method's harness call beside its Captum call in interleaved rounds (the whole order
    reversed every other round; the first run warms every call once)."""
    calls = {}
    for name in ours:
        calls[f"{name} harness"] = ours[name]
        if name in theirs:
            calls[f"{name} captum"] = theirs[name]
    times = interleaved_rounds(calls, rounds, warmup=1 if index == 0 else 0, order="alternate")
    ratios = [ratio(f"{name} captum / harness", times, f"{name} captum", f"{name} harness", targets.CAPTUM)
              for name in ours if name in theirs]
    ratios.append(ratio("harness smoothgrad / suppression (the same runtime work)", times, "smoothgrad harness",
                        "suppression harness"))
    return Run(per_unit(times, images), tuple(ratios), time_unit="s")


def main() -> None:
    """Time each method pair in interleaved rounds, ``--runs`` times; print seconds per image, ratios, verdicts."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--without-captum", action="store_true",
                        help="time the harness's methods alone, alternating (no torch calls between them)")
    add_options(parser)
    args = parser.parse_args()
    pinned = pin_threads(args.threads)
    torch.manual_seed(0)
    net = build(args.arch, num_classes=1000).eval()
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.images, 3, args.size, args.size)).astype(np.float32)
    with tempfile.TemporaryDirectory() as scratch:
        path = export_onnx(net, Path(scratch) / "net.onnx", input_size=(3, args.size, args.size))
        runtime = GradientRuntime(str(path), max_batch=args.batch, threads=args.threads, use_cache=False)
    pinned.append(f"harness: {args.threads} threads in {runtime.streams} streams")
    classes = runtime.forward(x).argmax(axis=1)
    context = Context(black=np.zeros((3, 1, 1), np.float32), white=np.ones((3, 1, 1), np.float32))  # IG from 0
    ours = {name: (lambda m=method: attribute(runtime, x, classes[:, None], m, context, 0))
            for name, method in harness_methods(args.samples).items()}
    theirs = {} if args.without_captum else captum_calls(net, torch.from_numpy(x), torch.from_numpy(classes),
                                                         args.samples, args.batch)
    title = (f"{args.arch} {args.size}x{args.size}, {args.images} images, {args.samples} samples or steps, "
             f"{args.batch} rows per call, {args.threads} threads")
    for line in header(title, args.rounds, args.runs, pinned):
        print(line)
    runs = repeats(lambda index: measure(ours, theirs, args.images, args.rounds, index), args.runs)
    write_json(args.json, title, pinned, runs, images=args.images, samples=args.samples, rounds=args.rounds)


if __name__ == "__main__":
    main()
