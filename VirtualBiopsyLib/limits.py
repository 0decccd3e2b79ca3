"""Limits on what an input file may ask for, checked before anything is allocated.

A hostile or broken file can declare a 65535 × 65535 image, inflate a few kilobytes of
gzip into gigabytes, or nest JSON a million levels deep. Every reader checks its file
against these limits *before* decoding, and refuses it with an error naming the file and
the limit (and the environment variable that raises it), so one bad file never exhausts
the memory of a batch.

The defaults fit every mammography detector on the market with room to spare (the
largest, 4096 × 3328 at 70 µm, is 13.6 megapixels). Where a real user could need more,
an environment variable raises the limit:

==================================  ===========================================  ==========
environment variable                what it bounds                               default
==================================  ===========================================  ==========
``VIRTUAL_BIOPSY_MAX_IMAGE_PIXELS``  rows × columns of one image                   40 000 000
``VIRTUAL_BIOPSY_MAX_DECOMPRESSED``  bytes one file may inflate to (NRRD gzip or   1 GiB
                                     bzip2, deflated DICOM)
``VIRTUAL_BIOPSY_MAX_JSON_BYTES``    size of ``model.json`` / ``case.json``        4 MiB
``VIRTUAL_BIOPSY_MAX_WEIGHTS_BYTES`` size of one ``.safetensors`` weight file      4 GiB
``VIRTUAL_BIOPSY_MIN_IMAGE_SIDE``    the shortest side an image must have to be    64
                                     classified
==================================  ===========================================  ==========

Fixed limits (no real file comes near them): JSON nesting depth (:data:`MAX_JSON_DEPTH`),
the network input size in ``model.json`` (:data:`MAX_NETWORK_INPUT_SIZE`), the generator
width and depth (:data:`GENERATOR_MAXIMA`); the model package schema holds the same
maxima. At those maxima one activation of a generator (width 256, 1024² input) is
already 1 GiB of float32.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any, BinaryIO

MAX_JSON_DEPTH = 32
MAX_NETWORK_INPUT_SIZE = 1024  # the paper uses 256; a 1024² CycleGAN already needs GiBs
MAX_GENERATOR_WIDTH = 256  # ngf; the published CycleGAN uses 64
MAX_GENERATOR_BLOCKS = 32  # n_blocks; the published CycleGAN uses 9
MAX_UNET_LEVELS = 8  # 2^8 = 256: a 256² input is one pixel at the bottom
GENERATOR_MAXIMA = {
    "ngf": MAX_GENERATOR_WIDTH,
    "base_width": MAX_GENERATOR_WIDTH,
    "n_blocks": MAX_GENERATOR_BLOCKS,
    "levels": MAX_UNET_LEVELS,
}

_DEFAULTS: dict[str, int] = {
    "VIRTUAL_BIOPSY_MAX_IMAGE_PIXELS": 40_000_000,
    "VIRTUAL_BIOPSY_MAX_DECOMPRESSED": 1 << 30,
    "VIRTUAL_BIOPSY_MAX_JSON_BYTES": 4 << 20,
    "VIRTUAL_BIOPSY_MAX_WEIGHTS_BYTES": 4 << 30,
    "VIRTUAL_BIOPSY_MIN_IMAGE_SIDE": 64,
}
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_OPENING = (ord("["), ord("{"))
_CLOSING = (ord("]"), ord("}"))


class LimitExceededError(ValueError):
    """A file asks for more than a limit allows; the message names the limit."""


def limit(name: str) -> int:
    """The value of a limit: its environment variable when set to a positive integer.

    Read at every call, so a test or a long-lived Slicer process sees a changed value.

    >>> limit("VIRTUAL_BIOPSY_MAX_JSON_BYTES")
    4194304
    """
    default = _DEFAULTS[name]
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        return default
    return value if value > 0 else default


def max_image_pixels() -> int:
    return limit("VIRTUAL_BIOPSY_MAX_IMAGE_PIXELS")


def max_decompressed_bytes() -> int:
    return limit("VIRTUAL_BIOPSY_MAX_DECOMPRESSED")


def min_image_side() -> int:
    return limit("VIRTUAL_BIOPSY_MIN_IMAGE_SIDE")


def check_image_size(rows: int, columns: int) -> None:
    """Raise :class:`LimitExceededError` for a declared size no mammogram has (before decoding).

    >>> check_image_size(2850, 2396)
    >>> try:
    ...     check_image_size(65535, 65535)
    ... except LimitExceededError as error:
    ...     print(str(error)[:40])
    declares 65535 × 65535 = 4294836225 pixe
    """
    rows, columns = int(rows), int(columns)
    if rows < 1 or columns < 1:
        raise LimitExceededError(f"declares an empty image ({rows} × {columns} pixels)")
    pixels = rows * columns
    if pixels > max_image_pixels():
        raise LimitExceededError(
            f"declares {rows} × {columns} = {pixels} pixels, more than the limit of "
            f"{max_image_pixels()} (VIRTUAL_BIOPSY_MAX_IMAGE_PIXELS)"
        )


def check_decompressed_bytes(count: int) -> None:
    """Raise :class:`LimitExceededError` when ``count`` decoded bytes exceed the limit."""
    if count > max_decompressed_bytes():
        raise LimitExceededError(
            f"inflates to more than {max_decompressed_bytes()} bytes "
            "(VIRTUAL_BIOPSY_MAX_DECOMPRESSED)"
        )


def open_regular_file(path: Path | str) -> BinaryIO:
    """``path`` opened for reading if it is a regular file; ``LimitExceededError`` for a
    device, FIFO or socket, found without waiting (a FIFO's plain ``open`` blocks until
    someone writes to it, and ``/dev/zero`` never ends)."""
    handle = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    stream = os.fdopen(handle, "rb")
    if not stat.S_ISREG(os.fstat(handle).st_mode):
        stream.close()
        raise LimitExceededError("is not a regular file (a device, FIFO or socket)")
    os.set_blocking(handle, True)
    return stream


def read_regular_file(path: Path | str, max_bytes: int, variable: str) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; ``LimitExceededError`` otherwise.

    A link to ``/dev/zero`` or a FIFO would never end: only regular files are read, and
    never more than ``max_bytes + 1`` bytes (the file may grow while it is read).
    """
    with open_regular_file(path) as stream:
        data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise LimitExceededError(f"is larger than the limit of {max_bytes} bytes ({variable})")
    return data


