"""DICOM mammograms: the role of a file from its header, and its pixels as displayed.

Roles follow the rules in ``docs/dicom.md`` (GE and DICOM-standard Image Type values,
Acquisition Device Processing Code, View Position, View Code Sequence, GE private clinical
view, Image Laterality, Laterality, file name); every decision records the rule that made
it, so that ``virtual-biopsy inspect`` can explain itself.

Pixels go through Modality LUT → VOI LUT → MONOCHROME1 inversion → [0, 1] scaling. Those
steps depend only on the stored value, so they are composed once into a float32 lookup table
over the stored-value range and applied with one gather (``table.take(stored)``); this is
about ten times faster than applying pydicom's LUT functions to a full-size image and gives
the same numbers. Float pixel data and very wide ranges fall back to pydicom's functions.
"""

from __future__ import annotations

import logging
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder

from VirtualBiopsyLib.errors import ImageError, ImageReadError, UnsupportedImageError
from VirtualBiopsyLib.images.dicom_checks import (
    DEFLATED,
    check_codestream_size,
    check_deflated_size,
    check_identity,
    check_pixel_module,
)
from VirtualBiopsyLib.images.mammogram import ImageInfo, MammogramImage, capture_decoder_messages
from VirtualBiopsyLib.roles import Laterality, Modality, View

logger = logging.getLogger(__name__)

FOR_PRESENTATION_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.2"
FOR_PROCESSING_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.2.1"
MEDIA_DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"  # DICOMDIR
DEFAULT_SPACING_MM = 0.1
MAX_SPACING_MM = 10.0
GE_CLINICAL_VIEW_TAG = (0x0045, 0x101B)
#: Names a DICOM image file goes by (besides a numeric tail; see dicom_like_name).
DICOM_SUFFIXES = ("", ".dcm", ".dicom", ".dic", ".dc3", ".ima", ".img")

# SNOMED CT (and the older SNOMED-RT) codes of DICOM CID 4014 "View for Mammography".
VIEW_CODES: dict[str, View] = {
    "399162004": View.CC,
    "R-10242": View.CC,
    "399368009": View.MLO,
    "R-10226": View.MLO,
}
VIEW_MEANINGS: dict[str, View] = {"cranio-caudal": View.CC, "medio-lateral oblique": View.MLO}
DES_IMAGE_TYPES = ("RECOMBINED", "SUBTRACTION")
_PIXEL_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}
_FLOAT_PIXEL_TAGS = {
    (0x7FE0, 0x0008): "Float Pixel Data",
    (0x7FE0, 0x0009): "Double Float Pixel Data",
}
_LONG_LENGTH_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UC", b"UN", b"UR", b"UT"}
_UNDEFINED_LENGTH = 0xFFFFFFFF
_SEQUENCE_DELIMITER_LE = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_MAX_TABLE_ENTRIES = 1 << 20
_NAME_TOKEN = re.compile(r"[A-Za-z0-9]+")


@dataclass(frozen=True)
class DisplayTransform:
    """How stored values become displayed values in [0, 1] (or modality values).

    ``describe`` is the rule recorded in ``ImageInfo.rules["voi"]``.
    """

    windowed: bool
    output_range: tuple[float, float]
    invert: bool
    describe: str


# --------------------------------------------------------------------------- header


