"""VJP rules grouped by op family; importing this package registers all of them."""

from harness.gradients.rules import (  # noqa: F401
    activations,
    conv,
    elementwise,
    linear,
    normalization,
    pooling,
    quantization,
    reduction,
    shape,
)
