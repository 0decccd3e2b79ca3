"""The persistent worker (``virtual-biopsy worker``) in real processes: several requests in
one process with the models loaded once, a bad request failing alone, the same files and
probabilities as a one-shot ``predict``, end of input, parent gone, cancel and restart.

Untrained tiny package and phantom exams: the numbers mean nothing about classification.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from VirtualBiopsyLib.processes import process_alive
from VirtualBiopsyLib.slicer.logic import child_python_path
from VirtualBiopsyLib.slicer.process import (
    JobCancelledError,
    JobState,
    PredictWorker,
    ProcessFailedError,
    SubprocessRunner,
    worker_command,
)

ENV = {"PYTHONPATH": child_python_path()}
SLOTS_SHOWN = ["LE_CC", "LE_MLO", "DES_CC"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    from VirtualBiopsyLib.inference.fixtures import write_slot_folder, write_untrained_package

    root = tmp_path_factory.mktemp("worker")
    return {
        "package": write_untrained_package(root / "package", n_folds=2),
        # two cases of the same shape (so the same networks): LE + DES in CC, LE only in
        # MLO (one DES synthesized)
        "a": write_slot_folder(root / "a", SLOTS_SHOWN, laterality="R"),
        "b": write_slot_folder(
            root / "b", SLOTS_SHOWN, seed=3, patient_id="PHANTOM-0002", laterality="L"
        ),
    }


def start_worker(package: Path) -> PredictWorker:
    return PredictWorker(SubprocessRunner, worker_command(model_dir=package), ENV)


def case_files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def assert_same_numbers(got, expected, where="probabilities"):
    """Every number of ``got`` within 1e-6 of ``expected`` (same keys everywhere)."""
    if isinstance(expected, dict):
        assert sorted(got) == sorted(expected), where
        for key in expected:
            assert_same_numbers(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert len(got) == len(expected), where
        for index, (g, e) in enumerate(zip(got, expected, strict=True)):
            assert_same_numbers(g, e, f"{where}[{index}]")
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, abs=1e-6), where
    else:
        assert got == expected, where


def wait_until_ready(worker: PredictWorker, timeout: float = 120) -> dict:
    """The worker's account from its ready line (polling its output until it comes)."""
    deadline = time.monotonic() + timeout
    while not worker.info and time.monotonic() < deadline:
        worker.poll()
        time.sleep(0.05)
    return worker.info


