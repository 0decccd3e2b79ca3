"""DICOM reading: role rules, skip and error reasons, and pixels as displayed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.sequence import Sequence
from pydicom.uid import (
    JPEG2000Lossless,
    JPEG2000MCLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from VirtualBiopsyLib.errors import ImageReadError, UnsupportedImageError
from VirtualBiopsyLib.images.dicom_reader import read_dicom_image, read_dicom_info
from VirtualBiopsyLib.roles import Laterality, Modality, View

# ----------------------------------------------------------------------------- roles


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")
@pytest.mark.parametrize(
    ("image_type", "modality", "rule"),
    [
        (["ORIGINAL", "PRIMARY", "", "LOW_ENERGY"], Modality.LE, "ImageType[3]=LOW_ENERGY"),
        (["DERIVED", "PRIMARY", "", "RECOMBINED"], Modality.DES, "ImageType[3]=RECOMBINED"),
        (
            ["ORIGINAL", "PRIMARY", "POST_CONTRAST", "ADDITION", "LOW_ENERGY"],
            Modality.LE,
            "ImageType[4]=LOW_ENERGY",
        ),
        (
            ["DERIVED", "PRIMARY", "POST_CONTRAST", "SUBTRACTION"],
            Modality.DES,
            "ImageType[3]=SUBTRACTION",
        ),
        ("ORIGINAL\\PRIMARY\\\\low_energy ", Modality.LE, "ImageType[3]=LOW_ENERGY"),
        ([" derived ", "primary", "", " Recombined"], Modality.DES, "ImageType[3]=RECOMBINED"),
    ],
)
def test_modality_from_image_type(make_mammo_dicom, tmp_path, image_type, modality, rule):
    info = read_dicom_info(make_mammo_dicom(tmp_path / "im.dcm", ImageType=image_type))
    assert info.modality is modality
    assert info.rules["modality"] == rule


def test_processing_code_ffdm_counts_as_low_energy(make_mammo_dicom, tmp_path):
    path = make_mammo_dicom(
        tmp_path / "im.dcm",
        ImageType=["ORIGINAL", "PRIMARY"],
        AcquisitionDeviceProcessingCode="GEMS_FFDM_PV",
    )
    info = read_dicom_info(path)
    assert info.modality is Modality.LE
    assert info.rules["modality"] == "AcquisitionDeviceProcessingCode=GEMS_FFDM_PV"


def test_cesm_image_without_energy_value_is_undetermined(make_mammo_dicom, tmp_path):
    path = make_mammo_dicom(
        tmp_path / "im.dcm",
        ImageType=["ORIGINAL", "PRIMARY"],
        AcquisitionDeviceProcessingCode="GEMS_CESM_1",
    )
    info = read_dicom_info(path)
    assert info.modality is None
    assert info.slot is None
    assert info.rules["modality"].startswith("undetermined")


def test_plain_mammogram_defaults_to_low_energy(make_mammo_dicom, tmp_path):
    info = read_dicom_info(make_mammo_dicom(tmp_path / "im.dcm", ImageType=["ORIGINAL", "PRIMARY"]))
    assert info.modality is Modality.LE
    assert info.rules["modality"].startswith("default")


def test_view_and_laterality_from_standard_tags(make_mammo_dicom, tmp_path):
    path = make_mammo_dicom(tmp_path / "im.dcm", ViewPosition="MLO ", ImageLaterality="R")
    info = read_dicom_info(path)
    assert (info.view, info.laterality) == (View.MLO, Laterality.R)
    assert info.rules["view"] == "ViewPosition"
    assert info.rules["laterality"] == "ImageLaterality"


@pytest.mark.parametrize(("code", "view"), [("399162004", View.CC), ("399368009", View.MLO)])
def test_view_from_view_code_sequence(make_mammo_dicom, tmp_path, code, view):
    item = Dataset()
    item.CodeValue = code
    item.CodingSchemeDesignator = "SCT"
    path = make_mammo_dicom(
        tmp_path / "im.dcm", ViewPosition=None, ViewCodeSequence=Sequence([item])
    )
    info = read_dicom_info(path)
    assert info.view is view
    assert info.rules["view"] == f"ViewCodeSequence={code}"


def test_view_and_laterality_from_ge_private_tag(make_mammo_dicom, tmp_path):
    path = tmp_path / "im.dcm"
    make_mammo_dicom(path, ViewPosition=None, ImageLaterality=None)
    ds = pydicom.dcmread(path)
    ds.add_new((0x0045, 0x0010), "LO", "GEMS_SENO_02")
    ds.add_new((0x0045, 0x101B), "CS", "RMLO")
    ds.save_as(path)
    info = read_dicom_info(path)
    assert (info.view, info.laterality) == (View.MLO, Laterality.R)
    assert info.rules["view"] == info.rules["laterality"] == "GE private (0045,101B)"


def test_laterality_falls_back_to_series_laterality(make_mammo_dicom, tmp_path):
    path = make_mammo_dicom(tmp_path / "im.dcm", ImageLaterality=None, Laterality="R")
    info = read_dicom_info(path)
    assert info.laterality is Laterality.R
    assert info.rules["laterality"] == "Laterality"


def test_roles_fall_back_to_file_name(make_mammo_dicom, tmp_path):
    path = make_mammo_dicom(tmp_path / "exam_R_MLO.dcm", ViewPosition=None, ImageLaterality=None)
    info = read_dicom_info(path)
    assert (info.view, info.laterality) == (View.MLO, Laterality.R)
    assert info.rules["view"] == info.rules["laterality"] == "file name"


def test_unknown_view_and_laterality_are_reported_not_guessed(make_mammo_dicom, tmp_path):
    path = make_mammo_dicom(tmp_path / "im.dcm", ViewPosition="ML", ImageLaterality=None)
    info = read_dicom_info(path)
    assert info.view is None and info.laterality is None
    assert "ViewPosition=ML" in info.rules["view"]


def test_identity_size_and_acquisition(make_mammo_dicom, tmp_path):
    path = make_mammo_dicom(
        tmp_path / "im.dcm",
        PatientID="ANON42",
        StudyInstanceUID="1.2.3.4",
        AcquisitionDateTime=None,
        AcquisitionDate="20240105",
        AcquisitionTime="101500.5",
    )
    info = read_dicom_info(path)
    assert (info.patient_id, info.study_uid, info.rows, info.columns) == (
        "ANON42",
        "1.2.3.4",
        16,
        12,
    )
    assert info.acquisition == "20240105101500.500000"
    assert info.rules["acquisition"] == "AcquisitionDate+AcquisitionTime"


@pytest.mark.parametrize(
    ("attributes", "spacing", "rule"),
    [
        ({"ImagerPixelSpacing": [0.07, 0.08]}, (0.07, 0.08), "ImagerPixelSpacing"),
        ({"ImagerPixelSpacing": None, "PixelSpacing": [0.05, 0.05]}, (0.05, 0.05), "PixelSpacing"),
        ({"ImagerPixelSpacing": None}, (0.1, 0.1), "default 0.1 mm"),
    ],
)
def test_spacing_rules(make_mammo_dicom, tmp_path, attributes, spacing, rule):
    path = make_mammo_dicom(tmp_path / "im.dcm", **attributes)
    assert read_dicom_info(path).rules["spacing"] == rule
    assert read_dicom_image(path).spacing == pytest.approx(spacing)


def test_read_info_does_not_decode_pixels(make_mammo_dicom, tmp_path, monkeypatch):
    path = make_mammo_dicom(tmp_path / "im.dcm", transfer_syntax=JPEGLSLossless)

    def refuse(self):
        raise AssertionError("read_info decoded pixel data")

    monkeypatch.setattr(Dataset, "pixel_array", property(refuse))
    assert read_dicom_info(path).slot == "LE_CC"


# ----------------------------------------------------------------------------- skip / error


@pytest.mark.parametrize(
    ("attributes", "reason"),
    [
        ({"ImageType": ["ORIGINAL", "PRIMARY", "", "HIGH_ENERGY"]}, "high-energy"),
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.1.2.1"}, "For Processing"),
        ({"Modality": "CT"}, "Modality is CT, not MG"),
        ({"NumberOfFrames": 2}, "multi-frame"),
    ],
)
def test_unused_images_are_skipped_with_reason(make_mammo_dicom, tmp_path, attributes, reason):
    pixels = np.zeros((2, 16, 12), np.uint16) if "NumberOfFrames" in attributes else None
    path = make_mammo_dicom(tmp_path / "im.dcm", pixels=pixels, **attributes)
    if pixels is not None:
        ds = pydicom.dcmread(path)
        ds.Rows, ds.Columns = 16, 12
        ds.save_as(path)
    with pytest.raises(UnsupportedImageError, match=reason) as raised:
        read_dicom_info(path)
    assert raised.value.path == path


def test_dicomdir_is_skipped(make_mammo_dicom, tmp_path):
    path = make_mammo_dicom(tmp_path / "DICOMDIR")
    ds = pydicom.dcmread(path)
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    for keyword in ("SOPClassUID", "Modality", "PixelData"):
        delattr(ds, keyword)
    ds.save_as(path)
    with pytest.raises(UnsupportedImageError, match="DICOMDIR"):
        read_dicom_info(path)


@pytest.mark.parametrize("name", ["IM0001", "IM0001.dcm", "1.2.840.113619.2.55.3.12", "a.IMA"])
def test_a_file_named_as_dicom_that_is_not_is_an_error(tmp_path, name):
    path = tmp_path / name
    path.write_text("not an image")
    with pytest.raises(ImageReadError, match="not a DICOM file") as raised:
        read_dicom_info(path)
    assert raised.value.path == path


def test_the_side_files_of_an_exam_cd_are_skipped_not_errors(make_mammo_dicom, tmp_path):
    """A CD or USB export carries a viewer and documents beside DICOMDIR and the images:
    each is skipped with its reason, so a good export does not end with exit 3."""
    from VirtualBiopsyLib.images.readers import scan

    good = make_mammo_dicom(tmp_path / "IMAGES" / "IM0001")
    side = ["AUTORUN.INF", "viewer.exe", "report.pdf", "index.htm", "dicom.xml", "setup.ini"]
    for name in side:
        (tmp_path / name).write_bytes(b"MZ\x90\x00 not an image" * 8)
    entries = {entry.path.name: entry for entry in scan([tmp_path])}
    assert entries[good.name].status == "ok"
    for name in side:
        assert entries[name].status == "skipped"
        assert "not an image file" in entries[name].reason


def test_truncated_file_is_an_error(make_mammo_dicom, tmp_path):
    path = make_mammo_dicom(tmp_path / "im.dcm")
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ImageReadError, match="truncated"):
        read_dicom_info(path)


def test_truncated_compressed_file_is_an_error(make_mammo_dicom, tmp_path):
    path = make_mammo_dicom(tmp_path / "im.dcm", transfer_syntax=JPEGLSLossless)
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(ImageReadError, match="truncated"):
        read_dicom_info(path)


def test_file_cut_inside_header_is_an_error(make_mammo_dicom, tmp_path):
    path = make_mammo_dicom(tmp_path / "im.dcm")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ImageReadError, match="truncated"):
        read_dicom_info(path)


def test_missing_pixel_data_is_an_error(make_mammo_dicom, tmp_path):
    path = make_mammo_dicom(tmp_path / "im.dcm")
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    with pytest.raises(ImageReadError, match="no pixel data"):
        read_dicom_info(path)


def test_transfer_syntax_without_decoder_is_named(make_mammo_dicom, tmp_path):
    path = make_mammo_dicom(tmp_path / "im.dcm")
    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate([b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEG2000MCLossless
    ds.save_as(path)
    with pytest.raises(ImageReadError, match="no installed decoder.*JPEG 2000 Part 2"):
        read_dicom_info(path)


# ----------------------------------------------------------------------------- pixels


def _reference(path: Path, output_range: tuple[float, float]) -> np.ndarray:
    """pydicom's own LUT functions on the whole image, scaled to [0, 1] and inverted."""
    ds = pydicom.dcmread(path)
    values = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds, index=0)
    low, high = output_range
    scaled = (np.asarray(values, np.float64) - low) / (high - low)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        scaled = 1.0 - scaled
    return scaled


