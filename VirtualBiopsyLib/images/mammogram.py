"""The image types every reader produces and every later layer consumes."""

from __future__ import annotations

import contextlib
import logging
import warnings as _warnings
from collections.abc import Iterator
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
    warnings: list[str] = field(default_factory=list)  # what decoding this file reported

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
    :attr:`warnings` is what the decoder reported about the file (e.g. a JPEG 2000 code
    stream that disagrees with its header); they live on the ``info`` so that they stay
    with the case after the pixels are gone.
    """

    info: ImageInfo
    pixels: np.ndarray
    spacing: tuple[float, float] = (0.1, 0.1)  # mm per pixel (row, column)
    windowed: bool = False

    @property
    def warnings(self) -> list[str]:
        return self.info.warnings

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.pixels.shape[0]), int(self.pixels.shape[1]))


DECODER_LOGGERS = ("pydicom", "openjpeg", "pylibjpeg", "libjpeg", "PIL", "nrrd")


class _Collector(logging.Handler):
    def __init__(self, messages: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.messages = messages

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(" ".join(record.getMessage().split())[:300])


@contextlib.contextmanager
def capture_decoder_messages() -> Iterator[list[str]]:
    """Collect what decoders warn or log while one file is decoded, instead of printing it.

    Decoders report damage (a JPEG 2000 stream whose precision differs from the header,
    a failed plug-in with a traceback) through ``warnings`` and ``logging``; collected,
    those messages become the image's own warnings and never a traceback on the console.
    """
    messages: list[str] = []
    handler = _Collector(messages)
    loggers = [logging.getLogger(name) for name in DECODER_LOGGERS]
    saved = [(logger.propagate, logger.level) for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.propagate = False
    try:
        with _warnings.catch_warnings(record=True) as caught:
            _warnings.simplefilter("always")
            yield messages
        messages.extend(" ".join(str(w.message).split())[:300] for w in caught)
        messages[:] = list(dict.fromkeys(messages))  # pydicom both warns and logs each one
    finally:
        for logger, (propagate, _level) in zip(loggers, saved, strict=True):
            logger.removeHandler(handler)
            logger.propagate = propagate
