"""Check a gradient model against finite differences of the model itself.

For inputs x_i (images [N, C, H, W], or the model's own tensors where it takes no images), classes c_i and
random directions v_j, the directional derivative from the gradient graph, <∇f_c(x_i), v_j>, is compared with
central finite differences. Four things make float32 finite differences trustworthy on real networks, where a
fixed step both drowns in rounding and crosses ReLU kinks:

- **Kinks frozen** (:mod:`harness.gradients.freeze`): differences are taken of the network with every Relu,
  LeakyRelu, PRelu, Elu, Selu, Clip, HardSigmoid, HardSwish, Abs, Max, Min, MaxPool, GlobalMaxPool, ReduceMax
  and ReduceMin held in its state at x_i. That function has the gradient of f at x_i and is smooth along each
  line, so a large step is exact for piecewise-linear networks. The result counts the units a plain difference
  would have crossed (``kinks_crossed``).
- **Steps that must converge**: each step h is paired with h/2 and extrapolated (Richardson,
  (4 D(h/2) - D(h)) / 3, error O(h^4)); the errors at every step are reported, and the best one is the
  verdict. A wrong rule leaves an error that no step removes, the same at every step. Where float32 rounding of
  a large output dominates, the step grows until the error is within the tolerance or rises again; where
  curvature dominates (the error falls from the larger step to the smaller one, as behind Swin V2's sharp
  cosine attention), it shrinks until the error is within the tolerance or stops falling. An error
  above the tolerance that changes from step to step as much as it persists is rounding or curvature, not the
  gradient: the verdict is then "inconclusive", never a pass or a fail.
- **Logits, then the head exactly**: behind a Softmax or Sigmoid head, the gradient of the head's input is
  checked (a saturated Softmax has float32 differences of exactly 0), and the gradient through the head must
  equal the chain rule applied to it (where the head is not saturated).
- **The same function**: the model the gradient pass prepared (opset upgraded, constants folded) must compute
  what the original computes at the inputs.

Steps are fractions of each input's root mean square. The comparison is by relative L2 over all
(input, direction) pairs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import expit, softmax

from harness import DEFAULT_SEED
from harness.core.errors import HarnessError
from harness.model.feeding import ImageAdapter
from harness.runtime.gradient import GradientRuntime

DEFAULT_TOLERANCE = 1e-3
DEFAULT_STEPS = (1e-1, 3e-2)
GROWTH, LARGEST_STEP = 3.0, 1e3    # how the step grows while rounding limits the error, and how far
SMALLEST_STEP = 1e-3               # how far it shrinks while curvature limits it
FLAT_STEP = 10.0                   # an output still flat at this step does not respond to its input
RISING = 1.5                       # an error this far above the smallest one: curvature, stop growing
CONSISTENT = 4.0                   # residuals this consistent between the two best steps: the gradient is wrong
SAME_FUNCTION = 1e-4               # relative L2 between the original's and the prepared model's outputs
SATURATED = 0.99                   # a head probability beyond this (or its complement below): no exact check
PASS_THROUGH = ("Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze")
HEADS = ("Softmax", "Sigmoid")


@dataclass(frozen=True)
class GradientCheck:
    """The result of a gradient check: the errors at every step, what was checked, and the verdict."""
    relative_error: float      # ||AD - FD|| / ||FD|| over all (input, direction) pairs, at the best step
    cosine: float              # cosine similarity of the AD and FD vectors at that step
    images: int
    directions: int
    step: float                # the relative step h of the best (h, h/2) pair
    tolerance: float
    checked: str               # the tensor whose gradient was checked against finite differences
    errors_by_step: dict       # {h: relative error} for every step: a correct gradient converges
    kinks_frozen: int          # kink units per input held in their state at the input
    kinks_crossed: float       # of those, how many change state within the best step, per perturbed point
    note: str = ""
    flat: bool = False         # the output did not change along any direction: nothing could be compared
    consistency: float = 0.0   # how much the residuals at the two best steps share (see _consistency)
    forward_error: float = 0.0  # the prepared model's outputs against the original's (relative L2)
    head_error: float | None = None   # the gradient through the head against the chain rule (relative L2)
    underflow: bool = False    # the gradient is non-zero but below float32's normal range: not representable

    @property
    def verdict(self) -> str:
        """"pass"; "fail" when the error persists across steps, the head's gradient breaks the chain rule or the
        prepared model computes something else; "inconclusive" when the output is flat, the gradient underflows
        float32, or the residual changes from step to step as much as it persists (rounding or curvature, not
        the gradient)."""
        if self.forward_error > SAME_FUNCTION or (self.head_error or 0.0) > self.tolerance:
            return "fail"
        if self.flat or self.underflow:
            return "inconclusive"
        if self.relative_error <= self.tolerance:
            return "pass"
        return "fail" if self.consistency > CONSISTENT else "inconclusive"

    @property
    def passed(self) -> bool:
        """Whether the verdict is a pass."""
        return self.verdict == "pass"

    def as_dict(self) -> dict:
        """Every field, the verdict and ``passed``, as a JSON-able dict."""
        return {**asdict(self), "verdict": self.verdict, "passed": self.passed}


def check_gradient(runtime, x: np.ndarray, classes: np.ndarray | None = None, directions: int = 4,
                   relative_steps: tuple = DEFAULT_STEPS, tolerance: float = DEFAULT_TOLERANCE,
                   seed: int = DEFAULT_SEED) -> GradientCheck:
    """Compare ``runtime``'s input gradients with finite differences at the inputs ``x`` (the runtime's own
    arrays: images [N, C, H, W], or tensors for a model that takes no images).

    ``classes`` defaults to each input's top-1 prediction. Directions are Gaussian, drawn from ``seed``. Where
    the error is still falling at the largest step, the step grows threefold until the error is within the
    tolerance or rises again, up to ``LARGEST_STEP``: a frozen ReLU network is affine along each line, so a
    large step is exact for it, while curvature (sigmoids, softmax, LRN) makes the error rise at large steps,
    and a wrong gradient meets a floor that no step lowers. Where the error at the smallest step is above the
    tolerance and no larger than at the next, the step shrinks threefold while that holds, down to
    ``SMALLEST_STEP``: curvature (Swin V2's sharp cosine attention) makes the error fall as the step shrinks.
    """
    if directions < 1 or not relative_steps:
        raise HarnessError("the gradient check needs at least one direction and one step")
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    classes = runtime.forward(x).argmax(axis=1) if classes is None else np.asarray(classes).reshape(-1)
    checked, head, note = _logit_runtime(runtime)
    _, grads = checked.class_gradients(x, classes)
    head_error = _head_error(runtime, checked, head, x, classes) if head else None
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, directions, *x.shape[1:])).astype(np.float32)
    analytic = np.einsum("ndk,nk->nd", v.reshape(n, directions, -1).astype(np.float64),
                         grads.reshape(n, -1).astype(np.float64))
    scale = np.sqrt(np.mean(np.square(x.reshape(n, -1), dtype=np.float64), axis=1)).clip(min=1e-3)
    frozen = checked.frozen()
    differentiated, units = frozen.differentiated, frozen.units
    forward_error = _relative_error(frozen.run(x, x)[0].astype(np.float64),
                                    checked.forward(x).astype(np.float64))
    if differentiated != checked.signature.output_name:    # a half-precision model's float32 shadow
        note = "; ".join(filter(None, [note, _shadow_note(forward_error)]))
        forward_error = 0.0
    elif frozen.quantized:
        note = "; ".join(filter(None, [note, _quantized_note(forward_error)]))
        forward_error = 0.0
    trials: dict[float, tuple] = {}

    def trial(step: float) -> None:
        coarse, crossed = _differences(frozen, x, v, classes, step * scale)
        fine, _ = _differences(frozen, x, v, classes, step * scale / 2)
        residual = (4 * fine - coarse) / 3 - analytic
        trials[float(step)] = (_relative_error(analytic + residual, analytic), _cosine(analytic, analytic + residual),
                               crossed, residual, not coarse.any() and not fine.any())

    for step in sorted(relative_steps):
        trial(step)
    while max(trials) * GROWTH <= LARGEST_STEP:   # grow the step while rounding of a large output dominates,
        moved = [trials[s][0] for s in sorted(trials) if not trials[s][4]]    # until the error is within the
        if moved and (moved[-1] <= tolerance or moved[-1] > RISING * min(moved)):   # tolerance or rises again
            break                                                             # (curvature at large steps), or
        if not moved and max(trials) >= FLAT_STEP:                            # the output stays flat even at
            break                                                             # steps beyond the input's size
        trial(max(trials) * GROWTH)
    while min(trials) / GROWTH >= SMALLEST_STEP and _falling_to_smaller_steps(trials, tolerance):
        trial(min(trials) / GROWTH)   # curvature dominates (sharp softmax attention): a smaller step converges
    informative = [s for s in trials if not trials[s][4]] or list(trials)   # steps where the output moved
    ranked = sorted(informative, key=lambda s: trials[s][0])
    step = ranked[0]
    error, cosine, crossed, residual, _ = trials[step]
    consistency = _consistency(residual, trials[ranked[1]][3]) if len(ranked) > 1 else 0.0
    flat = all(t[4] for t in trials.values())
    largest = float(np.abs(grads).max()) if grads.size else 0.0
    result = GradientCheck(error, cosine, n, directions, step, tolerance, differentiated,
                           {s: trials[s][0] for s in sorted(trials, reverse=True)}, units, crossed, note, flat,
                           consistency, forward_error, head_error, bool(0.0 < largest < np.finfo(np.float32).tiny))
    return GradientCheck(**{**asdict(result), "note": _explained(result, note)})


def _falling_to_smaller_steps(trials: dict, tolerance: float) -> bool:
    """Whether the error at the smallest step is above the tolerance and at most the error at the next one:
    curvature of the output, which a smaller step reduces. A wrong gradient meets its floor (and the two
    smallest steps then share its residual), and rounding makes the error rise as the step shrinks (where
    rounding dominates, the error is larger at the smaller of the default steps, and no smaller one is tried)."""
    moved = [trials[s][0] for s in sorted(trials) if not trials[s][4]]
    return len(moved) > 1 and tolerance < moved[0] <= moved[1]


def _shadow_note(gap: float) -> str:
    return ("the model is half precision: checked against finite differences of its float32 shadow, whose "
            f"gradient the pass takes (the shadow's outputs differ from the artifact's by relative L2 {gap:.1e})")


def _quantized_note(gap: float) -> str:
    return ("the model is quantized, so finite differences of the model itself are 0 almost everywhere: checked "
            "against finite differences of its clipped shadow, each QuantizeLinear -> DequantizeLinear pair held as "
            "its straight-through estimator around the rounded value (the pairs evaluated as written give outputs "
            f"within relative L2 {gap:.1e} of ONNX Runtime's run of the artifact, whose integer kernels round "
            "differently)")


def _explained(result: GradientCheck, note: str) -> str:
    """The note of a result: why it is not a pass, and what was checked where it is not the output itself."""
    reasons = []
    if result.forward_error > SAME_FUNCTION:
        reasons.append(f"the model prepared for the gradient pass computes other outputs than the original "
                       f"(relative L2 {result.forward_error:.1e}): its gradient is not the original's")
    if (result.head_error or 0.0) > result.tolerance:
        reasons.append(f"the gradient through the head differs from the chain rule applied to its input's "
                       f"gradient (relative L2 {result.head_error:.1e})")
    if result.underflow:
        reasons.append("inconclusive: every entry of the gradient lies below float32's smallest normal number "
                       f"({np.finfo(np.float32).tiny:.1e}), so float32 represents it only to a few bits, whatever "
                       "computes it (a network at a degenerate initialisation); check at inputs or weights where "
                       "the output responds")
    elif result.flat:
        reasons.append("inconclusive: the output does not change along any direction at any step, so there is "
                       "nothing to compare; check at inputs the model responds to (the model card's "
                       "preprocessing, real images)")
    elif result.verdict == "inconclusive":
        reasons.append("inconclusive: the difference to the gradient changes from step to step as much as it "
                       f"persists (consistency {result.consistency:.1f}): float32 rounding or curvature of the "
                       "output, not the gradient, limits the comparison")
    return "; ".join([*reasons, *([note] if note else [])])


def _logit_runtime(runtime):
    """The runtime whose output the finite differences check: ``runtime`` itself, or one for the input of its
    Softmax or Sigmoid head (found through reshaping ops); the head's op type (or None); a note."""
    producers = {o: node for node in runtime.source.graph.node for o in node.output}
    node = producers.get(runtime.signature.output_name)
    while node is not None and node.op_type in PASS_THROUGH:
        node = producers.get(node.input[0])
    if node is None or node.op_type not in HEADS:
        return runtime, None, ""
    logits = node.input[0]
    sibling = runtime.with_output(logits)
    if sibling.signature.num_classes != runtime.signature.num_classes:
        return runtime, None, ""
    return sibling, node.op_type, (f"checked at {logits!r}, the input of the {node.op_type} head (a saturated head "
                                   "has float32 finite differences of exactly 0), and through the head exactly")


def _head_error(runtime, checked, head: str, x: np.ndarray, classes: np.ndarray) -> float | None:
    """The gradient of the head's output against the chain rule on the gradient of its input: for p =
    softmax(z), dp_c/dx = J^T (p_c (e_c - p)); for p = sigmoid(z), dp_c/dx = J^T (p_c (1 - p_c) e_c). Saturated
    inputs, where float32 cannot resolve p_c (1 - p_c), are left out; None when all are. The difference is
    relative to the size of the terms the chain rule sums, J^T |weights|: where the classes' gradients nearly
    cancel (near-identical rows of J), float32 resolves the sum only to that size."""
    logits = checked.forward(x).astype(np.float64)
    rows = np.arange(len(x))
    if head == "Softmax":
        p = softmax(logits, axis=1)
        weights = -p[rows, classes][:, None] * p
        weights[rows, classes] += p[rows, classes]
        usable = p.max(axis=1) < SATURATED
    else:
        p = expit(logits)
        weights = np.zeros_like(p)
        weights[rows, classes] = p[rows, classes] * (1 - p[rows, classes])
        usable = np.abs(p[rows, classes] - 0.5) < SATURATED - 0.5
    if not usable.any():
        return None
    weights = weights[usable].astype(np.float32)
    chained = checked.gradients(x[usable], weights)[1].astype(np.float64)
    direct = runtime.class_gradients(x[usable], classes[usable])[1].astype(np.float64)
    magnitude = checked.gradients(x[usable], np.abs(weights))[1].astype(np.float64)
    scale = max(np.linalg.norm(direct), np.linalg.norm(chained), np.linalg.norm(magnitude))
    return float(np.linalg.norm(direct - chained) / scale) if scale > 0 else 0.0


def _differences(frozen, x, v, classes, step):
    """Central differences (f(x + h v) - f(x - h v)) / 2h of the frozen model for every input and direction,
    in batched runtime calls; and the mean number of kink units crossed per perturbed point."""
    n, directions = v.shape[:2]
    h = step.reshape(n, 1, *[1] * (x.ndim - 1)).astype(np.float32)
    perturbed = np.concatenate([(x[:, None] + h * v), (x[:, None] - h * v)]).reshape(-1, *x.shape[1:])
    reference = np.repeat(x, directions, axis=0)
    logits, changes = frozen.run(np.concatenate([reference, reference]), perturbed)
    picked = logits[np.arange(len(logits)), np.tile(np.repeat(classes, directions), 2)].astype(np.float64)
    plus, minus = picked.reshape(2, n, directions)
    return (plus - minus) / (2 * step[:, None]), float(changes.mean())


def _consistency(first: np.ndarray, second: np.ndarray) -> float:
    """||r1 + r2|| / ||r1 - r2|| for the residuals (finite differences minus the gradient) at two steps: large
    when they share one error, as a wrong gradient makes them; near 1 when each step has its own (rounding)."""
    spread = np.linalg.norm(first - second)
    return float(np.linalg.norm(first + second) / spread) if spread > 0 else np.inf


def _relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """||actual - expected|| relative to the larger of the two norms (0 when both are 0)."""
    scale = max(np.linalg.norm(expected), np.linalg.norm(actual))
    return float(np.linalg.norm(actual - expected) / scale) if scale > 0 else 0.0


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(a * b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-300))


def check_model(proto, card, images: int = 4, directions: int = 4, tolerance: float = DEFAULT_TOLERANCE,
                output: str | None = None, seed: int = DEFAULT_SEED) -> GradientCheck:
    """Check the gradient model of ``proto`` (with its ``card``) on random inputs drawn from ``seed``: random
    pixels through the card's preprocessing where it states one, else standard normal values in the model's
    input space (a model that takes plain tensors gets them as it declares them)."""
    runtime = GradientRuntime.from_card(proto, card, output=output)
    rng = np.random.default_rng(seed)
    declared = runtime.signature.input_shape[1:]
    if card.input_size is None and all(isinstance(d, int) for d in declared) and runtime.adapter == ImageAdapter():
        x = rng.standard_normal((images, *declared)).astype(np.float32)     # a tensor input, fed as it is
    else:
        card.require("input_size", why="to draw inputs of the model's size")
        shape = (images, *card.input_size)
        x = card.to_model(rng.random(shape, dtype=np.float32)) if card.states_preprocessing else \
            rng.standard_normal(shape).astype(np.float32)
    return check_gradient(runtime, x, directions=directions, tolerance=tolerance, seed=seed)
