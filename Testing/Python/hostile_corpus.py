"""A corpus of broken and malicious input files, built on demand in a temporary folder.

Every entry is one thing a careful user with a hostile or damaged export could hand to
``virtual-biopsy predict``: DICOM files whose LUTs, windows, sizes or code streams lie,
NRRD files that inflate without end or point outside their folder, ``case.json`` and
``model.json`` files that are huge, endless or nested a million levels, weights in the
wrong type or full of NaN. Nothing large is committed: each file is made here, small
(bombs are a few kilobytes that *would* inflate to gigabytes), in well under a second.

>>> import tempfile
>>> corpus = build_corpus(Path(tempfile.mkdtemp()))            # doctest: +SKIP
>>> sorted({entry.expected_exit for entry in corpus.entries})  # doctest: +SKIP
[0, 3, 4]

Each :class:`HostileEntry` says which folder to pass, which file the message must name,
the exit code ``predict`` must give (3 bad input, 4 bad model package, 0 where the file
is usable or is rightly passed over) and a fragment the reason must contain.
"""

from __future__ import annotations

import bz2
import gzip
import json
import os
import shutil
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    generate_uid,
)

FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
ROWS, COLUMNS, BITS = 160, 128, 14
# Environment a test run sets: lowers the inflation limit so a bomb stays a few kB here.
ENVIRONMENT = {"VIRTUAL_BIOPSY_MAX_DECOMPRESSED": str(32 << 20)}


@dataclass
class HostileEntry:
    """One hostile input: what to pass, what must be named, which exit code is right."""

    name: str
    folder: Path  # passed to predict as a PATH
    bad_file: Path  # the message must name this file
    expected_exit: int
    reason: str = ""  # a fragment the message (or, for exit 0, result.json) must contain
    model: Path | None = None  # a hostile model package (exit 4 entries)


@dataclass
class HostileCorpus:
    root: Path
    good: Path  # a good case folder, passed beside every hostile one
    entries: list[HostileEntry] = field(default_factory=list)


# --------------------------------------------------------------------------- pixels


