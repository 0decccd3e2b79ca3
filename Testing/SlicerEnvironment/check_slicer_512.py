"""CI check: the Slicer module's packages against the Python packages Slicer 5.12 ships.

1. A second virtual environment (``.venv-slicer512/``, git-ignored) gets Slicer 5.12's
   bundled packages at their versions (``Testing/Data/slicer-5.12-bundled-python.txt``)
   and torch/torchvision as the PyTorch extension would install them.
2. ``pip install --dry-run --report`` of the module's requirement set (the ``slicer``
   extra less torch, exactly what the module asks pip for), constrained by the bundled
   file plus the installed torch, must change none of those packages.
3. The set is installed that way and the library's inference tests run in that
   environment (Python here is 3.11; Slicer 5.12's is 3.12.10: close enough for pure
   Python and binary wheels of the same releases, but not identical).

Run from the repository root with any Python 3.11+:
``python3 Testing/SlicerEnvironment/check_slicer_512.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPOSITORY))

from VirtualBiopsyLib.slicer.dependencies import (  # noqa: E402 (after the path set-up)
    module_requirements,
    read_constraints,
    replaced_by_report,
)

ENVIRONMENT = REPOSITORY / ".venv-slicer512"
BUNDLED = REPOSITORY / "Testing" / "Data" / "slicer-5.12-bundled-python.txt"
#: The torch build the PyTorch extension would pick on a CPU machine (pinned as in
#: constraints.txt: an unpinned torch pulls a multi-GB CUDA build).
TORCH_PINS = ("torch==2.13.0", "torchvision==0.28.0")
#: The library's inference tests (no training, no slicer-core, no MONAI or scikit-learn).
INFERENCE_TESTS = (
    "test_cases.py",
    "test_dicom_reader.py",
    "test_dicom_export.py",
    "test_fusion.py",
    "test_preprocessing.py",
    "test_raster_nrrd_readers.py",
    "test_nrrd_io.py",
    "test_model_package.py",
    "test_saliency.py",
    "test_pipeline.py",
    "test_predict_cli.py",
    "test_demo.py",
)
FORBIDDEN = ("monai", "scikit-learn")


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    print("+", " ".join(args), flush=True)
    return subprocess.run(args, check=True, **kwargs)


def main() -> int:
    started = time.monotonic()
    python = ENVIRONMENT / "bin" / "python"
    # always fresh: a dry-run into an environment that already holds the set proves nothing
    venv.EnvBuilder(with_pip=True, clear=True).create(ENVIRONMENT)
    pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
    run(*pip, "install", "-q", "-r", str(BUNDLED), *TORCH_PINS)

    requirements = module_requirements(REPOSITORY / "pyproject.toml")
    with tempfile.TemporaryDirectory() as folder:
        constraints = Path(folder) / "constraints.txt"
        constraints.write_text(BUNDLED.read_text() + "\n".join(TORCH_PINS) + "\n")
        protected = read_constraints(constraints)
        report_path = Path(folder) / "report.json"
        run(
            *pip,
            "install",
            "-q",
            "--dry-run",
            "--report",
            str(report_path),
            "-c",
            str(constraints),
            *requirements,
        )
        report = json.loads(report_path.read_text())
        would_install = sorted(
            f"{item['metadata']['name']}=={item['metadata']['version']}"
            for item in report.get("install", [])
        )
        print(f"pip dry-run would add {len(would_install)}: {', '.join(would_install)}")
        changed = replaced_by_report(report, protected)
        if changed:
            print("FAIL: the Slicer requirement set replaces Slicer's packages:", *changed)
            return 1
        bad = [n for n in FORBIDDEN if any(i.lower().startswith(n + "==") for i in would_install)]
        if bad:
            print(f"FAIL: the Slicer requirement set pulls training packages: {bad}")
            return 1
        print(f"OK: none of the {len(protected)} bundled/torch packages is changed")
        # pytest and jsonschema come from the test extra; Slicer ships neither.
        test_tools = ("pytest>=8", "jsonschema>=4")
        run(*pip, "install", "-q", "-c", str(constraints), *requirements, *test_tools)

    versions = subprocess.run(
        [str(python), "-m", "pip", "list", "--format", "json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    installed = {p["name"].lower(): p["version"] for p in json.loads(versions)}
    for name, version in read_constraints(BUNDLED).items():
        if name in installed and installed[name] != version:
            print(f"FAIL: {name} is {installed[name]}, Slicer 5.12 ships {version}")
            return 1
    tests = [str(REPOSITORY / "Testing" / "Python" / name) for name in INFERENCE_TESTS]
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    code = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=REPOSITORY,
        env=env,
        check=False,
    ).returncode
    print(f"Slicer 5.12 environment check: {time.monotonic() - started:.0f} s, pytest exit {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())
