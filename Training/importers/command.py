"""``virtual-biopsy-train import cdd-cesm|dicom``: the two importers on the command line.

Prints the summary with patient IDs masked and writes ``OUT`` (the training manifest),
``OUT``'s ``.summary.json`` beside it (which, like the manifest, holds patient IDs) and,
when the source has lesion segmentations, ``OUT``'s ``.lesion_masks/`` folder.
Existing outputs are replaced only with ``--overwrite`` and only when they are an earlier
import's own files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from Training.importers.summary import (
    ImportResult,
    check_outputs,
    summarize,
    summary_path_for,
    summary_text,
    write_import,
)


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``import`` with its ``cdd-cesm`` and ``dicom`` sub-commands."""
    parser = commands.add_parser(
        "import",
        help="turn CDD-CESM or a hospital's DICOM exams into a training manifest",
        description="Write a training manifest (and a summary JSON beside it) from a real "
        "data set. Every image or sheet row left out is reported with the reason.",
    )
    sources = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)

    cdd = sources.add_parser(
        "cdd-cesm",
        help="the public CDD-CESM set as downloaded",
        description="DIR holds 'Low energy images of CDD-CESM/', 'Subtracted images of "
        "CDD-CESM/' and 'Radiology manual annotations.xlsx' (sheet 'all') or its CSV export, "
        "and optionally 'Radiology_hand_drawn_segmentations_v2.csv' (the lesions, drawn "
        "into masks in OUT's .lesion_masks/ folder).",
    )
    cdd.add_argument("folder", type=Path, metavar="DIR")
    cdd.add_argument("--out", type=Path, required=True, help="training manifest to write")
    cdd.add_argument("--annotations", type=Path, help="the annotation sheet (default: in DIR)")
    cdd.add_argument("--sheet", help="XLSX sheet name (default: all)")
    cdd.add_argument(
        "--segmentations",
        type=Path,
        metavar="CSV",
        help="the hand-drawn segmentations, a VIA CSV export (default: in DIR; none: no masks)",
    )
    cdd.add_argument("--overwrite", action="store_true", help="replace an earlier import")
    cdd.set_defaults(func=run_cdd_cesm)

    dicom = sources.add_parser(
        "dicom",
        help="CESM DICOM exams (any folder layout) with a clinical sheet",
        description="Roles come from the DICOM tags as `virtual-biopsy inspect` decides "
        "them; the clinical sheet (CSV or XLSX) gives biopsy result, ACR density and, "
        "optionally, phase per image, breast or study.",
    )
    dicom.add_argument("folder", type=Path, metavar="DIR")
    dicom.add_argument("--clinical", type=Path, required=True, metavar="SHEET")
    dicom.add_argument("--out", type=Path, required=True, help="training manifest to write")
    dicom.add_argument(
        "--mapping", type=Path, help="JSON file: sheet, join, columns, labels, phases"
    )
    dicom.add_argument("--sheet", help="XLSX sheet name (default: the first)")
    dicom.add_argument(
        "--join",
        help="sop, file, breast (patient+laterality), view (patient+laterality+view), study "
        "(patient+study) or key roles, e.g. patient_id,study_uid,laterality",
    )
    dicom.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="ROLE=HEADER",
        help="sheet column of a role (sop_instance_uid, file, patient_id, study_uid, "
        "laterality, view, label, acr_density, phase); repeatable",
    )
    dicom.add_argument(
        "--labels",
        metavar="VALUE=LABEL,...",
        help="map sheet values to malignant/benign/normal, e.g. 'B=benign,M=malignant' "
        "(default: only those three words are accepted)",
    )
    dicom.add_argument("--phases", metavar="VALUE=PHASE,...", help="map sheet values to early/late")
    dicom.add_argument("--overwrite", action="store_true", help="replace an earlier import")
    dicom.set_defaults(func=run_dicom)


def _finish(result: ImportResult, args: argparse.Namespace, inputs: list[Path]) -> int:
    from Training.importers.sheets import ImportInputError

    masker = result.masker()
    out = Path(args.out)
    check_outputs(out, args.overwrite, inputs)
    if not result.rows:
        print(summary_text(summarize(result, None), masker))
        raise ImportInputError(f"{result.folder}: no image could be imported (see above)")
    summary = write_import(result, out, overwrite=args.overwrite)
    print(f"training manifest: {out} ({summary['images']} images)")
    print(f"summary: {summary_path_for(out)} (holds patient IDs, like the manifest)")
    print(summary_text(summary, masker))
    return 0


def run_cdd_cesm(args: argparse.Namespace) -> int:
    from Training.importers.cdd_cesm import find_annotations, import_cdd_cesm
    from Training.importers.segmentations import find_segmentations

    result = import_cdd_cesm(args.folder, args.annotations, args.sheet, args.segmentations)
    annotations = args.annotations or find_annotations(args.folder)
    segmentations = args.segmentations or find_segmentations(args.folder)
    return _finish(result, args, [annotations, *([segmentations] if segmentations else [])])


def run_dicom(args: argparse.Namespace) -> int:
    from Training.importers.clinical_sheet import ClinicalMapping, parse_join
    from Training.importers.dicom_exams import import_dicom_exams
    from Training.importers.sheets import ImportInputError
    from Training.importers.values import LABEL_VALUES, PHASE_VALUES, ValueMapping

    mapping = ClinicalMapping.load(args.mapping) if args.mapping else ClinicalMapping()
    columns = {}
    for item in args.column:
        role, sep, header = item.partition("=")
        if not sep or not header.strip():
            raise ImportInputError(f"--column {item!r} is not ROLE=HEADER")
        columns[role.strip()] = header.strip()
    mapping = mapping.updated(
        join=parse_join(args.join) if args.join else None,
        columns=columns,
        labels=ValueMapping.parse(args.labels, LABEL_VALUES, "label") if args.labels else None,
        phases=ValueMapping.parse(args.phases, PHASE_VALUES, "phase") if args.phases else None,
        sheet=args.sheet,
    )
    result = import_dicom_exams(args.folder, args.clinical, mapping)
    return _finish(result, args, [args.clinical])
