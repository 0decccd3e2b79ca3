"""Import a hospital's CESM DICOM exams, in any folder layout, with a clinical sheet.

Every file under the folder is read by the library's readers: the roles (LE or DES, CC or
MLO, L or R) and what is skipped (high energy, For Processing, not MG) are decided exactly
as ``virtual-biopsy inspect`` decides them, by the same code. The clinical sheet
(:mod:`~Training.importers.clinical_sheet`) gives each image its biopsy result, ACR
density and, when it has a phase column, its phase.

Phase, when the sheet does not give it: the image that ``inspect`` and ``predict`` choose
for a slot (the earliest acquisition, :func:`VirtualBiopsyLib.images.cases.group_cases`)
is ``early``; any later acquisition of the same slot of the same breast and study is
``late``. When a slot holds several images and one lacks an acquisition time, the order
is unknown and those images are left out (give their phase in the sheet). The summary
says for every image which rule decided its phase. The classifiers train on early-phase
images (the paper's rule), the generators on every pair.

Images whose header says synthetic (``SYNTHETIC`` in Image Type or Series Description,
or ``synthetic`` in Image Comments, as the phantom and our DICOM export write) are marked
synthetic in the manifest.

Lesion masks kept beside the exams are read as their images' masks: a folder
``lesion_masks/`` (or the phantom's ``synthetic_lesion_masks/``) at the imported folder's
top, mirroring each image's path, ``<image name>_lesion_mask.png``
(:func:`VirtualBiopsyLib.training_manifest.lesion_mask_relative`), so importing a phantom
cohort gives back its manifest, masks included. A mask that cannot be read, whose size
differs from its image's, or whose image is not imported is left out with the reason.

>>> mapping = ClinicalMapping(labels=ValueMapping.parse("B=benign,M=malignant",
...                                                     LABEL_VALUES, "label"))
>>> result = import_dicom_exams(Path("exams"), Path("clinical.xlsx"), mapping)  # doctest: +SKIP
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import pydicom
from PIL import Image

from Training.importers.clinical_sheet import (
    ClinicalMapping,
    ClinicalRecord,
    ClinicalSheet,
    ImageKeys,
)
from Training.importers.sheets import ImportInputError, read_sheet
from Training.importers.summary import ImportResult, LeftOut
from Training.importers.values import LABEL_VALUES, ValueMapping, breast_label
from VirtualBiopsyLib.images.cases import group_cases
from VirtualBiopsyLib.images.mammogram import ImageInfo
from VirtualBiopsyLib.images.readers import lesion_mask_files, scan
from VirtualBiopsyLib.roles import MODALITIES, VIEWS
from VirtualBiopsyLib.training_manifest import (
    LESION_MASK_FOLDERS,
    LESION_MASK_SUFFIX,
    BiopsyLabel,
    TrainingManifestRow,
    lesion_mask_relative,
)

__all__ = ["LABEL_VALUES", "ClinicalMapping", "ValueMapping", "import_dicom_exams"]

PHASE_FROM_SHEET = "clinical sheet"
PHASE_EARLIEST = "earliest acquisition of its slot (the image inspect/predict use)"
PHASE_ONLY = "only image of its slot"
PHASE_LATER = "acquired after its slot's earliest image"
ROLE_RULES = ("modality", "view", "laterality")
_EXTRA_TAGS = ["SOPInstanceUID", "ImageType", "SeriesDescription", "ImageComments"]


def _relative(path: Path, folder: Path) -> str:
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:
        return path.as_posix()


def _header_extras(path: Path) -> tuple[str, bool]:
    """SOP Instance UID and whether the header marks the image synthetic."""
    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_EXTRA_TAGS)
    image_type = ds.get("ImageType") or []
    values = [image_type] if isinstance(image_type, str) else list(image_type)
    synthetic = (
        any(str(v).strip().upper() == "SYNTHETIC" for v in values)
        or "SYNTHETIC" in str(ds.get("SeriesDescription", "")).upper()
        or "synthetic" in str(ds.get("ImageComments", "")).lower()
    )
    return str(ds.get("SOPInstanceUID", "") or "").strip(), synthetic


def _rules(info: ImageInfo) -> str:
    """The rules that decided the roles, as ``inspect`` shows them."""
    return "; ".join(f"{key}: {info.rules[key]}" for key in ROLE_RULES if key in info.rules)


def _usable_infos(folder: Path, left_out: list[LeftOut]) -> tuple[list[ImageInfo], set[str]]:
    """The images with every role and identity known; and every patient ID seen."""
    infos = []
    patient_ids: set[str] = set()
    for entry in scan([folder]):  # lesion masks are no images: the scan leaves them out
        item = _relative(entry.path, folder)
        if entry.info is not None and entry.info.patient_id:
            patient_ids.add(entry.info.patient_id)
        if entry.status == "error":
            left_out.append(LeftOut(item, "unreadable file", entry.reason or ""))
        elif entry.status == "skipped" or entry.info is None:
            left_out.append(LeftOut(item, "not used by the readers", entry.reason or ""))
        elif entry.info.format != "dicom":
            left_out.append(LeftOut(item, "not a DICOM file", entry.info.format))
        elif entry.info.slot is None:
            left_out.append(LeftOut(item, "unknown modality or view", _rules(entry.info)))
        elif entry.info.laterality is None:
            left_out.append(LeftOut(item, "unknown laterality", _rules(entry.info)))
        elif not entry.info.patient_id:
            left_out.append(LeftOut(item, "no Patient ID"))
        elif not entry.info.study_uid:
            left_out.append(LeftOut(item, "no Study Instance UID"))
        else:
            infos.append(entry.info)
    return infos, patient_ids


def acquisition_phases(infos: Iterable[ImageInfo]) -> dict[Path, tuple[str | None, str]]:
    """Phase and rule of each image from acquisition order (``None``: undetermined)."""
    infos = list(infos)
    chosen = {
        id(info) for case in group_cases(infos) for info in case.slots.values() if info is not None
    }
    by_slot: dict[tuple, list[ImageInfo]] = defaultdict(list)
    for info in infos:
        by_slot[(info.patient_id, info.study_uid, info.laterality, info.slot)].append(info)
    phases: dict[Path, tuple[str | None, str]] = {}
    for members in by_slot.values():
        if len(members) == 1:
            phases[members[0].path] = ("early", PHASE_ONLY)
            continue
        undated = any(info.acquisition is None for info in members)
        for info in members:
            if undated:
                phases[info.path] = (None, "several images of one slot, not all with a time")
            elif id(info) in chosen:
                phases[info.path] = ("early", PHASE_EARLIEST)
            else:
                phases[info.path] = ("late", PHASE_LATER)
    return phases


def _records_agree(records: list[ClinicalRecord]) -> bool:
    return len({(r.label, r.acr_density, r.phase) for r in records}) == 1


def _order(row: TrainingManifestRow) -> tuple:
    return (
        row.patient_id,
        row.study_uid,
        row.laterality,
        row.phase != "early",
        VIEWS.index(row.view),
        MODALITIES.index(row.modality),
        str(row.path),
    )


def import_dicom_exams(
    folder: Path, clinical: Path, mapping: ClinicalMapping | None = None
) -> ImportResult:
    """Read the exams and the sheet; return the rows and the leave-out report.

    Raises :class:`~Training.importers.sheets.ImportInputError` for a sheet that cannot
    be used at all (missing columns, unmapped label values); everything else that does not
    fit is reported per image or row.
    """
    folder = Path(folder)
    mapping = mapping or ClinicalMapping()
    if not folder.is_dir():
        raise ImportInputError(f"{folder}: no such folder")
    sheet = ClinicalSheet(read_sheet(clinical, mapping.sheet), mapping)
    left_out: list[LeftOut] = []
    for number, reason in sorted(sheet.bad_rows.items()):
        left_out.append(LeftOut(f"sheet row {number}", "clinical row not usable", reason))
    infos, patient_ids = _usable_infos(folder, left_out)
    patient_ids |= sheet.patient_ids()
    by_order = acquisition_phases(infos)

    matched: dict[Path, tuple[ClinicalRecord, str, str, bool]] = {}
    record_users: dict[int, list[Path]] = defaultdict(list)
    for info in infos:
        item = _relative(info.path, folder)
        sop_uid, synthetic = _header_extras(info.path)
        keys = ImageKeys(
            sop_uid,
            item,
            info.patient_id or "",
            info.study_uid or "",
            info.laterality.value,
            info.view.value,
        )
        records = sheet.lookup(keys)
        if not records:
            left_out.append(LeftOut(item, "no clinical row", "join on " + ", ".join(sheet.join)))
            continue
        rows_text = ", ".join(str(r.row) for r in records)
        if not _records_agree(records):
            left_out.append(LeftOut(item, "clinical rows disagree", f"sheet rows {rows_text}"))
            continue
        record = records[0]
        if record.label is None:
            left_out.append(LeftOut(item, "no biopsy result", f"sheet row {rows_text}"))
            continue
        if record.phase is not None:
            phase, rule = record.phase, PHASE_FROM_SHEET
        else:
            phase, rule = by_order[info.path]
        if phase is None:
            left_out.append(LeftOut(item, "phase undetermined", rule))
            continue
        matched[info.path] = (record, phase, rule, synthetic)
        if sheet.join == ("file",):
            record_users[record.row].append(info.path)

    for paths in record_users.values():  # one file-name row matched by several files
        if len(paths) > 1:
            for path in paths:
                matched.pop(path, None)
                left_out.append(
                    LeftOut(
                        _relative(path, folder),
                        "file name matches several images",
                        "give the path relative to the folder in the sheet",
                    )
                )

    infos_by_path = {info.path: info for info in infos}
    breasts: dict[tuple, list[Path]] = defaultdict(list)
    for path in matched:
        info = infos_by_path[path]
        breasts[(info.patient_id, info.study_uid, info.laterality)].append(path)
    rows: list[TrainingManifestRow] = []
    phase_rules: list[dict[str, str]] = []
    notes_extra: Counter = Counter()
    for paths in breasts.values():
        labels = {matched[path][0].label or "" for path in paths}
        label_text = breast_label(labels)
        if label_text is None:
            names = ", ".join(sorted(labels))
            for path in paths:
                left_out.append(
                    LeftOut(_relative(path, folder), "conflicting labels for one breast", names)
                )
            continue
        if len(labels) > 1:
            notes_extra["breast with normal and abnormal images (labelled by the finding)"] += 1
        for path in paths:
            info = infos_by_path[path]
            record, phase, rule, synthetic = matched[path]
            rows.append(
                TrainingManifestRow(
                    patient_id=info.patient_id or "",
                    study_uid=info.study_uid or "",
                    laterality=info.laterality.value,
                    view=info.view,
                    modality=info.modality,
                    path=path,
                    label=BiopsyLabel.from_text(label_text),
                    acr_density=record.acr_density,
                    phase=phase,
                    synthetic=synthetic,
                )
            )
            phase_rules.append({"path": _relative(path, folder), "phase": phase, "rule": rule})
    for number in sheet.unused_rows():
        left_out.append(LeftOut(f"sheet row {number}", "clinical row without image"))
    mask_files = _mask_files(folder, left_out)
    rows = _with_masks(rows, infos_by_path, folder, mask_files, left_out)
    rows.sort(key=_order)
    phase_rules.sort(key=lambda item: item["path"])
    notes = Counter("image without ACR density" for row in rows if not row.acr_density)
    notes.update(notes_extra)
    result = ImportResult(
        "dicom",
        folder,
        rows,
        left_out,
        sheet.settings(),
        notes=notes,
        phase_rules=phase_rules,
        patient_ids=patient_ids,
    )
    if mask_files:
        used = sorted({item.split("/")[0] for item in mask_files})
        result.lesion_masks_source = f"{', '.join(f'{name}/' for name in used)} beside the images"
    return result


def _mask_files(folder: Path, left_out: list[LeftOut]) -> dict[str, Path]:
    """Every lesion mask under the mask folders, found as the scans find images (links
    followed, the suffix in any case): its expected relative path → path. A mask that
    differs from another only in the suffix's case is listed, never dropped silently."""
    found: dict[str, Path] = {}
    for name in LESION_MASK_FOLDERS:
        if not (folder / name).is_dir():
            continue
        for path in lesion_mask_files(folder / name, on_error=lambda *_: None):  # scan reports
            item = _relative(path, folder)
            key = item[: -len(LESION_MASK_SUFFIX)] + LESION_MASK_SUFFIX
            if key in found:
                detail = _relative(found[key], folder)
                left_out.append(LeftOut(item, "second lesion mask of an image", detail))
            else:
                found[key] = path
    return found


