"""The phantom in the public CDD-CESM layout: JPEG folders and the annotation workbook.

Folders ``Low energy images of CDD-CESM/`` (``P{id}_{L|R}_DM_{CC|MLO}.jpg``) and
``Subtracted images of CDD-CESM/`` (``…_CM_…``), a few names with stray spaces as in the
real set, and ``Radiology manual annotations.xlsx`` (sheet ``all``) with the real column
names, density written as numbers, floats or letters, and a few images with two finding
rows. A second sheet, ``notice``, and the ``Tags``/``Machine`` columns say it is synthetic.
``Radiology_hand_drawn_segmentations_v2.csv`` holds the lesions as the set's VIA export
does (:mod:`~VirtualBiopsyLib.phantom.segmentations`), on DM and CM images: mostly
polygons, ellipses on benign DM images, circles on round benign CM CC images, polylines
on malignant CM MLO images, and on a few images a point on the lesion besides its
outline. Each image's truth mask is written too (:mod:`~VirtualBiopsyLib.phantom.masks`)
and named in the manifest.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from zipfile import ZIP_DEFLATED, ZipFile, ZipInfo

import numpy as np
from openpyxl import Workbook
from PIL import Image

from VirtualBiopsyLib import RESEARCH_USE_NOTICE, SYNTHETIC_NOTICE
from VirtualBiopsyLib.atomic_io import write_bytes_atomic
from VirtualBiopsyLib.images.raster_reader import cdd_cesm_study_uid
from VirtualBiopsyLib.phantom.exam import RenderedBreast
from VirtualBiopsyLib.phantom.files import write_atomically
from VirtualBiopsyLib.phantom.masks import breast_lesion_mask, write_breast_lesion_mask
from VirtualBiopsyLib.phantom.plan import PatientPlan, render_patient
from VirtualBiopsyLib.phantom.segmentations import (
    SEGMENTATIONS_NAME,
    Region,
    axis_ratio,
    circle_region,
    ellipse_region,
    point_region,
    polygon_region,
    via_rows,
    write_segmentations,
)
from VirtualBiopsyLib.roles import VIEWS, Modality, Slot
from VirtualBiopsyLib.training_manifest import BiopsyLabel, TrainingManifestRow

LOW_ENERGY_FOLDER = "Low energy images of CDD-CESM"
SUBTRACTED_FOLDER = "Subtracted images of CDD-CESM"
ANNOTATIONS_NAME = "Radiology manual annotations.xlsx"
ANNOTATION_COLUMNS: tuple[str, ...] = (
    "Image_name",
    "Patient_ID",
    "Side",
    "Type",
    "Age",
    "Breast density (ACR)",
    "BIRADS",
    "Findings",
    "View",
    "Tags",
    "Machine",
    "Pathology Classification/ Follow up",
)
_CDD_TYPE = {"LE": ("DM", "DM", LOW_ENERGY_FOLDER), "DES": ("CM", "CESM", SUBTRACTED_FOLDER)}
_FINDINGS = {
    "malignant": ("irregular mass", "spiculated mass", "architectural distortion"),
    "benign": ("oval circumscribed mass", "round mass", "asymmetry"),
}
_BIRADS = {"malignant": (4, 5), "benign": (2, 3)}
_FIXED_TIME = datetime(2024, 1, 1)  # workbook properties: no clock, reproducible files


def image_name(patient_number: int, side: str, code: str, view: str) -> str:
    """The annotation sheet's ``Image_name`` (no extension, no stray spaces)."""
    return f"P{patient_number}_{side}_{code}_{view}"


def file_name(name: str, stray_space: int) -> str:
    """The JPEG file name; some real names carry stray spaces (variant 1 or 2).

    >>> file_name("P3_L_CM_MLO", 0), file_name("P3_L_CM_MLO", 1), file_name("P3_L_CM_MLO", 2)
    ('P3_L_CM_MLO.jpg', 'P3_L_CM_MLO .jpg', 'P3 _L_CM_MLO.jpg')
    """
    if stray_space == 1:
        return f"{name} .jpg"
    if stray_space == 2:
        patient, rest = name.split("_", 1)
        return f"{patient} _{rest}.jpg"
    return f"{name}.jpg"


def _write_jpeg(path: Path, image: np.ndarray) -> None:
    pixels = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    picture = Image.fromarray(pixels, mode="L")
    write_atomically(path, lambda temp: picture.save(temp, format="JPEG", quality=92))


def _density_cell(acr_density: str, patient_number: int) -> int | float | str:
    """ACR density as the real sheet writes it: mostly 1–4, sometimes 2.0 or a letter."""
    number = "abcd".index(acr_density) + 1
    return {0: number, 1: float(number), 2: acr_density.upper()}[patient_number % 3]


def _annotation_rows(
    plan: PatientPlan, side: str, view: str, modality: str, label: str, rng: np.random.Generator
) -> list[list[object]]:
    code, type_name, _ = _CDD_TYPE[modality]
    findings = _FINDINGS[label]
    first = str(rng.choice(findings))
    base = [
        image_name(plan.number, side, code, view),
        plan.number,
        side,
        type_name,
        plan.age,
        _density_cell(plan.acr_density, plan.number),
    ]
    tail = [view, "synthetic phantom", "VirtualBiopsy phantom (synthetic)", label.capitalize()]
    birads = int(rng.choice(_BIRADS[label]))
    rows = [[*base, birads, first, *tail]]
    if plan.number % 4 == 0:  # two findings: one row each, as in the real sheet
        rows.append([*base, birads, str(rng.choice(findings)), *tail])
    elif plan.number % 4 == 3 and label == "malignant":  # two findings joined by '$'
        rows[0][6] = f"{birads}${birads}"
        rows[0][7] = f"{first}${rng.choice(findings)}"
    return rows


