"""The one training-manifest format: written by the phantom and the importers, read by Training."""

from __future__ import annotations

from pathlib import Path

import pytest

from Training.datasets import group_cases, image_pairs
from VirtualBiopsyLib.roles import Modality, View
from VirtualBiopsyLib.training_manifest import (
    LESION_MASK_COLUMN,
    TRAINING_MANIFEST_COLUMNS,
    BiopsyLabel,
    TrainingManifestError,
    TrainingManifestRow,
    is_training_manifest,
    read_training_manifest,
    write_training_manifest,
)


def _row(folder: Path, patient: str, slot: str, label: BiopsyLabel, **extra) -> TrainingManifestRow:
    modality, view = slot.split("_")
    values = dict(
        patient_id=patient, study_uid="1.2", laterality="L", view=View(view),
        modality=Modality(modality), path=folder / "images" / f"{patient}_{slot}.dcm",
        label=label, acr_density="b", phase="early",
    )  # fmt: skip
    values.update(extra)
    return TrainingManifestRow(**values)


def test_round_trip_with_paths_relative_to_the_manifest(tmp_path) -> None:
    rows = [
        _row(tmp_path, "P1", "LE_CC", BiopsyLabel.MALIGNANT, synthetic=True),
        _row(tmp_path, "P1", "DES_CC", BiopsyLabel.MALIGNANT, synthetic=True),
        _row(tmp_path, "P2", "LE_CC", BiopsyLabel.NORMAL, acr_density=""),
    ]
    manifest = write_training_manifest(tmp_path / "elsewhere" / "manifest.csv", rows)
    text = manifest.read_text().splitlines()
    assert tuple(text[0].split(",")) == TRAINING_MANIFEST_COLUMNS
    assert text[1].split(",")[5] == "../images/P1_LE_CC.dcm"
    read = read_training_manifest(manifest)
    assert [r.path for r in read.rows] == [r.path.resolve() for r in rows]
    assert [r.label for r in read.rows] == [r.label for r in rows]
    assert read.synthetic and is_training_manifest(manifest)


def test_lesion_masks_round_trip_and_the_column_appears_only_with_one(tmp_path) -> None:
    masked = _row(
        tmp_path, "P1", "DES_CC", BiopsyLabel.MALIGNANT, lesion_mask=tmp_path / "masks" / "a.png"
    )
    plain = [_row(tmp_path, "P1", "LE_CC", BiopsyLabel.MALIGNANT)]
    without = write_training_manifest(tmp_path / "plain.csv", plain)
    assert LESION_MASK_COLUMN not in without.read_text()  # old manifests keep their bytes
    manifest = write_training_manifest(tmp_path / "sub" / "manifest.csv", [*plain, masked])
    lines = manifest.read_text().splitlines()
    assert tuple(lines[0].split(",")) == (*TRAINING_MANIFEST_COLUMNS, LESION_MASK_COLUMN)
    assert lines[1].endswith(",false,") and lines[2].endswith(",../masks/a.png")
    read = read_training_manifest(manifest)
    assert [row.lesion_mask for row in read.rows] == [None, (tmp_path / "masks" / "a.png")]
    assert read_training_manifest(without).rows[0].lesion_mask is None


def test_normal_breasts_feed_the_generators_not_the_classifiers(tmp_path) -> None:
    rows = [_row(tmp_path, "P1", slot, BiopsyLabel.NORMAL) for slot in ("LE_CC", "DES_CC")] + [
        _row(tmp_path, "P2", slot, BiopsyLabel.BENIGN) for slot in ("LE_CC", "DES_CC")
    ]
    assert [case.patient_id for case in group_cases(rows)] == ["P2"]
    assert {pair.patient_id for pair in image_pairs(rows, View.CC)} == {"P1", "P2"}
    assert max(BiopsyLabel.NORMAL, BiopsyLabel.BENIGN) is BiopsyLabel.BENIGN


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [("phase", "middle", "phase must be early or late"),
     ("acr_density", "5", "acr_density must be a–d"),
     ("laterality", "X", "laterality must be L or R"),
     ("label", "maybe", "label must be malignant, benign or normal")],
)  # fmt: skip
def test_bad_values_name_the_file_and_line(tmp_path, column, value, message) -> None:
    manifest = write_training_manifest(
        tmp_path / "m.csv", [_row(tmp_path, "P1", "LE_CC", BiopsyLabel.BENIGN)] * 2
    )
    header, first, second = manifest.read_text().splitlines()
    cells = second.split(",")
    cells[TRAINING_MANIFEST_COLUMNS.index(column)] = value
    manifest.write_text("\n".join([header, first, ",".join(cells)]) + "\n")
    with pytest.raises(TrainingManifestError, match=rf"m\.csv: line 3: {message}"):
        read_training_manifest(manifest)


def test_a_users_csv_is_not_a_training_manifest(tmp_path) -> None:
    other = tmp_path / "clinical.csv"
    other.write_text("patient,label\nA,benign\n")
    assert not is_training_manifest(other)
    assert not is_training_manifest(tmp_path / "missing.csv")