def _text(value: object) -> str:
    """Normalise a DICOM string: strip padding and NULs, upper-case."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="ignore")
    return str(value).strip(" \x00").upper()


def _image_type(ds: Dataset) -> list[str]:
    """Image Type as a list that keeps empty values in place (GE leaves value 3 empty)."""
    raw = ds.get("ImageType")
    if raw is None:
        return []
    values = [raw] if isinstance(raw, str) else list(raw)
    if len(values) == 1 and "\\" in str(values[0]):
        values = str(values[0]).split("\\")
    return [_text(v) for v in values]


def _name_tokens(path: Path) -> list[str]:
    return [token.upper() for token in _NAME_TOKEN.findall(path.stem)]


def modality_rule(ds: Dataset, path: Path) -> tuple[Modality | None, str]:
    """Decide LE or DES; raises ``UnsupportedImageError`` for a high-energy image.

    >>> from pydicom.dataset import Dataset
    >>> ds = Dataset(); ds.ImageType = ["ORIGINAL", "PRIMARY", "", "LOW_ENERGY"]
    >>> modality_rule(ds, Path("x.dcm"))
    (<Modality.LE: 'LE'>, 'ImageType[3]=LOW_ENERGY')
    """
    image_type = _image_type(ds)
    if len(image_type) > 3 and image_type[3] in DES_IMAGE_TYPES:
        return Modality.DES, f"ImageType[3]={image_type[3]}"
    if "HIGH_ENERGY" in image_type[2:]:
        raise UnsupportedImageError(path, "high-energy image (Image Type HIGH_ENERGY) is not used")
    for index in (3, 4):
        if len(image_type) > index and image_type[index] == "LOW_ENERGY":
            return Modality.LE, f"ImageType[{index}]=LOW_ENERGY"
    for index, value in enumerate(image_type[2:], start=2):
        if value in DES_IMAGE_TYPES:
            return Modality.DES, f"ImageType[{index}]={value}"
        if value == "LOW_ENERGY":
            return Modality.LE, f"ImageType[{index}]=LOW_ENERGY"
    processing = _text(ds.get("AcquisitionDeviceProcessingCode"))
    if processing.startswith("GEMS_FFDM"):
        return Modality.LE, f"AcquisitionDeviceProcessingCode={processing}"
    tokens = _name_tokens(path)
    if "DES" in tokens or "CM" in tokens:
        return Modality.DES, "file name"
    if "LE" in tokens or "DM" in tokens:
        return Modality.LE, "file name"
    contrast_markers = {"PRE_CONTRAST", "POST_CONTRAST", "ADDITION"}
    if processing.startswith("GEMS_CESM") or contrast_markers & set(image_type):
        return None, "undetermined (CESM image without an energy value in Image Type)"
    return Modality.LE, "default: no CESM marker (plain mammogram = LE)"


def _ge_clinical_view(ds: Dataset) -> str:
    element = ds.get(GE_CLINICAL_VIEW_TAG)
    return _text(element.value) if element is not None else ""


def view_rule(ds: Dataset, path: Path) -> tuple[View | None, str]:
    """Decide CC or MLO from View Position, View Code Sequence, GE private tag, file name."""
    position = _text(ds.get("ViewPosition"))
    if position in ("CC", "MLO"):
        return View(position), "ViewPosition"
    for item in ds.get("ViewCodeSequence") or []:
        code = _text(item.get("CodeValue"))
        if code in VIEW_CODES:
            return VIEW_CODES[code], f"ViewCodeSequence={code}"
        meaning = str(item.get("CodeMeaning", "")).strip().lower()
        if meaning in VIEW_MEANINGS:
            return VIEW_MEANINGS[meaning], "ViewCodeSequence meaning"
    match = re.fullmatch(r"([LR])?\s*(CC|MLO)", _ge_clinical_view(ds))
    if match:
        return View(match.group(2)), "GE private (0045,101B)"
    tokens = _name_tokens(path)
    for token in tokens:
        match = re.fullmatch(r"[LR]?(CC|MLO)", token)
        if match:
            return View(match.group(1)), "file name"
    seen = f"ViewPosition={position}" if position else "no view tag"
    return None, f"undetermined ({seen})"


def laterality_rule(ds: Dataset, path: Path) -> tuple[Laterality | None, str]:
    """Decide L or R from Image Laterality, Laterality, GE private tag, file name."""
    for keyword in ("ImageLaterality", "Laterality"):
        value = _text(ds.get(keyword))
        if value in ("L", "R"):
            return Laterality(value), keyword
    match = re.fullmatch(r"([LR])\s*(CC|MLO)", _ge_clinical_view(ds))
    if match:
        return Laterality(match.group(1)), "GE private (0045,101B)"
    for token in _name_tokens(path):
        match = re.fullmatch(r"([LR])(CC|MLO)?", token)
        if match:
            return Laterality(match.group(1)), "file name"
    return None, "undetermined (no laterality tag)"


def spacing_rule(ds: Dataset) -> tuple[tuple[float, float], str]:
    """Pixel spacing (row, column) in mm: Imager Pixel Spacing, Pixel Spacing or 0.1 mm.

    A value outside (0, 10] mm (no mammography detector has pixels of a centimetre) is
    ignored like a missing one: it would end up in every NRRD and DICOM output.
    """
    for keyword in ("ImagerPixelSpacing", "PixelSpacing"):
        value = ds.get(keyword)
        try:
            row_mm, col_mm = (float(v) for v in value)
        except (TypeError, ValueError, OverflowError):
            continue
        if 0 < row_mm <= MAX_SPACING_MM and 0 < col_mm <= MAX_SPACING_MM:
            return (row_mm, col_mm), keyword
    return (DEFAULT_SPACING_MM, DEFAULT_SPACING_MM), f"default {DEFAULT_SPACING_MM} mm"


def acquisition_rule(ds: Dataset) -> tuple[str | None, str]:
    """A sortable acquisition time ``YYYYMMDDHHMMSS.ffffff`` for choosing the earliest image."""
    date_time = _text(ds.get("AcquisitionDateTime"))
    if date_time:
        return _sortable(date_time[:8], date_time[8:]), "AcquisitionDateTime"
    for prefix in ("Acquisition", "Content"):
        date = _text(ds.get(f"{prefix}Date"))
        if date:
            return _sortable(date, _text(ds.get(f"{prefix}Time"))), f"{prefix}Date+{prefix}Time"
    return None, "none"


def _sortable(date: str, time: str) -> str:
    time = re.split(r"[+-]", time)[0]  # drop a UTC offset
    whole, _, fraction = time.partition(".")
    return f"{date[:8]:0<8}{whole[:6]:0<6}.{fraction[:6]:0<6}"


def _check_usable(ds: Dataset, path: Path) -> None:
    """Raise for files that are readable but deliberately not used."""
    if ds.file_meta.get("MediaStorageSOPClassUID") == MEDIA_DIRECTORY_SOP_CLASS:
        raise UnsupportedImageError(path, "DICOMDIR (a media directory, not an image)")
    if "Modality" not in ds:  # type 1 in every image IOD: a cut or foreign file
        raise ImageReadError(path, "truncated file or not an image (no Modality)")
    sop_class = str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", ""))
    if sop_class == FOR_PROCESSING_SOP_CLASS:
        raise UnsupportedImageError(
            path, "Digital Mammography 'For Processing' image (raw detector data) is not used"
        )
    modality = _text(ds.get("Modality"))
    if modality != "MG":
        raise UnsupportedImageError(path, f"Modality is {modality or 'missing'}, not MG")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise UnsupportedImageError(
            path, f"multi-frame object ({frames} frames, e.g. tomosynthesis) is not used"
        )
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise UnsupportedImageError(path, "colour image (Samples per Pixel > 1) is not used")


def _check_decoder(ds: Dataset, path: Path) -> None:
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is None:
        return
    name = f"{syntax.name} ({syntax})" if syntax.name != str(syntax) else str(syntax)
    try:
        available = get_decoder(syntax).is_available
    except NotImplementedError:
        available = False
    if not available:
        raise ImageReadError(path, f"no installed decoder for transfer syntax {name}")


def _check_pixel_data(handle, ds: Dataset, path: Path) -> None:
    """Check pixel data is present and complete by reading only its element header."""
    if ds.file_meta.get("TransferSyntaxUID") == "1.2.840.10008.1.2.1.99":
        return  # deflated: the file bytes are compressed; decoding will tell
    little = ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2.1") != "1.2.840.10008.1.2.2"
    implicit = ds.file_meta.get("TransferSyntaxUID") == "1.2.840.10008.1.2"
    start = handle.tell()
    header = handle.read(12)
    if len(header) < 8:
        raise ImageReadError(path, "no pixel data (file ends before Pixel Data)")
    order = "<" if little else ">"
    group, element = struct.unpack(order + "HH", header[:4])
    if (group, element) not in _PIXEL_TAGS:
        raise ImageReadError(path, "no pixel data element")
    if (group, element) in _FLOAT_PIXEL_TAGS:
        raise ImageReadError(
            path,
            f"{_FLOAT_PIXEL_TAGS[(group, element)]} (floating-point pixels) is not a "
            "mammogram; Digital Mammography stores integers",
        )
    if implicit:
        (length,), offset = struct.unpack(order + "L", header[4:8]), 8
    elif header[4:6] in _LONG_LENGTH_VRS:
        (length,), offset = struct.unpack(order + "L", header[8:12]), 12
    else:
        (length,), offset = struct.unpack(order + "H", header[6:8]), 8
    handle.seek(0, 2)
    available = handle.tell() - start - offset
    if length == _UNDEFINED_LENGTH:
        handle.seek(-8, 2)
        if little and handle.read(8) != _SEQUENCE_DELIMITER_LE:
            raise ImageReadError(path, "truncated file (encapsulated pixel data has no end)")
        syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
        check_codestream_size(handle, ds, path, syntax, start + offset)
        return
    if available < length:
        raise ImageReadError(path, f"truncated file (pixel data has {available} of {length} bytes)")
    needed = int(ds.Rows) * int(ds.Columns) * int(ds.get("BitsAllocated", 16)) // 8
    if length < needed:
        raise ImageReadError(
            path, f"pixel data too short ({length} bytes; Rows × Columns need {needed})"
        )


def read_dicom_info(path: Path | str) -> ImageInfo:
    """Read a DICOM header (never the pixels) and decide the file's role.

    Raises ``UnsupportedImageError`` for files deliberately not used and
    ``ImageReadError`` for files that cannot be read.

    >>> info = read_dicom_info("exam/IM_0001.dcm")  # doctest: +SKIP
    >>> info.slot, info.rules["modality"]  # doctest: +SKIP
    ('LE_CC', 'ImageType[3]=LOW_ENERGY')
    """
    path = Path(path)
    try:
        # pydicom's value warnings may quote a Patient Name or ID: kept off the console.
        with capture_decoder_messages(), path.open("rb") as handle:
            if pydicom.filereader.read_file_meta_info(path).get("TransferSyntaxUID") == DEFLATED:
                check_deflated_size(path, handle)
            ds = pydicom.dcmread(handle, stop_before_pixels=True)
            _check_usable(ds, path)
            if "Rows" not in ds or "Columns" not in ds:
                raise ImageReadError(path, "Rows or Columns missing")
            check_pixel_module(ds, path)
            check_identity(ds, path)
            _check_pixel_data(handle, ds, path)
        _check_decoder(ds, path)
        return info_from_dataset(ds, path)
    except ImageError:
        raise
    except InvalidDicomError as error:
        if not dicom_like_name(path):  # autorun.inf, viewer.exe, report.pdf on an exam CD
            reason = f"not an image file (not DICOM, and {path.suffix} is no image format)"
            raise UnsupportedImageError(path, reason) from error
        reason = "not a DICOM file (no 'DICM' prefix or file meta information)"
        raise ImageReadError(path, reason) from error
    except (OSError, EOFError, ValueError, TypeError, KeyError, IndexError, struct.error) as error:
        raise ImageReadError(path, f"cannot read DICOM header: {error}") from error


def dicom_like_name(path: Path) -> bool:
    """Whether a file's name is one a DICOM image goes by: no extension, a DICOM one, or
    a UID's numeric tail (``1.2.840.113619.2.55.3.12``). A file named otherwise that is
    not DICOM is a side file (the viewer and documents on an exam CD), not a broken image.
    """
    suffix = path.suffix.lower()
    return suffix in DICOM_SUFFIXES or (suffix[1:].isascii() and suffix[1:].isdigit())


def info_from_dataset(ds: Dataset, path: Path) -> ImageInfo:
    """Build the ``ImageInfo`` of a parsed dataset, with the rule behind each decision."""
    modality, modality_how = modality_rule(ds, path)
    view, view_how = view_rule(ds, path)
    laterality, laterality_how = laterality_rule(ds, path)
    _, spacing_how = spacing_rule(ds)
    acquisition, acquisition_how = acquisition_rule(ds)
    patient_id = str(ds.get("PatientID", "") or "").strip() or None
    study_uid = str(ds.get("StudyInstanceUID", "") or "").strip() or None
    return ImageInfo(
        path=path,
        format="dicom",
        modality=modality,
        view=view,
        laterality=laterality,
        patient_id=patient_id,
        study_uid=study_uid,
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        acquisition=acquisition,
        rules={
            "modality": modality_how,
            "view": view_how,
            "laterality": laterality_how,
            "spacing": spacing_how,
            "acquisition": acquisition_how,
        },
    )


# --------------------------------------------------------------------------- pixels


def display_transform(ds: Dataset) -> DisplayTransform:
    """Describe the VOI step of a dataset and the range its output is scaled from."""
    invert = _text(ds.get("PhotometricInterpretation")) == "MONOCHROME1"
    voi_sequence = ds.get("VOILUTSequence")
    if voi_sequence:
        bits = int(voi_sequence[0].LUTDescriptor[2])
        return DisplayTransform(True, (0.0, float(2**bits - 1)), invert, "VOILUTSequence")
    y_min, y_max = _modality_output_range(ds)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        function = _text(ds.get("VOILUTFunction")) or "LINEAR"
        return DisplayTransform(True, (y_min, y_max), invert, f"window ({function})")
    return DisplayTransform(False, (y_min, y_max), invert, "none (no VOI LUT or window)")


def _modality_output_range(ds: Dataset) -> tuple[float, float]:
    """The range pydicom's windowing maps into (PS3.3 C.11.2.1.2), after the modality LUT."""
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    if ds.get("ModalityLUTSequence"):
        lut_bits = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**lut_bits - 1)
    if int(ds.get("PixelRepresentation", 0)) == 0:
        y_min, y_max = 0.0, float(2**bits - 1)
    else:
        y_min, y_max = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        y_min, y_max = (
            y_min * float(slope) + float(intercept),
            y_max * float(slope) + float(intercept),
        )
    return y_min, y_max


