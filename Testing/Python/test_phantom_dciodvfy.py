"""Every kind of DICOM file the phantom writes passes the dciodvfy IOD validator.

dciodvfy comes from Debian's ``dicom3tools`` (CI installs it). Without it the test skips
with a reason on a developer machine and fails in CI (environment variable ``CI`` set).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest

from VirtualBiopsyLib.phantom.cohort import generate_cohort


def _dciodvfy() -> str:
    executable = shutil.which("dciodvfy")
    if executable is None:
        message = "dciodvfy not found: apt-get install dicom3tools"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return executable


def _kind(path: Path) -> tuple[str, ...]:
    """What makes a file a different kind: Image Type, photometric, transfer syntax, phase."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return (
        *ds.ImageType,
        ds.PhotometricInterpretation,
        str(ds.file_meta.TransferSyntaxUID),
        ds.SeriesDescription,
    )


def test_every_kind_of_phantom_dicom_passes_dciodvfy(tmp_path):
    executable = _dciodvfy()
    generate_cohort(tmp_path / "cohort", patients=8, seed=2)
    kinds: dict[tuple[str, ...], Path] = {}
    for path in sorted((tmp_path / "cohort" / "dicom").rglob("*")):
        if path.is_file():
            kinds.setdefault(_kind(path), path)
    assert len(kinds) >= 8  # GE and standard styles, LE/DES/HE, MONOCHROME1, compressed
    errors = []
    for path in kinds.values():
        result = subprocess.run(
            [executable, str(path)], capture_output=True, text=True, timeout=60, check=False
        )
        output = result.stdout + result.stderr
        errors += [f"{path.name}: {line}" for line in output.splitlines() if "Error" in line]
    assert not errors, "\n".join(errors)
