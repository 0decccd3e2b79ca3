"""The ``virtual-biopsy`` command line: one thin front end over the library.

Exit codes (all sub-commands) are :mod:`VirtualBiopsyLib.errors`'s table:
  0  the command ran (``inspect`` exits 0 whatever it finds)
  1  an unexpected internal error
  2  bad usage or a PATH that does not exist
  3  bad input data (unreadable image, case that cannot be classified), or an output
     folder that cannot be written
  4  bad or tampered model package
  5  an output exists and ``--overwrite`` was not given

:func:`main` is the one place where an error becomes an exit code and a message: each
sub-command's ``run(args, reporter)`` returns its code or raises, and the error goes
through the command's reporter (a JSON line with ``exit_code`` under ``--progress json``,
``virtual-biopsy CMD: error: …`` on stderr).
"""

from __future__ import annotations

import argparse
import atexit
import gc
import importlib
import logging
import sys
from collections.abc import Sequence

from VirtualBiopsyLib import RESEARCH_USE_NOTICE, __version__
from VirtualBiopsyLib.commands import COMMAND_MODULES
from VirtualBiopsyLib.errors import (
    EXIT_INTERNAL,
    EXIT_STDOUT_CLOSED,
    error_message,
    exit_code_for,
    silence_stdout,
)
from VirtualBiopsyLib.inference.progress import (
    CommandReporter,
    ConsoleMessages,
    JsonLinesProgress,
    TqdmProgress,
)

log = logging.getLogger("virtual-biopsy")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="virtual-biopsy",
        description="Multimodal virtual biopsy of breast lesions from CESM exams. "
        + RESEARCH_USE_NOTICE,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"VirtualBiopsyLib.commands.{name}").register(subparsers)
    return parser


def command_reporter(args: argparse.Namespace) -> CommandReporter:
    """The reporter a sub-command's progress, warnings and errors go through."""
    program = f"virtual-biopsy {args.command}"
    kind = getattr(args, "progress", None)
    if kind == "json":
        return JsonLinesProgress(sys.stdout, program)
    if kind == "bar":
        return TqdmProgress(None, program=program)
    return ConsoleMessages(program)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``virtual-biopsy``; returns the exit code.

    Sets OpenMP's idle policy first (it must be set before torch loads; see
    :func:`VirtualBiopsyLib.inference.threads.configure_cpu_threads`).
    """
    from VirtualBiopsyLib.inference.threads import configure_cpu_threads

    configure_cpu_threads()
    _register_quick_exit()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    reporter = command_reporter(args)
    try:
        return int(args.func(args, reporter))
    except (Exception, KeyboardInterrupt) as error:  # never a bare traceback
        code = exit_code_for(error)
        if code == EXIT_STDOUT_CLOSED:  # `… | head`: nothing to tell, nobody to tell it
            silence_stdout()
            return code
        if code == EXIT_INTERNAL:
            log.debug("internal error", exc_info=True)
        reporter.error(error_message(error), exit_code=code)
        return code
    finally:
        reporter.close()


def _register_quick_exit() -> None:
    """Let the interpreter end without a last garbage collection over torch's objects.

    At exit Python collects every object the process made before freeing the modules;
    with torch, torchvision and matplotlib loaded that took 0.5–1.5 s here after the
    results were written. ``gc.freeze()`` in an ``atexit`` handler (run before that
    collection) exempts them; objects are still freed and every other exit handler
    still runs. Registered once per process; harmless where ``main`` is called in a
    longer-lived one, since it only acts at that process's exit.
    """
    global _quick_exit_registered
    if not _quick_exit_registered:
        atexit.register(gc.freeze)
        _quick_exit_registered = True


_quick_exit_registered = False

if __name__ == "__main__":
    sys.exit(main())
