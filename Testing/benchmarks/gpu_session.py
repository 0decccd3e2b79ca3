"""The GPU work of the method and speed issues, as one prepared run for a lent GPU.

A GPU is lent to a session only sometimes, for minutes (the `device` tool: 15 minutes of
device time, one command at most 600 s), and the CUDA paths have never run on one. This
script is what such a session runs, as one command; each stage is a subprocess with its
own time limit and log (``OUT/<stage>.log``), a stage that fails or runs out of time is
recorded and the next one still runs, and ``OUT/summary.json`` says what each stage took
and how it ended:

1. ``cuda-smoke``: the CUDA paths end to end — a tiny run on a 30-patient phantom
   (``train --tiny --device cuda``), its package, and ``predict --device cuda`` of that
   cohort's cases with synthesis and saliency.
2. ``bench-training``: issue 14's target, ``bench_training.py --device cuda --models
   resnet18 --batch 32 --size 256`` (ours ≥ 3× a plain float32 loop), as JSON.
3. ``paper-size``: issue 8's table with paper-size networks — the demo recipe with
   ResNet18 classifiers at 256² and U-Net generators of base width 32 on 128² crops, on
   a phantom cohort of ``--patients`` (a seed no check uses), its jobs side by side on
   the GPU (``train --workers``), packaged and scored by ``phantom-check --baseline``
   (the bundled demo package) on fresh patients. Whether or not it finishes in time,
   the summary gives each training job's state and seconds, so a partial run still
   says what the whole one costs.

Cohorts, runs and packages go to ``--work`` (default: a new temporary folder), only logs
and JSON to ``--out``: the device tool brings back at most 8 files, two folders deep
(summary.json, three logs, bench_training.json, phantom-check/phantom_check.json|md).
``--smoke`` runs every stage on the CPU at toy sizes (a few minutes): the check that the
script itself works, since no test can run it on a GPU. Phantom figures are synthetic:
they show the pipeline can learn, not clinical performance.

On the device machine, whose ``python3`` has CUDA torch, torchvision, safetensors,
scikit-learn, scikit-image, SciPy and matplotlib but not the project's other
dependencies: here, once, ``Testing/benchmarks/gpu_wheels.sh`` downloads those as wheels
into ``.whl/`` (git-ignored through ``.git/info/exclude``, 12 MB); then one ``run`` call
with ``carry: [".whl"]``, ``timeout_s: 600`` and the command::

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
    PYTHONPATH=/tmp/site:. python3 Testing/benchmarks/gpu_session.py --out "$OUT/gpu"

Here::

    .venv/bin/python Testing/benchmarks/gpu_session.py --out /tmp/gpu --smoke   # CPU check
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from Training.config import demo_config, tiny_config  # noqa: E402
from VirtualBiopsyLib.atomic_io import write_text_atomic  # noqa: E402
from VirtualBiopsyLib.models.package import demo_package_path  # noqa: E402

STAGES = ("cuda-smoke", "bench-training", "paper-size")
#: Phantom seeds: the paper-size training cohort (no check uses it) and its check cohort
#: (one of the README's, so the demo package's figures there are known).
TRAINING_SEED, CHECK_SEED = 8, 3031
#: Seconds per stage: on the GPU (guesses until one has run them; together under the
#: device tool's 600 s a command) and for --smoke (CPU).
GPU_LIMITS, SMOKE_LIMITS = (100.0, 80.0, 390.0), (400.0, 120.0, 400.0)
#: Training jobs side by side in paper-size (sharing the GPU; CPU threads each).
GPU_WORKERS, GPU_THREADS = 6, 2


def paper_size_config(smoke: bool):
    """The demo recipe with the paper's classifier at 256² and a wider U-Net (CUDA)."""
    base = demo_config()
    if smoke:  # toy sizes on the CPU: the stage's plumbing, not its figures
        tiny = tiny_config()
        return replace(tiny, device="cpu", splits=base.splits)
    classifier = replace(base.classifier, architecture="resnet18", batch_size=32)
    generator = replace(base.generator, base_width=32, levels=5, crop_size=128)
    return replace(base, image_size=256, device="cuda", classifier=classifier, generator=generator)


