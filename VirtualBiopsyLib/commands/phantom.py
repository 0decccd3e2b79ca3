"""``virtual-biopsy phantom --out DIR --patients N --seed S``: write a synthetic CESM cohort.

The cohort is deterministic (same seed, same bytes), always marked synthetic, and comes as
DICOM exams (``--layout dicom``) or in the public CDD-CESM JPEG layout
(``--layout cdd-cesm``), with ``manifest.csv``. It is a test fixture and a demo; figures
computed on it are not evidence of clinical performance.

Exit codes: 0 written, 2 bad arguments, 3 the output folder cannot be written, 5 the
output folder is not empty (``--overwrite`` replaces an earlier phantom cohort, never
other data).
"""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from VirtualBiopsyLib import SYNTHETIC_NOTICE
from VirtualBiopsyLib.errors import EXIT_OK

if TYPE_CHECKING:
    from VirtualBiopsyLib.inference.progress import CommandReporter

LOG = logging.getLogger(__name__)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``phantom`` sub-command."""
    parser = subparsers.add_parser(
        "phantom",
        help="write a deterministic synthetic CESM cohort (DICOM or CDD-CESM layout)",
        description="Generate synthetic CESM exams (LE and DES, CC and MLO) with a manifest. "
        + SYNTHETIC_NOTICE,
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (new or empty)")
    parser.add_argument(
        "--patients",
        type=_positive_int,
        default=8,
        metavar="N",
        help="number of patients (default 8)",
    )
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    parser.add_argument(
        "--size",
        choices=("small", "full"),
        default="small",
        help="small: 356x299 at 0.8 mm (fast); full: 2850x2396 at 0.1 mm",
    )
    parser.add_argument(
        "--layout",
        choices=("dicom", "cdd-cesm"),
        default="dicom",
        help="DICOM exams or the CDD-CESM JPEG layout",
    )
    parser.add_argument(
        "--cp1342-value3",
        action="store_true",
        help="write POST_CONTRAST in Image Type value 3 of standard-style files "
        "(valid DICOM, but the Debian dciodvfy reports it as an error)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes rendering patients side by side (DICOM layout; default 1); the "
        "files are the same for any number",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an earlier phantom cohort in DIR"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, reporter: CommandReporter) -> int:
    """Generate the cohort and print the manifest path (errors: raised to the entry point)."""
    from VirtualBiopsyLib.phantom.cohort import generate_cohort

    def progress(done: int, total: int) -> None:
        LOG.info("phantom: %d/%d patients written", done, total)

    manifest = generate_cohort(
        args.out,
        args.patients,
        args.seed,
        size=args.size,
        layout=args.layout,
        overwrite=args.overwrite,
        progress=progress,
        contrast_value3=args.cp1342_value3,
        workers=args.workers,
    )
    print(manifest)
    print(SYNTHETIC_NOTICE)
    return EXIT_OK
