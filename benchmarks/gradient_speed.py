"""Speed of the input-gradient graph: ORT gradient call vs ORT forward vs PyTorch forward+backward.

    python benchmarks/gradient_speed.py --arch resnet50 --size 224 --batch 8 --threads 2
    python benchmarks/gradient_speed.py --model their_model.onnx --batch 8 --threads 2

``--model`` times any ONNX classifier (the gradient graph built as ``harness gradgraph`` builds it, with its
model card or sidecar where it has one) against its own forward call; there is no PyTorch twin to compare.

All run in one process on the same weights, batch and thread count. Each ratio is the median over rounds of
two calls timed back to back (ORT gradient after ORT forward; PyTorch after the ORT gradient, with a pause so
that no thread pool still spins), so slow drifts of a shared machine cancel. Needs torch (export and the
comparison only; the harness itself never imports it).
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
from harness.model_card import read_card  # noqa: E402
from harness.onnx_io import load_model  # noqa: E402
from harness.feeding import build_gradient_model  # noqa: E402
from harness.sessions import inference_session  # noqa: E402


def session(model: onnx.ModelProto, threads: int, profile: str | None = None,
            level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = level
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = profile
    return inference_session(model, options, ["CPUExecutionProvider"])


def paired_times(first, second, rounds: int, pause: float) -> list[tuple[float, float]]:
    """Wall-clock seconds of ``first`` and ``second`` called back to back, once per round."""
    pairs = []
    for _ in range(rounds):
        times = []
        for fn in (first, second):
            time.sleep(pause)
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        pairs.append(tuple(times))
    return pairs


def ratio_spread(pairs) -> tuple[float, float, float]:
    """Smallest, median and largest per-round ratio second / first."""
    ratios = [second / first for first, second in pairs]
    return min(ratios), statistics.median(ratios), max(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--model", default=None, help="time this ONNX file instead of a zoo architecture")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--exporter", default="legacy", choices=["legacy", "dynamo"])
    parser.add_argument("--compare-layouts", action="store_true",
                        help="also time the gradient without ORT's blocked-layout (NCHWc) optimisation")
    parser.add_argument("--profile", default=None, help="write an ORT profile of the gradient call with this prefix")
    args = parser.parse_args()
    if args.model:
        time_model(args)
        return

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
    for fn in candidates.values():
        # Two warm-up calls: ORT plans its memory pattern on the first run and allocates that block on the second.
        fn()
        fn()
    # Each ratio comes from calls timed back to back, one pair per round, so that slow drifts of a shared
    # machine cancel; the median over rounds is reported. The ORT pairs are timed apart from PyTorch, whose
    # thread pool and allocator disturb whatever runs right after it.
    ort_pairs = paired_times(run_forward, run_gradient, args.rounds, pause=0.0)
    torch_pairs = paired_times(run_gradient, run_torch, args.rounds, pause=0.3)
    extended_pairs = (paired_times(run_gradient, run_gradient_extended, args.rounds, pause=0.0)
                      if gradient_extended is not None else None)
    forward_ms, gradient_ms = (1000 * statistics.median(t) / args.batch for t in zip(*ort_pairs))
    torch_ms = 1000 * statistics.median(t for _, t in torch_pairs) / args.batch
    print(f"{args.arch} {args.size}x{args.size}, batch {args.batch}, {args.threads} threads, "
          f"{args.exporter} export, {args.rounds} rounds of back-to-back pairs")
    print(f"  {'ort forward':14s} {forward_ms:8.1f} ms/image")
    print(f"  {'ort gradient':14s} {gradient_ms:8.1f} ms/image")
    print(f"  {'torch fwd+bwd':14s} {torch_ms:8.1f} ms/image")
    if extended_pairs is not None:
        print(f"  {'ort grad (ext)':14s} {1000 * statistics.median(t for _, t in extended_pairs) / args.batch:8.1f}"
              f" ms/image ({ratio_spread(extended_pairs)[1]:.2f}x the gradient with NCHWc)")
    low, mid, high = ratio_spread(ort_pairs)
    print(f"  gradient / forward           = {mid:.2f}x (rounds: {low:.2f}x to {high:.2f}x; target <= 2.5x)")
    low, mid, high = ratio_spread(torch_pairs)
    print(f"  torch fwd+bwd / ORT gradient = {mid:.2f}x (rounds: {low:.2f}x to {high:.2f}x; target >= 1.3x)")
    if args.profile:
        gradient.end_profiling()


def time_model(args) -> None:
    """Gradient call vs forward call of an ONNX file, side by side in one process."""
    model = load_model(args.model)
    grad_model = build_gradient_model(model, read_card(model, args.model))
    forward, gradient = session(model, args.threads), session(grad_model, args.threads, args.profile)
    image = next(i for i in grad_model.graph.input if i.name != "grad_seed")
    seed_info = next(i for i in grad_model.graph.input if i.name == "grad_seed")

    def dims(value_info, batch):
        shape = [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]
        return [shape[0] or batch, *shape[1:]]

    rng = np.random.default_rng(0)
    x = rng.standard_normal(dims(image, args.batch)).astype(np.float32)
    seed = np.zeros(dims(seed_info, len(x)), np.float32)
    seed.reshape(len(x), -1)[:, 0] = 1.0
    feeds = {image.name: x}
    for fn in (lambda: forward.run(None, feeds), lambda: gradient.run(["input_grad"], {**feeds, "grad_seed": seed})):
        fn()
        fn()
    pairs = paired_times(lambda: forward.run(None, feeds),
                        lambda: gradient.run(["input_grad"], {**feeds, "grad_seed": seed}), args.rounds, pause=0.0)
    forward_ms, gradient_ms = (1000 * statistics.median(t) / len(x) for t in zip(*pairs))
    low, mid, high = ratio_spread(pairs)
    print(f"{Path(args.model).name}, input {list(x.shape)}, {args.threads} threads, {args.rounds} rounds of "
          f"back-to-back pairs")
    print(f"  {'ort forward':14s} {forward_ms:8.2f} ms/image")
    print(f"  {'ort gradient':14s} {gradient_ms:8.2f} ms/image")
    print(f"  gradient / forward           = {mid:.2f}x (rounds: {low:.2f}x to {high:.2f}x)")
    if args.profile:
        gradient.end_profiling()


if __name__ == "__main__":
    main()
