"""The evaluation fixes of the method issue: one population for every setting, a fixed
robustness population from 0 %, undefined metrics undefined everywhere, density rows with
n, runs keyed by name, a protocol where every patient is tested once, and a learning-rate
schedule that cannot stall."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from Training.classifier_training import ImageSet, train_classifier
from Training.config import ClassifierConfig, RunConfig, SplitConfig
from Training.evaluation import (
    MIN_SUBSET_CASES,
    Prediction,
    case_inputs,
    density_metrics,
    fold_test_cases,
    fold_weights,
    per_fold_metrics,
    pooled_test_scores,
    robustness_sweep,
    setting_scores,
    write_predictions,
)
from Training.experiments import write_experiments
from Training.metrics import classification_metrics, mcc
from Training.splits import make_splits

SLOT_BIAS = {"LE_CC": 0.05, "LE_MLO": 0.05, "DES_CC": 0.4, "DES_MLO": 0.4}


def _rows(fold, split, case, label, density, real, synthetic=None):
    rows = [
        Prediction(fold, split, case, f"pt-{case}", label, density, s, "real", p)
        for s, p in real.items()
    ]
    rows += [
        Prediction(fold, split, case, f"pt-{case}", label, density, s, "synthetic", p)
        for s, p in (synthetic or {}).items()
    ]
    return rows


def _predictions(with_le_only_cases: bool = True, seed: int = 0) -> list[Prediction]:
    """Two folds; informative real DES, weaker synthetic DES; some cases without DES."""
    rng = np.random.default_rng(seed)
    rows = []
    for fold in (0, 1):
        for split, n in (("val", 10), ("test", 16)):
            for index in range(n):
                label = index % 2
                case = f"{fold}-{split}-{index}"
                real = {
                    s: float(np.clip(0.3 + b * label + rng.normal(0, 0.15), 0, 1))
                    for s, b in SLOT_BIAS.items()
                }
                fake = {
                    s: float(np.clip(0.4 + 0.2 * label + rng.normal(0, 0.15), 0, 1))
                    for s in ("DES_CC", "DES_MLO")
                }
                if with_le_only_cases and index % 4 == 3:  # never had CESM: LE only
                    real = {s: p for s, p in real.items() if s.startswith("LE_")}
                rows += _rows(fold, split, case, label, "abcd"[index % 4], real, fake)
    return rows


def test_every_setting_is_scored_on_the_same_cases() -> None:
    predictions = _predictions()
    weights = fold_weights(predictions, 0, 0.5)
    cases = fold_test_cases(predictions, 0)
    keys = {
        setting: setting_scores(cases, setting, weights)[2]
        for setting in ("F", "C", "Ĉ", "F+C", "F+Ĉ")
    }
    assert all(sorted(k) == sorted(keys["C"]) for k in keys.values())
    assert len(keys["C"]) == 12  # the 4 LE-only test cases are left out of every setting
    everything = case_inputs(p for p in predictions if p.fold == 0 and p.split == "test")
    assert len(everything) == 16


def test_a_fold_without_synthetic_des_scores_no_setting_in_a_run_with_synthesis() -> None:
    """Generators in fold 0 only (the demo recipe): fold 1 has no Ĉ, so it must not give C,
    F or F+C either, or the columns would count different folds and cases."""
    predictions = [p for p in _predictions() if not (p.fold == 1 and p.source == "synthetic")]
    per_fold = per_fold_metrics(predictions)
    assert {setting: len(folds) for setting, folds in per_fold.items()} == dict.fromkeys(
        per_fold, 1
    )
    counts = {s: pooled_test_scores(predictions, s)[0].size for s in per_fold}
    assert set(counts.values()) == {12}  # fold 0's 12 test cases with real DES, every setting
    rows = robustness_sweep(predictions, repetitions=2, seed=0, percents=(0, 100))
    c_star = {
        r["percent"]: r["mean"] for r in rows if r["setting"] == "C*" and r["metric"] == "auc"
    }
    assert c_star[0] == pytest.approx(per_fold["C"][0]["auc"])
    assert c_star[100] == pytest.approx(per_fold["Ĉ"][0]["auc"])


def test_without_synthesis_every_real_setting_stays_and_the_sweep_is_its_zero() -> None:
    real_only = [p for p in _predictions() if p.source == "real"]
    per_fold = per_fold_metrics(real_only)
    assert len(per_fold["C"]) == len(per_fold["F"]) == 2 and per_fold["Ĉ"] == []
    rows = robustness_sweep(real_only, repetitions=2, seed=0)
    assert {r["percent"] for r in rows} == {0}


def test_metrics_json_is_strict_json_with_undefined_metrics_as_null(tmp_path: Path) -> None:
    """Ĉ of a run without synthesis is undefined: null, not a bare NaN a parser rejects."""
    from Training.run import _write_summary

    real_only = [p for p in _predictions() if p.source == "real"]
    _write_summary(tmp_path, RunConfig(), True, real_only)
    refuse = lambda name: pytest.fail(f"{name} in metrics.json")  # noqa: E731
    metrics = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=refuse)
    assert metrics["summary"]["Ĉ"]["auc"] == [None, None]
    assert metrics["pooled_test_auc"]["Ĉ"] is None and metrics["pooled_test_cases"]["Ĉ"] == 0
    assert metrics["protocol"] == RunConfig().splits.protocol


def test_robustness_starts_at_zero_on_a_fixed_population_with_real_des() -> None:
    predictions = _predictions()
    rows = robustness_sweep(predictions, repetitions=3, seed=0, percents=(0, 50, 100))
    auc = {(r["percent"], r["setting"]): r["mean"] for r in rows if r["metric"] == "auc"}
    per_fold_c = per_fold_metrics(predictions)["C"]
    assert auc[(0, "C*")] == pytest.approx(np.mean([m["auc"] for m in per_fold_c]))
    assert auc[(0, "F")] == auc[(50, "F")] == auc[(100, "F")]  # same patients at every n
    per_fold_chat = per_fold_metrics(predictions)["Ĉ"]
    assert auc[(100, "C*")] == pytest.approx(np.mean([m["auc"] for m in per_fold_chat]))


def test_mcc_is_undefined_where_auc_is() -> None:
    one_class = np.array([1, 1, 1])
    scores = classification_metrics(one_class, np.array([0.2, 0.7, 0.9]))
    assert math.isnan(scores["auc"]) and math.isnan(scores["mcc"])
    assert mcc(np.array([0, 1, 1]), np.array([0.9, 0.9, 0.9])) == 0.0  # defined, no skill


def test_density_rows_say_n_and_skip_subsets_of_one_or_two_cases() -> None:
    predictions = _predictions(with_le_only_cases=False)
    # fold 1 keeps one test case of density "d": too few for a metric in that fold
    predictions = [
        p
        for p in predictions
        if not (p.fold == 1 and p.split == "test" and p.acr_density == "d" and p.case != "1-test-3")
    ]
    table = density_metrics(predictions)
    assert table["d"]["F"]["n"][0] == 4 + 1
    assert table["d"]["F"]["folds"][0] == 1  # only fold 0 had ≥ MIN_SUBSET_CASES cases
    assert table["a"]["F"]["folds"][0] == 2
    assert MIN_SUBSET_CASES == 3


def test_cases_without_a_density_have_a_row_of_their_own() -> None:
    """A manifest that leaves ACR density blank for some patients: they are counted under
    "unknown", not dropped from Table 4 without a word."""
    predictions = [
        replace(p, acr_density="") if p.acr_density == "b" else p
        for p in _predictions(with_le_only_cases=False)
    ]
    table = density_metrics(predictions)
    assert sorted(table) == ["a", "c", "d", "unknown"]
    assert table["unknown"]["F"]["n"][0] == 8  # the 4 "b" test cases of each fold


def test_every_patient_protocol_tests_each_patient_exactly_once() -> None:
    labels = {f"p{i:03d}": int(i % 3 != 0) for i in range(60)}
    folds = make_splits(labels, n_folds=5, seed=1, protocol="every-patient")
    tests = [fold.test for fold in folds]
    assert set().union(*tests) == set(labels)
    assert all(not (a & b) for a, b in itertools.combinations(tests, 2))
    for fold in folds:
        assert not (fold.train & fold.val or fold.train & fold.test or fold.val & fold.test)
        assert fold.train | fold.val | fold.test == set(labels)
        malignant = sum(labels[p] for p in fold.test) / len(fold.test)
        assert 0.5 < malignant < 0.85  # stratified around the cohort's 2/3
    paper = make_splits(labels, n_folds=5, seed=1, protocol="paper")
    assert len(set().union(*[f.test for f in paper])) == 30  # half the patients untested


def test_two_runs_of_one_architecture_stay_two_rows(tmp_path: Path) -> None:
    predictions = _predictions()
    for name, seed in (("resnet18-seed0", 0), ("resnet18-seed1", 1)):
        run = tmp_path / name
        run.mkdir()
        config = RunConfig(splits=SplitConfig(protocol="every-patient"))
        config.save(run / "config.json")
        (run / "run.json").write_text(json.dumps({"synthetic_data": True}))
        write_predictions(_predictions(seed=seed) if seed else predictions, run / "predictions.csv")
    write_experiments(
        [tmp_path / "resnet18-seed0", tmp_path / "resnet18-seed1"],
        tmp_path / "tables",
        repetitions=1,
    )
    settings = (tmp_path / "tables" / "settings.md").read_text()
    assert "| resnet18-seed0 | resnet18 | C |" in settings
    assert "| resnet18-seed1 | resnet18 | C |" in settings


def test_learning_rate_stops_at_its_floor_and_the_schedule_sees_a_smoothed_loss() -> None:
    torch.manual_seed(0)
    images = torch.rand(16, 1, 32, 32)
    labels = torch.randint(0, 2, (16,))  # noise: the validation loss never improves for long
    config = ClassifierConfig(
        architecture="demo",
        max_epochs=12,
        lr_patience=0,
        min_learning_rate=1e-4,
        val_loss_smoothing=0.6,
        warmup_epochs=12,
        early_stopping_patience=12,
    )
    result = train_classifier(
        ImageSet(images, labels), ImageSet(images[:6], labels[:6]), config, None, progress=False
    )
    assert min(r["lr"] for r in result.history) == pytest.approx(1e-4)
    raw = [r["val_loss"] for r in result.history]
    smoothed = [r["smoothed_val_loss"] for r in result.history]
    expected = [raw[0]]
    for value in raw[1:]:
        expected.append(0.6 * expected[-1] + 0.4 * value)
    assert smoothed == pytest.approx(expected)
    assert result.best_val_loss == pytest.approx(min(smoothed))
