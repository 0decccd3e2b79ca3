"""Fused settings F, C, Ĉ, F+C, F+Ĉ and the robustness sweep, on hand-made predictions."""

from __future__ import annotations

import re

import numpy as np
import pytest

from Training.evaluation import (
    Prediction,
    case_inputs,
    density_metrics,
    fold_weights,
    fused_probability,
    per_fold_metrics,
    pooled_test_auc,
    read_predictions,
    robustness_sweep,
    select,
    write_predictions,
)
from VirtualBiopsyLib.fusion import fuse_case, fuse_views


def _case_rows(
    fold: int,
    split: str,
    case: str,
    label: int,
    density: str,
    real: dict[str, float],
    synthetic: dict[str, float],
) -> list[Prediction]:
    rows = [
        Prediction(fold, split, case, f"pt-{case}", label, density, slot, "real", p)
        for slot, p in real.items()
    ]
    rows += [
        Prediction(fold, split, case, f"pt-{case}", label, density, slot, "synthetic", p)
        for slot, p in synthetic.items()
    ]
    return rows


def _fold(fold: int, rng: np.random.Generator) -> list[Prediction]:
    """Val and test cases whose DES is informative, LE weakly so, synthetic DES in between."""
    rows = []
    for split, n in (("val", 8), ("test", 10)):
        for index in range(n):
            label = index % 2
            noise = rng.normal(0, 0.15, size=6)
            real = {
                "LE_CC": float(np.clip(0.5 + 0.05 * label + noise[0], 0, 1)),
                "LE_MLO": float(np.clip(0.5 + 0.05 * label + noise[1], 0, 1)),
                "DES_CC": float(np.clip(0.3 + 0.4 * label + noise[2], 0, 1)),
                "DES_MLO": float(np.clip(0.3 + 0.4 * label + noise[3], 0, 1)),
            }
            synthetic = {
                "DES_CC": float(np.clip(0.4 + 0.2 * label + noise[4], 0, 1)),
                "DES_MLO": float(np.clip(0.4 + 0.2 * label + noise[5], 0, 1)),
            }
            rows += _case_rows(
                fold, split, f"f{fold}{split}{index}", label, "abcd"[index % 4], real, synthetic
            )
    return rows


@pytest.fixture
def predictions() -> list[Prediction]:
    rng = np.random.default_rng(0)
    return [row for fold in range(3) for row in _fold(fold, rng)]


def test_settings_fuse_like_the_papers_equations(predictions: list[Prediction]) -> None:
    weights = fold_weights(predictions, 0, 0.5)
    case = case_inputs(select(predictions, 0, "test"))["f0test1"]
    des_real = {k: v for k, v in case.real.items() if k.startswith("DES")}
    expected_f_c = fuse_case(case.real, weights.slot_mcc, weights.modality_mcc).probability
    expected_f_chat = fuse_case(
        {"LE_CC": case.real["LE_CC"], "LE_MLO": case.real["LE_MLO"], **case.synthetic},
        weights.slot_mcc,
        weights.modality_mcc,
    ).probability
    expected_c = fuse_views(
        {"CC": des_real["DES_CC"], "MLO": des_real["DES_MLO"]},
        {"CC": weights.slot_mcc["DES_CC"], "MLO": weights.slot_mcc["DES_MLO"]},
    ).probability
    args = (weights.slot_mcc, weights.modality_mcc)
    assert fused_probability(case, "F+C", *args) == pytest.approx(expected_f_c)
    assert fused_probability(case, "F+Ĉ", *args) == pytest.approx(expected_f_chat)
    assert fused_probability(case, "C", *args) == pytest.approx(expected_c)
    assert expected_f_c != pytest.approx(expected_f_chat)


def test_informative_des_beats_weak_le(predictions: list[Prediction]) -> None:
    per_fold = per_fold_metrics(predictions)
    mean_auc = {s: np.mean([f["auc"] for f in folds]) for s, folds in per_fold.items()}
    assert len(per_fold["F"]) == 3
    assert mean_auc["C"] > mean_auc["Ĉ"] > mean_auc["F"]


def test_robustness_end_points_match_the_real_and_synthetic_settings(
    predictions: list[Prediction],
) -> None:
    rows = robustness_sweep(predictions, repetitions=2, seed=0, percents=(0, 100))
    auc = {(r["percent"], r["setting"]): r["mean"] for r in rows if r["metric"] == "auc"}
    per_fold = per_fold_metrics(predictions)
    fold_mean = {s: np.mean([f["auc"] for f in folds]) for s, folds in per_fold.items()}
    assert auc[(0, "C*")] == pytest.approx(fold_mean["C"])
    assert auc[(100, "C*")] == pytest.approx(fold_mean["Ĉ"])
    assert auc[(100, "F+C*")] == pytest.approx(fold_mean["F+Ĉ"])
    assert auc[(0, "F")] == auc[(100, "F")] == pytest.approx(fold_mean["F"])


def test_density_table_has_every_category(predictions: list[Prediction]) -> None:
    table = density_metrics(predictions)
    assert sorted(table) == ["a", "b", "c", "d"]
    assert set(table["a"]) == {"F", "F+C", "F+Ĉ"}


def test_predictions_round_trip_through_csv(predictions: list[Prediction], tmp_path) -> None:
    path = tmp_path / "predictions.csv"
    write_predictions(predictions, path)
    assert read_predictions(path) == predictions


def test_pooled_auc_of_a_setting_without_predictions_is_nan(
    predictions: list[Prediction],
) -> None:
    """A run without generators has no synthetic DES: Ĉ is NaN, not a crash."""
    real_only = [p for p in predictions if p.source == "real"]
    assert np.isnan(pooled_test_auc(real_only, "Ĉ"))
    assert 0.5 < pooled_test_auc(real_only, "C") <= 1.0


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        ("probability", "nan", "probability nan of LE_CC is not a number in [0, 1]"),
        ("probability", "1.5", "probability 1.5 of LE_CC is not a number in [0, 1]"),
        ("label", "2", "label 2 is neither 0 (benign) nor 1 (malignant)"),
        ("source", "fake", "source 'fake' is neither 'real' nor 'synthetic'"),
        ("probability", "high", "unreadable row"),
    ],
)
def test_a_prediction_that_cannot_be_scored_is_refused_naming_file_and_line(
    predictions: list[Prediction], tmp_path, column: str, value: str, problem: str
) -> None:
    """A diverged classifier writes NaN: refused when read, naming the file and line, not a
    fusion error without a file (``experiments``) or a case silently left out of one
    setting (the report)."""
    from Training.evaluation import PredictionsFileError

    path = tmp_path / "predictions.csv"
    write_predictions(predictions, path)
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    row = lines[3].split(",")
    row[header.index("slot")] = "LE_CC"
    row[header.index(column)] = value
    lines[3] = ",".join(row)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        PredictionsFileError, match=rf"predictions.csv: line 4: .*{re.escape(problem)}"
    ):
        read_predictions(path)
    path.write_bytes(b"fold,split\n\xff\xfe,\x00\n")  # neither UTF-8 nor CSV: named, not a crash
    with pytest.raises(PredictionsFileError, match="predictions.csv: not a CSV text file"):
        read_predictions(path)
