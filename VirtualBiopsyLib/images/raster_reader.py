"""JPEG and PNG mammograms, with roles taken from CDD-CESM file names.

CDD-CESM names its images ``P{id}_{L|R}_{DM|CM}_{CC|MLO}.jpg`` (DM = low energy,
CM = contrast/subtracted) and some names carry stray spaces, e.g. ``P2_L_CM_MLO .jpg``.
The set has no DICOM study: every patient's images get one deterministic study UID derived
from the patient id (:func:`cdd_cesm_study_uid`), so that grouping into cases works as for
DICOM and gives the same result on every run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from VirtualBiopsyLib.errors import ImageReadError, UnsupportedImageError
from VirtualBiopsyLib.images.identity import derived_uid
from VirtualBiopsyLib.images.mammogram import ImageInfo, MammogramImage, capture_decoder_messages
from VirtualBiopsyLib.limits import LimitExceededError, check_image_size
from VirtualBiopsyLib.roles import Laterality, Modality, View

RASTER_SUFFIXES = (".jpg", ".jpeg", ".png")
DEFAULT_SPACING_MM = 0.1
_CDD_CESM_NAME = re.compile(
    r"\s*P\s*(?P<number>\d+)\s*_\s*(?P<side>[LR])\s*_\s*(?P<type>DM|CM)\s*_\s*(?P<view>CC|MLO)\s*",
    re.IGNORECASE,
)
_CDD_CESM_MODALITY = {"DM": Modality.LE, "CM": Modality.DES}


@dataclass(frozen=True)
class CddCesmName:
    """The roles encoded in a CDD-CESM file name."""

    patient_id: str
    laterality: Laterality
    modality: Modality
    view: View


def parse_cdd_cesm_name(name: str) -> CddCesmName | None:
    """Parse a CDD-CESM image name (with or without extension); ``None`` if it is not one.

    >>> name = parse_cdd_cesm_name("P2_L_CM_MLO .jpg")
    >>> name.patient_id, name.laterality.value, name.modality.value, name.view.value
    ('P2', 'L', 'DES', 'MLO')
    """
    stem = name
    for suffix in RASTER_SUFFIXES:
        if stem.strip().lower().endswith(suffix):
            stem = stem.strip()[: -len(suffix)]
            break
    match = _CDD_CESM_NAME.fullmatch(stem)
    if match is None:
        return None
    return CddCesmName(
        patient_id=f"P{int(match['number'])}",
        laterality=Laterality(match["side"].upper()),
        modality=_CDD_CESM_MODALITY[match["type"].upper()],
        view=View(match["view"].upper()),
    )


def cdd_cesm_study_uid(patient_id: str) -> str:
    """A deterministic study UID (``2.25.…``) for a CDD-CESM patient, which has none.

    >>> cdd_cesm_study_uid("P2") == cdd_cesm_study_uid("P2") != cdd_cesm_study_uid("P3")
    True
    """
    return derived_uid("CDD-CESM", patient_id)


def read_raster_info(path: Path | str) -> ImageInfo:
    """Read the size (from the header only) and the roles (from the name) of a JPEG or PNG.

    >>> info = read_raster_info("Low energy images of CDD-CESM/P2_L_DM_CC.jpg")  # doctest: +SKIP
    >>> info.slot, info.patient_id  # doctest: +SKIP
    ('LE_CC', 'P2')
    """
    path = Path(path)
    try:
        with _open(path) as image:
            columns, rows = image.size
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        raise ImageReadError(path, f"not a readable JPEG/PNG image ({error})") from error
    try:
        check_image_size(rows, columns)
    except LimitExceededError as error:
        raise ImageReadError(path, f"image refused: {error}") from error
    name = parse_cdd_cesm_name(path.name)
    if name is None:
        raise UnsupportedImageError(
            path, "JPEG/PNG name is not CDD-CESM style P{id}_{L|R}_{DM|CM}_{CC|MLO}"
        )
    return ImageInfo(
        path=path,
        format="raster",
        modality=name.modality,
        view=name.view,
        laterality=name.laterality,
        patient_id=name.patient_id,
        study_uid=cdd_cesm_study_uid(name.patient_id),
        rows=rows,
        columns=columns,
        rules={
            "modality": "file name (CDD-CESM DM/CM)",
            "view": "file name (CDD-CESM)",
            "laterality": "file name (CDD-CESM)",
            "study": "derived from patient id (CDD-CESM has no study UID)",
            "spacing": f"default {DEFAULT_SPACING_MM} mm",
        },
    )


def read_raster_image(path: Path | str, info: ImageInfo | None = None) -> MammogramImage:
    """Decode a JPEG/PNG as grey levels in [0, 1]; its values are already display values.

    >>> image = read_raster_image("P2_L_DM_CC.jpg")  # doctest: +SKIP
    >>> float(image.pixels.max()) <= 1.0  # doctest: +SKIP
    True
    """
    path = Path(path)
    info = info if info is not None else read_raster_info(path)
    with capture_decoder_messages() as messages:
        try:
            with _open(path) as image:
                check_image_size(image.size[1], image.size[0])
                grey = image if image.mode in ("L", "I;16", "I") else image.convert("L")
                values = np.asarray(grey)
        except LimitExceededError as error:
            raise ImageReadError(path, f"image refused: {error}") from error
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
            raise ImageReadError(path, f"cannot decode image: {error}") from error
    if values.ndim != 2:
        raise ImageReadError(path, f"expected a grey-level image, got shape {values.shape}")
    full_scale = 255.0 if values.dtype == np.uint8 else 65535.0
    pixels = np.clip(values.astype(np.float32) / np.float32(full_scale), 0.0, 1.0)
    info.rules["voi"] = "none (raster values are display values)"
    image = MammogramImage(
        info=info, pixels=pixels, spacing=(DEFAULT_SPACING_MM, DEFAULT_SPACING_MM), windowed=True
    )
    image.info.warnings[:] = [f"decoder: {message}" for message in messages]
    return image


def _open(path: Path) -> Image.Image:
    """Open (header only; nothing decoded yet): the size is checked before ``load``.

    Pillow's own bomb guard (``Image.MAX_IMAGE_PIXELS``) stays as it is; our limit is lower.
    """
    return Image.open(path)
