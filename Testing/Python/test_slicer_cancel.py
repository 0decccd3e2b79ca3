"""Cancel, close and option changes with a Run and a case review on the session's one
worker: each stops its own requests only, and removes its own temporary files at once.

Most tests drive an in-process stand-in of the worker (:class:`FakeWorkerProcess`), so
the test decides when each request ends; the partial-output tests run real processes.
"""

from __future__ import annotations

import json
import sys
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from slicer_scene import fresh_scene
from test_slicer_bridge import add_volume, marked_picture, write_result_folder

from VirtualBiopsyLib.slicer.case_review import CaseReview
from VirtualBiopsyLib.slicer.logic import RunOptions, VirtualBiopsyLogic
from VirtualBiopsyLib.slicer.process import JobState, SubprocessRunner

OPTIONS = RunOptions(python=sys.executable)  # Runs and review: one worker command


class FakeWorkerProcess:
    """A worker process in-process: it takes request lines like the real worker and
    answers the oldest one it has not answered when the test calls :meth:`answer`."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []  # request lines written to it, in order
        self.answered = 0
        self.lines: list[str] = []
        self.killed = False
        self.input_closed = False

    def start(self, args: Sequence[str], env_updates: Mapping[str, str] | None = None) -> None:
        self.lines.append(json.dumps({"step": "ready", "fraction": 0.0, "message": "ready"}))

    def send(self, line: str) -> None:
        self.received.append(json.loads(line))

    def read_lines(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines

    def returncode(self) -> int | None:
        if self.killed:
            return -9
        return 0 if self.input_closed else None

    def cancel(self) -> None:
        self.killed = True

    def close_input(self) -> None:
        self.input_closed = True

    def wait(self, timeout: float) -> bool:
        return self.returncode() is not None

    @property
    def unanswered(self) -> int:
        return len(self.received) - self.answered

    def answer(self, case: str = "case-ab12-L") -> dict[str, Any]:
        """End the oldest request not answered yet with one result folder, ``case``."""
        request = self.received[self.answered]
        self.answered += 1
        result = write_result_folder(Path(request["out"]) / case)
        end = {"step": "end", "fraction": 1.0, "request": request["id"], "exit_code": 0}
        self.lines.append(json.dumps({**end, "message": "ok", "results": [str(result)]}))
        return request


@pytest.fixture
def scene():
    with fresh_scene(slice_views=True) as scene:
        add_volume(marked_picture(), "P1_L_DM_CC")  # the Run's exam
        yield scene


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """Two phantom exams (two patients, LE only): two review cases."""
    from VirtualBiopsyLib.inference.fixtures import write_slot_folder

    folder = tmp_path_factory.mktemp("study")
    for patient, study_uid in (("P-A", "1.2.826.0.1.3680043.8.498.1"), ("P-B", "1.2.3.4")):
        slots = ["LE_CC", "LE_MLO"]
        write_slot_folder(folder / patient, slots, patient_id=patient, study_uid=study_uid)
    return folder


@pytest.fixture
def processes() -> list[FakeWorkerProcess]:
    """Every worker process started, in order."""
    return []


@pytest.fixture
def logic(scene, processes, tmp_path):
    def start_process() -> FakeWorkerProcess:
        processes.append(FakeWorkerProcess())
        return processes[-1]

    logic = VirtualBiopsyLogic(scene, runner_factory=start_process, work_root=tmp_path / "work")
    yield logic
    logic.close()


@pytest.fixture
def review(scene, logic, study, tmp_path) -> CaseReview:
    """The panel's review: on the logic's worker (as ``newReview`` makes it)."""
    review = CaseReview(scene, workers=logic.workers, work_root=tmp_path / "work")
    assert len(review.find_in_folder(study)) == 2
    return review


def start_run(logic: VirtualBiopsyLogic, options: RunOptions = OPTIONS):
    return logic.start(logic.assign_slots().slots, options)


def answer_review(review: CaseReview, process: FakeWorkerProcess) -> list[str]:
    """Answer the review's cases one at a time as a worker does; their statuses."""
    for case in review.cases:
        review.step()  # the next request reaches the worker
        assert process.received[process.answered]["out"] == str(review.work_dir / "results")
        process.answer(case.key)
    assert review.step() is JobState.DONE
    return [case.status for case in review.cases]


# --------------------------------------------------------------------------- one worker


def test_cancelling_the_review_leaves_the_run_running_to_its_result(logic, review, processes):
    handle = start_run(logic)  # the Run's request runs on the worker
    review.start(OPTIONS)  # the review's wait behind it
    review.cancel()
    assert [case.status for case in review.cases] == ["cancelled", "cancelled"]
    (process,) = processes
    assert not process.killed
    process.answer()
    handle.job.wait(timeout=10)
    assert logic.finish(handle)[0].nodes.table is not None
    assert len(process.received) == 1  # no request of the cancelled review reached it
    assert not handle.work_dir.exists()


def test_cancelling_the_review_that_runs_sends_the_waiting_run_to_a_fresh_worker(
    logic, review, processes
):
    review.start(OPTIONS)
    handle = start_run(logic)
    review.cancel()  # its case 1 runs: only killing the worker stops it
    assert processes[0].killed
    assert [case.status for case in review.cases] == ["cancelled", "cancelled"]
    assert handle.job.step() is JobState.RUNNING and len(processes) == 2
    assert processes[1].answer()["out"] == str(handle.out_dir)
    handle.job.wait(timeout=10)
    assert logic.finish(handle)[0].nodes.table is not None


