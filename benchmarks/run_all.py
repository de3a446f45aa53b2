"""The speed tables of the documentation (docs/performance.md) from one command.

    python benchmarks/run_all.py                   # the documented settings: about an hour on 2 cores, run it quiet
    python benchmarks/run_all.py --quick           # tiny settings: checks that everything runs (numbers mean nothing)
    python benchmarks/run_all.py --only gradient --only pair

Runs each comparison of docs/performance.md with its settings, each in a fresh process of its own script (so
that no session, thread pool or allocator of one comparison is alive during the next): the gradient call
against the forward call and PyTorch (ResNet-50 with both exporters, EfficientNet-B0 and MobileNetV2 at
224x224, batch 8; the Hugging Face transformers families in ``tests/fixtures/hf/`` at batch 2), the harness
against Captum (SmoothGrad, IG, suppression) and against PAIR saliency (Guided IG), and one session against
two streams. Every script runs its comparison ``--runs`` times; each writes its runs as JSON (``--json``), and
this prints them as Markdown tables on stdout: per run, the median ratio with its IQR over interleaved rounds,
the target and the verdict (met only when the whole IQR meets it), after the machine and the command. The
scripts' own output goes to stderr as they run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import targets

BENCHMARKS = Path(__file__).resolve().parent
ROOT = BENCHMARKS.parent
HF_FIXTURES = ROOT / "tests" / "fixtures" / "hf"
TABLES = ("gradient", "captum", "pair", "streams")
PACKAGES = ("numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "torch", "captum", "saliency", "harness")
# The zoo rows of docs/performance.md: label, architecture, exporter; and the tiny stand-in each one gets with --quick.
ZOO = (("ResNet-50", "resnet50", "legacy"), ("ResNet-50, dynamo export", "resnet50", "dynamo"),
       ("EfficientNet-B0", "efficientnet_b0", "legacy"), ("MobileNetV2", "mobilenet_v2", "legacy"))
STAND_INS = {"resnet50": "resnet_tiny", "efficientnet_b0": "efficientnet_tiny", "mobilenet_v2": "mobilenetv2_tiny"}
CAPTUM_METHODS = {"smoothgrad": "SmoothGrad vs `NoiseTunnel(Saliency)`", "ig": "IG vs `IntegratedGradients`",
                  "suppression": "suppression vs `NoiseTunnel(Saliency, abs=True)`"}


@dataclass(frozen=True)
class Job:
    """One script run: the table it feeds, its row's label, the script and its arguments."""

    table: str
    label: str
    script: str
    args: tuple[str, ...]

    def command(self, runs: int) -> str:
        """The command line that reproduces this row."""
        return " ".join(["python", f"benchmarks/{self.script}", *self.args, "--runs", str(runs)])


def gradient_jobs(quick: bool, threads: int) -> list[Job]:
    """The gradient call against the forward call: docs/performance.md's zoo rows and every transformers fixture."""
    jobs = []
    for label, arch, exporter in ZOO:
        if quick and exporter != "legacy":
            continue    # the dynamo export alone takes longer than the whole quick run should
        settings = (["--arch", STAND_INS[arch], "--size", "32", "--batch", "2", "--rounds", "3", "--pause", "0",
                     "--target", f"{targets.GRADIENT[arch].bound:g}"] if quick else
                    ["--arch", arch, "--size", "224", "--batch", "8", "--rounds", "9"])
        name = f"{label} (quick: `{STAND_INS[arch]}` 32x32)" if quick else label
        jobs.append(Job("gradient", name, "gradient_speed.py",
                        (*settings, "--exporter", exporter, "--threads", str(threads))))
    fixtures = sorted(HF_FIXTURES.glob("*/model.onnx"))
    for model in fixtures[:1] if quick else fixtures:
        settings = ["--batch", "1", "--rounds", "3"] if quick else ["--batch", "2", "--rounds", "9"]
        jobs.append(Job("gradient", f"`{model.parent.name}` (transformers)", "gradient_speed.py",
                        ("--model", str(model.relative_to(ROOT)), *settings, "--threads", str(threads),
                         "--target", f"{targets.TRANSFORMERS.bound:g}")))
    return jobs


