"""A run as independent jobs (``train --job``): plan, dependencies, side-by-side, package.

Toy size (16² images, stand-in reader, see ``toy_training``): a whole 5-fold run takes
seconds, so the jobs-one-by-one run is compared file by file with the whole run.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import multiprocessing
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from toy_training import toy_config, toy_loader, write_cohort

from Training.cli import main
from Training.config import RunConfig
from Training.export import export_package
from Training.jobs import (
    Job,
    JobError,
    id_ranges,
    job_lock,
    job_status,
    plan_jobs,
    select_jobs,
    write_status,
)
from Training.local_jobs import run_jobs_locally
from Training.run import train_run
from VirtualBiopsyLib.atomic_io import exclusive_lock
from VirtualBiopsyLib.errors import EXIT_BAD_INPUT, EXIT_USAGE, OutputExistsError, UsageError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _digests(run: Path) -> dict[str, str]:
    """SHA-256 of every weight, prediction and fold file of a run (not dates or logs)."""
    return {
        str(path.relative_to(run)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(run.rglob("*"))
        if path.is_file()
        and "checkpoint" not in path.parts
        and (path.suffix in (".safetensors", ".csv") or path.name == "fold.json")
    }


def _train_job(manifest: Path, run: Path, job: str, **options) -> Path:
    return train_run(
        manifest, run, toy_config(), progress=False, loader=toy_loader, job=[job], **options
    )


# --- the plan -------------------------------------------------------------------------------


def test_the_paper_run_is_thirty_jobs_and_des_classifiers_need_their_generator() -> None:
    jobs = plan_jobs(RunConfig())
    assert len(jobs) == 30 and [j.id for j in jobs] == list(range(30))
    assert [j.kind for j in jobs].count("generator") == 10
    by_name = {j.name: j for j in jobs}
    assert by_name["fold_3/DES_MLO"].needs == ("fold_3/G_MLO",)
    assert by_name["fold_3/LE_MLO"].needs == ()
    # generators in the first fold only (the demo recipe): 2 + 20 jobs; a later fold's DES
    # classifier needs fold 0's generator (validation rows for its synthetic calibration)
    config = RunConfig()
    one_fold = plan_jobs(replace(config, generator=replace(config.generator, folds=1)))
    assert len(one_fold) == 22
    assert {j.name: j for j in one_fold}["fold_1/DES_CC"].needs == ("fold_0/G_CC",)
    assert {j.name: j for j in one_fold}["fold_1/LE_CC"].needs == ()
    no_generators = plan_jobs(replace(config, train_generators=False))
    assert len(no_generators) == 20 and all(not j.needs for j in no_generators)
    pretrained = plan_jobs(config, pretrain=True)
    assert [j.name for j in pretrained[:2]] == ["pretrain/G_CC", "pretrain/G_MLO"]
    assert {j.name: j for j in pretrained}["fold_2/G_CC"].needs == ("pretrain/G_CC",)


def test_jobs_are_chosen_by_fold_slot_or_id_and_wrong_choices_are_named() -> None:
    jobs = plan_jobs(RunConfig())
    assert [j.name for j in select_jobs(jobs, fold=2)][:3] == [
        "fold_2/G_CC",
        "fold_2/G_MLO",
        "fold_2/LE_CC",
    ]
    assert [j.id for j in select_jobs(jobs, slot="LE_CC")] == [10, 14, 18, 22, 26]
    assert [j.name for j in select_jobs(jobs, job=["12", "fold_4/G_MLO"])] == [
        "fold_4/G_MLO",
        "fold_0/DES_CC",
    ]
    with pytest.raises(UsageError, match="--job 30"):
        select_jobs(jobs, job=["30"])
    with pytest.raises(UsageError, match="--job ²"):  # a digit to str.isdigit, not to int()
        select_jobs(jobs, job=["²"])
    with pytest.raises(UsageError, match="--slot G_XX"):
        select_jobs(jobs, slot="G_XX")
    with pytest.raises(UsageError, match="--fold 5"):
        select_jobs(jobs, fold=5)
    assert id_ranges([j.id for j in jobs if j.kind == "generator"]) == "0-9"


def test_the_jobs_command_prints_slurm_array_ranges(capsys) -> None:
    assert main(["jobs", "--ids", "classifier"]) == 0
    assert capsys.readouterr().out.strip() == "10-29"
    assert main(["jobs", "--tiny", "--pretrain-manifest", "cdd.csv"]) == 0
    table = capsys.readouterr().out
    assert (
        "pretrain/G_CC" in table and " 14  fold_0/DES_CC" in table
    )  # IDs after the 2 pretrain jobs
    assert main(["jobs", "--status"]) == EXIT_USAGE  # whose states? it needs --run
    assert "--status needs --run" in capsys.readouterr().err


# --- running jobs -----------------------------------------------------------------------------


def test_jobs_run_one_by_one_give_the_whole_runs_files(tmp_path: Path) -> None:
    """Same seed, same files: weights, per-fold and pooled predictions, fold.json, metrics."""
    manifest = write_cohort(tmp_path / "cohort", 15, "P")
    whole = train_run(manifest, tmp_path / "whole", toy_config(), progress=False, loader=toy_loader)
    jobs = plan_jobs(toy_config())
    # any order the dependencies allow: LE classifiers first, generators backwards, DES last
    order = [j for j in jobs if j.slot.startswith("LE")]
    order += [j for j in reversed(jobs) if j.kind == "generator"]
    order += [j for j in jobs if j.slot.startswith("DES")]
    parts = tmp_path / "parts"
    train_run(manifest, parts, toy_config(), progress=False, loader=toy_loader, prepare_only=True)
    assert {p.name for p in parts.iterdir()} == {"cache", "config.json", "jobs.json", "splits.json"}
    for job in order:
        _train_job(manifest, parts, str(job.id))
    assert not (parts / "metrics.json").exists()  # not gathered until package
    export_package(parts, tmp_path / "package")
    assert _digests(parts) == _digests(whole) and len(_digests(whole)) > 60
    first = json.loads((whole / "metrics.json").read_text())
    second = json.loads((parts / "metrics.json").read_text())
    assert first["per_fold"] == second["per_fold"] and first["summary"] == second["summary"]
    record = json.loads((parts / "run.json").read_text())
    assert record["status"] == "complete" and record["synthetic_data"] is True
    assert all(job_status(parts, j)["status"] == "complete" for j in jobs)
    status = json.loads((parts / "jobs" / "fold_0.DES_CC.json").read_text())
    assert status["device"] == "cpu" and status["fold_cases"]["test"] > 0


def test_local_workers_give_the_whole_runs_files(tmp_path: Path) -> None:
    """Two spawned workers (demo-model's default on two cores): same files as one process."""
    manifest = write_cohort(tmp_path / "cohort", 15, "P")
    whole = train_run(manifest, tmp_path / "whole", toy_config(), progress=False, loader=toy_loader)
    finished = []
    parts = run_jobs_locally(
        manifest, tmp_path / "parts", toy_config(), 2, loader=toy_loader, on_done=finished.append
    )
    assert _digests(parts) == _digests(whole) and len(_digests(whole)) > 60
    assert sorted(job.id for job in finished) == [job.id for job in plan_jobs(toy_config())]
    done_before = {job.name: index for index, job in enumerate(finished)}
    assert all(done_before[need] < done_before[job.name] for job in finished for need in job.needs)
    first = json.loads((whole / "metrics.json").read_text())
    assert first["summary"] == json.loads((parts / "metrics.json").read_text())["summary"]
    # a run that lost one job (interrupted, or its files removed) is completed with resume:
    # that job alone runs again, and the files are the whole run's once more
    with pytest.raises(OutputExistsError, match="--resume"):
        run_jobs_locally(manifest, parts, toy_config(), 2, loader=toy_loader)
    lost = plan_jobs(toy_config())[17]
    for path in lost.finished_files(parts):
        path.unlink()
    again = []
    run_jobs_locally(
        manifest, parts, toy_config(), 2, loader=toy_loader, on_done=again.append, resume=True
    )
    assert [job.name for job in again] == [lost.name]
    assert _digests(parts) == _digests(whole)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--workers", "0"], "at least 1"),
        (["--workers", "2", "--fold", "0"], "drop --fold"),
        (["--workers", "2", "--job", "fold_0/G_CC"], "drop --job"),
        (["--workers", "2", "--prepare"], "drop --prepare"),
    ],
)
def test_train_workers_refuses_what_it_cannot_combine_with(
    tmp_path: Path, capsys, options: list[str], message: str
) -> None:
    manifest = write_cohort(tmp_path / "cohort", 15, "P")
    code = main(["train", str(manifest), "--out", str(tmp_path / "run"), "--tiny", *options])
    assert code == EXIT_USAGE and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_classifier_started_before_its_generator_fails_naming_it(tmp_path: Path) -> None:
    manifest = write_cohort(tmp_path / "cohort", 15, "P")
    run = tmp_path / "run"
    with pytest.raises(JobError, match=r"fold_1/DES_MLO.*needs job 3 fold_1/G_MLO.*not started"):
        _train_job(manifest, run, "fold_1/DES_MLO")
    assert not (run / "fold_1" / "classifiers").exists()
    _train_job(manifest, run, "fold_1/G_MLO")
    _train_job(manifest, run, "fold_1/DES_MLO")
    assert job_status(run, plan_jobs(toy_config())[17])["status"] == "complete"
    with pytest.raises(OutputExistsError, match="--resume"):
        _train_job(manifest, run, "17")
    _train_job(manifest, run, "17", resume=True)  # finished: skipped, nothing rewritten


