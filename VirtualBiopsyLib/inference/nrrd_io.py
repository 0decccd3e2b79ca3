"""Write pictures as NRRD on the grid of their source image, so they overlay it exactly.

Spacing comes from the source image; origin and direction are copied from the source
file when SimpleITK can read its header and the sizes agree (NRRD from Slicer, DICOM),
so a saliency map dropped into Slicer sits on its mammogram. Synthetic images carry
``VirtualBiopsy_Synthetic:=true`` in the NRRD header, besides 'synthetic' in the name.

Values stay float32 in [0, 1] but are rounded to a grid (``levels``: 256 for saliency
maps, 4096 — 12 bits, as the DICOM export — for synthetic DES) before gzip: a full-size
map upsampled from 256² has a different float in nearly every pixel and then neither
compresses nor writes fast (measured: 0.25 s and 24 MB per saliency map unrounded,
0.02 s and 1 MB at 256 levels).
"""

from __future__ import annotations

import logging
import os
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import SimpleITK as sitk  # noqa: N813 (the conventional alias)

from VirtualBiopsyLib import RESEARCH_USE_NOTICE
from VirtualBiopsyLib.inference.result import SlotPicture

SYNTHETIC_KEY = "VirtualBiopsy_Synthetic"
SALIENCY_LEVELS = 256
IMAGE_LEVELS = 4096
DESCRIPTION_KEY = "VirtualBiopsy_Description"
NOTICE_KEY = "VirtualBiopsy_Notice"

log = logging.getLogger(__name__)


def _reference_frame(
    reference_path: Path | None, shape: tuple[int, int]
) -> tuple[tuple[float, float], tuple[float, ...]] | None:
    """Origin and 2×2 direction of the source file when its in-plane size matches.

    Only NRRD sources (the Slicer hand-over) carry a frame worth copying; a projection
    mammogram in DICOM or JPEG has no patient position, so those keep the identity.
    """
    if reference_path is None or not Path(reference_path).is_file():
        return None
    if Path(reference_path).suffix.lower() not in (".nrrd", ".nhdr"):
        return None
    stamp = os.stat(reference_path).st_mtime_ns  # a changed file is read again
    return _cached_frame(str(reference_path), stamp, tuple(shape))


@lru_cache(maxsize=64)
def _cached_frame(
    reference_path: str, stamp: int, shape: tuple[int, int]
) -> tuple[tuple[float, float], tuple[float, ...]] | None:
    """Header read once per file: a case's saliency map and synthetic DES share a source."""
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(reference_path))
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    size = reader.GetSize()
    if tuple(size[:2]) != (shape[1], shape[0]) or any(s != 1 for s in size[2:]):
        return None
    dim = reader.GetDimension()
    direction = reader.GetDirection()
    origin = reader.GetOrigin()
    in_plane = (direction[0], direction[1], direction[dim], direction[dim + 1])
    if abs(np.linalg.det(np.reshape(in_plane, (2, 2)))) < 1e-6:
        return None  # the plane is not spanned by the first two axes; keep identity
    return (origin[0], origin[1]), in_plane


def quantize(pixels: np.ndarray, levels: int) -> np.ndarray:
    """Round [0, 1] values to ``levels`` evenly spaced float32 values (0 and 1 included)."""
    steps = np.float32(levels - 1)
    grid = np.clip(np.asarray(pixels, dtype=np.float32), 0.0, 1.0) * steps
    np.round(grid, out=grid)
    grid /= steps
    return grid


def picture_to_image(picture: SlotPicture, levels: int | None = None) -> sitk.Image:
    """The SimpleITK image of a picture: float32, spacing (column, row) in ITK order."""
    pixels = np.ascontiguousarray(picture.pixels, dtype=np.float32)
    if levels is not None:
        pixels = quantize(pixels, levels)
    image = sitk.GetImageFromArray(pixels)
    row_mm, col_mm = picture.spacing
    image.SetSpacing((float(col_mm), float(row_mm)))
    frame = _reference_frame(picture.reference_path, pixels.shape)
    if frame is not None:
        image.SetOrigin(frame[0])
        image.SetDirection(frame[1])
    return image


def write_picture(
    picture: SlotPicture,
    path: Path,
    synthetic: bool,
    description: str = "",
    levels: int | None = IMAGE_LEVELS,
) -> Path:
    """Write ``picture`` to ``path`` (.nrrd) atomically; mark it synthetic when it is.

    ``levels``: round values in [0, 1] to that many steps first (None: write as is).

    >>> import numpy as np, tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> picture = SlotPicture(np.zeros((4, 3), np.float32), (0.1, 0.1))
    >>> write_picture(picture, folder / "synthetic_DES_CC.nrrd", synthetic=True).name
    'synthetic_DES_CC.nrrd'
    """
    path = Path(path)
    image = picture_to_image(picture, levels)
    image.SetMetaData(SYNTHETIC_KEY, "true" if synthetic else "false")
    image.SetMetaData(NOTICE_KEY, RESEARCH_USE_NOTICE)
    if description:
        image.SetMetaData(DESCRIPTION_KEY, description)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".nrrd", dir=path.parent)
    os.close(fd)
    try:
        sitk.WriteImage(image, tmp, useCompression=True, compressionLevel=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_picture(path: Path) -> tuple[np.ndarray, tuple[float, float], dict[str, str]]:
    """Pixels, (row_mm, column_mm) spacing and header keys of an NRRD we wrote."""
    image = sitk.ReadImage(str(path))
    metadata = {key: image.GetMetaData(key) for key in image.GetMetaDataKeys()}
    col_mm, row_mm = image.GetSpacing()[:2]
    return sitk.GetArrayFromImage(image), (row_mm, col_mm), metadata