def breast_pixels(rows: int = ROWS, columns: int = COLUMNS, seed: int = 0) -> np.ndarray:
    """A breast-like 14-bit image: a half ellipse on the right with textured tissue."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:rows, 0:columns]
    inside = ((r - rows / 2) / (rows / 2.2)) ** 2 + ((c - columns) / (columns * 0.8)) ** 2 < 1
    tissue = 6000 + 5000 * rng.random((rows, columns)) + 20 * c
    values = np.where(inside, tissue, 200 + 50 * rng.random((rows, columns)))
    return np.clip(values, 0, 2**BITS - 1).astype(np.uint16)


# --------------------------------------------------------------------------- DICOM


def write_dicom(
    path: Path,
    *,
    patient_id: str,
    pixels: np.ndarray | None = None,
    view: str = "CC",
    image_type: str = "LOW_ENERGY",
    transfer_syntax: str = ExplicitVRLittleEndian,
    acquisition: str = "20240102101500.000000",
    **attributes: object,
) -> Path:
    """A Digital Mammography For Presentation file (attributes by keyword; None deletes)."""
    pixels = breast_pixels() if pixels is None else pixels
    ds = Dataset()
    values: dict[str, object] = {
        "SOPClassUID": FOR_PRESENTATION,
        "SOPInstanceUID": generate_uid(),
        "Modality": "MG",
        "PatientID": patient_id,
        "StudyInstanceUID": f"1.2.826.0.1.3680043.8.498.{zlib.crc32(patient_id.encode()) + 1}",
        "SeriesInstanceUID": generate_uid(),
        "ImageType": ["ORIGINAL", "PRIMARY", "", image_type],
        "ViewPosition": view,
        "ImageLaterality": "L",
        "AcquisitionDateTime": acquisition,
        "ImagerPixelSpacing": [0.1, 0.1],
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2",
        "Rows": int(pixels.shape[0]),
        "Columns": int(pixels.shape[1]),
        "BitsAllocated": 16,
        "BitsStored": BITS,
        "HighBit": BITS - 1,
        "PixelRepresentation": 0,
        "WindowCenter": 8192,
        "WindowWidth": 16384,
    }
    values.update(attributes)
    for keyword, value in values.items():
        if value is not None:
            setattr(ds, keyword, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = FOR_PRESENTATION
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    if transfer_syntax == JPEG2000Lossless:
        ds.compress(JPEG2000Lossless, np.ascontiguousarray(pixels))
    elif transfer_syntax == DeflatedExplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def patch_bytes(path: Path, old: bytes, new: bytes) -> Path:
    """Replace ``old`` by ``new`` (same length) once: for values pydicom will not write."""
    data = path.read_bytes()
    if len(old) != len(new) or data.count(old) < 1:
        raise ValueError(f"cannot patch {old!r} in {path}")
    path.write_bytes(data.replace(old, new, 1))
    return path


def _lut_item(entries: int, first: int, bits: int, data: list[int] | None) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = [entries, first, bits]
    if data is not None:
        item.add_new(0x00283006, "US", data)  # LUT Data as US values
    return item


def _dicom_entries(root: Path) -> list[HostileEntry]:
    made: list[HostileEntry] = []

    def add(name: str, reason: str, build: Callable[[Path, str], Path], code: int = 3) -> None:
        folder = root / "dicom" / name
        made.append(HostileEntry(name, folder, build(folder, f"HOSTILE-{name}"), code, reason))

    def attrs(**values: object) -> Callable[[Path, str], Path]:
        return lambda folder, pid: write_dicom(folder / "IM0001.dcm", patient_id=pid, **values)

    add("dicom-rescale-slope-zero", "Rescale Slope is 0", attrs(RescaleSlope=0, RescaleIntercept=0))
    add(
        "dicom-empty-modality-lut",
        "Modality LUT Sequence is empty",
        attrs(ModalityLUTSequence=Sequence([])),
    )
    add(
        "dicom-modality-lut-without-data",
        "no LUT Data",
        attrs(ModalityLUTSequence=Sequence([_lut_item(4096, 0, 16, None)])),
    )
    add(
        "dicom-voi-lut-without-descriptor",
        "no LUT Descriptor",
        attrs(VOILUTSequence=Sequence([_bare_lut_data()])),
    )
    add(
        "dicom-voi-lut-data-short",
        "descriptor declares 4096",
        attrs(VOILUTSequence=Sequence([_lut_item(4096, 0, 12, list(range(100)))])),
    )
    add(
        "dicom-voi-lut-64-bit",
        "64-bit entries",
        attrs(VOILUTSequence=Sequence([_lut_item(16, 0, 64, list(range(16)))])),
    )
    add(
        "dicom-empty-voi-lut-no-window",
        "VOI LUT Sequence is empty",
        attrs(VOILUTSequence=Sequence([]), WindowCenter=None, WindowWidth=None),
    )
    add(
        "dicom-window-width-text",
        "Window Width is not a number",
        lambda folder, pid: patch_bytes(
            write_dicom(folder / "IM0001.dcm", patient_id=pid, WindowWidth="11111"),
            b"11111",
            b"abcde",
        ),
    )
    add(
        "dicom-window-width-nan",
        "Window Width",
        lambda folder, pid: patch_bytes(
            write_dicom(folder / "IM0001.dcm", patient_id=pid, WindowWidth="11111"),
            b"11111",
            b"NaN  ",
        ),
    )
    add("dicom-window-width-zero", "Window Width 0", attrs(WindowWidth=0))
    add("dicom-window-width-1e300", "grey level", attrs(WindowCenter=0, WindowWidth="1e300"))
    add("dicom-voi-function-unknown", "VOI LUT Function", attrs(VOILUTFunction="CUBIC"))
    add("dicom-rescale-slope-1e300", "", attrs(RescaleSlope="1e300", RescaleIntercept=0))
    add(
        "dicom-rescale-slope-1e-300", "grey level", attrs(RescaleSlope="1e-300", RescaleIntercept=0)
    )
    add(
        "dicom-voi-lut-first-value-huge",
        "",
        attrs(VOILUTSequence=Sequence([_lut_item(4096, 60000, 12, list(range(4096)))])),
    )
    add("dicom-rows-zero", "empty image", attrs(Rows=0))
    add(
        "dicom-sigmoid-window-negative",
        "Window Width",
        attrs(VOILUTFunction="SIGMOID", WindowWidth=-5),
    )
    add("dicom-one-pixel", "1 × 1", attrs(pixels=np.array([[1000]], np.uint16)))
    add(
        "dicom-constant",
        "grey level",
        attrs(pixels=np.full((ROWS, COLUMNS), 4000, np.uint16)),
    )
    add("dicom-all-black", "grey level", attrs(pixels=np.zeros((ROWS, COLUMNS), np.uint16)))
    add("dicom-window-saturates", "grey level", attrs(WindowCenter=60000, WindowWidth=2))
    add(
        "dicom-breast-not-visible",
        "no breast visible",
        attrs(pixels=np.linspace(0, 1600, ROWS * COLUMNS).reshape(ROWS, COLUMNS).astype("uint16")),
    )
    add("dicom-float-pixel-data", "Float Pixel Data", _float_pixels)
    add("dicom-declares-65535-square", "65535 × 65535", _huge_rows)
    add("dicom-pixel-data-short", "pixel data", _short_pixels)
    add("dicom-bits-stored-above-allocated", "Bits Stored", attrs(BitsStored=20, HighBit=19))
    add("dicom-photometric-rgb", "not grey-level", attrs(PhotometricInterpretation="RGB"))
    add("dicom-j2k-declares-65535-square", "65535 × 65535", _j2k_huge)
    add("dicom-j2k-size-mismatch", "code stream declares", _j2k_mismatch)
    add("dicom-j2k-corrupt-header", "cannot decode pixel data", _j2k_corrupt)
    add("dicom-deflate-bomb", "inflates to more than", _deflate_bomb)
    add("dicom-patient-id-too-long", "Patient ID has 100 characters", attrs(PatientID="P" * 100))
    add(
        "dicom-patient-id-control-characters",
        "control characters",
        lambda folder, pid: patch_bytes(
            write_dicom(folder / "IM0001.dcm", patient_id="CTRLXXID"),
            b"CTRLXXID",
            b"CTRL\x07\x08ID",
        ),
    )
    add("dicom-study-uid-letters", "not a DICOM UID", attrs(StudyInstanceUID="1.2.abc.4"))
    add("dicom-frames-text", "cannot read", _frames_text)
    add("dicom-not-dicom", "not a DICOM file", _garbage("IM0001.dcm", b"this is not DICOM" * 20))
    add("dicom-empty-file", "", _garbage("IM0001.dcm", b""))
    add("dicom-truncated", "", _truncated)
    add("dicom-link-to-dev-zero", "not a regular file", _link("IM0001.dcm", "/dev/zero"))
    add("dicom-broken-link", "no such file", _link("IM0001.dcm", "/nonexistent/x.dcm"))
    add("dicom-fifo", "not a regular file", _fifo)
    add("dicom-sequence-nested-deep", "", _deep_sequence)
    made.append(_tie_break(root))
    made.append(_excess_pixel_data(root))
    spacing = root / "dicom" / "dicom-spacing-absurd"
    made.append(
        HostileEntry(
            "dicom-spacing-absurd",
            spacing,
            write_dicom(
                spacing / "IM0001.dcm",
                patient_id="HOSTILE-spacing",
                ImagerPixelSpacing=["1e300", "-5"],
            ),
            0,
        )
    )
    return made


def _bare_lut_data() -> Dataset:
    item = Dataset()
    item.add_new(0x00283006, "US", list(range(16)))  # LUT Data; its VR is ambiguous alone
    return item


def _float_pixels(folder: Path, pid: str) -> Path:
    path = write_dicom(folder / "IM0001.dcm", patient_id=pid, BitsAllocated=32, BitsStored=32)
    ds = pydicom.dcmread(path)
    del ds.PixelData
    for keyword in ("BitsStored", "HighBit", "PixelRepresentation"):
        delattr(ds, keyword)
    ds.FloatPixelData = breast_pixels().astype(np.float32).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _huge_rows(folder: Path, pid: str) -> Path:
    path = write_dicom(folder / "IM0001.dcm", patient_id=pid)
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = 65535, 65535
    ds.save_as(path, enforce_file_format=True)
    return path


def _short_pixels(folder: Path, pid: str) -> Path:
    path = write_dicom(folder / "IM0001.dcm", patient_id=pid)
    ds = pydicom.dcmread(path)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]
    ds.save_as(path, enforce_file_format=True)
    return path


def _j2k(folder: Path, pid: str) -> Path:
    return write_dicom(folder / "IM0001.dcm", patient_id=pid, transfer_syntax=JPEG2000Lossless)


def _siz_offset(data: bytes) -> int:
    index = data.find(b"\xff\x4f\xff\x51")
    if index < 0:
        raise ValueError("no SIZ marker")
    return index + 8  # Xsiz, Ysiz follow Lsiz and Rsiz


def _j2k_huge(folder: Path, pid: str) -> Path:
    path = _j2k(folder, pid)
    data = bytearray(path.read_bytes())
    at = _siz_offset(data)
    data[at : at + 8] = struct.pack(">LL", 65535, 65535)
    path.write_bytes(bytes(data))
    return path


def _j2k_mismatch(folder: Path, pid: str) -> Path:
    path = _j2k(folder, pid)
    data = bytearray(path.read_bytes())
    at = _siz_offset(data)
    data[at : at + 8] = struct.pack(">LL", COLUMNS * 2, ROWS * 2)
    path.write_bytes(bytes(data))
    return path


def _j2k_corrupt(folder: Path, pid: str) -> Path:
    """Code-stream damage after the size marker: the header reads, decoding fails."""
    path = _j2k(folder, pid)
    data = bytearray(path.read_bytes())
    at = _siz_offset(data) + 60
    for index in range(at, at + 140):
        data[index] = (data[index] * 7 + 3) & 0xFF
    path.write_bytes(bytes(data))
    return path


def _deflate_bomb(folder: Path, pid: str) -> Path:
    """A deflated data set whose private element inflates to 48 MiB (limit set to 32)."""
    path = write_dicom(
        folder / "IM0001.dcm", patient_id=pid, transfer_syntax=DeflatedExplicitVRLittleEndian
    )
    ds = pydicom.dcmread(path)
    block = ds.private_block(0x0011, "HOSTILE", create=True)
    block.add_new(0x01, "OB", bytes(48 << 20))
    ds.save_as(path, enforce_file_format=True)
    return path


def _frames_text(folder: Path, pid: str) -> Path:
    return patch_bytes(
        write_dicom(folder / "IM0001.dcm", patient_id=pid, NumberOfFrames="11"),
        b"IS\x02\x0011",
        b"IS\x02\x00zz",
    )


def _garbage(name: str, data: bytes) -> Callable[[Path, str], Path]:
    def build(folder: Path, pid: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
        return folder / name

    return build


def _truncated(folder: Path, pid: str) -> Path:
    path = write_dicom(folder / "IM0001.dcm", patient_id=pid)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _link(name: str, target: str) -> Callable[[Path, str], Path]:
    def build(folder: Path, pid: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).symlink_to(target)
        return folder / name

    return build


def _fifo(folder: Path, pid: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    os.mkfifo(folder / "IM0001.dcm")
    return folder / "IM0001.dcm"


def _deep_sequence(folder: Path, pid: str) -> Path:
    """A private sequence nested 3000 levels: pydicom's reader recurses per level."""
    path = write_dicom(folder / "IM0001.dcm", patient_id=pid)
    data = path.read_bytes()
    pixel_at = data.rfind(b"\xe0\x7f\x10\x00")
    item = b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    nested = b"".join(
        b"\x11\x00\x10\x10" + b"SQ\x00\x00\xff\xff\xff\xff" + item for _ in range(3000)
    )
    closing = (b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00") * 3000
    private_creator = b"\x11\x00\x10\x00LO\x08\x00HOSTILE "
    path.write_bytes(data[:pixel_at] + private_creator + nested + closing + data[pixel_at:])
    return path


def _tie_break(root: Path) -> HostileEntry:
    """Two LE_CC images acquired at the same time; the first by name cannot be decoded."""
    folder = root / "dicom" / "dicom-tie-break-prefers-readable"
    broken = _j2k_corrupt(folder / "a", "HOSTILE-tie")
    good = write_dicom(folder / "b" / "IM0001.dcm", patient_id="HOSTILE-tie")
    shutil.move(broken, folder / "a_IM0001.dcm")
    shutil.move(good, folder / "b_IM0001.dcm")
    for sub in ("a", "b"):
        shutil.rmtree(folder / sub)
    return HostileEntry(
        "dicom-tie-break-prefers-readable",
        folder,
        folder / "a_IM0001.dcm",
        0,
        reason="kept b_IM0001.dcm",
    )


def _excess_pixel_data(root: Path) -> HostileEntry:
    """Pixel data 4000 bytes longer than Rows × Columns need: it decodes, and the
    decoder's warning about the excess must reach the result."""
    folder = root / "dicom" / "dicom-pixel-data-excess"
    path = write_dicom(folder / "IM0001.dcm", patient_id="HOSTILE-excess")
    ds = pydicom.dcmread(path)
    ds.PixelData = ds.PixelData + bytes(4000)
    ds.save_as(path, enforce_file_format=True)
    return HostileEntry("dicom-pixel-data-excess", folder, path, 0, reason="excess padding")


# --------------------------------------------------------------------------- NRRD


def nrrd_header(
    sizes: str = f"{COLUMNS} {ROWS}",
    encoding: str = "raw",
    kind: str = "unsigned short",
    extra: str = "",
) -> bytes:
    return (
        f"NRRD0004\ntype: {kind}\ndimension: {len(sizes.split())}\nspace: left-posterior-"
        f"superior\nsizes: {sizes}\nspace directions: (0.1,0,0) (0,0.1,0)\nkinds: domain domain\n"
        f"endian: little\nencoding: {encoding}\n" + (f"{extra}\n" if extra else "") + "\n"
    ).encode()


def write_nrrd_slot(
    folder: Path,
    *,
    patient_id: str,
    pixels: np.ndarray | None = None,
    header: bytes | None = None,
    data: bytes | None = None,
    name: str = "LE_CC.nrrd",
    identity: object = None,
) -> Path:
    """A slot file and its ``case.json`` (``identity`` replaces the JSON text when given)."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels = breast_pixels() if pixels is None else pixels
    if header is None:
        dimension = " ".join(str(s) for s in pixels.shape[::-1])
        kind = {np.dtype(np.uint16): "unsigned short", np.dtype(np.float64): "double"}[pixels.dtype]
        header = nrrd_header(dimension, kind=kind)
    (folder / name).write_bytes(header + (pixels.tobytes() if data is None else data))
    if identity is None:
        identity = {"patient_id": patient_id, "study_uid": "1.2.3.4", "laterality": "L"}
    text = identity if isinstance(identity, (str, bytes)) else json.dumps(identity)
    case = folder / "case.json"
    if isinstance(text, bytes):
        case.write_bytes(text)
    else:
        case.write_text(text)
    return folder / name


def _gzip_zeros(count: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    chunk = bytes(1 << 20)
    parts = [compressor.compress(chunk) for _ in range(count >> 20)]
    return b"".join(parts) + compressor.flush()


def _nrrd_entries(root: Path) -> list[HostileEntry]:
    made: list[HostileEntry] = []

    def add(name: str, reason: str, build: Callable[[Path, str], Path], code: int = 3) -> None:
        folder = root / "nrrd" / name
        made.append(HostileEntry(name, folder, build(folder, f"HOSTILE-{name}"), code, reason))

    def slot(**kwargs: object) -> Callable[[Path, str], Path]:
        return lambda folder, pid: write_nrrd_slot(folder, patient_id=pid, **kwargs)

    add(
        "nrrd-gzip-bomb",
        "inflate beyond",
        slot(header=nrrd_header(encoding="gzip"), data=_gzip_zeros(100 << 20)),
    )
    add(
        "nrrd-bzip2-bomb",
        "inflate beyond",
        slot(header=nrrd_header(encoding="bzip2"), data=bz2.compress(bytes(16 << 20), 1)),
    )
    add(
        "nrrd-gzip-truncated",
        "",
        slot(
            header=nrrd_header(encoding="gzip"),
            data=gzip.compress(breast_pixels().tobytes())[:500],
        ),
    )
    add(
        "nrrd-declares-65535-square",
        "65535 × 65535",
        slot(header=nrrd_header("65535 65535"), data=b"\0" * 64),
    )
    add("nrrd-raw-truncated", "truncated", slot(data=breast_pixels().tobytes()[:1000]))
    add("nrrd-negative-size", "", slot(header=nrrd_header(f"-{COLUMNS} {ROWS}"), data=b""))
    add("nrrd-volume", "", slot(header=nrrd_header("64 64 10"), data=bytes(81920)))
    add("nrrd-unknown-encoding", "", slot(header=nrrd_header(encoding="block")))
    add(
        "nrrd-data-file-absolute",
        "outside the header's folder",
        _detached("/etc/passwd"),
    )
    add("nrrd-data-file-parent", "outside the header's folder", _detached("../secret.raw"))
    add("nrrd-data-file-list", "several files", _detached("LIST"))
    add(
        "nrrd-byte-skip-beyond-end",
        "truncated",
        slot(header=nrrd_header(extra="byte skip: 999999999")),
    )
    add(
        "nrrd-endless-header",
        "header",
        slot(header=b"NRRD0004\n" + b"# comment line\n" * 80000, data=b""),
    )
    add(
        "nrrd-spacing-overflows",
        "not finite",
        slot(header=nrrd_header().replace(b"(0.1,0,0)", b"(1e300,1e300,0)")),
    )
    add("nrrd-nan-pixels", "NaN", slot(pixels=_with_nan()))
    add("nrrd-constant", "constant image", slot(pixels=np.full((ROWS, COLUMNS), 7, np.uint16)))
    add("nrrd-one-pixel", "1 × 1", slot(pixels=np.array([[5]], np.uint16)))
    add("nrrd-link-to-dev-zero", "not a regular file", _nrrd_link_to_zero)
    add("case-json-nested-deep", "nested", slot(identity="[" * 200000 + "]" * 200000))
    add("case-json-huge", "larger than", slot(identity=json.dumps({"pad": "x" * (5 << 20)})))
    add("case-json-link-to-dev-zero", "not a regular file", _case_json_link)
    add(
        "case-json-patient-id-too-long",
        "Patient ID has 100 characters",
        slot(identity={"patient_id": "Q" * 100, "laterality": "L"}),
    )
    add(
        "case-json-patient-id-control-characters",
        "control characters",
        slot(identity={"patient_id": "anon\n\x1b[31m7", "laterality": "L"}),
    )
    add(
        "case-json-study-uid-letters",
        "not a DICOM UID",
        slot(identity={"patient_id": "anon-9", "study_uid": "1.2.x", "laterality": "L"}),
    )
    add("case-json-invalid", "invalid JSON", slot(identity='{"patient_id": '))
    add("case-json-not-utf8", "invalid JSON", slot(identity=b'{"patient_id": "\xff\xfe"}'))
    add("case-json-nan", "invalid JSON", slot(identity='{"patient_id": NaN}'))
    add("case-json-array", "JSON object", slot(identity="[1, 2]"))
    add(
        "case-json-huge-integer",
        "invalid JSON",
        slot(identity='{"patient_id": ' + "9" * 100_000 + "}"),
    )
    add("case-json-laterality", "laterality", slot(identity={"patient_id": "a", "laterality": 7}))
    add(
        "case-json-patient-id-object",
        "must be a string",
        slot(identity={"patient_id": {"nested": 1}, "laterality": "L"}),
    )
    return made


def _with_nan() -> np.ndarray:
    pixels = breast_pixels().astype(np.float64)
    pixels[10:20, 10:20] = np.nan
    return pixels


def _detached(data_file: str) -> Callable[[Path, str], Path]:
    def build(folder: Path, pid: str) -> Path:
        (folder.parent / "secret.raw").parent.mkdir(parents=True, exist_ok=True)
        (folder.parent / "secret.raw").write_bytes(breast_pixels().tobytes())
        header = nrrd_header(extra=f"data file: {data_file}")
        return write_nrrd_slot(folder, patient_id=pid, header=header, data=b"", name="LE_CC.nhdr")

    return build


def _nrrd_link_to_zero(folder: Path, pid: str) -> Path:
    write_nrrd_slot(folder, patient_id=pid)
    (folder / "LE_CC.nrrd").unlink()
    (folder / "LE_CC.nrrd").symlink_to("/dev/zero")
    return folder / "LE_CC.nrrd"


def _case_json_link(folder: Path, pid: str) -> Path:
    write_nrrd_slot(folder, patient_id=pid)
    (folder / "case.json").unlink()
    (folder / "case.json").symlink_to("/dev/zero")
    return folder / "case.json"


# --------------------------------------------------------------------------- JPEG / PNG


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">L", len(data)) + kind + data + struct.pack(">L", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width × height`` grey pixels and holds one row."""
    header = struct.pack(">LLBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\0" + bytes(min(width, 1024)))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", data)
        + _png_chunk(b"IEND", b"")
    )


