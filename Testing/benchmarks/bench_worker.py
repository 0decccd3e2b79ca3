"""Benchmark: request → result files through the persistent worker, beside one ``predict``
process per case, measured in the same run.

What Slicer does since the worker exists: the first Run starts ``virtual-biopsy worker``
(imports, package verified once, networks built on first use) and sends the case; every
later Run or review case is one more request to the same process. The baseline is what it
did before: a fresh ``python -m VirtualBiopsyLib predict … --progress json`` process per
case. Both are driven as the module drives them (``VirtualBiopsyLib.slicer.process``:
:class:`PredictWorker` and :class:`SubprocessRunner`), and a case counts as done when its
result files are on disk and the caller has read the terminal line.

Configuration: the paper-size package and case of ``bench_predict.py`` (its
``prepare_inputs``): ResNet18 × 5 folds, CycleGAN generators ngf 64 / 9 blocks, UNTRAINED
weights (timing only; no figure here says anything about classification), one full-size
(2850×2396) phantom breast with LE CC and LE MLO as DICOM, so both DES are synthesized.
Every request writes a fresh output folder (the whole writer is timed). The worker's
result of the first case is compared with the first one-shot result: the same files and
probabilities within 1e-6 are expected.

Target (issue 14): cases 2..N through the worker ≤ 1.2 s from request to result files
(median). Peak RSS: the worker's ``VmHWM`` (Linux) and each predict process's
``ru_maxrss`` (``os.wait4``). *CPU s/case* (user + system time of the worker, or of the
predict process) says what a case costs whatever else runs: on a shared 2-core machine
the wall time can be well above the idle figure.

Usage (from the repository root)::

    .venv/bin/python Testing/benchmarks/bench_worker.py [--cases 6] [--baseline-cases 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from _common import CASE_COLUMNS, check_target, machine_line, print_table, summarise  # noqa: E402
from bench_predict import prepare_inputs  # noqa: E402  (the same package and case)

TARGET_LATER_CASES_S = 1.2
PROBABILITY_TOLERANCE = 1e-6


def child_environment() -> dict[str, str]:
    from VirtualBiopsyLib.slicer.logic import child_python_path

    return {**os.environ, "PYTHONPATH": child_python_path()}


# --------------------------------------------------------------------------- baseline


def one_shot_case(package: Path, files: list[Path], out: Path) -> tuple[float, float, float, Path]:
    """(seconds, CPU seconds, peak RSS MB, result.json) of one ``predict`` process."""
    args = [sys.executable, "-m", "VirtualBiopsyLib", "predict", *map(str, files)]
    args += ["--out", str(out), "--model", str(package), "--progress", "json"]
    errors = out.with_name(out.name + "-stderr.txt")
    start = time.perf_counter()
    with open(errors, "w") as stderr:
        process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=stderr, env=child_environment(), text=True
        )
        stdout = process.stdout.read()  # the JSON lines, up to the end of the process
        _, status, usage = os.wait4(process.pid, 0)  # its own peak RSS, not the others'
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    process.returncode = code  # reaped by wait4
    if code != 0:
        raise RuntimeError(f"predict failed ({code}):\n{errors.read_text()[-4000:]}")
    done = json.loads(stdout.strip().splitlines()[-1])
    [result] = done["results"]
    peak_mb = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    return seconds, usage.ru_utime + usage.ru_stime, peak_mb, Path(result)


# --------------------------------------------------------------------------- worker


def worker_cases(
    package: Path, files: list[Path], root: Path, cases: int
) -> tuple[list[float], list[float], float, dict[str, Any], Path]:
    """Seconds per request (the first includes starting the worker), the worker's CPU
    seconds per request after the first, its peak RSS MB, its own account (networks
    built, requests) and the first result.json."""
    from VirtualBiopsyLib.slicer.process import PredictWorker, SubprocessRunner, worker_command

    env = {"PYTHONPATH": child_environment()["PYTHONPATH"]}
    worker = PredictWorker(SubprocessRunner, worker_command(model_dir=package), env)
    durations, cpu_seconds, first_result = [], [], None
    try:
        for index in range(cases):
            out = root / f"worker-{index}"
            cpu_start = _cpu_seconds_of(worker.info["pid"]) if index else 0.0
            start = time.perf_counter()
            job = worker.submit(files, out)
            [result] = job.wait(timeout=600, poll_interval=0.005)
            if not Path(result).is_file():
                raise RuntimeError(f"{result}: not written")
            durations.append(time.perf_counter() - start)
            if index:
                cpu_seconds.append(_cpu_seconds_of(worker.info["pid"]) - cpu_start)
            first_result = first_result or Path(result)
        peak_mb = _peak_rss_of(worker.info["pid"])
        info = dict(worker.info)
        if worker.starts != 1:
            raise RuntimeError(f"the worker was started {worker.starts} times, not once")
    finally:
        worker.close()
    assert first_result is not None
    return durations, cpu_seconds, peak_mb, info, first_result


def _cpu_seconds_of(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_of(pid: int) -> float:
    """A running process's peak RSS (VmHWM) in MiB; NaN where there is no /proc."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# --------------------------------------------------------------------------- comparison


