"""CPU threading for inference: OpenMP's idle policy, and side-by-side model passes.

Why: on a shared machine (the project's 2-core CPUs, a workstation running Slicer) the
default OpenMP policy lets idle worker threads spin. With more runnable processes than
cores, a batch-1 ResNet18 forward pass measured here went from 0.065 s to 1.0–1.5 s with
two threads; letting idle threads sleep (``OMP_WAIT_POLICY=PASSIVE``) kept it at 0.065 s
and costs nothing measurable on an idle machine. The variable is read once, when torch's
OpenMP runtime loads, so it only takes effect when set before ``import torch``; a value
the user set is kept.

Side by side: a batch-1 ResNet18 pass at 256² hardly speeds up with a second thread
(64 → 60 ms on 2 cores), so a case's independent passes (two generators, twenty
classifier passes) run on worker threads with one share of the cores each instead:
twenty Grad-CAM passes took 0.74 s on 2 workers × 1 thread against 1.07 s one after the
other on 2 threads, the two generators 0.61 against 0.72 s (measured on the 2-core CI
machine). torch releases the GIL inside its operators, so threads suffice.

Nothing here is process-global state the library sets behind a caller's back: the
command line's entry point calls :func:`configure_cpu_threads` once, before anything
imports torch, and each :class:`ModelWorkers` belongs to one pipeline.

>>> configure_cpu_threads()  # doctest: +SKIP
True
>>> workers = ModelWorkers("cpu")                                  # doctest: +SKIP
>>> futures = [workers.submit(model, image) for model in models]  # doctest: +SKIP
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

MAX_WORKERS = 4  # more side-by-side passes than this only add memory
T = TypeVar("T")


def configure_cpu_threads() -> bool:
    """Ask OpenMP for sleeping idle threads; True when torch was not yet loaded.

    For a process's entry point only (``virtual-biopsy``'s ``main``): the variable is
    read when torch loads, so setting it later would do nothing.
    """
    if "torch" in sys.modules:
        return False
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return True


def worker_split(device_type: str) -> tuple[int, int]:
    """(workers, torch threads per worker) for independent model passes on a device.

    CPU: one worker per core up to :data:`MAX_WORKERS`, the cores shared out among them
    (2 cores: 2 × 1). Other devices: one worker; the device does the parallel work.
    """
    import torch

    total = max(1, torch.get_num_threads())
    if device_type != "cpu":
        return 1, total
    workers = min(MAX_WORKERS, total)
    return workers, max(1, total // workers)


class ModelWorkers:
    """Worker threads for a run's model passes on one device; each worker sets its own
    torch thread count (OpenMP keeps it per thread; the caller's count is untouched).

    Owned by the :class:`~VirtualBiopsyLib.inference.pipeline.Pipeline` that made it and
    shut down with it: warm threads reuse their allocator arenas and oneDNN state case
    after case, and an idle worker costs nothing.
    """

    def __init__(self, device_type: str) -> None:
        import torch

        workers, threads = worker_split(device_type)
        self.workers, self.threads = workers, threads
        self._pool = ThreadPoolExecutor(
            workers,
            thread_name_prefix="virtual-biopsy",
            initializer=torch.set_num_threads,
            initargs=(threads,),
        )

    def submit(self, function: Callable[..., T], /, *args: object) -> Future[T]:
        return self._pool.submit(function, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