def _display_values(stored: np.ndarray, ds: Dataset, transform: DisplayTransform) -> np.ndarray:
    """Apply modality LUT, VOI, scaling and inversion with pydicom's own functions."""
    values = apply_modality_lut(stored, ds)
    if transform.windowed:
        values = apply_voi_lut(values, ds, index=0)
    low, high = transform.output_range
    values = np.asarray(values, dtype=np.float64)
    if transform.windowed:
        span = high - low if high > low else 1.0
        values = np.clip((values - low) / span, 0.0, 1.0)
        if transform.invert:
            values = 1.0 - values
    elif transform.invert:
        values = (low + high) - values
    return values.astype(np.float32)


def display_table(ds: Dataset, dtype: np.dtype) -> tuple[np.ndarray, int] | None:
    """A float32 lookup table over the stored values and the offset to index it with.

    Returns ``None`` where a table does not fit (float pixel data, very wide ranges).
    """
    dtype = np.dtype(dtype)
    if dtype.kind not in "ui" or dtype.itemsize > 2:
        return None
    count = 1 << (8 * dtype.itemsize)
    stored = np.arange(count, dtype=np.int64)
    if dtype.kind == "i":
        stored -= count // 2
    table = _display_values(stored.astype(dtype), ds, display_transform(ds))
    offset = int(stored[0])
    return table, offset