def stage_commands(stage: str, out: Path, work: Path, args: argparse.Namespace) -> list[list[str]]:
    """The commands of one stage, run in order (a failing one ends the stage); records
    go to ``out``, cohorts, runs and packages to ``work / stage``."""
    python = sys.executable
    train = [python, "-m", "Training.cli"]
    predict = [python, "-m", "VirtualBiopsyLib"]
    device = "cpu" if args.smoke else "cuda"
    work = work / stage
    if stage == "cuda-smoke":
        return [
            [*predict, "phantom", "--out", str(work / "cohort"), "--patients", "30",
             "--seed", "5", "--workers", "4"],
            [*train, "train", str(work / "cohort" / "manifest.csv"), "--out",
             str(work / "run"), "--tiny", "--device", device, "--no-progress"],
            [*train, "package", str(work / "run"), "--out", str(work / "package")],
            [*predict, "predict", str(work / "cohort"), "--model", str(work / "package"),
             "--out", str(work / "results"), "--device", device, "--progress", "json"],
        ]  # fmt: skip
    if stage == "bench-training":
        sizes = ["--batch", "2", "--size", "64", "--steps", "1", "--warmup", "0"]
        if not args.smoke:
            sizes = ["--batch", "32", "--size", "256", "--steps", "30", "--warmup", "10"]
        return [
            [python, str(ROOT / "Testing" / "benchmarks" / "bench_training.py"),
             "--device", device, "--models", "resnet18", *sizes,
             "--json", str(out / "bench_training.json")],
        ]  # fmt: skip
    if stage == "paper-size":
        patients = "30" if args.smoke else str(args.patients)
        check_patients = "24" if args.smoke else str(args.check_patients)
        return [
            [*predict, "phantom", "--out", str(work / "cohort"), "--patients", patients,
             "--seed", str(TRAINING_SEED), "--workers", "8"],
            [*train, "train", str(work / "cohort" / "manifest.csv"), "--out",
             str(work / "run"), "--config", str(work / "config.json"), "--no-progress",
             "--workers", str(2 if args.smoke else GPU_WORKERS),
             "--threads", str(1 if args.smoke else GPU_THREADS)],
            [*train, "package", str(work / "run"), "--out", str(work / "package")],
            [*train, "phantom-check", str(work / "package"), "--patients", check_patients,
             "--seed", str(CHECK_SEED), "--baseline", str(demo_package_path()),
             "--out", str(out / "phantom-check")],
        ]  # fmt: skip
    raise ValueError(f"unknown stage {stage!r}")


def run_stage(stage: str, out: Path, work: Path, args: argparse.Namespace, limit_s: float) -> dict:
    """Run one stage's commands within ``limit_s`` seconds; what happened, as a record."""
    if stage == "paper-size":
        (work / stage).mkdir(parents=True, exist_ok=True)
        paper_size_config(args.smoke).save(work / stage / "config.json")
    started = time.monotonic()
    record: dict = {"stage": stage, "status": "done", "commands": []}
    with open(out / f"{stage}.log", "w", encoding="utf-8") as log:
        for command in stage_commands(stage, out, work, args):
            left = limit_s - (time.monotonic() - started)
            step = {"command": " ".join(command[1:]), "seconds": 0.0}
            record["commands"].append(step)
            if left <= 0:
                record["status"] = "out of time"
                break
            log.write(f"$ {step['command']}\n")
            log.flush()
            begun = time.monotonic()
            code = run_within(command, log, left)
            step["seconds"] = round(time.monotonic() - begun, 1)
            step["exit_code"] = code
            if code != 0:
                record["status"] = "out of time" if code is None else "failed"
                break
    record["seconds"] = round(time.monotonic() - started, 1)
    if stage == "paper-size":
        record["jobs"] = job_seconds(work / stage / "run")
    return record


def run_within(command: list[str], log, seconds: float) -> int | None:
    """The command's exit code, or None when it ran out of time; on timeout the whole
    process group goes (``train --workers`` starts processes of its own)."""
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        return process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return None


def job_seconds(run_dir: Path) -> dict[str, dict]:
    """Each training job's state and, once it ended, its seconds (from ``jobs/*.json``):
    what the whole run costs, even when the stage ran out of time."""
    jobs = {}
    for path in sorted((run_dir / "jobs").glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        entry = {"status": record.get("status")}
        if record.get("started") and record.get("status") != "running":
            took = dt.datetime.fromisoformat(record["updated"]) - dt.datetime.fromisoformat(
                record["started"]
            )
            entry["seconds"] = took.total_seconds()
        jobs[path.stem.replace(".", "/")] = entry
    return jobs


def machine() -> dict[str, str]:
    """What ran the stages: Python, torch and the GPU (the figures depend on them)."""
    import platform

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"python": platform.python_version(), "torch": torch.__version__, "gpu": gpu}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="new folder: logs and JSON")
    parser.add_argument(
        "--work", type=Path, help="new folder: cohorts, runs, packages (default: a new temp one)"
    )
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--patients", type=int, default=600, help="paper-size cohort (600)")
    parser.add_argument("--check-patients", type=int, default=300, help="its check (300)")
    parser.add_argument(
        "--limits",
        type=float,
        nargs=3,
        metavar=("SMOKE", "BENCH", "PAPER"),
        help="seconds each stage may take (GPU: 100 80 390, one 600 s device call with "
        "room; guesses until a GPU has run them. --smoke: 400 120 400)",
    )
    parser.add_argument("--smoke", action="store_true", help="CPU, toy sizes: test the script")
    args = parser.parse_args(argv)
    for folder in (args.out, args.work):
        if folder is not None and folder.exists() and any(folder.iterdir()):
            parser.error(f"{folder}: exists and is not empty")
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="virtual-biopsy-gpu-session-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"cohorts, runs and packages in {work}", flush=True)
    default_limits = SMOKE_LIMITS if args.smoke else GPU_LIMITS
    limits = dict(zip(STAGES, args.limits or default_limits, strict=True))
    records = []
    for stage in args.stages:
        records.append(run_stage(stage, args.out, work, args, limits[stage]))
        print(json.dumps(records[-1]), flush=True)
        summary = {"smoke": args.smoke, "machine": machine(), "stages": records}
        write_text_atomic(args.out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return 0 if all(r["status"] == "done" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