def test_package_names_every_missing_job_and_writes_nothing(tmp_path: Path, capsys) -> None:
    manifest = write_cohort(tmp_path / "cohort", 15, "P")
    run = tmp_path / "run"
    jobs = plan_jobs(toy_config())
    for job in jobs:
        if job.id not in (4, 20, 25):  # fold_2/G_CC (so also fold_2/DES_CC), fold_3/DES_MLO
            _train_job(manifest, run, str(job.id))
    code = main(["package", str(run), "--out", str(tmp_path / "package")])
    error = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT
    assert "3 job(s) not finished" in error
    assert "job 4 fold_2/G_CC (generator G_CC (LE → DES, view CC) of fold 2): not started" in error
    assert "job 25 fold_3/DES_MLO (classifier DES_MLO of fold 3)" in error
    assert "IDs 4,20,25" in error
    assert not (tmp_path / "package").exists() and not (run / "metrics.json").exists()


def test_package_gathers_again_after_a_job_is_retrained_and_names_broken_outputs(
    tmp_path: Path, capsys
) -> None:
    manifest = write_cohort(tmp_path / "cohort", 15, "P")
    run = train_run(manifest, tmp_path / "run", toy_config(), progress=False, loader=toy_loader)
    export_package(run, tmp_path / "package")
    refuse = lambda name: pytest.fail(f"{name} in metrics.json")  # noqa: E731 (strict JSON)
    metrics = json.loads((run / "metrics.json").read_text(), parse_constant=refuse)
    assert metrics["protocol"] == toy_config().splits.protocol
    assert set(metrics["pooled_test_cases"].values()) == {metrics["pooled_test_cases"]["C"]}
    # a job trained again after the run was gathered: the next package uses its output
    job = next(j for j in plan_jobs(toy_config()) if j.name == "fold_1/LE_CC")
    path = job.folder(run) / "predictions.csv"
    rows = path.read_text().splitlines()
    header, first = rows[0].split(","), rows[1].split(",")
    changed = dict(zip(header, first, strict=True))
    first[header.index("probability")] = repr(1 - float(changed["probability"]))
    path.write_text("\n".join([rows[0], ",".join(first), *rows[2:]]) + "\n")
    os.utime(path, ns=(os.stat(run / "run.json").st_mtime_ns + 10**9,) * 2)
    export_package(run, tmp_path / "package-2")
    gathered = (run / "fold_1" / "predictions.csv").read_text()
    assert ",".join(first) in gathered and ",".join(rows[1].split(",")) not in gathered
    # ... and one restored from an older copy with its old date (cp -p, rsync -a), or a
    # gathered file removed: gathered again too (run.json records what it gathered)
    path.write_text("\n".join(rows) + "\n")
    os.utime(path, ns=(os.stat(run / "run.json").st_mtime_ns - 10**9,) * 2)
    (run / "fold_3" / "fold.json").unlink()
    export_package(run, tmp_path / "package-2b")
    gathered = (run / "fold_1" / "predictions.csv").read_text()
    assert rows[1] in gathered and ",".join(first) not in gathered
    assert (run / "fold_3" / "fold.json").exists()
    # a finished job whose weights went missing is not finished: listed, exit 3
    weights = job.finished_files(run)[0]
    weights.rename(weights.with_suffix(".moved"))
    code = main(["package", str(run), "--out", str(tmp_path / "package-3")])
    assert code == EXIT_BAD_INPUT and f"job {job.id} fold_1/LE_CC" in capsys.readouterr().err
    weights.with_suffix(".moved").rename(weights)
    # predictions cut short: the file and the job to train again are named, exit 3
    path.write_text(rows[0] + "\n" + rows[1][:5])
    os.utime(path, ns=(os.stat(run / "run.json").st_mtime_ns + 2 * 10**9,) * 2)
    code = main(["package", str(run), "--out", str(tmp_path / "package-4")])
    error = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT and str(path) in error and f"--job {job.id}" in error
    assert not (tmp_path / "package-3").exists() and not (tmp_path / "package-4").exists()


