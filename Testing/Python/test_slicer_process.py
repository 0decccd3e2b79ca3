"""The background-process runner: real child processes, JSON progress, errors, cancel."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from VirtualBiopsyLib.slicer import process as process_module
from VirtualBiopsyLib.slicer.process import (
    JobCancelledError,
    JobState,
    PredictJob,
    PredictWorker,
    ProcessFailedError,
    Progress,
    SessionWorker,
    SubprocessRunner,
    parse_progress_line,
    predict_command,
    session_launcher,
    worker_command,
)


def python_job(code: str, on_progress=None, env_updates=None, launcher=None) -> PredictJob:
    args = [sys.executable, "-c", textwrap.dedent(code)]
    runner = SubprocessRunner(launcher) if launcher else SubprocessRunner()
    return PredictJob(runner, args, on_progress, env_updates or {})


def console_process_launcher(args, env_updates):
    """Starts like slicer.util.launchConsoleProcess: same process group, stderr merged."""
    return subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **env_updates},
    )


def test_parse_progress_lines():
    line = json.dumps({"step": "synthesize", "fraction": 0.25, "message": "DES CC"})
    assert parse_progress_line(line) == Progress("synthesize", 0.25, "DES CC")
    done = parse_progress_line(
        json.dumps({"step": "done", "fraction": 1, "message": "ok", "results": ["a/result.json"]})
    )
    assert done.done and done.results == (Path("a/result.json"),)
    assert parse_progress_line('{"step": "x", "fraction": 7}').fraction == 1.0
    for other in (
        "",
        "Traceback (most recent call last):",
        "{not json",
        '{"message": "no step"}',
        '{"step": "x", "fraction": "half"}',
    ):
        assert parse_progress_line(other) is None


def test_job_reports_progress_and_results():
    seen: list[Progress] = []
    job = python_job(
        """
        import json, sys
        for step, fraction in (("read", 0.1), ("classify", 0.6)):
            print(json.dumps({"step": step, "fraction": fraction, "message": step}), flush=True)
        print("a log line on stderr", file=sys.stderr)
        print(json.dumps({"step": "done", "fraction": 1.0, "message": "1 case",
                          "results": ["out/k/result.json"]}))
        """,
        seen.append,
    )
    results = job.wait(timeout=20)
    assert results == (Path("out/k/result.json"),)
    assert [p.step for p in seen] == ["read", "classify", "done"]
    assert [p.fraction for p in seen] == [0.1, 0.6, 1.0]
    assert job.state is JobState.DONE
    assert "a log line on stderr" in job.log_tail


@pytest.mark.parametrize(
    "launcher",
    [None, console_process_launcher],
    ids=["own-process-group", "launchConsoleProcess-style"],
)
def test_failure_reports_stderr_and_exit_code(launcher):
    job = python_job(
        """
        import sys
        print("ERROR LE_CC.nrrd: cannot decode NRRD", file=sys.stderr)
        sys.exit(3)
        """,
        launcher=launcher,
    )
    with pytest.raises(ProcessFailedError, match="exit code 3") as caught:
        job.wait(timeout=20)
    assert caught.value.returncode == 3
    assert "LE_CC.nrrd: cannot decode NRRD" in str(caught.value)
    assert job.state is JobState.FAILED


def test_exit_zero_without_done_line_is_a_failure():
    job = python_job('print("nothing useful")')
    with pytest.raises(ProcessFailedError, match="without results"):
        job.wait(timeout=20)


def test_environment_updates_reach_the_child():
    job = python_job(
        """
        import json, os
        print(json.dumps({"step": "done", "fraction": 1, "message": os.environ["VB_TEST"],
                          "results": []}))
        """,
        env_updates={"VB_TEST": "hello"},
    )
    job.wait(timeout=20)
    assert job.last_progress.message == "hello"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().rsplit(")", 1)[1].split()[0] == "Z")


@pytest.mark.skipif(sys.platform != "linux", reason="reads child PIDs from /proc")
@pytest.mark.parametrize(
    "launcher",
    [None, console_process_launcher],
    ids=["own-process-group", "launchConsoleProcess-style"],
)
def test_cancel_kills_the_process_tree(tmp_path, launcher):
    grandchild_pid = tmp_path / "grandchild.pid"
    job = python_job(
        f"""
        import json, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(grandchild_pid)!r}, "w").write(str(child.pid))
        print(json.dumps({{"step": "started", "fraction": 0.05, "message": "busy"}}), flush=True)
        time.sleep(60)
        """,
        launcher=launcher,
    )
    job.start()
    deadline = time.monotonic() + 20
    while job.last_progress is None and time.monotonic() < deadline:
        job.step()
        time.sleep(0.05)
    assert job.last_progress is not None and job.last_progress.step == "started"
    worker_pid = job.runner.pid
    helper_pid = int(grandchild_pid.read_text())

    job.cancel()

    assert job.state is JobState.CANCELLED
    assert isinstance(job.error, JobCancelledError)
    deadline = time.monotonic() + 5
    while (_alive(worker_pid) or _alive(helper_pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(worker_pid)
    assert not _alive(helper_pid)
    assert job.step() is JobState.CANCELLED


LAUNCHER = """
import subprocess, sys
# like PythonSlicer: a launcher that runs the real interpreter as its child and waits
sys.exit(subprocess.call([sys.executable, "-c", sys.argv[1]]))
"""


def _wait_started(job: PredictJob) -> None:
    deadline = time.monotonic() + 20
    while job.last_progress is None and time.monotonic() < deadline:
        job.step()
        time.sleep(0.05)
    assert job.last_progress is not None and job.last_progress.step == "started"


@pytest.mark.skipif(os.name == "nt", reason="POSIX process groups and ps")
@pytest.mark.parametrize("without_proc", [False, True], ids=["proc", "no-proc (macOS): ps"])
@pytest.mark.parametrize(
    "launcher",
    [session_launcher(dict(os.environ)), console_process_launcher],
    ids=["own session (the module's)", "launchConsoleProcess-style"],
)
def test_cancel_stops_the_real_worker_behind_a_launcher(
    tmp_path, monkeypatch, launcher, without_proc
):
    """launcher → interpreter → helper: cancel leaves none of them running."""
    if without_proc:
        monkeypatch.setattr(process_module, "PROC", tmp_path / "no-proc")
    worker_pid, helper_pid = tmp_path / "worker.pid", tmp_path / "helper.pid"
    worker = textwrap.dedent(
        f"""
        import json, os, subprocess, sys, time
        open({str(worker_pid)!r}, "w").write(str(os.getpid()))
        helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(helper_pid)!r}, "w").write(str(helper.pid))
        print(json.dumps({{"step": "started", "fraction": 0.05, "message": "busy"}}), flush=True)
        time.sleep(60)
        """
    )
    job = PredictJob(SubprocessRunner(launcher), [sys.executable, "-c", LAUNCHER, worker])
    job.start()
    _wait_started(job)
    pids = [job.runner.pid, int(worker_pid.read_text()), int(helper_pid.read_text())]
    assert all(_alive(pid) for pid in pids)

    job.cancel()

    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [pid for pid in pids if _alive(pid)] == []
    assert job.state is JobState.CANCELLED


@pytest.mark.skipif(os.name == "nt", reason="POSIX process groups")
def test_cancel_after_the_launcher_was_killed_stops_the_interpreter_it_left(tmp_path):
    """The launcher (PythonSlicer) killed from outside: its interpreter lives on, reparented,
    in the launcher's group; Cancel must still end it, not report CANCELLED and let it
    finish (and write) the cancelled work."""
    worker_pid = tmp_path / "worker.pid"
    worker = textwrap.dedent(
        f"""
        import json, os, sys, time
        open({str(worker_pid)!r}, "w").write(str(os.getpid()))
        print(json.dumps({{"step": "started", "fraction": 0.05, "message": "busy"}}), flush=True)
        time.sleep(60)
        """
    )
    launcher = session_launcher(dict(os.environ))
    job = PredictJob(SubprocessRunner(launcher), [sys.executable, "-c", LAUNCHER, worker])
    job.start()
    _wait_started(job)
    interpreter = int(worker_pid.read_text())
    os.kill(job.runner.pid, signal.SIGKILL)  # the launcher alone dies
    deadline = time.monotonic() + 5
    while _alive(job.runner.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _alive(interpreter)

    job.cancel()

    deadline = time.monotonic() + 5
    while _alive(interpreter) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(interpreter)
    assert job.state is JobState.CANCELLED


def test_session_launcher_uses_the_given_environment():
    job = PredictJob(
        SubprocessRunner(session_launcher({"PATH": os.environ["PATH"], "VB_BASE": "startup"})),
        [
            sys.executable,
            "-c",
            "import json, os; print(json.dumps({'step': 'done', 'fraction': 1, "
            "'message': os.environ['VB_BASE'] + '/' + os.environ['VB_EXTRA'] + '/' + "
            "str(os.getpgid(0) == os.getpid()), 'results': []}))",
        ],
        env_updates={"VB_EXTRA": "update"},
    )
    job.wait(timeout=20)
    assert job.last_progress.message == "startup/update/True"  # own process group


def test_timeout_cancels():
    job = python_job("import time; time.sleep(30)")
    ticks = iter(range(100))
    with pytest.raises(ProcessFailedError, match="timed out"):
        job.wait(timeout=2, clock=lambda: float(next(ticks)), sleep=lambda s: None)
    assert job.state is JobState.CANCELLED


def test_predict_command_arguments():
    args = predict_command(
        "in",
        "out",
        model_dir="m",
        synthesis=False,
        saliency=False,
        device="cuda",
        python="PythonSlicer",
    )
    assert args == [
        "PythonSlicer",
        "-m",
        "VirtualBiopsyLib",
        "predict",
        "in",
        "--out",
        "out",
        "--progress",
        "json",
        "--device",
        "cuda",
        "--model",
        "m",
        "--no-synthesis",
        "--no-saliency",
    ]
    with pytest.raises(ValueError, match="device"):
        predict_command("in", "out", device="tpu")
    several = predict_command(["a.dcm", "b.dcm", "folder"], "out")
    assert several[4:8] == ["a.dcm", "b.dcm", "folder", "--out"]


# --------------------------------------------------------------------------- the worker

# Speaks the worker protocol (VirtualBiopsyLib.commands.worker) without loading a model:
# ready, then per request a progress line and the terminal "end" line; "crash" kills it.
PROTOCOL_WORKER = textwrap.dedent(
    """
    import json, os, sys
    def say(**record):
        print(json.dumps(record), flush=True)
    say(step="ready", fraction=0.0, message="ready", worker={"pid": os.getpid()})
    served = 0
    for line in sys.stdin:
        served += 1
        request = json.loads(line)
        if request["paths"] == ["crash"]:
            print("the worker died here", file=sys.stderr, flush=True)
            os._exit(7)
        say(step="read", fraction=0.5, message="reading", request=request["id"])
        say(step="end", fraction=1.0, request=request["id"], exit_code=0, message="ok",
            results=[request["out"] + "/case/result.json"],
            worker={"pid": os.getpid(), "requests": served})
        if request["paths"] == ["then-exit"]:  # as if killed while idle
            os._exit(9)
    """
)


def protocol_worker(*extra: str) -> list[str]:
    return [sys.executable, "-c", PROTOCOL_WORKER, *extra]


def test_worker_answers_requests_in_flight_by_their_ids():
    worker = PredictWorker(SubprocessRunner, protocol_worker())
    try:
        seen_a, seen_b = [], []
        a = worker.submit(["exam-a"], "out-a", on_progress=seen_a.append)
        b = worker.submit(["exam-b"], "out-b", on_progress=seen_b.append)
        assert b.wait(timeout=20) == (Path("out-b/case/result.json"),)
        assert a.step() is JobState.DONE and a.results == (Path("out-a/case/result.json"),)
        assert [p.request for p in seen_a] == [a.request] and [p.step for p in seen_b] == ["read"]
        assert worker.info["requests"] == 2 and worker.starts == 1 and not worker.busy
    finally:
        worker.close()


def test_a_worker_that_dies_fails_its_request_and_the_next_starts_afresh():
    worker = PredictWorker(SubprocessRunner, protocol_worker())
    try:
        dead = worker.submit(["crash"], "out")
        with pytest.raises(ProcessFailedError, match="the worker died here") as failure:
            dead.wait(timeout=20)
        assert failure.value.returncode == 7 and not worker.running
        assert worker.submit(["exam"], "out").wait(timeout=20)
        assert worker.starts == 2
    finally:
        worker.close()


def test_requests_waiting_when_the_worker_dies_fail_saying_they_never_started():
    """Another party's requests waiting behind the one that killed the worker fail with
    a message that says so, rather than vanish or claim to have run."""
    worker = PredictWorker(SubprocessRunner, protocol_worker())
    try:
        dead = worker.submit(["crash"], "out")
        waiting = worker.submit(["exam"], "out")
        with pytest.raises(ProcessFailedError, match="before the request did"):
            dead.wait(timeout=20)
        with pytest.raises(ProcessFailedError, match="before the request could start"):
            waiting.wait(timeout=1)
        assert not worker.busy
    finally:
        worker.close()


def test_a_worker_that_ended_while_idle_is_replaced_before_the_next_request():
    worker = PredictWorker(SubprocessRunner, protocol_worker())
    try:
        worker.submit(["then-exit"], "out").wait(timeout=20)
        pid = worker.info["pid"]
        deadline = time.monotonic() + 20
        while _alive(pid):  # it ends after its answer; nobody polls it meanwhile
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert worker.submit(["exam"], "out").wait(timeout=20)
        assert worker.starts == 2 and worker.info["pid"] != pid
    finally:
        worker.close()


def test_a_worker_that_died_with_a_request_in_flight_is_replaced_by_the_next_submit():
    """Nobody polled between the crash and the next Run: the crashed request fails with
    the worker's exit code and the new one goes to a fresh worker, not a closed pipe."""
    worker = PredictWorker(SubprocessRunner, protocol_worker())
    try:
        worker.start()
        pid = worker._runner.pid
        dead = worker.submit(["crash"], "out")
        deadline = time.monotonic() + 20
        while _alive(pid):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert worker.submit(["exam"], "out").wait(timeout=20)
        assert worker.starts == 2
        with pytest.raises(ProcessFailedError, match="the worker died here"):
            dead.wait(timeout=1)
    finally:
        worker.close()


def test_session_worker_is_replaced_when_its_command_changes():
    session = SessionWorker(SubprocessRunner)
    first = session.get(protocol_worker("model-1"), {})
    first.submit(["exam"], "out").wait(timeout=20)
    pid = first.info["pid"]
    assert session.get(protocol_worker("model-1"), {}) is first  # same options: reused
    second = session.get(protocol_worker("model-2"), {})  # another model: a new worker
    assert second is not first and not first.running and not _alive(pid)
    second.submit(["exam"], "out").wait(timeout=20)
    other_pid = second.info["pid"]
    session.close()  # end of input: the worker ends by itself
    assert not second.running and not _alive(other_pid)


def test_worker_command_arguments():
    args = worker_command(model_dir="m", saliency=False, python="PythonSlicer", parent_pid=7)
    assert args[:4] == ["PythonSlicer", "-m", "VirtualBiopsyLib", "worker"]
    assert args[args.index("--parent-pid") + 1] == "7" and "--no-saliency" in args
    assert args[args.index("--model") + 1] == "m"
    assert worker_command()[worker_command().index("--parent-pid") + 1] == str(os.getpid())
    with pytest.raises(ValueError, match="device"):
        worker_command(device="tpu")
