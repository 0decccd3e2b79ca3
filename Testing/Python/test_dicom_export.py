"""Synthetic DES as DICOM: marked synthetic everywhere, source identity kept, valid IOD."""

from __future__ import annotations

import csv
import logging
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from VirtualBiopsyLib.errors import UnsupportedImageError
from VirtualBiopsyLib.images.identity import dicom_value_problem
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


# --- identity values highdicom is stricter about than the VR syntax ---------------------


def _source_with(exported, tmp_path: Path, **attributes: str) -> Path:
    """The exported case's LE file, with ``attributes`` changed."""
    dataset = pydicom.dcmread(exported[1])
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    path = tmp_path / "source.dcm"
    dataset.save_as(path, enforce_file_format=True)
    return path


def _export_quietly(source: Path, path: Path) -> tuple[pydicom.Dataset, list[str]]:
    """Export from ``source``; the dataset written and every warning that got out."""
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        export_synthetic_des(
            SlotPicture(np.random.rand(20, 16), (0.1, 0.1)),
            path,
            slot="DES_CC",
            source_dicom=source,
            generated_from="LE_CC",
        )
    return pydicom.dcmread(path), [str(w.message) for w in escaped]


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("PatientSex", "U"),  # fits CS; not one of highdicom's M, F, O
        ("PatientSex", "MALE"),
        ("StudyDate", "20230230"),  # fits DA; no such day
        ("StudyDate", "00000101"),
        ("PatientBirthDate", "19500229"),
        ("StudyTime", "-1200"),  # passes the TM check; not a time
    ],
)
def test_an_identity_value_highdicom_refuses_is_left_out_not_fatal(
    exported, tmp_path, caplog, keyword, value
):
    assert dicom_value_problem(keyword, value) is None  # our VR check lets it through
    source = _source_with(exported, tmp_path, **{keyword: value})
    with caplog.at_level(logging.DEBUG):
        dataset, escaped = _export_quietly(source, tmp_path / "out.dcm")
    assert dataset.get(keyword) in ("", None)  # left empty (Type 2), not made up
    original = pydicom.dcmread(exported[1])
    assert dataset.PatientID == original.PatientID  # the rest of the identity is kept
    assert dataset.StudyInstanceUID == original.StudyInstanceUID
    for other in ("PatientSex", "StudyDate", "StudyTime", "PatientBirthDate"):
        if other != keyword and original.get(other):
            assert dataset.get(other) == original.get(other)
    assert escaped == []
    assert keyword in caplog.text and value not in caplog.text


def test_single_component_names_are_kept_and_never_shown(exported, tmp_path, caplog, capfd):
    names = {"PatientName": "ZZSECRETNAME", "ReferringPhysicianName": "ZZSECRETDOCTOR"}
    source = _source_with(exported, tmp_path, **names)  # legal PN: a family name only
    with caplog.at_level(logging.DEBUG):
        dataset, escaped = _export_quietly(source, tmp_path / "out.dcm")
    assert str(dataset.PatientName) == "ZZSECRETNAME"
    assert str(dataset.ReferringPhysicianName) == "ZZSECRETDOCTOR"
    captured = capfd.readouterr()
    shown = " ".join([*escaped, caplog.text, captured.out, captured.err])
    assert "ZZSECRET" not in shown
