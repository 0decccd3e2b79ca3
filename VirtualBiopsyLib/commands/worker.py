"""``virtual-biopsy worker``: ``predict`` requests one JSON line at a time, models loaded once.

A Slicer session (or a script) starts one worker and sends it every case; the package is
loaded and verified once, and every network is built and one blank image goes through
preprocessing and a pass of each kind of network (imports, first-call set-up) before the
worker says it is ready; the networks stay in memory, so no request waits for any of it
(the Slicer module starts its worker once an exam is assigned, before the first Run).
Each request runs exactly what ``predict`` runs
(:func:`~VirtualBiopsyLib.inference.runner.predict_paths` with the worker's open
pipeline, then :func:`VirtualBiopsyLib.commands.predict.finish_run`), so it writes the
same files with the same probabilities.

Requests, one JSON object per line on stdin::

    {"id": "r1", "paths": ["exam/"], "out": "results/", "overwrite": false,
     "export_dicom": false}

``paths`` and ``out`` are ``predict``'s PATHs and ``--out`` (a slot folder
``LE_CC.nrrd`` … is how a slot → file mapping is handed over). Every field must have its
JSON type: ``id`` a string or an integer, ``paths`` a non-empty list of strings, ``out`` a
string, ``overwrite`` and ``export_dicom`` ``true`` or ``false`` (``"false"``, a string,
is refused rather than read as true). A request line is at most
:data:`MAX_REQUEST_BYTES` (1 MiB, newline included) of UTF-8 JSON nested at most
:data:`~VirtualBiopsyLib.limits.MAX_JSON_DEPTH` (32) levels; a longer line is read past
in chunks (never held whole) and fails alone. The model options (``--model``,
``--no-synthesis``, ``--no-saliency``, ``--device``, ``--synthesis-precision``) belong
to the worker's command line; a request may repeat them (``synthesis``, ``saliency``,
``device``, ``synthesis_precision``) but a different value fails that request with exit
code 2: start another worker for other model options.

Answers on stdout: first ``{"step": "ready", …}`` once that is done; per request
the JSON lines ``predict --progress json`` writes, each with ``"request": id``, then one
terminal line::

    {"step": "end", "fraction": 1.0, "request": "r1", "status": "done", "exit_code": 0,
     "message": "…", "results": ["results/case-…/result.json"], "worker": {…}}

``exit_code`` is what ``predict`` would have exited with (:mod:`VirtualBiopsyLib.errors`);
``status`` is ``failed`` when it is not 0 (a request with some cases written has
``results`` too). A bad request (not JSON, too long or too deep, a field of the wrong
type, a missing path, a bad option) fails alone with exit code 2; the worker stays up and
serves the next line. ``worker`` says how many requests it served, how many times the
package was loaded (1) and how many networks it has built, so a caller can see that
models were not loaded again.

The worker ends with exit code 0 on end of input (after the requests already read: a
script may pipe a file of requests) and at once when its parent process ends
(``--parent-pid``, else the parent it started with). A bad model package ends it at start
with exit code 4, after an error line.

Example::

    printf '%s\\n' '{"id": 1, "paths": ["exam/"], "out": "results/"}' \\
        | virtual-biopsy worker --model MyModel
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from VirtualBiopsyLib.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    UsageError,
    error_message,
    exit_code_for,
)
from VirtualBiopsyLib.inference.progress import JsonLinesProgress, json_line
from VirtualBiopsyLib.limits import MAX_JSON_DEPTH, json_depth
from VirtualBiopsyLib.processes import process_alive

log = logging.getLogger(__name__)

END_STEP = "end"
READY_STEP = "ready"
REQUEST_KEYS = frozenset({"id", "paths", "out", "overwrite", "export_dicom"})
PIPELINE_KEYS = ("synthesis", "saliency", "device", "synthesis_precision")
BOOLEAN_KEYS = ("overwrite", "export_dicom", "synthesis", "saliency")
TEXT_KEYS = ("out", "device", "synthesis_precision")
PARENT_POLL_S = 1.0
MAX_REQUEST_BYTES = 1 << 20  # one request line; a real one is a few hundred bytes
_DISCARD_CHUNK = 1 << 16


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``worker`` sub-command."""
    from VirtualBiopsyLib.commands.predict import add_predict_arguments

    parser = subparsers.add_parser(
        "worker",
        help="a persistent predict process: one JSON request per line on stdin",
        description="Load the model package once, then run one predict request per JSON "
        "line on stdin (paths, out, overwrite, export_dicom) and answer with predict's JSON "
        "progress lines and a terminal 'end' line per request. Ends at end of input or "
        "when its parent process ends.",
    )
    add_predict_arguments(parser)
    parser.set_defaults(progress="json")
    parser.add_argument(
        "--parent-pid",
        type=int,
        default=None,
        metavar="PID",
        help="end when this process ends (default: the process that started the worker)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, reporter: JsonLinesProgress) -> int:
    """Serve requests from stdin until end of input; returns the exit code."""
    if args.progress != "json":
        raise UsageError("the worker answers in JSON lines only (--progress json)")
    watch_parent(args.parent_pid)
    worker = Worker.start(args, sys.stdout)
    return worker.serve(sys.stdin.buffer)  # bytes: lengths bounded, UTF-8 checked per line


class _CountingPackage:
    """The model package, counting the networks built from it (the worker reports it)."""

    def __init__(self, package: Any) -> None:
        self._package = package
        self.networks_built = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._package, name)

    def load_classifier(self, *args: Any, **kwargs: Any) -> Any:
        self.networks_built += 1
        return self._package.load_classifier(*args, **kwargs)

    def load_generator(self, *args: Any, **kwargs: Any) -> Any:
        self.networks_built += 1
        return self._package.load_generator(*args, **kwargs)


