"""The image types every reader produces and every later layer consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from VirtualBiopsyLib.roles import Laterality, Modality, Source, View, slot_name


@dataclass
class ImageInfo:
    """What a file is, read from its header or name, without decoding pixels.

    ``rules`` says which rule decided each role, e.g.
    ``{"modality": "ImageType[3]=LOW_ENERGY", "view": "ViewPosition", ...}``.
    """

    path: Path
    format: str  # "dicom", "raster" (JPEG/PNG) or "nrrd"
    modality: Modality | None = None
    view: View | None = None
    laterality: Laterality | None = None
    patient_id: str | None = None
    study_uid: str | None = None
    rows: int | None = None
    columns: int | None = None
    acquisition: str | None = None  # sortable date-time; the earliest wins among duplicates
    rules: dict[str, str] = field(default_factory=dict)
    source: Source = Source.REAL

    @property
    def slot(self) -> str | None:
        if self.modality is None or self.view is None:
            return None
        return slot_name(self.modality, self.view)


@dataclass
class MammogramImage:
    """Decoded pixels as a radiologist sees them, with the file's role.

    ``pixels`` is 2-D float32 (rows × columns). When ``windowed`` is true the modality
    LUT, the VOI LUT (the clinical window) and any MONOCHROME1 inversion have been
    applied and the values lie in [0, 1]; otherwise the values are the modality values
    (inverted if needed) and preprocessing stretches them with its percentile rule.
    """

    info: ImageInfo
    pixels: np.ndarray
    spacing: tuple[float, float] = (0.1, 0.1)  # mm per pixel (row, column)
    windowed: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.pixels.shape[0]), int(self.pixels.shape[1]))
