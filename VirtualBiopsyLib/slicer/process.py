"""Run the predict command in a separate process and follow its JSON progress lines.

Slicer's GUI must stay alive while a case runs for minutes, so the module starts
``PythonSlicer -m VirtualBiopsyLib predict … --progress json`` in the background, reads
its output through reader threads and a queue, polls it from a timer, and can cancel it
(the whole process tree). :class:`ProcessRunner` describes the process so tests and the
console can pass their own; :class:`SubprocessRunner` is the real one (it works outside
Slicer too); :class:`PredictJob` turns the lines into progress and results.

A session keeps one ``worker`` process instead (:class:`PredictWorker`, held by a
:class:`SessionWorker`): started on the first Run, sent one request per Run or review
case (:class:`WorkerJob`, the same interface as a :class:`PredictJob`), so the models
load once per session. Requests wait on this side and go to the worker one at a time, so
that cancelling one stops only that one: a waiting request is dropped; the one running
is stopped by killing the process tree (a case cannot be stopped half-way), and the
requests still waiting (a Run's, a review's) go to a fresh worker. Closing the session
(or Slicer) closes its input, which ends it.

>>> import sys
>>> job = PredictJob(SubprocessRunner(), [sys.executable, "-c",
...     "print('{\\"step\\": \\"done\\", \\"fraction\\": 1.0, \\"message\\": \\"ok\\", "
...     "\\"results\\": [\\"r.json\\"]}')"])
>>> [path.name for path in job.wait()]
['r.json']
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import IO, Any, Protocol

from VirtualBiopsyLib.errors import EXIT_INTERNAL, VirtualBiopsyError

log = logging.getLogger(__name__)
LOG_TAIL_LINES = 40
END_STEP = "end"  # VirtualBiopsyLib.commands.worker's terminal line of a request
READY_STEP = "ready"


class ProcessFailedError(VirtualBiopsyError):
    """The predict process ended with an error; carries its exit code and output tail."""

    def __init__(self, returncode: int | None, output_tail: str, reason: str = "") -> None:
        self.returncode = returncode
        self.output_tail = output_tail
        what = reason or f"the predict process failed with exit code {returncode}"
        super().__init__(f"{what}\n{output_tail}".rstrip())


class JobCancelledError(VirtualBiopsyError):
    """The user cancelled the run; the process tree was killed."""


@dataclass(frozen=True)
class Progress:
    """One progress line of the predict command."""

    step: str
    fraction: float
    message: str
    results: tuple[Path, ...] = ()
    request: str | None = None  # the worker request a line belongs to
    exit_code: int | None = None

    @property
    def done(self) -> bool:
        return self.step == "done"

    @property
    def end(self) -> bool:
        """A worker's terminal line of a request."""
        return self.step == END_STEP


def parse_progress_line(line: str) -> Progress | None:
    """A ``{"step", "fraction", "message"}`` line → :class:`Progress`; other lines → None.

    >>> parse_progress_line('{"step": "classify", "fraction": 0.5, "message": "LE_CC"}')
    Progress(step='classify', fraction=0.5, message='LE_CC', results=(), request=None, \
exit_code=None)
    >>> parse_progress_line("WARNING something") is None
    True
    """
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(record, dict) or "step" not in record or "fraction" not in record:
        return None
    try:
        fraction = min(1.0, max(0.0, float(record["fraction"])))
    except (TypeError, ValueError):
        return None
    results = tuple(Path(str(p)) for p in record.get("results") or ())
    request = record.get("request")
    code = record.get("exit_code")
    return Progress(
        str(record["step"]),
        fraction,
        str(record.get("message", "")),
        results,
        None if request is None else str(request),
        code if isinstance(code, int) and not isinstance(code, bool) else None,
    )


class ProcessRunner(Protocol):
    """A background process whose output lines can be polled without blocking."""

    def start(self, args: Sequence[str], env_updates: Mapping[str, str] | None = None) -> None:
        """Start ``args``; ``env_updates`` are added to the environment."""

    def read_lines(self) -> list[str]:
        """Output lines (stdout, then stderr as they come) received since the last call."""

    def returncode(self) -> int | None:
        """Exit code once the process and its output are finished, else ``None``."""

    def cancel(self) -> None:
        """Kill the process and everything it started."""