def test_a_job_with_another_configuration_is_refused(tmp_path: Path, capsys) -> None:
    manifest = write_cohort(tmp_path / "cohort", 15, "P")
    run = tmp_path / "run"
    _train_job(manifest, run, "10")
    other = replace(toy_config(), seed=7)
    with pytest.raises(JobError, match="differs from this job's in seed"):
        train_run(manifest, run, other, progress=False, loader=toy_loader, job=["11"])
    elsewhere = replace(toy_config(), device="cpu")  # where a job runs is its own choice
    train_run(manifest, run, elsewhere, progress=False, loader=toy_loader, job=["11"])
    assert RunConfig.load(run / "config.json").device == "auto"
    # --resume (what every Slurm task passes) checks the options the same way
    with pytest.raises(JobError, match="differs from this job's in seed"):
        train_run(manifest, run, other, progress=False, loader=toy_loader, job=["12"], resume=True)
    code = main(
        ["train", str(manifest), "--out", str(run), "--job", "12", "--resume", "--seed", "7"]
    )
    assert code == EXIT_BAD_INPUT and "differs from this job's in seed" in capsys.readouterr().err
    assert not (run / "fold_0" / "classifiers" / "DES_CC").exists()


def test_a_refused_job_writes_nothing(tmp_path: Path) -> None:
    """A wrong job choice is refused before the run's shared files exist, so it cannot
    leave a config.json that the real jobs would then disagree with."""
    manifest = write_cohort(tmp_path / "cohort", 15, "P")
    run = tmp_path / "run"
    with pytest.raises(UsageError, match="99"):
        train_run(
            manifest, run, replace(toy_config(), seed=5), progress=False, loader=toy_loader,
            job=["99"],
        )  # fmt: skip
    assert not run.exists()
    _train_job(manifest, run, "0")
    assert RunConfig.load(run / "config.json") == toy_config()