def compare(worker_result: Path, one_shot_result: Path) -> tuple[bool, float]:
    """(same file set, max |Δ| over every probability of the two result.json files)."""

    def files(folder: Path) -> set[str]:
        return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}

    def numbers(value: Any) -> list[float]:
        if isinstance(value, dict):
            return [n for key in sorted(value) for n in numbers(value[key])]
        if isinstance(value, list):
            return [n for item in value for n in numbers(item)]
        return [float(value)] if isinstance(value, int | float) else []

    same_files = files(worker_result.parent) == files(one_shot_result.parent)
    got = numbers(json.loads(worker_result.read_text())["probabilities"])
    expected = numbers(json.loads(one_shot_result.read_text())["probabilities"])
    if len(got) != len(expected):
        return same_files, float("inf")
    return same_files, max(abs(a - b) for a, b in zip(got, expected, strict=True))


# --------------------------------------------------------------------------- main


def main() -> int:
    from VirtualBiopsyLib.inference.threads import configure_cpu_threads

    configure_cpu_threads()  # the children inherit the environment
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=6, help="requests through the worker")
    parser.add_argument("--baseline-cases", type=int, default=3, help="one-shot predict processes")
    args = parser.parse_args()
    if args.cases < 2 or args.baseline_cases < 1:
        parser.error("--cases ≥ 2 (case 1 and later cases) and --baseline-cases ≥ 1")
    root = Path(tempfile.mkdtemp(prefix="bench-worker-"))
    try:
        package, files = prepare_inputs(root)
        print(machine_line())
        print(
            f"case: {len(files)} full-size LE DICOMs (synthetic phantom) → 2 synthetic DES; "
            "ResNet18 × 5 folds, generator ngf 64 / 9 blocks, UNTRAINED weights (timing only)"
        )
        baseline = [
            one_shot_case(package, files, root / f"predict-{index}")
            for index in range(args.baseline_cases)
        ]
        durations, cpu_seconds, worker_peak, info, worker_result = worker_cases(
            package, files, root, args.cases
        )
        rows = [
            summarise(
                "one predict process per case",
                [seconds for seconds, _, _, _ in baseline],
                cpu_s=statistics.median(cpu for _, cpu, _, _ in baseline),
                peak_rss_mb=max(peak for _, _, peak, _ in baseline),
            ),
            summarise(
                "worker: case 1 (start + load + case)", durations[:1], peak_rss_mb=worker_peak
            ),
            summarise(
                f"worker: cases 2..{args.cases}",
                durations[1:],
                cpu_s=statistics.median(cpu_seconds),
                peak_rss_mb=worker_peak,
            ),
        ]
        print_table(
            rows,
            [*CASE_COLUMNS, ("peak_rss_mb", "peak RSS MB", "{:.0f}")],
        )
        baseline_median = rows[0]["median_ms"]
        print(
            f"later cases: {baseline_median / rows[2]['median_ms']:.1f}× faster than a "
            f"predict process per case; worker built {info['networks_built']} networks "
            f"once for {info['requests']} requests (package loaded {info['package_loads']}×)"
        )
        same_files, delta = compare(worker_result, baseline[0][3])
        print(
            f"worker vs one-shot result: same files {'yes' if same_files else 'NO'}, "
            f"max |Δ probability| {delta:.2g} (tolerance {PROBABILITY_TOLERANCE:g})"
        )
        met = check_target(
            "s per later case (worker)", rows[2]["median_ms"] / 1000, TARGET_LATER_CASES_S, False
        )
        return 0 if met and same_files and delta <= PROBABILITY_TOLERANCE else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
