"""How many CPU cores this process may use: one answer for the job scheduler, the cache
fill and the test workers' thread share. Imports nothing heavy (no torch), so it can be
asked before torch is imported."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """The cores this process may run on: its affinity mask where the OS has one (a
    container or ``taskset`` may allow fewer than the machine has), else the machine's
    count; at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)