def all_jobs(quick: bool, threads: int, only: set[str]) -> list[Job]:
    """Every job of the chosen tables, with the documented settings or (``quick``) tiny ones."""
    arch, size = ("resnet_tiny", "32") if quick else ("resnet50", "224")
    common = ("--arch", arch, "--size", size, "--threads", str(threads))
    jobs = gradient_jobs(quick, threads) if "gradient" in only else []
    if "captum" in only:
        settings = ("--images", "1", "--samples", "2", "--batch", "2", "--rounds", "3") if quick else \
            ("--images", "2", "--samples", "50", "--batch", "32", "--rounds", "5")
        jobs.append(Job("captum", "Captum", "versus_captum.py", (*common, *settings)))
    if "pair" in only:
        settings = ("--images", "1", "--steps", "3", "--rounds", "3") if quick else \
            ("--images", "2", "--steps", "50", "--rounds", "3")
        jobs.append(Job("pair", "Guided IG vs PAIR's `GuidedIG`", "versus_pair.py", (*common, *settings)))
    if "streams" in only:
        settings = ("--model", "exported_models/digits_cnn.onnx", "--rows", "4", "--rounds", "3") if quick else \
            ("--arch", "resnet50", "--size", "224", "--rows", "32", "--rounds", "7")
        label = "`digits_cnn` (quick)" if quick else "ResNet-50 224x224"
        jobs.append(Job("streams", label, "streams.py", (*settings, "--threads", str(max(threads, 2)))))
    return jobs


def run_job(job: Job, runs: int, folder: Path) -> dict | None:
    """Run one job's script with its output on stderr; its JSON record, or None where it failed."""
    path = folder / f"{len(list(folder.iterdir())):02d}-{job.script.removesuffix('.py')}.json"
    print(f"$ {job.command(runs)}", file=sys.stderr, flush=True)
    done = subprocess.run([sys.executable, str(BENCHMARKS / job.script), *job.args, "--runs", str(runs),
                           "--json", str(path)], cwd=ROOT, stdout=sys.stderr.fileno(), check=False)
    if done.returncode != 0:
        print(f"failed (exit {done.returncode}): {job.command(runs)}", file=sys.stderr, flush=True)
        return None
    return json.loads(path.read_text())


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or what the platform says where there is none."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def versions() -> str:
    """Python's version and those of the packages the benchmarks time, as one line."""
    found = [f"Python {platform.python_version()}"]
    for package in PACKAGES:
        try:
            found.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


def load() -> str:
    """The 1, 5 and 15 minute load averages, where the platform reports them."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg()) if hasattr(os, "getloadavg") else "not reported"


def machine_lines(argv: list[str], quick: bool, threads: int, runs: int) -> list[str]:
    """The Markdown lines about the machine and the command, printed before the tables."""
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = ["# Speed benchmarks", "",
             f"- command: `{' '.join(['python', 'benchmarks/run_all.py', *argv])}`",
             f"- machine: {cpu_model()}, {os.cpu_count()} logical cores ({allowed} allowed), "
             f"{platform.system()} {platform.release()}",
             f"- versions: {versions()}",
             f"- {threads} threads per comparison (pinned by each script), {runs} runs of each comparison in one "
             f"invocation; ratios are the median (IQR) of per-round ratios of interleaved rounds, and a target is "
             f"met only when the whole IQR meets it",
             f"- started {time.strftime('%Y-%m-%d %H:%M %Z')}, load average {load()}"]
    if quick:
        lines.append("- **quick**: tiny stand-ins and settings that check the scripts run; these are not the "
                     "documented numbers")
    return lines


def ratio_cell(ratio: dict) -> str:
    """``**2.13x** (2.01 to 2.20)``: one run's median ratio and its IQR."""
    summary = ratio["summary"]
    return f"**{summary['median']:.2f}x** ({summary['q1']:.2f} to {summary['q3']:.2f})"


def time_cell(summary: dict, time_unit: str) -> str:
    """One run's median time per unit, in ms or s."""
    return f"{1000 * summary['median']:.1f}" if time_unit == "ms" else f"{summary['median']:.2f}"


def per_run(record: dict | None, cell) -> str:
    """``cell(run)`` of every run of a record, separated by `` / ``; ``failed`` for a job that failed."""
    return "failed" if record is None else " / ".join(cell(run) for run in record["runs"])


def find_ratio(run: dict, start: str) -> dict:
    """The run's ratio whose name starts with ``start``."""
    return next(r for r in run["ratios"] if r["name"].startswith(start))


def ratio_columns(record: dict | None, start: str) -> list[str]:
    """The ratio's cells of every run, its target and its verdicts."""
    if record is None:
        return ["failed", "", ""]
    first = find_ratio(record["runs"][0], start)
    target = first["target"]
    return [per_run(record, lambda run: ratio_cell(find_ratio(run, start))),
            f"{target['sense']} {target['bound']:g}x" if target else "none",
            per_run(record, lambda run: find_ratio(run, start)["verdict"] or "")]


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]


def commands(jobs: list[Job], runs: int) -> list[str]:
    """The commands of a table's rows, as a Markdown list."""
    return ["", "Commands:", "", *(f"- `{job.command(runs)}`" for job in jobs)]


