"""NRRD slot files: the hand-over format between 3D Slicer and the library.

The Slicer module exports a case as ``LE_CC.nrrd``, ``DES_MLO.nrrd`` … (any subset) and a
``case.json`` beside them holding ``{"patient_id", "study_uid", "laterality"}``. The file
name gives modality and view; ``case.json`` gives the identity. Without ``case.json`` the
folder name stands in for the patient and a study UID is derived from the folder path, so
two folders never merge into one case. ``synthetic_DES_CC.nrrd`` (our own output) is read
as a synthetic image, and so is any slot file whose header carries our synthetic marker
(``VirtualBiopsy_Synthetic:=true``), whatever it is called: a synthetic DES renamed
``DES_CC.nrrd`` is never taken for an acquired one.

Headers and pixels are read with pynrrd (pure Python): the predict path then never loads
SimpleITK's ~90 MB of libraries just for NRRD. Geometry follows ITK's reading of the same
header (spacing = length of each axis's space direction, LPS in-plane frame), so files
written by Slicer or SimpleITK mean the same here.

Limits (:mod:`VirtualBiopsyLib.limits`): the header is read from at most 1 MiB of a regular
file; the declared size is checked against the pixel limit before anything is allocated;
pixel data are read (and gzip/bzip2 inflated) in bounded chunks, never past the declared
size; a detached ``data file:`` must lie inside the header's folder; ``case.json`` is
bounded in size and depth and its identity values must be valid DICOM (they end up in
exported DICOM).
"""

from __future__ import annotations

import bz2
import io
import os
import re
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nrrd
import numpy as np

from VirtualBiopsyLib.errors import ImageReadError, UnsupportedImageError
from VirtualBiopsyLib.images.identity import derived_uid, patient_id_problem, uid_problem
from VirtualBiopsyLib.images.mammogram import ImageInfo, MammogramImage
from VirtualBiopsyLib.limits import (
    LimitExceededError,
    check_decompressed_bytes,
    check_image_size,
    load_json_file,
    max_decompressed_bytes,
)
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
MAX_HEADER_BYTES = 1 << 20
_READ_CHUNK = 1 << 20
_COMPRESSED = {"gzip": "gzip", "gz": "gzip", "bzip2": "bzip2", "bz2": "bzip2"}
_TEXT = ("ascii", "text", "txt")
# The marker inference.output writes into every picture it saves ("true" on synthetic ones).
SYNTHETIC_KEY = "VirtualBiopsy_Synthetic"
_SLOT_NAME = re.compile(r"(?P<synthetic>synthetic_)?(?P<slot>(LE|DES)_(CC|MLO))", re.IGNORECASE)


def read_case_json(folder: Path) -> dict[str, str] | None:
    """The identity in ``folder/case.json``, or ``None`` when there is none.

    >>> read_case_json(Path("export"))  # doctest: +SKIP
    {'patient_id': 'anon-7', 'study_uid': '1.2.3', 'laterality': 'L'}
    """
    case_file = folder / CASE_FILE
    if not os.path.lexists(case_file):
        return None
    try:
        identity = load_json_file(case_file)
    except LimitExceededError as error:
        raise ImageReadError(case_file, f"refused: {error}") from error
    except OSError as error:
        raise ImageReadError(case_file, f"cannot read ({error.strerror or error})") from error
    except ValueError as error:  # not UTF-8, not JSON, an integer of 100 000 digits
        raise ImageReadError(case_file, f"invalid JSON: {error}") from error
    if not isinstance(identity, dict):
        raise ImageReadError(case_file, "expected a JSON object")
    for key in ("patient_id", "study_uid", "laterality"):
        if not isinstance(identity.get(key, ""), (str, int)) or isinstance(identity.get(key), bool):
            raise ImageReadError(case_file, f"{key} must be a string")
    laterality = str(identity.get("laterality", "")).strip().upper()
    if laterality and laterality not in ("L", "R"):
        shown = laterality if len(laterality) <= 10 else f"{laterality[:10]}…"
        raise ImageReadError(case_file, f"laterality must be 'L' or 'R', not {shown!r}")
    values = {
        key: str(identity[key])
        for key in ("patient_id", "study_uid", "laterality")
        if identity.get(key) not in (None, "")
    }
    problem = patient_id_problem(values["patient_id"]) if "patient_id" in values else None
    problem = problem or (uid_problem(values["study_uid"]) if "study_uid" in values else None)
    if problem:
        raise ImageReadError(case_file, problem)
    return values


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
    header = read_nrrd_header(path)
    grid = nrrd_grid(header, path)
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
    source, rules["source"] = _nrrd_source(header, bool(match["synthetic"]))
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
        source=source,
    )


