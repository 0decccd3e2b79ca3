"""The limits and refusals behind the hostile-input corpus, one rule at a time.

Each test names a rule of ``VirtualBiopsyLib.limits``, ``images.quality``,
``images.identity`` or the readers and fails when that rule breaks; the end-to-end view
(every hostile file through ``predict``) is ``test_hostile_inputs.py``.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import stat
from pathlib import Path

import numpy as np
import pytest
from hostile_corpus import breast_pixels, nrrd_header, write_dicom, write_nrrd_slot

from VirtualBiopsyLib.errors import ImageReadError, ModelPackageError
from VirtualBiopsyLib.images import readers
from VirtualBiopsyLib.images.cases import group_cases
from VirtualBiopsyLib.images.identity import dicom_value_problem, patient_id_problem, uid_problem
from VirtualBiopsyLib.images.mammogram import ImageInfo, MammogramImage
from VirtualBiopsyLib.images.nrrd_reader import read_nrrd_pixels
from VirtualBiopsyLib.images.preprocessing import PreprocessingParams
from VirtualBiopsyLib.images.quality import MIN_GREY_LEVELS, classification_problem
from VirtualBiopsyLib.images.readers import read_image, read_info, scan
from VirtualBiopsyLib.limits import (
    LimitExceededError,
    check_image_size,
    json_depth,
    limit,
    load_json_file,
)

# --------------------------------------------------------------------------- limits


def test_a_limit_is_raised_by_its_environment_variable(monkeypatch):
    with pytest.raises(LimitExceededError, match="VIRTUAL_BIOPSY_MAX_IMAGE_PIXELS"):
        check_image_size(8000, 6000)
    monkeypatch.setenv("VIRTUAL_BIOPSY_MAX_IMAGE_PIXELS", "60_000_000")
    check_image_size(8000, 6000)
    monkeypatch.setenv("VIRTUAL_BIOPSY_MAX_IMAGE_PIXELS", "not a number")
    assert limit("VIRTUAL_BIOPSY_MAX_IMAGE_PIXELS") == 40_000_000  # a typo keeps the default


def test_json_depth_ignores_brackets_inside_strings():
    assert json_depth('{"a": [1, {"b": "[[[{{{"}]}') == 3
    assert json_depth(r'["\"[[[", []]') == 2
    assert json_depth("[" * 100_000) == 100_000


def test_json_files_are_bounded_in_size_depth_and_kind(tmp_path, monkeypatch):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 40 + "]" * 40)
    with pytest.raises(LimitExceededError, match="nested 40 levels"):
        load_json_file(deep)
    monkeypatch.setenv("VIRTUAL_BIOPSY_MAX_JSON_BYTES", "100")
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"pad": "x" * 200}))
    with pytest.raises(LimitExceededError, match="larger than the limit of 100 bytes"):
        load_json_file(big)
    link = tmp_path / "zero.json"
    link.symlink_to("/dev/zero")
    with pytest.raises(LimitExceededError, match="not a regular file"):
        load_json_file(link)
    if hasattr(os, "mkfifo"):  # a FIFO named model.json: refused at once, not waited on
        os.mkfifo(tmp_path / "pipe.json")
        signal.alarm(20)
        try:
            with pytest.raises(LimitExceededError, match="not a regular file"):
                load_json_file(tmp_path / "pipe.json")
        finally:
            signal.alarm(0)
    nan = tmp_path / "nan.json"
    nan.write_text('{"a": NaN}')
    with pytest.raises(json.JSONDecodeError):
        load_json_file(nan)


def test_preprocessing_size_has_a_maximum():
    assert PreprocessingParams(size=1024).size == 1024
    with pytest.raises(ValueError, match="1 to 1024"):
        PreprocessingParams(size=1_000_000)


# --------------------------------------------------------------------------- quality


def _image(pixels: np.ndarray, windowed: bool = True) -> MammogramImage:
    return MammogramImage(
        ImageInfo(Path("x.dcm"), "dicom"), pixels.astype(np.float32), windowed=windowed
    )


def test_a_breast_like_image_is_classifiable_and_degenerate_ones_are_not():
    breast = breast_pixels().astype(np.float32)
    assert classification_problem(_image(breast / 16383)) is None
    assert classification_problem(_image(breast, windowed=False)) is None
    assert "1 × 1" in classification_problem(_image(np.ones((1, 1))))
    assert "constant image" in classification_problem(_image(np.full((200, 150), 3.0), False))
    binary = (breast > 5000).astype(np.float32)
    assert f"at least {MIN_GREY_LEVELS}" in classification_problem(_image(binary))
    dark = np.linspace(0, 0.09, 200 * 150).reshape(200, 150)
    assert "no breast visible" in classification_problem(_image(dark))
    white = np.ones((200, 150))
    white[:2] = np.linspace(0, 1, 150)  # 99 % white
    assert "saturated" in classification_problem(_image(white))
    broken = breast.copy()
    broken[5, 5] = np.inf
    assert "NaN or infinity" in classification_problem(_image(broken, windowed=False))


def test_the_minimum_side_can_be_lowered(monkeypatch):
    small = _image(breast_pixels(40, 32).astype(np.float32) / 16383)
    assert "at least 64 per side" in classification_problem(small)
    monkeypatch.setenv("VIRTUAL_BIOPSY_MIN_IMAGE_SIDE", "32")
    assert classification_problem(small) is None


# --------------------------------------------------------------------------- identity


def test_identity_values_must_fit_dicom():
    assert patient_id_problem("anon-7") is None
    assert "65 characters" in patient_id_problem("x" * 65)
    assert "control characters" in patient_id_problem("a\x07b")
    assert "backslash" in patient_id_problem("a\\b")
    assert uid_problem("1.2.840.10008.5.1") is None
    assert uid_problem("1.02.3") and uid_problem("1.2." + "3" * 70)
    assert dicom_value_problem("StudyID", "x" * 17)
    assert dicom_value_problem("PatientName", "Doe^Jane") is None


# --------------------------------------------------------------------------- DICOM


def test_dicom_header_refusals_name_the_attribute(tmp_path):
    cases = {
        "slope.dcm": ({"RescaleSlope": 0, "RescaleIntercept": 0}, "Rescale Slope is 0"),
        "width.dcm": ({"WindowWidth": 0}, "Window Width 0"),
        "rgb.dcm": ({"PhotometricInterpretation": "RGB"}, "not grey-level"),
        "bits.dcm": ({"BitsStored": 20, "HighBit": 19}, "Bits Stored 20"),
        "id.dcm": ({"PatientID": "P" * 70}, "Patient ID has 70 characters"),
    }
    for name, (attributes, reason) in cases.items():
        path = write_dicom(tmp_path / name, patient_id="T1", **attributes)
        with pytest.raises(ImageReadError, match=reason) as caught:
            read_info(path)
        assert caught.value.path == path


def test_absurd_pixel_spacing_falls_back_to_the_default(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", patient_id="T1", ImagerPixelSpacing=["1e300", "-5"])
    assert read_image(path).spacing == (0.1, 0.1)


def test_decoder_messages_become_image_warnings_not_console_output(tmp_path, capsys):
    import pydicom

    path = write_dicom(tmp_path / "a.dcm", patient_id="T1")
    ds = pydicom.dcmread(path)
    ds.PixelData = ds.PixelData + bytes(4000)
    ds.save_as(path, enforce_file_format=True)
    image = read_image(path)
    assert len(image.warnings) == 1 and "excess padding" in image.warnings[0]
    assert image.info.warnings == image.warnings
    assert "excess" not in capsys.readouterr().err


# --------------------------------------------------------------------------- NRRD


def test_detached_data_inside_the_headers_folder_reads(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    pixels = breast_pixels()
    (folder / "data").mkdir()
    (folder / "data" / "le.raw.gz").write_bytes(gzip.compress(pixels.tobytes()))
    header = nrrd_header(encoding="gzip", extra="data file: data/le.raw.gz")
    (folder / "LE_CC.nhdr").write_bytes(header)
    values, grid, _ = read_nrrd_pixels(folder / "LE_CC.nhdr")
    np.testing.assert_array_equal(values, pixels)
    assert grid.shape == pixels.shape


def test_detached_data_outside_the_headers_folder_is_refused(tmp_path):
    (tmp_path / "secret.raw").write_bytes(breast_pixels().tobytes())
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "inside").symlink_to(tmp_path / "secret.raw")  # a link out counts as outside
    for name in ("../secret.raw", str(tmp_path / "secret.raw"), "inside"):
        (folder / "LE_CC.nhdr").write_bytes(nrrd_header(extra=f"data file: {name}"))
        with pytest.raises(ImageReadError, match="outside the header's folder"):
            read_nrrd_pixels(folder / "LE_CC.nhdr")


def test_gzip_data_inflate_no_further_than_declared(tmp_path):
    bomb = gzip.compress(bytes(8 << 20))  # 8 MiB of zeros in ~8 kB; 40 kB declared
    path = write_nrrd_slot(
        tmp_path / "x", patient_id="T", header=nrrd_header(encoding="gzip"), data=bomb
    )
    with pytest.raises(ImageReadError, match="inflate beyond the declared 40960 bytes"):
        read_nrrd_pixels(path)


def test_case_json_identity_is_checked(tmp_path):
    path = write_nrrd_slot(tmp_path / "x", patient_id="Q" * 80)
    with pytest.raises(ImageReadError, match="80 characters") as caught:
        read_info(path)
    assert caught.value.path == tmp_path / "x" / "case.json"
    [entry] = scan([tmp_path / "x"])
    assert entry.status == "error" and str(tmp_path / "x" / "case.json") in entry.reason


# --------------------------------------------------------------------------- scanning


def test_an_unlistable_folder_is_reported_not_skipped(tmp_path, monkeypatch):
    """os.walk reports a folder it cannot list through onerror (root reads any folder,
    so the permission error is simulated at that boundary)."""
    good = write_dicom(tmp_path / "exam" / "IM0001.dcm", patient_id="T1")
    locked = tmp_path / "exam" / "locked"
    real_walk = os.walk

    def walk(top, onerror=None, **kwargs):
        error = PermissionError(13, "Permission denied")
        error.filename = str(locked)
        onerror(error)
        yield from real_walk(top, onerror=onerror, **kwargs)

    monkeypatch.setattr(readers.os, "walk", walk)
    entries = {entry.path: entry for entry in scan([tmp_path / "exam"])}
    assert entries[good].status == "ok"
    assert entries[locked].status == "error" and "Permission denied" in entries[locked].reason


def test_devices_and_broken_links_in_a_folder_are_reported(tmp_path):
    (tmp_path / "zero.dcm").symlink_to("/dev/zero")
    (tmp_path / "gone.dcm").symlink_to(tmp_path / "nowhere.dcm")
    os.mkfifo(tmp_path / "pipe.dcm")
    reasons = {entry.path.name: entry.reason for entry in scan([tmp_path])}
    assert "not a regular file" in reasons["zero.dcm"]
    assert "not a regular file" in reasons["pipe.dcm"]
    assert "broken link" in reasons["gone.dcm"]


def test_a_linked_folder_is_scanned_and_a_link_loop_ends(tmp_path):
    """os.walk lists a link to a folder and never enters it: the scanner follows it, each
    real folder once, so links back to a parent or to a sibling neither loop nor repeat."""
    exam, elsewhere = tmp_path / "exam", tmp_path / "elsewhere"
    here = write_dicom(exam / "IM0001.dcm", patient_id="T1")
    linked = write_dicom(elsewhere / "deep" / "IM0002.dcm", patient_id="T1", view="MLO")
    (exam / "linked").symlink_to(elsewhere)
    (exam / "loop").symlink_to(exam)  # a cycle
    (elsewhere / "deep" / "up").symlink_to(tmp_path)  # a cycle through the link
    (exam / "again").symlink_to(elsewhere / "deep")  # reached twice
    entries = scan([exam])
    found = sorted(entry.path.resolve() for entry in entries)
    assert found == sorted([here.resolve(), linked.resolve()])  # each once
    assert all(entry.status == "ok" for entry in entries)


def test_a_tie_keeps_the_image_that_can_be_read(tmp_path):
    from hostile_corpus import _j2k_corrupt  # a JPEG 2000 file whose header reads

    _j2k_corrupt(tmp_path / "tmp", "T1").rename(tmp_path / "a_IM0001.dcm")
    good = write_dicom(tmp_path / "b_IM0001.dcm", patient_id="T1")
    (tmp_path / "tmp").rmdir()
    [case] = group_cases(entry.info for entry in scan([tmp_path]) if entry.info)
    assert case.slots["LE_CC"].path == good
    assert any(
        "a_IM0001.dcm" in problem and "cannot be read" in problem for problem in case.problems
    )


# --------------------------------------------------------------------------- files


def test_the_phantom_writes_files_with_the_users_umask(tmp_path):
    from VirtualBiopsyLib.phantom.cohort import generate_cohort

    previous = os.umask(0o027)
    try:
        manifest = generate_cohort(tmp_path / "cohort", patients=1, seed=1)
    finally:
        os.umask(previous)
    modes = {stat.S_IMODE(p.stat().st_mode) for p in manifest.parent.rglob("*") if p.is_file()}
    assert modes == {0o640}


def test_weights_in_the_wrong_type_or_with_nan_name_the_fold_and_slot(tmp_path):
    import hashlib

    import torch
    from safetensors.torch import load_file, save_file

    from VirtualBiopsyLib.models.package import demo_package_path, load_package

    package_dir = tmp_path / "package"
    shutil.copytree(demo_package_path(), package_dir)
    manifest = json.loads((package_dir / "model.json").read_text())
    entry = manifest["folds"][1]["classifiers"]["DES_MLO"]
    weights = package_dir / entry["file"]
    original = load_file(weights)
    for change, reason in ((lambda t: t.half(), "float16"), (lambda t: t * np.nan, "NaN")):
        tensors = {n: change(t) if t.is_floating_point() else t for n, t in original.items()}
        path = tmp_path / "w.safetensors"
        save_file(tensors, path)
        weights.unlink()
        shutil.copy(path, weights)
        entry["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
        (package_dir / "model.json").write_text(json.dumps(manifest))
        package = load_package(package_dir)
        with pytest.raises(ModelPackageError, match=f"fold 1 DES_MLO classifier: .*{reason}"):
            package.load_classifier(1, "DES_MLO", torch.device("cpu"))


def test_exported_dicom_leaves_out_identity_values_that_break_their_vr(tmp_path):
    """The readers refuse a bad Patient ID; any other copied identity value that would
    make the Secondary Capture invalid (dciodvfy) is left out rather than written."""
    import pydicom

    from VirtualBiopsyLib.inference.dicom_export import build_synthetic_dataset
    from VirtualBiopsyLib.inference.pictures import SlotPicture

    source = pydicom.dcmread(
        write_dicom(
            tmp_path / "le.dcm",
            patient_id="anon-7",
            PatientName="Doe^" + "J" * 80,
            StudyID="S" * 20,
        )
    )
    picture = SlotPicture(np.zeros((64, 48), np.float32), (0.1, 0.1), tmp_path / "le.dcm")
    dataset = build_synthetic_dataset(
        picture,
        slot="DES_CC",
        source=source,
        patient_id=None,
        study_uid=None,
        laterality="L",
        model_name="demo",
        generated_from="LE_CC",
    )
    assert dataset.PatientID == "anon-7"
    assert not dataset.get("PatientName") and not dataset.get("StudyID")
    assert dataset.StudyInstanceUID == source.StudyInstanceUID


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy not installed")
@pytest.mark.parametrize("patient_id", ["A" * 64, "anon é ü 7"])
def test_exported_dicom_from_case_json_passes_dciodvfy(tmp_path, patient_id, capsys):
    """The longest Patient ID DICOM allows, and one beyond ASCII (written as UTF-8)."""
    import subprocess

    from VirtualBiopsyLib.cli import main

    identity = {"patient_id": patient_id, "study_uid": "1.2.3.4", "laterality": "L"}
    case = write_nrrd_slot(tmp_path / "case", patient_id="", identity=identity).parent
    out = tmp_path / "out"
    args = ["predict", str(case), "--out", str(out), "--export-dicom", "--no-saliency"]
    assert main(args) == 0
    [exported] = out.rglob("*.dcm")
    checked = subprocess.run(
        ["dciodvfy", str(exported)], capture_output=True, text=True, errors="replace"
    )
    errors = [line for line in (checked.stdout + checked.stderr).splitlines() if "Error" in line]
    assert not errors
