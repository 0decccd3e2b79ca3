"""Run the predict command in a separate process and follow its JSON progress lines.

Slicer's GUI must stay alive while a case runs for minutes, so the module starts
``PythonSlicer -m VirtualBiopsyLib predict … --progress json`` in the background, reads
its output through reader threads and a queue, polls it from a timer, and can cancel it
(the whole process tree). :class:`ProcessRunner` describes the process so tests and the
console can pass their own; :class:`SubprocessRunner` is the real one (it works outside
Slicer too); :class:`PredictJob` turns the lines into progress and results.

>>> import sys
>>> job = PredictJob(SubprocessRunner(), [sys.executable, "-c",
...     "print('{\\"step\\": \\"done\\", \\"fraction\\": 1.0, \\"message\\": \\"ok\\", "
...     "\\"results\\": [\\"r.json\\"]}')"])
>>> [path.name for path in job.wait()]
['r.json']
"""

from __future__ import annotations

import contextlib
import json
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

from VirtualBiopsyLib.errors import VirtualBiopsyError

LOG_TAIL_LINES = 40


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

    @property
    def done(self) -> bool:
        return self.step == "done"


def parse_progress_line(line: str) -> Progress | None:
    """A ``{"step", "fraction", "message"}`` line → :class:`Progress`; other lines → None.

    >>> parse_progress_line('{"step": "classify", "fraction": 0.5, "message": "LE_CC"}')
    Progress(step='classify', fraction=0.5, message='LE_CC', results=())
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
    return Progress(str(record["step"]), fraction, str(record.get("message", "")), results)


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


Launcher = Callable[[Sequence[str], Mapping[str, str]], subprocess.Popen]


def default_launcher(
    args: Sequence[str],
    env_updates: Mapping[str, str],
    base_environment: Mapping[str, str] | None = None,
) -> subprocess.Popen:
    """Popen in its own session / process group, so cancel can kill the whole tree.

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
        stdin=subprocess.DEVNULL,
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


def kill_process_tree(process: subprocess.Popen) -> None:
    """Kill a process and its descendants, whichever way it was started."""
    if process.poll() is not None:
        return
    if os.name == "nt":
        subprocess.run(
            ["taskkill", "/T", "/F", "/PID", str(process.pid)], capture_output=True, check=False
        )
        return
    descendants = _children_of(process.pid)
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(process.pid) == process.pid:  # our own group: kill it whole
            os.killpg(process.pid, signal.SIGKILL)
    for pid in [process.pid, *descendants]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait(timeout=10)


class SubprocessRunner:
    """:class:`ProcessRunner` over ``subprocess.Popen`` with one reader thread per pipe.

    ``launcher`` makes the Popen: by default a new process group; inside Slicer the
    module passes one built on ``slicer.util.launchConsoleProcess`` (stderr merged).
    """

    def __init__(self, launcher: Launcher = default_launcher) -> None:
        self._launcher = launcher
        self._process: subprocess.Popen | None = None
        self._lines: queue.Queue[str] = queue.Queue()
        self._readers: list[threading.Thread] = []

    def start(self, args: Sequence[str], env_updates: Mapping[str, str] | None = None) -> None:
        if self._process is not None:
            raise RuntimeError("this runner already started a process")
        self._process = self._launcher(list(args), dict(env_updates or {}))
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
            kill_process_tree(self._process)

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
        if code != 0 and self.results:  # some cases failed, others were written
            self.state = JobState.DONE
        elif code != 0:
            self.error = ProcessFailedError(code, tail)
            self.state = JobState.FAILED
        elif self.last_progress is None or not self.last_progress.done:
            self.error = ProcessFailedError(code, tail, "the predict process ended without results")
            self.state = JobState.FAILED
        else:
            self.state = JobState.DONE

    def cancel(self) -> None:
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
        started = clock()
        while self.step() is JobState.RUNNING:
            if timeout is not None and clock() - started > timeout:
                self.cancel()
                tail = "\n".join(self.log_tail)
                self.error = ProcessFailedError(None, tail, f"timed out after {timeout} s")
                break
            sleep(poll_interval)
        if self.error is not None:
            raise self.error
        return self.results


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