class WorkerRunner(ProcessRunner, Protocol):
    """A :class:`ProcessRunner` whose standard input takes request lines."""

    def send(self, line: str) -> None:
        """Write one line to the process's standard input."""

    def close_input(self) -> None:
        """Close the process's standard input (a worker ends at end of input)."""

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the process to end; True when it has."""


Launcher = Callable[[Sequence[str], Mapping[str, str]], subprocess.Popen]


def default_launcher(
    args: Sequence[str],
    env_updates: Mapping[str, str],
    base_environment: Mapping[str, str] | None = None,
) -> subprocess.Popen:
    """Popen in its own session / process group, so cancel can kill the whole tree.

    Standard input is a pipe only this process writes to: a worker reads its requests
    there, and sees end of input when this process closes it or ends (Slicer quits).

    ``PythonSlicer`` is a launcher that starts the real interpreter as its child; killing
    the launcher alone would leave that child running. Slicer's own
    ``slicer.util.launchConsoleProcess`` starts processes in Slicer's group
    (Base/Python/slicer/util.py, v5.12.3 lines 4118-4138), so the module uses this
    launcher with ``base_environment=slicer.util.startupEnvironment()`` instead.
    """
    env = {**(os.environ if base_environment is None else base_environment), **env_updates}
    options: dict[str, Any] = {}
    if os.name == "nt":
        options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
    else:
        options["start_new_session"] = True
    return subprocess.Popen(
        list(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
        env=env,
        **options,
    )


def session_launcher(base_environment: Mapping[str, str] | None = None) -> Launcher:
    """A :data:`Launcher` starting processes in their own session from ``base_environment``."""

    def launch(args: Sequence[str], env_updates: Mapping[str, str]) -> subprocess.Popen:
        return default_launcher(args, env_updates, base_environment)

    return launch


PROC = Path("/proc")


def _parents_from_proc() -> dict[int, list[int]] | None:
    """parent PID → child PIDs from Linux /proc; None where there is no /proc (macOS)."""
    if not PROC.is_dir():
        return None
    parents: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(parent, []).append(int(entry.name))
    return parents


def _parents_from_ps() -> dict[int, list[int]]:
    """parent PID → child PIDs from ``ps`` (POSIX; macOS has no /proc)."""
    try:
        listing = subprocess.run(
            ["ps", "-A", "-o", "pid=", "-o", "ppid="],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    parents: dict[int, list[int]] = {}
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
            parents.setdefault(int(fields[1]), []).append(int(fields[0]))
    return parents


def _children_of(pid: int) -> list[int]:
    """Descendants of ``pid``: psutil when present, else Linux /proc, else ``ps``."""
    try:
        import psutil

        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except ImportError:
        pass
    except Exception:  # the process is already gone
        return []
    parents = _parents_from_proc()
    if parents is None:
        parents = _parents_from_ps()
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_process_tree(process: subprocess.Popen, own_group: bool | None = None) -> None:
    """Kill a process and its descendants, whichever way it was started.

    ``own_group``: whether the process was started as the leader of its own process group
    (:func:`leads_own_group`, recorded at start; asked now when None). The group is then
    killed even when the process itself has ended: a launcher (``PythonSlicer``) killed
    from outside leaves the interpreter it started running in that group, reparented,
    where no child list finds it.
    """
    alive = process.poll() is None
    if os.name == "nt":
        if alive:
            subprocess.run(
                ["taskkill", "/T", "/F", "/PID", str(process.pid)],
                capture_output=True,
                check=False,
            )
        return
    descendants = _children_of(process.pid) if alive else []
    if leads_own_group(process) if own_group is None else own_group:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    if not alive:
        return
    for pid in [process.pid, *descendants]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait(timeout=10)


def leads_own_group(process: subprocess.Popen) -> bool:
    """Whether a process just started leads its own process group (POSIX; read while it
    lives: once it has ended and been reaped its group can no longer be asked)."""
    if os.name == "nt":
        return False
    try:
        return os.getpgid(process.pid) == process.pid
    except ProcessLookupError:
        return False


class SubprocessRunner:
    """:class:`ProcessRunner` over ``subprocess.Popen`` with one reader thread per pipe.

    ``launcher`` makes the Popen: by default a new process group; inside Slicer the
    module passes one built on ``slicer.util.launchConsoleProcess`` (stderr merged).
    """

    def __init__(self, launcher: Launcher = default_launcher) -> None:
        self._launcher = launcher
        self._process: subprocess.Popen | None = None
        self._own_group = False
        self._lines: queue.Queue[str] = queue.Queue()
        self._readers: list[threading.Thread] = []

    def start(self, args: Sequence[str], env_updates: Mapping[str, str] | None = None) -> None:
        if self._process is not None:
            raise RuntimeError("this runner already started a process")
        self._process = self._launcher(list(args), dict(env_updates or {}))
        self._own_group = leads_own_group(self._process)
        for stream in (self._process.stdout, self._process.stderr):
            if stream is None:
                continue
            reader = threading.Thread(target=self._read, args=(stream,), daemon=True)
            reader.start()
            self._readers.append(reader)

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line.rstrip("\r\n"))
        stream.close()

    def read_lines(self) -> list[str]:
        lines = []
        while True:
            try:
                lines.append(self._lines.get_nowait())
            except queue.Empty:
                return lines

    def returncode(self) -> int | None:
        if self._process is None or self._process.poll() is None:
            return None
        if any(reader.is_alive() for reader in self._readers):
            return None  # output still arriving
        return self._process.returncode

    def cancel(self) -> None:
        if self._process is not None:
            kill_process_tree(self._process, self._own_group)

    def send(self, line: str) -> None:
        """One line to the process's stdin; a process that has gone is noticed by polling."""
        stdin = self._process.stdin if self._process is not None else None
        if stdin is None:
            raise RuntimeError("this process has no standard input to write to")
        try:
            stdin.write(line.rstrip("\n") + "\n")
            stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            log.warning("the worker process's input is closed; it has ended")

    def close_input(self) -> None:
        if self._process is not None and self._process.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                self._process.stdin.close()

    def wait(self, timeout: float) -> bool:
        if self._process is None:
            return True
        try:
            self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None


