"""NRRD files, read and written in one place (2-D images on a physical grid).

Reading is the readers' own (:mod:`VirtualBiopsyLib.images.nrrd_reader`, pynrrd with
the input limits); this module adds writing and is what every other part of the library
uses for NRRD: the predict outputs, the test and benchmark fixtures, reading a picture
back. The layout written is the one ITK and Slicer read: 2-D, 2-D space, one space
direction per axis, float32, gzip (ISA-L where installed: 0.09 s instead of zlib's
0.28 s for a full-size image, measured), our own ``key:=value`` pairs after the fields.

>>> import numpy as np, tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "LE_CC.nrrd"
>>> _ = write_nrrd(path, np.eye(3, dtype=np.float32), (0.2, 0.1), keys={"Note": "x"})
>>> pixels, grid, keys = read_nrrd(path)
>>> pixels.shape, grid.spacing, keys["Note"]
((3, 3), (0.2, 0.1), 'x')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import nrrd
import numpy as np

try:  # a faster gzip, same format; the standard library's when it is not installed
    from isal import isal_zlib as gzip_codec
except ImportError:  # pragma: no cover - isal is a declared dependency
    import zlib as gzip_codec

from VirtualBiopsyLib.atomic_io import write_atomically
from VirtualBiopsyLib.errors import VirtualBiopsyError
from VirtualBiopsyLib.images.nrrd_reader import (
    NRRD_SUFFIXES,
    NrrdGrid,
    nrrd_grid,
    read_nrrd_header,
    read_nrrd_pixels,
)

COMPRESSION_LEVEL = 1  # gzip: quantised maps shrink 4–25× already at level 1
GZIP_WINDOW = 16 + 15  # zlib's way of asking for a gzip header and trailer
IDENTITY_DIRECTION = (1.0, 0.0, 0.0, 1.0)

__all__ = [
    "NRRD_SUFFIXES",
    "NrrdGrid",
    "quantize",
    "read_nrrd",
    "reference_grid",
    "write_nrrd",
]


def quantize(pixels: np.ndarray, levels: int, in_place: bool = False) -> np.ndarray:
    """Round [0, 1] values to ``levels`` evenly spaced float32 values (0 and 1 included).

    Why: a full-size map upsampled from 256² has a different float in nearly every pixel
    and then neither compresses nor writes fast (0.25 s and 24 MB per saliency map
    unrounded, 0.02 s and 1 MB at 256 levels, measured). ``in_place``: overwrite
    ``pixels`` (a float32 array nobody else holds) instead of allocating a second one.
    """
    steps = np.float32(levels - 1)
    pixels = np.asarray(pixels, dtype=np.float32)
    grid = np.clip(pixels, 0.0, 1.0, out=pixels if in_place else None)
    grid *= steps
    np.round(grid, out=grid)
    grid /= steps
    return grid


def write_nrrd(
    path: Path | str,
    pixels: np.ndarray,
    spacing: tuple[float, float],
    *,
    origin: Sequence[float] = (0.0, 0.0),
    direction: Sequence[float] = IDENTITY_DIRECTION,
    keys: Mapping[str, str] | None = None,
    compression: int = COMPRESSION_LEVEL,
) -> Path:
    """Write a 2-D float32 image (rows × columns) as one gzip NRRD file, atomically.

    ``spacing`` is (row_mm, column_mm); ``direction`` is ITK's row-major 2×2 matrix with
    one column per axis (column axis first); ``keys`` become ``key:=value`` lines.
    """
    pixels = np.ascontiguousarray(pixels, dtype="<f4")
    if pixels.ndim != 2:
        raise ValueError(f"write_nrrd: expected a 2-D image, got shape {pixels.shape}")
    row_mm, col_mm = (float(v) for v in spacing)
    column_axis = [direction[0] * col_mm, direction[2] * col_mm]
    row_axis = [direction[1] * row_mm, direction[3] * row_mm]
    fields = {
        "type": "float",
        "dimension": "2",
        "space dimension": "2",
        "sizes": f"{pixels.shape[1]} {pixels.shape[0]}",
        "space directions": " ".join(
            nrrd.format_vector(np.array(v)) for v in (column_axis, row_axis)
        ),
        "kinds": "domain domain",
        "endian": "little",
        "encoding": "gzip",
        "space origin": nrrd.format_vector(np.array(origin, dtype=float)),
    }
    lines = ["NRRD0004"] + [f"{name}: {value}" for name, value in fields.items()]
    lines += [f"{key}:={value}" for key, value in (keys or {}).items()]
    header = ("\n".join(lines) + "\n\n").encode("ascii")

    def write(temporary: Path) -> None:
        compressor = gzip_codec.compressobj(compression, gzip_codec.DEFLATED, GZIP_WINDOW)
        with open(temporary, "wb") as stream:
            stream.write(header)
            stream.write(compressor.compress(memoryview(pixels).cast("B")))
            stream.write(compressor.flush())

    return write_atomically(Path(path), write)


def read_nrrd(path: Path | str) -> tuple[np.ndarray, NrrdGrid, dict[str, str]]:
    """Pixels (float32, rows × columns), grid and the ``key:=value`` pairs of a 2-D NRRD."""
    pixels, grid, header = read_nrrd_pixels(path)
    keys = {
        str(key): str(value)
        for key, value in header.items()
        if key not in _FIELD_NAMES and isinstance(value, str)
    }
    return pixels, grid, keys


_FIELD_NAMES = frozenset(
    (
        "type",
        "dimension",
        "space dimension",
        "space",
        "sizes",
        "space directions",
        "kinds",
        "endian",
        "encoding",
        "space origin",
        "data file",
        "content",
        "units",
        "space units",
        "measurement frame",
        "byte skip",
        "line skip",
    )
)


def reference_grid(path: Path | str | None, shape: tuple[int, int]) -> NrrdGrid | None:
    """The frame (origin, direction) of an NRRD source file when its size is ``shape``.

    Only NRRD sources (the Slicer hand-over) carry a frame worth copying; a projection
    mammogram in DICOM or JPEG has no patient position, so those keep the identity.
    None when the file is not an NRRD, cannot be read, has another size, or its plane is
    not spanned by its first two axes.
    """
    if path is None or Path(path).suffix.lower() not in NRRD_SUFFIXES or not Path(path).is_file():
        return None
    try:
        grid = nrrd_grid(read_nrrd_header(path), path)
    except VirtualBiopsyError:
        return None
    if grid.shape != tuple(shape):
        return None
    if abs(np.linalg.det(np.reshape(grid.direction, (2, 2)))) < 1e-6:
        return None
    return grid