def display_pixels(stored: np.ndarray, ds: Dataset) -> tuple[np.ndarray, DisplayTransform]:
    """Stored pixel values → displayed float32 (one table look-up where possible).

    >>> import numpy as np
    >>> from pydicom.dataset import Dataset
    >>> ds = Dataset(); ds.PhotometricInterpretation = "MONOCHROME2"
    >>> ds.BitsStored = 12; ds.PixelRepresentation = 0
    >>> ds.WindowCenter = 2048; ds.WindowWidth = 4096
    >>> pixels, how = display_pixels(np.array([[0, 4095]], dtype=np.uint16), ds)
    >>> pixels.round(3).tolist(), how.windowed
    ([[0.0, 1.0]], True)
    """
    transform = display_transform(ds)
    table = display_table(ds, stored.dtype)
    if table is None:
        return _display_values(stored, ds, transform), transform
    values, offset = table
    if offset == 0:
        return values.take(stored), transform  # take(): ~3x faster than fancy indexing
    # Signed values: flipping the sign bit of the unsigned view gives ``stored - offset``.
    unsigned = stored.view(np.dtype(f"u{stored.dtype.itemsize}"))
    return values.take(unsigned ^ unsigned.dtype.type(-offset)), transform


def read_dicom_image(path: Path | str, info: ImageInfo | None = None) -> MammogramImage:
    """Decode a DICOM mammogram into pixels as a radiologist sees them.

    >>> image = read_dicom_image("exam/IM_0001.dcm")  # doctest: +SKIP
    >>> image.windowed, image.pixels.dtype  # doctest: +SKIP
    (True, dtype('float32'))
    """
    path = Path(path)
    info = info if info is not None else read_dicom_info(path)
    try:
        with capture_decoder_messages():  # value warnings may quote identifiers
            ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError, struct.error) as error:
        raise ImageReadError(path, f"cannot read DICOM file: {error}") from error
    check_pixel_module(ds, path)  # the file may have changed since its header was read
    syntax = ds.file_meta.get("TransferSyntaxUID", "unknown transfer syntax")
    with capture_decoder_messages() as messages:
        try:
            stored = ds.pixel_array
        except MemoryError as error:
            raise ImageReadError(path, "not enough memory to decode the pixel data") from error
        except Exception as error:  # decoders raise anything; the file is at fault
            name = getattr(syntax, "name", syntax)
            detail = " ".join(str(error).split())[:300]
            raise ImageReadError(path, f"cannot decode pixel data ({name}): {detail}") from error
    if stored.ndim != 2:
        raise ImageReadError(path, f"expected one 2-D frame, got pixel array {stored.shape}")
    if stored.dtype.kind not in "ui":
        raise ImageReadError(path, f"pixel data decode to {stored.dtype}, not integers")
    try:
        pixels, transform = display_pixels(stored, ds)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, struct.error) as error:
        raise ImageReadError(path, f"invalid LUT or window values: {error}") from error
    spacing, _ = spacing_rule(ds)
    info.rules["voi"] = transform.describe
    info.rules["photometric"] = _text(ds.get("PhotometricInterpretation"))
    image = MammogramImage(info=info, pixels=pixels, spacing=spacing, windowed=transform.windowed)
    image.info.warnings[:] = [f"decoder: {message}" for message in messages]
    return image