def test_a_second_copy_of_a_running_job_is_refused(tmp_path: Path) -> None:
    """A requeued task beside the original, or two GPUs given one ID: the copy stops at
    once instead of training into the same folder and checkpoint."""
    manifest = write_cohort(tmp_path / "cohort", 15, "P")
    run = tmp_path / "run"
    _train_job(manifest, run, "10")  # the run exists; job 0 has not started
    job = plan_jobs(toy_config())[0]
    with exclusive_lock(run / "jobs" / "fold_0.G_CC.lock") as held:  # a live copy holds it
        assert held
        with pytest.raises(JobError, match=r"job 0 fold_0/G_CC .*is running already"):
            _train_job(manifest, run, "0")
        assert not job.folder(run).exists()
    _train_job(manifest, run, "0")  # once that copy has ended the job runs
    assert job_status(run, job)["status"] == "complete"
    # a job that said "running" and whose process is gone (killed, node lost) reads as
    # interrupted: nobody holds its lock
    other = plan_jobs(toy_config())[1]
    write_status(run, other, "running")
    with exclusive_lock(run / "jobs" / "fold_0.G_MLO.lock"):
        assert job_status(run, other)["status"] == "running"
    assert job_status(run, other)["status"] == "interrupted"


def test_a_job_starting_while_a_status_probe_holds_its_lock_runs(
    tmp_path: Path, monkeypatch
) -> None:
    """``jobs --status``, ``package`` or another job's progress line asks whether an
    interrupted job still runs by taking its lock for an instant; its --resume copy
    starting in that instant waits for the probe instead of refusing as a second copy."""
    manifest = write_cohort(tmp_path / "cohort", 15, "P")
    run = tmp_path / "run"
    _train_job(manifest, run, "10")
    job = plan_jobs(toy_config())[11]
    write_status(run, job, "running")  # then killed: nobody holds its lock
    sleep = time.sleep
    with contextlib.ExitStack() as probe:
        assert probe.enter_context(exclusive_lock(job.status_file(run).with_suffix(".lock")))

        def probe_ends(seconds: float) -> None:  # the probe lets go while the job waits
            probe.close()
            sleep(seconds)

        monkeypatch.setattr(time, "sleep", probe_ends)
        _train_job(manifest, run, "11", resume=True)
    assert job_status(run, job)["status"] == "complete"


