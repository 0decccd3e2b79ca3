"""Lesion masks of a training manifest, on the network's grid, for the generators' test metrics.

A manifest row may name a lesion mask (``lesion_mask``: an 8-bit PNG on the row image's
own pixel grid, non-zero inside the lesion; see
:mod:`VirtualBiopsyLib.training_manifest`). A test pair's mask is its DES row's, else its
LE row's when the LE has the DES's pixel shape (a CESM pair is one acquisition, so its
two images are registered). The mask is carried through the DES image's own
preprocessing geometry (padding, resize, flip of left breasts) and thresholded at 0.5, as
the phantom's ground truth is (:mod:`Training.phantom_truth`), so it lies on the lesion of
the array the generator is scored on. The mapping itself, and its cache, belong to
:meth:`Training.cache.PreprocessedCache.lesion_mask`; this module reads and checks the
files and gathers one fold's masks.

A mask that cannot be used (unreadable, not a 2-D image, of another size than its image)
is refused with a warning naming the mask, the manifest and the problem: that image
counts as not annotated and the run goes on; the result counts refusals by reason
(:data:`REFUSAL_REASONS`), without file names, which may hold patient IDs. A lesion too
small to cover any pixel of the network's grid by half (a few millimetres at 64²) gets a
warning and a count too (``too_small_for_grid``): it is annotated, but no lesion figure
is over it.

>>> masks = pair_lesion_masks(pairs, cache, Path("cohort/manifest.csv"))  # doctest: +SKIP
>>> masks.record()  # doctest: +SKIP
{'annotated': 12, 'too_small_for_grid': 0, 'refused': 0, 'refused_by_reason': {}}
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError

from Training.datasets import ImagePair
from VirtualBiopsyLib.limits import (
    LimitExceededError,
    check_image_size,
    max_decompressed_bytes,
    read_regular_file,
)

logger = logging.getLogger(__name__)

MAX_NAMED_WARNINGS = 5  # lesion-mask problems named one by one per call; the rest counted

UNREADABLE = "unreadable"
NOT_2D = "not a 2-D image"
SIZE_DIFFERS = "size differs from its image"
LE_SIZE_DIFFERS = "LE mask, but the LE and DES images differ in size"
#: Why a mask can be refused: what ``result.json`` counts (no file names, no patients).
REFUSAL_REASONS: tuple[str, ...] = (UNREADABLE, NOT_2D, SIZE_DIFFERS, LE_SIZE_DIFFERS)


class LesionMaskRefusedError(Exception):
    """A lesion mask that cannot be used: ``reason`` (one of :data:`REFUSAL_REASONS`)
    and ``detail`` (sizes, the decoder's message; never a path)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class LesionMaskSource(Protocol):
    """What maps a mask onto the network's grid (:class:`Training.cache.PreprocessedCache`)."""

    def lesion_mask(
        self, image_path: Path, mask_path: Path, shaped_as: Path | None = None
    ) -> np.ndarray:
        """The mask of ``image_path`` on its preprocessed grid (bool ``size × size``);
        ``shaped_as``: another image that must have the same pixel shape (the LE whose
        mask it is). Raises :class:`LesionMaskRefusedError`."""
        ...


def read_mask_bytes(path: Path) -> bytes:
    """The bytes of the mask file at ``path``: a regular file of at most
    :func:`max_decompressed_bytes`. Opened without blocking, so a FIFO or a device named
    as a mask (``/dev/zero``) is refused at once instead of hanging or filling the memory
    of the run. Raises :class:`LesionMaskRefusedError` (:data:`UNREADABLE`)."""
    try:
        return read_regular_file(path, max_decompressed_bytes(), "VIRTUAL_BIOPSY_MAX_DECOMPRESSED")
    except LimitExceededError as error:
        raise LesionMaskRefusedError(UNREADABLE, str(error)) from None
    except OSError as error:
        raise LesionMaskRefusedError(
            UNREADABLE, f"cannot read file ({error.strerror or error})"
        ) from None


def read_lesion_mask(source: Path | bytes) -> np.ndarray:
    """The mask in ``source`` (a file, or its bytes from :func:`read_mask_bytes`) as a
    bool array (non-zero: lesion), on its own pixel grid.

    Its declared size is checked before decoding (:func:`check_image_size`), like an
    image's. Raises :class:`LesionMaskRefusedError` for a file that is not a readable image or
    holds more than one channel.
    """
    data = source if isinstance(source, bytes) else read_mask_bytes(Path(source))
    if not data:
        raise LesionMaskRefusedError(UNREADABLE, "empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            check_image_size(image.size[1], image.size[0])
            # a palette image's pixels are indices: read what they show (black: outside)
            values = np.asarray(image.convert("L") if image.mode == "P" else image)
    except LimitExceededError as error:
        raise LesionMaskRefusedError(UNREADABLE, f"mask refused: {error}") from None
    except UnidentifiedImageError:
        raise LesionMaskRefusedError(UNREADABLE, "not an image format PIL reads") from None
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise LesionMaskRefusedError(UNREADABLE, f"not a readable image ({error})") from None
    if values.ndim != 2:
        raise LesionMaskRefusedError(NOT_2D, f"pixel array of shape {values.shape}")
    return values != 0


@dataclass
class LesionMaskSet:
    """One fold's test pairs' masks (None: not annotated) and how many were refused."""

    masks: list[np.ndarray | None]
    annotated: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    #: annotated masks whose lesion covers no pixel of the network's grid by half: too
    #: small for this image size, so not among the pairs the lesion figures are over
    too_small_for_grid: int = 0

    def record(self) -> dict[str, object]:
        """What ``result.json`` keeps: counts only (no file names, no patients)."""
        return {
            "annotated": self.annotated,
            "too_small_for_grid": self.too_small_for_grid,
            "refused": sum(self.refused.values()),
            "refused_by_reason": dict(sorted(self.refused.items())),
        }


def pair_lesion_masks(
    pairs: Sequence[ImagePair], source: LesionMaskSource | None, manifest_path: Path
) -> LesionMaskSet:
    """Each pair's lesion mask on its DES's preprocessed grid (see the module docstring).

    Nothing is read for pairs without a mask, so a manifest without masks costs nothing.
    The first :data:`MAX_NAMED_WARNINGS` problems are warned about by name, the rest in one
    line (a deleted masks folder would otherwise give a warning per image of a data set).
    """
    result = LesionMaskSet([None] * len(pairs))
    named = 0

    def warn(message: str, *args: object) -> None:
        nonlocal named
        named += 1
        if named <= MAX_NAMED_WARNINGS:
            logger.warning(message, *args)

    for index, pair in enumerate(pairs):
        mask_path = pair.des_mask or pair.le_mask
        if mask_path is None:
            continue
        if source is None:  # no cache to map with (a stand-alone call): none annotated
            logger.warning("%s: lesion masks ignored (no image cache to map them)", manifest_path)
            return LesionMaskSet([None] * len(pairs))
        shaped_as = None if pair.des_mask is not None else pair.le_path
        try:
            result.masks[index] = source.lesion_mask(pair.des_path, mask_path, shaped_as)
        except LesionMaskRefusedError as refusal:
            warn(
                "%s: lesion mask %s (for %s) refused, %s; that image counts as not annotated",
                manifest_path,
                mask_path,
                pair.des_path.name,
                refusal,
            )
            result.refused[refusal.reason] += 1
            continue
        result.annotated += 1
        if not result.masks[index].any() and _has_lesion(mask_path):
            warn(
                "%s: the lesion of mask %s (for %s) covers no pixel of the %d² network grid "
                "by half; too small at this image size, it is left out of the lesion figures",
                manifest_path,
                mask_path,
                pair.des_path.name,
                result.masks[index].shape[0],
            )
            result.too_small_for_grid += 1
    if named > MAX_NAMED_WARNINGS:
        logger.warning(
            "%s: %d more lesion masks refused or too small for the grid (not named; "
            "result.json counts them by reason: %s)",
            manifest_path,
            named - MAX_NAMED_WARNINGS,
            result.record(),
        )
    return result


def _has_lesion(mask_path: Path) -> bool:
    """Whether the mask file marks any pixel (an all-zero mask is annotated, lesion-free);
    read only for masks that came out empty on the grid."""
    try:
        return bool(read_lesion_mask(mask_path).any())
    except LesionMaskRefusedError:
        return False


__all__ = [
    "REFUSAL_REASONS",
    "LesionMaskRefusedError",
    "LesionMaskSet",
    "LesionMaskSource",
    "pair_lesion_masks",
    "read_lesion_mask",
    "read_mask_bytes",
]
