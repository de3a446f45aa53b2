"""Speed of the input-gradient graph: ORT gradient call vs ORT forward vs PyTorch forward+backward.

    python benchmarks/gradient_speed.py --arch resnet50 --size 224 --batch 8 --threads 2

All run in one process on the same weights, batch and thread count, interleaved round by round (with a pause
between calls so that no thread pool still spins when the next one starts), so the ratios are comparable even
on a noisy machine. Needs torch (export only; the harness itself never imports it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "export_scripts"))
from architectures import build  # noqa: E402
from exporting import export_onnx  # noqa: E402

from harness.gradients import add_input_gradient  # noqa: E402


def session(model: onnx.ModelProto, threads: int, profile: str | None = None,
            level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = level
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = profile
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--exporter", default="legacy", choices=["legacy", "dynamo"])
    parser.add_argument("--compare-layouts", action="store_true",
                        help="also time the gradient without ORT's blocked-layout (NCHWc) optimisation")
    parser.add_argument("--profile", default=None, help="write an ORT profile of the gradient call with this prefix")
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    net = build(args.arch, num_classes=1000).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(net, path, input_size=(3, args.size, args.size), exporter=args.exporter)
        model = onnx.load(str(path))
    grad_model = add_input_gradient(model)
    forward = session(model, args.threads)
    gradient = session(grad_model, args.threads, args.profile)
    gradient_extended = (session(grad_model, args.threads, level=ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
                         if args.compare_layouts else None)
    input_name = model.graph.input[0].name

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 3, args.size, args.size)).astype(np.float32)
    seed = np.zeros((args.batch, 1000), np.float32)
    seed[np.arange(args.batch), rng.integers(0, 1000, args.batch)] = 1.0
    x_torch = torch.from_numpy(x)
    seed_torch = torch.from_numpy(seed)

    def run_forward():
        forward.run(None, {input_name: x})

    def run_gradient():
        gradient.run(["input_grad"], {input_name: x, "grad_seed": seed})

    def run_torch():
        xt = x_torch.clone().requires_grad_(True)
        (net(xt) * seed_torch).sum().backward()

    def run_gradient_extended():
        gradient_extended.run(["input_grad"], {input_name: x, "grad_seed": seed})

    candidates = {"ort forward": run_forward, "ort gradient": run_gradient, "torch fwd+bwd": run_torch}
    if gradient_extended is not None:
        candidates["ort grad (ext)"] = run_gradient_extended
    for fn in candidates.values():  # warm-up
        fn()
    times = {name: [] for name in candidates}
    for _ in range(args.rounds):
        for name, fn in candidates.items():
            time.sleep(0.3)  # let the previous candidate's threads (torch's OpenMP pool spins) go idle
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"{args.arch} {args.size}x{args.size}, batch {args.batch}, {args.threads} threads, "
          f"{args.exporter} export, median of {args.rounds} interleaved rounds")
    for name, seconds in median.items():
        print(f"  {name:14s} {1000 * seconds / args.batch:8.1f} ms/image")
    print(f"  gradient / forward           = {median['ort gradient'] / median['ort forward']:.2f}x (target <= 2.5x)")
    print(f"  torch fwd+bwd / ORT gradient = {median['torch fwd+bwd'] / median['ort gradient']:.2f}x (target >= 1.3x)")
    if args.profile:
        gradient.end_profiling()


if __name__ == "__main__":
    main()
