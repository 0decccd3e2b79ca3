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

>>> configure_cpu_threads()  # doctest: +SKIP
True
>>> futures = [model_workers("cpu").submit(model, image) for model in models]  # doctest: +SKIP
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

MAX_WORKERS = 4  # more side-by-side passes than this only add memory
OUTPUT_WRITERS = 1  # beside the caller drawing the report; two writers peaked ~60 MB higher
_POOLS: dict[tuple[object, ...], ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def configure_cpu_threads() -> bool:
    """Ask OpenMP for sleeping idle threads; True when torch was not yet loaded."""
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


def model_workers(device_type: str) -> ThreadPoolExecutor:
    """The process's pool for model passes on ``device_type``; each worker sets its own
    torch thread count (OpenMP keeps it per thread; the caller's count is untouched).

    Made on first use and kept: warm threads reuse their allocator arenas and oneDNN
    state case after case, and an idle worker costs nothing.
    """
    import torch

    workers, threads = worker_split(device_type)
    return _shared_pool(
        ("models", device_type, workers, threads),
        lambda: ThreadPoolExecutor(
            workers,
            thread_name_prefix="virtual-biopsy",
            initializer=torch.set_num_threads,
            initargs=(threads,),
        ),
    )


def output_writers() -> ThreadPoolExecutor:
    """The process's pool for writing a case's image files while the caller draws the
    report (each file holds one full-size map while it is written)."""
    return _shared_pool(
        ("outputs",), lambda: ThreadPoolExecutor(OUTPUT_WRITERS, "virtual-biopsy-out")
    )


def _shared_pool(
    key: tuple[object, ...], make: Callable[[], ThreadPoolExecutor]
) -> ThreadPoolExecutor:
    with _POOLS_LOCK:
        if key not in _POOLS:
            _POOLS[key] = make()
        return _POOLS[key]
