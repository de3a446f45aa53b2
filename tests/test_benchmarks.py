"""The benchmarks: the shared timing module decides as it says (verdicts on constructed numbers, numpy's
percentiles, the order of interleaved rounds), and every script still runs at tiny settings and prints, for
each run, median (IQR) lines whose verdicts agree with the numbers printed. No timing is asserted: timings are
the benchmarks' job."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from timing import (MET, NOT_MET, UNDECIDED, Ratio, Run, Summary, Target, interleaved_rounds,  # noqa: E402
                    per_round, repeats, summarise)

DIGITS = str(ROOT / "exported_models" / "digits_cnn.onnx")
TINY = ("--arch", "resnet_tiny", "--size", "32", "--threads", "1")
VERDICTS = (MET, NOT_MET, UNDECIDED)
NUMBER = r"-?\d+\.\d+"
RATIO_LINE = re.compile(rf"^\s+(?P<name>.+?) = (?P<median>{NUMBER})(?P<unit>x|%) \(IQR (?P<q1>{NUMBER})(?P=unit) to "
                        rf"(?P<q3>{NUMBER})(?P=unit)\); (?:target (?P<sense><=|>=) (?P<bound>\d+(?:\.\d+)?)x: "
                        rf"(?P<verdict>.+)|no target)$", re.M)


def run_script(name: str, *args: str) -> str:
    """The stdout of ``benchmarks/name`` run with ``args``; fails the test on a non-zero exit."""
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], capture_output=True,
                            text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return result.stdout


def agrees(sense: str, bound: float, q1: float, q3: float, verdict: str) -> bool:
    """Whether a verdict agrees with a printed IQR (printed values are rounded, so the bound itself may appear
    on either side of a verdict that was decided on the exact values)."""
    meets = (lambda v: v <= bound) if sense == "<=" else (lambda v: v >= bound)
    misses = (lambda v: v >= bound) if sense == "<=" else (lambda v: v <= bound)
    if verdict == MET:
        return meets(q1) and meets(q3)
    if verdict == NOT_MET:
        return misses(q1) and misses(q3)
    return verdict == UNDECIDED and q1 <= bound <= q3


def straddles(bound: float, q1: float, q3: float) -> bool:
    """Whether a printed IQR has the bound strictly inside it."""
    return q1 < bound < q3


def check_runs(out: str, runs: int, targeted: set[str]) -> list[dict]:
    """The ratio lines of ``out``, checked: ``runs`` runs reported, a verdict line for each ratio in ``targeted``
    in every run and one over all runs, each verdict agreeing with its IQR and never "met" when the IQR straddles
    the target; returns the lines' fields."""
    assert out.splitlines()[2].startswith("pinned: "), out
    for index in range(1, runs + 1):
        assert f"run {index} of {runs}:" in out, out
    lines = [match.groupdict() for match in RATIO_LINE.finditer(out)]
    assert lines, out
    for line in lines:
        if line["verdict"] is None:
            continue
        bound, q1, q3 = float(line["bound"]), float(line["q1"]), float(line["q3"])
        assert line["verdict"] in VERDICTS, line
        assert agrees(line["sense"], bound, q1, q3, line["verdict"]), line
        if straddles(bound, q1, q3):
            assert line["verdict"] == UNDECIDED, line
    for name in targeted:
        verdicts = [line["verdict"] for line in lines if line["name"] == name and line["verdict"] is not None]
        assert len(verdicts) == runs, (name, out)
        summary = re.search(rf"^verdicts over {runs} runs, {re.escape(name)} \(target [<>]= [\d.]+x\): (.+)$", out,
                            re.M)
        assert summary and summary.group(1).split(", ") == verdicts, (name, out)
    return lines


@pytest.mark.parametrize("sense, bound, summary, verdict", [
    ("<=", 2.2, Summary(2.10, 2.00, 2.15, 9), MET),
    ("<=", 2.2, Summary(2.10, 2.00, 2.30, 9), UNDECIDED),      # the median meets it, the IQR straddles it
    ("<=", 2.2, Summary(2.50, 2.30, 2.60, 9), NOT_MET),
    ("<=", 2.2, Summary(2.20, 2.20, 2.20, 9), MET),            # the bound itself meets the target
    ("<=", 2.2, Summary(2.30, 2.20, 2.40, 9), UNDECIDED),
    (">=", 2.0, Summary(2.50, 2.10, 2.90, 5), MET),
    (">=", 2.0, Summary(2.10, 1.90, 2.40, 5), UNDECIDED),
    (">=", 2.0, Summary(1.50, 1.40, 1.80, 5), NOT_MET),
    (">=", 2.0, Summary(1.90, 1.80, 2.00, 5), UNDECIDED),
])
def test_a_target_is_met_only_when_the_whole_iqr_meets_it(sense, bound, summary, verdict):
    assert Target(sense, bound).verdict(summary) == verdict
    line = Ratio("a / b", summary, Target(sense, bound)).line()
    assert line.endswith(f"target {sense} {bound:g}x: {verdict}"), line
    if verdict != MET:
        assert not line.endswith(": met"), line


