"""`import cdd-cesm`: the public set's real layout, every quirk, row by row, case by case."""

from __future__ import annotations

import csv
import errno
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from openpyxl import Workbook
from PIL import Image

from Training.importers.cdd_cesm import import_cdd_cesm
from Training.importers.sheets import ImportInputError
from Training.importers.summary import summary_path_for, write_import
from VirtualBiopsyLib.images.raster_reader import cdd_cesm_study_uid
from VirtualBiopsyLib.phantom import generate_cohort
from VirtualBiopsyLib.phantom.cdd_cesm import ANNOTATION_COLUMNS
from VirtualBiopsyLib.training_manifest import read_training_manifest

LOW, SUB = "Low energy images of CDD-CESM", "Subtracted images of CDD-CESM"
PATIENT_TOKEN = re.compile(r"(?<![0-9A-Za-z])P\d+(?![0-9A-Za-z])")


def _jpeg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (24, 16), dtype=np.uint8)
    Image.fromarray(pixels, mode="L").save(path, format="JPEG")


def _row(name: str, label: str, density: object, birads: object = 4, findings: str = "mass"):
    parts = name.strip().replace(" ", "").split("_")
    patient, side, code, view = parts if len(parts) == 4 else ("P0", "L", "DM", "CC")
    kind = "DM" if code == "DM" else "CESM"
    return [name, int(patient[1:]), side, kind, 50, density, birads, findings, view, "", "", label]


# Images (relative path) and annotation rows of a small set with every quirk of dicom.md.
FILES = {
    f"{LOW}/P1_L_DM_CC.jpg": 1,
    f"{LOW}/P1_L_DM_MLO.jpg": 2,
    f"{SUB}/P1_L_CM_CC.jpg": 3,
    f"{SUB}/P1_L_CM_MLO.jpg": 4,
    f"{LOW}/P2_R_DM_CC.jpg": 5,
    f"{SUB}/P2_R_CM_CC .jpg": 6,  # stray space before the extension
    f"{SUB}/P2 _R_CM_MLO.jpg": 7,  # stray space after the patient
    f"{LOW}/P2_R_DM_MLO.jpg": 8,
    f"{LOW}/P3_L_DM_CC.jpg": 9,  # a normal breast, kept
    f"{SUB}/P3_L_CM_CC.jpg": 10,
    f"{LOW}/P3_R_DM_CC.jpg": 11,
    f"{LOW}/P4_L_DM_CC.jpg": 12,  # conflicting labels for one breast
    f"{SUB}/P4_L_CM_CC.jpg": 13,
    f"{LOW}/P5_R_DM_CC.jpg": 14,  # image without annotation
    f"{LOW}/P9_R_DM_CC.jpg": 16,  # the finding shows on CC only: MLO annotated Normal
    f"{LOW}/P9_R_DM_MLO.jpg": 17,
    f"{LOW}/scout.jpg": 15,  # not a CDD-CESM name
}
ROWS = [
    _row("P1_L_DM_CC", "Malignant", 3, "4$5", "mass$calcification"),  # '$'-joined findings
    _row("P1_L_DM_CC", "Malignant", 3, 5, "calcification"),  # a second finding row
    _row("P1_L_DM_MLO", "Malignant", 3),
    _row("P1_L_CM_CC", "Malignant", 3),
    _row("P1_L_CM_MLO", "Malignant", 3),
    _row("P2_R_DM_CC", "Benign", 2.0),  # density as a float
    _row("P2_R_CM_CC", "Benign", 2.0),
    _row("P2_R_CM_MLO", "Benign", 2.0),
    _row("P2_R_DM_MLO", "Benign", "2.0"),
    _row("P3_L_DM_CC", "Normal", "B"),  # density as a letter
    _row("P3_L_CM_CC", "Normal", "B"),
    _row("P3_R_DM_CC", "Malignant", "b"),
    _row("P4_L_DM_CC", "Benign", 4),
    _row("P4_L_CM_CC", "Malignant", 4),
    _row("P9_R_DM_CC", "Benign", "a"),
    _row("P9_R_DM_MLO", "Normal", "a"),
    _row("P6_L_DM_MLO", "Benign", 1),  # annotation without image
    _row("P7_L_DM_CC", "Unknown", 1),  # not one of the data set's three values
    _row("Scan 7", "Benign", 1),  # not an image name
    [None] * len(ANNOTATION_COLUMNS),  # an empty row, as spreadsheets end
]


