"""The paper's metrics, checked against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from Training.metrics import (
    auc,
    classification_metrics,
    format_mean_se,
    g_mean,
    generation_metrics,
    mcc,
    mean_and_standard_error,
)


def test_g_mean_is_sqrt_of_recall_times_specificity() -> None:
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.1, 0.1, 0.1, 0.1, 0.1])
    recall, specificity = 3 / 4, 5 / 6
    assert g_mean(labels, scores) == pytest.approx(math.sqrt(recall * specificity))


def test_mcc_matches_the_confusion_matrix_formula() -> None:
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.1, 0.1, 0.1, 0.1, 0.1])
    tp, fn, fp, tn = 3, 1, 1, 5
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert mcc(labels, scores) == pytest.approx(expected)


def test_threshold_is_inclusive() -> None:
    assert mcc(np.array([0, 1]), np.array([0.49, 0.5])) == pytest.approx(1.0)


def test_auc_is_undefined_with_one_class() -> None:
    assert math.isnan(auc(np.array([1, 1]), np.array([0.2, 0.9])))
    assert math.isnan(classification_metrics(np.array([0, 0]), np.array([0.1, 0.7]))["g_mean"])


def test_metrics_of_no_cases_are_undefined_not_an_error() -> None:
    """A setting no case reaches (Ĉ of a package without generators): NaN, as one class."""
    empty = classification_metrics(np.array([], dtype=int), np.array([], dtype=float))
    assert set(empty) == {"auc", "g_mean", "mcc"} and all(map(math.isnan, empty.values()))


def test_auc_of_a_perfect_ranking_is_one() -> None:
    assert auc(np.array([0, 0, 1]), np.array([0.1, 0.3, 0.2 + 0.6])) == 1.0


def test_generation_metrics_with_data_range_one() -> None:
    rng = np.random.default_rng(0)
    real_des = rng.random((32, 32))
    assert generation_metrics(real_des, real_des)["ssim"] == pytest.approx(1.0)
    synthetic_des = np.clip(real_des + 0.1, 0, 1)
    scores = generation_metrics(synthetic_des, real_des)
    mse = float(np.mean((synthetic_des - real_des) ** 2))
    assert scores["mse"] == pytest.approx(mse)
    assert scores["psnr"] == pytest.approx(10 * math.log10(1.0 / mse))
    assert 0 < scores["ssim"] < 1


def test_mean_and_standard_error_over_folds() -> None:
    values = [0.6, 0.7, 0.8, 0.9, 1.0]
    mean, error = mean_and_standard_error(values)
    assert mean == pytest.approx(0.8)
    assert error == pytest.approx(np.std(values, ddof=1) / math.sqrt(5))
    assert mean_and_standard_error([0.5, math.nan])[0] == 0.5
    assert format_mean_se([0.6, 0.8]) == "70.00 ± 10.00"


def test_images_of_different_sizes_are_refused_with_their_shapes() -> None:
    """A real DES on another grid than its synthetic one (or a mask of another size) is
    named with both shapes, not scikit-image's bare message or an index error."""
    from Training.metrics import masked_generation_metrics

    real = np.random.default_rng(0).random((32, 32))
    with pytest.raises(ValueError, match=r"synthetic DES \(16, 16\), real DES \(32, 32\)"):
        generation_metrics(real[:16, :16], real)
    with pytest.raises(ValueError, match=r"breast mask \(16, 16\)"):
        masked_generation_metrics(real, real, np.ones((16, 16), bool))
    with pytest.raises(ValueError, match=r"lesion mask \(8, 8\)"):
        masked_generation_metrics(real, real, np.ones((32, 32), bool), np.ones((8, 8), bool))


def test_edge_images_give_finite_or_undefined_metrics_never_an_error() -> None:
    """Identical images: PSNR capped (strict JSON has no infinity); a constant synthetic
    DES: finite values; no breast, no lesion mask, an empty lesion: NaN, never a value
    from no pixels; an all-breast mask: the whole image."""
    from Training.metrics import average_generation_metrics, masked_generation_metrics

    real = np.random.default_rng(0).random((32, 32))
    everywhere, nowhere = np.ones((32, 32), bool), np.zeros((32, 32), bool)
    same = masked_generation_metrics(real, real, everywhere, nowhere)
    assert same["psnr"] == same["breast_psnr"] == 100.0 and same["mse"] == 0.0
    assert math.isnan(same["lesion_mae"])
    constant = masked_generation_metrics(np.full((32, 32), 0.3), real, None)
    assert all(math.isfinite(constant[m]) for m in ("mse", "psnr", "ssim"))
    assert math.isnan(constant["breast_mse"]) and math.isnan(constant["lesion_mae"])
    summary = average_generation_metrics([same, constant])
    assert summary["images"] == 2 and summary["breast_images"] == 1
    assert summary["breast_psnr"] == 100.0 and summary["lesion_images"] == 0
    assert math.isnan(summary["lesion_mae"])
