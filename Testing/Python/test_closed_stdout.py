"""A command whose stdout reader stops early (``… | head``) ends quietly with 141, as a
shell reports a SIGPIPE, not with an internal error and a second one at exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "VirtualBiopsyLib" / "Resources" / "DemoModel"


@pytest.mark.parametrize(
    "command",
    [["Training.cli", "jobs"], ["VirtualBiopsyLib", "inspect", str(DEMO)]],
    ids=["virtual-biopsy-train jobs", "virtual-biopsy inspect"],
)
def test_a_reader_that_stops_early_is_no_error(command: list[str]) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", *command],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.close()  # gone before the first line is written
    error = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141, error
    assert "internal error" not in error and "Exception ignored" not in error, error