def _write_set(folder: Path, sheet: str = "xlsx") -> Path:
    for relative, seed in FILES.items():
        _jpeg(folder / relative, seed)
    (folder / LOW / "P8_L_DM_CC.jpg").write_bytes(b"not a jpeg")  # unreadable
    rows = [*ROWS[:-1], _row("P8_L_DM_CC", "Benign", 1), ROWS[-1]]
    if sheet == "xlsx":
        workbook = Workbook()
        workbook.active.title = "all"
        workbook.active.append(list(ANNOTATION_COLUMNS))
        for row in rows:
            workbook.active.append(row)
        workbook.save(folder / "Radiology manual annotations.xlsx")
    else:  # the sheet exported to CSV: every cell is text, density 2.0 becomes "2.0"
        with open(folder / "Radiology manual annotations.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(ANNOTATION_COLUMNS)
            writer.writerows([["" if c is None else c for c in row] for row in rows])
    return folder


@pytest.fixture(scope="module")
def cdd_set(tmp_path_factory) -> Path:
    return _write_set(tmp_path_factory.mktemp("cdd") / "CDD-CESM")


def _table(manifest: Path) -> list[tuple]:
    rows = read_training_manifest(manifest).rows
    return [
        (r.patient_id, r.laterality, r.view.value, r.modality.value, r.path.name, r.label.text,
         r.acr_density, r.phase, r.synthetic)
        for r in rows
    ]  # fmt: skip


EXPECTED = [
    ("P1", "L", "CC", "LE", "P1_L_DM_CC.jpg", "malignant", "c", "early", False),
    ("P1", "L", "CC", "DES", "P1_L_CM_CC.jpg", "malignant", "c", "early", False),
    ("P1", "L", "MLO", "LE", "P1_L_DM_MLO.jpg", "malignant", "c", "early", False),
    ("P1", "L", "MLO", "DES", "P1_L_CM_MLO.jpg", "malignant", "c", "early", False),
    ("P2", "R", "CC", "LE", "P2_R_DM_CC.jpg", "benign", "b", "early", False),
    ("P2", "R", "CC", "DES", "P2_R_CM_CC .jpg", "benign", "b", "early", False),
    ("P2", "R", "MLO", "LE", "P2_R_DM_MLO.jpg", "benign", "b", "early", False),
    ("P2", "R", "MLO", "DES", "P2 _R_CM_MLO.jpg", "benign", "b", "early", False),
    ("P3", "L", "CC", "LE", "P3_L_DM_CC.jpg", "normal", "b", "early", False),
    ("P3", "L", "CC", "DES", "P3_L_CM_CC.jpg", "normal", "b", "early", False),
    ("P3", "R", "CC", "LE", "P3_R_DM_CC.jpg", "malignant", "b", "early", False),
    ("P9", "R", "CC", "LE", "P9_R_DM_CC.jpg", "benign", "a", "early", False),
    ("P9", "R", "MLO", "LE", "P9_R_DM_MLO.jpg", "benign", "a", "early", False),
]
EXPECTED_LEFT_OUT = {
    (f"{LOW}/P4_L_DM_CC.jpg", "conflicting labels for one breast"),
    (f"{SUB}/P4_L_CM_CC.jpg", "conflicting labels for one breast"),
    (f"{LOW}/P5_R_DM_CC.jpg", "image without annotation"),
    (f"{LOW}/scout.jpg", "not a CDD-CESM image"),
    (f"{LOW}/P8_L_DM_CC.jpg", "unreadable file"),
    ("sheet row 18", "annotation without image"),
    ("sheet row 19", "unknown pathology value"),
    ("sheet row 20", "Image_name is not P{id}_{L|R}_{DM|CM}_{CC|MLO}"),
}


def test_every_image_becomes_one_row_with_its_breast_label(cdd_set, tmp_path) -> None:
    out = tmp_path / "cdd" / "manifest.csv"
    summary = write_import(import_cdd_cesm(cdd_set), out)
    assert _table(out) == EXPECTED
    rows = read_training_manifest(out).rows
    assert all(row.path.is_file() for row in rows)  # relative to the manifest's own folder
    assert {row.study_uid for row in rows if row.patient_id == "P1"} == {cdd_set_uid("P1")}
    assert summary["pairs_per_view"] == {"CC": 3, "MLO": 2}
    assert summary["labels_per_view"]["CC"] == {"malignant": 2, "benign": 2, "normal": 1}
    assert summary["classifier_cases"] == {"malignant": 2, "benign": 2}  # normal left out
    assert summary["acr_density"] == {"a": 1, "b": 3, "c": 1}
    assert (summary["images"], summary["patients"], summary["breasts"]) == (13, 4, 5)
    assert summary["notes"] == {
        "breast with normal and abnormal images (labelled by the finding)": 1
    }


def cdd_set_uid(patient: str) -> str:
    return cdd_cesm_study_uid(patient)


def test_every_image_or_row_left_out_is_reported_with_its_reason(cdd_set) -> None:
    result = import_cdd_cesm(cdd_set)
    assert {(item.item, item.kind) for item in result.left_out} == EXPECTED_LEFT_OUT
    conflict = next(i for i in result.left_out if i.kind.startswith("conflicting"))
    assert conflict.detail == "benign, malignant"
    # nothing silently dropped: every file is in the manifest or in the report
    files = {p.relative_to(cdd_set).as_posix() for p in cdd_set.rglob("*.jpg")}
    listed = {row.path.relative_to(cdd_set.resolve()).as_posix() for row in result.rows}
    assert files == listed | {item.item for item in result.left_out if "/" in item.item}


def test_a_csv_export_of_the_sheet_gives_the_same_manifest(cdd_set, tmp_path) -> None:
    exported = _write_set(tmp_path / "CDD-CESM", sheet="csv")
    write_import(import_cdd_cesm(exported), exported / "from_csv.csv")
    write_import(import_cdd_cesm(cdd_set), cdd_set / "from_xlsx.csv", overwrite=True)
    assert (exported / "from_csv.csv").read_text() == (cdd_set / "from_xlsx.csv").read_text()


def _without_last_column(manifest: Path) -> list[list[str]]:
    with open(manifest, newline="", encoding="utf-8") as handle:
        return [line[:-1] for line in csv.reader(handle)]


def _mask(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path)) > 0


