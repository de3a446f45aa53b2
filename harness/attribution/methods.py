"""Named methods and free combinations: ``vanilla`` ... ``expected-gradients``, or ``SAMPLER+AGGREGATOR``
(e.g. ``linear+abs-mean``: IG's sampling distribution with the paper's E|∇f| building block), which is how
the main paper compares sampling distributions on an equal footing."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from harness.attribution.aggregators import AGGREGATORS, Aggregator, get_aggregator
from harness.attribution.samplers import SAMPLERS, Sampler, SamplingError
from harness.core.registry import Registry


@dataclass(frozen=True)
class Method:
    """A sampler, an aggregator and the optional × input multiplier, under a display name. The aggregator may
    be given by its name; the method holds the :class:`Aggregator` itself."""
    name: str
    sampler: Sampler
    aggregator: Aggregator
    times_input: bool = False

    def __post_init__(self):
        if isinstance(self.aggregator, str):
            object.__setattr__(self, "aggregator", get_aggregator(self.aggregator))
        aggregator = self.aggregator
        if aggregator.needs_path and not self.sampler.is_path:
            raise SamplingError(f"the {aggregator.name} aggregator needs a path sampler (linear, guided, blur, "
                                f"expected), not {self.sampler.name}")
        if aggregator.on_layer and self.sampler.adaptive:
            raise SamplingError(f"{aggregator.name} cannot follow the adaptive {self.sampler.name} path")
        if self.sampler.adaptive and aggregator.name != "path":
            raise SamplingError(f"{self.sampler.name} builds its path while it walks; only the path aggregator "
                                "applies to it")


@dataclass(frozen=True)
class MethodDefinition:
    """A method as its authors define it: a sampler, an aggregator, a description and the parameters where it
    departs from the sampler's defaults."""
    sampler: str
    aggregator: str
    description: str
    defaults: tuple = ()   # (parameter, value) pairs that differ from the sampler's own defaults


COUNT_PARAMETERS = ("samples", "steps")     # how many gradients a method takes: at least one
# and at most: samples are streamed (any count takes time, not memory); a path's steps are laid out as arrays
# of one number per step (Riemann points, blur levels), 80 MB at the limit.
COUNT_LIMITS = {"samples": 2 ** 40, "steps": 10 ** 7}

NAMED_METHODS = Registry("method", SamplingError, entries={
    "vanilla": MethodDefinition("point", "mean", "the gradient at x (Simonyan et al. 2014)"),
    "smoothgrad": MethodDefinition("normal", "mean", "mean gradient under Gaussian noise, level 0.15 (Smilkov 2017)"),
    "ig": MethodDefinition("linear", "path", "Integrated Gradients from a black baseline (Sundararajan 2017)"),
    "guided-ig": MethodDefinition("guided", "path", "Guided Integrated Gradients (Kapishnikov et al. 2021)"),
    "suppression": MethodDefinition("suppression", "abs-mean", "E|∇f| under feature suppression, p = 0.7 "
                               "(Sampling Matters in Explanations, section 4.1)"),
    "blur-ig": MethodDefinition("blur", "path", "Blur Integrated Gradients (Xu et al. 2020)"),
    "expected-gradients": MethodDefinition("expected", "path", "baselines drawn from data (Erion et al. 2021)"),
    "grad-cam": MethodDefinition("point", "grad-cam", "Grad-CAM on a tapped layer (Selvaraju et al. 2017)"),
}.items())


def method_names() -> list[str]:
    """The names of the named methods, in their canonical order."""
    return list(NAMED_METHODS)


def get_method(name: str, times_input: bool = False, **parameters) -> Method:
    """The method ``name`` (named, or ``sampler+aggregator``) with sampler ``parameters`` overriding its
    defaults; parameters set to None are ignored, and ones the sampler does not have are an error."""
    if name in NAMED_METHODS:
        named = NAMED_METHODS[name]
        sampler_name, aggregator, base = named.sampler, named.aggregator, dict(named.defaults)
    elif "+" in name:
        sampler_name, _, aggregator = name.partition("+")
        base = {}
    else:
        raise SamplingError(f"unknown method {name!r}; known: {', '.join(NAMED_METHODS)}, or SAMPLER+AGGREGATOR "
                            f"with samplers {', '.join(SAMPLERS)} and aggregators {', '.join(AGGREGATORS)}")
    if sampler_name not in SAMPLERS:
        raise SamplingError(f"unknown sampler {sampler_name!r}; known: {', '.join(SAMPLERS)}")
    if aggregator not in AGGREGATORS:
        raise SamplingError(f"unknown aggregator {aggregator!r}; known: {', '.join(AGGREGATORS)}")
    cls = SAMPLERS[sampler_name]
    allowed = {f.name for f in fields(cls)}
    given = {k: v for k, v in parameters.items() if v is not None}
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise SamplingError(f"{name} has no parameter {', '.join(unknown)} (its sampler {sampler_name} takes "
                            f"{', '.join(sorted(allowed)) or 'none'})")
    counts = {k: v for k, v in given.items() if k in COUNT_PARAMETERS}
    wrong = sorted(k for k, v in counts.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1)
    if wrong:
        raise SamplingError(f"{name}: {', '.join(wrong)} must be a positive integer, got "
                            + ", ".join(f"{k} = {counts[k]!r}" for k in wrong))
    too_many = sorted(k for k, v in counts.items() if v > COUNT_LIMITS[k])
    if too_many:
        raise SamplingError(f"{name}: " + ", ".join(f"{k} = {counts[k]:,} is over the limit of {COUNT_LIMITS[k]:,}"
                                                    for k in too_many))
    numbers = {k: v for k, v in given.items() if isinstance(v, float) or (isinstance(v, int) and
                                                                           not isinstance(v, bool))}
    infinite = sorted(k for k, v in numbers.items() if not math.isfinite(v))
    if infinite:
        raise SamplingError(f"{name}: " + ", ".join(f"{k} must be a finite number, got {numbers[k]!r}"
                                                    for k in infinite))
    sampler = cls(**{**base, **given})
    label = name + ("×input" if times_input else "")
    return Method(label, sampler, aggregator, times_input)


def describe(method: Method) -> dict:
    """A JSON-able description: name, sampler with every parameter, aggregator, × input."""
    params = {f.name: getattr(method.sampler, f.name) for f in fields(method.sampler)}
    params = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in params.items()}
    return {"name": method.name, "sampler": method.sampler.name, "parameters": params,
            "aggregator": method.aggregator.name, "times_input": method.times_input}
