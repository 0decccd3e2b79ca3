"""The output layer: result.json follows its schema; the output folder is checked before
any model work; two runs never replace each other's finished cases; a run killed with
``kill -9`` leaves a partial folder that the next plain run clears and completes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import jsonschema
import pytest

from VirtualBiopsyLib.atomic_io import LOCK_PREFIX, StagingArea
from VirtualBiopsyLib.cli import main
from VirtualBiopsyLib.errors import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_OUTPUT_EXISTS,
    OutputExistsError,
    ResultFileError,
)
from VirtualBiopsyLib.inference.fixtures import write_slot_folder, write_untrained_package
from VirtualBiopsyLib.inference.output import OutputFolder, write_case
from VirtualBiopsyLib.inference.pipeline import Pipeline
from VirtualBiopsyLib.inference.result import (
    RESULT_FILE,
    CaseResult,
    read_result_json,
    result_schema,
)
from VirtualBiopsyLib.inference.runner import gather_cases
from VirtualBiopsyLib.models.package import load_package

SLOTS_OF_EXAM = ["LE_CC", "LE_MLO", "DES_MLO"]


@pytest.fixture(scope="module")
def shared_root() -> Path:
    """World-readable (0755) so a child process without root rights can read it too."""
    root = Path(tempfile.mkdtemp(prefix="vb-output-test-"))
    root.chmod(0o755)
    yield root
    for folder in root.rglob("*"):  # read-only test folders must be writable to go
        if folder.is_dir():
            folder.chmod(0o755)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def package_dir(shared_root: Path) -> Path:
    return write_untrained_package(shared_root / "tiny", n_folds=2)


@pytest.fixture(scope="module")
def inputs(shared_root: Path) -> Path:
    """Two breasts of two patients, each a Slicer hand-over folder, under one folder."""
    folder = shared_root / "inputs"
    write_slot_folder(folder / "a", SLOTS_OF_EXAM, patient_id="PHANTOM-A", seed=1)
    write_slot_folder(folder / "b", SLOTS_OF_EXAM, patient_id="PHANTOM-B", seed=2)
    return folder


@pytest.fixture(scope="module")
def keys(inputs: Path) -> tuple[str, str]:
    by_patient = {case.patient_id: case.key for case in gather_cases([inputs]).cases}
    return by_patient["PHANTOM-A"], by_patient["PHANTOM-B"]


@pytest.fixture(scope="module")
def result(package_dir: Path, inputs: Path) -> CaseResult:
    [case] = gather_cases([inputs / "a"]).cases
    with Pipeline(load_package(package_dir), synthesis_precision="float32") as pipeline:
        return pipeline.run(case)


def predict(inputs: Path, package_dir: Path, out: Path, *extra: str) -> int:
    return main(["predict", str(inputs), "--model", str(package_dir), "--out", str(out), *extra])


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --- result.json and its schema ---------------------------------------------------------


def test_result_json_validates_against_its_schema(result, tmp_path):
    folder = write_case(result, tmp_path, export_dicom=True)
    data = json.loads((folder / RESULT_FILE).read_text())
    schema = result_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(data)  # raises on any violation
    assert set(data) == set(schema["properties"])  # the writer writes every property
    assert read_result_json(folder) == data
    assert CaseResult.from_dict(data).to_dict() == data  # the record round-trips
    for name in data["outputs"].values():
        assert (folder / name).is_file()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d.update(label="maybe"), "label"),
        (lambda d: d["probabilities"]["fused"].update(mean=1.5), "probabilities/fused/mean"),
        (lambda d: d["inputs"].update(LE_XX=d["inputs"]["LE_CC"]), "inputs"),
        (lambda d: d.pop("notice"), "lacks notice"),
    ],
)
def test_a_result_json_off_its_schema_is_refused_with_the_file_named(
    result, tmp_path, change, reason
):
    data = result.to_dict()
    change(data)
    path = tmp_path / RESULT_FILE
    path.write_text(json.dumps(data))
    with pytest.raises(ResultFileError, match=reason) as caught:
        read_result_json(path)
    assert str(path) in str(caught.value)


# --- the output folder is checked before any model work --------------------------------


def test_out_that_is_an_existing_file_is_refused_before_the_model(inputs, tmp_path, capsys):
    out = tmp_path / "results.txt"
    out.write_text("the user's notes")
    # a model package that does not exist: had the model been loaded first, this were 4
    assert predict(inputs, tmp_path / "no-package", out) == EXIT_OUTPUT_EXISTS
    assert str(out) in capsys.readouterr().err
    assert out.read_text() == "the user's notes"


def test_out_below_a_file_is_refused_before_the_model(inputs, tmp_path, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    assert predict(inputs, tmp_path / "no-package", blocker / "out") == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert str(blocker) in err and "is a file" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits (see the next test)")
def test_read_only_out_is_refused_before_the_model(inputs, tmp_path, capsys):
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o555)
    out = read_only / "out"
    try:
        assert predict(inputs, tmp_path / "no-package", out) == EXIT_BAD_INPUT
    finally:
        read_only.chmod(0o755)
    err = capsys.readouterr().err
    assert str(read_only) in err and "not writable" in err
    assert not out.exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_out_where_nothing_can_be_made_is_refused_before_the_model(inputs, tmp_path, capsys):
    """Where permission bits say yes but writing fails (here /proc, even for root), the
    run's first write (its lock file) is the check."""
    out = Path("/proc") / f"virtual-biopsy-{os.getpid()}"
    assert predict(inputs, tmp_path / "no-package", out) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "cannot write here" in err and "/proc" in err


