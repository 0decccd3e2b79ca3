"""Study report build time: ``virtual-biopsy-train report`` over three architectures.

Writes three simulated run folders of 200 patients each (``Training.report.simulate``:
every file a run writes, probabilities from a known logistic model, no training) into a
temporary folder and, each in a fresh subprocess, times:

- ``report``: ``Training.report.build.write_report`` with the defaults (2 000 patient
  bootstrap resamples, robustness repetitions from the config), every table and figure,
  Markdown and HTML; imports included;
- ``experiments`` (the baseline, same runs, same run of this script): the paper's tables
  without intervals, ``Training.experiments.write_experiments``.

Target: the report in under 60 s. Simulated numbers are synthetic; only the time counts.

Usage::

    .venv/bin/python Testing/benchmarks/bench_report.py [--patients 200] [--resamples 2000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from _common import check_target, emit, machine_line, peak_rss_mb, print_table, run_worker  # noqa: E402

ARCHITECTURES = ("resnet18", "resnet50", "vgg16")
TARGET_S = 60.0


def worker(path: str, runs: list[str], out: str, resamples: int) -> None:
    start = time.perf_counter()
    if path == "report":
        from Training.report.build import write_report

        write_report([Path(r) for r in runs], Path(out), n_resamples=resamples, progress=False)
    else:
        from Training.experiments import write_experiments

        write_experiments([Path(r) for r in runs], Path(out))
    seconds = time.perf_counter() - start
    files = sorted(p.name for p in Path(out).iterdir())
    emit({"name": path, "seconds": seconds, "peak_rss_mb": peak_rss_mb(), "files": len(files)})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--worker", nargs=3, metavar=("PATH", "RUNS_JSON", "OUT"))
    args = parser.parse_args()
    if args.worker:
        path, runs, out = args.worker
        worker(path, json.loads(runs), out, args.resamples)
        return 0

    from Training.report.simulate import simulate_run

    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="bench-report-") as work:
        runs = [
            str(
                simulate_run(
                    Path(work) / name, patients=args.patients, architecture=name, seed=index
                )
            )
            for index, name in enumerate(ARCHITECTURES)
        ]
        print(
            f"{len(runs)} simulated runs × {args.patients} patients, "
            f"{args.resamples} bootstrap resamples"
        )
        rows = []
        for path in ("experiments", "report"):
            rows.append(
                run_worker(
                    [
                        __file__,
                        "--resamples",
                        str(args.resamples),
                        "--worker",
                        path,
                        json.dumps(runs),
                        str(Path(work) / f"out_{path}"),
                    ]
                )
            )
    baseline = rows[0]["seconds"]
    for row in rows:
        row["ratio"] = row["seconds"] / baseline
    print_table(
        rows,
        [
            ("name", "path", "{}"),
            ("seconds", "seconds", "{:.1f}"),
            ("ratio", "÷ experiments", "{:.2f}"),
            ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
            ("files", "files", "{:d}"),
        ],
    )
    met = check_target("report build time (s)", rows[1]["seconds"], TARGET_S, False)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
