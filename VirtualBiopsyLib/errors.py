"""One exception class per kind of failure, and the exit code each front end gives it.

Exit codes (every command line: ``virtual-biopsy`` and ``virtual-biopsy-train``):
  0    the command ran (``inspect`` exits 0 whatever it finds)
  1    an unexpected internal error
  2    bad usage or a PATH that does not exist
  3    bad input data (unreadable image, case that cannot be classified) or a file
       system problem (an output folder that cannot be written, a full disk)
  4    bad or tampered model package
  5    an output exists and ``--overwrite`` was not given
  130  interrupted (Ctrl-C)
  141  the reader of stdout went away (``… | head``), as a shell reports a SIGPIPE

:func:`exit_code_for` is the only place that maps errors to these codes; each entry
point calls it once, around the whole command.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_BAD_INPUT = 3
EXIT_BAD_MODEL = 4
EXIT_OUTPUT_EXISTS = 5
EXIT_INTERRUPTED = 130
EXIT_STDOUT_CLOSED = 141  # 128 + SIGPIPE


class VirtualBiopsyError(Exception):
    """Base class of every error the library raises on purpose."""


class UsageError(VirtualBiopsyError):
    """An argument that cannot be honoured (a missing PATH, CUDA on a machine without it)."""


class ImageError(VirtualBiopsyError):
    """A file could not be read as a mammogram. Names the file and what is wrong."""

    def __init__(self, path: Path | str | None, reason: str) -> None:
        self.path = Path(path) if path is not None else None
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path is not None else reason)


class UnsupportedImageError(ImageError):
    """A readable file that is deliberately not used (high energy, For Processing, …)."""


class ImageReadError(ImageError):
    """A file that should be usable but cannot be read (truncated, no pixels, no decoder)."""


class CaseError(VirtualBiopsyError):
    """A case that cannot be processed, e.g. no LE and no DES image for any view."""


class ModelPackageError(VirtualBiopsyError):
    """A model package that is missing, tampered with, of unknown format or incompatible."""


class OutputExistsError(VirtualBiopsyError):
    """An output folder exists and would be overwritten without ``--overwrite``."""


class OutputNotWritableError(VirtualBiopsyError):
    """An output location that cannot be written (a file in the way, read-only folder)."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class ResultFileError(VirtualBiopsyError):
    """A ``result.json`` that cannot be read or does not follow its schema."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def exit_code_for(error: BaseException) -> int:
    """The documented exit code of an error (the table above).

    >>> exit_code_for(OutputExistsError("out exists")), exit_code_for(KeyError("x"))
    (5, 1)
    """
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(error, BrokenPipeError):  # an OSError, but no fault of the input
        return EXIT_STDOUT_CLOSED
    if isinstance(error, UsageError):
        return EXIT_USAGE
    if isinstance(error, OutputExistsError):
        return EXIT_OUTPUT_EXISTS
    if isinstance(error, ModelPackageError):
        return EXIT_BAD_MODEL
    if isinstance(error, (VirtualBiopsyError, OSError)):
        return EXIT_BAD_INPUT
    return EXIT_INTERNAL


def error_message(error: BaseException) -> str:
    """What a person reads about ``error`` (no traceback; the file is in the message).

    >>> error_message(ModelPackageError("pkg: SHA-256 mismatch"))
    'model package: pkg: SHA-256 mismatch'
    """
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    if isinstance(error, ModelPackageError):
        return f"model package: {error}"
    if isinstance(error, VirtualBiopsyError):
        return str(error)
    if isinstance(error, OSError):
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror or error}"
    return f"internal error: {type(error).__name__}: {error}"


def silence_stdout() -> None:
    """Send the rest of stdout nowhere once its reader went away (``| head``), so that
    Python's last flush at exit does not fail again (as Python's own docs advise)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
