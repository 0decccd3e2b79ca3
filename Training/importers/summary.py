"""What an import produced and what it left out, for the console and for the record.

The summary counts images, patients, breasts, complete LE/DES pairs per view, labels per
view, classifier cases, ACR densities and phases, and lists every image or sheet row
left out with its reason. It goes to a JSON file beside the manifest (which holds patient
IDs anyway) and, with patient IDs masked, to stdout: the console never shows a patient ID.

>>> masker = PatientMasker(["P12", "0042"])
>>> masker("Subtracted images of CDD-CESM/P12_L_CM_CC.jpg, IM0042, 0042/IM1")
'Subtracted images of CDD-CESM/<patient>_L_CM_CC.jpg, IM0042, <patient>/IM1'
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import VirtualBiopsyLib
from Training.datasets import group_cases, image_pairs
from VirtualBiopsyLib.atomic_io import write_text_atomic
from VirtualBiopsyLib.errors import OutputExistsError
from VirtualBiopsyLib.roles import SLOTS, VIEWS
from VirtualBiopsyLib.training_manifest import (
    BiopsyLabel,
    TrainingManifestRow,
    is_training_manifest,
    write_training_manifest,
)

SUMMARY_FORMAT = "virtual-biopsy-import-summary-v1"
MASK = "<patient>"
MAX_LISTED = 50  # left-out lines printed per import; the JSON lists all


@dataclass(frozen=True)
class LeftOut:
    """One image or sheet row not in the manifest. ``item``: a path relative to the
    imported folder, or ``sheet row N``; ``kind``: the reason's category."""

    item: str
    kind: str
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"item": self.item, "reason": self.kind, "detail": self.detail}


@dataclass
class ImportResult:
    source: str  # "cdd-cesm" or "dicom"
    folder: Path
    rows: list[TrainingManifestRow]
    left_out: list[LeftOut]
    settings: dict[str, Any] = field(default_factory=dict)  # join, mappings, files read
    notes: Counter = field(default_factory=Counter)  # kept with a caveat, e.g. bad density
    phase_rules: list[dict[str, str]] = field(default_factory=list)  # per image (DICOM)
    patient_ids: set[str] = field(default_factory=set)  # every ID seen: masked on stdout

    def masker(self) -> PatientMasker:
        return PatientMasker(self.patient_ids | {row.patient_id for row in self.rows})


class PatientMasker:
    """Replaces each patient ID, where it stands as a whole token, with ``<patient>``."""

    def __init__(self, patient_ids: Iterable[str]) -> None:
        ids = sorted({p for p in patient_ids if p}, key=len, reverse=True)
        self.pattern = (
            re.compile(
                r"(?<![0-9A-Za-z])(" + "|".join(map(re.escape, ids)) + r")(?![0-9A-Za-z])",
                re.IGNORECASE,
            )
            if ids
            else None
        )

    def __call__(self, text: str) -> str:
        return self.pattern.sub(MASK, text) if self.pattern else text


def _breast(row: TrainingManifestRow) -> tuple[str, str, str]:
    return (row.patient_id, row.study_uid, row.laterality)


def summarize(result: ImportResult, manifest_path: Path | None) -> dict[str, Any]:
    """The summary object (written as JSON beside the manifest)."""
    rows = result.rows
    breasts: dict[tuple[str, str, str], TrainingManifestRow] = {}
    for row in rows:
        breasts.setdefault(_breast(row), row)
    labels_per_view = {}
    for view in VIEWS:
        with_view = {_breast(r): r for r in rows if r.view is view}
        labels_per_view[view.value] = dict(
            Counter(BiopsyLabel(r.label).text for r in with_view.values())
        )
    images_per_slot = {
        slot: dict(Counter(BiopsyLabel(r.label).text for r in rows if r.slot == slot))
        for slot in SLOTS
    }
    cases = group_cases(rows, phase="early")
    synthetic = any(row.synthetic for row in rows)
    summary: dict[str, Any] = {
        "format": SUMMARY_FORMAT,
        "source": result.source,
        "manifest": manifest_path.name if manifest_path else None,
        "images": len(rows),
        "patients": len({row.patient_id for row in rows}),
        "breasts": len(breasts),
        "pairs_per_view": {v.value: len(image_pairs(rows, v)) for v in VIEWS},
        "labels_per_view": labels_per_view,
        "labels_definition": "breasts with an image of the view, by label",
        "images_per_slot": images_per_slot,
        "classifier_cases": dict(Counter("malignant" if c.label else "benign" for c in cases)),
        "classifier_cases_definition": "early-phase breasts labelled benign or malignant",
        "acr_density": dict(
            sorted(Counter(r.acr_density or "unknown" for r in breasts.values()).items())
        ),
        "phases": dict(Counter(row.phase for row in rows)),
        "synthetic": synthetic,
        "settings": result.settings,
        "notes": dict(result.notes),
        "left_out_count": len(result.left_out),
        "left_out_by_reason": dict(Counter(item.kind for item in result.left_out)),
        "left_out": [item.to_dict() for item in result.left_out],
        "research_use_notice": VirtualBiopsyLib.RESEARCH_USE_NOTICE,
    }
    if result.phase_rules:
        summary["phase_rules"] = dict(Counter(rule["rule"] for rule in result.phase_rules))
        summary["phase_per_image"] = result.phase_rules
    if synthetic:
        summary["synthetic_notice"] = VirtualBiopsyLib.SYNTHETIC_NOTICE
    return summary


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {value}" for key, value in counts.items()) or "none"