def _dead_pid() -> int:
    """The ID of a process of this host that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def _say_running(run: Path, job: Job, **fields: object) -> None:
    """The status record a process leaves when it is killed while training ``job``."""
    write_status(run, job, "running")
    path = job.status_file(run)
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def test_without_flock_jobs_run_and_a_dead_copy_reads_interrupted(
    tmp_path: Path, monkeypatch, capsys, caplog
) -> None:
    """Lustre without ``-o flock`` and NFS without its lock service answer flock with
    ENOSYS / ENOLCK. A job still runs there (with a warning), the record's host and
    process ID tell a copy killed on this host (interrupted, resumable) from a live one
    (refused), and one that says running on another host is refused, saying how to go on."""

    def no_flock(handle: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_flock)
    manifest = write_cohort(tmp_path / "cohort", 15, "P")
    run = tmp_path / "run"
    jobs = plan_jobs(toy_config())
    with caplog.at_level("WARNING", logger="Training.jobs"):
        _train_job(manifest, run, "fold_0/LE_CC")
    assert job_status(run, jobs[10])["status"] == "complete"
    assert "does not support flock (ENOLCK" in caplog.text and "fold_0/LE_CC" in caplog.text
    # killed on this host: its process is gone, so it is interrupted, and --resume runs it
    _say_running(run, jobs[11], pid=_dead_pid())
    assert job_status(run, jobs[11])["status"] == "interrupted"
    assert main(["jobs", "--run", str(run), "--status"]) == 0
    assert capsys.readouterr().out.splitlines()[12].split()[:3] == [
        "11",
        "fold_0/LE_MLO",
        "interrupted",
    ]
    _train_job(manifest, run, "fold_0/LE_MLO", resume=True)
    assert job_status(run, jobs[11])["status"] == "complete"
    # a live copy on this host (this process stands in for it): refused
    _say_running(run, jobs[14])
    assert job_status(run, jobs[14])["status"] == "running"
    with pytest.raises(JobError, match=rf"job 14 fold_1/LE_CC .*running already.*{os.getpid()}"):
        _train_job(manifest, run, "14", resume=True)
    # running on another host: nobody here can tell; refused, naming the file to remove
    _say_running(run, jobs[15], host="node-7", pid=_dead_pid())
    status = job_status(run, jobs[15])
    assert status["status"] == "running" and "node-7" in status["unverified"]
    assert main(["jobs", "--run", str(run), "--status"]) == 0
    line = capsys.readouterr().out.splitlines()[16]
    assert line.split()[:3] == ["15", "fold_1/LE_MLO", "running"] and "checked on node-7" in line
    with pytest.raises(JobError, match="does not support flock") as refused:
        _train_job(manifest, run, "15", resume=True)
    assert str(jobs[15].status_file(run)) in str(refused.value)
    assert not jobs[14].folder(run).exists() and not jobs[15].folder(run).exists()


def test_without_flock_a_claim_file_refuses_a_copy_started_in_the_same_instant(
    tmp_path: Path, monkeypatch
) -> None:
    """Two copies that start together both find no running record; the claim file, made
    atomically, lets one through. A dead copy's claim on this host is taken over, one from
    another host names the file to remove, and the claim goes when the job ends."""

    def no_flock(handle: int, operation: int) -> None:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(fcntl, "flock", no_flock)
    monkeypatch.setattr("Training.jobs.CLAIM_SETTLE", 0.0)
    run, job = tmp_path / "run", plan_jobs(toy_config())[10]
    claim = job.status_file(run).with_suffix(".claim")
    with job_lock(run, job):  # no status record written yet: the instant of the race
        assert json.loads(claim.read_text())["pid"] == os.getpid()
        with (
            pytest.raises(JobError, match=rf"running already \(on {socket.gethostname()}, process"),
            job_lock(run, job),
        ):
            pass
        assert claim.exists()  # the refused copy leaves the holder's claim alone
    assert not claim.exists()
    claim.write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "token": "x"}))
    with job_lock(run, job):  # a copy killed here: taken over
        assert json.loads(claim.read_text())["token"] != "x"
    assert not claim.exists()
    claim.write_text(json.dumps({"host": "node-7", "pid": 1, "token": "y"}))
    elsewhere = rf"host node-7.*remove {re.escape(str(claim))}"
    with pytest.raises(JobError, match=elsewhere), job_lock(run, job):
        pass
    assert json.loads(claim.read_text())["token"] == "y"


def test_jobs_status_says_each_state_and_why(tmp_path: Path, capsys) -> None:
    """One line per job: finished ones say so; an unfinished one says when and where it
    last ran, and a failed one its error, which otherwise only its status file holds."""
    manifest = write_cohort(tmp_path / "cohort", 15, "P")
    run = train_run(
        manifest, tmp_path / "run", toy_config(), progress=False, loader=toy_loader,
        prepare_only=True,
    )  # fmt: skip
    jobs = plan_jobs(toy_config())
    for path in jobs[0].finished_files(run):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    write_status(run, jobs[1], "skipped", reason="no LE/DES pairs")
    for job in jobs[10:12]:
        write_status(run, job, "running")
    write_status(run, jobs[12], "failed", error="RuntimeError: CUDA out of memory")
    with exclusive_lock(jobs[10].status_file(run).with_suffix(".lock")):  # job 10 runs
        jobs[11].status_file(run).with_suffix(".lock").touch()  # job 11's process is gone
        assert main(["jobs", "--run", str(run), "--status"]) == 0
    lines = {
        line.split()[0]: line.split(None, 2)[2] for line in capsys.readouterr().out.splitlines()
    }
    host = socket.gethostname()
    assert lines["0"] == "complete" and lines["1"] == "skipped" and lines["13"] == "not started"
    assert re.fullmatch(rf"running \(updated \S+ on {re.escape(host)}\)", lines["10"])
    assert re.fullmatch(rf"interrupted \(updated \S+ on {re.escape(host)}\)", lines["11"])
    assert lines["12"].startswith("failed (updated ")
    assert lines["12"].endswith(f"on {host}): RuntimeError: CUDA out of memory")


def _run_in_child(manifest: str, run: str, job: str) -> None:
    torch.set_num_threads(1)
    _train_job(Path(manifest), Path(run), job)


def test_jobs_started_side_by_side_share_one_folder_safely(tmp_path: Path, capsys) -> None:
    """Three processes at once in a new folder: one config, plan and splits; all finish."""
    manifest = write_cohort(tmp_path / "cohort", 15, "P")
    run = tmp_path / "run"
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(target=_run_in_child, args=(str(manifest), str(run), job))
        for job in ("0", "1", "fold_0/LE_CC")
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
    assert [child.exitcode for child in children] == [0, 0, 0]
    jobs = plan_jobs(toy_config())
    assert [job_status(run, j)["status"] for j in jobs[:2]] == ["complete", "complete"]
    assert job_status(run, jobs[10])["status"] == "complete"
    assert RunConfig.load(run / "config.json") == toy_config()
    assert main(["jobs", "--run", str(run), "--status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["0", "fold_0/G_CC", "complete"]
    assert lines[11].split() == ["10", "fold_0/LE_CC", "complete"]
    assert lines[12].split() == ["11", "fold_0/LE_MLO", "not", "started"]
    assert not [p for p in run.rglob(".*") if p.is_file()]  # no temporary file left behind


def test_the_slurm_script_submits_one_array_per_stage_with_dependencies(tmp_path: Path) -> None:
    """docs/slurm/submit_training.sh against a stand-in ``sbatch`` that logs its calls."""
    script = Path(__file__).resolve().parents[2] / "docs" / "slurm" / "submit_training.sh"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "sbatch.log"
    stand_in = bin_dir / "sbatch"
    stand_in.write_text(f'#!/bin/bash\necho "$*" >> {log}\necho $(( $(wc -l < {log}) + 100 ))\n')
    stand_in.chmod(0o755)
    path = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]])
    result = subprocess.run(
        ["bash", str(script), "cohort.csv", "runs/r18", "packages/r18", "--tiny"],
        env={**os.environ, "PATH": path, "PRETRAIN": "cdd.csv"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert len(calls) == 5  # prepare, pretrain, generators, classifiers, package
    assert "--prepare --tiny --pretrain-manifest cdd.csv" in calls[0]
    # a failed stage cancels the stages after it (not pending forever) ...
    stage = "--kill-on-invalid-dep=yes"
    assert calls[1].startswith(f"--parsable --array=0-1 --dependency=afterok:101 {stage} ")
    assert calls[2].startswith(f"--parsable --array=2-11 --dependency=afterok:102 {stage} ")
    assert calls[3].startswith(f"--parsable --array=12-31 --dependency=afterok:103 {stage} ")
    assert calls[3].endswith(
        "train_job.sbatch cohort.csv runs/r18 --tiny --pretrain-manifest cdd.csv"
    )
    # ... and the package step still runs, to list the jobs that are not finished
    assert "--dependency=afterany:104" in calls[4] and "package runs/r18" in calls[4]


@pytest.mark.parametrize(("command", "says_resume"), [("train", True), ("experiments", False)])
def test_an_interrupt_suggests_resume_only_for_train(
    tmp_path: Path, monkeypatch, capsys, command: str, says_resume: bool
) -> None:
    """Ctrl-C ends with 130; only `train` has a `--resume` to suggest."""
    from Training import cli

    def interrupted(args) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, f"run_{command}", interrupted)
    argv = {
        "train": ["train", "m.csv", "--out", str(tmp_path)],
        "experiments": ["experiments", "r", "--out", str(tmp_path)],
    }
    assert main(argv[command]) == 130
    assert ("--resume" in capsys.readouterr().err) is says_resume
