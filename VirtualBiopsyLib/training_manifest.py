"""The training manifest (``manifest.csv``): the images a training run reads, one per row.

Not to be confused with a model package's ``model.json`` (see ``models/package.py``). The
phantom writes a training manifest beside its cohort; ``virtual-biopsy-train import``
writes one for CDD-CESM and for a hospital's DICOM exams; ``Training`` reads it. This
module is the one reader and the one writer of the format, so all three agree.

Columns (UTF-8 CSV, header first): ``patient_id, study_uid, laterality (L|R), view
(CC|MLO), modality (LE|DES), path, label (malignant|benign|normal), acr_density (a–d or
empty), phase (early|late), synthetic (true|false)``. ``path`` is relative to the
manifest's folder, with forward slashes. ``normal`` marks a breast without a lesion: the
generators train on its LE/DES pairs, the benign-vs-malignant classifiers leave it out.
``synthetic`` is the provenance of the image (the phantom writes ``true``); a run on a
manifest with any synthetic row is marked as computed on synthetic data.

An optional last column, ``lesion_mask``, names a mask of the row's lesion: an 8-bit
image file (PNG) on the image's own pixel grid, non-zero inside the lesion, relative to the
manifest like ``path``. Empty means *not annotated* (not "no lesion"); an all-zero mask
means annotated without a lesion. The column is written only when some row has a mask, so
a manifest without annotations keeps its ten columns (and its bytes). The phantom writes
its masks; ``import cdd-cesm`` draws the set's hand-drawn segmentations into masks.
Training uses them for the lesion-region generation metrics only.

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> row = TrainingManifestRow("P1", "1.2.3", "L", View.CC, Modality.LE, folder / "a.dcm",
...                           BiopsyLabel.BENIGN, "b", "early")
>>> manifest = read_training_manifest(write_training_manifest(folder / "manifest.csv", [row]))
>>> manifest.rows[0].label.text, manifest.rows[0].path.name, manifest.synthetic
('benign', 'a.dcm', False)
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path, PurePosixPath
from typing import Any

from VirtualBiopsyLib.atomic_io import write_atomically, write_text_atomic
from VirtualBiopsyLib.errors import VirtualBiopsyError
from VirtualBiopsyLib.roles import Modality, View, slot_name

TRAINING_MANIFEST_NAME = "manifest.csv"
REQUIRED_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "study_uid",
    "laterality",
    "view",
    "modality",
    "path",
    "label",
    "acr_density",
    "phase",
)
TRAINING_MANIFEST_COLUMNS: tuple[str, ...] = (*REQUIRED_COLUMNS, "synthetic")
#: Optional: written only when some row has a lesion mask (see the module docstring).
LESION_MASK_COLUMN = "lesion_mask"
#: Masks kept beside images (an exam folder, the phantom's cohort) live in one of these
#: folders at the folder's top, mirroring the images' paths, each named after its image
#: with this suffix: ``import dicom`` reads them, and image scans never take them for images.
LESION_MASK_SUFFIX = "_lesion_mask.png"
LESION_MASK_FOLDERS: tuple[str, ...] = ("lesion_masks", "synthetic_lesion_masks")  # user, phantom
_IMAGE_SUFFIXES = (".dcm", ".jpg", ".jpeg", ".png")
PHASES: tuple[str, ...] = ("early", "late")
ACR_DENSITIES: tuple[str, ...] = ("a", "b", "c", "d")
_TRUE = ("true", "1", "yes")


class TrainingManifestError(VirtualBiopsyError):
    """A training manifest that cannot be used; names the file, line and problem."""


class BiopsyLabel(IntEnum):
    """The label of a breast. The value is the classifier target (malignant = 1).

    ``NORMAL`` has no target: it is -1 so that "malignant if any image is" (``max``) still
    holds for a patient, and the classifier sets never contain it.
    """

    NORMAL = -1
    BENIGN = 0
    MALIGNANT = 1

    @property
    def text(self) -> str:
        """The manifest's spelling: ``normal``, ``benign`` or ``malignant``."""
        return self.name.lower()

    @classmethod
    def from_text(cls, text: str) -> BiopsyLabel:
        """Parse the manifest's spelling (case and spaces ignored); ``ValueError`` otherwise.

        >>> BiopsyLabel.from_text(" Malignant ")
        <BiopsyLabel.MALIGNANT: 1>
        """
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"label must be malignant, benign or normal, got {text!r}") from None


