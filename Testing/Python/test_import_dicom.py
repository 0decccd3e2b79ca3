"""`import dicom`: exams in any folder layout + a clinical sheet joined each supported way."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pydicom
import pytest
from conftest import write_mammo_dicom
from openpyxl import Workbook

from Training.importers.clinical_sheet import ClinicalMapping, parse_join
from Training.importers.dicom_exams import PHASE_EARLIEST, PHASE_LATER, import_dicom_exams
from Training.importers.sheets import ImportInputError
from Training.importers.summary import summary_path_for, write_import
from Training.importers.values import LABEL_VALUES, PHASE_VALUES, ValueMapping
from VirtualBiopsyLib.images.readers import scan
from VirtualBiopsyLib.phantom import generate_cohort
from VirtualBiopsyLib.training_manifest import read_training_manifest

GE_TYPE = {
    "LE": ["ORIGINAL", "PRIMARY", "", "LOW_ENERGY"],
    "DES": ["DERIVED", "PRIMARY", "", "RECOMBINED"],
}
PATIENT_A, PATIENT_B = "0012345", "HOSP-B-77"  # A's sheet cell loses the leading zeros
LABELS = ValueMapping.parse("M=malignant,B=benign,N=normal", LABEL_VALUES, "label")


def _image(folder: Path, name: str, patient: str, study: str, side: str, slot: str, time: str,
           **extra) -> Path:  # fmt: skip
    modality, view = slot.split("_")
    attributes = {
        "PatientID": patient,
        "StudyInstanceUID": study,
        "ImageLaterality": side,
        "ViewPosition": view,
        "ImageType": GE_TYPE[modality],
        "AcquisitionDateTime": f"20240102{time}00.000000" if time else None,
    }
    return write_mammo_dicom(folder / name, **{**attributes, **extra})


@pytest.fixture(scope="module")
def exams(tmp_path_factory) -> Path:
    """Two patients in a PACS-like layout, with the cases dicom.md lists."""
    root = tmp_path_factory.mktemp("exams") / "export"
    a, b = root / "study1" / "series", root / "B" / "x"
    for slot, minute in (("LE_CC", 10), ("LE_MLO", 11), ("DES_CC", 12), ("DES_MLO", 13)):
        _image(a, f"L_{slot}.dcm", PATIENT_A, "1.2.1", "L", slot, f"10{minute}")
    _image(a, "L_DES_CC_late", PATIENT_A, "1.2.1", "L", "DES_CC", "1020")  # late, no suffix
    _image(a, "R_LE_CC.dcm", PATIENT_A, "1.2.1", "R", "LE_CC", "1030")
    _image(a, "HE.dcm", PATIENT_A, "1.2.1", "L", "LE_CC", "1010",
           ImageType=["ORIGINAL", "PRIMARY", "", "HIGH_ENERGY"])  # fmt: skip
    _image(a, "raw.dcm", PATIENT_A, "1.2.1", "L", "LE_CC", "1010",
           SOPClassUID="1.2.840.10008.5.1.4.1.1.1.2.1")  # For Processing  # fmt: skip
    _image(a, "noside.dcm", PATIENT_A, "1.2.1", "", "LE_MLO", "1040", ImageLaterality=None)
    (a / "broken.dcm").write_bytes(b"DICM but not really")
    for slot in ("LE_CC", "DES_CC"):
        _image(b, f"{slot}.dcm", PATIENT_B, "1.2.2", "R", slot, "0900")
    for name in ("first.dcm", "second.dcm"):  # two LE_MLO, no acquisition time: order unknown
        _image(b, name, PATIENT_B, "1.2.2", "R", "LE_MLO", "")
    return root


def _sheet(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    if path.suffix == ".xlsx":
        workbook = Workbook()
        workbook.active.append(header)
        for row in rows:
            workbook.active.append(row)
        workbook.save(path)
    else:
        with open(path, "w", newline="") as handle:
            csv.writer(handle).writerows([header, *rows])
    return path


def _table(rows) -> dict[str, tuple]:
    return {
        r.path.name: (r.patient_id, r.laterality, r.slot, r.label.text, r.acr_density, r.phase)
        for r in rows
    }


def _kinds(result) -> dict[str, str]:
    return {item.item: item.kind for item in result.left_out}


def test_per_breast_sheet_phase_from_acquisition_order(exams, tmp_path) -> None:
    sheet = _sheet(
        tmp_path / "clinical.xlsx",
        ["Patient ID", "Laterality", "Biopsy result", "ACR density"],
        [[12345, "L", "M", 3], [12345, "Right", "B", "2.0"], [PATIENT_B, "R", "N", "d"],
         ["NOBODY", "L", "B", 1]],
    )  # fmt: skip
    result = import_dicom_exams(exams, sheet, ClinicalMapping(labels=LABELS))
    assert result.settings["join"] == ["patient_id", "laterality"]  # the default the sheet fits
    assert _table(result.rows) == {
        "L_LE_CC.dcm": (PATIENT_A, "L", "LE_CC", "malignant", "c", "early"),
        "L_LE_MLO.dcm": (PATIENT_A, "L", "LE_MLO", "malignant", "c", "early"),
        "L_DES_CC.dcm": (PATIENT_A, "L", "DES_CC", "malignant", "c", "early"),
        "L_DES_MLO.dcm": (PATIENT_A, "L", "DES_MLO", "malignant", "c", "early"),
        "L_DES_CC_late": (PATIENT_A, "L", "DES_CC", "malignant", "c", "late"),
        "R_LE_CC.dcm": (PATIENT_A, "R", "LE_CC", "benign", "b", "early"),
        "LE_CC.dcm": (PATIENT_B, "R", "LE_CC", "normal", "d", "early"),
        "DES_CC.dcm": (PATIENT_B, "R", "DES_CC", "normal", "d", "early"),
    }
    assert _kinds(result) == {
        "study1/series/HE.dcm": "not used by the readers",
        "study1/series/raw.dcm": "not used by the readers",
        "study1/series/noside.dcm": "unknown laterality",
        "study1/series/broken.dcm": "unreadable file",
        "B/x/first.dcm": "phase undetermined",
        "B/x/second.dcm": "phase undetermined",
        "sheet row 5": "clinical row without image",
    }
    rules = {item["path"]: item["rule"] for item in result.phase_rules}
    assert rules["study1/series/L_DES_CC.dcm"] == PHASE_EARLIEST
    assert rules["study1/series/L_DES_CC_late"] == PHASE_LATER
    summary = write_import(result, tmp_path / "out" / "manifest.csv")
    assert summary["classifier_cases"] == {"malignant": 1, "benign": 1}  # early, not normal
    assert summary["pairs_per_view"] == {
        "CC": 2,
        "MLO": 1,
    }  # the normal pair counts; a lone late DES not


def test_join_on_sop_instance_uid_with_phase_from_the_sheet(exams, tmp_path) -> None:
    files = sorted(p for p in (exams / "B").rglob("*.dcm"))
    uids = {p.name: str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}
    sheet = _sheet(
        tmp_path / "per_image.csv",
        ["SOPInstanceUID", "label", "density", "phase"],
        [[uids["first.dcm"], "benign", "a", "E"], [uids["second.dcm"], "benign", "a", "L"],
         [uids["LE_CC.dcm"], "benign", "", "E"]],
    )  # fmt: skip
    phases = ValueMapping.parse("E=early,L=late", PHASE_VALUES, "phase")
    result = import_dicom_exams(exams / "B", sheet, ClinicalMapping(phases=phases))
    assert result.settings["join"] == ["sop_instance_uid"]
    assert _table(result.rows) == {
        "first.dcm": (PATIENT_B, "R", "LE_MLO", "benign", "a", "early"),
        "second.dcm": (PATIENT_B, "R", "LE_MLO", "benign", "a", "late"),
        "LE_CC.dcm": (PATIENT_B, "R", "LE_CC", "benign", "", "early"),
    }
    assert _kinds(result) == {"x/DES_CC.dcm": "no clinical row"}
    assert {r["rule"] for r in result.phase_rules} == {"clinical sheet"}


def test_join_on_file_name_and_on_patient_laterality_view(exams, tmp_path) -> None:
    by_file = _sheet(
        tmp_path / "files.csv",
        ["file", "label"],
        [["study1/series/L_LE_CC.dcm", "malignant"], ["R_LE_CC", "benign"],
         ["le_cc.dcm", "benign"]],  # path, stem, bare name (case ignored)
    )  # fmt: skip
    result = import_dicom_exams(exams, by_file, ClinicalMapping(join=parse_join("file")))
    assert _table(result.rows) == {
        "L_LE_CC.dcm": (PATIENT_A, "L", "LE_CC", "malignant", "", "early"),
        "R_LE_CC.dcm": (PATIENT_A, "R", "LE_CC", "benign", "", "early"),
        "LE_CC.dcm": (PATIENT_B, "R", "LE_CC", "benign", "", "early"),
    }
    assert _kinds(result)["study1/series/L_LE_MLO.dcm"] == "no clinical row"
    by_view = _sheet(
        tmp_path / "views.xlsx",
        ["MRN", "Side", "View", "Histology"],
        [["0012345", "L", "CC", "malignant"], ["0012345", "L", "MLO", "benign"]],
    )
    mapping = ClinicalMapping(columns={"patient_id": "MRN", "laterality": "Side"})
    result = import_dicom_exams(exams / "study1", by_view, mapping)
    assert result.settings["join"] == ["patient_id", "laterality", "view"]
    kinds = _kinds(result)
    assert {r.path.name for r in result.rows} == set()  # CC malignant, MLO benign: one breast
    assert kinds["series/L_LE_CC.dcm"] == "conflicting labels for one breast"
    assert kinds["series/R_LE_CC.dcm"] == "no clinical row"


def test_bare_file_names_shared_by_two_files_are_ambiguous(tmp_path) -> None:
    for patient in ("P1", "P2"):
        _image(tmp_path / "exams" / patient, "IM1.dcm", patient, f"1.{patient[-1]}", "L",
               "LE_CC", "1000")  # fmt: skip
    sheet = _sheet(tmp_path / "s.csv", ["file name", "label"], [["IM1.dcm", "benign"]])
    result = import_dicom_exams(tmp_path / "exams", sheet, ClinicalMapping())
    assert not result.rows
    assert set(_kinds(result).values()) == {"file name matches several images"}


def test_label_values_are_never_guessed(exams, tmp_path) -> None:
    sheet = _sheet(tmp_path / "c.csv", ["patient", "side", "result"], [[PATIENT_B, "R", "M"]])
    mapping = ClinicalMapping(columns={"label": "result"})
    with pytest.raises(ImportInputError, match=r"label values 'M' are not mapped.*--labels"):
        import_dicom_exams(exams, sheet, mapping)
    with pytest.raises(ImportInputError, match="target must be one of"):
        ValueMapping.parse("M=cancer", LABEL_VALUES, "label")
    zero_one = ValueMapping.parse("0=benign,1=malignant", LABEL_VALUES, "label")
    mapped = (zero_one.map(1), zero_one.map("0"), zero_one.map(1.0))
    assert mapped == ("malignant", "benign", "malignant")


def test_missing_columns_name_the_sheet(exams, tmp_path) -> None:
    sheet = _sheet(tmp_path / "c.csv", ["patient", "side"], [[PATIENT_B, "R"]])
    with pytest.raises(ImportInputError, match=r"c\.csv: no biopsy-result column"):
        import_dicom_exams(exams, sheet, ClinicalMapping())
    sheet = _sheet(tmp_path / "d.csv", ["label"], [["benign"]])
    with pytest.raises(ImportInputError, match=r"d\.csv: no key to join on"):
        import_dicom_exams(exams, sheet, ClinicalMapping())


def test_phantom_exams_with_a_per_breast_sheet_import_to_the_phantoms_manifest(tmp_path):
    manifest = generate_cohort(tmp_path / "cohort", patients=8, seed=4)
    phantom = read_training_manifest(manifest).rows
    breasts = {(r.patient_id, r.laterality): (r.label.text, r.acr_density) for r in phantom}
    sheet = _sheet(
        tmp_path / "clinical.csv",
        ["PatientID", "Laterality", "label", "ACR density"],
        [[p, side, label, density] for (p, side), (label, density) in breasts.items()],
    )
    result = import_dicom_exams(tmp_path / "cohort", sheet)
    summary = write_import(result, tmp_path / "imported" / "manifest.csv")
    assert set(read_training_manifest(tmp_path / "imported" / "manifest.csv").rows) == set(phantom)
    assert all(row.synthetic for row in result.rows)  # the headers say synthetic
    assert set(summary["left_out_by_reason"]) <= {"not used by the readers"}  # high energy
    assert all(row.lesion_mask for row in result.rows)  # the phantom's masks, read back
    masks = summary["lesion_masks"]
    assert sum(masks["images_per_modality"].values()) == len(phantom)


def test_a_phantom_mask_that_does_not_fit_its_image_is_left_out(tmp_path) -> None:
    from PIL import Image

    manifest = generate_cohort(tmp_path / "cohort", patients=2, seed=4)
    rows = read_training_manifest(manifest).rows
    Image.new("L", (5, 7)).save(rows[0].lesion_mask)  # not the image's grid
    rows[1].path.unlink()  # its mask stays behind
    sheet = _sheet(
        tmp_path / "clinical.csv",
        ["PatientID", "Laterality", "label"],
        sorted({(r.patient_id, r.laterality, r.label.text) for r in rows}),
    )
    result = import_dicom_exams(tmp_path / "cohort", sheet)
    reasons = {item.kind: item for item in result.left_out}
    assert "5×7 pixels" in reasons["lesion mask not on its image's grid"].detail
    assert reasons["lesion mask of an image not imported"].item.endswith("_lesion_mask.png")
    imported = {row.path: row.lesion_mask for row in result.rows}
    assert imported[rows[0].path] is None and rows[1].path not in imported
    assert all(mask is not None for path, mask in imported.items() if path != rows[0].path)


def test_a_users_lesion_masks_folder_is_read_and_bad_masks_stay_their_own_problem(
    tmp_path,
) -> None:
    """Real exams keep masks in ``lesion_masks/`` (the phantom's folder is only its own);
    an unreadable mask or a second mask of one image is listed, never a crash."""
    import shutil

    from PIL import Image

    cohort = tmp_path / "cohort"
    rows = read_training_manifest(generate_cohort(cohort, patients=2, seed=4)).rows
    shutil.move(cohort / "synthetic_lesion_masks", cohort / "lesion_masks")
    moved = [cohort / "lesion_masks" / r.lesion_mask.relative_to(cohort / "synthetic_lesion_masks")
             for r in rows]  # fmt: skip
    moved[0].write_bytes(b"not a png")
    second = cohort / "synthetic_lesion_masks" / moved[1].relative_to(cohort / "lesion_masks")
    second.parent.mkdir(parents=True)
    Image.new("L", (3, 3)).save(second)
    sheet = _sheet(
        tmp_path / "clinical.csv",
        ["PatientID", "Laterality", "label"],
        sorted({(r.patient_id, r.laterality, r.label.text) for r in rows}),
    )
    result = import_dicom_exams(cohort, sheet)
    reasons = {item.kind: item for item in result.left_out}
    assert "not a readable image" in reasons["lesion mask unreadable"].detail
    assert reasons["second lesion mask of an image"].item.startswith("synthetic_lesion_masks/")
    masks = {row.path: row.lesion_mask for row in result.rows}
    assert masks[rows[0].path] is None and masks[rows[1].path] == moved[1]
    assert all(masks[r.path] == m for r, m in zip(rows[2:], moved[2:], strict=True))
    assert result.lesion_masks_source == "lesion_masks/, synthetic_lesion_masks/ beside the images"
    assert not any("lesion_mask" in entry.path.name for entry in scan([cohort]))  # no images


def test_command_line_options_and_mapping_file(exams, tmp_path, capsys) -> None:
    from Training.cli import main

    sheet = _sheet(
        tmp_path / "c.csv", ["MRN", "Side", "Result"], [[12345, "L", "M"], [PATIENT_B, "R", "B"]]
    )
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps({"columns": {"patient_id": "MRN"}, "join": "breast"}))
    out = tmp_path / "out" / "manifest.csv"
    argv = ["import", "dicom", str(exams), "--clinical", str(sheet), "--out", str(out),
            "--mapping", str(mapping), "--column", "label=Result",
            "--labels", "M=malignant,B=benign"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for secret in (PATIENT_A, "12345", PATIENT_B, "1.2.1"):
        assert secret not in printed  # no patient ID (nor study UID) on the console
    assert "left out:" in printed and "phase decided by:" in printed
    summary = json.loads(summary_path_for(out).read_text())
    assert summary["settings"]["join"] == ["patient_id", "laterality"]
    assert summary["settings"]["label_mapping"]["source"] == "option"
    assert len(summary["phase_per_image"]) == summary["images"]
    assert main([*argv[:-2]]) == 3  # without --labels: M and B are not guessed
    assert "not mapped" in capsys.readouterr().err


def test_masks_are_found_as_images_are_and_a_colour_mask_is_refused(tmp_path) -> None:
    """A mask's suffix in capitals, a linked sub-folder (exams are often assembled from
    links) were dropped silently; an RGB mask was taken, and refused only by training."""
    import os
    import shutil

    from PIL import Image

    cohort = tmp_path / "cohort"
    rows = read_training_manifest(generate_cohort(cohort, patients=2, seed=4)).rows
    shutil.move(cohort / "synthetic_lesion_masks", cohort / "lesion_masks")
    moved = [cohort / "lesion_masks" / r.lesion_mask.relative_to(cohort / "synthetic_lesion_masks")
             for r in rows]  # fmt: skip
    Image.open(moved[0]).convert("RGB").save(moved[0])
    capitals = moved[1].with_name(moved[1].name.replace("_lesion_mask.png", "_Lesion_Mask.PNG"))
    moved[1].rename(capitals)
    linked = moved[-1].parent
    shutil.move(linked, tmp_path / "masks elsewhere")
    os.symlink(tmp_path / "masks elsewhere", linked)
    sheet = _sheet(
        tmp_path / "clinical.csv",
        ["PatientID", "Laterality", "label"],
        sorted({(r.patient_id, r.laterality, r.label.text) for r in rows}),
    )
    result = import_dicom_exams(cohort, sheet)
    masks = {row.path: row.lesion_mask for row in result.rows}
    assert masks[rows[0].path] is None
    assert masks[rows[1].path] == capitals
    assert all(masks[r.path] == m for r, m in zip(rows[2:], moved[2:], strict=True))
    [refused] = [item for item in result.left_out if "lesion mask" in item.kind]
    assert refused.item == moved[0].relative_to(cohort).as_posix()
    assert refused.detail == "3 channels (RGB), training reads one"
