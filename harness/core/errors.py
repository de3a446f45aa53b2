"""Every error the harness raises for input the user can fix, one subclass per kind, and its warnings.

The CLI prints a HarnessError's message and exits with code 2, never with a traceback; anything else is a bug
of the harness ("internal error", exit 1).
"""


def first_line(error: Exception, limit: int = 300) -> str:
    """The first line of an exception's message (a library's long report cut to what a user needs)."""
    lines = str(error).strip().splitlines()
    return lines[0][:limit] if lines else type(error).__name__


class HarnessError(Exception):
    """Base class of every error caused by the user's input (models, images, options)."""


class ModelLoadError(HarnessError):
    """The file is missing, unreadable, or not a valid ONNX model."""


class ModelSignatureError(HarnessError):
    """The model has no usable image input or no unambiguous logits output."""


class NoGradientPathError(HarnessError):
    """The output does not depend differentiably on the image: its input gradient would be zero everywhere."""


class UnsupportedOpsError(HarnessError):
    """The gradient pass lacks rules for some ops on the path from the image to the output.

    ``unsupported`` maps each op type to the names of the nodes that use it.
    """

    def __init__(self, unsupported: dict[str, list[str]], details: dict[str, str] | None = None, hint: str = ""):
        self.unsupported = unsupported
        self.details = details or {}
        self.hint = hint
        parts = []
        for op_type in sorted(unsupported):
            nodes = unsupported[op_type]
            shown = ", ".join(repr(n) for n in nodes[:8]) + (f" and {len(nodes) - 8} more" if len(nodes) > 8 else "")
            reason = f" ({self.details[op_type]})" if op_type in self.details else ""
            parts.append(f"{op_type}{reason} at {shown}")
        super().__init__(
            f"cannot build the input gradient: {len(unsupported)} op type(s) on the path from the image to the "
            "output have no gradient rule: " + "; ".join(parts) + "." + (f" {hint}" if hint else "")
        )


class UnsupportedConfiguration(Exception):
    """Raised by a gradient rule: the op type has a rule, but not for this use of it (e.g. a gradient with
    respect to Conv weights). The builder turns it into an UnsupportedOpsError naming the node."""


class SamplingError(HarnessError):
    """A sampler was given parameters or inputs it cannot use."""


class ModelCardError(HarnessError):
    """A model card is incomplete or inconsistent."""


class DataError(HarnessError):
    """A dataset cannot be loaded or does not fit the model."""


class StoreError(HarnessError):
    """The results store cannot be read or written: not ours, corrupt, locked by another run, or no space."""


class DataWarning(UserWarning):
    """An image was skipped (or loaded with a caveat); the message names the file."""


class SkippedFileWarning(DataWarning):
    """One file was skipped; the message is ``skipped <name>: <reason>``."""


class SkippedImage(DataError):
    """One image file cannot be used soundly; the message says why."""
