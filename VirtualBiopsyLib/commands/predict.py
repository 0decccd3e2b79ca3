"""``virtual-biopsy predict PATH... --out DIR``: the virtual biopsy of every case found.

PATHs are files or folders (DICOM, CDD-CESM JPEG/PNG, or a folder of slot files
``LE_CC.nrrd`` … with an optional ``case.json``, the form the Slicer module hands over).
Each case gets ``<out>/<case key>/`` with ``result.json``, ``report.png``, synthetic DES
and saliency maps as NRRD (and DICOM with ``--export-dicom``).

Output on stdout: a short summary per case, or with ``--progress json`` one JSON object
per line (``{"step", "fraction", "message"}``, last ``{"step": "done", …, "results"}``).
Exit codes: 0 ok, 1 internal error, 2 usage / missing PATH, 3 bad input or a case that
cannot be classified (the other cases are still written) or an output folder that cannot
be written (found before any model work), 4 bad model package, 5 output exists: every
case is finished already, or another run finished a case meanwhile (never replaced
without ``--overwrite``).

A case whose folder exists is kept (a plain rerun finishes what an interrupted run left
undone; hidden partial folders of runs that died are removed); ``--overwrite`` replaces
finished cases.

Example::

    virtual-biopsy predict exam/ --model MyModel --out results/
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from VirtualBiopsyLib import RESEARCH_USE_NOTICE
from VirtualBiopsyLib.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_OUTPUT_EXISTS, UsageError

if TYPE_CHECKING:
    from VirtualBiopsyLib.inference.progress import CommandReporter

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``predict`` sub-command."""
    parser = subparsers.add_parser(
        "predict",
        help="virtual biopsy of the cases in files or folders",
        description="Classify each case (LE and DES, CC and MLO; missing DES synthesized "
        "from LE), fuse by MCC weights, and write result.json, report.png, synthetic DES and "
        "saliency maps per case. " + RESEARCH_USE_NOTICE,
    )
    add_predict_arguments(parser)
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or folders")
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="output folder; one sub-folder per case",
    )
    parser.set_defaults(func=run)


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``predict`` (kept together so another front end can reuse them)."""
    parser.add_argument(
        "--model",
        type=Path,
        metavar="DIR",
        default=None,
        help="model package folder (default: the bundled DEMO model)",
    )
    parser.add_argument(
        "--no-synthesis",
        dest="synthesis",
        action="store_false",
        help="do not synthesize a missing DES from LE",
    )
    parser.add_argument(
        "--saliency",
        dest="saliency",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Grad-CAM saliency maps (default: on)",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--synthesis-precision",
        choices=("auto", "float32", "bfloat16"),
        default="auto",
        help="number type of the DES generators: bfloat16 halves synthesis time and "
        "memory where the hardware computes it natively, and the synthetic DES differs "
        "from float32 by about 0.002 on [0, 1]; auto (default) takes bfloat16 there and "
        "float32 elsewhere",
    )
    parser.add_argument(
        "--export-dicom",
        action="store_true",
        help="also write synthetic DES as DICOM (Secondary Capture)",
    )
    parser.add_argument(
        "--progress",
        choices=("bar", "json"),
        default="bar",
        help="progress as a bar on stderr (default) or JSON lines on stdout",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace existing case output folders"
    )


def run(args: argparse.Namespace, reporter: CommandReporter) -> int:
    """Run ``predict``; returns the exit code (see the module docstring) or raises."""
    from VirtualBiopsyLib.inference.runner import predict_paths

    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")
    check_device(args.device)
    run = predict_paths(
        args.paths,
        args.out,
        args.model,
        device=args.device,
        synthesis=args.synthesis,
        saliency=args.saliency,
        export_dicom=args.export_dicom,
        overwrite=args.overwrite,
        progress=reporter,
        synthesis_precision=args.synthesis_precision,
    )
    return finish_run(run, args.out, reporter, summary=args.progress != "json")


def finish_run(run: Any, out: Path, reporter: CommandReporter, summary: bool = False) -> int:
    """Report a finished run (case errors, then ``done``, then warnings) and return its
    exit code; shared with the persistent worker so a request ends as ``predict`` does."""
    message = f"{len(run.folders)} case(s) written to {out}"
    if run.kept:
        message += f"; {len(run.kept)} finished case(s) kept"
    if run.failures:
        message += f"; {len(run.failures)} case(s) failed (not classified or not written)"
    if run.conflicts:
        message += f"; {len(run.conflicts)} case(s) written by another run meanwhile"
    gathered = run.gathered
    unreadable = gathered.errors if gathered is not None else []
    if unreadable:
        message += f"; {len(unreadable)} file(s) unreadable"
    # before "done", which stays the last line: with --progress json each is an error line
    for line in unreadable:
        reporter.error(line, context="unreadable file")
    for failure in run.failures:
        reporter.error(failure, context="case failed")
    for conflict in run.conflicts:
        reporter.error(conflict, context="case not written")
    reporter.done(message, run.result_files)
    if summary:
        print_summary(run, sys.stdout)
    for key in run.kept:
        reporter.warning(f"{key}: kept the finished result; use --overwrite to replace it")
    for folder in run.cleared:
        reporter.warning(f"removed {folder.name}, a partial folder of a run that ended early")
    if run.failures or unreadable:  # a bad file is bad input
        return EXIT_BAD_INPUT
    return EXIT_OUTPUT_EXISTS if run.conflicts else EXIT_OK


def check_device(device: str) -> None:
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available on this machine")


def print_summary(run: Any, stream: Any) -> None:
    """A few lines per case for people: label, probability, sources, where the report is.

    Case keys only, never patient names or IDs.
    """
    demo = any(result.model.is_demo for result in run.results)
    if demo:
        print(
            "DEMO MODEL: trained on synthetic phantom data only; its numbers mean nothing "
            "about real patients.",
            file=stream,
        )
    for result, folder in zip(run.results, run.folders, strict=True):
        fused = result.fused
        sources = ", ".join(
            f"{slot} {record.source.value}" for slot, record in result.inputs.items()
        )
        print(
            f"{result.key}: {result.label.upper()}  p(malignant) = {fused.mean:.3f} "
            f"± {fused.sem:.3f} (SE over {len(fused.folds)} folds, threshold "
            f"{result.threshold:.2f})",
            file=stream,
        )
        print(f"  inputs: {sources}", file=stream)
        print(f"  report: {folder / 'report.png'}", file=stream)
    print(RESEARCH_USE_NOTICE, file=stream)