def test_a_target_has_a_sense():
    with pytest.raises(ValueError, match="sense"):
        Target("<", 2.0)


def test_the_summary_is_numpys_percentiles():
    values = [3.0, 1.0, 10.0, 2.0, 2.5]
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    assert summarise(values) == Summary(median, q1, q3, 5)
    assert Summary(2.125, 2.0, 2.25, 5).format() == "2.12x (IQR 2.00x to 2.25x)"


def test_ratios_are_taken_per_round():
    assert per_round({"a": [2.0, 6.0], "b": [1.0, 2.0]}, "a", "b") == [2.0, 3.0]


def recording(names: str) -> tuple[dict, list]:
    """Calls named by the letters of ``names`` that record the order in which they are called."""
    calls: list[str] = []
    return {name: (lambda name=name: calls.append(name)) for name in names}, calls


def test_interleaved_rounds_warm_up_first_then_rotate_or_alternate_the_order():
    functions, calls = recording("abc")
    times = interleaved_rounds(functions, 3, warmup=1)
    assert "".join(calls) == "abc" + "abc" + "bca" + "cab"
    assert {name: len(values) for name, values in times.items()} == {"a": 3, "b": 3, "c": 3}
    functions, calls = recording("abcd")
    interleaved_rounds(functions, 3, order="alternate")
    assert "".join(calls) == "abcd" + "dcba" + "abcd"
    with pytest.raises(ValueError, match="order"):
        interleaved_rounds(functions, 1, order="shuffle")


def test_repeats_reports_every_run_with_its_verdict():
    summaries = [Summary(2.0, 1.9, 2.1, 9), Summary(2.2, 2.1, 2.3, 9), Summary(2.5, 2.4, 2.6, 9)]
    target = Target("<=", 2.2)

    def measure(index):
        return Run({"call": Summary(0.01, 0.009, 0.011, 9)}, (Ratio("a / b", summaries[index], target),))

    written: list[str] = []
    runs = repeats(measure, 3, written.append)
    assert [run.ratios[0].verdict for run in runs] == [MET, UNDECIDED, NOT_MET]
    text = "\n".join(written)
    assert "run 3 of 3:" in text and "call  10.0 ms (IQR 9.0 ms to 11.0 ms) per image" in text, text
    assert written[-1] == f"verdicts over 3 runs, a / b (target <= 2.2x): {MET}, {UNDECIDED}, {NOT_MET}"


def test_gradient_speed_reports_both_ratios_with_verdicts():
    pytest.importorskip("torch")
    out = run_script("gradient_speed.py", *TINY, "--batch", "2", "--rounds", "3", "--pause", "0", "--target", "2.2")
    for call in ("ort forward", "ort gradient", "torch fwd+bwd"):
        assert re.search(rf"{re.escape(call)}\s+{NUMBER} ms \(IQR {NUMBER} ms to {NUMBER} ms\) per image", out), out
    check_runs(out, 3, {"gradient / forward", "torch fwd+bwd / ORT gradient"})
    assert "torch.set_num_threads(1)" in out and "ORT intra-op threads 1" in out, out


def test_gradient_speed_times_any_onnx_file():
    out = run_script("gradient_speed.py", "--model", DIGITS, "--batch", "2", "--rounds", "3", "--target", "4")
    check_runs(out, 3, {"gradient / forward"})
    assert "torch fwd+bwd" not in out, out


def test_attribution_overhead_reports_a_share():
    out = run_script("attribution_overhead.py", "--model", DIGITS, "--images", "2", "--samples", "4", "--rounds", "3")
    lines = check_runs(out, 3, set())
    assert [line["unit"] for line in lines] == ["%"] * 3, out


def test_mi_speed_reports_each_estimator():
    out = run_script("mi_speed.py", "--rounds", "1", "--runs", "1")
    for name in ("ksg-rank", "ksg", "histogram"):
        assert re.search(rf"^\s+{name}\s+{NUMBER} s \(IQR", out, re.M), out
    assert "CPU affinity" in out or "no CPU affinity" in out, out