def json_depth(text: str) -> int:
    """The deepest nesting of ``[`` and ``{`` in JSON text (brackets in strings ignored).

    Counted with one vectorised pass, before parsing: Python's parser recurses and would
    fail on a file nested a million levels deep.

    >>> json_depth('{"a": [1, {"b": "[[["}]}')
    3
    """
    import numpy as np

    codes = np.frombuffer(_JSON_STRING.sub('""', text).encode("utf-8"), dtype=np.uint8)
    steps = np.isin(codes, _OPENING).astype(np.int64) - np.isin(codes, _CLOSING)
    return int(np.cumsum(steps).max(initial=0))


def load_json_file(path: Path | str) -> Any:
    """Parse a small JSON file within the size and depth limits.

    Raises :class:`LimitExceededError` (too big, too deep, not a regular file),
    ``UnicodeDecodeError`` or ``json.JSONDecodeError``; ``OSError`` when unreadable.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "case.json"; _ = p.write_text('{"a": [1]}')
    >>> load_json_file(p)
    {'a': [1]}
    """
    max_bytes = limit("VIRTUAL_BIOPSY_MAX_JSON_BYTES")
    text = read_regular_file(path, max_bytes, "VIRTUAL_BIOPSY_MAX_JSON_BYTES").decode("utf-8")
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise LimitExceededError(f"JSON nested {depth} levels deep (at most {MAX_JSON_DEPTH})")
    return json.loads(text, parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> Any:
    """``NaN`` and ``Infinity`` are not JSON; Python's parser accepts them unless told."""
    raise json.JSONDecodeError(f"{name} is not valid JSON", name, 0)