def _voi_lut_item(entries: int, first: int, bits: int) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = [entries, first, bits]
    lut = np.linspace(0, 2**bits - 1, entries).round().astype(np.uint16)
    item.add_new((0x0028, 0x3006), "US", lut.tolist())  # LUT Data
    return item


def _modality_lut_item() -> Dataset:
    item = _voi_lut_item(16384, 0, 16)
    item.ModalityLUTType = "US"
    return item


FULL_14_BIT = (0.0, 2.0**14 - 1)
VOI_CASES = {
    "linear": ({"WindowCenter": 6000, "WindowWidth": 3001}, FULL_14_BIT),
    "linear_exact": (
        {"WindowCenter": 6000, "WindowWidth": 3001, "VOILUTFunction": "LINEAR_EXACT"},
        FULL_14_BIT,
    ),
    "sigmoid": (
        {"WindowCenter": 7000, "WindowWidth": 4000, "VOILUTFunction": "SIGMOID"},
        FULL_14_BIT,
    ),
    "several_windows_first": (
        {"WindowCenter": [5000, 9000], "WindowWidth": [2000, 500]},
        FULL_14_BIT,
    ),
    "rescale": (
        {"RescaleSlope": 2, "RescaleIntercept": -100, "WindowCenter": 9000, "WindowWidth": 8000},
        (-100.0, 2 * (2.0**14 - 1) - 100),
    ),
    "voi_lut_sequence": (
        {
            "WindowCenter": None,
            "WindowWidth": None,
            "VOILUTSequence": Sequence([_voi_lut_item(4096, 4000, 16)]),
        },
        (0.0, 65535.0),
    ),
    "modality_lut_sequence": (
        {
            "ModalityLUTSequence": Sequence([_modality_lut_item()]),
            "WindowCenter": 30000,
            "WindowWidth": 20000,
        },
        (0.0, 65535.0),
    ),
    "monochrome1": (
        {"PhotometricInterpretation": "MONOCHROME1", "WindowCenter": 6000, "WindowWidth": 3001},
        FULL_14_BIT,
    ),
}