def summary_text(summary: dict[str, Any], masker: PatientMasker) -> str:
    """The console form of a summary; names of left-out items pass through ``masker``.

    (Counts are not masked: a patient ID ``1`` must not hide the figure 1.)"""
    lines = [
        f"images {summary['images']}, patients {summary['patients']}, breasts {summary['breasts']}",
        "complete LE/DES pairs: "
        + ", ".join(f"{view} {n}" for view, n in summary["pairs_per_view"].items()),
        "labels (breasts with the view): "
        + "; ".join(f"{view}: {_counts(c)}" for view, c in summary["labels_per_view"].items()),
        "classifier cases (early phase, benign/malignant): " + _counts(summary["classifier_cases"]),
        "ACR density (breasts): " + _counts(summary["acr_density"]),
        "phases (images): " + _counts(summary["phases"]),
    ]
    if "phase_rules" in summary:
        lines.append("phase decided by: " + _counts(summary["phase_rules"]))
    if summary["notes"]:
        lines.append("kept with a caveat: " + _counts(summary["notes"]))
    lines.append(
        f"left out: {summary['left_out_count']}"
        + (f" ({_counts(summary['left_out_by_reason'])})" if summary["left_out_count"] else "")
    )
    for item in summary["left_out"][:MAX_LISTED]:
        detail = f" ({item['detail']})" if item["detail"] else ""
        lines.append(masker(f"  {item['item']}: {item['reason']}{detail}"))
    if summary["left_out_count"] > MAX_LISTED:
        lines.append(f"  … {summary['left_out_count'] - MAX_LISTED} more in the summary file")
    if summary["synthetic"]:
        lines.append(VirtualBiopsyLib.SYNTHETIC_NOTICE)
    lines.append(VirtualBiopsyLib.RESEARCH_USE_NOTICE)
    return "\n".join(lines)


def summary_path_for(manifest_path: Path) -> Path:
    """``manifest.csv`` → ``manifest.summary.json`` (beside it)."""
    return manifest_path.with_name(f"{manifest_path.stem}.summary.json")


def _is_summary(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("format") == SUMMARY_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_outputs(manifest_path: Path, overwrite: bool, inputs: Iterable[Path] = ()) -> None:
    """Refuse to replace anything but an earlier import's own files (and only on request)."""
    summary_path = summary_path_for(manifest_path)
    for source in inputs:
        if source.exists() and source.resolve() in (
            manifest_path.resolve(),
            summary_path.resolve(),
        ):
            raise OutputExistsError(f"{manifest_path}: would overwrite the input {source}")
    for path, ours in ((manifest_path, is_training_manifest), (summary_path, _is_summary)):
        if not path.exists():
            continue
        if not overwrite:
            raise OutputExistsError(
                f"{path}: exists; pass --overwrite to replace an earlier import"
            )
        if not ours(path):
            raise OutputExistsError(f"{path}: exists and is not an earlier import; not replaced")


def write_import(
    result: ImportResult, manifest_path: Path, *, overwrite: bool = False
) -> dict[str, Any]:
    """Write the manifest and its summary JSON atomically; return the summary."""
    check_outputs(manifest_path, overwrite)
    write_training_manifest(manifest_path, result.rows)
    summary = summarize(result, manifest_path)
    summary["manifest_sha256"] = hashlib.sha256(manifest_path.read_bytes()).hexdigest()
    text = json.dumps(summary, indent=2, ensure_ascii=False) + "\n"
    write_text_atomic(summary_path_for(manifest_path), text)
    return summary
