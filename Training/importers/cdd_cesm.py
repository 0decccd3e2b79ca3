"""Import the public CDD-CESM set, as downloaded, into a training manifest.

The folder holds ``Low energy images of CDD-CESM/`` and ``Subtracted images of CDD-CESM/``
(``P{id}_{L|R}_{DM|CM}_{CC|MLO}.jpg``, some names with stray spaces) and
``Radiology manual annotations.xlsx`` (sheet ``all``) or a CSV export of it. Image roles
come from the library's readers (the code ``virtual-biopsy inspect`` runs). The sheet has
one row per finding: rows are grouped on ``Image_name`` (given without ``.jpg``).
``Pathology Classification/ Follow up`` gives Normal / Benign / Malignant (the data set's
own three values); a breast whose images disagree is left out. Density is read from 1–4,
2.0 or a–d. Every image and row left out is reported with the reason.

The phantom's ``--layout cdd-cesm`` writes this layout; importing it gives back exactly
the phantom's own manifest (a test checks it byte for byte).

>>> result = import_cdd_cesm(Path("CDD-CESM"))  # doctest: +SKIP
>>> write_import(result, Path("cdd/manifest.csv"))["pairs_per_view"]  # doctest: +SKIP
{'CC': 500, 'MLO': 502}
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from Training.importers.sheets import (
    ImportInputError,
    Sheet,
    SheetRow,
    cell_text,
    normalise_header,
    read_sheet,
)
from Training.importers.summary import ImportResult, LeftOut
from Training.importers.values import breast_label, parse_density
from VirtualBiopsyLib import SYNTHETIC_NOTICE
from VirtualBiopsyLib.images.mammogram import ImageInfo
from VirtualBiopsyLib.images.raster_reader import parse_cdd_cesm_name
from VirtualBiopsyLib.images.readers import scan
from VirtualBiopsyLib.phantom.cdd_cesm import (
    ANNOTATIONS_NAME,
    LOW_ENERGY_FOLDER,
    SUBTRACTED_FOLDER,
)
from VirtualBiopsyLib.roles import MODALITIES, VIEWS, Modality
from VirtualBiopsyLib.training_manifest import BiopsyLabel, TrainingManifestRow

SHEET_NAME = "all"
PATHOLOGY_VALUES = {"normal": BiopsyLabel.NORMAL, "benign": BiopsyLabel.BENIGN,
                    "malignant": BiopsyLabel.MALIGNANT}  # fmt: skip
_TYPE_CODES = {"DM": Modality.LE, "CESM": Modality.DES}
_FOLDER_OF = {Modality.LE: LOW_ENERGY_FOLDER, Modality.DES: SUBTRACTED_FOLDER}

ImageKey = tuple[str, str, Modality, str]  # patient, side, modality, view


@dataclass
class _Annotation:
    """The sheet rows of one image (one per finding)."""

    name: str
    rows: list[SheetRow]
    labels: set[BiopsyLabel]
    densities: list[str]  # parsed, in sheet order, empty strings dropped
    synthetic: bool


def _find_child(folder: Path, wanted: str, is_dir: bool) -> Path | None:
    """A child whose name matches ``wanted`` ignoring case, spaces and punctuation."""
    form = normalise_header(wanted)
    for child in sorted(folder.iterdir()):
        if child.is_dir() == is_dir and normalise_header(child.name) == form:
            return child
    return None


def find_annotations(folder: Path) -> Path:
    """``Radiology manual annotations.xlsx`` or its CSV export in ``folder``."""
    stem = Path(ANNOTATIONS_NAME).stem
    for suffix in (".xlsx", ".csv"):
        found = _find_child(folder, stem + suffix, is_dir=False)
        if found is not None:
            return found
    raise ImportInputError(
        f"{folder}: no {ANNOTATIONS_NAME!r} (or its .csv export); pass --annotations FILE"
    )


def _image_key(info: ImageInfo) -> ImageKey:
    return (info.patient_id or "", info.laterality.value, info.modality, info.view.value)


def _relative(path: Path, folder: Path) -> str:
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:
        return path.as_posix()


def _name_key(path: Path) -> ImageKey | None:
    name = parse_cdd_cesm_name(path.name)
    if name is None:
        return None
    return (name.patient_id, name.laterality.value, name.modality, name.view.value)


def _scan_images(
    folder: Path,
    image_folders: dict[Modality, Path],
    left_out: list[LeftOut],
    unusable: set[ImageKey],
) -> dict[ImageKey, ImageInfo]:
    """Usable images by key; ``unusable`` gets the keys of files present but left out."""
    images: dict[ImageKey, ImageInfo] = {}
    for entry in scan(list(image_folders.values())):
        item = _relative(entry.path, folder)
        if entry.status == "error":
            left_out.append(LeftOut(item, "unreadable file", entry.reason or ""))
            if (key := _name_key(entry.path)) is not None:
                unusable.add(key)
            continue
        if entry.status == "skipped" or entry.info is None:
            left_out.append(LeftOut(item, "not a CDD-CESM image", entry.reason or ""))
            continue
        info = entry.info
        expected = image_folders[info.modality]
        if expected not in entry.path.parents:
            left_out.append(
                LeftOut(item, "image in the wrong folder", f"its name says {info.modality.value}")
            )
            unusable.add(_image_key(info))
            continue
        key = _image_key(info)
        if key in images:
            kept = images[key].path.name
            left_out.append(LeftOut(item, "duplicate image", f"same name as {kept!r}, kept"))
            continue
        images[key] = info
    return images


def _columns(sheet: Sheet) -> dict[str, str | None]:
    return {
        "image_name": sheet.require_column("Image_name", "Image_name", "image name"),
        "pathology": sheet.require_column(
            "pathology", "Pathology Classification/ Follow up", "Pathology Classification"
        ),
        "density": sheet.find_column("Breast density (ACR)", "density"),
        "type": sheet.find_column("Type"),
        "tags": sheet.find_column("Tags"),
        "machine": sheet.find_column("Machine"),
    }


def _read_annotations(
    sheet: Sheet, left_out: list[LeftOut], notes: Counter
) -> dict[ImageKey, _Annotation]:
    columns = _columns(sheet)
    annotations: dict[ImageKey, _Annotation] = {}
    for row in sheet.rows:
        where = f"sheet row {row.number}"
        raw_name = cell_text(row.values[columns["image_name"]])
        name = parse_cdd_cesm_name(raw_name)
        if name is None:
            left_out.append(LeftOut(where, "Image_name is not P{id}_{L|R}_{DM|CM}_{CC|MLO}"))
            continue
        if columns["type"]:
            type_text = cell_text(row.values[columns["type"]]).upper()
            if type_text in _TYPE_CODES and _TYPE_CODES[type_text] is not name.modality:
                left_out.append(
                    LeftOut(where, "Type disagrees with Image_name", f"Type {type_text}")
                )
                continue
        pathology = cell_text(row.values[columns["pathology"]]).lower()
        if pathology not in PATHOLOGY_VALUES:
            detail = f"{pathology!r}" if pathology else "empty"
            left_out.append(LeftOut(where, "unknown pathology value", detail))
            continue
        density = ""
        if columns["density"]:
            try:
                density = parse_density(row.values[columns["density"]])
            except ValueError:
                notes["unreadable ACR density (row kept, density empty)"] += 1
        marker = " ".join(
            cell_text(row.values[columns[c]]) for c in ("tags", "machine") if columns[c]
        )
        key = (name.patient_id, name.laterality.value, name.modality, name.view.value)
        canonical = f"{name.patient_id}_{name.laterality.value}_" + (
            f"{'DM' if name.modality is Modality.LE else 'CM'}_{name.view.value}"
        )
        annotation = annotations.setdefault(key, _Annotation(canonical, [], set(), [], False))
        annotation.rows.append(row)
        annotation.labels.add(PATHOLOGY_VALUES[pathology])
        if density:
            annotation.densities.append(density)
        annotation.synthetic |= "synthetic" in marker.lower()
    return annotations


def _order(row: TrainingManifestRow) -> tuple:
    """Patients by number, then side, view (CC, MLO) and modality (LE, DES)."""
    digits = "".join(ch for ch in row.patient_id if ch.isdigit())
    return (
        int(digits) if digits else 0,
        row.patient_id,
        row.laterality,
        VIEWS.index(row.view),
        MODALITIES.index(row.modality),
    )


def import_cdd_cesm(
    folder: Path, annotations: Path | None = None, sheet_name: str | None = None
) -> ImportResult:
    """Read a CDD-CESM folder; return the rows and the leave-out report (nothing written)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImportInputError(f"{folder}: no such folder")
    image_folders: dict[Modality, Path] = {}
    for modality, name in _FOLDER_OF.items():
        found = _find_child(folder, name, is_dir=True)
        if found is None:
            raise ImportInputError(f"{folder}: not a CDD-CESM folder (no {name!r} inside)")
        image_folders[modality] = found
    annotations = Path(annotations) if annotations else find_annotations(folder)
    if sheet_name is None and annotations.suffix.lower() != ".csv":
        sheet_name = SHEET_NAME
    sheet = read_sheet(annotations, sheet_name)
    left_out: list[LeftOut] = []
    notes: Counter = Counter()
    unusable: set[ImageKey] = set()
    images = _scan_images(folder, image_folders, left_out, unusable)
    annotated = _read_annotations(sheet, left_out, notes)
    synthetic = any(a.synthetic for a in annotated.values()) or SYNTHETIC_NOTICE in sheet.notes

    for key, info in images.items():
        if key not in annotated:
            left_out.append(LeftOut(_relative(info.path, folder), "image without annotation"))
    for key, annotation in annotated.items():
        if key not in images and key not in unusable:  # those are reported as files
            numbers = ", ".join(str(row.number) for row in annotation.rows)
            left_out.append(
                LeftOut(f"sheet row {numbers}", "annotation without image", annotation.name)
            )

    breasts: dict[tuple[str, str], list[ImageKey]] = defaultdict(list)
    for key in images:
        if key in annotated:
            breasts[(key[0], key[1])].append(key)
    rows: list[TrainingManifestRow] = []
    for keys in breasts.values():
        labels = set().union(*(annotated[key].labels for key in keys))
        label_text = breast_label(label.text for label in labels)
        if label_text is None:
            names = ", ".join(sorted(label.text for label in labels))
            for key in keys:
                item = _relative(images[key].path, folder)
                left_out.append(LeftOut(item, "conflicting labels for one breast", names))
            continue
        if len(labels) > 1:
            notes["breast with normal and abnormal images (labelled by the finding)"] += 1
        densities = [d for key in keys for d in annotated[key].densities]
        if len(set(densities)) > 1:
            notes["breast with differing densities (first row's used)"] += 1
        for key in keys:
            info = images[key]
            rows.append(
                TrainingManifestRow(
                    patient_id=key[0],
                    study_uid=info.study_uid or "",
                    laterality=key[1],
                    view=info.view,
                    modality=info.modality,
                    path=info.path,
                    label=BiopsyLabel.from_text(label_text),
                    acr_density=densities[0] if densities else "",
                    phase="early",
                    synthetic=synthetic,
                )
            )
    rows.sort(key=_order)
    settings = {
        "annotations": annotations.name,
        "sheet": sheet.name,
        "label_values": {"Normal": "normal", "Benign": "benign", "Malignant": "malignant"},
        "phase": "early for every image (CDD-CESM has one acquisition per view)",
        "synthetic_marker": "annotation Tags/Machine or notice sheet say synthetic"
        if synthetic
        else None,
    }
    seen = {key[0] for key in images} | {key[0] for key in annotated}
    return ImportResult("cdd-cesm", folder, rows, left_out, settings, notes=notes, patient_ids=seen)
