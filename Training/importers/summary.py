"""What an import produced and what it left out, for the console and for the record.

The summary counts images, patients, breasts, complete LE/DES pairs per view, labels per
view, classifier cases, ACR densities, phases and images with a lesion mask (with the
regions drawn, by shape), and lists every image, sheet row or lesion region left out with
its reason. It goes to a JSON file beside the manifest (which holds patient
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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import VirtualBiopsyLib
from Training.datasets import group_cases, image_pairs
from Training.importers.masks import (
    MaskDrawing,
    check_masks_folder,
    lesion_masks_folder_for,
    other_imports_manifest,
    regions_by_shape,
    remove_own_masks_folder,
    write_masks_folder,
)
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
    mask_drawings: dict[Path, MaskDrawing] = field(default_factory=dict)  # image → its regions
    regions_left_out: list[LeftOut] = field(default_factory=list)  # lesion regions not drawn
    lesion_masks_source: str | None = None  # where masks come from, or why none; None: n/a

    def has_mask(self, row: TrainingManifestRow) -> bool:
        return row.lesion_mask is not None or row.path in self.mask_drawings

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
    summary["lesion_masks"] = _lesion_mask_summary(result)
    if result.phase_rules:
        summary["phase_rules"] = dict(Counter(rule["rule"] for rule in result.phase_rules))
        summary["phase_per_image"] = result.phase_rules
    if synthetic:
        summary["synthetic_notice"] = VirtualBiopsyLib.SYNTHETIC_NOTICE
    return summary


def _lesion_mask_summary(result: ImportResult) -> dict[str, Any]:
    masked = [row for row in result.rows if result.has_mask(row)]
    return {
        "source": result.lesion_masks_source,
        "images_per_modality": dict(Counter(row.modality.value for row in masked)),
        "regions_by_shape": regions_by_shape(result.mask_drawings),
        "regions_left_out_count": len(result.regions_left_out),
        "regions_left_out_by_reason": dict(Counter(item.kind for item in result.regions_left_out)),
        "regions_left_out": [item.to_dict() for item in result.regions_left_out],
    }


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
    masks = summary.get("lesion_masks") or {}
    if masks.get("source") is not None or masks.get("images_per_modality"):
        lines.extend(_lesion_mask_lines(masks, masker))
    lines.extend(
        _left_out_lines("left out", summary["left_out"], summary["left_out_by_reason"], masker)
    )
    if summary["synthetic"]:
        lines.append(VirtualBiopsyLib.SYNTHETIC_NOTICE)
    lines.append(VirtualBiopsyLib.RESEARCH_USE_NOTICE)
    return "\n".join(lines)


def _lesion_mask_lines(masks: dict[str, Any], masker: PatientMasker) -> list[str]:
    """Images with a lesion mask per modality, where from, and every region left out."""
    per_modality = masks["images_per_modality"]
    if per_modality:
        shapes = masks["regions_by_shape"]
        regions = f", regions {_counts(shapes)}" if shapes else ""
        line = f"lesion masks (images): {_counts(per_modality)} ({masks['source']}{regions})"
    else:
        line = f"lesion masks: none ({masks['source']})"
    lines = [line]
    if masks["regions_left_out_count"]:
        lines.extend(
            _left_out_lines(
                "lesion regions left out",
                masks["regions_left_out"],
                masks["regions_left_out_by_reason"],
                masker,
            )
        )
    return lines


def _left_out_lines(
    title: str, items: list[dict[str, str]], by_reason: dict[str, int], masker: PatientMasker
) -> list[str]:
    """``title: N (reason n, …)`` and the first items, names masked."""
    lines = [f"{title}: {len(items)}" + (f" ({_counts(by_reason)})" if items else "")]
    for item in items[:MAX_LISTED]:
        detail = f" ({item['detail']})" if item["detail"] else ""
        lines.append(masker(f"  {item['item']}: {item['reason']}{detail}"))
    if len(items) > MAX_LISTED:
        lines.append(f"  … {len(items) - MAX_LISTED} more in the summary file")
    return lines


def summary_path_for(manifest_path: Path) -> Path:
    """``manifest.csv`` → ``manifest.summary.json`` (beside it)."""
    return manifest_path.with_name(f"{manifest_path.stem}.summary.json")


def _is_summary(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("format") == SUMMARY_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_outputs(manifest_path: Path, overwrite: bool, inputs: Iterable[Path] = ()) -> None:
    """Refuse to replace anything but an earlier import's own files (and only on request):
    the manifest, its summary and its lesion masks folder."""
    summary_path = summary_path_for(manifest_path)
    masks_folder = lesion_masks_folder_for(manifest_path).resolve()
    for source in inputs:
        if not source.exists():
            continue
        resolved = source.resolve()
        if resolved in (manifest_path.resolve(), summary_path.resolve()) or (
            masks_folder == resolved or masks_folder in resolved.parents
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
    check_masks_folder(lesion_masks_folder_for(manifest_path), overwrite, manifest_path)


def _write_lesion_masks(
    result: ImportResult, manifest_path: Path, overwrite: bool
) -> list[TrainingManifestRow]:
    """Draw the masks into the folder beside the manifest; the rows, naming their masks.

    Without masks to draw, an earlier import's masks folder (checked to be its own) would
    be stale: it goes, as its manifest is replaced."""
    folder = lesion_masks_folder_for(manifest_path)
    if not result.mask_drawings:
        if overwrite and other_imports_manifest(folder, manifest_path) is None:
            remove_own_masks_folder(folder)
        return result.rows
    written = write_masks_folder(
        folder,
        result.mask_drawings,
        replace=overwrite,
        synthetic=any(row.synthetic for row in result.rows),
        provenance={"manifest": manifest_path.name, "source": result.lesion_masks_source},
    )
    return [replace(row, lesion_mask=written.get(row.path, row.lesion_mask)) for row in result.rows]


def write_import(
    result: ImportResult, manifest_path: Path, *, overwrite: bool = False
) -> dict[str, Any]:
    """Write the lesion masks (a folder, whole), the manifest and its summary JSON
    atomically; return the summary."""
    check_outputs(manifest_path, overwrite)
    rows = _write_lesion_masks(result, manifest_path, overwrite)
    write_training_manifest(manifest_path, rows)
    summary = summarize(result, manifest_path)
    summary["lesion_masks"]["folder"] = (
        lesion_masks_folder_for(manifest_path).name if result.mask_drawings else None
    )
    summary["manifest_sha256"] = hashlib.sha256(manifest_path.read_bytes()).hexdigest()
    text = json.dumps(summary, indent=2, ensure_ascii=False) + "\n"
    write_text_atomic(summary_path_for(manifest_path), text)
    return summary
