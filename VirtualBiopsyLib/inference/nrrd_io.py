"""Write pictures as NRRD on the grid of their source image, so they overlay it exactly.

Spacing comes from the source image; origin and direction are copied from the source
file when it is an NRRD whose size agrees (the Slicer hand-over), so a saliency map
dropped into Slicer sits on its mammogram. Synthetic images carry
``VirtualBiopsy_Synthetic:=true`` in the NRRD header, besides 'synthetic' in the name.
The layout is the one ITK and Slicer read: 2-D, 2-D space, one space direction per
axis, gzip-encoded float32. Fields are formatted with pynrrd (which reads them back);
the data is gzipped with ISA-L (``isal``) where installed: 0.09 s instead of zlib's
0.28 s for a full-size synthetic DES (measured), the costliest part of writing a case.

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

import nrrd
import numpy as np

try:  # a faster gzip, same format; the standard library's when it is not installed
    from isal import isal_zlib as gzip_codec
except ImportError:  # pragma: no cover - isal is a declared dependency
    import zlib as gzip_codec

from VirtualBiopsyLib import RESEARCH_USE_NOTICE
from VirtualBiopsyLib.errors import VirtualBiopsyError
from VirtualBiopsyLib.images.nrrd_reader import (
    NRRD_SUFFIXES,
    NrrdGrid,
    nrrd_grid,
    read_nrrd_header,
    read_nrrd_pixels,
)
from VirtualBiopsyLib.inference.result import SlotPicture

SYNTHETIC_KEY = "VirtualBiopsy_Synthetic"
SALIENCY_LEVELS = 256
IMAGE_LEVELS = 4096
DESCRIPTION_KEY = "VirtualBiopsy_Description"
NOTICE_KEY = "VirtualBiopsy_Notice"
COMPRESSION_LEVEL = 1  # gzip: the quantised maps shrink 4–25× already at level 1
GZIP_WINDOW = 16 + 15  # zlib's way of asking for a gzip header and trailer

log = logging.getLogger(__name__)


def _reference_grid(reference_path: Path | None, shape: tuple[int, int]) -> NrrdGrid | None:
    """The source file's grid when it is an NRRD of the same size.

    Only NRRD sources (the Slicer hand-over) carry a frame worth copying; a projection
    mammogram in DICOM or JPEG has no patient position, so those keep the identity.
    """
    if reference_path is None or not Path(reference_path).is_file():
        return None
    if Path(reference_path).suffix.lower() not in NRRD_SUFFIXES:
        return None
    stamp = os.stat(reference_path).st_mtime_ns  # a changed file is read again
    return _cached_grid(str(reference_path), stamp, tuple(shape))


@lru_cache(maxsize=64)
def _cached_grid(reference_path: str, stamp: int, shape: tuple[int, int]) -> NrrdGrid | None:
    """Header read once per file: a case's saliency map and synthetic DES share a source."""
    try:
        grid = nrrd_grid(read_nrrd_header(reference_path), reference_path)
    except VirtualBiopsyError:
        return None
    if grid.shape != shape:
        return None
    if abs(np.linalg.det(np.reshape(grid.direction, (2, 2)))) < 1e-6:
        return None  # the plane is not spanned by the first two axes; keep identity
    return grid


def quantize(pixels: np.ndarray, levels: int, in_place: bool = False) -> np.ndarray:
    """Round [0, 1] values to ``levels`` evenly spaced float32 values (0 and 1 included).

    ``in_place``: overwrite ``pixels`` (a float32 array nobody else holds) instead of
    allocating a second full-size array.
    """
    steps = np.float32(levels - 1)
    pixels = np.asarray(pixels, dtype=np.float32)
    grid = np.clip(pixels, 0.0, 1.0, out=pixels if in_place else None)
    grid *= steps
    np.round(grid, out=grid)
    grid /= steps
    return grid


def picture_header(picture: SlotPicture, shape: tuple[int, int]) -> dict[str, str]:
    """The NRRD fields of a picture: float32, its spacing, the source's frame if any."""
    row_mm, col_mm = (float(v) for v in picture.spacing)
    origin, direction = (0.0, 0.0), (1.0, 0.0, 0.0, 1.0)
    grid = _reference_grid(picture.reference_path, shape)
    if grid is not None:
        origin, direction = grid.origin, grid.direction
    # direction is row-major with one column per axis (ITK's convention)
    column_axis = [direction[0] * col_mm, direction[2] * col_mm]
    row_axis = [direction[1] * row_mm, direction[3] * row_mm]
    return {
        "type": "float",
        "dimension": "2",
        "space dimension": "2",
        "sizes": f"{shape[1]} {shape[0]}",
        "space directions": " ".join(
            nrrd.format_vector(np.array(v)) for v in (column_axis, row_axis)
        ),
        "kinds": "domain domain",
        "endian": "little",
        "encoding": "gzip",
        "space origin": nrrd.format_vector(np.array(origin, dtype=float)),
    }


def _write_nrrd(
    path: str, pixels: np.ndarray, fields: dict[str, str], keys: dict[str, str]
) -> None:
    """One attached-header NRRD file: magic line, fields, ``key:=value`` pairs, gzip data."""
    lines = ["NRRD0004"] + [f"{name}: {value}" for name, value in fields.items()]
    lines += [f"{key}:={value}" for key, value in keys.items()]
    compressor = gzip_codec.compressobj(COMPRESSION_LEVEL, gzip_codec.DEFLATED, GZIP_WINDOW)
    data = np.ascontiguousarray(pixels, dtype="<f4")
    with open(path, "wb") as stream:
        stream.write(("\n".join(lines) + "\n\n").encode("ascii"))
        stream.write(compressor.compress(memoryview(data).cast("B")))
        stream.write(compressor.flush())


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
    pixels = np.ascontiguousarray(picture.pixels, dtype=np.float32)
    if levels is not None:
        computed_here = picture.geometry is not None  # a lazy map, drawn just now
        pixels = quantize(pixels, levels, in_place=computed_here)
    keys = {SYNTHETIC_KEY: "true" if synthetic else "false", NOTICE_KEY: RESEARCH_USE_NOTICE}
    if description:
        keys[DESCRIPTION_KEY] = description
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".nrrd", dir=path.parent)
    os.close(fd)
    try:
        _write_nrrd(tmp, pixels, picture_header(picture, pixels.shape), keys)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_picture(path: Path) -> tuple[np.ndarray, tuple[float, float], dict[str, str]]:
    """Pixels, (row_mm, column_mm) spacing and our header keys of an NRRD we wrote."""
    pixels, grid, header = read_nrrd_pixels(path)
    ours = {key: str(value) for key, value in header.items() if key.startswith("VirtualBiopsy_")}
    return pixels, grid.spacing, ours