def test_a_failed_run_leaves_no_empty_output_folder(tmp_path, package_dir):
    empty = tmp_path / "nothing-usable"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    assert predict(empty, package_dir, tmp_path / "out") == EXIT_BAD_INPUT
    assert not (tmp_path / "out").exists()


# --- two runs at once -------------------------------------------------------------------


def test_a_case_finished_meanwhile_by_another_run_is_not_replaced(result, tmp_path, monkeypatch):
    first, second = OutputFolder(tmp_path).open(), OutputFolder(tmp_path).open()
    write_contents = OutputFolder._write_contents

    def meanwhile_the_other_run_finishes(self, *args, **kwargs):
        write_contents(self, *args, **kwargs)
        if self is second:  # after second's check, before its rename
            first.write_case(result, report=False)

    monkeypatch.setattr(OutputFolder, "_write_contents", meanwhile_the_other_run_finishes)
    try:
        with pytest.raises(OutputExistsError, match="another run"):
            second.write_case(result, report=False)
        folder = tmp_path / result.key
        before = (folder / RESULT_FILE).read_bytes()
        with pytest.raises(OutputExistsError, match="use --overwrite"):
            second.write_case(result, report=False)  # and later ones see it at once
        assert (folder / RESULT_FILE).read_bytes() == before
    finally:
        first.close()
        second.close()
    assert hidden(tmp_path) == []  # both runs gone: no lock, no partial folder


def test_two_runs_into_one_folder_at_once(inputs, package_dir, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "VirtualBiopsyLib", "predict", str(inputs / "a")]
    command += ["--model", str(package_dir), "--out", str(out), "--progress", "json"]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    runs.append(
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    )
    outcomes = [(run.wait(timeout=300), *run.communicate()) for run in runs]
    codes = sorted(code for code, _, _ in outcomes)
    assert codes == [EXIT_OK, EXIT_OUTPUT_EXISTS], outcomes
    loser = next(err for code, _, err in outcomes if code == EXIT_OUTPUT_EXISTS)
    assert "exists" in loser or "another run" in loser
    [folder] = [p for p in out.iterdir() if not p.name.startswith(".")]
    read_result_json(folder)  # the winner's result, whole
    assert hidden(out) == []


# --- kill -9 and the rerun ---------------------------------------------------------------

_DIE_WHILE_WRITING = """
import os, signal, sys
from pathlib import Path
from VirtualBiopsyLib.atomic_io import StagingArea
area = StagingArea(Path(sys.argv[1])).open()
partial = area.stage(sys.argv[2])
(partial / "result.json").write_text("half a result")
if sys.argv[3] == "die":
    os.kill(os.getpid(), signal.SIGKILL)
print(partial, flush=True)
sys.stdin.read()  # a live run: holds its claim until told to stop
"""


