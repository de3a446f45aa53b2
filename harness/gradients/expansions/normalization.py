"""Layer normalisations of ONNX Runtime's transformer optimiser: SkipLayerNormalization, its simplified (RMS)
form, SimplifiedLayerNormalization and the contrib-domain LayerNormalization.

* ``SkipLayerNormalization``: s = input + skip (+ bias) over the last axis; output = LayerNormalization(s,
  gamma, beta) (the standard op, opset 17). Its optional outputs are s itself, the mean of s and
  1 / sqrt(var(s) + epsilon), each shaped ``[..., 1]``.
* ``SkipSimplifiedLayerNormalization``: output = s / sqrt(mean(s^2) + epsilon) * gamma; its inv_std_var output
  is 1 / sqrt(mean(s^2) + epsilon). Its ``mean`` output is not defined (ONNX Runtime writes zeros), so a node
  whose mean is read is left as it is.
* ``SimplifiedLayerNormalization`` (ONNX Runtime writes it in the default domain, where ONNX has no such op,
  and the contrib domain has one of that name too): Y = X / sqrt(mean(X^2) + epsilon) * scale over the axes
  from ``axis`` on.
* ``com.microsoft::LayerNormalization``: the standard LayerNormalization.

The statistics outputs are computed by their own standard ops rather than read from LayerNormalization's
optional outputs, whose gradients the pass's rule does not take. ``stash_type`` (the precision of the
statistics) changes nothing for float32 models, the only ones expanded.
"""

from __future__ import annotations

from harness.gradients.expansions.base import Expansion, expands

SKIP_EPSILON = 1e-12          # the contrib schemas' default epsilon
LAYER_NORM_EPSILON = 1e-5     # SimplifiedLayerNormalization's and LayerNormalization's


def _skip_sum(x: Expansion, bias_index: int) -> str:
    """input + skip (+ bias), under the name of output 3 (input_skip_bias_sum) where it is read."""
    out = x.output(3) if x.needed(3) else None
    bias = x.input(bias_index)
    total = x.op("Add", x.input(0), x.input(1), out=None if bias else out)
    return x.op("Add", total, bias, out=out) if bias else total


def _root_mean_square(x: Expansion, value: str, axes, epsilon: float) -> str:
    """sqrt(mean(value^2 over axes) + epsilon), keeping the axes."""
    return x.op("Sqrt", x.op("Add", x.reduce_mean(x.op("Mul", value, value), axes), x.scalar(epsilon)))


def _statistics(x: Expansion, value: str, axes, epsilon: float, mean_output: int, inv_std_output: int) -> None:
    """Outputs ``mean_output`` (the mean over ``axes``) and ``inv_std_output`` (1 / sqrt(var + epsilon)),
    each where it is read."""
    if not (x.needed(mean_output) or x.needed(inv_std_output)):
        return
    mean = x.reduce_mean(value, axes, out=x.output(mean_output) if x.needed(mean_output) else None)
    if x.needed(inv_std_output):
        deviation = _root_mean_square(x, x.op("Sub", value, mean), axes, epsilon)
        x.op("Reciprocal", deviation, out=x.output(inv_std_output))


def _normalized_axes(x: Expansion, value: str) -> list[int]:
    """The axes from the ``axis`` attribute on (negative ones where the axis is negative)."""
    axis = x.attr("axis", -1)
    return list(range(axis, 0)) if axis < 0 else list(range(axis, x.rank(value)))


def _simplified(x: Expansion, value: str, scale: str, axes, epsilon: float, inv_std_output: int) -> None:
    """value / sqrt(mean(value^2) + epsilon) * scale into output 0, and its inv_std_var where it is read."""
    deviation = _root_mean_square(x, value, axes, epsilon)
    x.op("Mul", x.op("Div", value, deviation), scale, out=x.output(0))
    if x.needed(inv_std_output):
        x.op("Reciprocal", deviation, out=x.output(inv_std_output))


@expands("com.microsoft::SkipLayerNormalization")
def skip_layer_normalization(x: Expansion) -> None:
    """LayerNormalization(input + skip (+ bias), gamma, beta) over the last axis, and its statistics."""
    epsilon = x.attr("epsilon", SKIP_EPSILON)
    total = _skip_sum(x, 4)
    beta = [x.input(3)] if x.input(3) else []
    x.op("LayerNormalization", total, x.input(2), *beta, axis=-1, epsilon=epsilon, out=x.output(0))
    _statistics(x, total, [-1], epsilon, 1, 2)


@expands("com.microsoft::SkipSimplifiedLayerNormalization")
def skip_simplified_layer_normalization(x: Expansion) -> None:
    """s / sqrt(mean(s^2) + epsilon) * gamma with s = input + skip (+ bias)."""
    x.only_outputs(4, "outputs beyond the four of the schema")
    if x.needed(1):
        x.refuse("its mean output is read, and the simplified form defines none")
    _simplified(x, _skip_sum(x, 3), x.input(2), [-1], x.attr("epsilon", SKIP_EPSILON), 2)


@expands("SimplifiedLayerNormalization", "com.microsoft::SimplifiedLayerNormalization")
def simplified_layer_normalization(x: Expansion) -> None:
    """X / sqrt(mean(X^2) + epsilon) * scale over the axes from ``axis`` on."""
    value = x.input(0)
    _simplified(x, value, x.input(1), _normalized_axes(x, value), x.attr("epsilon", LAYER_NORM_EPSILON), 1)


@expands("com.microsoft::LayerNormalization")
def contrib_layer_normalization(x: Expansion) -> None:
    """The standard LayerNormalization, its statistics outputs computed apart."""
    value, epsilon = x.input(0), x.attr("epsilon", LAYER_NORM_EPSILON)
    axes = _normalized_axes(x, value)
    inputs = [value, x.input(1), *([x.input(2)] if x.input(2) else [])]
    x.op("LayerNormalization", *inputs, axis=x.attr("axis", -1), epsilon=epsilon, out=x.output(0))
    _statistics(x, value, axes, epsilon, 1, 2)
