"""NRRD slot files: the hand-over format between 3D Slicer and the library.

The Slicer module exports a case as ``LE_CC.nrrd``, ``DES_MLO.nrrd`` … (any subset) and a
``case.json`` beside them holding ``{"patient_id", "study_uid", "laterality"}``. The file
name gives modality and view; ``case.json`` gives the identity. Without ``case.json`` the
folder name stands in for the patient and a study UID is derived from the folder path, so
two folders never merge into one case. ``synthetic_DES_CC.nrrd`` (our own output) is read
as a synthetic image.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk  # noqa: N813 (the conventional alias)

from VirtualBiopsyLib.errors import ImageReadError, UnsupportedImageError
from VirtualBiopsyLib.images.cases import derived_uid
from VirtualBiopsyLib.images.mammogram import ImageInfo, MammogramImage
from VirtualBiopsyLib.roles import Laterality, Source, parse_slot

NRRD_SUFFIXES = (".nrrd", ".nhdr")
CASE_FILE = "case.json"
_SLOT_NAME = re.compile(r"(?P<synthetic>synthetic_)?(?P<slot>(LE|DES)_(CC|MLO))", re.IGNORECASE)


def read_case_json(folder: Path) -> dict[str, str] | None:
    """The identity in ``folder/case.json``, or ``None`` when there is none.

    >>> read_case_json(Path("export"))  # doctest: +SKIP
    {'patient_id': 'anon-7', 'study_uid': '1.2.3', 'laterality': 'L'}
    """
    case_file = folder / CASE_FILE
    if not case_file.is_file():
        return None
    try:
        identity = json.loads(case_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ImageReadError(case_file, f"invalid JSON: {error}") from error
    if not isinstance(identity, dict):
        raise ImageReadError(case_file, "expected a JSON object")
    laterality = str(identity.get("laterality", "")).strip().upper()
    if laterality and laterality not in ("L", "R"):
        raise ImageReadError(case_file, f"laterality must be 'L' or 'R', not {laterality!r}")
    return {
        key: str(identity[key])
        for key in ("patient_id", "study_uid", "laterality")
        if identity.get(key) not in (None, "")
    }


def read_nrrd_info(path: Path | str) -> ImageInfo:
    """Read an NRRD slot file's header (not its pixels) and its role.

    >>> info = read_nrrd_info("export/LE_CC.nrrd")  # doctest: +SKIP
    >>> info.slot, info.rules["modality"]  # doctest: +SKIP
    ('LE_CC', 'file name (slot)')
    """
    path = Path(path)
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    match = _SLOT_NAME.fullmatch(stem.strip())
    if match is None:
        raise UnsupportedImageError(
            path, "NRRD name is not a slot name (LE_CC, LE_MLO, DES_CC, DES_MLO)"
        )
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise ImageReadError(path, f"not a readable NRRD file ({_first_line(error)})") from error
    size = reader.GetSize()
    if reader.GetNumberOfComponents() != 1 or (len(size) > 2 and size[2] != 1):
        raise UnsupportedImageError(path, f"expected one grey-level 2-D image, got size {size}")
    modality, view = parse_slot(match["slot"].upper())
    identity = read_case_json(path.parent)
    rules = {"modality": "file name (slot)", "view": "file name (slot)"}
    if identity is None:
        folder_uid = derived_uid("NRRD folder", str(path.parent.resolve()))
        identity = {"patient_id": path.parent.name, "study_uid": str(folder_uid)}
        rules["identity"] = "folder name (no case.json)"
    else:
        rules["identity"] = CASE_FILE
    laterality = identity.get("laterality")
    rules["laterality"] = CASE_FILE if laterality else "undetermined (no laterality in case.json)"
    return ImageInfo(
        path=path,
        format="nrrd",
        modality=modality,
        view=view,
        laterality=Laterality(laterality.upper()) if laterality else None,
        patient_id=identity.get("patient_id"),
        study_uid=identity.get("study_uid"),
        rows=int(size[1]),
        columns=int(size[0]),
        rules=rules,
        source=Source.SYNTHETIC if match["synthetic"] else Source.REAL,
    )


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def read_nrrd_image(path: Path | str, info: ImageInfo | None = None) -> MammogramImage:
    """Decode an NRRD slot file; values stay modality values (``windowed=False``).

    >>> image = read_nrrd_image("export/LE_CC.nrrd")  # doctest: +SKIP
    >>> image.spacing  # doctest: +SKIP
    (0.1, 0.1)
    """
    path = Path(path)
    info = info if info is not None else read_nrrd_info(path)
    try:
        volume = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise ImageReadError(path, f"cannot decode NRRD ({_first_line(error)})") from error
    pixels = sitk.GetArrayFromImage(volume).astype(np.float32, copy=False)
    pixels = pixels.reshape(pixels.shape[-2:]) if pixels.ndim == 3 else pixels
    spacing = volume.GetSpacing()
    info.rules["spacing"] = "NRRD header"
    info.rules["voi"] = "none (NRRD holds modality values)"
    return MammogramImage(
        info=info, pixels=pixels, spacing=(float(spacing[1]), float(spacing[0])), windowed=False
    )
