"""A hospital's clinical sheet: biopsy result, ACR density and phase, joined to images.

The sheet (CSV or XLSX) holds one row per image, per breast or per study. Which columns
hold what, and the key a row joins on, are options (or a small JSON mapping file); the
defaults fit a sheet named the obvious way:

===================  ==================================================================
role                 default column names (case, spaces, punctuation ignored)
===================  ==================================================================
sop_instance_uid     SOPInstanceUID, SOP Instance UID, sop_uid
file                 file, file name, filename, path
patient_id           PatientID, patient_id, patient
study_uid            StudyInstanceUID, study_uid, study
laterality           laterality, ImageLaterality, side
view                 view, ViewPosition
label                label, biopsy, biopsy result, histology, pathology, diagnosis
acr_density          acr_density, ACR density, density, breast density
phase                phase
===================  ==================================================================

Joins (``--join``): ``sop`` (SOP Instance UID), ``file`` (path relative to the imported
folder, file name, or name without extension), ``breast`` (patient + laterality),
``view`` (patient + laterality + view), ``study`` (patient + study), or any
comma-separated list of the key roles above. Without ``--join`` the first that the
sheet's columns allow is used, in that order (a study column is added to the patient
joins when present), and the summary says which. Patient IDs made only of digits match
without leading zeros (spreadsheets drop them). Label and phase values are mapped only
as :mod:`~Training.importers.values` allows: explicitly.

A mapping file::

    {"sheet": "biopsies", "join": "breast",
     "columns": {"patient_id": "MRN", "label": "Histology", "acr_density": "ACR"},
     "labels": {"B": "benign", "M": "malignant"}, "phases": {"E": "early", "L": "late"}}
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from Training.importers.sheets import ImportInputError, Sheet, SheetRow, cell_text
from Training.importers.values import (
    LABEL_VALUES,
    PHASE_VALUES,
    ValueMapping,
    parse_density,
)

KEY_ROLES: tuple[str, ...] = (
    "sop_instance_uid",
    "file",
    "patient_id",
    "study_uid",
    "laterality",
    "view",
)
VALUE_ROLES: tuple[str, ...] = ("label", "acr_density", "phase")
DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "sop_instance_uid": ("SOPInstanceUID", "SOP Instance UID", "sop_uid"),
    "file": ("file", "file name", "filename", "path"),
    "patient_id": ("PatientID", "patient_id", "patient"),
    "study_uid": ("StudyInstanceUID", "study_uid", "study"),
    "laterality": ("laterality", "ImageLaterality", "side"),
    "view": ("view", "ViewPosition"),
    "label": ("label", "biopsy", "biopsy result", "histology", "pathology", "diagnosis"),
    "acr_density": ("acr_density", "ACR density", "density", "breast density"),
    "phase": ("phase",),
}
JOIN_PRESETS: dict[str, tuple[str, ...]] = {
    "sop": ("sop_instance_uid",),
    "file": ("file",),
    "view": ("patient_id", "laterality", "view"),
    "breast": ("patient_id", "laterality"),
    "study": ("patient_id", "study_uid"),
}
_LATERALITY = {"l": "L", "left": "L", "r": "R", "right": "R"}
_VIEW = re.compile(r"[LR]?\s*(CC|MLO)", re.IGNORECASE)


@dataclass(frozen=True)
class ImageKeys:
    """What an image offers to join on (from its header and its place in the folder)."""

    sop_instance_uid: str
    relative_path: str  # posix, relative to the imported folder
    patient_id: str
    study_uid: str
    laterality: str
    view: str


@dataclass(frozen=True)
class ClinicalRecord:
    """One sheet row's values for an image (label / phase ``None`` when the cell is empty)."""

    row: int
    label: str | None
    acr_density: str
    phase: str | None


