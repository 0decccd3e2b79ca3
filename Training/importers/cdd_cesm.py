"""Import the public CDD-CESM set, as downloaded, into a training manifest.

The folder holds ``Low energy images of CDD-CESM/`` and ``Subtracted images of CDD-CESM/``
(``P{id}_{L|R}_{DM|CM}_{CC|MLO}.jpg``, some names with stray spaces) and
``Radiology manual annotations.xlsx`` (sheet ``all``) or a CSV export of it. Image roles
come from the library's readers (the code ``virtual-biopsy inspect`` runs). The sheet has
one row per finding: rows are grouped on ``Image_name`` (given without ``.jpg``).
``Pathology Classification/ Follow up`` gives Normal / Benign / Malignant (the data set's
own three values); a breast whose images disagree is left out. Density is read from 1–4,
2.0 or a–d. Every image and row left out is reported with the reason.

Lesion masks come from the set's hand-drawn segmentations,
``Radiology_hand_drawn_segmentations_v2.csv`` (a VIA export, found in the folder by name
or given; :mod:`~Training.importers.segmentations`): every region of an image is drawn
into one mask on its pixel grid, written beside the manifest by ``write_import``. Without
the file no image has a mask, and the summary says so. Each region left out is listed.

The phantom's ``--layout cdd-cesm`` writes this layout; importing it gives back the
phantom's own manifest (a test checks it byte for byte but for the mask paths, and the
masks by content).

>>> result = import_cdd_cesm(Path("CDD-CESM"))  # doctest: +SKIP
>>> write_import(result, Path("cdd/manifest.csv"))["pairs_per_view"]  # doctest: +SKIP
{'CC': 500, 'MLO': 502}
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from Training.importers.masks import MaskDrawing
from Training.importers.segmentations import (
    ImageRegions,
    Segmentations,
    find_segmentations,
    read_segmentations,
)
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
from VirtualBiopsyLib.images.raster_reader import CddCesmName, parse_cdd_cesm_name
from VirtualBiopsyLib.images.readers import scan
from VirtualBiopsyLib.phantom.cdd_cesm import (
    ANNOTATIONS_NAME,
    LOW_ENERGY_FOLDER,
    SUBTRACTED_FOLDER,
)
from VirtualBiopsyLib.phantom.segmentations import SEGMENTATIONS_NAME
from VirtualBiopsyLib.roles import MODALITIES, VIEWS, Modality
from VirtualBiopsyLib.training_manifest import BiopsyLabel, TrainingManifestRow

SHEET_NAME = "all"
PATHOLOGY_VALUES = {"normal": BiopsyLabel.NORMAL, "benign": BiopsyLabel.BENIGN,
                    "malignant": BiopsyLabel.MALIGNANT}  # fmt: skip
_TYPE_CODES = {"DM": Modality.LE, "CESM": Modality.DES}
_FOLDER_OF = {Modality.LE: LOW_ENERGY_FOLDER, Modality.DES: SUBTRACTED_FOLDER}

ImageKey = tuple[str, str, Modality, str]  # patient, side, modality, view
_PATIENT_TOKEN = re.compile(r"(?<![0-9A-Za-z])P\s*\d+", re.IGNORECASE)


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


def patient_spellings(text: str) -> set[str]:
    """Every patient number in ``text`` as written (``P01``, ``p 7``) and as the ID
    (``P1``): the console masks them all, also in names that are not CDD-CESM's form.

    >>> sorted(patient_spellings("images/P01_L_CM_CC.jpg"))
    ['P01', 'P1']
    """
    found = _PATIENT_TOKEN.findall(text)
    return {*found, *(f"P{int(''.join(filter(str.isdigit, token)))}" for token in found)}


def _key_of(name: CddCesmName) -> ImageKey:
    return (name.patient_id, name.laterality.value, name.modality, name.view.value)


def _canonical(name: CddCesmName) -> str:
    """``P1_L_DM_CC``: the sheet's ``Image_name`` form (no stray spaces, no extension)."""
    code = "DM" if name.modality is Modality.LE else "CM"
    return f"{name.patient_id}_{name.laterality.value}_{code}_{name.view.value}"


def _name_key(path: Path) -> ImageKey | None:
    name = parse_cdd_cesm_name(path.name)
    return None if name is None else _key_of(name)


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
        annotation = annotations.setdefault(
            _key_of(name), _Annotation(_canonical(name), [], set(), [], False)
        )
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