def _nrrd_source(header: dict[str, Any], synthetic_name: bool) -> tuple[Source, str]:
    """Synthetic when our header marker or the file name says so, and the rule that decided.

    The marker is checked first because a file can be renamed; a marker saying ``false``
    does not make a ``synthetic_`` file real (a synthetic image is never reported as real).
    """
    marker = header.get(SYNTHETIC_KEY)
    if marker is not None and str(marker).strip().lower() != "false":
        return Source.SYNTHETIC, f"NRRD header ({SYNTHETIC_KEY})"
    if synthetic_name:
        return Source.SYNTHETIC, "file name (synthetic_ prefix)"
    return Source.REAL, "file name (slot)"


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
    header, _ = _read_header(Path(path))
    return header


def _read_header(path: Path) -> tuple[dict[str, Any], int]:
    """The header fields and the byte offset where attached data start."""
    try:
        with open(path, "rb") as stream:
            if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
                raise ImageReadError(path, "not a regular file (a device, FIFO or socket)")
            head = stream.read(MAX_HEADER_BYTES)
    except OSError as error:
        raise ImageReadError(path, f"cannot read ({error.strerror or error})") from error
    offset, ended = 0, False
    for number, line in enumerate(head.splitlines(keepends=True)):
        if not line.endswith((b"\n", b"\r")):
            break  # the last, unterminated line of the bytes read
        offset += len(line)
        if number > 0 and line.strip() == b"":
            ended = True
            break
    if not ended and len(head) == MAX_HEADER_BYTES:
        raise ImageReadError(path, f"NRRD header longer than {MAX_HEADER_BYTES} bytes")
    text = head[:offset] if ended else head
    try:
        header = dict(nrrd.read_header(io.BytesIO(text)))
    except (StopIteration, UnicodeDecodeError, ValueError, TypeError, nrrd.NRRDError) as error:
        raise ImageReadError(path, f"not a readable NRRD file ({error})") from error
    missing = [field for field in _REQUIRED_FIELDS if field not in header]
    if missing:
        raise ImageReadError(path, f"not a readable NRRD file (no {', '.join(missing)} field)")
    return header, offset


def nrrd_grid(header: dict[str, Any], path: Path | str) -> NrrdGrid:
    """The 2-D grid of a header; UnsupportedImageError unless it is one grey-level image."""
    sizes = [int(s) for s in header.get("sizes", ())]
    if any(size < 1 for size in sizes):
        raise ImageReadError(path, f"NRRD sizes {sizes} must all be positive")
    kinds = [str(k).lower() for k in header.get("kinds", ["domain"] * len(sizes))]
    if any(word in kind for kind in kinds for word in _NON_SPATIAL_KINDS) or not (
        len(sizes) == 2 or (len(sizes) == 3 and sizes[2] == 1)
    ):
        raise ImageReadError(path, f"expected one grey-level 2-D image, got size {sizes}")
    axes = _axis_vectors(header, len(sizes))
    with np.errstate(over="ignore", invalid="ignore"):  # 1e300 steps: refused just below
        spacing = [float(np.linalg.norm(axes[i])) or 1.0 for i in (0, 1)]
    units = [axes[i] / spacing[i] for i in (0, 1)]
    origin = np.zeros(2)
    if header.get("space origin") is not None:
        origin = np.asarray(header["space origin"], dtype=float)[:2]
    if not (np.isfinite(spacing).all() and np.isfinite(origin).all()):
        raise ImageReadError(path, "space directions or space origin are not finite numbers")
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
    """The pixels (rows × columns, the file's type), grid and header of a 2-D NRRD file.

    The declared size is checked before anything is allocated, and the data are read and
    inflated in chunks, never past the declared size (a gzip bomb stops at its limit).
    """
    path = Path(path)
    header, offset = _read_header(path)
    grid = nrrd_grid(header, path)
    rows, columns = grid.shape
    try:
        check_image_size(rows, columns)
        dtype = np.dtype(nrrd.reader._determine_datatype(header))  # pynrrd's type names
        expected = rows * columns * dtype.itemsize
        check_decompressed_bytes(expected)
    except LimitExceededError as error:
        raise ImageReadError(path, f"image refused: {error}") from error
    except (ValueError, TypeError, KeyError, nrrd.NRRDError) as error:
        raise ImageReadError(path, f"unsupported NRRD pixel type ({error})") from error
    data_path, offset = _data_location(path, header, offset)
    encoding = str(header.get("encoding", "")).lower()
    try:
        with open(data_path, "rb") as stream:
            if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
                raise ImageReadError(path, f"data file {data_path.name} is not a regular file")
            stream.seek(offset)
            _skip_lines(stream, header, path)
            buffer = _read_encoded(stream, header, encoding, expected, dtype, path)
    except OSError as error:
        raise ImageReadError(path, f"cannot read NRRD data ({error.strerror or error})") from error
    except (zlib.error, EOFError) as error:
        raise ImageReadError(path, f"corrupt {encoding} data ({error})") from error
    pixels = buffer if isinstance(buffer, np.ndarray) else np.frombuffer(buffer, dtype=dtype)
    return pixels.reshape(grid.shape), grid, header