class RequestReporter(JsonLinesProgress):
    """``predict``'s JSON lines, each tagged with the request it belongs to."""

    def __init__(self, stream: IO[str], request: Any, lock: threading.Lock) -> None:
        super().__init__(stream, "virtual-biopsy worker")
        self.request = request
        self._lock = lock

    def _write(self, record: dict[str, Any]) -> None:
        with self._lock:
            super()._write({**record, "request": self.request})


class Worker:
    """One open pipeline answering requests (see the module docstring)."""

    def __init__(
        self,
        pipeline: Any,
        package: _CountingPackage,
        stream: IO[str],
        *,
        export_dicom: bool = False,
        overwrite: bool = False,
    ) -> None:
        self.pipeline = pipeline
        self.package = package
        self.stream = stream
        self.export_dicom = export_dicom  # defaults of requests that do not say
        self.overwrite = overwrite
        self.requests = 0
        self.package_loads = 1
        self._lock = threading.Lock()

    @classmethod
    def start(cls, args: argparse.Namespace, stream: IO[str]) -> Worker:
        """Load and verify the package once and open the pipeline; then say ``ready``."""
        from VirtualBiopsyLib.commands.predict import check_device
        from VirtualBiopsyLib.inference.pipeline import Pipeline
        from VirtualBiopsyLib.inference.runner import resolve_package

        check_device(args.device)
        package = _CountingPackage(resolve_package(args.model))
        pipeline = Pipeline(
            package,  # type: ignore[arg-type]  (the package, with a counter)
            device=args.device,
            synthesis=args.synthesis,
            saliency=args.saliency,
            synthesis_precision=args.synthesis_precision,
        )
        pipeline.load_networks()  # the first request waits for none of them,
        pipeline.warm_up()  # nor for the imports and set-up of a first pass
        worker = cls(
            pipeline, package, stream, export_dicom=args.export_dicom, overwrite=args.overwrite
        )
        worker._line(
            {
                "step": READY_STEP,
                "fraction": 0.0,
                "message": f"worker ready: model {package.name} {package.version}",
                "worker": worker.info(),
            }
        )
        return worker

    def info(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "requests": self.requests,
            "package_loads": self.package_loads,
            "networks_built": self.package.networks_built,
            **self.pipeline.settings,
        }

    def _line(self, record: dict[str, Any]) -> None:
        with self._lock:
            self.stream.write(json_line(record))
            self.stream.flush()

    def serve(self, requests: IO[bytes]) -> int:
        """Answer each request line until end of input; a bad line fails alone."""
        try:
            while True:
                line = requests.readline(MAX_REQUEST_BYTES + 1)
                if not line:
                    return EXIT_OK
                if len(line) > MAX_REQUEST_BYTES:
                    _discard_rest_of_line(requests, line)
                    self.handle(line, problem=_TOO_LONG)
                elif line.strip():
                    self.handle(line)
        finally:
            self.pipeline.close()

    def handle(self, line: bytes | str, problem: str | None = None) -> int:
        """Run one request; any error is this request's failure. Returns its exit code.

        ``problem``: why the line is refused unread (too long).
        """
        from VirtualBiopsyLib.commands.predict import finish_run
        from VirtualBiopsyLib.inference.runner import predict_paths

        self.requests += 1
        reporter = RequestReporter(self.stream, None, self._lock)
        results: list[str] = []
        try:
            if problem is not None:
                raise UsageError(problem)
            request = _load_request(line)
            reporter.request = _request_id(request)  # the end line names it even if bad
            self._check(request)
            paths = [Path(p) for p in request["paths"]]
            out = Path(request["out"])
            missing = [str(p) for p in paths if not p.exists()]
            if missing:
                raise UsageError(f"no such file or folder: {', '.join(missing)}")
            run = predict_paths(
                paths,
                out,
                pipeline=self.pipeline,
                export_dicom=request.get("export_dicom", self.export_dicom),
                overwrite=request.get("overwrite", self.overwrite),
                progress=reporter,
            )
            results = run.result_files
            code = finish_run(run, out, reporter)
            message = f"{len(run.folders)} case(s) written to {out}"
        except Exception as error:  # this request's failure; the worker goes on
            code = exit_code_for(error)
            message = error_message(error)
            log.debug("request %s failed", reporter.request, exc_info=True)
            reporter.error(message, exit_code=code)
        self._line(
            {
                "step": END_STEP,
                "fraction": 1.0,
                "request": reporter.request,
                "status": "done" if code == EXIT_OK else "failed",
                "exit_code": code,
                "message": message,
                "results": results,
                "worker": self.info(),
            }
        )
        return code

    def _check(self, request: dict[str, Any]) -> None:
        """Refuse (UsageError, naming the field) a request this worker must not run."""
        unknown = sorted(set(request) - REQUEST_KEYS - set(PIPELINE_KEYS))
        if unknown:
            raise UsageError(f"unknown request key(s): {', '.join(unknown)}")
        _check_types(request)
        settings = self.pipeline.settings
        for key in PIPELINE_KEYS:
            if key in request and key != "synthesis_precision" and request[key] != settings[key]:
                raise UsageError(
                    f"request {key}={request[key]!r}, but this worker runs with "
                    f"{key}={settings[key]!r}; start a worker with that option"
                )
        precision = request.get("synthesis_precision")
        if precision is not None and precision not in ("auto", settings["synthesis_precision"]):
            raise UsageError(
                f"request synthesis_precision={precision!r}, but this worker runs with "
                f"{settings['synthesis_precision']!r}; start a worker with that option"
            )


