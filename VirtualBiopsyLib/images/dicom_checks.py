"""Header checks that stop a broken or hostile DICOM file before any pixel is decoded.

Each check turns a value that would crash pydicom's LUT code, ask a decoder for gigabytes
or give a meaningless image (Rescale Slope 0, a VOI LUT shorter than its descriptor, a
window width of 0 or text, a JPEG 2000 code stream far larger than Rows × Columns, a
deflated data set that inflates without end) into an :class:`ImageReadError` that names
the file and the attribute. The limits come from :mod:`VirtualBiopsyLib.limits`.
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from pathlib import Path
from typing import Any, BinaryIO

from pydicom.dataset import Dataset

from VirtualBiopsyLib.errors import ImageReadError
from VirtualBiopsyLib.images.identity import patient_id_problem, uid_problem
from VirtualBiopsyLib.limits import (
    LimitExceededError,
    check_decompressed_bytes,
    check_image_size,
)

DEFLATED = "1.2.840.10008.1.2.1.99"
GREY_PHOTOMETRICS = ("MONOCHROME1", "MONOCHROME2")
VOI_FUNCTIONS = ("", "LINEAR", "LINEAR_EXACT", "SIGMOID")
_J2K_SYNTAXES = {
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
}
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}
_ITEM_TAG_LE = b"\xfe\xff\x00\xe0"
_CODESTREAM_HEAD = 4096  # bytes of the first fragment read to find the size marker


def _number(ds: Dataset, keyword: str, path: Path) -> float | None:
    """The first value of a numeric attribute as a finite float (``None`` when absent)."""
    if keyword not in ds:
        return None
    try:
        value = ds.get(keyword)
        if value is None or value == "":
            return None
        if not isinstance(value, (int, float, str)) and hasattr(value, "__getitem__"):
            value = value[0]
        number = float(value)
    except (TypeError, ValueError, IndexError, OverflowError) as error:
        raise ImageReadError(path, f"{_label(keyword)} is not a number ({error})") from error
    if not math.isfinite(number):
        raise ImageReadError(path, f"{_label(keyword)} is {number}, not a finite number")
    return number


_LABELS = {"ModalityLUTSequence": "Modality LUT Sequence", "VOILUTSequence": "VOI LUT Sequence"}


def _label(keyword: str) -> str:
    """``"WindowWidth"`` → ``"Window Width"`` (the attribute's name in the standard)."""
    return _LABELS.get(keyword) or re.sub(r"(?<=[a-z])(?=[A-Z])", " ", keyword)


def check_pixel_module(ds: Dataset, path: Path) -> None:
    """Refuse sizes, bit depths, rescale, LUT and window values no decoder should see."""
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        check_image_size(rows, columns)
    except LimitExceededError as error:
        raise ImageReadError(path, f"image refused: {error}") from error
    except (TypeError, ValueError) as error:
        raise ImageReadError(path, f"Rows or Columns is not a number ({error})") from error
    allocated = int(_number(ds, "BitsAllocated", path) or 16)
    stored = int(_number(ds, "BitsStored", path) or allocated)
    if allocated not in (8, 16, 32) or not 1 <= stored <= allocated:
        raise ImageReadError(
            path, f"Bits Allocated {allocated} / Bits Stored {stored} is not a grey-level mammogram"
        )
    if int(_number(ds, "PixelRepresentation", path) or 0) not in (0, 1):
        raise ImageReadError(path, "Pixel Representation must be 0 or 1")
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if photometric not in GREY_PHOTOMETRICS:
        raise ImageReadError(
            path, f"Photometric Interpretation {photometric or 'missing'} is not grey-level"
        )
    _check_rescale(ds, path)
    if "ModalityLUTSequence" in ds:
        _check_lut(ds, "ModalityLUTSequence", path)
    if "VOILUTSequence" in ds and ds.VOILUTSequence is not None and len(ds.VOILUTSequence):
        _check_lut(ds, "VOILUTSequence", path)
    elif "VOILUTSequence" in ds and "WindowWidth" not in ds:
        raise ImageReadError(path, "VOI LUT Sequence is empty and there is no window")
    _check_window(ds, path)


def _check_rescale(ds: Dataset, path: Path) -> None:
    slope = _number(ds, "RescaleSlope", path)
    _number(ds, "RescaleIntercept", path)
    if slope is not None and slope == 0.0:
        raise ImageReadError(path, "Rescale Slope is 0: every pixel would have the same value")


def _check_lut(ds: Dataset, keyword: str, path: Path) -> None:
    name = _label(keyword)
    sequence = ds.get(keyword)
    if sequence is None or len(sequence) == 0:
        raise ImageReadError(path, f"{name} is empty")
    item = sequence[0]
    descriptor = item.get("LUTDescriptor")
    if descriptor is None or len(descriptor) != 3 or "LUTData" not in item:
        raise ImageReadError(path, f"{name} item has no LUT Descriptor or no LUT Data")
    try:
        entries, _first, bits = (int(v) for v in descriptor)
    except (TypeError, ValueError) as error:
        raise ImageReadError(path, f"{name} LUT Descriptor is not numeric ({error})") from error
    entries = entries or 65536  # PS3.3 C.11.1.1.1: 0 means 2^16 entries
    if not 8 <= bits <= 16:
        raise ImageReadError(path, f"{name} declares {bits}-bit entries (8 to 16 allowed)")
    data = item.LUTData
    count = len(data) // 2 if isinstance(data, (bytes, bytearray)) else _length(data)
    if count < entries:
        raise ImageReadError(
            path, f"{name} LUT Data has {count} entries; its descriptor declares {entries}"
        )


def _length(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, (int, float)):
        return 1
    return len(value)


def _check_window(ds: Dataset, path: Path) -> None:
    center = _number(ds, "WindowCenter", path)
    width = _number(ds, "WindowWidth", path)
    if center is None or width is None:
        return
    function = str(ds.get("VOILUTFunction", "") or "").strip().upper()
    if function not in VOI_FUNCTIONS:
        raise ImageReadError(path, f"VOI LUT Function {function!r} is not one DICOM defines")
    least = 1.0 if function in ("", "LINEAR") else 0.0  # PS3.3 C.11.2.1.2
    if width < least or width <= 0.0:
        raise ImageReadError(path, f"Window Width {width:g} is below {least:g}")


def check_identity(ds: Dataset, path: Path) -> None:
    """Refuse a Patient ID or Study Instance UID that would make exported DICOM invalid."""
    patient_id = str(ds.get("PatientID", "") or "").strip()
    problem = patient_id_problem(patient_id) if patient_id else None
    study_uid = str(ds.get("StudyInstanceUID", "") or "").strip()
    problem = problem or (uid_problem(study_uid) if study_uid else None)
    if problem:
        raise ImageReadError(path, problem)


def check_deflated_size(path: Path, handle: BinaryIO) -> None:
    """Inflate a deflated data set once, discarding the output, within the byte limit.

    pydicom inflates the whole data set into memory before parsing it; a few kilobytes
    can inflate to gigabytes, so the size is measured first in bounded chunks.
    """
    start = _dataset_start(handle)
    if start is None:
        return
    handle.seek(start)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    try:
        while chunk := handle.read(1 << 20):
            data = inflater.decompress(chunk, 1 << 24)
            while True:
                total += len(data)
                check_decompressed_bytes(total)
                if not inflater.unconsumed_tail:
                    break
                data = inflater.decompress(inflater.unconsumed_tail, 1 << 24)
    except LimitExceededError as error:
        raise ImageReadError(path, f"deflated data set refused: it {error}") from error
    except zlib.error as error:
        raise ImageReadError(path, f"deflated data set is corrupt ({error})") from error
    finally:
        handle.seek(0)


def _dataset_start(handle: BinaryIO) -> int | None:
    """Offset of the data set after the file meta group (None when not found)."""
    handle.seek(128)
    if handle.read(4) != b"DICM":
        return None
    header = handle.read(12)  # (0002,0000) UL 4 <length>
    if len(header) < 12 or header[:4] != b"\x02\x00\x00\x00":
        return None
    (length,) = struct.unpack("<L", header[8:12])
    return 132 + 12 + length


def check_codestream_size(
    handle: BinaryIO, ds: Dataset, path: Path, syntax: str, pixel_start: int
) -> None:
    """The JPEG / JPEG 2000 code stream must declare the image size Rows × Columns say.

    Decoders allocate what the code stream declares, not what the DICOM header says: a
    JPEG 2000 stream declaring 65535 × 65535 in a 64 × 64 file asks for 8 GiB.
    """
    if not (syntax in _J2K_SYNTAXES or syntax.startswith("1.2.840.10008.1.2.4.")):
        return
    handle.seek(pixel_start)
    head = handle.read(_CODESTREAM_HEAD + 16)
    fragment = _first_fragment(head)
    if fragment is None:
        raise ImageReadError(path, "encapsulated pixel data has no fragment")
    size = _j2k_size(fragment) if syntax in _J2K_SYNTAXES else _jpeg_size(fragment)
    if size is None:
        return  # not found in the first bytes: the decoder will say what is wrong
    rows, columns = size
    try:
        check_image_size(rows, columns)
    except LimitExceededError as error:
        raise ImageReadError(path, f"compressed image refused: its code stream {error}") from error
    if (rows, columns) != (int(ds.Rows), int(ds.Columns)):
        raise ImageReadError(
            path,
            f"code stream declares {rows} × {columns} pixels but Rows × Columns are "
            f"{int(ds.Rows)} × {int(ds.Columns)}",
        )


def _first_fragment(head: bytes) -> bytes | None:
    """Bytes of the first fragment after the Basic Offset Table (little endian items)."""
    position = 0
    for _ in range(2):  # the offset table item, then the first fragment
        if head[position : position + 4] != _ITEM_TAG_LE or len(head) < position + 8:
            return None
        (length,) = struct.unpack("<L", head[position + 4 : position + 8])
        if _ == 1:
            return head[position + 8 : position + 8 + min(length, _CODESTREAM_HEAD)]
        position += 8 + length
        if position + 8 > len(head):
            return None
    return None


def _j2k_size(stream: bytes) -> tuple[int, int] | None:
    """(rows, columns) from a J2K SIZ marker (also inside a JP2 wrapper)."""
    index = stream.find(b"\xff\x4f\xff\x51")
    if index < 0 or len(stream) < index + 24:
        return None
    x_size, y_size, x_origin, y_origin = struct.unpack(">LLLL", stream[index + 8 : index + 24])
    return (y_size - y_origin, x_size - x_origin)


def _jpeg_size(stream: bytes) -> tuple[int, int] | None:
    """(rows, columns) from the first JPEG / JPEG-LS start-of-frame marker."""
    position = 2 if stream[:2] == b"\xff\xd8" else None
    if position is None:
        return None
    while position + 9 <= len(stream):
        if stream[position] != 0xFF:
            return None
        marker = stream[position + 1]
        (length,) = struct.unpack(">H", stream[position + 2 : position + 4])
        if marker in _JPEG_SOF:
            rows, columns = struct.unpack(">HH", stream[position + 5 : position + 9])
            return (rows, columns) if rows else None  # 0 rows: defined later (DNL)
        position += 2 + length
    return None
