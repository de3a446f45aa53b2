"""The adjoint of a strided, ungrouped convolution: the harness's ConvTranspose against two stride-1 forms.

    python benchmarks/strided_adjoints.py --batch 8 --threads 2

For each of ResNet-50's seven strided convolutions (the 7x7 stem, the 3x3 stride-2 convolutions of V1.5, the
1x1 stride-2 shortcuts) at 224x224 input, three graphs map the output gradient [N, Cout, Ho, Wo] to the input
gradient [N, Cin, H, W]:

* ``harness``: the gradient pass's own adjoint of a one-Conv model (``add_input_gradient``): a ConvTranspose
  followed by the identity depthwise Conv that keeps the blocked layout (``harness/gradients/rules/conv.py``);
* ``sub-pixel``: one stride-1 Conv whose s x s x Cin output channels are the output's phases (each phase's own
  taps of the kernel, ceil(k / s) wide), interleaved by DepthToSpace and cropped to the input's size;
* ``pointwise`` (1x1 kernels only): the 1x1 Conv with the transposed weights at the output's resolution, then
  the zeros inserted by a nearest Resize times a mask of the anchors (as the strided depthwise adjoint does).

All three are checked to agree (relative L2 under 1e-5) before anything is timed. Each run times them in
interleaved rounds (``timing.interleaved_rounds``) and prints, per geometry, the milliseconds per image and
variant / harness per round (above 1: the harness's adjoint is the faster).

A one-op graph overstates what a whole gradient graph gains: it pays the conversions into and out of ONNX
Runtime's blocked layout that a network's neighbouring ops share. The pointwise form, twice as fast here, made
no measurable difference inside ResNet-50's gradient call (docs/performance.md), so it is not in the graph.
"""

from __future__ import annotations

import argparse

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from harness.gradients import add_input_gradient
from harness.runtime.sessions import inference_session
from timing import (Run, add_options, header, interleaved_rounds, per_unit, pin_threads, ratio, repeats,
                    session_options, write_json)

# name, Cin, Cout, kernel, stride, pad, input size: ResNet-50's strided convolutions at 224x224
GEOMETRIES = (("stem 7x7/2 3<-64", 3, 64, 7, 2, 3, 224), ("3x3/2 128", 128, 128, 3, 2, 1, 56),
              ("3x3/2 256", 256, 256, 3, 2, 1, 28), ("3x3/2 512", 512, 512, 3, 2, 1, 14),
              ("1x1/2 256->512", 256, 512, 1, 2, 0, 56), ("1x1/2 512->1024", 512, 1024, 1, 2, 0, 28),
              ("1x1/2 1024->2048", 1024, 2048, 1, 2, 0, 14))
AGREEMENT = 1e-5


def graph_model(nodes, initializers: dict, inputs, output_shape, opset: int = 17) -> onnx.ModelProto:
    """A model of ``nodes`` with float32 (or int64) ``initializers``, ``inputs`` as (name, shape), output Y."""
    tensors = [numpy_helper.from_array(v if v.dtype == np.int64 else v.astype(np.float32), k)
               for k, v in initializers.items()]
    graph = helper.make_graph(nodes, "adjoint", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
                                                 for n, s in inputs],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, output_shape)], tensors)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def ints(*values) -> np.ndarray:
    return np.array(values, np.int64)


def harness_adjoint(weights, stride, pad, size, batch, lo) -> tuple[onnx.ModelProto, str]:
    """The gradient pass's adjoint: the input-gradient graph of Conv(X), fed the output gradient as its seed."""
    cin, k = weights.shape[1], weights.shape[2]
    conv = graph_model([helper.make_node("Conv", ["X", "W"], ["Y"], kernel_shape=[k, k], strides=[stride] * 2,
                                         pads=[pad] * 4)], {"W": weights}, [("X", (batch, cin, size, size))],
                       (batch, weights.shape[0], lo, lo))
    return add_input_gradient(conv), "grad_seed"