def lesion_regions(
    plan: PatientPlan, breast: RenderedBreast, modality: str, view: str
) -> list[Region]:
    """The VIA regions of one image, drawn from its truth mask (none without a lesion)."""
    mask = breast_lesion_mask(breast, view)
    if mask is None:
        return []
    benign = breast.label == "benign"
    if benign and modality == "LE":
        regions = [ellipse_region(mask)]
    elif benign and view == "CC" and axis_ratio(mask) >= 0.8:
        regions = [circle_region(mask)]  # a circle only where the lesion is round
    elif not benign and modality == "DES" and view == "MLO":
        regions = [polygon_region(mask, "polyline")]
    else:
        regions = [polygon_region(mask)]
    if not benign and modality == "LE" and view == "CC" and plan.number % 4 == 1:
        regions.append(point_region(mask))  # a second, area-less mark on the lesion
    return regions


def write_annotations(path: Path, rows: list[list[object]]) -> Path:
    """Write the annotation workbook (sheet ``all`` plus a ``notice`` sheet) atomically."""
    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "all"
    sheet.append(list(ANNOTATION_COLUMNS))
    for row in rows:
        sheet.append(row)
    notice = workbook.create_sheet("notice")
    for line in (
        "VirtualBiopsy synthetic phantom in the CDD-CESM layout.",
        SYNTHETIC_NOTICE,
        RESEARCH_USE_NOTICE,
    ):
        notice.append([line])
    workbook.properties.creator = "VirtualBiopsy phantom (synthetic)"
    workbook.properties.created = workbook.properties.modified = _FIXED_TIME
    return write_bytes_atomic(path, _workbook_bytes(workbook))


def _workbook_bytes(workbook: Workbook) -> bytes:
    """The workbook's ``.xlsx`` bytes without a clock in them: openpyxl stamps the save
    time into ``docProps/core.xml`` and into every zip entry, so the same seed would not
    give the same bytes. Both are set to :data:`_FIXED_TIME` here."""
    saved, fixed = io.BytesIO(), io.BytesIO()
    workbook.save(saved)
    stamp = _FIXED_TIME.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    with ZipFile(saved) as source, ZipFile(fixed, "w", ZIP_DEFLATED) as target:
        for entry in source.infolist():
            data = source.read(entry)
            if entry.filename == "docProps/core.xml":
                data = re.sub(rb"(<dcterms:modified[^>]*>)[^<]*", rb"\g<1>" + stamp, data)
            copy = ZipInfo(entry.filename, date_time=_FIXED_TIME.timetuple()[:6])
            copy.external_attr, copy.compress_type = entry.external_attr, ZIP_DEFLATED
            target.writestr(copy, data)
    return fixed.getvalue()


def write_cdd_cesm_cohort(
    out_dir: Path,
    plans: list[PatientPlan],
    seed: int,
    size: str,
    progress: Callable[[int, int], None] | None = None,
) -> list[TrainingManifestRow]:
    """Write the JPEGs, their lesion masks, the annotation workbook and the segmentation
    CSV; return the training manifest rows."""
    manifest: list[TrainingManifestRow] = []
    annotations: list[list[object]] = []
    segmentations: list[list[object]] = []
    for done, plan in enumerate(plans, start=1):
        rng = np.random.default_rng([seed, plan.number, 0xCDD])
        patient_id = f"P{plan.number}"
        for breast in render_patient(plan, seed, size):
            side = breast.laterality.value
            for view in VIEWS:
                for modality in ("LE", "DES") if plan.has_des else ("LE",):
                    code, _, folder = _CDD_TYPE[modality]
                    name = image_name(plan.number, side, code, view.value)
                    stray = {1: 1, 3: 2}.get(plan.number % 6, 0) if modality == "DES" else 0
                    relative = f"{folder}/{file_name(name, stray)}"
                    _write_jpeg(out_dir / relative, breast.images[Slot.of(modality, view)])
                    regions = lesion_regions(plan, breast, modality, view.value)
                    file_size = (out_dir / relative).stat().st_size
                    segmentations.extend(via_rows(Path(relative).name, file_size, regions))
                    manifest.append(
                        TrainingManifestRow(
                            patient_id,
                            cdd_cesm_study_uid(patient_id),
                            side,
                            view,
                            Modality(modality),
                            out_dir / relative,
                            BiopsyLabel.from_text(breast.label),
                            plan.acr_density,
                            "early",
                            synthetic=True,
                            lesion_mask=write_breast_lesion_mask(
                                out_dir, relative, breast, view.value
                            ),
                        )
                    )
                    annotations.extend(
                        _annotation_rows(plan, side, view.value, modality, breast.label, rng)
                    )
        if progress is not None:
            progress(done, len(plans))
    write_annotations(out_dir / ANNOTATIONS_NAME, annotations)
    write_segmentations(out_dir / SEGMENTATIONS_NAME, segmentations)
    return manifest
