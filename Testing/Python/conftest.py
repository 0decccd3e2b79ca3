"""Shared fixtures: small, valid mammography DICOM files written with pydicom.

Use the ``make_mammo_dicom`` fixture in any test::

    def test_something(make_mammo_dicom, tmp_path):
        path = make_mammo_dicom(tmp_path / "le_cc.dcm", ViewPosition="MLO")

Keyword arguments set DICOM attributes by keyword (``None`` deletes one); ``pixels`` gives
the stored values (default: a 16 × 12 ramp over 14 bits) and ``transfer_syntax`` a
compressed syntax to encode with pydicom's encoders.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk  # noqa: N813 (the conventional alias)
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEGLosslessSV1, generate_uid

from Training.cpus import usable_cpus  # torch-free: asked before torch is imported


def _share_the_cores_between_xdist_workers() -> None:
    """Under ``pytest -n N`` (``make test``), give each worker's torch its share of the
    cores: N workers each spinning up one OpenMP thread per core slow one another down.
    Set before any test module imports torch (torch reads it at import); subprocesses
    the tests start inherit it. An explicit ``OMP_NUM_THREADS`` wins."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, usable_cpus() // workers))


_share_the_cores_between_xdist_workers()


FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
TEST_PATIENT_ID = "TESTPAT001"
TEST_STUDY_UID = "1.2.826.0.1.3680043.8.498.10001"


def default_pixels(rows: int = 16, columns: int = 12, bits: int = 14) -> np.ndarray:
    """A deterministic ramp covering the whole stored range (so every LUT branch is hit)."""
    ramp = np.linspace(0, 2**bits - 1, rows * columns)
    return ramp.round().astype(np.uint16).reshape(rows, columns)


def _base_attributes(pixels: np.ndarray) -> dict[str, Any]:
    signed = pixels.dtype.kind == "i"
    bits = 8 * pixels.dtype.itemsize
    return {
        "SOPClassUID": FOR_PRESENTATION,
        "SOPInstanceUID": generate_uid(),
        "Modality": "MG",
        "PatientID": TEST_PATIENT_ID,
        "StudyInstanceUID": TEST_STUDY_UID,
        "SeriesInstanceUID": generate_uid(),
        "ImageType": ["ORIGINAL", "PRIMARY", "", "LOW_ENERGY"],
        "ViewPosition": "CC",
        "ImageLaterality": "L",
        "AcquisitionDateTime": "20240102101500.000000",
        "ImagerPixelSpacing": [0.1, 0.1],
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2",
        "Rows": int(pixels.shape[0]),
        "Columns": int(pixels.shape[1]),
        "BitsAllocated": bits,
        "BitsStored": 14 if bits == 16 else bits,
        "HighBit": (14 if bits == 16 else bits) - 1,
        "PixelRepresentation": int(signed),
        "WindowCenter": 8192,
        "WindowWidth": 8192,
    }


def write_mammo_dicom(
    path: Path,
    *,
    pixels: np.ndarray | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    **attributes: Any,
) -> Path:
    """Write a small Digital Mammography For Presentation file; returns ``path``."""
    pixels = default_pixels() if pixels is None else pixels
    ds = Dataset()
    values = _base_attributes(pixels)
    values.update(attributes)
    for keyword, value in values.items():
        if value is not None:
            setattr(ds, keyword, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", FOR_PRESENTATION)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", generate_uid())
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PixelData = pixels.tobytes()
    if UID(transfer_syntax) == JPEGLosslessSV1:
        _insert_jpeg_lossless(ds, pixels)
    elif UID(transfer_syntax).is_compressed:
        ds.compress(transfer_syntax, pixels)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _insert_jpeg_lossless(ds: Dataset, pixels: np.ndarray) -> None:
    """pydicom has no JPEG Lossless encoder: let GDCM (inside SimpleITK) encode, then insert."""
    image = sitk.GetImageFromArray(pixels[np.newaxis])
    with tempfile.TemporaryDirectory() as folder:
        encoded_path = str(Path(folder) / "encoded.dcm")
        writer = sitk.ImageFileWriter()
        writer.SetFileName(encoded_path)
        writer.SetImageIO("GDCMImageIO")
        writer.UseCompressionOn()
        writer.SetCompressor("JPEG")
        writer.Execute(image)
        encoded = pydicom.dcmread(encoded_path)
    if encoded.file_meta.TransferSyntaxUID != JPEGLosslessSV1:
        raise RuntimeError(f"GDCM wrote {encoded.file_meta.TransferSyntaxUID}, not JPEG Lossless")
    ds.PixelData = encoded.PixelData
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1


@pytest.fixture
def make_mammo_dicom() -> Callable[..., Path]:
    """The :func:`write_mammo_dicom` helper, as a fixture for any test module."""
    return write_mammo_dicom


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Tiny networks train faster (and steadier on a shared CPU) on one torch thread."""
    import torch  # here, not at the top: collecting the torch-free tests loads no torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