def test_cancelling_a_run_that_waits_leaves_the_review_running(logic, review, processes):
    review.start(OPTIONS)  # case 1 runs, case 2 waits
    handle = start_run(logic)  # waits behind them
    logic.cancel(handle)
    assert handle.job.state is JobState.CANCELLED and not handle.work_dir.exists()
    (process,) = processes
    assert not process.killed
    assert answer_review(review, process) == ["done", "done"]
    assert all(request["out"] != str(handle.out_dir) for request in process.received)


def test_cancelling_the_run_that_runs_sends_the_waiting_review_to_a_fresh_worker(
    logic, review, processes
):
    handle = start_run(logic)
    review.start(OPTIONS)
    logic.cancel(handle)  # the Run runs: only killing the worker stops it
    assert processes[0].killed and not handle.work_dir.exists()
    assert review.step() is JobState.RUNNING
    assert len(processes) == 2  # the review's requests went to a fresh worker
    assert answer_review(review, processes[1]) == ["done", "done"]


def test_a_case_that_ended_as_the_review_was_cancelled_keeps_its_result(logic, review, processes):
    review.start(OPTIONS)
    (process,) = processes
    process.answer(review.cases[0].key)  # its answer has arrived; nobody polled yet
    review.cancel()
    assert [case.status for case in review.cases] == ["done", "cancelled"]
    assert review.cases[0].result_json.is_file()
    assert not process.killed  # nothing of the review was running any more


def test_a_run_on_other_model_options_leaves_the_review_running(logic, review, processes):
    review.start(OPTIONS)
    handle = start_run(logic, replace(OPTIONS, saliency=False))  # another worker
    assert len(processes) == 2 and not processes[0].killed
    processes[1].answer()
    handle.job.wait(timeout=10)
    assert logic.finish(handle)[0].nodes.table is not None
    assert answer_review(review, processes[0]) == ["done", "done"]
    assert processes[0].returncode() is not None  # the replaced worker ended once idle
    assert not review.cases[0].job.worker.running


def test_clearing_a_running_review_stops_its_requests(logic, review, processes):
    """A new review or a closed scene clears the review: none of its requests may run
    later (delaying the next Run and writing into its removed folder)."""
    review.start(OPTIONS)
    jobs, work_dir = [case.job for case in review.cases], review.work_dir
    review.clear_results()
    assert not work_dir.exists()
    assert all(job.state is JobState.CANCELLED for job in jobs)
    handle = start_run(logic)
    for _ in range(5):
        if handle.job.step() is not JobState.RUNNING:
            break
        if processes[-1].unanswered:
            processes[-1].answer()
    assert handle.job.state is JobState.DONE
    assert not work_dir.exists()
    logic.finish(handle)


def test_closing_the_logic_stops_its_runs_and_removes_their_folders(logic, processes):
    on_worker = start_run(logic)
    one_shot = start_run(logic, replace(OPTIONS, worker=False))
    logic.close()  # Slicer quits
    assert on_worker.job.state is one_shot.job.state is JobState.CANCELLED
    assert all(process.killed for process in processes)
    assert not on_worker.work_dir.exists() and not one_shot.work_dir.exists()


# --------------------------------------------------------------------------- partial outputs

# Stands in for ``predict`` (or, with "worker" among its arguments, for the worker and
# its first request): publishes one finished case, half-writes another, then runs on.
HALF_WRITING = textwrap.dedent(
    """
    import json, sys, time
    from VirtualBiopsyLib.atomic_io import StagingArea
    def say(**record):
        print(json.dumps(record), flush=True)
    tag = {}
    if "worker" in sys.argv:
        say(step="ready", fraction=0.0, message="ready")
        request = json.loads(sys.stdin.readline())
        out, tag = request["out"], {"request": request["id"]}
    else:
        out = sys.argv[sys.argv.index("--out") + 1]
    area = StagingArea(out).open()
    area.publish(area.stage("case-finished"), "case-finished")
    (area.stage("case-half") / "result.json").write_text("{")
    say(step="classify", fraction=0.5, message="half-way", **tag)
    time.sleep(300)
    """
)


class HalfWritingRunner(SubprocessRunner):
    """Runs :data:`HALF_WRITING` with the arguments the review gives its process."""

    def start(self, args: Sequence[str], env_updates: Mapping[str, str] | None = None) -> None:
        super().start([sys.executable, "-c", HALF_WRITING, *args[1:]], env_updates)


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize("worker", [False, True], ids=["one-shot", "worker"])
def test_a_cancelled_review_removes_what_its_process_half_wrote(scene, study, tmp_path, worker):
    review = CaseReview(scene, runner_factory=HalfWritingRunner, work_root=tmp_path / "work")
    review.find_in_folder(study)
    job = review.start(replace(OPTIONS, worker=worker))
    results = review.work_dir / "results"
    try:
        running = review.cases[0].job if worker else job

        def half_written() -> bool:
            review.step()
            return running.last_progress is not None

        wait_until(half_written)
        review.cancel()
        assert sorted(path.name for path in results.iterdir()) == ["case-finished"]
    finally:
        review.clear_results()
        review.workers.close()


class NoPython(SubprocessRunner):
    """A process that cannot start (no ``PythonSlicer`` where it was looked for)."""

    def start(self, args: Sequence[str], env_updates: Mapping[str, str] | None = None) -> None:
        raise FileNotFoundError(args[0])


@pytest.mark.parametrize("worker", [False, True], ids=["one-shot", "worker"])
def test_a_review_that_cannot_start_leaves_no_folder(scene, study, tmp_path, worker):
    review = CaseReview(scene, runner_factory=NoPython, work_root=tmp_path / "work")
    review.find_in_folder(study)
    with pytest.raises(FileNotFoundError):
        review.start(replace(OPTIONS, worker=worker))
    assert list((tmp_path / "work").iterdir()) == []
    assert {case.status for case in review.cases} == {"not run"}
