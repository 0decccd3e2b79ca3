"""Cross-validation splits: patient-disjoint, stratified 80/10/10, disjoint test sets."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from Training.datasets import ManifestError, ManifestRow, patient_key
from Training.splits import load_splits, make_splits, patient_labels, save_splits
from VirtualBiopsyLib.roles import Modality, View


def _labels(n_patients: int, malignant_every: int = 3) -> dict[str, int]:
    """About two thirds malignant, like the paper's subset (83 of 115)."""
    return {patient_key(f"P{i:03d}"): int(i % malignant_every != 0) for i in range(n_patients)}


@pytest.mark.parametrize("n_patients", [20, 37, 115])
def test_no_patient_crosses_splits_in_any_fold(n_patients: int) -> None:
    labels = _labels(n_patients)
    for fold in make_splits(labels, n_folds=5, seed=1):
        assert not fold.train & fold.val
        assert not fold.train & fold.test
        assert not fold.val & fold.test
        assert fold.train | fold.val | fold.test == set(labels)


def test_test_sets_of_the_five_folds_are_pairwise_disjoint() -> None:
    folds = make_splits(_labels(60), n_folds=5, seed=3)
    assert len(folds) == 5
    for first, second in itertools.combinations(folds, 2):
        assert not first.test & second.test
        assert not first.val & second.val


def test_each_fold_is_80_10_10_and_stratified() -> None:
    labels = _labels(100)
    malignant_share = sum(labels.values()) / len(labels)
    for fold in make_splits(labels, n_folds=5, seed=0):
        assert len(fold.train) == 80 and len(fold.val) == 10 and len(fold.test) == 10
        for split in (fold.val, fold.test):
            share = sum(labels[p] for p in split) / len(split)
            assert abs(share - malignant_share) <= 0.1


def test_splits_are_repeatable_and_depend_on_the_seed() -> None:
    labels = _labels(50)
    assert make_splits(labels, seed=5) == make_splits(labels, seed=5)
    assert [f.test for f in make_splits(labels, seed=5)] != [
        f.test for f in make_splits(labels, seed=6)
    ]


def test_too_few_patients_is_a_manifest_error() -> None:
    with pytest.raises(ManifestError, match="at least 10"):
        make_splits(_labels(9), n_folds=5)


def test_patient_label_is_malignant_if_any_breast_is(tmp_path: Path) -> None:
    def row(patient: str, laterality: str, label: int) -> ManifestRow:
        return ManifestRow(
            patient,
            "1.2.3",
            laterality,
            View.CC,
            Modality.LE,
            tmp_path / "x.dcm",
            label,
            "b",
            "early",
        )

    labels = patient_labels([row("A", "L", 0), row("A", "R", 1), row("B", "L", 0)])
    assert labels == {patient_key("A"): 1, patient_key("B"): 0}


def test_saved_splits_round_trip_without_raw_patient_ids(tmp_path: Path) -> None:
    labels = {patient_key(f"SECRET-{i}"): i % 2 for i in range(20)}
    folds = make_splits(labels, seed=2)
    path = tmp_path / "splits.json"
    save_splits(folds, path)
    assert load_splits(path) == folds
    assert "SECRET" not in path.read_text()
