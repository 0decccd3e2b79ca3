"""The phantom cohort on disk: manifest, DICOM headers, CDD-CESM layout, CLI, readers."""

from __future__ import annotations

import csv
import re
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import openpyxl
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless

from VirtualBiopsyLib import SYNTHETIC_NOTICE
from VirtualBiopsyLib.cli import main
from VirtualBiopsyLib.errors import OutputExistsError
from VirtualBiopsyLib.phantom.cdd_cesm import ANNOTATION_COLUMNS, ANNOTATIONS_NAME
from VirtualBiopsyLib.phantom.cohort import generate_cohort, plan_cohort
from VirtualBiopsyLib.phantom.dicom_writer import PATIENT_ORIENTATION, VIEW_CODES
from VirtualBiopsyLib.roles import Laterality, View
from VirtualBiopsyLib.training_manifest import LESION_MASK_COLUMN
from VirtualBiopsyLib.training_manifest import TRAINING_MANIFEST_COLUMNS as MANIFEST_COLUMNS

PATIENTS, SEED = 8, 5
CDD_NAME = re.compile(r"P\d+_[LR]_(DM|CM)_(CC|MLO)")


def read_manifest(path: Path) -> list[dict[str, str]]:
    """The manifest's rows as written (raw CSV text values, relative paths)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def dicom_cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("phantom") / "dicom"
    generate_cohort(out, PATIENTS, SEED)
    return out


@pytest.fixture(scope="module")
def cdd_cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("phantom") / "cdd"
    generate_cohort(out, PATIENTS, SEED, layout="cdd-cesm")
    return out


def _dicom_files(folder: Path) -> list[Path]:
    return sorted(path for path in (folder / "dicom").rglob("*") if path.is_file())


def _headers(folder: Path) -> dict[str, pydicom.Dataset]:
    return {
        path.relative_to(folder).as_posix(): pydicom.dcmread(path) for path in _dicom_files(folder)
    }


def test_manifest_lists_exactly_the_usable_images(dicom_cohort):
    rows = read_manifest(dicom_cohort / "manifest.csv")
    assert tuple(rows[0]) == (*MANIFEST_COLUMNS, LESION_MASK_COLUMN)  # every breast has a lesion
    headers = _headers(dicom_cohort)
    listed = {row["path"] for row in rows}
    assert listed <= set(headers)
    for path, ds in headers.items():
        is_high_energy = "HIGH_ENERGY" in list(ds.ImageType)
        assert (path in listed) != is_high_energy, path
    for row in rows:
        ds = headers[row["path"]]
        assert ds.PatientID == row["patient_id"] and ds.StudyInstanceUID == row["study_uid"]
        assert ds.ImageLaterality == row["laterality"] and ds.ViewPosition == row["view"]
        energy = list(ds.ImageType)[3]
        assert (energy in {"RECOMBINED", "SUBTRACTION"}) == (row["modality"] == "DES")
        assert row["synthetic"] == "true"


def test_cohort_has_labels_densities_and_variants(dicom_cohort):
    rows = read_manifest(dicom_cohort / "manifest.csv")
    cases = {(r["patient_id"], r["laterality"]): r["label"] for r in rows}
    labels = Counter(cases.values())
    assert labels["benign"] >= 2 and 0.55 < labels["malignant"] / len(cases) < 0.85
    assert {r["acr_density"] for r in rows} == set("abcd")
    assert {r["phase"] for r in rows} == {"early", "late"}
    breasts_per_patient = Counter(patient for patient, _ in cases)
    assert max(breasts_per_patient.values()) == 2  # studies with both breasts
    patients_without_des = {r["patient_id"] for r in rows} - {
        r["patient_id"] for r in rows if r["modality"] == "DES"
    }
    assert patients_without_des
    for patient in patients_without_des:  # no DES file at all, not just unlisted
        for path in (dicom_cohort / "dicom" / patient).iterdir():
            assert "RECOMBINED" not in pydicom.dcmread(path).ImageType
            assert "SUBTRACTION" not in pydicom.dcmread(path).ImageType


def test_dicom_headers_are_realistic_and_marked_synthetic(dicom_cohort):
    headers = _headers(dicom_cohort)
    seen = Counter()
    for path, ds in headers.items():
        assert re.fullmatch(r"PHANTOM\^\d{4}", str(ds.PatientName)), path
        assert "SYNTHETIC" in ds.SeriesDescription.upper()
        assert "synthetic" in ds.ImageComments.lower()
        assert ds.BitsStored == 14 and int(ds.pixel_array.max()) < 2**14
        laterality, view = Laterality(ds.ImageLaterality), View(ds.ViewPosition)
        assert list(ds.PatientOrientation) == PATIENT_ORIENTATION[(laterality, view)]
        assert ds.ViewCodeSequence[0].CodeValue == VIEW_CODES[view][0]
        assert ds.AnatomicRegionSequence[0].CodeValue == "76752008"
        energy = [value for value in ds.ImageType[3:] if value][0]
        centre, width = float(ds.WindowCenter), float(ds.WindowWidth)
        if energy == "LOW_ENERGY":
            assert 2190 <= centre <= 2470 and 750 <= width <= 900
        if energy in {"RECOMBINED", "SUBTRACTION"}:
            assert 2085 <= centre <= 2105 and 265 <= width <= 380
        seen.update(
            [
                energy,
                ds.PhotometricInterpretation,
                ds.file_meta.TransferSyntaxUID,
                ds.AcquisitionDeviceProcessingCode,
                "suffix" + path[-4:],
            ]
        )
    for expected in (
        "LOW_ENERGY",
        "RECOMBINED",
        "SUBTRACTION",
        "HIGH_ENERGY",
        "MONOCHROME1",
        "MONOCHROME2",
        JPEG2000Lossless,
        JPEGLSLossless,
        "GEMS_CESM_1",
    ):
        assert seen[expected] > 0, expected
    assert any(not key.startswith("suffix.dcm") for key in seen if key.startswith("suffix"))


def test_windowing_the_stored_values_gives_back_the_rendered_image(dicom_cohort):
    """Lossless compression and the window: the file shows what the phantom rendered."""
    from pydicom.pixels import apply_voi_lut

    for path in _dicom_files(dicom_cohort):
        ds = pydicom.dcmread(path)
        if ds.file_meta.TransferSyntaxUID in (JPEG2000Lossless, JPEGLSLossless):
            break
    shown = apply_voi_lut(ds.pixel_array.astype(np.float64), ds)
    shown = (shown - shown.min()) / (shown.max() - shown.min())
    if ds.PhotometricInterpretation == "MONOCHROME1":
        shown = 1.0 - shown
    breast = shown > 0.1
    assert 0.15 < breast.mean() < 0.85
    if ds.ImageLaterality == "R":
        assert breast[:, -1].mean() > breast[:, 0].mean()
    else:
        assert breast[:, 0].mean() > breast[:, -1].mean()


def test_same_seed_same_bytes_other_seed_other_cohort(dicom_cohort, tmp_path):
    """Also when two processes render the patients (``workers``; in patient order)."""
    again = generate_cohort(tmp_path / "again", PATIENTS, SEED, workers=2)
    assert again.read_bytes() == (dicom_cohort / "manifest.csv").read_bytes()
    assert len(_dicom_files(tmp_path / "again")) == len(_dicom_files(dicom_cohort))
    for path in _dicom_files(dicom_cohort):
        twin = tmp_path / "again" / path.relative_to(dicom_cohort)
        assert twin.read_bytes() == path.read_bytes(), path
    other = generate_cohort(tmp_path / "other", PATIENTS, SEED + 1)
    assert other.read_bytes() != again.read_bytes()


def test_cdd_cesm_layout_and_annotation_sheet(cdd_cohort):
    rows = read_manifest(cdd_cohort / "manifest.csv")
    for row in rows:
        path = cdd_cohort / row["path"]
        assert path.is_file(), row["path"]
        folder = "Low energy" if row["modality"] == "LE" else "Subtracted"
        assert path.parent.name.startswith(folder)
        assert CDD_NAME.fullmatch(path.stem.replace(" ", ""))
    names = [Path(row["path"]).name for row in rows]
    assert any(" " in name for name in names) and any(" " not in name for name in names)
    workbook = openpyxl.load_workbook(cdd_cohort / ANNOTATIONS_NAME)
    sheet = list(workbook["all"].iter_rows(values_only=True))
    assert tuple(sheet[0]) == ANNOTATION_COLUMNS
    body = [dict(zip(ANNOTATION_COLUMNS, line, strict=True)) for line in sheet[1:]]
    image_names = Counter(line["Image_name"] for line in body)
    assert any(count == 2 for count in image_names.values())
    assert set(image_names) == {Path(n).stem.replace(" ", "") for n in names}
    densities = {type(line["Breast density (ACR)"]) for line in body}
    assert str in densities and int in densities
    assert {line["Pathology Classification/ Follow up"] for line in body} == {"Malignant", "Benign"}
    assert all("synthetic" in line["Tags"] for line in body)
    assert SYNTHETIC_NOTICE in [row[0] for row in workbook["notice"].iter_rows(values_only=True)]
    plans = plan_cohort(PATIENTS, SEED)
    no_des = [plan.number for plan in plans if not plan.has_des]
    subtracted = list((cdd_cohort / "Subtracted images of CDD-CESM").iterdir())
    assert no_des and not any(p.name.startswith(f"P{n}_") for n in no_des for p in subtracted)


def test_annotation_workbook_has_no_clock_in_its_bytes(cdd_cohort):
    """openpyxl stamps the save time into docProps/core.xml and every zip entry: the phantom
    fixes both, so the same seed gives the same bytes in the CDD-CESM layout too."""
    with zipfile.ZipFile(cdd_cohort / ANNOTATIONS_NAME) as workbook:
        assert {entry.date_time for entry in workbook.infolist()} == {(2024, 1, 1, 0, 0, 0)}
        core = workbook.read("docProps/core.xml").decode()
    assert re.findall(r"<dcterms:modified[^>]*>([^<]*)<", core) == ["2024-01-01T00:00:00Z"]
    assert openpyxl.load_workbook(cdd_cohort / ANNOTATIONS_NAME)["all"].max_row > 1


def test_existing_output_is_never_overwritten(tmp_path):
    user_data = tmp_path / "mine"
    user_data.mkdir()
    (user_data / "notes.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="not empty"):
        generate_cohort(user_data, 1, 0)
    with pytest.raises(OutputExistsError, match="not a phantom"):
        generate_cohort(user_data, 1, 0, overwrite=True)
    assert (user_data / "notes.txt").read_text() == "keep me"
    first = generate_cohort(tmp_path / "cohort", 1, 0)
    assert generate_cohort(tmp_path / "cohort", 1, 1, overwrite=True) == first


def test_command_line(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["phantom", "--out", str(out), "--patients", "2", "--seed", "9"]) == 0
    two = tmp_path / "two-workers"
    assert (
        main(["phantom", "--out", str(two), "--patients", "2", "--seed", "9", "--workers", "2"])
        == 0
    )
    assert (two / "manifest.csv").read_text().replace(str(two), "") == (
        out / "manifest.csv"
    ).read_text().replace(str(out), "")
    printed = capsys.readouterr().out
    assert str(out / "manifest.csv") in printed and SYNTHETIC_NOTICE in printed
    assert main(["phantom", "--out", str(out), "--patients", "2", "--seed", "9"]) == 5
    assert "not empty" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["phantom", "--out", str(tmp_path / "x"), "--patients", "0"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize("layout", ["dicom", "cdd-cesm"])
def test_readers_recover_every_case_and_role(dicom_cohort, cdd_cohort, layout):
    from VirtualBiopsyLib.images.cases import group_cases
    from VirtualBiopsyLib.images.readers import scan

    folder = dicom_cohort if layout == "dicom" else cdd_cohort
    entries = scan([folder])
    assert not [entry for entry in entries if entry.status == "error"]
    skipped = {
        entry.path.relative_to(folder).as_posix() for entry in entries if entry.status == "skipped"
    }
    rows = read_manifest(folder / "manifest.csv")
    assert not skipped & {row["path"] for row in rows}
    cases = group_cases(entry.info for entry in entries if entry.status == "ok")
    by_identity = {(c.patient_id, c.study_uid, c.laterality.value): c for c in cases}
    expected_cases = {(r["patient_id"], r["study_uid"], r["laterality"]) for r in rows}
    assert set(by_identity) == expected_cases
    for row in rows:
        if row["phase"] != "early":
            continue
        case = by_identity[(row["patient_id"], row["study_uid"], row["laterality"])]
        info = case.slots[f"{row['modality']}_{row['view']}"]
        assert info is not None and info.path.resolve() == (folder / row["path"]).resolve()


def test_cp1342_value3_variant_is_still_read_by_role(tmp_path):
    from VirtualBiopsyLib.images.readers import scan

    manifest = generate_cohort(tmp_path / "cp1342", 2, SEED, contrast_value3=True)
    rows = {row["path"]: row for row in read_manifest(manifest)}
    standard = [
        path
        for path in rows
        if "POST_CONTRAST" in pydicom.dcmread(tmp_path / "cp1342" / path).ImageType
    ]
    assert standard
    for entry in scan([tmp_path / "cp1342" / path for path in standard]):
        row = rows[entry.path.relative_to(tmp_path / "cp1342").as_posix()]
        assert entry.status == "ok" and entry.info.slot == f"{row['modality']}_{row['view']}"
    readme = (tmp_path / "cp1342" / "PHANTOM_README.txt").read_text()
    assert SYNTHETIC_NOTICE in readme
