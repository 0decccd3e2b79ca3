"""Training's view of a training manifest: cases for the classifiers, pairs for the generators.

The manifest format and its one reader live in the library
(:mod:`VirtualBiopsyLib.training_manifest`): the phantom and the importers write it,
Training reads it. Classifier cases hold benign and malignant breasts only (``normal``
rows are left out of that task); generator pairs use every LE/DES pair.
Patient IDs stay inside this module's objects: files we write use :func:`patient_key`,
a one-way hash, never the raw ID.

>>> from pathlib import Path
>>> cohort = read_training_manifest(Path("cohort/manifest.csv"))  # doctest: +SKIP
>>> cases = group_cases(cohort.rows, phase="early")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from VirtualBiopsyLib.roles import SLOTS, VIEWS, Modality, View
from VirtualBiopsyLib.training_manifest import (
    REQUIRED_COLUMNS,
    BiopsyLabel,
    TrainingManifest,
    TrainingManifestError,
    TrainingManifestRow,
    read_training_manifest,
)

# The names Training used before the library held the format (kept so that modules being
# edited elsewhere keep working; they are the same objects, not second definitions).
Manifest = TrainingManifest
ManifestRow = TrainingManifestRow
ManifestError = TrainingManifestError
read_manifest = read_training_manifest
MANIFEST_COLUMNS = REQUIRED_COLUMNS
LABELS: dict[str, int] = {"benign": BiopsyLabel.BENIGN, "malignant": BiopsyLabel.MALIGNANT}


@dataclass
class TrainingCase:
    """One breast of one study: up to four images (slots) and the biopsy label."""

    patient_id: str
    study_uid: str
    laterality: str
    label: int
    acr_density: str
    slots: dict[str, Path] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Pseudonymous case name written to outputs (never the raw patient ID)."""
        text = f"{self.patient_id}|{self.study_uid}|{self.laterality}"
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    @property
    def patient(self) -> str:
        return patient_key(self.patient_id)


@dataclass(frozen=True)
class ImagePair:
    """A registered LE/DES pair of one view, for generator training.

    ``label`` is the breast's biopsy label (test metrics per label); ``le_mask`` and
    ``des_mask`` are the rows' lesion masks (None: not annotated), for the lesion-region
    test metrics (:mod:`Training.lesion_masks`).
    """

    patient_id: str
    view: View
    le_path: Path
    des_path: Path
    label: int | None = None
    le_mask: Path | None = None
    des_mask: Path | None = None

    @property
    def patient(self) -> str:
        return patient_key(self.patient_id)


def patient_key(patient_id: str) -> str:
    """One-way pseudonym of a patient ID, used in split files and predictions.

    >>> patient_key("P001") == patient_key("P001") != patient_key("P002")
    True
    """
    return hashlib.sha256(f"patient|{patient_id}".encode()).hexdigest()[:16]


def group_cases(
    rows: Iterable[TrainingManifestRow], phase: str | None = "early"
) -> list[TrainingCase]:
    """Group benign and malignant rows into cases (patient, study, laterality).

    Keeps one phase if given (the paper classifies early-phase images) and leaves out
    ``normal`` rows. The first row of a slot wins; a case is malignant if any row is.
    """
    cases: dict[tuple[str, str, str], TrainingCase] = {}
    for row in rows:
        if (phase is not None and row.phase != phase) or not row.classifiable:
            continue
        identity = (row.patient_id, row.study_uid, row.laterality)
        case = cases.setdefault(
            identity,
            TrainingCase(
                row.patient_id, row.study_uid, row.laterality, int(row.label), row.acr_density
            ),
        )
        case.label = max(case.label, int(row.label))
        case.slots.setdefault(row.slot, row.path)
    return sorted(cases.values(), key=lambda case: case.key)


def image_pairs(rows: Iterable[TrainingManifestRow], view: View | str) -> list[ImagePair]:
    """LE/DES pairs of one view (every phase and label; acquisitions having both images).

    The first row of each modality wins; a pair is malignant if either row is.
    """
    view = View(view)
    groups: dict[tuple[str, str, str, str], dict[Modality, TrainingManifestRow]] = {}
    for row in rows:
        if row.view is view:
            identity = (row.patient_id, row.study_uid, row.laterality, row.phase)
            groups.setdefault(identity, {}).setdefault(row.modality, row)
    pairs = [
        ImagePair(
            identity[0],
            view,
            images[Modality.LE].path,
            images[Modality.DES].path,
            label=max(int(images[Modality.LE].label), int(images[Modality.DES].label)),
            le_mask=images[Modality.LE].lesion_mask,
            des_mask=images[Modality.DES].lesion_mask,
        )
        for identity, images in sorted(groups.items())
        if Modality.LE in images and Modality.DES in images
    ]
    return pairs


def cases_with_slot(cases: Iterable[TrainingCase], slot: str) -> list[TrainingCase]:
    if slot not in SLOTS:
        raise ValueError(f"unknown slot {slot!r}")
    return [case for case in cases if slot in case.slots]


__all__ = [
    "LABELS",
    "MANIFEST_COLUMNS",
    "VIEWS",
    "ImagePair",
    "Manifest",
    "ManifestError",
    "ManifestRow",
    "TrainingCase",
    "TrainingManifest",
    "TrainingManifestError",
    "TrainingManifestRow",
    "cases_with_slot",
    "group_cases",
    "image_pairs",
    "patient_key",
    "read_manifest",
    "read_training_manifest",
]