def sub_pixel_adjoint(weights, stride, pad, size, batch, lo) -> tuple[onnx.ModelProto, str]:
    """Phase (rh, rw)'s output dx[q s + r - p] = sum_m W[r + s m] g[q - m]: one Conv with every phase's taps
    (ceil(k / s) wide, zero where r + s m >= k), DepthToSpace (DCR), and the crop of the pad."""
    cout, cin, k = weights.shape[:3]
    s, m = stride, -(-k // stride)
    taps = np.zeros((s, s, cin, cout, m, m), np.float32)
    for rh in range(s):
        for rw in range(s):
            for jh in range(m):
                for jw in range(m):
                    kh, kw = rh + s * (m - 1 - jh), rw + s * (m - 1 - jw)
                    if kh < k and kw < k:
                        taps[rh, rw, :, :, jh, jw] = weights[:, :, kh, kw].T
    nodes = [helper.make_node("Conv", ["G", "K"], ["phases"], pads=[m - 1] * 4, kernel_shape=[m, m]),
             helper.make_node("DepthToSpace", ["phases"], ["spread"], blocksize=s, mode="DCR"),
             helper.make_node("Slice", ["spread", "starts", "ends", "axes"], ["Y"])]
    inits = {"K": taps.reshape(s * s * cin, cout, m, m), "starts": ints(pad, pad),
             "ends": ints(pad + size, pad + size), "axes": ints(2, 3)}
    return graph_model(nodes, inits, [("G", (batch, cout, lo, lo))], (batch, cin, size, size)), "G"


def pointwise_adjoint(weights, stride, size, batch, lo) -> tuple[onnx.ModelProto, str]:
    """1x1 kernels: the transposed 1x1 Conv at the output's resolution, then the zeros inserted."""
    cout, cin = weights.shape[:2]
    mask = np.zeros((1, 1, lo * stride, lo * stride), np.float32)
    mask[..., ::stride, ::stride] = 1.0
    nodes = [helper.make_node("Conv", ["G", "Wt"], ["low"], kernel_shape=[1, 1]),
             helper.make_node("Resize", ["low", "", "scales"], ["spread"], mode="nearest",
                              coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
             helper.make_node("Mul", ["spread", "mask"], ["zeros_inserted"]),
             helper.make_node("Slice", ["zeros_inserted", "starts", "ends", "axes"], ["Y"])]
    inits = {"Wt": weights.transpose(1, 0, 2, 3), "scales": np.array([1, 1, stride, stride], np.float32),
             "mask": mask, "starts": ints(0, 0), "ends": ints(size, size), "axes": ints(2, 3)}
    return graph_model(nodes, inits, [("G", (batch, cout, lo, lo))], (batch, cin, size, size)), "G"


def variants(geometry, batch: int, threads: int, rng) -> tuple[str, dict]:
    """The geometry's name and a call per variant, checked to agree with the harness's adjoint."""
    name, cin, cout, k, stride, pad, size = geometry
    lo = (size + 2 * pad - k) // stride + 1
    weights = (rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32)
    grad = rng.standard_normal((batch, cout, lo, lo)).astype(np.float32)
    x = np.zeros((batch, cin, size, size), np.float32)      # the one-Conv model is linear: dx does not depend on x
    models = {"harness": harness_adjoint(weights, stride, pad, size, batch, lo),
              "sub-pixel": sub_pixel_adjoint(weights, stride, pad, size, batch, lo)}
    if k == 1 and pad == 0:
        models["pointwise"] = pointwise_adjoint(weights, stride, size, batch, lo)
    calls, results = {}, {}
    for variant, (model, fed) in models.items():
        session = inference_session(model, session_options(threads), ["CPUExecutionProvider"])
        feed = {"X": x, "grad_seed": grad} if fed == "grad_seed" else {fed: grad}
        output = "input_grad" if fed == "grad_seed" else "Y"
        results[variant] = session.run([output], feed)[0]
        calls[f"{name} {variant}"] = (lambda s=session, f=feed, o=output: s.run([o], f))
    reference = results["harness"]
    for variant, result in results.items():
        error = float(np.linalg.norm(result - reference) / np.linalg.norm(reference))
        if result.shape != reference.shape or not error <= AGREEMENT:
            raise SystemExit(f"{name}: the {variant} adjoint disagrees with the harness's (relative L2 {error:.2e})")
    return name, calls


def measure(geometries: list[tuple[str, dict]], batch: int, rounds: int, index: int) -> Run:
    """One run: each geometry's variants in interleaved rounds, then variant / harness per round."""
    times, ratios = {}, []
    for name, calls in geometries:
        measured = interleaved_rounds(calls, rounds, warmup=2 if index == 0 else 0)
        times.update(measured)
        for label in calls:
            if not label.endswith(" harness"):
                ratios.append(ratio(f"{label} / harness", measured, label, f"{name} harness"))
    return Run(per_unit(times, batch), tuple(ratios))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--scale", type=int, default=1,
                        help="divide every channel count and input size by this (2 or 4 for a quick check)")
    add_options(parser)
    args = parser.parse_args()
    pinned = pin_threads(args.threads)
    rng = np.random.default_rng(0)
    scaled = [(name, max(1, cin // args.scale) if cin > 3 else cin, max(1, cout // args.scale), k, s, p,
               size // args.scale) for name, cin, cout, k, s, p, size in GEOMETRIES]
    geometries = [variants(g, args.batch, args.threads, rng) for g in scaled]
    scale = "" if args.scale == 1 else f" at 1/{args.scale} scale"
    title = f"strided ungrouped Conv adjoints of ResNet-50{scale}, batch {args.batch}, {args.threads} threads"
    for line in header(title, args.rounds, args.runs, pinned):
        print(line)
    runs = repeats(lambda index: measure(geometries, args.batch, args.rounds, index), args.runs)
    write_json(args.json, title, pinned, runs, batch=args.batch, rounds=args.rounds)


if __name__ == "__main__":
    main()
