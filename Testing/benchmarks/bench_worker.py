"""Benchmark: request → result files through the persistent worker, beside one ``predict``
process per case, measured in the same run.

What Slicer does since the worker exists: the module starts ``virtual-biopsy worker``
(imports, package verified once, every network built) once an exam is assigned, or at
the first Run, and sends the case; every later Run or review case is one more request to
the same process. Rows: a worker started by its first request (start-up + case), one
started ahead (seconds until ready, then its first request), later requests. The baseline is what it
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

Baseline worker (``--baseline-ref``, default the commit before the Pillow report and
the shared file queue): the same requests through a second worker running the library
of that commit (``git archive``, as ``bench_predict.py`` does); the two workers take
turns request by request, so the writer's change is measured against its predecessor
under the same load.

Stages (``--stages``, in this process, the working tree's library): one warm case's
wall and CPU seconds per pipeline step (read + preprocess, synthesis, classification
with Grad-CAM, fusion; from the pipeline's progress steps), then each output file
written alone on one thread (report.png, every NRRD map: its CPU cost) and the whole
writer as the worker runs it (files side by side).

Target (issue 14): cases 2..N through the worker ≤ 1.2 s from request to result files
(median). Peak RSS: the worker's and each predict process's own ``VmHWM`` (Linux; a
child's ``ru_maxrss`` would start from this script's peak, inherited across fork, which
holds the untrained package it wrote). *CPU s/case* (user + system time of the worker, or of the
predict process) says what a case costs whatever else runs: on a shared 2-core machine
the wall time can be well above the idle figure.

Usage (from the repository root)::

    .venv/bin/python Testing/benchmarks/bench_worker.py [--cases 6] [--baseline-cases 3]
        [--baseline-ref COMMIT] [--stages]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from _common import CASE_COLUMNS, check_target, machine_line, print_table, summarise  # noqa: E402
from bench_predict import (  # noqa: E402  (the same case, the same one-shot launcher)
    REPO,
    prepare_baseline,
    prepare_inputs,
    run_predict_process,
)

TARGET_LATER_CASES_S = 1.2
PROBABILITY_TOLERANCE = 1e-6
# The last commit before report.png was drawn with Pillow and the writer's files were
# shared between the writer thread and the caller (issue 14): the worker's baseline.
BASELINE_REF = "ddf0479fbba6d6db1658f577d38ba72e81e7aeb0"


def child_python_path(code: Path | None = None) -> str:
    """A worker's PYTHONPATH: the Slicer module's, or ``code`` to run the library there."""
    from VirtualBiopsyLib.slicer.logic import child_python_path as module_python_path

    return str(code) if code is not None else module_python_path()


# --------------------------------------------------------------------------- baseline


def one_shot_case(package: Path, files: list[Path], out: Path) -> tuple[float, float, float, Path]:
    """(seconds, CPU seconds, peak RSS MB, result.json) of one ``predict`` process, run
    by ``bench_predict``'s launcher, which reads the process's own peak at its exit."""
    arguments = ["predict", *map(str, files), "--out", str(out), "--model", str(package)]
    record = run_predict_process(
        [*arguments, "--progress", "json"], REPO, out.with_name(out.name + "-peak.json")
    )
    [result] = out.glob("*/result.json")
    return record["wall_s"], record["cpu_s"], record["peak_mb"], result


# --------------------------------------------------------------------------- worker


@dataclass
class WorkerRun:
    """One worker's figures: seconds per request (the first includes starting it), its
    CPU seconds per request after the first, peak RSS MB, its own account (networks
    built, requests) and its first result.json."""

    durations: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    peak_mb: float = float("nan")
    info: dict[str, Any] = field(default_factory=dict)
    first_result: Path | None = None


def worker_cases(
    package: Path, files: list[Path], root: Path, cases: int, codes: list[Path | None]
) -> list[WorkerRun]:
    """``cases`` requests to one worker per entry of ``codes`` (the library it runs;
    None: this tree's), the workers taking turns request by request, so a load that
    comes and goes on the machine falls on all of them alike."""
    workers, runs = [], [WorkerRun() for _ in codes]
    try:
        workers.extend(new_worker(package, code) for code in codes)
        for index in range(cases):
            for number, (worker, run) in enumerate(zip(workers, runs, strict=True)):
                out = root / f"worker{number}-{index}"
                cpu_start = _cpu_seconds_of(worker.info["pid"]) if index else 0.0
                start = time.perf_counter()
                job = worker.submit(files, out)
                [result] = job.wait(timeout=600, poll_interval=0.005)
                if not Path(result).is_file():
                    raise RuntimeError(f"{result}: not written")
                run.durations.append(time.perf_counter() - start)
                if index:
                    run.cpu_seconds.append(_cpu_seconds_of(worker.info["pid"]) - cpu_start)
                run.first_result = run.first_result or Path(result)
        for worker, run in zip(workers, runs, strict=True):
            run.peak_mb = _peak_rss_of(worker.info["pid"])
            run.info = dict(worker.info)
            if worker.starts != 1:
                raise RuntimeError(f"a worker was started {worker.starts} times, not once")
    finally:
        for worker in workers:
            worker.close()
    return runs


def new_worker(package: Path, code: Path | None = None):
    """A (not yet started) worker as the Slicer module builds it, running the library in
    ``code`` (None: this tree's); its environment holds only that ``PYTHONPATH``."""
    from VirtualBiopsyLib.slicer.process import PredictWorker, SubprocessRunner, worker_command

    command = worker_command(model_dir=package)
    if code is not None:  # -P: the current folder (this tree) not before ``code``
        command.insert(1, "-P")
    env = {"PYTHONPATH": child_python_path(code)}
    return PredictWorker(SubprocessRunner, command, env)


def head_start(package: Path, files: list[Path], root: Path) -> tuple[float, float]:
    """What the Slicer module does since it starts its worker once an exam is assigned:
    seconds from start to the ready line (imports, checksums, every network built; the
    user is still looking at the exam), then seconds of the first request."""
    worker = new_worker(package)
    try:
        start = time.perf_counter()
        worker.start()
        while not worker.info:
            if not worker.running:
                raise RuntimeError(f"the worker ended before it was ready: {worker.log_tail}")
            worker.poll()
            time.sleep(0.005)
        ready = time.perf_counter() - start
        start = time.perf_counter()
        [result] = worker.submit(files, root / "head-start").wait(timeout=600, poll_interval=0.005)
        if not Path(result).is_file():
            raise RuntimeError(f"{result}: not written")
        return ready, time.perf_counter() - start
    finally:
        worker.close()


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


def compare(worker_result: Path, one_shot_result: Path) -> tuple[bool, float, bool]:
    """(same file set, max |Δ| over every probability of the two result.json files,
    every NRRD map's pixels identical)."""
    from VirtualBiopsyLib.inference.output import read_picture

    def files(folder: Path) -> set[str]:
        return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}

    def numbers(value: Any) -> list[float]:
        if isinstance(value, dict):
            return [n for key in sorted(value) for n in numbers(value[key])]
        if isinstance(value, list):
            return [n for item in value for n in numbers(item)]
        return [float(value)] if isinstance(value, int | float) else []

    ours, theirs = worker_result.parent, one_shot_result.parent
    same_files = files(ours) == files(theirs)
    same_pixels = same_files and all(
        np.array_equal(read_picture(path)[0], read_picture(theirs / path.name)[0])
        and read_picture(path)[1:] == read_picture(theirs / path.name)[1:]
        for path in sorted(ours.glob("*.nrrd"))
    )
    got = numbers(json.loads(worker_result.read_text())["probabilities"])
    expected = numbers(json.loads(one_shot_result.read_text())["probabilities"])
    if len(got) != len(expected):
        return same_files, float("inf"), same_pixels
    delta = max(abs(a - b) for a, b in zip(got, expected, strict=True))
    return same_files, delta, same_pixels


# --------------------------------------------------------------------------- stages


class _StepClock:
    """A progress reporter that notes when each pipeline step begins (wall and CPU)."""

    def __init__(self) -> None:
        self.marks: list[tuple[str, float, float]] = []

    def report(self, step: str, fraction: float, message: str) -> None:
        if not self.marks or self.marks[-1][0] != step:
            self.marks.append((step, time.perf_counter(), time.process_time()))

    def done(self, message: str, results: Any) -> None:
        pass


def stage_profile(package_dir: Path, files: list[Path], root: Path, repeats: int = 3) -> None:
    """Print one later case's steps and each output file's cost, in this process."""
    from VirtualBiopsyLib.inference import output
    from VirtualBiopsyLib.inference.pipeline import Pipeline
    from VirtualBiopsyLib.inference.report import render_report
    from VirtualBiopsyLib.inference.runner import gather_cases
    from VirtualBiopsyLib.models.package import load_package

    [case] = gather_cases(files).cases
    steps: dict[str, list[tuple[float, float]]] = {}
    with Pipeline(load_package(package_dir)) as pipeline:
        pipeline.run(case)  # networks built, torchvision imported: what case 1 pays
        for _ in range(repeats):
            clock = _StepClock()
            result = pipeline.run(case, clock)
            clock.marks.append(("end", time.perf_counter(), time.process_time()))
            for (step, wall, cpu), (_, next_wall, next_cpu) in zip(
                clock.marks, clock.marks[1:], strict=False
            ):
                steps.setdefault(step, []).append((next_wall - wall, next_cpu - cpu))
    names = {"read": "read + preprocess", "synthesize": "synthesis (2 generators)"}
    names |= {"classify": "20 classifier passes + Grad-CAM", "fuse": "fusion + result"}
    rows = [
        _timing_row(names.get(step, step), values)
        for step, values in steps.items()
        if step != "case"  # the last progress line: nothing runs after it
    ]

    def alone(name: str, write: Any) -> None:
        values = []
        for index in range(repeats):
            wall, cpu = time.perf_counter(), time.thread_time()
            write(root / f"stage-{index}-{name}")
            values.append((time.perf_counter() - wall, time.thread_time() - cpu))
        rows.append(_timing_row(f"file alone: {name}", values))

    alone(output.REPORT_FILE, lambda path: render_report(result, path))
    for slot in result.synthetic_slots:
        picture = result.pictures[slot]
        alone(
            output.synthetic_file(slot),
            lambda path, picture=picture: output.write_picture(picture, path, True),
        )
    for slot, picture in result.saliency.items():
        alone(
            output.saliency_file(slot),
            lambda path, picture=picture: output.write_picture(
                picture, path, False, levels=output.SALIENCY_LEVELS
            ),
        )
    values = []
    for index in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        output.write_case(result, root / f"stage-case-{index}")
        values.append((time.perf_counter() - wall, time.process_time() - cpu))
    rows.append(_timing_row("whole writer (files side by side)", values))
    print(f"stages of a later case, in this process (median of {repeats}):")
    print_table(
        rows,
        [("name", "stage", "{}"), ("wall_ms", "wall ms", "{:.0f}"), ("cpu_ms", "CPU ms", "{:.0f}")],
    )


def _timing_row(name: str, values: list[tuple[float, float]]) -> dict[str, Any]:
    return {
        "name": name,
        "wall_ms": 1000 * statistics.median(wall for wall, _ in values),
        "cpu_ms": 1000 * statistics.median(cpu for _, cpu in values),
    }


# --------------------------------------------------------------------------- main


def main() -> int:
    from VirtualBiopsyLib.inference.threads import configure_cpu_threads

    configure_cpu_threads()  # the children inherit the environment
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=6, help="requests through the worker")
    parser.add_argument("--baseline-cases", type=int, default=3, help="one-shot predict processes")
    parser.add_argument(
        "--baseline-ref",
        default=BASELINE_REF,
        help="git commit whose worker is the writer's baseline ('' to skip it)",
    )
    parser.add_argument(
        "--stages", action="store_true", help="also time a later case's steps in this process"
    )
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
        old_code = prepare_baseline(root, args.baseline_ref)
        codes = [None, old_code] if old_code is not None else [None]
        ours, *older = worker_cases(package, files, root, args.cases, codes)
        ready_s, head_start_s = head_start(package, files, root)
        old = older[0] if older else None
        durations, cpu_seconds, worker_peak = ours.durations, ours.cpu_seconds, ours.peak_mb
        info, worker_result = ours.info, ours.first_result
        assert worker_result is not None
        rows = [
            summarise(
                "one predict process per case",
                [seconds for seconds, _, _, _ in baseline],
                cpu_s=statistics.median(cpu for _, cpu, _, _ in baseline),
                peak_rss_mb=max(peak for _, _, peak, _ in baseline),
            ),
        ]
        if old is not None:
            rows.append(
                summarise(
                    f"worker of {args.baseline_ref[:7]}: cases 2..{args.cases}",
                    old.durations[1:],
                    cpu_s=statistics.median(old.cpu_seconds),
                    peak_rss_mb=old.peak_mb,
                )
            )
        rows += [
            summarise(
                "worker: case 1 (start + load + case)", durations[:1], peak_rss_mb=worker_peak
            ),
            summarise("worker started ahead: until ready", [ready_s]),
            summarise("worker started ahead: case 1", [head_start_s]),
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
        later = rows[-1]
        print(
            f"later cases: {rows[0]['median_ms'] / later['median_ms']:.1f}× faster than a "
            f"predict process per case; worker built {info['networks_built']} networks "
            f"once for {info['requests']} requests (package loaded {info['package_loads']}×)"
        )
        same_files, delta, same_pixels = compare(worker_result, baseline[0][3])
        print(
            f"worker vs one-shot result: same files {'yes' if same_files else 'NO'}, "
            f"NRRD pixels identical {'yes' if same_pixels else 'NO'}, "
            f"max |Δ probability| {delta:.2g} (tolerance {PROBABILITY_TOLERANCE:g})"
        )
        if old is not None:
            old_files, old_delta, old_pixels = compare(worker_result, old.first_result)
            print(
                f"worker vs {args.baseline_ref[:7]}'s worker: same files "
                f"{'yes' if old_files else 'NO'}, NRRD pixels identical "
                f"{'yes' if old_pixels else 'NO'}, max |Δ probability| {old_delta:.2g} "
                "(report.png is drawn anew)"
            )
        if args.stages:
            stage_profile(package, files, root)
        met = check_target(
            "s per later case (worker)", later["median_ms"] / 1000, TARGET_LATER_CASES_S, False
        )
        same = same_files and same_pixels and delta <= PROBABILITY_TOLERANCE
        return 0 if met and same else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
