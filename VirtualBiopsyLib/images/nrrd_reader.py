"""NRRD slot files: the hand-over format between 3D Slicer and the library.

The Slicer module exports a case as ``LE_CC.nrrd``, ``DES_MLO.nrrd`` … (any subset) and a
``case.json`` beside them holding ``{"patient_id", "study_uid", "laterality"}``. The file
name gives modality and view; ``case.json`` gives the identity. Without ``case.json`` the
folder name stands in for the patient and a study UID is derived from the folder path, so
two folders never merge into one case. ``synthetic_DES_CC.nrrd`` (our own output) is read
as a synthetic image.

Headers and pixels are read with pynrrd (pure Python): the predict path then never loads
SimpleITK's ~90 MB of libraries just for NRRD. Geometry follows ITK's reading of the same
header (spacing = length of each axis's space direction, LPS in-plane frame), so files
written by Slicer or SimpleITK mean the same here.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nrrd
import numpy as np

from VirtualBiopsyLib.errors import ImageReadError, UnsupportedImageError
from VirtualBiopsyLib.images.cases import derived_uid
from VirtualBiopsyLib.images.mammogram import ImageInfo, MammogramImage
from VirtualBiopsyLib.roles import Laterality, Source, parse_slot

NRRD_SUFFIXES = (".nrrd", ".nhdr")
CASE_FILE = "case.json"
_REQUIRED_FIELDS = ("type", "dimension", "sizes", "encoding")  # the NRRD format's own
_NON_SPATIAL_KINDS = (
    "vector",
    "list",
    "point",
    "color",
    "complex",
    "tensor",
    "matrix",
    "quaternion",
)
_RAS_SPACES = ("right-anterior-superior", "ras")
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
    grid = nrrd_grid(read_nrrd_header(path), path)
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
        rows=grid.shape[0],
        columns=grid.shape[1],
        rules=rules,
        source=Source.SYNTHETIC if match["synthetic"] else Source.REAL,
    )


@dataclass(frozen=True)
class NrrdGrid:
    """Where a 2-D NRRD image lies: shape (rows, columns), spacing (row_mm, column_mm),
    and, in ITK's LPS terms, the in-plane origin (x, y) and direction (row-major 2×2)."""

    shape: tuple[int, int]
    spacing: tuple[float, float]
    origin: tuple[float, float]
    direction: tuple[float, float, float, float]


def read_nrrd_header(path: Path | str) -> dict[str, Any]:
    """The header fields of an NRRD file (pixels untouched); ImageReadError if unreadable."""
    try:
        header = dict(nrrd.read_header(str(path)))
    except (OSError, UnicodeDecodeError, ValueError, nrrd.NRRDError) as error:
        raise ImageReadError(path, f"not a readable NRRD file ({error})") from error
    missing = [field for field in _REQUIRED_FIELDS if field not in header]
    if missing:
        raise ImageReadError(path, f"not a readable NRRD file (no {', '.join(missing)} field)")
    return header


def nrrd_grid(header: dict[str, Any], path: Path | str) -> NrrdGrid:
    """The 2-D grid of a header; UnsupportedImageError unless it is one grey-level image."""
    sizes = [int(s) for s in header.get("sizes", ())]
    kinds = [str(k).lower() for k in header.get("kinds", ["domain"] * len(sizes))]
    if any(word in kind for kind in kinds for word in _NON_SPATIAL_KINDS) or not (
        len(sizes) == 2 or (len(sizes) == 3 and sizes[2] == 1)
    ):
        raise UnsupportedImageError(path, f"expected one grey-level 2-D image, got size {sizes}")
    axes = _axis_vectors(header, len(sizes))
    spacing = [float(np.linalg.norm(axes[i])) or 1.0 for i in (0, 1)]
    units = [axes[i] / spacing[i] for i in (0, 1)]
    origin = np.zeros(2)
    if header.get("space origin") is not None:
        origin = np.asarray(header["space origin"], dtype=float)[:2]
    flip = -1.0 if str(header.get("space", "")).lower() in _RAS_SPACES else 1.0  # ITK is LPS
    direction = (units[0][0], units[1][0], units[0][1], units[1][1])
    return NrrdGrid(
        shape=(sizes[1], sizes[0]),
        spacing=(spacing[1], spacing[0]),
        origin=(flip * float(origin[0]), flip * float(origin[1])),
        direction=tuple(flip * float(d) for d in direction),  # type: ignore[arg-type]
    )


def _axis_vectors(header: dict[str, Any], dimension: int) -> list[np.ndarray]:
    """Each image axis's step in space: 'space directions', else 'spacings', else 1."""
    directions = header.get("space directions")
    if directions is not None:
        rows = np.asarray(directions, dtype=float)
        if rows.ndim == 2 and rows.shape[0] >= 2 and np.isfinite(rows[:2]).all():
            return [rows[0], rows[1]]
    spacings = np.asarray(header.get("spacings", [1.0] * dimension), dtype=float)
    steps = np.where(np.isfinite(spacings[:2]) & (spacings[:2] > 0), spacings[:2], 1.0)
    return [np.array([steps[0], 0.0]), np.array([0.0, steps[1]])]


def read_nrrd_image(path: Path | str, info: ImageInfo | None = None) -> MammogramImage:
    """Decode an NRRD slot file; values stay modality values (``windowed=False``).

    >>> image = read_nrrd_image("export/LE_CC.nrrd")  # doctest: +SKIP
    >>> image.spacing  # doctest: +SKIP
    (0.1, 0.1)
    """
    path = Path(path)
    info = info if info is not None else read_nrrd_info(path)
    pixels, grid, _ = read_nrrd_pixels(path)
    info.rules["spacing"] = "NRRD header"
    info.rules["voi"] = "none (NRRD holds modality values)"
    return MammogramImage(
        info=info,
        pixels=pixels.astype(np.float32, copy=False),
        spacing=grid.spacing,
        windowed=False,
    )


def read_nrrd_pixels(path: Path | str) -> tuple[np.ndarray, NrrdGrid, dict[str, Any]]:
    """The pixels (rows × columns, the file's type), grid and header of a 2-D NRRD file."""
    try:
        pixels, header = nrrd.read(str(path), index_order="C")
    except (OSError, UnicodeDecodeError, ValueError, EOFError, zlib.error, nrrd.NRRDError) as error:
        raise ImageReadError(path, f"cannot decode NRRD ({error})") from error
    header = dict(header)
    grid = nrrd_grid(header, path)
    return pixels.reshape(grid.shape), grid, header
