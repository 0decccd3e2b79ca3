"""The training manifest: one row per image, grouped into cases and LE/DES pairs.

A manifest is the phantom's CSV format (``patient_id, study_uid, laterality, view,
modality, path, label, acr_density, phase``, optional ``synthetic``; paths relative to the
manifest's folder).
Patient IDs stay inside this module's objects: files we write use :func:`patient_key`,
a one-way hash, never the raw ID.

>>> from pathlib import Path
>>> cohort = read_manifest(Path("cohort/manifest.csv"))  # doctest: +SKIP
>>> cases = group_cases(cohort.rows, phase="early")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from VirtualBiopsyLib.errors import VirtualBiopsyError
from VirtualBiopsyLib.phantom.cohort import REQUIRED_MANIFEST_COLUMNS
from VirtualBiopsyLib.roles import SLOTS, VIEWS, Modality, View, slot_name

MANIFEST_COLUMNS = REQUIRED_MANIFEST_COLUMNS
LABELS: dict[str, int] = {"benign": 0, "malignant": 1}


class ManifestError(VirtualBiopsyError):
    """A manifest that cannot be used for training; names the file, row and problem."""


@dataclass(frozen=True)
class ManifestRow:
    """One image of the manifest, its path resolved against the manifest's folder."""

    patient_id: str
    study_uid: str
    laterality: str
    view: View
    modality: Modality
    path: Path
    label: int
    acr_density: str
    phase: str
    synthetic: bool = False  # the optional ``synthetic`` column (the phantom writes "true")

    @property
    def slot(self) -> str:
        return slot_name(self.modality, self.view)


@dataclass(frozen=True)
class Manifest:
    path: Path
    rows: tuple[ManifestRow, ...]
    sha256: str  # of the manifest file: provenance of every model trained on it

    @property
    def synthetic(self) -> bool:
        """True when any image is marked synthetic (a phantom cohort)."""
        return any(row.synthetic for row in self.rows)


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
    """A registered LE/DES pair of one view, for generator training."""

    patient_id: str
    view: View
    le_path: Path
    des_path: Path

    @property
    def patient(self) -> str:
        return patient_key(self.patient_id)


def patient_key(patient_id: str) -> str:
    """One-way pseudonym of a patient ID, used in split files and predictions.

    >>> patient_key("P001") == patient_key("P001") != patient_key("P002")
    True
    """
    return hashlib.sha256(f"patient|{patient_id}".encode()).hexdigest()[:16]


def read_manifest(path: Path) -> Manifest:
    """Read and check a manifest CSV; raises :class:`ManifestError` naming the bad row.

    >>> manifest = read_manifest(Path("cohort/manifest.csv"))  # doctest: +SKIP
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ManifestError(f"{path}: cannot read manifest ({error.strerror})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: manifest is not UTF-8 text") from None
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ManifestError(f"{path}: manifest lacks columns {', '.join(missing)}")
    rows = tuple(_parse_row(path, number, raw) for number, raw in enumerate(reader, start=2))
    if not rows:
        raise ManifestError(f"{path}: manifest has no rows")
    return Manifest(path=path, rows=rows, sha256=hashlib.sha256(data).hexdigest())


def _parse_row(manifest: Path, line: int, raw: dict[str, str]) -> ManifestRow:
    where = f"{manifest}: line {line}"
    values = {key: (raw.get(key) or "").strip() for key in MANIFEST_COLUMNS}
    try:
        modality = Modality(values["modality"].upper())
        view = View(values["view"].upper())
    except ValueError:
        raise ManifestError(
            f"{where}: unknown modality/view {values['modality']!r}/{values['view']!r}"
        ) from None
    label = values["label"].lower()
    if label not in LABELS:
        raise ManifestError(f"{where}: label must be malignant or benign, got {label!r}")
    if not values["patient_id"] or not values["path"]:
        raise ManifestError(f"{where}: empty patient_id or path")
    return ManifestRow(
        patient_id=values["patient_id"],
        study_uid=values["study_uid"],
        laterality=values["laterality"].upper(),
        view=view,
        modality=modality,
        path=(manifest.parent / values["path"]).resolve(),
        label=LABELS[label],
        acr_density=values["acr_density"].lower(),
        phase=values["phase"].lower(),
        synthetic=(raw.get("synthetic") or "").strip().lower() in ("true", "1", "yes"),
    )


def group_cases(rows: Iterable[ManifestRow], phase: str | None = "early") -> list[TrainingCase]:
    """Group rows into cases (patient, study, laterality), keeping one phase if given.

    The first row of a slot wins; a case's label is malignant if any of its rows is.
    """
    cases: dict[tuple[str, str, str], TrainingCase] = {}
    for row in rows:
        if phase is not None and row.phase != phase:
            continue
        identity = (row.patient_id, row.study_uid, row.laterality)
        case = cases.setdefault(
            identity,
            TrainingCase(row.patient_id, row.study_uid, row.laterality, row.label, row.acr_density),
        )
        case.label = max(case.label, row.label)
        case.slots.setdefault(row.slot, row.path)
    return sorted(cases.values(), key=lambda case: case.key)


def image_pairs(rows: Iterable[ManifestRow], view: View | str) -> list[ImagePair]:
    """LE/DES pairs of one view (every phase; only acquisitions having both images)."""
    view = View(view)
    groups: dict[tuple[str, str, str, str], dict[Modality, Path]] = {}
    for row in rows:
        if row.view is view:
            identity = (row.patient_id, row.study_uid, row.laterality, row.phase)
            groups.setdefault(identity, {}).setdefault(row.modality, row.path)
    pairs = [
        ImagePair(identity[0], view, images[Modality.LE], images[Modality.DES])
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
    "cases_with_slot",
    "group_cases",
    "image_pairs",
    "patient_key",
    "read_manifest",
]
