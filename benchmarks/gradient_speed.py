"""Speed of the input-gradient graph: ORT gradient call vs ORT forward vs PyTorch forward+backward.

    python benchmarks/gradient_speed.py --arch resnet50 --size 224 --batch 8 --threads 2
    python benchmarks/gradient_speed.py --model their_model.onnx --batch 8 --threads 2 --target 4

``--model`` times any ONNX classifier (the gradient graph built as ``harness gradgraph`` builds it, with its
model card or sidecar where it has one) against its own forward call; there is no PyTorch twin to compare.

All run in one process on the same weights, batch and pinned threads (``timing.pin_threads``). Each
comparison is timed in interleaved rounds of two calls whose order alternates (ORT forward and ORT gradient;
then, apart, ORT gradient and PyTorch with a pause before each call so that no thread pool still spins, since
PyTorch's pool and allocator disturb whatever runs right after it); every call is warmed up twice first (ORT
plans its memory on the first run and allocates that plan on the second). Each ratio is the median over rounds
with its IQR, against its target (``--target``; by default ``targets.py``'s for ResNet-50, EfficientNet-B0 and
MobileNetV2), for each of ``--runs`` runs. Needs torch (export and the comparison only; the harness itself
never imports it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

import targets
from timing import (Run, Target, add_options, header, interleaved_rounds, per_unit, pin_threads, ratio, repeats,
                    session_options, write_json)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "export_scripts"))
from architectures import build  # noqa: E402
from exporting import export_onnx  # noqa: E402

from harness.core.onnx_io import load_model  # noqa: E402
from harness.gradients import add_input_gradient  # noqa: E402
from harness.gradients.rules import conv as conv_rules  # noqa: E402
from harness.model.card import read_card  # noqa: E402
from harness.model.feeding import build_gradient_model  # noqa: E402
from harness.runtime.sessions import inference_session  # noqa: E402

WARMUP = 2


def session(model: onnx.ModelProto, threads: int, profile: str | None = None,
            level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL) -> ort.InferenceSession:
    """A CPU session of ``model`` with ``threads`` intra-op threads, optionally profiled."""
    options = session_options(threads)
    options.graph_optimization_level = level
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = profile
    return inference_session(model, options, ["CPUExecutionProvider"])


def gradient_target(args) -> Target | None:
    """``--target`` where given, else the architecture's (none for ``--model`` or another architecture)."""
    if args.target is not None:
        return Target("<=", args.target)
    return None if args.model else targets.GRADIENT.get(args.arch)


