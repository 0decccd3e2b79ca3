"""The ``virtual-biopsy`` command line: one thin front end over the library.

Exit codes (all sub-commands):
  0  the command ran (``inspect`` exits 0 whatever it finds)
  1  an unexpected internal error
  2  bad usage or a PATH that does not exist
  3  bad input data (unreadable image, case that cannot be classified)
  4  bad or tampered model package
  5  an output exists and ``--overwrite`` was not given
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from VirtualBiopsyLib import RESEARCH_USE_NOTICE, __version__
from VirtualBiopsyLib.commands import COMMAND_MODULES
from VirtualBiopsyLib.errors import ModelPackageError, OutputExistsError, VirtualBiopsyError

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_BAD_INPUT = 3
EXIT_BAD_MODEL = 4
EXIT_OUTPUT_EXISTS = 5


def exit_code_for(error: BaseException) -> int:
    """The documented exit code of an error (the table above), for every command line.

    >>> exit_code_for(OutputExistsError("out exists"))
    5
    """
    if isinstance(error, OutputExistsError):
        return EXIT_OUTPUT_EXISTS
    if isinstance(error, ModelPackageError):
        return EXIT_BAD_MODEL
    if isinstance(error, VirtualBiopsyError):
        return EXIT_BAD_INPUT
    return EXIT_INTERNAL


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``virtual-biopsy``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
