"""``virtual-biopsy inspect``: the JSON contract, statuses, cases and exit codes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk  # noqa: N813 (the conventional alias)
from PIL import Image

from VirtualBiopsyLib.cli import main
from VirtualBiopsyLib.images.raster_reader import cdd_cesm_study_uid

IMAGE_KEYS = {
    "path", "status", "reason", "modality", "view", "laterality",
    "patient_id", "study_uid", "rows", "columns", "rule",
}  # fmt: skip
CASE_KEYS = {"patient_id", "study_uid", "laterality", "slots", "problems"}
SLOT_KEYS = {"LE_CC", "LE_MLO", "DES_CC", "DES_MLO"}
LE = ["ORIGINAL", "PRIMARY", "", "LOW_ENERGY"]
DES = ["DERIVED", "PRIMARY", "", "RECOMBINED"]


def run_json(capsys, *argv: str) -> dict:
    assert main(["inspect", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def make_exam(make_mammo_dicom, folder: Path) -> dict[str, Path]:
    """A GE-style CESM exam of the left breast plus files that must be skipped or rejected."""
    files = {
        "LE_CC": make_mammo_dicom(folder / "series1" / "IM0001", ImageType=LE),
        "LE_MLO": make_mammo_dicom(folder / "series1" / "IM0002", ImageType=LE, ViewPosition="MLO"),
        "DES_CC": make_mammo_dicom(folder / "series2" / "IM0003.dcm", ImageType=DES),
        "DES_MLO": make_mammo_dicom(
            folder / "series2" / "IM0004.dcm", ImageType=DES, ViewPosition="MLO",
            PhotometricInterpretation="MONOCHROME1",
        ),
        "high": make_mammo_dicom(
            folder / "series3" / "IM0005.dcm", ImageType=["ORIGINAL", "PRIMARY", "", "HIGH_ENERGY"]
        ),
        "processing": make_mammo_dicom(
            folder / "series3" / "IM0006.dcm", SOPClassUID="1.2.840.10008.5.1.4.1.1.1.2.1"
        ),
    }  # fmt: skip
    files["junk"] = folder / "series3" / "IM0007.dcm"
    files["junk"].write_bytes(b"\x00" * 300)
    (folder / "notes.txt").write_text("reading notes")
    (folder / "manifest.csv").write_text("a,b\n")
    return files


def test_json_contract_keys_and_values(make_mammo_dicom, tmp_path, capsys):
    files = make_exam(make_mammo_dicom, tmp_path / "exam")
    report = run_json(capsys, str(tmp_path / "exam"))
    assert set(report) == {"images", "cases"}
    assert all(set(image) == IMAGE_KEYS for image in report["images"])
    assert all(set(case) == CASE_KEYS for case in report["cases"])
    by_path = {image["path"]: image for image in report["images"]}
    assert set(by_path) == {str(path) for path in files.values()}  # .txt and .csv ignored
    le_cc = by_path[str(files["LE_CC"])]
    assert le_cc == {
        "path": str(files["LE_CC"]),
        "status": "ok",
        "reason": None,
        "modality": "LE",
        "view": "CC",
        "laterality": "L",
        "patient_id": "TESTPAT001",
        "study_uid": "1.2.826.0.1.3680043.8.498.10001",
        "rows": 16,
        "columns": 12,
        "rule": (
            "modality: ImageType[3]=LOW_ENERGY; view: ViewPosition; laterality: ImageLaterality"
        ),
    }


def test_statuses_and_reasons(make_mammo_dicom, tmp_path, capsys):
    files = make_exam(make_mammo_dicom, tmp_path / "exam")
    by_path = {i["path"]: i for i in run_json(capsys, str(tmp_path / "exam"))["images"]}
    assert by_path[str(files["high"])]["status"] == "skipped"
    assert "high-energy" in by_path[str(files["high"])]["reason"]
    assert by_path[str(files["processing"])]["status"] == "skipped"
    assert "For Processing" in by_path[str(files["processing"])]["reason"]
    assert by_path[str(files["junk"])]["status"] == "error"
    assert "not a DICOM file" in by_path[str(files["junk"])]["reason"]
    assert by_path[str(files["junk"])]["modality"] is None


def test_exam_forms_one_complete_case(make_mammo_dicom, tmp_path, capsys):
    files = make_exam(make_mammo_dicom, tmp_path / "exam")
    [case] = run_json(capsys, str(tmp_path / "exam"))["cases"]
    assert case["slots"] == {slot: str(files[slot]) for slot in SLOT_KEYS}
    assert (case["laterality"], case["problems"]) == ("L", [])


def test_files_given_directly_and_twice_are_listed_once(make_mammo_dicom, tmp_path, capsys):
    path = make_mammo_dicom(tmp_path / "one.dcm")
    report = run_json(capsys, str(path), str(tmp_path))
    assert [image["path"] for image in report["images"]] == [str(path)]
    assert report["cases"][0]["problems"] == ["missing LE_MLO, DES_CC, DES_MLO"]


def test_cdd_cesm_jpegs_group_by_patient(tmp_path, capsys):
    for folder, kind in (
        ("Low energy images of CDD-CESM", "DM"),
        ("Subtracted images of CDD-CESM", "CM"),
    ):
        for view in ("CC", "MLO "):
            path = tmp_path / folder / f"P12_R_{kind}_{view}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((20, 10), 90, np.uint8)).save(path)
    [case] = run_json(capsys, str(tmp_path))["cases"]
    assert (case["patient_id"], case["laterality"]) == ("P12", "R")
    assert case["study_uid"] == cdd_cesm_study_uid("P12")
    assert all(case["slots"][slot] for slot in SLOT_KEYS) and case["problems"] == []


def test_nrrd_hand_over_folder(tmp_path, capsys):
    for slot in ("LE_CC", "DES_CC"):
        sitk.WriteImage(
            sitk.GetImageFromArray(np.zeros((6, 4), np.uint16)), str(tmp_path / f"{slot}.nrrd")
        )
    (tmp_path / "case.json").write_text(
        json.dumps({"patient_id": "anon-3", "study_uid": "1.2.9", "laterality": "L"})
    )
    report = run_json(capsys, str(tmp_path))
    assert {image["status"] for image in report["images"]} == {"ok"}
    [case] = report["cases"]
    assert (case["patient_id"], case["study_uid"], case["laterality"]) == ("anon-3", "1.2.9", "L")
    assert case["slots"]["LE_MLO"] is None and case["slots"]["DES_CC"].endswith("DES_CC.nrrd")


def test_missing_path_exits_2_and_names_it(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert main(["inspect", str(tmp_path), str(missing), "--json"]) == 2
    captured = capsys.readouterr()
    assert str(missing) in captured.err and "does not exist" in captured.err
    assert captured.out == ""


def test_text_report_shows_rows_cases_and_problems(make_mammo_dicom, tmp_path, capsys):
    files = make_exam(make_mammo_dicom, tmp_path / "exam")
    files["LE_MLO"].unlink()
    assert main(["inspect", str(tmp_path / "exam")]) == 0
    out = capsys.readouterr().out
    assert sum(str(path) in out for path in files.values() if path.exists()) == 6
    assert "case 1: case-" in out
    assert "TESTPAT001" not in out  # the text output names cases by pseudonymous key only
    assert "LE_MLO   (missing)" in out and "problem: missing LE_MLO" in out
    assert "6 files: 3 ok, 2 skipped, 1 error; 1 cases" in out


def test_patient_ids_never_reach_the_log(make_mammo_dicom, tmp_path, capsys, caplog):
    make_exam(make_mammo_dicom, tmp_path / "exam")
    with caplog.at_level(logging.DEBUG):
        assert main(["-v", "inspect", str(tmp_path / "exam")]) == 0
    assert "TESTPAT001" not in caplog.text
