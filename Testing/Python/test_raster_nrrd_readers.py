"""JPEG/PNG (CDD-CESM names) and NRRD slot files (Slicer hand-over) readers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813 (the conventional alias)
from PIL import Image

from VirtualBiopsyLib.errors import ImageReadError, UnsupportedImageError
from VirtualBiopsyLib.images.nrrd_reader import read_nrrd_image, read_nrrd_info
from VirtualBiopsyLib.images.raster_reader import (
    cdd_cesm_study_uid,
    parse_cdd_cesm_name,
    read_raster_image,
    read_raster_info,
)
from VirtualBiopsyLib.images.readers import read_image, read_info, scan
from VirtualBiopsyLib.roles import Laterality, Modality, Source, View

# ----------------------------------------------------------------------------- CDD-CESM


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("P2_L_DM_CC.jpg", ("P2", Laterality.L, Modality.LE, View.CC)),
        ("P2_L_CM_MLO .jpg", ("P2", Laterality.L, Modality.DES, View.MLO)),
        (" P10_R_DM_MLO.jpg", ("P10", Laterality.R, Modality.LE, View.MLO)),
        ("P7 _R_ CM_CC.jpg", ("P7", Laterality.R, Modality.DES, View.CC)),
        ("p3_r_cm_mlo.PNG", ("P3", Laterality.R, Modality.DES, View.MLO)),
        ("P007_L_DM_CC", ("P7", Laterality.L, Modality.LE, View.CC)),
    ],
)
def test_cdd_cesm_names_are_parsed_tolerantly(name, expected):
    parsed = parse_cdd_cesm_name(name)
    assert parsed is not None
    assert (parsed.patient_id, parsed.laterality, parsed.modality, parsed.view) == expected


@pytest.mark.parametrize("name", ["report.png", "P2_L_XX_CC.jpg", "P2_L_DM.jpg", "P2_B_DM_CC.jpg"])
def test_other_names_are_not_cdd_cesm(name):
    assert parse_cdd_cesm_name(name) is None


def test_cdd_cesm_study_uid_is_deterministic_per_patient():
    uid = cdd_cesm_study_uid("P2")
    assert uid == cdd_cesm_study_uid("P2")
    assert uid != cdd_cesm_study_uid("P3")
    assert uid.startswith("2.25.") and len(uid) <= 64


def _write_raster(path: Path, values: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values, mode=mode).save(path)
    return path


def test_jpeg_info_from_name_and_header(tmp_path):
    folder = tmp_path / "Low energy images of CDD-CESM"
    path = _write_raster(folder / "P2_L_DM_CC .jpg", np.full((30, 20), 128, np.uint8))
    info = read_raster_info(path)
    assert (info.slot, info.laterality, info.patient_id) == ("LE_CC", Laterality.L, "P2")
    assert info.study_uid == cdd_cesm_study_uid("P2")
    assert (info.rows, info.columns, info.format) == (30, 20, "raster")
    assert "derived from patient id" in info.rules["study"]


def test_eight_bit_jpeg_pixels_scale_to_unit_range(tmp_path):
    values = np.tile(np.array([0, 255], np.uint8), (8, 4))
    path = _write_raster(tmp_path / "P1_R_CM_MLO.png", values)
    image = read_raster_image(path)
    assert image.windowed and image.pixels.dtype == np.float32
    np.testing.assert_array_equal(image.pixels, values / 255.0)


def test_sixteen_bit_png_scales_by_full_range(tmp_path):
    values = np.array([[0, 65535], [32768, 1000]], np.uint16)
    path = _write_raster(tmp_path / "P1_R_DM_CC.png", values)
    np.testing.assert_allclose(read_raster_image(path).pixels, values / 65535.0, atol=1e-6)


def test_colour_jpeg_is_read_as_grey(tmp_path):
    values = np.zeros((16, 16, 3), np.uint8)
    values[..., :] = 200
    path = _write_raster(tmp_path / "P1_L_CM_CC.jpg", values)
    pixels = read_raster_image(path).pixels
    assert pixels.shape == (16, 16)
    assert abs(float(pixels.mean()) - 200 / 255) < 0.02


def test_raster_without_cdd_cesm_name_is_skipped(tmp_path):
    path = _write_raster(tmp_path / "report.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(UnsupportedImageError, match="CDD-CESM"):
        read_raster_info(path)


def test_broken_jpeg_is_an_error(tmp_path):
    path = tmp_path / "P1_L_DM_CC.jpg"
    path.write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(ImageReadError, match="not a readable JPEG/PNG") as raised:
        read_raster_info(path)
    assert raised.value.path == path


# ----------------------------------------------------------------------------- NRRD


def _write_nrrd(path: Path, values: np.ndarray, spacing=(0.1, 0.1)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(values)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def _write_case_json(folder: Path, **identity: str) -> None:
    (folder / "case.json").write_text(json.dumps(identity))


def test_nrrd_slot_file_with_case_json(tmp_path):
    values = np.arange(20, dtype=np.int16).reshape(4, 5)
    path = _write_nrrd(tmp_path / "export" / "DES_MLO.nrrd", values, spacing=(0.07, 0.09))
    _write_case_json(path.parent, patient_id="anon-7", study_uid="1.2.3", laterality="r")
    info = read_nrrd_info(path)
    assert (info.slot, info.laterality, info.patient_id, info.study_uid) == (
        "DES_MLO",
        Laterality.R,
        "anon-7",
        "1.2.3",
    )
    assert (info.rows, info.columns, info.source) == (4, 5, Source.REAL)
    image = read_nrrd_image(path)
    assert not image.windowed
    np.testing.assert_array_equal(image.pixels, values.astype(np.float32))
    assert image.spacing == pytest.approx((0.09, 0.07))  # (row, column)


def test_nrrd_without_case_json_uses_folder_identity(tmp_path):
    first = read_nrrd_info(_write_nrrd(tmp_path / "a" / "LE_CC.nrrd", np.zeros((3, 3), np.uint16)))
    second = read_nrrd_info(_write_nrrd(tmp_path / "b" / "LE_CC.nrrd", np.zeros((3, 3), np.uint16)))
    assert first.patient_id == "a" and first.laterality is None
    assert first.study_uid != second.study_uid
    assert first.rules["identity"] == "folder name (no case.json)"


def test_synthetic_nrrd_is_marked_synthetic(tmp_path):
    path = _write_nrrd(tmp_path / "synthetic_DES_CC.nrrd", np.zeros((3, 3), np.float32))
    info = read_nrrd_info(path)
    assert info.slot == "DES_CC" and info.source is Source.SYNTHETIC


def _write_our_picture(path: Path, synthetic: bool) -> Path:
    """An NRRD exactly as ``predict`` writes it (header marker ``VirtualBiopsy_Synthetic``)."""
    from VirtualBiopsyLib.inference.output import write_picture
    from VirtualBiopsyLib.inference.pictures import SlotPicture

    path.parent.mkdir(parents=True, exist_ok=True)
    picture = SlotPicture(np.full((8, 6), 0.5, np.float32), (0.1, 0.1))
    return write_picture(picture, path, synthetic=synthetic)


def test_a_renamed_synthetic_nrrd_is_still_synthetic(tmp_path):
    """Our synthetic_DES_CC.nrrd saved as DES_CC.nrrd: the header marker wins over the name."""
    info = read_nrrd_info(_write_our_picture(tmp_path / "DES_CC.nrrd", synthetic=True))
    assert info.slot == "DES_CC" and info.source is Source.SYNTHETIC
    assert "VirtualBiopsy_Synthetic" in info.rules["source"]
    [entry] = scan([tmp_path])
    assert entry.info is not None and entry.info.source is Source.SYNTHETIC


def test_a_false_marker_neither_fakes_a_real_image_nor_hides_a_synthetic_name(tmp_path):
    real = read_nrrd_info(_write_our_picture(tmp_path / "a" / "DES_CC.nrrd", synthetic=False))
    named = _write_our_picture(tmp_path / "b" / "synthetic_DES_CC.nrrd", synthetic=False)
    assert real.source is Source.REAL
    assert read_nrrd_info(named).source is Source.SYNTHETIC  # never reported as real


def test_nrrd_that_is_not_a_slot_is_skipped(tmp_path):
    path = _write_nrrd(tmp_path / "saliency_LE_CC.nrrd", np.zeros((3, 3), np.float32))
    with pytest.raises(UnsupportedImageError, match="slot name"):
        read_nrrd_info(path)


def test_invalid_case_json_names_the_file(tmp_path):
    path = _write_nrrd(tmp_path / "LE_MLO.nrrd", np.zeros((3, 3), np.uint16))
    (tmp_path / "case.json").write_text("{not json")
    with pytest.raises(ImageReadError, match="invalid JSON") as raised:
        read_nrrd_info(path)
    assert raised.value.path == tmp_path / "case.json"


def test_case_json_with_bad_laterality_is_an_error(tmp_path):
    path = _write_nrrd(tmp_path / "LE_MLO.nrrd", np.zeros((3, 3), np.uint16))
    _write_case_json(tmp_path, patient_id="x", study_uid="1.2", laterality="both")
    with pytest.raises(ImageReadError, match="laterality"):
        read_nrrd_info(path)


def test_corrupt_nrrd_is_an_error(tmp_path):
    path = tmp_path / "LE_CC.nrrd"
    path.write_text("NRRD0004\ntype: nonsense\n")
    with pytest.raises(ImageReadError, match="NRRD"):
        read_nrrd_info(path)


# ----------------------------------------------------------------------------- dispatch


def test_read_info_and_read_image_choose_the_reader_by_name(make_mammo_dicom, tmp_path):
    dicom = make_mammo_dicom(tmp_path / "IM0001")  # real exports often have no extension
    ramp = np.linspace(0, 255, 96 * 80).reshape(96, 80).astype(np.uint8)  # classifiable
    raster = _write_raster(tmp_path / "P4_L_DM_MLO.jpg", ramp)
    nrrd = _write_nrrd(tmp_path / "nrrd" / "DES_CC.nrrd", np.zeros((3, 3), np.uint16))
    formats = [read_info(path).format for path in (dicom, raster, nrrd)]
    assert formats == ["dicom", "raster", "nrrd"]
    info = read_info(raster)
    assert read_image(info).info is info


def test_reading_a_missing_file_is_an_error(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "gone.dcm")


def test_scan_reports_every_file_and_ignores_side_files(make_mammo_dicom, tmp_path):
    good = make_mammo_dicom(tmp_path / "a" / "IM0001")
    bad = tmp_path / "a" / "IM0002"
    bad.write_bytes(b"garbage")
    for side_file in (
        "labels.csv",
        "case.json",
        "sheet.xlsx",
        "notes.txt",
        "README.md",
        ".DS_Store",
    ):
        (tmp_path / side_file).write_text("x")
    entries = scan([tmp_path])
    assert [(entry.path, entry.status) for entry in entries] == [(good, "ok"), (bad, "error")]
    assert entries[0].info is not None and entries[1].reason.startswith("not a DICOM file")
