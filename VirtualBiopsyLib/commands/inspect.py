"""``virtual-biopsy inspect PATH... [--json] [--decode]``: what the readers make of files.

Reads headers only (no pixel decoding), so it is quick over whole exports; ``--decode``
also decodes each image and refuses, per image and with the reason, those ``predict``
would refuse (undecodable, too small, blank, no breast visible). It exits 0
whatever it finds (unreadable files are reported, not fatal) and 2 when a PATH does not
exist. The ``--json`` output is a stable contract that other tools script against::

    {"images": [{"path", "status", "reason", "modality", "view", "laterality",
                 "patient_id", "study_uid", "rows", "columns", "rule"}],
     "cases": [{"patient_id", "study_uid", "laterality",
                "slots": {"LE_CC", "LE_MLO", "DES_CC", "DES_MLO"}, "problems"}]}
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from VirtualBiopsyLib.errors import EXIT_OK, EXIT_USAGE
from VirtualBiopsyLib.roles import SLOTS

if TYPE_CHECKING:  # the readers (pydicom, SimpleITK) load only when inspect runs
    from VirtualBiopsyLib.images.cases import Case
    from VirtualBiopsyLib.images.readers import ScanEntry
    from VirtualBiopsyLib.inference.progress import CommandReporter

RULE_KEYS = ("modality", "view", "laterality")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``inspect`` sub-command."""
    parser = subparsers.add_parser(
        "inspect",
        help="show the role of each image and how images group into cases",
        description="Read the headers of DICOM, JPEG/PNG (CDD-CESM) and NRRD files and "
        "group them into cases (patient, study, laterality) with four slots.",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or folders")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--decode",
        action="store_true",
        help="also decode every image and refuse, with the reason, those predict would "
        "refuse (undecodable, too small, blank or constant, no breast visible); slower",
    )
    parser.set_defaults(func=run)


def _value(member: Any) -> Any:
    return member.value if member is not None else None


def rule_text(entry: ScanEntry) -> str | None:
    """Join the rules that decided each role, e.g. ``"modality: …; view: …; laterality: …"``."""
    if entry.info is None:
        return None
    rules = entry.info.rules
    return "; ".join(f"{key}: {rules[key]}" for key in RULE_KEYS if key in rules)


def image_record(entry: ScanEntry) -> dict[str, Any]:
    """The JSON record of one scanned file (keys fixed by the contract)."""
    info = entry.info
    return {
        "path": str(entry.path),
        "status": entry.status,
        "reason": entry.reason,
        "modality": _value(info.modality) if info else None,
        "view": _value(info.view) if info else None,
        "laterality": _value(info.laterality) if info else None,
        "patient_id": info.patient_id if info else None,
        "study_uid": info.study_uid if info else None,
        "rows": info.rows if info else None,
        "columns": info.columns if info else None,
        "rule": rule_text(entry),
    }


def case_record(case: Case) -> dict[str, Any]:
    """The JSON record of one case (keys fixed by the contract)."""
    return {
        "patient_id": case.patient_id,
        "study_uid": case.study_uid,
        "laterality": _value(case.laterality),
        "slots": {
            slot: str(info.path) if (info := case.slots.get(slot)) is not None else None
            for slot in SLOTS
        },
        "problems": list(case.problems),
    }


def inspect_paths(paths: list[Path], decode: bool = False) -> dict[str, list[dict[str, Any]]]:
    """Scan ``paths`` and return the ``inspect --json`` object.

    >>> from VirtualBiopsyLib.commands.inspect import inspect_paths
    >>> report = inspect_paths([Path("exam")])  # doctest: +SKIP
    >>> sorted(report)  # doctest: +SKIP
    ['cases', 'images']
    """
    from VirtualBiopsyLib.images.cases import group_cases
    from VirtualBiopsyLib.images.readers import scan

    entries = scan(paths, decode=decode)
    cases = group_cases(entry.info for entry in entries if entry.info is not None)
    return {
        "images": [image_record(entry) for entry in entries],
        "cases": [case_record(case) for case in cases],
    }


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _image_line(image: dict[str, Any]) -> str:
    size = f"{image['rows']}x{image['columns']}" if image["rows"] is not None else "-"
    detail = image["reason"] if image["status"] != "ok" else image["rule"]
    return (
        f"{image['status']:<8} {_cell(image['modality']):<4} {_cell(image['view']):<4} "
        f"{_cell(image['laterality']):<2} {size:<11} {image['path']}  [{detail}]"
    )


def _case_lines(number: int, case: dict[str, Any]) -> list[str]:
    """One case block; named by its pseudonymous key (patient IDs stay inside the JSON)."""
    from VirtualBiopsyLib.images.cases import case_key
    from VirtualBiopsyLib.roles import Laterality

    side = Laterality(case["laterality"]) if case["laterality"] else None
    key = case_key(case["patient_id"], case["study_uid"], side)
    lines = ["", f"case {number}: {key}, laterality {case['laterality'] or '?'}"]
    lines += [f"  {slot:<8} {path or '(missing)'}" for slot, path in case["slots"].items()]
    lines += [f"  problem: {problem}" for problem in case["problems"]]
    return lines


def text_report(report: dict[str, list[dict[str, Any]]]) -> str:
    """The readable form: one row per image, then one block per case, then totals."""
    lines = [f"{'status':<8} {'mod':<4} {'view':<4} {'LR':<2} {'size':<11} path  [rule or reason]"]
    lines += [_image_line(image) for image in report["images"]]
    for number, case in enumerate(report["cases"], start=1):
        lines += _case_lines(number, case)
    counts = {
        status: sum(image["status"] == status for image in report["images"])
        for status in ("ok", "skipped", "error")
    }
    lines.append("")
    lines.append(
        f"{len(report['images'])} files: {counts['ok']} ok, {counts['skipped']} skipped, "
        f"{counts['error']} error; {len(report['cases'])} cases"
    )
    return "\n".join(lines)


def run(args: argparse.Namespace, reporter: CommandReporter) -> int:
    """Run ``inspect``: 0 when it ran, 2 when a PATH does not exist."""
    missing = [path for path in args.paths if not path.exists()]
    if missing:
        for path in missing:
            reporter.error(f"PATH does not exist: {path}", exit_code=EXIT_USAGE)
        return EXIT_USAGE
    report = inspect_paths(list(args.paths), decode=getattr(args, "decode", False))
    if args.json:
        print(json.dumps(report))
    else:
        print(text_report(report))
    return EXIT_OK