def test_ray_overhead_reports_a_ratio():
    pytest.importorskip("ray", reason="the Ray engine is an optional extra; CI installs it with the tests")
    out = run_script("ray_overhead.py", "--rounds", "1", "--images", "2", "--samples", "2", "--runs", "1")
    check_runs(out, 1, {"ray / local"})


def test_versus_captum_reports_three_ratios_with_verdicts():
    pytest.importorskip("torch")
    pytest.importorskip("captum", reason="the bench extra; CI installs it with the tests")
    out = run_script("versus_captum.py", *TINY, "--images", "1", "--samples", "2", "--batch", "2", "--rounds", "3")
    check_runs(out, 3, {f"{method} captum / harness" for method in ("smoothgrad", "ig", "suppression")})
    assert "harness smoothgrad / suppression (the same runtime work) = " in out, out


def test_versus_pair_reports_a_ratio_with_its_verdict():
    pytest.importorskip("torch")
    pytest.importorskip("saliency", reason="the bench extra; CI installs it with the tests")
    out = run_script("versus_pair.py", *TINY, "--images", "1", "--steps", "3", "--rounds", "3")
    check_runs(out, 3, {"guided-ig PAIR / harness"})


def test_streams_reports_a_ratio_and_identical_arrays():
    out = run_script("streams.py", "--model", DIGITS, "--rows", "4", "--rounds", "3")
    lines = check_runs(out, 3, set())
    assert [line["name"] for line in lines] == ["1 session / 2 streams"] * 3, out
    assert out.count("identical arrays: True") == 3, out


def test_run_all_quick_prints_the_tables_with_verdicts_that_agree():
    pytest.importorskip("torch")
    pytest.importorskip("captum", reason="the bench extra; CI installs it with the tests")
    pytest.importorskip("saliency", reason="the bench extra; CI installs it with the tests")
    out = run_script("run_all.py", "--quick")
    assert "- command: `python benchmarks/run_all.py --quick`" in out, out
    assert re.search(r"^- machine: .+, \d+ logical cores", out, re.M), out
    assert re.search(r"^- versions: Python \d", out, re.M) and "onnx" in out, out
    for heading in ("## The gradient call against the forward call", "## The gradient call against PyTorch",
                    "## Against Captum", "## Against PAIR saliency", "## One session against streams"):
        assert heading in out, out
    cell = re.compile(rf"\*\*({NUMBER})x\*\* \(({NUMBER}) to ({NUMBER})\)")
    checked = 0
    for row in (line for line in out.splitlines() if line.startswith("| ") and ("<= " in line or ">= " in line)):
        ratios, target, verdicts = [part.strip() for part in row.strip("|").split("|")][-3:]
        sense, bound = target.split()
        for (_, q1, q3), verdict in zip(cell.findall(ratios), verdicts.split(" / "), strict=True):
            assert agrees(sense, float(bound.rstrip("x")), float(q1), float(q3), verdict), row
            checked += 1
    assert checked >= 3 * 8, out     # 4 gradient rows, 3 PyTorch rows, 3 Captum rows, 1 PAIR row; 3 runs each


def test_strided_adjoints_reports_each_variant_against_the_harness():
    out = run_script("strided_adjoints.py", "--scale", "8", "--batch", "1", "--threads", "1", "--rounds", "3")
    lines = check_runs(out, 3, set())
    names = {line["name"] for line in lines}
    assert "stem 7x7/2 3<-64 sub-pixel / harness" in names and "1x1/2 256->512 pointwise / harness" in names, out
    assert len(lines) == 3 * 10, out     # 7 sub-pixel and 3 pointwise ratios per run


def test_strided_adjoints_refuses_a_variant_that_disagrees(monkeypatch):
    """The variants are checked against the gradient pass's adjoint before anything is timed: a sub-pixel form
    with one phase's taps lost is refused."""
    import strided_adjoints

    exact = strided_adjoints.sub_pixel_adjoint

    def one_tap_lost(weights, *args):
        weights = weights.copy()
        weights[:, :, 0, 0] = 0.0
        return exact(weights, *args)

    geometry = ("3x3/2 small", 8, 8, 3, 2, 1, 12)
    strided_adjoints.variants(geometry, 1, 1, np.random.default_rng(0))    # the exact forms agree
    monkeypatch.setattr(strided_adjoints, "sub_pixel_adjoint", one_tap_lost)
    with pytest.raises(SystemExit, match="sub-pixel adjoint disagrees"):
        strided_adjoints.variants(geometry, 1, 1, np.random.default_rng(0))