_TOO_LONG = f"request line longer than {MAX_REQUEST_BYTES} bytes; refused unread"


def _discard_rest_of_line(requests: IO[bytes], start: bytes) -> None:
    """Read past the rest of an over-long line in chunks, never holding it whole."""
    chunk = start
    while chunk and not chunk.endswith(b"\n"):
        chunk = requests.readline(_DISCARD_CHUNK)


def _load_request(line: bytes | str) -> dict[str, Any]:
    """The request object of one line; UsageError when it is not one (no JSON of its own
    can kill the worker: the depth is counted before parsing, a huge integer is refused)."""
    try:
        text = line.decode("utf-8") if isinstance(line, bytes) else line
    except UnicodeDecodeError as error:
        raise UsageError(
            f"request is not UTF-8 text ({error.reason} at byte {error.start})"
        ) from None
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise UsageError(f"request JSON nested {depth} levels deep (at most {MAX_JSON_DEPTH})")
    try:
        request = json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"request is not JSON: {error}") from None
    except (ValueError, RecursionError) as error:  # e.g. an integer of 5000 digits
        raise UsageError(f"request is not usable JSON: {error}") from None
    if not isinstance(request, dict):
        raise UsageError("a request is a JSON object with 'paths' and 'out'")
    return request


def _check_types(request: dict[str, Any]) -> None:
    """Every field has its JSON type (``"false"`` is not false); UsageError names it."""
    if "id" in request and _request_id(request) is None:
        raise UsageError(
            f"request 'id' must be a string or an integer, not {_shown(request['id'])}"
        )
    paths = request.get("paths")
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
        raise UsageError("request 'paths' must be a non-empty list of file or folder paths")
    if not isinstance(request.get("out"), str) or not request["out"]:
        raise UsageError("request 'out' must be the output folder's path")
    for key in BOOLEAN_KEYS:
        if key in request and not isinstance(request[key], bool):
            raise UsageError(f"request {key!r} must be true or false, not {_shown(request[key])}")
    for key in TEXT_KEYS:
        if key in request and not isinstance(request[key], str):
            raise UsageError(f"request {key!r} must be a string, not {_shown(request[key])}")
    for key, value in [("out", request["out"]), *(("paths", p) for p in paths)]:
        if "\0" in value:
            raise UsageError(f"request {key!r} holds a NUL character; no path has one")


def _shown(value: Any) -> str:
    """A bad value as JSON, cut short: the message stays one readable line."""
    text = json.dumps(value)
    return text if len(text) <= 40 else f"{text[:40]}…"


def _request_id(request: dict[str, Any]) -> str | int | None:
    """The request's ``id`` when it is a string or an integer (not a boolean), else None."""
    value = request.get("id")
    return value if isinstance(value, str | int) and not isinstance(value, bool) else None


# --------------------------------------------------------------------------- parent


def watch_parent(
    parent_pid: int | None,
    interval: float = PARENT_POLL_S,
    on_gone: Callable[[], None] | None = None,
) -> threading.Thread:
    """Watch the parent from a daemon thread and end this process when it is gone.

    With ``parent_pid`` that process is watched; without, the parent this process
    started with (on POSIX an orphan is re-parented, so ``os.getppid()`` changes).
    """
    first_parent = os.getppid()

    def gone() -> bool:
        if parent_pid is not None:
            return not process_alive(parent_pid)
        return os.name != "nt" and os.getppid() != first_parent

    def end() -> None:
        logging.getLogger(__name__).warning("parent process ended; the worker stops")
        os._exit(EXIT_INTERRUPTED)

    def watch() -> None:
        while not gone():
            time.sleep(interval)
        (on_gone or end)()

    thread = threading.Thread(target=watch, name="parent-watch", daemon=True)
    thread.start()
    return thread
