"""Run a training run's jobs side by side in local processes (one machine, N workers).

The jobs of :mod:`Training.jobs` are independent except that a DES classifier needs its
fold's generator. A scheduler on one machine can therefore keep N single-threaded
processes busy: the long generator jobs start first, every other job starts as soon as a
worker is free and what it needs is finished. Each job is ``train_run(..., job=[name])``,
exactly what ``virtual-biopsy-train train --job`` runs, so the weights are those of a
sequential run (each model has its own seed; see ``test_training_jobs.py``).

Worker processes are *spawned* (not forked): torch's thread pools do not survive a fork.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from Training.config import RunConfig
from Training.cpus import usable_cpus
from Training.jobs import Job, is_finished, plan_jobs


def default_workers() -> int:
    """One worker per CPU core this process may use."""
    return usable_cpus()


def run_jobs_locally(
    manifest: Path,
    out_dir: Path,
    config: RunConfig,
    workers: int,
    *,
    synthetic_data: bool | None = None,
    threads: int = 1,
    on_done: Callable[[Job], None] | None = None,
    loader: Callable[[Path], Any] | None = None,
    resume: bool = False,
    pretrain_manifest: Path | None = None,
    cache_dir: Path | None = None,
) -> Path:
    """Prepare ``out_dir``, train every job in ``workers`` processes, then gather the run.

    ``threads`` is torch's thread count per worker (1 is fastest for small networks and
    leaves the cores to the other workers). A failed job stops the run with its error;
    finished jobs stay, and ``resume`` continues from them (each unfinished job from its
    last checkpoint), as ``train --resume`` does for a run in one process. Without
    ``resume`` the folder must be new or empty. ``loader`` (an image reader, for tests)
    must be importable by the spawned workers.
    """
    from Training.run import finalize_run, require_new_run_folder, train_run  # imports torch

    out_dir = Path(out_dir)
    if not resume:
        require_new_run_folder(out_dir)
    workers = max(1, workers)
    options = {
        "synthetic_data": synthetic_data,
        "loader": loader,
        "progress": False,
        "resume": resume,
        "pretrain_manifest": pretrain_manifest,
        "cache_dir": cache_dir,
    }
    train_run(manifest, out_dir, config, prepare_only=True, **options)
    plan = plan_jobs(config, pretrain_manifest is not None)  # the plan the run claimed
    finished = {job.name for job in plan if is_finished(out_dir, job)}
    pending = [job for job in plan if job.name not in finished]
    running: dict[Future[Path], Job] = {}
    context = get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_set_threads, initargs=(threads,)
    ) as pool:
        while pending or running:
            for job in [job for job in pending if set(job.needs) <= finished]:
                if len(running) >= workers:
                    break
                pending.remove(job)
                future = pool.submit(
                    train_run, manifest, out_dir, config, job=[job.name], **options
                )
                running[future] = job
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                job = running.pop(future)
                future.result()  # re-raises the job's error here
                finished.add(job.name)
                if on_done is not None:
                    on_done(job)
    return finalize_run(out_dir)


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))
