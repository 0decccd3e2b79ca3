"""Synthetic DES as DICOM: marked synthetic everywhere, source identity kept, valid IOD."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from VirtualBiopsyLib.errors import UnsupportedImageError
from VirtualBiopsyLib.images.readers import read_info
from VirtualBiopsyLib.inference.dicom_export import STORED_BITS, export_synthetic_des
from VirtualBiopsyLib.inference.fixtures import write_untrained_package
from VirtualBiopsyLib.inference.pictures import SlotPicture
from VirtualBiopsyLib.inference.runner import predict_paths
from VirtualBiopsyLib.phantom import generate_cohort


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Predict on the LE images of a phantom DICOM exam; export the synthetic DES."""
    root = tmp_path_factory.mktemp("export")
    manifest = generate_cohort(root / "cohort", patients=1, seed=5)
    with open(manifest, newline="") as stream:
        rows = list(csv.DictReader(stream))
    le_cc = next(r for r in rows if r["modality"] == "LE" and r["view"] == "CC")
    package = write_untrained_package(root / "package", n_folds=2, image_size=64)
    run = predict_paths(
        [root / "cohort" / le_cc["path"]], root / "out", package, saliency=False, export_dicom=True
    )
    [folder] = run.folders
    return folder / "synthetic_DES_CC.dcm", root / "cohort" / le_cc["path"]


def test_synthetic_dicom_is_marked_synthetic(exported):
    path, _ = exported
    dataset = pydicom.dcmread(path)
    assert list(dataset.ImageType)[:3] == ["DERIVED", "SECONDARY", "SYNTHETIC"]
    assert "SYNTHETIC" in dataset.SeriesDescription
    assert "SYNTHETIC DES_CC from LE_CC" in dataset.DerivationDescription
    assert dataset.BurnedInAnnotation == "NO"
    assert dataset.Modality == "OT"
    assert "Research use only" in dataset.ImageComments


def test_synthetic_dicom_keeps_the_source_identity_with_new_uids(exported):
    path, source_path = exported
    dataset, source = pydicom.dcmread(path), pydicom.dcmread(source_path)
    assert dataset.PatientID == source.PatientID
    assert dataset.PatientName == source.PatientName
    assert dataset.StudyInstanceUID == source.StudyInstanceUID
    assert dataset.SeriesInstanceUID != source.SeriesInstanceUID
    assert dataset.SOPInstanceUID != source.SOPInstanceUID
    assert dataset.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert dataset.Rows == source.Rows and dataset.Columns == source.Columns


def test_our_readers_never_take_the_export_for_a_real_des(exported):
    path, _ = exported
    with pytest.raises(UnsupportedImageError):
        read_info(path)


def test_pixel_values_scale_to_twelve_bits(tmp_path):
    ramp = np.linspace(0.0, 1.0, 40 * 30, dtype=np.float32).reshape(40, 30)
    path = export_synthetic_des(
        SlotPicture(ramp, (0.1, 0.1)),
        tmp_path / "s.dcm",
        slot="DES_MLO",
        patient_id="ANON",
        study_uid="1.2.3",
        laterality="R",
        generated_from="LE_MLO",
    )
    dataset = pydicom.dcmread(path)
    pixels = dataset.pixel_array
    assert pixels.min() == 0 and pixels.max() == 2**STORED_BITS - 1
    assert dataset.StudyInstanceUID == "1.2.3" and dataset.PatientID == "ANON"
    assert [float(v) for v in dataset.PixelSpacing] == [0.1, 0.1]
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_dciodvfy_finds_no_errors(exported, tmp_path):
    validator = shutil.which("dciodvfy")
    if validator is None:
        if os.environ.get("CI"):
            pytest.fail("dciodvfy (dicom3tools) is required in CI but not installed")
        pytest.skip("dciodvfy not installed (apt-get install dicom3tools)")
    standalone = export_synthetic_des(
        SlotPicture(np.random.rand(20, 16), (0.1, 0.1)), tmp_path / "no_source.dcm", slot="DES_CC"
    )
    for path in (exported[0], standalone):
        report = subprocess.run([validator, str(path)], capture_output=True, text=True, check=False)
        lines = (report.stdout + report.stderr).splitlines()
        errors = [line for line in lines if line.startswith("Error")]
        assert errors == [], f"{path.name}: " + "\n".join(errors)