def test_rerun_after_kill_9_clears_stale_partial_folders_and_finishes_missing_cases(
    inputs, package_dir, keys, tmp_path, capsys
):
    out = tmp_path / "out"
    key_a, key_b = keys
    assert predict(inputs / "a", package_dir, out) == EXIT_OK  # case A finished
    created_a = json.loads((out / key_a / RESULT_FILE).read_text())["created"]
    # a run that is still alive, with a partial folder of its own
    live = subprocess.Popen(
        [sys.executable, "-c", _DIE_WHILE_WRITING, str(out), key_b, "live"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        live_partial = Path(live.stdout.readline().strip())
        assert live_partial.is_dir()
        # a run killed by kill -9 while it wrote case B
        killed = subprocess.run(
            [sys.executable, "-c", _DIE_WHILE_WRITING, str(out), key_b, "die"], timeout=120
        )
        assert killed.returncode == -signal.SIGKILL
        stale = [
            name for name in hidden(out) if name.endswith(".partial") and name != live_partial.name
        ]
        assert len(stale) == 1 and stale[0].startswith(f".{key_b}.")
        assert sum(name.startswith(LOCK_PREFIX) for name in hidden(out)) == 2
        capsys.readouterr()
        assert predict(inputs, package_dir, out) == EXIT_OK  # a plain rerun, no --overwrite
        err = capsys.readouterr().err
        assert f"{key_a}: kept the finished result" in err and f"removed {stale[0]}" in err
        assert json.loads((out / key_a / RESULT_FILE).read_text())["created"] == created_a
        read_result_json(out / key_b)  # the missing case, finished
        assert not (out / stale[0]).exists()
        assert live_partial.is_dir()  # never touched: its run is alive
    finally:
        live.stdin.close()
        live.wait(timeout=60)
    # with every case finished a plain run refuses, but first clears what the ended run left
    assert predict(inputs, package_dir, out) == EXIT_OUTPUT_EXISTS
    assert hidden(out) == []
    assert sorted(p.name for p in out.iterdir()) == sorted(keys)


def test_staging_area_never_clears_a_live_runs_folder(tmp_path):
    with StagingArea(tmp_path) as first:
        partial = first.stage("case-x")
        with StagingArea(tmp_path) as second:
            assert second.cleared == []
            assert partial.is_dir()
        assert partial.is_dir()
    assert hidden(tmp_path) == []  # a run takes its own partial folders and lock with it


def test_predict_writes_where_the_file_system_has_no_flock(
    inputs, package_dir, tmp_path, monkeypatch
):
    """Lustre without ``-o flock`` and NFS without its lock service answer flock with
    ENOLCK / ENOSYS. ``predict --out`` there still writes every case; with no lock to
    tell a live run from a dead one, another run's partial folder is kept, not removed."""
    import errno
    import fcntl

    def no_flock(handle: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    out = tmp_path / "out"
    out.mkdir()
    other = out / ".case-x.0123456789abcdef.1.partial"  # another run's, maybe still filling
    other.mkdir()
    (out / f"{LOCK_PREFIX}0123456789abcdef.lock").write_text("1\n")
    monkeypatch.setattr(fcntl, "flock", no_flock)
    assert predict(inputs, package_dir, out) == 0
    assert len(list(out.glob("case-*/result.json"))) == 2
    assert other.is_dir()


# --- a batch goes on past a case's trouble -----------------------------------------------


def test_a_synthetic_image_given_as_input_is_used_and_not_written_again(
    inputs, package_dir, tmp_path
):
    exam = write_slot_folder(tmp_path / "le-only", ["LE_CC", "LE_MLO"], patient_id="PHANTOM-C")
    assert predict(exam, package_dir, tmp_path / "first") == EXIT_OK
    [earlier] = (tmp_path / "first").glob("*/synthetic_DES_CC.nrrd")
    given = exam / "synthetic_DES_CC.nrrd"
    shutil.copy(earlier, given)
    out = tmp_path / "out"
    [case] = gather_cases([exam]).cases
    # with a good exam beside it in the same run, and the DICOM export on
    command = ["predict", str(exam), str(inputs / "b"), "--model", str(package_dir)]
    assert main([*command, "--out", str(out), "--export-dicom"]) == EXIT_OK
    assert len(list(out.iterdir())) == 2  # both cases written
    folder = out / case.key
    data = read_result_json(folder)
    assert data["inputs"]["DES_CC"] == {
        "source": "synthetic",
        "path": str(given),
        "generated_from": None,
    }
    assert data["inputs"]["DES_MLO"]["generated_from"] == "LE_MLO"  # ours: written
    assert "synthetic_DES_CC" not in data["outputs"]
    assert "synthetic_DES_CC_dicom" not in data["outputs"]
    assert {"synthetic_DES_MLO", "synthetic_DES_MLO_dicom"} <= set(data["outputs"])
    assert not (folder / "synthetic_DES_CC.nrrd").exists()
    assert not (folder / "synthetic_DES_CC.dcm").exists()


def test_a_case_that_cannot_be_written_fails_alone_and_leaves_no_partial_folder(
    inputs, package_dir, keys, tmp_path, monkeypatch, capsys
):
    import VirtualBiopsyLib.inference.output as output_layer

    key_a, key_b = keys
    write_picture = output_layer.write_picture

    def broken_for_case_a(picture, path, *args, **kwargs):
        if path.parent.name.startswith(f".{key_a}."):
            raise RuntimeError("a bug in a writer")
        return write_picture(picture, path, *args, **kwargs)

    monkeypatch.setattr(output_layer, "write_picture", broken_for_case_a)
    out = tmp_path / "out"
    capsys.readouterr()
    assert predict(inputs, package_dir, out, "--progress", "json") == EXIT_BAD_INPUT
    stdout = capsys.readouterr().out
    lines = [json.loads(line) for line in stdout.splitlines()]
    [error] = [line["message"] for line in lines if line["step"] == "error"]
    assert key_a in error and "RuntimeError: a bug in a writer" in error
    assert "PHANTOM-A" not in stdout  # the case key, never the patient ID
    assert lines[-1]["step"] == "done"
    read_result_json(out / key_b)  # the other case, written
    assert sorted(p.name for p in out.iterdir()) == [key_b]  # no partial folder, no lock


def test_out_inside_the_input_folder_is_not_read_back_on_a_rerun(package_dir, tmp_path, capsys):
    exam = write_slot_folder(tmp_path / "exam", ["LE_CC", "LE_MLO"], patient_id="PHANTOM-D")
    out = exam / "results"
    assert predict(exam, package_dir, out) == EXIT_OK
    [case] = list(out.iterdir())
    assert (case / "synthetic_DES_CC.nrrd").is_file()
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert predict(exam, package_dir, out) == EXIT_OUTPUT_EXISTS  # every case finished
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    gathered = gather_cases([exam], exclude=out)
    assert [c.key for c in gathered.cases] == [case.name]
    assert any(line.startswith(f"{out}: this run's output folder") for line in gathered.skipped)