@dataclass(frozen=True)
class TrainingManifestRow:
    """One image of a training manifest; ``path`` is absolute (resolved when read)."""

    patient_id: str
    study_uid: str
    laterality: str
    view: View
    modality: Modality
    path: Path
    label: BiopsyLabel
    acr_density: str
    phase: str
    synthetic: bool = False
    lesion_mask: Path | None = None  # absolute when read; None: not annotated

    @property
    def slot(self) -> str:
        return slot_name(self.modality, self.view)

    @property
    def classifiable(self) -> bool:
        """True for benign and malignant images: the classifiers' task."""
        return BiopsyLabel(self.label) is not BiopsyLabel.NORMAL


@dataclass(frozen=True)
class TrainingManifest:
    path: Path
    rows: tuple[TrainingManifestRow, ...]
    sha256: str  # of the file's bytes: provenance of every model trained on it
    #: of the file without its ``lesion_mask`` column (``sha256`` when it has none): what a
    #: run learns from. Masks only annotate test images, so runs on one manifest with and
    #: without masks share it and are compared as runs on the same data.
    data_sha256: str = ""

    @property
    def synthetic(self) -> bool:
        """True when any image is marked synthetic (e.g. a phantom cohort)."""
        return any(row.synthetic for row in self.rows)


def read_training_manifest(path: Path | str) -> TrainingManifest:
    """Read and check a training manifest; raises :class:`TrainingManifestError`.

    >>> read_training_manifest("cohort/manifest.csv").rows[0].slot  # doctest: +SKIP
    'LE_CC'
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise TrainingManifestError(
            f"{path}: cannot read training manifest ({error.strerror})"
        ) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise TrainingManifestError(f"{path}: training manifest is not UTF-8 text") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise TrainingManifestError(f"{path}: training manifest lacks columns {', '.join(missing)}")
    rows = tuple(_parse_row(path, number, raw) for number, raw in enumerate(reader, start=2))
    if not rows:
        raise TrainingManifestError(f"{path}: training manifest has no rows")
    sha256 = hashlib.sha256(data).hexdigest()
    without_masks = _without_mask_column(text) if LESION_MASK_COLUMN in reader.fieldnames else None
    data_sha256 = sha256 if without_masks is None else hashlib.sha256(without_masks).hexdigest()
    return TrainingManifest(path=path, rows=rows, sha256=sha256, data_sha256=data_sha256)


def _without_mask_column(text: str) -> bytes:
    """The manifest's CSV without its ``lesion_mask`` column, written as
    :func:`format_training_manifest` writes one without masks (so the same rows without
    masks give the same bytes)."""
    records = list(csv.reader(io.StringIO(text, newline="")))
    drop = records[0].index(LESION_MASK_COLUMN)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows(record[:drop] + record[drop + 1 :] for record in records)
    return buffer.getvalue().encode("utf-8")


def _parse_row(manifest: Path, line: int, raw: dict[str, str | None]) -> TrainingManifestRow:
    where = f"{manifest}: line {line}"
    values = {
        key: (raw.get(key) or "").strip()
        for key in (*TRAINING_MANIFEST_COLUMNS, LESION_MASK_COLUMN)
    }
    try:
        modality = Modality(values["modality"].upper())
        view = View(values["view"].upper())
    except ValueError:
        raise TrainingManifestError(
            f"{where}: unknown modality/view {values['modality']!r}/{values['view']!r}"
        ) from None
    try:
        label = BiopsyLabel.from_text(values["label"])
    except ValueError as error:
        raise TrainingManifestError(f"{where}: {error}") from None
    laterality = values["laterality"].upper()
    if laterality not in ("L", "R"):
        raise TrainingManifestError(f"{where}: laterality must be L or R, got {laterality!r}")
    phase = values["phase"].lower()
    if phase not in PHASES:
        raise TrainingManifestError(f"{where}: phase must be early or late, got {phase!r}")
    density = values["acr_density"].lower()
    if density and density not in ACR_DENSITIES:
        raise TrainingManifestError(f"{where}: acr_density must be a–d or empty, got {density!r}")
    if not values["patient_id"] or not values["path"]:
        raise TrainingManifestError(f"{where}: empty patient_id or path")
    return TrainingManifestRow(
        patient_id=values["patient_id"],
        study_uid=values["study_uid"],
        laterality=laterality,
        view=view,
        modality=modality,
        path=_resolved(manifest.parent / values["path"]),
        label=label,
        acr_density=density,
        phase=phase,
        synthetic=values["synthetic"].lower() in _TRUE,
        lesion_mask=(
            _resolved(manifest.parent / values[LESION_MASK_COLUMN])
            if values[LESION_MASK_COLUMN]
            else None
        ),
    )


def _resolved(path: Path) -> Path:
    """``path`` resolved; absolute but unresolved where resolving fails (a symlink loop:
    ``RuntimeError`` before Python 3.13), so the manifest still reads and the file is
    refused, named, where it is opened, instead of the whole manifest failing here."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path.absolute()