@dataclass(frozen=True)
class ClinicalMapping:
    """How to read a clinical sheet; every field ``None``/empty takes the default."""

    join: tuple[str, ...] | None = None
    columns: Mapping[str, str] = field(default_factory=dict)
    labels: ValueMapping | None = None
    phases: ValueMapping | None = None
    sheet: str | None = None

    @classmethod
    def load(cls, path: Path) -> ClinicalMapping:
        """Read a JSON mapping file (see the module docstring)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ImportInputError(f"{path}: unreadable mapping file ({error})") from None
        if not isinstance(data, dict):
            raise ImportInputError(f"{path}: a mapping file holds one JSON object")
        unknown = set(data) - {"sheet", "join", "columns", "labels", "phases"}
        if unknown:
            raise ImportInputError(f"{path}: unknown keys {', '.join(sorted(unknown))}")
        join = data.get("join")
        return cls(
            join=parse_join(join if isinstance(join, str) else ",".join(join)) if join else None,
            columns=_check_columns(dict(data.get("columns") or {})),
            labels=ValueMapping.from_pairs(data["labels"], LABEL_VALUES, "label")
            if data.get("labels")
            else None,
            phases=ValueMapping.from_pairs(data["phases"], PHASE_VALUES, "phase")
            if data.get("phases")
            else None,
            sheet=data.get("sheet"),
        )

    def updated(self, **changes: object) -> ClinicalMapping:
        """This mapping with the given non-empty fields replaced (command-line options win)."""
        given = {key: value for key, value in changes.items() if value}
        if "columns" in given:
            given["columns"] = {**self.columns, **_check_columns(dict(given["columns"]))}
        return replace(self, **given)


def _check_columns(columns: dict[str, str]) -> dict[str, str]:
    unknown = set(columns) - set(DEFAULT_COLUMNS)
    if unknown:
        raise ImportInputError(
            f"unknown column roles {', '.join(sorted(unknown))}; "
            f"roles are {', '.join(DEFAULT_COLUMNS)}"
        )
    return columns


def parse_join(text: str) -> tuple[str, ...]:
    """``"breast"`` or ``"patient_id,laterality,view"`` → the key roles.

    >>> parse_join("breast"), parse_join("patient_id, study_uid, laterality")
    (('patient_id', 'laterality'), ('patient_id', 'study_uid', 'laterality'))
    """
    text = text.strip()
    if text in JOIN_PRESETS:
        return JOIN_PRESETS[text]
    roles = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [role for role in roles if role not in KEY_ROLES]
    if not roles or unknown:
        raise ImportInputError(
            f"--join {text!r}: use {', '.join(JOIN_PRESETS)} or key roles from "
            f"{', '.join(KEY_ROLES)}"
        )
    if not ({"sop_instance_uid", "file", "patient_id"} & set(roles)):
        raise ImportInputError(f"--join {text!r} must include sop_instance_uid, file or patient_id")
    return roles


def _patient(text: str) -> str:
    return text.lstrip("0") or "0" if text.isdigit() else text


def _file(text: str) -> str:
    return text.replace("\\", "/").strip().removeprefix("./").casefold()


class ClinicalSheet:
    """A sheet with its columns resolved, its values checked, rows indexed by join key."""

    def __init__(self, sheet: Sheet, mapping: ClinicalMapping) -> None:
        self.sheet = sheet
        self.columns = self._resolve_columns(mapping)
        self.join = mapping.join or self._default_join()
        missing = [role for role in self.join if role not in self.columns]
        if missing:
            raise ImportInputError(
                f"{sheet.path}: join on {', '.join(self.join)} needs columns for "
                f"{', '.join(missing)} (set them with --column ROLE=HEADER)"
            )
        if "label" not in self.columns:
            raise ImportInputError(
                f"{sheet.path}: no biopsy-result column (looked for "
                f"{', '.join(DEFAULT_COLUMNS['label'])}; set it with --column label=HEADER)"
            )
        self.labels = mapping.labels or ValueMapping.identity(LABEL_VALUES, "label")
        self.phases = mapping.phases or ValueMapping.identity(PHASE_VALUES, "phase")
        self._check_values()
        self.bad_rows: dict[int, str] = {}
        self.records: dict[tuple[str, ...], list[ClinicalRecord]] = {}
        for row in sheet.rows:
            self._index(row)
        self.used: set[int] = set()

    def _resolve_columns(self, mapping: ClinicalMapping) -> dict[str, str]:
        columns: dict[str, str] = {}
        for role, candidates in DEFAULT_COLUMNS.items():
            if role in mapping.columns:
                header = mapping.columns[role]
                found = self.sheet.find_column(header)
                if found is None:
                    raise ImportInputError(
                        f"{self.sheet.path}: no column {header!r} for {role} (the sheet has "
                        f"{', '.join(map(repr, self.sheet.columns))})"
                    )
                columns[role] = found
            else:
                found = self.sheet.find_column(*candidates)
                if found is not None:
                    columns[role] = found
        return columns

    def _default_join(self) -> tuple[str, ...]:
        for name in ("sop", "file", "view", "breast"):
            roles = JOIN_PRESETS[name]
            if all(role in self.columns for role in roles):
                if "patient_id" in roles and "study_uid" in self.columns:
                    roles = (*roles[:1], "study_uid", *roles[1:])
                return roles
        raise ImportInputError(
            f"{self.sheet.path}: no key to join on: needs a SOP Instance UID, file, or "
            "patient + laterality column (or --join and --column options)"
        )

    def _check_values(self) -> None:
        where = f"{self.sheet.path}, column {self.columns['label']!r}"
        self.labels.check(
            (row.values[self.columns["label"]] for row in self.sheet.rows), where, "--labels"
        )
        if "phase" in self.columns:
            where = f"{self.sheet.path}, column {self.columns['phase']!r}"
            self.phases.check(
                (row.values[self.columns["phase"]] for row in self.sheet.rows), where, "--phases"
            )

    def _cell(self, row: SheetRow, role: str) -> str:
        return cell_text(row.values.get(self.columns[role])) if role in self.columns else ""

    def _row_key(self, row: SheetRow) -> tuple[str, ...] | None:
        key = []
        for role in self.join:
            text = self._cell(row, role)
            if role == "laterality":
                text = _LATERALITY.get(text.lower(), "")
            elif role == "view":
                match = _VIEW.fullmatch(text)
                text = match.group(1).upper() if match else ""
            elif role == "patient_id":
                text = _patient(text)
            elif role == "file":
                text = _file(text)
            if not text:
                return None
            key.append(text)
        return tuple(key)

    def _index(self, row: SheetRow) -> None:
        key = self._row_key(row)
        if key is None:
            self.bad_rows[row.number] = (
                "key cells empty or unreadable (" + ", ".join(self.join) + ")"
            )
            return
        density = ""
        if "acr_density" in self.columns:
            try:
                density = parse_density(row.values.get(self.columns["acr_density"]))
            except ValueError:
                self.bad_rows[row.number] = "unreadable ACR density"
                return
        phase_cell = self._cell(row, "phase")
        record = ClinicalRecord(
            row=row.number,
            label=self.labels.map(self._cell(row, "label")),
            acr_density=density,
            phase=self.phases.map(phase_cell) if phase_cell else None,
        )
        self.records.setdefault(key, []).append(record)

    def image_key_candidates(self, image: ImageKeys) -> list[tuple[str, ...]]:
        """The keys an image could be listed under (for ``file``: path, name, stem)."""
        values: dict[str, list[str]] = {
            "sop_instance_uid": [image.sop_instance_uid],
            "file": list(
                dict.fromkeys(
                    _file(text)
                    for text in (
                        image.relative_path,
                        Path(image.relative_path).name,
                        Path(image.relative_path).stem,
                    )
                )
            ),
            "patient_id": [_patient(image.patient_id)],
            "study_uid": [image.study_uid],
            "laterality": [image.laterality],
            "view": [image.view],
        }
        keys: list[tuple[str, ...]] = [()]
        for role in self.join:
            keys = [(*key, value) for key in keys for value in values[role] if value]
        return keys

    def lookup(self, image: ImageKeys) -> list[ClinicalRecord]:
        """The sheet rows of an image (first candidate key that has rows); marks them used."""
        for key in self.image_key_candidates(image):
            records = self.records.get(key)
            if records:
                self.used.update(record.row for record in records)
                return records
        return []

    def unused_rows(self) -> list[int]:
        listed = {record.row for records in self.records.values() for record in records}
        return sorted(listed - self.used)

    def patient_ids(self) -> set[str]:
        """Every patient ID the sheet holds (to mask them on the console)."""
        if "patient_id" not in self.columns:
            return set()
        return {self._cell(row, "patient_id") for row in self.sheet.rows} - {""}

    def settings(self) -> dict[str, object]:
        return {
            "clinical_sheet": self.sheet.path.name,
            "sheet": self.sheet.name,
            "join": list(self.join),
            "columns": dict(self.columns),
            "label_mapping": {"source": self.labels.source, "values": self.labels.describe()},
            "phase_mapping": {"source": self.phases.source, "values": self.phases.describe()}
            if "phase" in self.columns
            else None,
        }