def _mask_size(path: Path) -> tuple[int, int] | str:
    """(rows, columns) from the mask's header, or why it cannot be read as a mask:
    training reads one channel (non-zero inside), so RGB or grey+alpha is refused here."""
    if not path.is_file():  # a FIFO would block, a broken link has no header
        return "not a regular file" + (" (broken link)" if path.is_symlink() else "")
    try:
        with Image.open(path) as picture:  # the header only
            columns, rows = picture.size
            bands = picture.getbands()
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        return f"not a readable image ({error})"
    if len(bands) != 1:
        return f"{len(bands)} channels ({''.join(bands)}), training reads one"
    return rows, columns


def _with_masks(
    rows: list[TrainingManifestRow],
    infos: dict[Path, ImageInfo],
    folder: Path,
    mask_files: dict[str, Path],
    left_out: list[LeftOut],
) -> list[TrainingManifestRow]:
    """The rows with the mask of each image kept beside it (:func:`_mask_files`), where
    it is a readable image on the image's grid."""
    unused = dict(mask_files)
    kept = []
    for row in rows:
        image = _relative(row.path, folder)
        found = [
            unused.pop(lesion_mask_relative(image, name), None) for name in LESION_MASK_FOLDERS
        ]
        mask, *others = [path for path in found if path is not None] or [None]
        for other in others:  # the user's folder comes first
            left_out.append(
                LeftOut(_relative(other, folder), "second lesion mask of an image", str(mask))
            )
        if mask is not None:
            info, size = infos[row.path], _mask_size(mask)
            item = _relative(mask, folder)
            if size == (info.rows, info.columns):
                row = replace(row, lesion_mask=mask)
            elif isinstance(size, str):
                left_out.append(LeftOut(item, "lesion mask unreadable", size))
            else:
                detail = f"{size[1]}×{size[0]} pixels, the image {info.columns}×{info.rows}"
                left_out.append(LeftOut(item, "lesion mask not on its image's grid", detail))
        kept.append(row)
    for _, path in sorted(unused.items()):
        left_out.append(LeftOut(_relative(path, folder), "lesion mask of an image not imported"))
    return kept
