"""What every benchmark shares: interleaved rounds, median and IQR, verdicts against targets, pinned threads,
repeated runs.

A comparison times its calls in **interleaved rounds**: every round calls each of them once, in an order that
changes from round to round (rotated, or reversed every other round), so that the slow drifts of a shared
machine fall on all of them alike. A ratio is taken **per round** (two calls of the same round) and quoted as
the median over rounds with its interquartile range (IQR: the 25th to the 75th percentile, numpy's
``percentile``). A target is **met** only when the whole IQR meets it, **not met** when the whole IQR misses
it, and **undecided** when the IQR straddles it. A benchmark runs its comparison several times in one
invocation (:func:`repeats`, ``--runs``, default 3) and reports every run with its own verdict.

The scripts import this module as ``timing`` (each runs with ``benchmarks/`` first on ``sys.path``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import threadpoolctl

MET, NOT_MET, UNDECIDED = "met", "not met", "undecided: the IQR straddles the target"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
ORDERS = ("rotate", "alternate")


@dataclass(frozen=True)
class Summary:
    """The median and the interquartile range (q1 to q3) of ``count`` values."""

    median: float
    q1: float
    q3: float
    count: int

    def format(self, unit: str = "x", digits: int = 2, scale: float = 1.0) -> str:
        """``2.13x (IQR 2.01x to 2.20x)``: each value times ``scale``, with ``digits`` decimals and ``unit``."""
        median, q1, q3 = (f"{scale * value:.{digits}f}{unit}" for value in (self.median, self.q1, self.q3))
        return f"{median} (IQR {q1} to {q3})"


def summarise(values: Sequence[float]) -> Summary:
    """The median and IQR of ``values`` (numpy's percentiles, linear interpolation)."""
    if len(values) == 0:
        raise ValueError("nothing to summarise: no values")
    q1, median, q3 = np.percentile(np.asarray(values, dtype=float), [25, 50, 75])
    return Summary(float(median), float(q1), float(q3), len(values))


@dataclass(frozen=True)
class Target:
    """A bound on a ratio: ``sense`` ``"<="`` (at most ``bound``) or ``">="`` (at least ``bound``)."""

    sense: str
    bound: float

    def __post_init__(self):
        if self.sense not in ("<=", ">="):
            raise ValueError(f"a target's sense is '<=' or '>=', not {self.sense!r}")

    def __str__(self) -> str:
        return f"{self.sense} {self.bound:g}x"

    def holds(self, value: float) -> bool:
        """Whether one value meets the target (the bound itself meets it)."""
        return value <= self.bound if self.sense == "<=" else value >= self.bound

    def verdict(self, summary: Summary) -> str:
        """``met`` when the whole IQR meets the target, ``not met`` when none of it does, else undecided."""
        ends = (self.holds(summary.q1), self.holds(summary.q3))
        if all(ends):
            return MET
        if not any(ends):
            return NOT_MET
        return UNDECIDED


@dataclass(frozen=True)
class Ratio:
    """One compared quantity of one run: the summary of its per-round values and its target (None: none set).

    ``unit`` is ``"x"`` for a ratio, ``"%"`` for a share (printed times 100)."""

    name: str
    summary: Summary
    target: Target | None = None
    unit: str = "x"

    @property
    def verdict(self) -> str | None:
        """The target's verdict on this run, None without a target."""
        return self.target.verdict(self.summary) if self.target else None

    def line(self) -> str:
        """``gradient / forward = 2.13x (IQR 2.01x to 2.20x); target <= 2.2x: met``."""
        scale, digits = (100.0, 1) if self.unit == "%" else (1.0, 2)
        text = f"{self.name} = {self.summary.format(self.unit, digits, scale)}"
        return f"{text}; target {self.target}: {self.verdict}" if self.target else f"{text}; no target"

    def record(self) -> dict:
        """The ratio as data (a JSON object), its verdict included."""
        return {**asdict(self), "verdict": self.verdict}


@dataclass(frozen=True)
class Run:
    """One run of a comparison: the seconds per ``unit`` of each call, the ratios, and notes (checked facts);
    ``time_unit`` (``"ms"`` or ``"s"``) is how the times are printed."""

    times: Mapping[str, Summary]
    ratios: tuple[Ratio, ...] = ()
    unit: str = "image"
    notes: tuple[str, ...] = field(default_factory=tuple)
    time_unit: str = "ms"

    def lines(self) -> list[str]:
        """The run as printed: one line per call's time, one per ratio with its verdict, then the notes."""
        width = max((len(name) for name in self.times), default=0)
        digits, scale = (1, 1000.0) if self.time_unit == "ms" else (2, 1.0)
        times = [f"{name:{width}}  {summary.format(' ' + self.time_unit, digits, scale)} per {self.unit}"
                 for name, summary in self.times.items()]
        return times + [each.line() for each in self.ratios] + list(self.notes)

    def record(self) -> dict:
        """The run as data (a JSON object)."""
        return {"unit": self.unit, "time_unit": self.time_unit,
                "times": {name: asdict(summary) for name, summary in self.times.items()},
                "ratios": [each.record() for each in self.ratios], "notes": list(self.notes)}


def interleaved_rounds(calls: Mapping[str, Callable[[], object]], rounds: int, pause: float = 0.0,
                       warmup: int = 0, order: str = "rotate") -> dict[str, list[float]]:
    """Wall-clock seconds of each named call, once per round, in an order that changes every round.

    Each call is first made ``warmup`` times untimed. ``order="rotate"`` starts round r at the r-th call (with
    two calls: the order alternates); ``"alternate"`` reverses the whole order every other round, which keeps
    neighbours neighbours (pairs of calls stay side by side). ``pause`` seconds are slept before every timed
    call, so that no thread pool of the previous call still spins."""
    if order not in ORDERS:
        raise ValueError(f"order is one of {', '.join(ORDERS)}, not {order!r}")
    names = list(calls)
    for name in names:
        for _ in range(warmup):
            calls[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        if order == "rotate":
            sequence = names[r % len(names):] + names[:r % len(names)]
        else:
            sequence = names if r % 2 == 0 else names[::-1]
        for name in sequence:
            if pause:
                time.sleep(pause)
            started = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - started)
    return times


def per_round(times: Mapping[str, Sequence[float]], numerator: str, denominator: str) -> list[float]:
    """The ratio numerator / denominator of each round (the two calls of the same round)."""
    return [top / bottom for top, bottom in zip(times[numerator], times[denominator], strict=True)]


def ratio(name: str, times: Mapping[str, Sequence[float]], numerator: str, denominator: str,
          target: Target | None = None) -> Ratio:
    """The ratio ``name`` of one run: the median and IQR of numerator / denominator per round, and its target."""
    return Ratio(name, summarise(per_round(times, numerator, denominator)), target)


def per_unit(times: Mapping[str, Sequence[float]], units: int) -> dict[str, Summary]:
    """The summary of each call's seconds divided by ``units`` (images or rows per call)."""
    return {name: summarise([t / units for t in values]) for name, values in times.items()}


def pin_threads(threads: int) -> list[str]:
    """Pin this process to ``threads`` threads; returns what was pinned, one phrase each (for the header).

    Sets OMP/MKL/OpenBLAS_NUM_THREADS (read by libraries loaded later and by child processes), limits the
    thread pools already loaded (numpy's BLAS, OpenMP) with threadpoolctl, calls ``torch.set_num_threads``
    where torch is loaded, and where the platform allows restricts the process to ``threads`` of its CPUs
    (``os.sched_setaffinity``; threads started afterwards inherit it, so call this before any session is
    built). ONNX Runtime's intra-op threads are set per session (:func:`session_options`)."""
    for variable in THREAD_VARIABLES:
        os.environ[variable] = str(threads)
    threadpoolctl.threadpool_limits(threads)
    pinned = [f"{'/'.join(THREAD_VARIABLES)}={threads} and threadpoolctl limits {threads}"]
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
        pinned.append(f"torch.set_num_threads({threads})")
    if hasattr(os, "sched_setaffinity"):
        allowed = sorted(os.sched_getaffinity(0))
        chosen = allowed[:threads]
        os.sched_setaffinity(0, chosen)
        pinned.append(f"CPU affinity {','.join(map(str, chosen))} (of {len(allowed)} allowed)")
    else:
        pinned.append("no CPU affinity (not available on this platform)")
    return pinned


def session_options(threads: int) -> ort.SessionOptions:
    """ONNX Runtime session options with ``threads`` intra-op threads and one inter-op thread."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return options


def add_options(parser: argparse.ArgumentParser) -> None:
    """The options every benchmark takes: ``--runs`` and ``--json``."""
    parser.add_argument("--runs", type=int, default=3, help="times the whole comparison runs in this invocation")
    parser.add_argument("--json", default=None, help="also write the runs as JSON to this file")


def header(title: str, rounds: int, runs: int, pinned: Sequence[str]) -> list[str]:
    """The lines printed before the runs: what is compared, how it is timed, and what was pinned."""
    return [title, f"{rounds} interleaved rounds per run, {runs} runs; median (IQR) over rounds, ratios per round; "
                   "a target is met only when the whole IQR meets it",
            "pinned: " + "; ".join(pinned)]


def repeats(measure: Callable[[int], Run], runs: int, write: Callable[[str], object] = print) -> list[Run]:
    """Run the comparison ``measure(index)`` ``runs`` times in this invocation; write each run with the verdict of
    each ratio as it ends, then every ratio's verdicts over all runs side by side."""
    if runs < 1:
        raise ValueError(f"--runs must be at least 1, not {runs}")
    results = []
    for index in range(runs):
        run = measure(index)
        write(f"run {index + 1} of {runs}:")
        for line in run.lines():
            write(f"  {line}")
        results.append(run)
    for position, first in enumerate(results[0].ratios):
        if first.target:
            verdicts = [run.ratios[position].verdict for run in results]
            write(f"verdicts over {runs} runs, {first.name} (target {first.target}): {', '.join(verdicts)}")
    return results


def write_json(path: str | os.PathLike | None, title: str, pinned: Sequence[str], runs: Sequence[Run],
               **facts) -> None:
    """Write the runs as one JSON object (``title``, ``pinned``, ``facts``, ``runs``) where a path is given."""
    if path:
        record = {"title": title, "pinned": list(pinned), "facts": facts, "runs": [run.record() for run in runs]}
        Path(path).write_text(json.dumps(record, indent=1))