def zoo_calls(args) -> tuple[str, dict, int, ort.InferenceSession]:
    """A random-weight zoo architecture: its title, its calls (ORT forward, ORT gradient, PyTorch, and the
    gradient without the blocked layout with ``--compare-layouts``), the batch and the gradient session."""
    torch.manual_seed(0)
    net = build(args.arch, num_classes=1000).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(net, path, input_size=(3, args.size, args.size), exporter=args.exporter)
        model = onnx.load(str(path))
    grad_model = add_input_gradient(model)
    forward = session(model, args.threads)
    gradient = session(grad_model, args.threads, args.profile)
    input_name = model.graph.input[0].name
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 3, args.size, args.size)).astype(np.float32)
    seed = np.zeros((args.batch, 1000), np.float32)
    seed[np.arange(args.batch), rng.integers(0, 1000, args.batch)] = 1.0
    x_torch, seed_torch = torch.from_numpy(x), torch.from_numpy(seed)

    def run_torch():
        xt = x_torch.clone().requires_grad_(True)
        (net(xt) * seed_torch).sum().backward()

    calls = {"ort forward": lambda: forward.run(None, {input_name: x}),
             "ort gradient": lambda: gradient.run(["input_grad"], {input_name: x, "grad_seed": seed}),
             "torch fwd+bwd": run_torch}
    if args.compare_layouts:
        extended = session(grad_model, args.threads, level=ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
        calls["ort grad (ext)"] = lambda: extended.run(["input_grad"], {input_name: x, "grad_seed": seed})
    if args.compare_unfused:
        unfused = session(add_input_gradient(model, fuse=False), args.threads)
        calls["ort grad (unfused)"] = lambda: unfused.run(["input_grad"], {input_name: x, "grad_seed": seed})
    if args.compare_pad_zeros:
        limit, conv_rules.MAX_MASK_ELEMENTS = conv_rules.MAX_MASK_ELEMENTS, 0    # every zero insertion a Pad
        try:
            padded = session(add_input_gradient(model), args.threads)
        finally:
            conv_rules.MAX_MASK_ELEMENTS = limit
        calls["ort grad (pad zeros)"] = lambda: padded.run(["input_grad"], {input_name: x, "grad_seed": seed})
    title = f"{args.arch} {args.size}x{args.size}, batch {args.batch}, {args.threads} threads, {args.exporter} export"
    return title, calls, args.batch, gradient


def file_calls(args) -> tuple[str, dict, int, ort.InferenceSession]:
    """An ONNX file with its card: its title, its calls (ORT forward, ORT gradient), the batch and the gradient
    session."""
    model = load_model(args.model)
    grad_model = build_gradient_model(model, read_card(model, args.model))
    forward, gradient = session(model, args.threads), session(grad_model, args.threads, args.profile)
    image = next(i for i in grad_model.graph.input if i.name != "grad_seed")
    seed_info = next(i for i in grad_model.graph.input if i.name == "grad_seed")

    def dims(value_info, batch):
        shape = [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]
        return [shape[0] or batch, *shape[1:]]

    x = np.random.default_rng(0).standard_normal(dims(image, args.batch)).astype(np.float32)
    seed = np.zeros(dims(seed_info, len(x)), np.float32)
    seed.reshape(len(x), -1)[:, 0] = 1.0
    calls = {"ort forward": lambda: forward.run(None, {image.name: x}),
             "ort gradient": lambda: gradient.run(["input_grad"], {image.name: x, "grad_seed": seed})}
    return f"{Path(args.model).name}, input {list(x.shape)}, {args.threads} threads", calls, len(x), gradient


def measure(calls: dict, batch: int, rounds: int, target: Target | None, pause: float, index: int) -> Run:
    """One run: ORT forward against ORT gradient, then (where present) the gradient against PyTorch, without the
    blocked layout, without fused adjoints and with the zeros of strided adjoints padded, each in its own
    interleaved rounds."""
    warmup = WARMUP if index == 0 else 0
    ort_times = interleaved_rounds({name: calls[name] for name in ("ort forward", "ort gradient")}, rounds,
                                   warmup=warmup)
    times = dict(per_unit(ort_times, batch))
    ratios = [ratio("gradient / forward", ort_times, "ort gradient", "ort forward", target)]
    if "torch fwd+bwd" in calls:
        torch_times = interleaved_rounds({name: calls[name] for name in ("ort gradient", "torch fwd+bwd")}, rounds,
                                         pause=pause, warmup=warmup)
        times["torch fwd+bwd"] = per_unit(torch_times, batch)["torch fwd+bwd"]
        ratios.append(ratio("torch fwd+bwd / ORT gradient", torch_times, "torch fwd+bwd", "ort gradient",
                            targets.TORCH))
    if "ort grad (ext)" in calls:
        extended = interleaved_rounds({name: calls[name] for name in ("ort gradient", "ort grad (ext)")}, rounds,
                                      warmup=warmup)
        times["ort grad (ext)"] = per_unit(extended, batch)["ort grad (ext)"]
        ratios.append(ratio("gradient without NCHWc / with", extended, "ort grad (ext)", "ort gradient"))
    for variant, label in (("ort grad (unfused)", "gradient unfused / fused"),
                           ("ort grad (pad zeros)", "gradient with padded zeros / resized")):
        if variant in calls:
            paired = interleaved_rounds({name: calls[name] for name in ("ort gradient", variant)}, rounds,
                                        warmup=warmup)
            times[variant] = per_unit(paired, batch)[variant]
            ratios.append(ratio(label, paired, variant, "ort gradient"))
    return Run(times, tuple(ratios))


def main() -> None:
    """Time the calls in interleaved rounds, ``--runs`` times; print each run's times, ratios and verdicts."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--model", default=None, help="time this ONNX file instead of a zoo architecture")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--exporter", default="legacy", choices=["legacy", "dynamo"])
    parser.add_argument("--target", type=float, default=None,
                        help="the gradient call's target in forward calls (default: the architecture's)")
    parser.add_argument("--pause", type=float, default=0.3,
                        help="seconds slept before each call of the comparison with PyTorch")
    parser.add_argument("--compare-pad-zeros", action="store_true",
                        help="also time the gradient whose strided depthwise adjoints insert zeros with a Pad")
    parser.add_argument("--compare-unfused", action="store_true",
                        help="also time the gradient with every op's own rule (no fused adjoints, fusions.py)")
    parser.add_argument("--compare-layouts", action="store_true",
                        help="also time the gradient without ORT's blocked-layout (NCHWc) optimisation")
    parser.add_argument("--profile", default=None, help="write an ORT profile of the gradient call with this prefix")
    add_options(parser)
    args = parser.parse_args()
    pinned = pin_threads(args.threads) + [f"ORT intra-op threads {args.threads} per session, inter-op 1"]
    title, calls, batch, gradient = file_calls(args) if args.model else zoo_calls(args)
    for line in header(title, args.rounds, args.runs, pinned):
        print(line)
    target = gradient_target(args)
    runs = repeats(lambda index: measure(calls, batch, args.rounds, target, args.pause, index), args.runs)
    write_json(args.json, title, pinned, runs, batch=batch, rounds=args.rounds)
    if args.profile:
        gradient.end_profiling()


if __name__ == "__main__":
    main()