@pytest.mark.parametrize("case", sorted(VOI_CASES))
def test_fast_lookup_equals_pydicom_luts(make_mammo_dicom, tmp_path, case):
    attributes, output_range = VOI_CASES[case]
    path = make_mammo_dicom(tmp_path / "im.dcm", **attributes)
    image = read_dicom_image(path)
    assert image.windowed
    assert image.pixels.dtype == np.float32
    assert image.pixels.min() >= 0.0 and image.pixels.max() <= 1.0
    np.testing.assert_allclose(image.pixels, _reference(path, output_range), atol=1e-6)


def test_signed_pixels_use_the_table_correctly(make_mammo_dicom, tmp_path):
    stored = np.linspace(-2000, 2000, 16 * 12).round().astype(np.int16).reshape(16, 12)
    path = make_mammo_dicom(
        tmp_path / "im.dcm",
        pixels=stored,
        BitsStored=16,
        HighBit=15,
        WindowCenter=0,
        WindowWidth=2000,
    )
    image = read_dicom_image(path)
    np.testing.assert_allclose(image.pixels, _reference(path, (-32768.0, 32767.0)), atol=1e-6)
    assert image.pixels[0, 0] == 0.0 and image.pixels[-1, -1] == 1.0


def test_monochrome1_is_the_inverse_of_monochrome2(make_mammo_dicom, tmp_path):
    mono2 = read_dicom_image(make_mammo_dicom(tmp_path / "a.dcm"))
    mono1 = read_dicom_image(
        make_mammo_dicom(tmp_path / "b.dcm", PhotometricInterpretation="MONOCHROME1")
    )
    np.testing.assert_allclose(mono1.pixels, 1.0 - mono2.pixels, atol=1e-6)
    assert mono1.pixels[0, 0] == 1.0  # stored 0 is white in MONOCHROME1


