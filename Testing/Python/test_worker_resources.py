"""A long-lived worker over many requests: nothing it opens or makes stays behind.

The persistent worker serves every Run and every review case of a Slicer session, in one
process. Each request opens an output folder (a lock file, a writer thread), reads
images of its own shape and slots, may export DICOM, and may fail anywhere (a missing
path, an unreadable file, an output that exists, a truncated image); none of that may
accumulate. Measured (untrained 2-fold package, small phantom cases, 200 mixed requests
through ``virtual-biopsy worker``): resident memory flat within 2 MB after the first
DICOM export, 3 file descriptors, 6 threads, no child process, nothing left in the
temporary folder or hidden in the output folders.

A leak grows with the number of requests, so the counts here are taken after a warm-up
round (one-time imports and caches), after N more requests and after 2N: none may grow.
The worker runs in this process (:meth:`Worker.handle`, what its input loop calls per
line) so that its file descriptors, threads and live objects can be counted exactly.
Untrained weights: the numbers mean nothing about classification.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest
import torch

from VirtualBiopsyLib.commands.worker import Worker
from VirtualBiopsyLib.errors import ModelPackageError
from VirtualBiopsyLib.inference.fixtures import write_slot_folder, write_untrained_package
from VirtualBiopsyLib.inference.pictures import SlotPicture
from VirtualBiopsyLib.inference.pipeline import Pipeline, PreparedSlot
from VirtualBiopsyLib.inference.result import CaseResult
from VirtualBiopsyLib.inference.runner import gather_cases
from VirtualBiopsyLib.models.package import load_package
from VirtualBiopsyLib.nrrd_io import read_nrrd, write_nrrd

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux's /proc")

# the objects a request makes and must let go (a leak of results, pictures or passes)
TRACKED = (CaseResult, SlotPicture, PreparedSlot, torch.Tensor, Future)
# one round: three cases of different slots and shapes (one with DICOM export), then an
# output that exists (5), a missing path (2), an unreadable file (3), a truncated image
# (3: its case fails after the output folder was opened) and a line that is not JSON (2)
EXPECTED_CODES = [0, 0, 0, 5, 2, 3, 3, 2]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("worker-resources")
    odd = write_slot_folder(root / "odd-shape", ["LE_MLO"], seed=3, patient_id="PHANTOM-0003")
    pixels, grid, _ = read_nrrd(odd / "LE_MLO.nrrd")
    write_nrrd(odd / "LE_MLO.nrrd", np.ascontiguousarray(pixels[:-37, 13:]), grid.spacing)
    truncated = write_slot_folder(root / "truncated", ["LE_CC"], seed=4, patient_id="PHANTOM-0004")
    data = (truncated / "LE_CC.nrrd").read_bytes()
    (truncated / "LE_CC.nrrd").write_bytes(data[: len(data) // 2])
    unreadable = root / "unreadable"
    unreadable.mkdir()
    (unreadable / "image.dcm").write_bytes(b"not a DICOM file")
    return {
        "package": write_untrained_package(root / "package", n_folds=2),
        "le-only": write_slot_folder(root / "le-only", ["LE_CC", "LE_MLO"], seed=1),
        "one-view": write_slot_folder(
            root / "one-view", ["LE_CC", "DES_CC"], seed=2, patient_id="PHANTOM-0002"
        ),
        "odd-shape": odd,
        "truncated": truncated,
        "unreadable": unreadable,
        "missing": root / "nowhere",
    }


def start_worker(package: Path) -> Worker:
    """The worker ``virtual-biopsy worker --model PACKAGE`` starts, answering into a buffer."""
    args = argparse.Namespace(
        model=package,
        device="cpu",
        synthesis=True,
        saliency=True,
        synthesis_precision="float32",
        export_dicom=False,
        overwrite=False,
    )
    return Worker.start(args, io.StringIO())


@pytest.fixture
def temporary_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The process's temporary folder, empty and ours for the test."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.setenv("TMPDIR", str(folder))
    return folder


@pytest.fixture
def worker(inputs: dict[str, Path], temporary_folder: Path) -> Iterator[Worker]:
    worker = start_worker(inputs["package"])
    yield worker
    worker.pipeline.close()


def request(paths: list[Path], out: Path, **fields: object) -> bytes:
    body = {"paths": [str(p) for p in paths], "out": str(out), **fields}
    return json.dumps(body).encode() + b"\n"


def one_round(worker: Worker, inputs: dict[str, Path], out: Path) -> list[int]:
    """The exit codes of one round of requests (see :data:`EXPECTED_CODES`)."""
    lines = [
        request([inputs["le-only"]], out / "le-only", export_dicom=True),
        request([inputs["one-view"]], out / "one-view"),
        request([inputs["odd-shape"]], out / "odd-shape"),
        request([inputs["le-only"]], out / "le-only"),
        request([inputs["missing"]], out / "missing"),
        request([inputs["unreadable"]], out / "unreadable"),
        request([inputs["truncated"]], out / "truncated"),
        b'{"paths": [\n',
    ]
    return [worker.handle(line) for line in lines]


def resources(temporary_folder: Path, outputs: Path) -> Counter[str]:
    """What a leak would grow: open descriptors, threads, live request objects, files."""
    gc.collect()
    counts: Counter[str] = Counter(
        kind.__name__ for kind in map(type, gc.get_objects()) if issubclass(kind, TRACKED)
    )
    counts["file descriptors"] = len(os.listdir("/proc/self/fd"))
    counts["native threads"] = len(os.listdir("/proc/self/task"))
    counts["python threads"] = threading.active_count()
    counts["temporary files"] = sum(1 for _ in temporary_folder.rglob("*"))
    counts["hidden files in outputs"] = sum(1 for _ in outputs.rglob(".*"))
    return counts


def test_requests_leave_no_descriptor_thread_object_or_file_behind(
    worker: Worker, inputs: dict[str, Path], temporary_folder: Path, tmp_path: Path
) -> None:
    outputs = tmp_path / "outputs"
    assert one_round(worker, inputs, outputs / "warm-up") == EXPECTED_CODES
    assert one_round(worker, inputs, outputs / "n") == EXPECTED_CODES
    after_n = resources(temporary_folder, outputs)
    assert one_round(worker, inputs, outputs / "2n") == EXPECTED_CODES
    after_2n = resources(temporary_folder, outputs)
    # ≤, not ==: a thread another test left may end meanwhile; a leak only grows
    grown = {key: (after_n[key], after_2n[key]) for key in after_2n if after_2n[key] > after_n[key]}
    assert grown == {}, f"grew from N to 2N requests: {grown}"
    assert after_2n["temporary files"] == 0
    assert after_2n["hidden files in outputs"] == 0  # no lock file, no partial folder
    assert worker.info()["package_loads"] == 1
    assert worker.requests == 3 * len(EXPECTED_CODES)


def _probabilities(worker: Worker) -> dict:
    """The probabilities of the last request's result.json (from its end line)."""
    assert isinstance(worker.stream, io.StringIO)  # start_worker's buffer
    end = json.loads(worker.stream.getvalue().splitlines()[-1])
    assert end["step"] == "end" and end["exit_code"] == 0, end["message"]
    return json.loads(Path(end["results"][0]).read_text())["probabilities"]