def format_training_manifest(rows: Iterable[TrainingManifestRow], folder: Path) -> str:
    """The CSV text of ``rows`` with paths relative to ``folder`` (the manifest's); the
    ``lesion_mask`` column only when some row has a mask."""
    rows = list(rows)
    masks = any(row.lesion_mask is not None for row in rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(TRAINING_MANIFEST_COLUMNS + ((LESION_MASK_COLUMN,) if masks else ()))
    for row in rows:
        mask = [] if not masks else [_relative(row.lesion_mask, folder) if row.lesion_mask else ""]
        writer.writerow(
            [
                row.patient_id,
                row.study_uid,
                row.laterality,
                View(row.view).value,
                Modality(row.modality).value,
                _relative(row.path, folder),
                BiopsyLabel(row.label).text,
                row.acr_density,
                row.phase,
                "true" if row.synthetic else "false",
                *mask,
            ]
        )
    return buffer.getvalue()


def _relative(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder``, with forward slashes (the manifest's spelling).

    Both resolved, as the reader resolves them: through a folder that is a link to
    another depth (``imports/link -> ../../data``) an unresolved ``..`` would climb
    from the link's target when read and name another file."""
    return Path(os.path.relpath(_resolved(Path(path)), _resolved(Path(folder)))).as_posix()


def write_training_manifest(path: Path, rows: Iterable[TrainingManifestRow]) -> Path:
    """Write a training manifest atomically (a reader never sees half a file)."""
    path = Path(path)
    return write_text_atomic(path, format_training_manifest(rows, path.parent))


def lesion_mask_relative(image_relative: str, folder: str = LESION_MASK_FOLDERS[0]) -> str:
    """Where the mask of the image at ``image_relative`` is kept (relative to the same
    top folder): ``folder``, the image's path, its name with :data:`LESION_MASK_SUFFIX`.

    >>> lesion_mask_relative("PAT1/IM0001.dcm")
    'lesion_masks/PAT1/IM0001_lesion_mask.png'
    >>> lesion_mask_relative("Subtracted images/P1_L_CM_CC .jpg", "synthetic_lesion_masks")
    'synthetic_lesion_masks/Subtracted images/P1_L_CM_CC _lesion_mask.png'
    """
    image = PurePosixPath(image_relative)
    suffix = image.suffix.lower()
    stem = image.name[: -len(suffix)] if suffix in _IMAGE_SUFFIXES else image.name
    return (PurePosixPath(folder) / image.parent / (stem + LESION_MASK_SUFFIX)).as_posix()


def write_lesion_mask(path: Path, mask: Any, notes: dict[str, str]) -> Path:
    """Write ``mask`` (non-zero inside the lesion) as the manifest's mask format, an 8-bit
    0/255 PNG, atomically; ``notes`` become PNG text chunks (who wrote it, synthetic)."""
    import numpy as np
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in notes.items():
        info.add_text(key, value)
    picture = Image.fromarray(np.where(np.asarray(mask) != 0, 255, 0).astype(np.uint8))
    return write_atomically(
        path, lambda temporary: picture.save(temporary, format="PNG", optimize=True, pnginfo=info)
    )


def is_lesion_mask_file(path: Path | str) -> bool:
    """True for a file named as a lesion mask (never an image to read or classify)."""
    return Path(path).name.lower().endswith(LESION_MASK_SUFFIX)


def is_training_manifest(path: Path) -> bool:
    """True when ``path`` starts with a training manifest's header (safe to overwrite)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return tuple(header[: len(REQUIRED_COLUMNS)]) == REQUIRED_COLUMNS


__all__ = [
    "ACR_DENSITIES",
    "LESION_MASK_COLUMN",
    "LESION_MASK_FOLDERS",
    "LESION_MASK_SUFFIX",
    "PHASES",
    "REQUIRED_COLUMNS",
    "TRAINING_MANIFEST_COLUMNS",
    "TRAINING_MANIFEST_NAME",
    "BiopsyLabel",
    "TrainingManifest",
    "TrainingManifestError",
    "TrainingManifestRow",
    "format_training_manifest",
    "is_lesion_mask_file",
    "is_training_manifest",
    "lesion_mask_relative",
    "read_training_manifest",
    "write_lesion_mask",
    "write_training_manifest",
]