def test_linear_window_clips_and_stretches(make_mammo_dicom, tmp_path):
    stored = np.array([[0, 999, 1000, 1500, 2000, 3000]], dtype=np.uint16)
    path = make_mammo_dicom(
        tmp_path / "im.dcm",
        pixels=stored,
        WindowCenter=1500,
        WindowWidth=1000,
        VOILUTFunction="LINEAR_EXACT",
    )
    pixels = read_dicom_image(path).pixels[0]
    full = 2.0**14 - 1
    expected = [0.0, 0.0, 0.0, (0.5 * full) / full, 1.0, 1.0]
    np.testing.assert_allclose(pixels, expected, atol=1e-6)


def test_without_window_pixels_are_modality_values(make_mammo_dicom, tmp_path):
    path = make_mammo_dicom(
        tmp_path / "im.dcm",
        WindowCenter=None,
        WindowWidth=None,
        RescaleSlope=1,
        RescaleIntercept=10,
    )
    image = read_dicom_image(path)
    assert not image.windowed
    assert image.info.rules["voi"].startswith("none")
    np.testing.assert_allclose(image.pixels, pydicom.dcmread(path).pixel_array + 10.0)


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, JPEGLSLossless, JPEGLosslessSV1, RLELossless])
def test_compressed_syntaxes_decode_to_the_same_pixels(make_mammo_dicom, tmp_path, syntax):
    from conftest import default_pixels

    stored = default_pixels(64, 48)
    plain = read_dicom_image(make_mammo_dicom(tmp_path / "plain.dcm", pixels=stored))
    path = make_mammo_dicom(tmp_path / "packed.dcm", pixels=stored, transfer_syntax=syntax)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == syntax
    packed = read_dicom_image(path)
    np.testing.assert_array_equal(packed.pixels, plain.pixels)


def test_undecodable_pixel_data_is_an_error(make_mammo_dicom, tmp_path):
    path = make_mammo_dicom(tmp_path / "im.dcm", transfer_syntax=JPEGLSLossless)
    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate([b"\xff\xd8 corrupt " * 8])
    ds.save_as(path)
    with pytest.raises(ImageReadError, match="cannot decode pixel data.*JPEG-LS"):
        read_dicom_image(path)