def test_requests_share_one_process_and_match_one_shot_predict(inputs, tmp_path):
    from VirtualBiopsyLib.models.package import load_package

    package = load_package(inputs["package"])
    every_network = len(package.folds) * len(package.slots) + len(package.generators)
    worker = start_worker(inputs["package"])
    try:
        # started ahead of any request (as the Slicer module does once an exam is
        # assigned): ready only once every network is built
        assert worker.start() and not worker.start()
        assert wait_until_ready(worker)["networks_built"] == every_network == 10
        seen = []
        first = worker.submit([inputs["a"]], tmp_path / "worker", on_progress=seen.append)
        (result_a,) = first.wait(timeout=120)
        built = worker.info["networks_built"]
        assert built == every_network and worker.info["package_loads"] == 1
        assert [p.step for p in seen][-1] == "done" and all(p.request == "r1" for p in seen)
        pid = worker.info["pid"]

        bad = worker.submit([tmp_path / "no-such-exam"], tmp_path / "worker")
        with pytest.raises(ProcessFailedError, match="no such file or folder: .*no-such-exam"):
            bad.wait(timeout=60)
        assert bad.exit_code == 2 and bad.state is JobState.FAILED  # a usage error

        second = worker.submit([inputs["b"]], tmp_path / "worker")
        (result_b,) = second.wait(timeout=120)
        # the same process answered all three, and built no network again
        assert worker.info["pid"] == pid and worker.starts == 1
        assert worker.info["requests"] == 3
        assert worker.info["networks_built"] == built
        assert result_a.parent != result_b.parent
    finally:
        worker.close()
    assert not process_alive(pid)

    one_shot = tmp_path / "predict"
    completed = subprocess.run(
        [sys.executable, "-m", "VirtualBiopsyLib", "predict", str(inputs["a"]), "--out",
         str(one_shot), "--model", str(inputs["package"]), "--progress", "json"],
        capture_output=True, text=True, env={**os.environ, **ENV}, timeout=120, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    expected_folder = one_shot / result_a.parent.name
    assert case_files(result_a.parent) == case_files(expected_folder)
    got = json.loads(result_a.read_text())
    expected = json.loads((expected_folder / "result.json").read_text())
    assert_same_numbers(got["probabilities"], expected["probabilities"])
    assert got["label"] == expected["label"] and got["inputs"] == expected["inputs"]


def test_end_of_input_ends_the_worker_after_the_requests_read(inputs, tmp_path):
    """A script may pipe its requests: each is answered, a bad line fails alone, then exit 0."""
    exam, out = [str(inputs["a"])], str(tmp_path / "out")
    requests = [
        json.dumps({"id": 1, "paths": exam, "out": out}),
        "this is not JSON",
        json.dumps({"id": 3, "paths": exam, "out": out}),  # the same case again
        json.dumps({"id": 4, "paths": exam, "out": out + "-2", "saliency": False}),
    ]
    completed = subprocess.run(
        worker_command(model_dir=inputs["package"]),
        input="\n".join(requests) + "\n",
        capture_output=True,
        text=True,
        env={**os.environ, **ENV},
        timeout=180,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    lines = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    assert lines[0]["step"] == "ready"
    ends = [line for line in lines if line["step"] == "end"]
    assert [(e["request"], e["exit_code"]) for e in ends] == [(1, 0), (None, 2), (3, 5), (4, 2)]
    assert "not JSON" in ends[1]["message"]
    assert "output exists" in ends[2]["message"]  # never replaced without overwrite
    assert "start a worker with that option" in ends[3]["message"]
    assert ends[0]["results"] and ends[0]["status"] == "done" and ends[1]["status"] == "failed"


def test_worker_ends_when_its_parent_ends(inputs):
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    worker = subprocess.Popen(
        worker_command(model_dir=inputs["package"], parent_pid=parent.pid),
        stdin=subprocess.PIPE,  # held open: only the parent's end can stop it
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **ENV},
    )
    try:
        time.sleep(1.0)
        assert worker.poll() is None
        parent.kill()
        parent.wait()
        assert worker.wait(timeout=30) == 130
    finally:
        parent.kill()
        worker.kill()
        worker.wait()


def test_cancel_kills_the_worker_and_the_next_request_starts_a_fresh_one(inputs, tmp_path):
    worker = start_worker(inputs["package"])
    try:
        job = worker.submit([inputs["a"]], tmp_path / "out")
        deadline = time.monotonic() + 120
        while job.step() is JobState.RUNNING and job.last_progress is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        pid = worker.info["pid"]
        job.cancel()
        assert job.state is JobState.CANCELLED and isinstance(job.error, JobCancelledError)
        assert not process_alive(pid) and not worker.running

        again = worker.submit([inputs["a"]], tmp_path / "out", overwrite=True)
        (result,) = again.wait(timeout=120)
        assert worker.starts == 2 and worker.info["pid"] != pid
        assert result.is_file()
    finally:
        worker.close()


def test_a_worker_that_cannot_load_its_package_fails_the_request(tmp_path, inputs):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.json").write_text("{}")
    worker = start_worker(broken)
    job = worker.submit([inputs["a"]], tmp_path / "out")
    with pytest.raises(ProcessFailedError, match="model package") as failure:
        job.wait(timeout=60)
    assert failure.value.returncode == 4 and not worker.running


def test_a_file_name_that_is_not_utf8_comes_back_exact_in_results_and_shown_in_messages(
    inputs, tmp_path
):
    """Linux file names are bytes. Python holds a non-UTF-8 byte as a lone surrogate
    (PEP 383), which Qt and strict JSON readers refuse: messages show U+FFFD instead,
    and ``results`` keep the exact path, so the client opens the files it names."""
    import shutil

    try:
        exam = Path(shutil.copytree(inputs["a"], tmp_path / os.fsdecode(b"caso-\xff")))
    except OSError:  # a file system that stores names as Unicode (macOS)
        pytest.skip("this file system refuses a file name that is not UTF-8")
    out = tmp_path / os.fsdecode(b"out-\xe9")
    worker = start_worker(inputs["package"])
    seen = []
    try:
        (result,) = worker.submit([exam], out, on_progress=seen.append).wait(timeout=120)
        missing = worker.submit([exam / "gone"], out)
        with pytest.raises(ProcessFailedError) as failure:
            missing.wait(timeout=60)
    finally:
        worker.close()
    assert result.is_file() and result.is_relative_to(out)  # the exact bytes, round trip
    messages = [p.message for p in seen] + [str(failure.value)]
    for message in messages:
        message.encode("utf-8")  # strict: raises on a lone surrogate
    assert any("out-\ufffd" in message for message in messages)
    assert "caso-\ufffd" in str(failure.value)
