"""Progress reporters: how a long run tells its caller where it is.

The pipeline only knows the :class:`ProgressReporter` protocol, so the command line
(JSON lines for the Slicer module, a tqdm bar for people), the Python console (a
callback) and the tests (a list) plug in without the pipeline knowing which.

A command line's reporter (:class:`CommandReporter`) is also where its warnings and
errors go: the JSON-lines protocol (``{"step": "error", …}`` lines on stdout, the
``exit_code`` of a failed run) and the ``virtual-biopsy CMD: error: …`` lines on stderr
are written here and nowhere else.

>>> import io
>>> stream = io.StringIO()
>>> reporter = JsonLinesProgress(stream)
>>> reporter.report("classify", 0.5, "classifying LE_CC")
>>> stream.getvalue()
'{"step": "classify", "fraction": 0.5, "message": "classifying LE_CC"}\\n'
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import IO, Any, Protocol, runtime_checkable


@runtime_checkable
class ProgressReporter(Protocol):
    """Anything that can be told 'step X is at fraction f of the whole run'."""

    def report(self, step: str, fraction: float, message: str) -> None:
        """Record that ``step`` has been reached; ``fraction`` of the whole run is done."""

    def done(self, message: str, results: Sequence[str]) -> None:
        """Record the end of the run with the paths of the results it wrote."""


@runtime_checkable
class CommandReporter(ProgressReporter, Protocol):
    """A command line's reporter: progress, and the warnings and errors people read."""

    def warning(self, message: str) -> None:
        """Something the user should know that does not stop the run."""

    def error(self, message: str, exit_code: int | None = None, context: str = "error") -> None:
        """An error: a case's (``exit_code`` None; the run goes on) or the run's own."""

    def close(self) -> None:
        """Finish the output (remove a progress bar)."""


def _clamp(fraction: float) -> float:
    return round(min(1.0, max(0.0, float(fraction))), 4)


class NullProgress:
    """Reports nothing; the default when the caller passes no reporter."""

    def report(self, step: str, fraction: float, message: str) -> None:
        return None

    def done(self, message: str, results: Sequence[str]) -> None:
        return None


class ConsoleMessages:
    """Warnings and errors as ``PROGRAM: warning|error: message`` lines on stderr, and no
    progress (commands without a progress option)."""

    def __init__(self, program: str = "virtual-biopsy", errors: IO[str] | None = None) -> None:
        self.program = program
        self._errors = errors

    def _console(self, context: str, message: str) -> None:
        print(f"{self.program}: {context}: {message}", file=self._errors or sys.stderr)

    def report(self, step: str, fraction: float, message: str) -> None:
        return None

    def done(self, message: str, results: Sequence[str]) -> None:
        return None

    def warning(self, message: str) -> None:
        self._console("warning", message)

    def error(self, message: str, exit_code: int | None = None, context: str = "error") -> None:
        self._console(context, message)

    def close(self) -> None:
        return None


class JsonLinesProgress(ConsoleMessages):
    """One JSON object per line, flushed at once, so a parent process can follow along.

    This is the form the Slicer module reads from the predict process's stdout. Errors
    are a line ``{"step": "error", "fraction": 1.0, "message": …}`` (with ``exit_code``
    when the run itself failed) besides the stderr line.
    """

    def __init__(
        self,
        stream: IO[str] | None = None,
        program: str = "virtual-biopsy",
        errors: IO[str] | None = None,
    ) -> None:
        super().__init__(program, errors)
        self._stream = stream if stream is not None else sys.stdout

    def _write(self, record: dict[str, Any]) -> None:
        self._stream.write(json_line(record))
        self._stream.flush()

    def report(self, step: str, fraction: float, message: str) -> None:
        self._write({"step": step, "fraction": _clamp(fraction), "message": message})

    def done(self, message: str, results: Sequence[str]) -> None:
        self._write({"step": "done", "fraction": 1.0, "message": message, "results": list(results)})

    def error(self, message: str, exit_code: int | None = None, context: str = "error") -> None:
        said = message if context == "error" else f"{context}: {message}"  # as on stderr
        record: dict[str, Any] = {"step": "error", "fraction": 1.0, "message": said}
        if exit_code is not None:
            record["exit_code"] = exit_code
        self._write(record)
        super().error(message, exit_code, context)


def displayable(text: str) -> str:
    """``text`` with every lone surrogate as U+FFFD, so any UTF-8 reader can show it.

    Python keeps a file name's bytes that are not UTF-8 as lone surrogates (PEP 383);
    strict JSON readers and Qt refuse them. Messages are for people, so they get the
    replacement character; the ``results`` paths, for programs, stay exact.

    >>> displayable("/exams/caso-\\udcff/LE_CC.dcm")
    '/exams/caso-\ufffd/LE_CC.dcm'
    """
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def json_line(record: dict[str, Any]) -> str:
    """One protocol line: ``record`` as JSON with a ``message`` any reader can show."""
    if isinstance(record.get("message"), str):
        record = {**record, "message": displayable(record["message"])}
    return json.dumps(record) + "\n"


class TqdmProgress(ConsoleMessages):
    """A progress bar on stderr for people at a terminal (stdout stays for the summary).

    The bar appears with the first report and is removed before any message is printed.
    """

    def __init__(
        self,
        stream: IO[str] | None = None,
        total: int = 1000,
        program: str = "virtual-biopsy",
    ) -> None:
        super().__init__(program, stream)
        self._file = stream
        self._total = total
        self._bar: Any = None

    def report(self, step: str, fraction: float, message: str) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(
                total=self._total,
                file=self._file if self._file is not None else sys.stderr,
                unit="‰",
                bar_format="{l_bar}{bar}| {elapsed}<{remaining}",
                leave=False,
            )
        target = int(_clamp(fraction) * self._total)
        if target > self._bar.n:
            self._bar.update(target - self._bar.n)
        self._bar.set_description_str(message[:60])

    def done(self, message: str, results: Sequence[str]) -> None:
        self.close()

    def _console(self, context: str, message: str) -> None:
        self.close()
        super()._console(context, message)

    def close(self) -> None:
        """Remove the bar (also on errors, so a message is not printed over it)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class CallbackProgress:
    """Calls ``callback(step, fraction, message)``; for the console or a GUI thread."""

    def __init__(self, callback: Callable[[str, float, str], None]) -> None:
        self._callback = callback

    def report(self, step: str, fraction: float, message: str) -> None:
        self._callback(step, _clamp(fraction), message)

    def done(self, message: str, results: Sequence[str]) -> None:
        self._callback("done", 1.0, message)


class ScaledProgress:
    """Maps a sub-task's 0..1 onto ``[start, end]`` of its parent (one case of many).

    >>> seen = []
    >>> parent = CallbackProgress(lambda step, f, m: seen.append(f))
    >>> ScaledProgress(parent, 0.5, 1.0).report("classify", 0.5, "")
    >>> seen
    [0.75]
    """

    def __init__(self, parent: ProgressReporter, start: float, end: float) -> None:
        self._parent = parent
        self._start = start
        self._end = end

    def report(self, step: str, fraction: float, message: str) -> None:
        scaled = self._start + (self._end - self._start) * _clamp(fraction)
        self._parent.report(step, scaled, message)

    def done(self, message: str, results: Sequence[str]) -> None:
        self._parent.report("case-done", self._end, message)