def test_weight_files_changed_on_disk_do_not_reach_a_running_worker(
    inputs: dict[str, Path], temporary_folder: Path, tmp_path: Path
) -> None:
    """The worker keeps the networks it verified and built at start; a network loaded
    later from the changed files (a batch pipeline loads them as cases need them) is
    refused, naming the file."""
    package = shutil.copytree(inputs["package"], tmp_path / "package")
    worker = start_worker(package)
    verified = load_package(package)  # checked now; a batch loads its networks later
    try:
        built = worker.info()["networks_built"]
        worker.handle(request([inputs["le-only"]], tmp_path / "before"))
        before = _probabilities(worker)
        weights = sorted(package.glob("*.safetensors"))
        for path in weights[1:]:  # every file rewritten in place, one byte flipped
            data = bytearray(path.read_bytes())
            data[-5] ^= 0xFF
            path.write_bytes(bytes(data))
        weights[0].unlink()
        worker.handle(request([inputs["le-only"]], tmp_path / "after"))
        assert _probabilities(worker) == before
        assert worker.info()["networks_built"] == built
        [case] = gather_cases([inputs["le-only"]]).cases
        refused = r"CC generator: \S+/generator_LE_to_DES_CC\.safetensors: SHA-256 mismatch"
        with (
            Pipeline(verified, synthesis_precision="float32") as batch,  # synthesis first
            pytest.raises(ModelPackageError, match=refused),
        ):
            batch.run(case)
    finally:
        worker.pipeline.close()