class JobState(str, Enum):
    NOT_STARTED = "not started"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass
class PredictJob:
    """One run of the predict command: start, then :meth:`step` from a timer or :meth:`wait`.

    ``on_progress`` is called with each :class:`Progress`; other output lines are kept
    (the last :data:`LOG_TAIL_LINES`) for the error message.
    """

    runner: ProcessRunner
    args: Sequence[str]
    on_progress: Callable[[Progress], None] | None = None
    env_updates: Mapping[str, str] = field(default_factory=dict)
    state: JobState = JobState.NOT_STARTED
    results: tuple[Path, ...] = ()
    error: VirtualBiopsyError | None = None
    last_progress: Progress | None = None
    log_tail: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_TAIL_LINES))

    def start(self) -> None:
        self.runner.start(self.args, self.env_updates)
        self.state = JobState.RUNNING

    def step(self) -> JobState:
        """Handle new output; return the state. Call it every few hundred milliseconds."""
        if self.state is JobState.NOT_STARTED:
            self.start()
        if self.state is not JobState.RUNNING:
            return self.state
        for line in self.runner.read_lines():
            self._handle(line)
        code = self.runner.returncode()
        if code is not None:
            for line in self.runner.read_lines():
                self._handle(line)
            self._finish(code)
        return self.state

    def _handle(self, line: str) -> None:
        progress = parse_progress_line(line)
        if progress is None:
            if line.strip():
                self.log_tail.append(line)
            return
        self.last_progress = progress
        if progress.step == "error":
            self.log_tail.append(progress.message)
        if progress.done:
            self.results = progress.results
        if self.on_progress is not None:
            self.on_progress(progress)

    def _finish(self, code: int) -> None:
        tail = "\n".join(self.log_tail)
        failure = _failure(code, tail, self.results, "the predict process")
        if failure is not None:
            self.error = failure
            self.state = JobState.FAILED
        elif code != 0:  # some cases failed, others were written
            self.state = JobState.DONE
        elif self.last_progress is None or not self.last_progress.done:
            self.error = ProcessFailedError(code, tail, "the predict process ended without results")
            self.state = JobState.FAILED
        else:
            self.state = JobState.DONE

    def cancel(self) -> None:
        """Kill the process unless it has already ended: a run that finished just as
        Cancel was pressed keeps its results."""
        if self.state is not JobState.RUNNING:
            return
        self.step()
        if self.state is JobState.RUNNING:
            self.runner.cancel()
            self.state = JobState.CANCELLED
            self.error = JobCancelledError("cancelled by the user; the process was stopped")

    def wait(
        self,
        timeout: float | None = None,
        poll_interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> tuple[Path, ...]:
        """Block until the run ends (console use); raise its error, or cancel on timeout."""
        return wait_for(self, timeout, poll_interval, clock, sleep)


def wait_for(
    job: PredictJob | WorkerJob,
    timeout: float | None = None,
    poll_interval: float = 0.1,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[Path, ...]:
    """Step ``job`` until it ends; raise its error (cancelling it on timeout)."""
    started = clock()
    while job.step() is JobState.RUNNING:
        if timeout is not None and clock() - started > timeout:
            job.cancel()
            tail = "\n".join(job.log_tail)
            job.error = ProcessFailedError(None, tail, f"timed out after {timeout} s")
            break
        sleep(poll_interval)
    if job.error is not None:
        raise job.error
    return job.results


def _failure(
    code: int, tail: str, results: tuple[Path, ...], what: str
) -> ProcessFailedError | None:
    """The error of a run that ended with ``code`` (None: it counts as done).

    A non-zero code with results is a run where some cases failed and others were
    written: done, with the failures in its output.
    """
    if code != 0 and results:
        return None
    if code != 0:
        return ProcessFailedError(code, tail, f"{what} failed with exit code {code}")
    return None


@dataclass
class WorkerJob:
    """One request to a :class:`PredictWorker`: the interface of a :class:`PredictJob`.

    :meth:`step` reads the worker's new output (for every request in flight) and returns
    this request's state; :meth:`cancel` stops this request only
    (:meth:`PredictWorker.cancel`).
    """

    worker: PredictWorker
    request: str
    on_progress: Callable[[Progress], None] | None = None
    state: JobState = JobState.RUNNING
    results: tuple[Path, ...] = ()
    error: VirtualBiopsyError | None = None
    last_progress: Progress | None = None
    exit_code: int | None = None
    errors: list[str] = field(default_factory=list)  # the request's error messages
    log_tail: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_TAIL_LINES))

    def step(self) -> JobState:
        """Handle new output; return the state. Call it every few hundred milliseconds."""
        if self.state is JobState.RUNNING:
            self.worker.poll()
        return self.state

    def _handle(self, progress: Progress) -> None:
        self.last_progress = progress
        if progress.step == "error":
            self.errors.append(progress.message)
            self.log_tail.append(progress.message)
        if progress.done or progress.end:
            self.results = progress.results or self.results
        if progress.end:
            self._finish(progress.exit_code if progress.exit_code is not None else 1)
        if self.on_progress is not None and not progress.end:
            self.on_progress(progress)

    def _finish(self, code: int) -> None:
        self.exit_code = code
        self.error = _failure(code, "\n".join(self.log_tail), self.results, "the request")
        self.state = JobState.FAILED if self.error is not None else JobState.DONE

    def _worker_ended(self, code: int | None, tail: str, when: str = "the request did") -> None:
        self.exit_code = code
        lines = "\n".join([*self.log_tail, tail]).strip()
        self.error = ProcessFailedError(
            code, lines, f"the worker process ended (exit code {code}) before {when}"
        )
        self.state = JobState.FAILED

    def _cancelled(self, how: str = "the worker process was stopped") -> None:
        self.state = JobState.CANCELLED
        self.error = JobCancelledError(f"cancelled by the user; {how}")

    def cancel(self) -> None:
        if self.state is JobState.RUNNING:
            self.worker.cancel(self)

    def wait(
        self,
        timeout: float | None = None,
        poll_interval: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> tuple[Path, ...]:
        """Block until the request ends (console use); raise its error, or cancel on timeout."""
        return wait_for(self, timeout, poll_interval, clock, sleep)


class PredictWorker:
    """The ``virtual-biopsy worker`` process of a session: started on the first request,
    kept for the next ones, started afresh after it ended (cancel, crash).

    Requests are answered in the order they were submitted. Only one at a time is written
    to the worker (the one it runs); the others wait here, so that cancelling one never
    stops another (:meth:`cancel`). Each answer line names its request.

    >>> import sys
    >>> worker = PredictWorker(SubprocessRunner, worker_command(python=sys.executable))
    >>> job = worker.submit(["exam/"], "results/")  # doctest: +SKIP
    >>> job.wait()                                  # doctest: +SKIP
    (PosixPath('results/case-3f2a9c01b7-L/result.json'),)
    >>> worker.close()
    """

    def __init__(
        self,
        runner_factory: Callable[[], ProcessRunner],
        args: Sequence[str],
        env_updates: Mapping[str, str] | None = None,
    ) -> None:
        self.runner_factory = runner_factory
        self.args = list(args)
        self.env_updates = dict(env_updates or {})
        self.starts = 0  # processes started: more than 1 after a cancel or a crash
        self.info: dict[str, Any] = {}  # the worker's own account (pid, networks_built, …)
        self.log_tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        self._runner: WorkerRunner | None = None
        self._sent: dict[str, WorkerJob] = {}  # written to the worker, not answered yet
        self._waiting: dict[str, tuple[WorkerJob, str]] = {}  # request line not yet sent
        self._ids = itertools.count(1)
        self._retiring = False

    @property
    def running(self) -> bool:
        """Whether a worker process is started (and not known to have ended)."""
        return self._runner is not None

    @property
    def busy(self) -> bool:
        """Whether requests are running or waiting."""
        return bool(self._sent or self._waiting)

    def _start(self) -> WorkerRunner:
        runner = self.runner_factory()
        if not all(hasattr(runner, name) for name in ("send", "close_input", "wait")):
            raise TypeError(f"{type(runner).__name__} cannot take requests (no send())")
        runner.start(self.args, self.env_updates)
        self.log_tail.clear()
        self.info = {}
        self.starts += 1
        self._runner = runner  # type: ignore[assignment]
        return self._runner

    def start(self) -> bool:
        """Start the worker process now unless one is running; True when one was started.

        A session calls it ahead of its first request (an exam was assigned), so that the
        package is loaded and the networks are built by the time the user clicks Run.
        """
        if self._runner is not None:
            self._notice_an_end(self._runner)
        if self._runner is not None:
            return False
        self._start()
        return True

    def submit(
        self,
        paths: Sequence[Path | str],
        out: Path | str,
        *,
        overwrite: bool = False,
        export_dicom: bool = False,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> WorkerJob:
        """Queue one predict request (starting the worker if needed); returns at once.
        It is written to the worker as soon as the requests before it have ended."""
        if not paths:
            raise ValueError("a request needs at least one input file or folder")
        self.start()  # a worker that ended is noticed before this request waits for it
        request_id = f"r{next(self._ids)}"
        job = WorkerJob(self, request_id, on_progress)
        request = {
            "id": request_id,
            "paths": [str(p) for p in paths],
            "out": str(out),
            "overwrite": overwrite,
            "export_dicom": export_dicom,
        }
        self._waiting[request_id] = (job, json.dumps(request))
        self._send_next()
        return job

    def _send_next(self) -> None:
        """Write the oldest waiting request once none runs (starting a worker if needed)."""
        if self._sent or not self._waiting:
            return
        runner = self._runner or self._start()
        request_id = next(iter(self._waiting))
        job, line = self._waiting.pop(request_id)
        self._sent[request_id] = job
        runner.send(line)

    def _notice_an_end(self, runner: WorkerRunner, settle: float = 1.0) -> None:
        """Forget a worker that has ended (killed, out of memory, crashed), idle or with
        requests in flight (those fail with its exit code), so that the next request goes
        to a fresh one rather than to a closed pipe, even before anyone polled."""
        if not runner.wait(0):
            return
        deadline = time.monotonic() + settle  # its last output lines, then its exit code
        while runner.returncode() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        self._read()
        if self._runner is runner:  # its output had not all arrived: end it all the same
            code = runner.returncode()
            self._ended(EXIT_INTERNAL if code is None else code)
        self._runner = None

    def poll(self) -> None:
        """Hand the worker's new output to the requests it belongs to; send the next
        waiting request once the running one has ended."""
        self._read()
        self._send_next()
        if self._retiring and not self.busy:
            self.close(grace=0.0)  # idle: nothing of anyone's is lost

    def _read(self) -> None:
        """Hand the worker's new output to its requests; notice that it ended."""
        runner = self._runner
        if runner is None:
            return
        for line in runner.read_lines():
            self._handle(line)
        code = runner.returncode()
        if code is not None:
            for line in runner.read_lines():
                self._handle(line)
            self._ended(code)

    def _handle(self, line: str) -> None:
        progress = parse_progress_line(line)
        if progress is not None and progress.step == READY_STEP:
            self.info = _worker_info(line)
            return
        job = self._job_for(progress.request if progress is not None else None)
        if progress is None or job is None:
            if line.strip():
                (job.log_tail if job is not None else self.log_tail).append(line)
            return
        job._handle(progress)
        if progress.end:
            self.info = _worker_info(line) or self.info
            self._sent.pop(job.request, None)

    def _job_for(self, request: str | None) -> WorkerJob | None:
        """The request a line belongs to; untagged lines go to the one running."""
        if request is not None and request in self._sent:
            return self._sent[request]
        if request is None and self._sent:
            return next(iter(self._sent.values()))
        return None

    def _ended(self, code: int) -> None:
        """The worker ended by itself (crash, out of memory, killed from outside): its
        requests fail with its exit code, those waiting too (a start-up failure would
        repeat for each of them)."""
        tail = "\n".join(self.log_tail)
        for job in self._sent.values():
            job._worker_ended(code, tail)
        for job, _line in self._waiting.values():
            job._worker_ended(code, tail, "the request could start")
        self._forget_jobs()
        self._runner = None

    def _jobs(self) -> list[WorkerJob]:
        return [*self._sent.values(), *(job for job, _line in self._waiting.values())]

    def _forget_jobs(self) -> None:
        self._sent.clear()
        self._waiting.clear()

    def cancel(self, job: WorkerJob) -> None:
        """Stop one request and no other: a waiting one is dropped; the running one is
        stopped by killing the process tree (it cannot stop half a case), and the
        requests still waiting go to a fresh worker at the next :meth:`poll`. A request
        whose answer has already arrived is settled, not cancelled."""
        self._read()
        if job.state is not JobState.RUNNING:
            return
        if self._waiting.pop(job.request, None) is not None:
            job._cancelled("it had not started")
        elif self._sent.pop(job.request, None) is not None:
            self._stop_process()
            job._cancelled()

    def _stop_process(self) -> None:
        """Kill the process tree; its input is closed too, so that a process the kill
        could not reach ends at end of input."""
        if self._runner is not None:
            self._runner.close_input()
            self._runner.cancel()
        self._runner = None

    def kill(self) -> None:
        """Kill the worker's process tree; every request, running or waiting, is cancelled."""
        self._stop_process()
        for job in self._jobs():
            job._cancelled()
        self._forget_jobs()

    def retire(self) -> None:
        """Close the worker once its requests (running or waiting) have ended, now when
        it has none: another worker takes the new ones (other model options)."""
        self._retiring = True
        if not self.busy:
            self.close()

    def close(self, grace: float = 2.0) -> None:
        """End the worker: close its input (it ends there); kill it if it has not ended
        within ``grace`` s, or at once while requests are running or waiting."""
        runner = self._runner
        if runner is None:
            self.kill()  # requests waiting for a worker that will not come
            return
        runner.close_input()
        if self.busy or not runner.wait(grace):
            self.kill()
        self._runner = None


def _worker_info(line: str) -> dict[str, Any]:
    try:
        info = json.loads(line).get("worker")
    except (json.JSONDecodeError, AttributeError):
        return {}
    return info if isinstance(info, dict) else {}


class SessionWorker:
    """The one worker a session keeps (for Runs and the case review alike), reused while
    its command stays the same and replaced when it changes (another model package or
    model option); the one replaced ends once the requests it has (another party's Run or
    review) have ended.
    """

    def __init__(self, runner_factory: Callable[[], ProcessRunner]) -> None:
        self.runner_factory = runner_factory
        self.worker: PredictWorker | None = None
        self.retired: list[PredictWorker] = []  # replaced, finishing their requests

    def get(self, args: Sequence[str], env_updates: Mapping[str, str]) -> PredictWorker:
        """The worker for ``args``: the current one, or a new one (the old one retired)."""
        current = self.worker
        if current is not None and (
            current.args != list(args) or current.env_updates != dict(env_updates)
        ):
            current.retire()
            self.retired = [w for w in (*self.retired, current) if w.running or w.busy]
            current = None
        if current is None:
            current = PredictWorker(self.runner_factory, args, env_updates)
            self.worker = current
        return current

    def close(self) -> None:
        """End the workers (the session, or Slicer, ends)."""
        for worker in (*self.retired, self.worker):
            if worker is not None:
                worker.close()
        self.retired = []


def worker_command(
    *,
    model_dir: Path | str | None = None,
    synthesis: bool = True,
    saliency: bool = True,
    device: str = "cpu",
    python: str | None = None,
    parent_pid: int | None = None,
) -> list[str]:
    """The argument list of ``python -m VirtualBiopsyLib worker``; the worker ends when
    ``parent_pid`` (default: this process) does.

    >>> worker_command(python="PythonSlicer", parent_pid=42)[:6]
    ['PythonSlicer', '-m', 'VirtualBiopsyLib', 'worker', '--parent-pid', '42']
    """
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', not {device!r}")
    args = [python or sys.executable, "-m", "VirtualBiopsyLib", "worker"]
    args += ["--parent-pid", str(parent_pid if parent_pid is not None else os.getpid())]
    args += ["--progress", "json", "--device", device]
    if model_dir is not None:
        args += ["--model", str(model_dir)]
    if not synthesis:
        args.append("--no-synthesis")
    if not saliency:
        args.append("--no-saliency")
    return args


def predict_command(
    inputs: Path | str | Sequence[Path | str],
    out: Path | str,
    *,
    model_dir: Path | str | None = None,
    synthesis: bool = True,
    saliency: bool = True,
    device: str = "cpu",
    python: str | None = None,
) -> list[str]:
    """The argument list of ``python -m VirtualBiopsyLib predict`` for files and folders.

    >>> predict_command("in", "out", synthesis=False, python="PythonSlicer")[:5]
    ['PythonSlicer', '-m', 'VirtualBiopsyLib', 'predict', 'in']
    """
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', not {device!r}")
    paths = [inputs] if isinstance(inputs, str | Path) else list(inputs)
    if not paths:
        raise ValueError("predict needs at least one input file or folder")
    args = [python or sys.executable, "-m", "VirtualBiopsyLib", "predict", *map(str, paths)]
    args += ["--out", str(out), "--progress", "json", "--device", device]
    if model_dir is not None:
        args += ["--model", str(model_dir)]
    if not synthesis:
        args.append("--no-synthesis")
    if not saliency:
        args.append("--no-saliency")
    return args