def _raster_entries(root: Path) -> list[HostileEntry]:
    from PIL import Image

    made: list[HostileEntry] = []

    def add(name: str, reason: str, file_name: str, data: bytes | np.ndarray) -> None:
        folder = root / "raster" / name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / file_name
        if isinstance(data, np.ndarray):
            Image.fromarray(data).save(path)
        else:
            path.write_bytes(data)
        made.append(HostileEntry(name, folder, path, 3, reason))

    good = (breast_pixels() >> 6).astype(np.uint8)
    add("png-declares-65535-square", "", "P901_L_DM_CC.png", png_declaring(65535, 65535))
    add("png-declares-9000-square", "9000 × 9000", "P902_L_DM_CC.png", png_declaring(9000, 9000))
    add("png-one-pixel", "1 × 1", "P903_L_DM_CC.png", np.array([[9]], np.uint8))
    add("png-constant", "grey level", "P904_L_DM_CC.png", np.full((ROWS, COLUMNS), 90, np.uint8))
    add("jpeg-empty", "", "P905_L_DM_CC.jpg", b"")
    add("jpeg-text", "", "P906_L_DM_CC.jpg", b"not an image at all\n" * 10)
    folder = root / "raster" / "jpeg-truncated"
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(good).save(folder / "P907_L_DM_CC.jpg", quality=90)
    data = (folder / "P907_L_DM_CC.jpg").read_bytes()
    (folder / "P907_L_DM_CC.jpg").write_bytes(data[: len(data) // 2])
    made.append(HostileEntry("jpeg-truncated", folder, folder / "P907_L_DM_CC.jpg", 3, ""))
    return made


# --------------------------------------------------------------------------- model packages


def _model_entries(root: Path, demo: Path) -> list[HostileEntry]:
    made: list[HostileEntry] = []

    def add(name: str, reason: str, change: Callable[[Path], Path]) -> None:
        package = root / "models" / name
        shutil.copytree(demo, package)
        made.append(HostileEntry(name, Path(), change(package), 4, reason, model=package))

    add("model-weights-float16", "float16", _retype("float16"))
    add("model-weights-float64", "float64", _retype("float64"))
    add("model-weights-nan", "NaN", _poison(float("nan")))
    add("model-weights-inf", "NaN or infinite", _poison(float("inf")))
    add("model-weights-integer", "", _retype("int32"))
    add("model-weights-missing-tensor", "do not fit", _drop_tensor)
    add("model-weights-truncated", "SHA-256", _truncate_weights)
    add("model-weights-link-to-dev-zero", "not a regular file", _weights_link)
    add("model-generator-width-absurd", "", _manifest_edit(_absurd_width))
    add("model-preprocessing-size-absurd", "", _manifest_edit(_absurd_size))
    add("model-image-size-absurd", "", _manifest_edit(_absurd_image_size))
    add("model-json-nested-deep", "nested", _manifest_text(lambda t: t[:-2] + _deep_field()))
    add("model-json-huge", "larger than", _manifest_text(lambda t: t[:-2] + _huge_field()))
    add("model-json-link-to-dev-zero", "not a regular file", _manifest_link)
    add("model-json-threshold-nan", "", _manifest_text(lambda t: _replace_threshold(t, "NaN")))
    add("model-json-not-json", "invalid JSON", _manifest_text(lambda t: t[: len(t) // 2]))
    add(
        "model-json-huge-integer",
        "invalid JSON",
        _manifest_text(lambda t: t[:-2] + ', "n": ' + "7" * 100_000 + "}\n"),
    )
    add("model-json-weights-outside", "", _manifest_edit(_weights_outside))
    return made


def _classifier_file(package: Path, fold: int = 0, slot: str = "LE_CC") -> Path:
    manifest = json.loads((package / "model.json").read_text())
    return package / manifest["folds"][fold]["classifiers"][slot]["file"]


def _rewrite_weights(package: Path, change: Callable[[dict], dict]) -> Path:
    """Change fold 0's LE_CC tensors and record the new SHA-256 (a consistent package)."""
    import hashlib

    from safetensors.torch import load_file, save_file

    path = _classifier_file(package)
    tensors = change(load_file(path))
    path.unlink()
    save_file(tensors, path)
    manifest = json.loads((package / "model.json").read_text())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest["folds"][0]["classifiers"]["LE_CC"]["sha256"] = digest
    (package / "model.json").write_text(json.dumps(manifest, indent=2))
    return path


def _retype(dtype: str) -> Callable[[Path], Path]:
    import torch

    target = getattr(torch, dtype)

    def change(tensors: dict) -> dict:
        return {name: (t.to(target) if t.is_floating_point() else t) for name, t in tensors.items()}

    return lambda package: _rewrite_weights(package, change)


def _poison(value: float) -> Callable[[Path], Path]:
    def change(tensors: dict) -> dict:
        name = next(n for n, t in tensors.items() if t.is_floating_point() and t.numel() > 1)
        tensors[name] = tensors[name].clone()
        tensors[name].view(-1)[0] = value
        return tensors

    return lambda package: _rewrite_weights(package, change)


def _drop_tensor(package: Path) -> Path:
    def change(tensors: dict) -> dict:
        name = next(n for n in tensors if n.endswith(".weight"))
        return {n: t for n, t in tensors.items() if n != name}

    return _rewrite_weights(package, change)


def _truncate_weights(package: Path) -> Path:
    path = _classifier_file(package)
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data[: len(data) // 2])
    return path


def _weights_link(package: Path) -> Path:
    path = _classifier_file(package)
    path.unlink()
    path.symlink_to("/dev/zero")
    return path


def _manifest_edit(change: Callable[[dict], None]) -> Callable[[Path], Path]:
    def edit(package: Path) -> Path:
        manifest = json.loads((package / "model.json").read_text())
        change(manifest)
        (package / "model.json").unlink()
        (package / "model.json").write_text(json.dumps(manifest, indent=2))
        return package / "model.json"

    return edit


def _weights_outside(manifest: dict) -> None:
    manifest["folds"][0]["classifiers"]["LE_CC"]["file"] = "../../../etc/passwd.safetensors"


def _absurd_width(manifest: dict) -> None:
    for entry in manifest["generators"].values():
        for name in ("ngf", "base_width"):
            if name in entry:
                entry[name] = 100_000


def _absurd_size(manifest: dict) -> None:
    manifest["preprocessing"]["size"] = 1_000_000


def _absurd_image_size(manifest: dict) -> None:
    manifest["image_size"] = 1_000_000


def _manifest_text(change: Callable[[str], str]) -> Callable[[Path], Path]:
    def edit(package: Path) -> Path:
        text = (package / "model.json").read_text().rstrip()
        (package / "model.json").unlink()
        (package / "model.json").write_text(change(text + "\n"))
        return package / "model.json"

    return edit


def _deep_field() -> str:
    return ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}\n"


def _huge_field() -> str:
    return ', "pad": "' + "x" * (5 << 20) + '"}\n'


def _replace_threshold(text: str, value: str) -> str:
    manifest = json.loads(text)
    marker = "__THRESHOLD__"
    manifest["threshold"] = marker
    return json.dumps(manifest, indent=2).replace(f'"{marker}"', value)


def _manifest_link(package: Path) -> Path:
    (package / "model.json").unlink()
    (package / "model.json").symlink_to("/dev/zero")
    return package / "model.json"


# --------------------------------------------------------------------------- the corpus


def build_corpus(root: Path, demo_package: Path | None = None) -> HostileCorpus:
    """Write every hostile entry (and one good case folder) under ``root``."""
    with warnings.catch_warnings():  # pydicom warns about the invalid values written on purpose
        warnings.simplefilter("ignore")
        return _build(root, demo_package)


def _build(root: Path, demo_package: Path | None) -> HostileCorpus:
    from VirtualBiopsyLib.models.package import demo_package_path

    root.mkdir(parents=True, exist_ok=True)
    good = root / "good"
    write_nrrd_slot(good, patient_id="GOOD-1")
    write_nrrd_slot(good, patient_id="GOOD-1", pixels=breast_pixels(seed=1), name="DES_CC.nrrd")
    corpus = HostileCorpus(root=root, good=good)
    corpus.entries += _dicom_entries(root)
    corpus.entries += _nrrd_entries(root)
    corpus.entries += _raster_entries(root)
    corpus.entries += _model_entries(root, demo_package or demo_package_path())
    return corpus