def _rows_text(numbers: list[int]) -> str:
    return ("segmentations row " if len(numbers) == 1 else "segmentations rows ") + ", ".join(
        map(str, numbers)
    )


def _image_drawing(
    listed: list[ImageRegions], info: ImageInfo, name: CddCesmName, left_out: list[LeftOut]
) -> MaskDrawing | None:
    """The regions of one image (from every spelling of its name) that mark pixels on it."""
    size = (info.rows, info.columns)  # from the JPEG header: nothing decoded
    kept = []
    for image in listed:
        for row, region in image.regions:
            if len(region.pixels(size)[0]) == 0:
                kind = (
                    "region covers no pixel centre"  # too thin or small: collinear points
                    if region.overlaps(size)
                    else "region entirely outside the image"
                )
                detail = f"{image.file_name}: {info.columns}×{info.rows} pixels"
                left_out.append(LeftOut(f"segmentations row {row}", kind, detail))
            else:
                kept.append(region)
    if not kept:
        return None
    return MaskDrawing(size, tuple(kept), f"{_canonical(name)}_lesion_mask.png")


def _lesion_masks(
    segmentations: Segmentations,
    images: dict[ImageKey, ImageInfo],
    rows: list[TrainingManifestRow],
) -> tuple[dict[Path, MaskDrawing], list[LeftOut], int]:
    """Drawings per imported image, regions left out, and images listed without regions."""
    left_out = list(segmentations.left_out)
    by_key: dict[ImageKey, list[ImageRegions]] = defaultdict(list)
    for image in segmentations.images.values():
        name = parse_cdd_cesm_name(image.image_name)
        rows_text = _rows_text(image.rows)
        if name is None:
            left_out.append(LeftOut(rows_text, "file name not a CDD-CESM image", image.file_name))
        elif _key_of(name) not in images:
            left_out.append(LeftOut(rows_text, "file name not matching any image", image.file_name))
        else:
            by_key[_key_of(name)].append(image)
    imported = {row.path for row in rows}
    drawings: dict[Path, MaskDrawing] = {}
    without_regions = 0
    for key, listed in by_key.items():
        info = images[key]
        if not any(image.regions for image in listed):
            without_regions += 1
            continue
        if info.path not in imported:
            numbers = sorted(row for image in listed for row, _ in image.regions)
            detail = f"{listed[0].file_name} (left out above)"
            left_out.append(LeftOut(_rows_text(numbers), "image not in the manifest", detail))
            continue
        name = parse_cdd_cesm_name(listed[0].image_name)
        drawing = _image_drawing(listed, info, name, left_out)  # type: ignore[arg-type]
        if drawing is not None:
            drawings[info.path] = drawing
    return drawings, left_out, without_regions


def import_cdd_cesm(
    folder: Path,
    annotations: Path | None = None,
    sheet_name: str | None = None,
    segmentations: Path | None = None,
) -> ImportResult:
    """Read a CDD-CESM folder; return the rows, the lesion regions to draw and the
    leave-out report (nothing written). ``segmentations``: the VIA CSV (default: found
    in ``folder`` by name; none found: no masks)."""
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
    result = ImportResult(
        "cdd-cesm", folder, rows, left_out, settings, notes=notes, patient_ids=seen
    )
    _add_lesion_masks(result, segmentations or find_segmentations(folder), images)
    for item in (*result.left_out, *result.regions_left_out):  # names as the files spell them
        result.patient_ids |= patient_spellings(f"{item.item} {item.detail}")
    return result


def _add_lesion_masks(
    result: ImportResult, path: Path | None, images: dict[ImageKey, ImageInfo]
) -> None:
    """Read the segmentation CSV (if any) into the result's drawings and left-out regions."""
    result.settings["segmentations"] = path.name if path else None
    if path is None:
        result.lesion_masks_source = f"no {SEGMENTATIONS_NAME} found; --segmentations FILE"
        return
    segmentations = read_segmentations(Path(path))
    drawings, left_out, without_regions = _lesion_masks(segmentations, images, result.rows)
    result.mask_drawings, result.regions_left_out = drawings, left_out
    result.lesion_masks_source = Path(path).name
    if without_regions:
        result.notes["image listed in the segmentations without regions (no mask)"] = (
            without_regions
        )