def test_phantom_in_cdd_cesm_layout_imports_to_exactly_its_own_manifest(tmp_path) -> None:
    """Every column byte for byte but the mask paths (the two write masks to different
    folders); the masks by content: traced outlines exactly, fitted ellipses and circles
    closely (a moment fit of a lobulated lesion, not a trace)."""
    cohort = tmp_path / "phantom"
    manifest = generate_cohort(cohort, patients=8, seed=3, layout="cdd-cesm")
    imported = cohort / "imported.csv"
    summary = write_import(import_cdd_cesm(cohort), imported)
    assert imported.read_text().splitlines()[0] == manifest.read_text().splitlines()[0]
    assert _without_last_column(imported) == _without_last_column(manifest)
    assert summary["left_out_count"] == 0 and summary["synthetic"]
    assert "synthetic_notice" in summary
    shapes = _phantom_shapes(cohort)
    own, back = read_training_manifest(manifest).rows, read_training_manifest(imported).rows
    assert all(row.lesion_mask.parent.name == "imported.lesion_masks" for row in back)
    for truth, row in zip(own, back, strict=True):
        expected, drawn = _mask(truth.lesion_mask), _mask(row.lesion_mask)
        assert drawn.shape == expected.shape
        if shapes[truth.path.name] in ("polygon", "polyline"):
            np.testing.assert_array_equal(drawn, expected, err_msg=truth.path.name)
        else:
            assert (drawn & expected).sum() / (drawn | expected).sum() >= 0.85, truth.path.name
    masks = summary["lesion_masks"]
    assert masks["images_per_modality"] == {"LE": 20, "DES": 16}
    assert set(masks["regions_by_shape"]) == {"polygon", "polyline", "ellipse", "circle"}
    assert masks["regions_left_out_by_reason"] == {"point marks no area": 2}


def _phantom_shapes(cohort: Path) -> dict[str, str]:
    """The area shape the phantom drew for each image (the point marks are extra)."""
    with open(cohort / "Radiology_hand_drawn_segmentations_v2.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    shapes = {}
    for row in rows:
        name = json.loads(row["region_shape_attributes"])["name"]
        if name != "point":
            shapes[row["#filename"]] = name
    return shapes


def test_command_line_prints_the_summary_without_patient_ids(cdd_set, tmp_path, capsys):
    from Training.cli import main

    out = tmp_path / "cli" / "manifest.csv"
    assert main(["import", "cdd-cesm", str(cdd_set), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "images 13, patients 4, breasts 5" in printed
    assert "image without annotation" in printed and "conflicting labels" in printed
    assert not PATIENT_TOKEN.search(printed), printed
    summary = json.loads(summary_path_for(out).read_text())
    assert summary["left_out_count"] == len(EXPECTED_LEFT_OUT)
    assert main(["import", "cdd-cesm", str(cdd_set), "--out", str(out)]) == 5  # exists
    assert main(["import", "cdd-cesm", str(cdd_set), "--out", str(out), "--overwrite"]) == 0


def test_outputs_never_replace_a_users_file(cdd_set, tmp_path, capsys) -> None:
    from Training.cli import main

    mine = tmp_path / "notes.csv"
    mine.write_text("my,own\n1,2\n")
    assert main(["import", "cdd-cesm", str(cdd_set), "--out", str(mine), "--overwrite"]) == 5
    assert mine.read_text() == "my,own\n1,2\n"
    assert "not an earlier import" in capsys.readouterr().err


def test_an_output_that_cannot_be_written_is_an_error_naming_it(
    cdd_set, tmp_path, capsys, monkeypatch
) -> None:
    """A read-only folder or a full disk is the output's problem (exit 3 naming the file),
    not an internal error."""
    from Training.cli import main

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "out.csv"))

    monkeypatch.setattr("Training.importers.command.write_import", full_disk)
    assert main(["import", "cdd-cesm", str(cdd_set), "--out", str(tmp_path / "out.csv")]) == 3
    error = capsys.readouterr().err
    assert f"error: {tmp_path / 'out.csv'}: No space left on device" in error
    assert "internal error" not in error


def test_a_folder_that_is_not_cdd_cesm_is_a_clear_error(tmp_path) -> None:
    (tmp_path / LOW).mkdir()
    with pytest.raises(ImportInputError, match="Subtracted images of CDD-CESM"):
        import_cdd_cesm(tmp_path)
    (tmp_path / SUB).mkdir()
    with pytest.raises(ImportInputError, match="Radiology manual annotations"):
        import_cdd_cesm(tmp_path)
