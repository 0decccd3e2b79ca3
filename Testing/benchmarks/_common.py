"""Small helpers shared by the benchmark scripts: timing, peak memory, a figures table.

Each benchmark measures one code path per fresh subprocess (so peak RSS is that path's
own), has the worker print one JSON line, and prints a table in the parent. Scripts in
this folder import it as ``_common`` (their own folder is on ``sys.path``):

>>> from _common import peak_rss_mb, print_table, summarise, time_each
>>> seconds = time_each(lambda n: sum(range(n)), [10_000] * 3)
>>> row = summarise("sum", seconds, peak_rss_mb=peak_rss_mb())
>>> row["count"]
3
>>> print_table([row], [("name", "path", "{}"), ("count", "n", "{:d}")])
| path | n |
|------|---|
|  sum | 3 |
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from typing import Any

Column = tuple[str, str, str]  # (key in the row, header, format string)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    On Linux this is ``VmHWM`` from ``/proc/self/status``: unlike ``getrusage``'s
    ``ru_maxrss``, it starts afresh at ``exec``, so a worker does not inherit the peak of
    the parent that started it. Elsewhere ``ru_maxrss`` is used.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # reported in kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


@contextmanager
def traced_peak_mb() -> Any:
    """Peak Python-heap allocation (tracemalloc) inside the block, in MiB.

    Slower than RSS but independent of the interpreter's baseline; numpy buffers count.

    >>> with traced_peak_mb() as peak:
    ...     block = bytearray(4 * 1024 * 1024)
    >>> peak["mb"] >= 4
    True
    """
    result: dict[str, float] = {}
    tracemalloc.start()
    try:
        yield result
    finally:
        result["mb"] = tracemalloc.get_traced_memory()[1] / (1024 * 1024)
        tracemalloc.stop()


def time_each(work: Callable[[Any], Any], items: Iterable[Any]) -> list[float]:
    """Seconds taken by ``work(item)`` for each item (``time.perf_counter``)."""
    durations = []
    for item in items:
        start = time.perf_counter()
        work(item)
        durations.append(time.perf_counter() - start)
    return durations


def summarise(name: str, durations: Sequence[float], **extra: Any) -> dict[str, Any]:
    """Throughput and per-item figures of a list of durations, plus any extra fields."""
    total = sum(durations)
    row: dict[str, Any] = {
        "name": name,
        "count": len(durations),
        "total_s": total,
        "items_per_s": len(durations) / total if total > 0 else float("inf"),
        "mean_ms": 1000 * total / len(durations) if durations else float("nan"),
        "median_ms": 1000 * statistics.median(durations) if durations else float("nan"),
        "max_ms": 1000 * max(durations) if durations else float("nan"),
    }
    row.update(extra)
    return row


def run_worker(argv: Sequence[str], timeout_s: float = 600) -> dict[str, Any]:
    """Run ``python argv…`` in a fresh process; return the JSON of its last stdout line."""
    completed = subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"benchmark worker {' '.join(argv)} failed ({completed.returncode}):\n"
            f"{completed.stderr[-4000:]}"
        )
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    if not lines:
        raise RuntimeError(f"benchmark worker {' '.join(argv)} printed nothing")
    return json.loads(lines[-1])


def emit(result: dict[str, Any]) -> None:
    """Print a worker's result as the one JSON line :func:`run_worker` reads."""
    print(json.dumps(result), flush=True)


#: The per-case timing columns of the predict and worker benchmarks (rows of :func:`summarise`).
CASE_COLUMNS: tuple[Column, ...] = (
    ("name", "path", "{}"),
    ("count", "cases", "{:d}"),
    ("median_ms", "median ms/case", "{:.0f}"),
    ("max_ms", "max ms", "{:.0f}"),
    ("cpu_s", "CPU s/case", "{:.1f}"),
)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> None:
    """Print rows as an aligned plain-text (Markdown-compatible) table."""
    headers = [header for _, header, _ in columns]
    cells = [
        [fmt.format(row[key]) if key in row else "" for key, _, fmt in columns] for row in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in cells:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) + " |")


def machine_line() -> str:
    """Cores and load, to read timings against: other work on the machine slows them."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"machine: {os.cpu_count()} CPU cores, 1-min load average {load:.1f}; "
        f"Python {platform.python_version()}"
    )


def check_target(label: str, value: float, target: float, higher_is_better: bool) -> bool:
    """Print whether a figure meets its target; return True when it does."""
    met = value >= target if higher_is_better else value < target
    relation = "≥" if higher_is_better else "<"
    print(f"target {label} {relation} {target:g}: {value:.3g} — {'met' if met else 'NOT met'}")
    return met