def _data_location(path: Path, header: dict[str, Any], offset: int) -> tuple[Path, int]:
    """The file holding the pixels and where they start; a detached file must lie inside
    the header's folder (an NHDR may not point at /etc/shadow or another user's files)."""
    name = header.get("data file", header.get("datafile"))
    if name is None:
        return path, offset
    name = str(name).strip()
    if name.upper().startswith("LIST") or len(name.split()) > 1:
        raise ImageReadError(path, "NRRD data split over several files is not supported")
    folder = path.parent.resolve()
    target = (path.parent / name).resolve()
    if folder not in target.parents:
        raise ImageReadError(path, f"data file {name!r} lies outside the header's folder; refused")
    return target, 0


def _skip_lines(stream: Any, header: dict[str, Any], path: Path) -> None:
    lines = int(header.get("line skip", header.get("lineskip", 0)) or 0)
    if lines < 0:
        raise ImageReadError(path, f"invalid line skip {lines}")
    for _ in range(lines):
        if not stream.readline(MAX_HEADER_BYTES):
            raise ImageReadError(path, "file ends within the skipped lines")


def _read_encoded(
    stream: Any,
    header: dict[str, Any],
    encoding: str,
    expected: int,
    dtype: np.dtype,
    path: Path,
) -> bytes | np.ndarray:
    skip = int(header.get("byte skip", header.get("byteskip", 0)) or 0)
    if skip < -1:
        raise ImageReadError(path, f"invalid byte skip {skip}")
    if encoding == "raw":
        if skip == -1:
            stream.seek(-expected, os.SEEK_END)
        else:
            stream.seek(skip, os.SEEK_CUR)
        data = stream.read(expected)
        if len(data) < expected:
            raise ImageReadError(path, f"truncated: {len(data)} of {expected} data bytes")
        return data
    if encoding in _COMPRESSED:
        skip = 0 if skip == -1 else skip  # -1 with compression: the data end the stream
        data = _inflate(stream, _COMPRESSED[encoding], skip + expected, path)
        return data[len(data) - expected :] if skip else data
    if encoding in _TEXT:
        count = expected // dtype.itemsize
        text = stream.read(min(count * 32 + MAX_HEADER_BYTES, max_decompressed_bytes()))
        values = np.array(text.split(), dtype=np.float64) if text.strip() else np.zeros(0)
        if values.size != count:
            raise ImageReadError(path, f"text data hold {values.size} values, sizes {count}")
        return values.astype(dtype)
    raise ImageReadError(path, f"NRRD encoding {encoding!r} is not supported")


def _inflate(stream: Any, codec: str, expected: int, path: Path) -> bytes:
    """Inflate at most ``expected`` bytes; more means the file lies about its size."""
    inflater: Any = (
        zlib.decompressobj(zlib.MAX_WBITS | 16) if codec == "gzip" else bz2.BZ2Decompressor()
    )
    out = bytearray()
    pending = b""
    while len(out) <= expected:
        if not pending:
            pending = stream.read(_READ_CHUNK)
            if not pending:
                break
        room = expected + 1 - len(out)
        if codec == "gzip":
            out += inflater.decompress(pending, room)
            pending = inflater.unconsumed_tail
            if inflater.eof:
                break
        else:
            out += inflater.decompress(pending, room)
            pending = b""
            if inflater.eof:
                break
            if not inflater.needs_input:
                continue  # output was capped; more is waiting inside the decompressor
    if len(out) > expected:
        raise ImageReadError(
            path, f"{codec} data inflate beyond the declared {expected} bytes; refused"
        )
    if len(out) < expected:
        raise ImageReadError(
            path, f"truncated: {codec} data inflate to {len(out)} of {expected} bytes"
        )
    return bytes(out)