def gradient_tables(results: list[tuple[Job, dict | None]], runs: int) -> list[str]:
    """The gradient call against the forward call, and (where timed) against PyTorch."""
    rows = [[job.label, per_run(r, lambda run: time_cell(run["times"]["ort forward"], "ms")),
             per_run(r, lambda run: time_cell(run["times"]["ort gradient"], "ms")),
             *ratio_columns(r, "gradient / forward")] for job, r in results]
    lines = ["## The gradient call against the forward call", "",
             "Milliseconds per image, then the per-round ratio, for each run (separated by /).", "",
             *table(["model", "ORT forward ms", "ORT gradient ms", "gradient / forward (IQR)", "target", "verdicts"],
                    rows)]
    torch_rows = [[job.label, per_run(r, lambda run: time_cell(run["times"]["ort gradient"], "ms")),
                   per_run(r, lambda run: time_cell(run["times"]["torch fwd+bwd"], "ms")),
                   *ratio_columns(r, "torch fwd+bwd / ORT gradient")]
                  for job, r in results if r is not None and "torch fwd+bwd" in r["runs"][0]["times"]]
    if torch_rows:
        lines += ["", "## The gradient call against PyTorch forward + backward", "",
                  *table(["model", "ORT gradient ms", "PyTorch fwd+bwd ms", "PyTorch / ORT gradient (IQR)", "target",
                          "verdicts"], torch_rows)]
    return lines + commands([job for job, _ in results], runs)


def captum_table(job: Job, record: dict | None, runs: int) -> list[str]:
    """SmoothGrad, IG and suppression against Captum, and the harness's SmoothGrad over its suppression."""
    rows = [[label, per_run(record, lambda run, m=method: time_cell(run["times"][f"{m} harness"], "s")),
             per_run(record, lambda run, m=method: time_cell(run["times"][f"{m} captum"], "s")),
             *ratio_columns(record, f"{method} captum / harness")] for method, label in CAPTUM_METHODS.items()]
    same = per_run(record, lambda run: ratio_cell(find_ratio(run, "harness smoothgrad / suppression")))
    return ["## Against Captum", "", f"{record['title'] if record else job.label}; seconds per image.", "",
            *table(["method", "harness s/img", "Captum s/img", "Captum / harness (IQR)", "target", "verdicts"], rows),
            "", f"The harness's SmoothGrad / suppression (the same runtime work): {same}.",
            *commands([job], runs)]


def pair_table(job: Job, record: dict | None, runs: int) -> list[str]:
    """Guided IG against PAIR saliency."""
    row = [job.label, per_run(record, lambda run: time_cell(run["times"]["harness"], "s")),
           per_run(record, lambda run: time_cell(run["times"]["pair"], "s")), *ratio_columns(record, "guided-ig")]
    return ["## Against PAIR saliency", "", f"{record['title'] if record else job.label}; seconds per image.", "",
            *table(["method", "harness s/img", "PAIR s/img", "PAIR / harness (IQR)", "target", "verdicts"], [row]),
            *commands([job], runs)]


def streams_table(job: Job, record: dict | None, runs: int) -> list[str]:
    """One session against two streams."""
    times = list(record["runs"][0]["times"]) if record else ["1 session", "streams"]
    row = [job.label, *(per_run(record, lambda run, t=t: time_cell(run["times"][t], "ms")) for t in times),
           *ratio_columns(record, "1 session /")[:1],
           "failed" if record is None else str(record["facts"]["identical"])]
    return ["## One session against streams", "", f"{record['title'] if record else job.label}; ms per row.", "",
            *table(["model", *(f"{t} ms/row" for t in times), "1 session / streams (IQR)", "identical arrays"],
                   [row]), *commands([job], runs)]


def render(results: list[tuple[Job, dict | None]], runs: int) -> list[str]:
    """Every table whose jobs ran, in the order of docs/performance.md."""
    lines = []
    gradient = [(job, r) for job, r in results if job.table == "gradient"]
    if gradient:
        lines += ["", *gradient_tables(gradient, runs)]
    renderers = {"captum": captum_table, "pair": pair_table, "streams": streams_table}
    for job, record in results:
        if job.table in renderers:
            lines += ["", *renderers[job.table](job, record, runs)]
    return lines


def main() -> None:
    """Run the chosen comparisons one after another and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny stand-ins and settings (checks that all runs)")
    parser.add_argument("--only", action="append", choices=TABLES, help="run only this table (repeatable)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each comparison")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads per comparison (default 2, as documented; 1 with --quick, where a busy "
                             "machine's second core would slow tiny calls; streams take at least 2)")
    parser.add_argument("--results", default=None, help="keep each script's JSON in this folder")
    args = parser.parse_args()
    threads = args.threads or (1 if args.quick else 2)
    jobs = all_jobs(args.quick, threads, set(args.only or TABLES))
    header = machine_lines(sys.argv[1:], args.quick, threads, args.runs)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.results or scratch)
        folder.mkdir(parents=True, exist_ok=True)
        results = [(job, run_job(job, args.runs, folder)) for job in jobs]
    print("\n".join([*header, f"- finished with load average {load()}", *render(results, args.runs)]))
    if any(record is None for _, record in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
