"""The report's statistics, each checked against an independent computation.

- weighted ROC statistics against scikit-learn on data with the bootstrap duplicates
  written out (so "weights" really mean "resampled patients");
- the patient-level bootstrap on distributions whose standard error is known in closed
  form, including correlated breasts of one patient;
- DeLong's placement values and covariance against their O(n²) pairwise definition, and
  the variance of a paired AUC difference against a paired bootstrap;
- the calibration intercept and slope on data drawn from a known logistic model, against
  scikit-learn's logistic regression and a root-finder for the offset model;
- Holm's adjustment against a hand computation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    brier_score_loss,
    confusion_matrix,
    matthews_corrcoef,
    roc_auc_score,
    roc_curve,
)

from Training.report.bootstrap import (
    bootstrap_p_value,
    patient_bootstrap_weights,
    patient_counts,
    percentile_interval,
)
from Training.report.calibration import (
    calibration_intercept_slope,
    reliability_bins,
    weighted_brier,
)
from Training.report.delong import (
    auc_covariance,
    auc_interval,
    delong_test,
    holm_adjust,
    structural_components,
)
from Training.report.roc import (
    rank_auc,
    roc_band,
    sensitivity_at_specificity,
    threshold_statistics,
    weighted_auc,
    weighted_roc,
)


def _data(n: int = 60, seed: int = 0, ties: bool = True):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    scores = rng.normal(labels * 0.8, 1.0)
    if ties:
        scores = np.round(scores, 1)  # many tied scores, across classes too
    return labels, scores


def _expanded(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return np.repeat(values, counts.astype(int))


# --- weighted ROC statistics == scikit-learn on the resampled data -------------------------


def test_weighted_auc_equals_sklearn_on_resampled_data() -> None:
    labels, scores = _data()
    weights = patient_counts(labels.size, 50, seed=1)  # one patient per case here
    aucs = weighted_auc(labels, scores, weights)
    for row, auc in zip(weights, aucs, strict=True):
        expected = roc_auc_score(_expanded(labels, row), _expanded(scores, row))
        assert auc == pytest.approx(expected, abs=1e-12)


def test_weighted_auc_is_nan_without_both_classes() -> None:
    labels = np.array([1, 1, 0])
    weights = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    auc = weighted_auc(labels, np.array([0.2, 0.9, 0.5]), weights)
    assert math.isnan(auc[0]) and auc[1] == pytest.approx(0.5)


def test_weighted_roc_points_equal_sklearn_roc_curve() -> None:
    labels, scores = _data()
    fpr, tpr, thresholds = weighted_roc(labels, scores, np.ones((1, labels.size)))
    expected_fpr, expected_tpr, expected_thresholds = roc_curve(
        labels, scores, drop_intermediate=False
    )
    np.testing.assert_allclose(fpr[0], expected_fpr)
    np.testing.assert_allclose(tpr[0], expected_tpr)
    np.testing.assert_allclose(thresholds[1:], expected_thresholds[1:])


def test_sensitivity_at_specificity_by_brute_force_over_thresholds() -> None:
    labels, scores = _data(n=200, seed=3)
    weights = patient_counts(labels.size, 20, seed=2)
    for specificity in (0.9, 0.95):
        got = sensitivity_at_specificity(labels, scores, weights, specificity)
        for row, value in zip(weights, got, strict=True):
            y, s = _expanded(labels, row), _expanded(scores, row)
            best = 0.0
            for t in np.r_[np.inf, np.unique(s)]:
                predicted = s >= t
                spec = np.mean(~predicted[y == 0])
                if spec >= specificity - 1e-12:
                    best = max(best, np.mean(predicted[y == 1]))
            assert value == pytest.approx(best)


def test_roc_band_rows_are_the_step_curves() -> None:
    labels, scores = _data(n=80, seed=4)
    grid = np.linspace(0, 1, 11)
    band = roc_band(labels, scores, np.ones((1, labels.size)), grid)[0]
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    for f, value in zip(grid, band, strict=True):
        assert value == pytest.approx(tpr[fpr <= f + 1e-12].max())


def test_threshold_statistics_equal_sklearn_confusion_matrix() -> None:
    labels, scores = _data(n=100, seed=5)
    probabilities = expit(scores)
    weights = patient_counts(labels.size, 30, seed=6)
    stats = threshold_statistics(labels, probabilities, weights, 0.5)
    for index, row in enumerate(weights):
        y, p = _expanded(labels, row), _expanded(probabilities, row)
        predicted = (p >= 0.5).astype(int)
        tn, fp, fn, tp = confusion_matrix(y, predicted, labels=[0, 1]).ravel()
        assert stats["sensitivity"][index] == pytest.approx(tp / (tp + fn))
        assert stats["specificity"][index] == pytest.approx(tn / (tn + fp))
        assert stats["g_mean"][index] == pytest.approx(math.sqrt(tp / (tp + fn) * tn / (tn + fp)))
        assert stats["mcc"][index] == pytest.approx(matthews_corrcoef(y, predicted))


def test_mcc_conventions_match_training_metrics() -> None:
    """One class of labels: undefined (NaN); one class of predictions: 0 (no skill)."""
    from Training.metrics import mcc

    labels, probabilities = np.array([0, 1, 1]), np.array([0.9, 0.8, 0.7])
    stats = threshold_statistics(labels, probabilities, np.ones((1, 3)), 0.5)
    assert stats["mcc"][0] == 0.0 == mcc(labels, probabilities)
    assert stats["sensitivity"][0] == 1.0 and stats["specificity"][0] == 0.0
    one_class = threshold_statistics(labels, probabilities, np.array([[0.0, 1.0, 1.0]]), 0.5)
    assert math.isnan(one_class["mcc"][0]) and math.isnan(mcc(labels[1:], probabilities[1:]))


def test_weighted_brier_equals_sklearn_on_resampled_data() -> None:
    labels, scores = _data(n=50, seed=7)
    probabilities = expit(scores)
    weights = patient_counts(labels.size, 10, seed=8)
    for row, value in zip(weights, weighted_brier(labels, probabilities, weights), strict=True):
        expected = brier_score_loss(_expanded(labels, row), _expanded(probabilities, row))
        assert value == pytest.approx(expected)


# --- the patient-level bootstrap on known distributions --------------------------------------


def test_bootstrap_resamples_whole_patients_and_is_seeded() -> None:
    patients = ["p1", "p1", "p2", "p3", "p3"]
    weights = patient_bootstrap_weights(patients, n_resamples=200, seed=3)
    assert np.array_equal(weights[:, 0], weights[:, 1])
    assert np.array_equal(weights[:, 3], weights[:, 4])
    # each resample draws exactly as many patients as there are
    assert np.all(weights[:, [0, 2, 3]].sum(axis=1) == 3)
    assert np.array_equal(weights, patient_bootstrap_weights(patients, 200, seed=3))
    assert not np.array_equal(weights, patient_bootstrap_weights(patients, 200, seed=4))


def test_bootstrap_standard_error_of_a_mean_matches_sigma_over_root_n() -> None:
    rng = np.random.default_rng(11)
    n, sigma = 400, 2.0
    values = rng.normal(5.0, sigma, n)
    counts = patient_counts(n, 4000, seed=12)
    means = counts @ values / n
    assert means.std() == pytest.approx(values.std(ddof=1) / math.sqrt(n), rel=0.06)


def test_bootstrap_of_correlated_breasts_counts_patients_not_cases() -> None:
    """Two identical breasts per patient carry one patient's information: SE = σ/√patients."""
    rng = np.random.default_rng(13)
    n_patients, sigma = 300, 1.0
    per_patient = rng.normal(0.0, sigma, n_patients)
    values = np.repeat(per_patient, 2)
    patients = [f"p{i}" for i in np.repeat(np.arange(n_patients), 2)]
    weights = patient_bootstrap_weights(patients, 4000, seed=14)
    means = weights @ values / weights.sum(axis=1)
    expected = per_patient.std(ddof=1) / math.sqrt(n_patients)
    assert means.std() == pytest.approx(expected, rel=0.06)
    # a case-level bootstrap would have claimed 1/√2 of it
    assert means.std() > 1.3 * expected / math.sqrt(2)


def test_percentile_interval_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(15)
    covered, trials = 0, 300
    for trial in range(trials):
        values = rng.exponential(1.0, 80)  # skewed; true mean 1
        means = patient_counts(values.size, 500, seed=trial) @ values / values.size
        low, high = percentile_interval(means)
        covered += low <= 1.0 <= high
    # percentile intervals under-cover slightly for skewed data at n = 80
    assert 0.88 <= covered / trials <= 0.99


def test_percentile_interval_and_p_value_of_known_resamples() -> None:
    assert percentile_interval(np.arange(101.0)) == pytest.approx((2.5, 97.5))
    assert all(math.isnan(v) for v in percentile_interval(np.array([np.nan] * 10 + [1.0])))
    assert bootstrap_p_value(np.array([1.0, 2.0, 3.0, -1.0])) == pytest.approx(0.5)
    assert bootstrap_p_value(np.ones(100)) == 0.0


# --- DeLong against its definition and against the bootstrap ---------------------------------


def _pairwise_components(labels: np.ndarray, scores: np.ndarray):
    positive, negative = scores[labels == 1], scores[labels == 0]
    psi = (positive[:, None] > negative[None, :]) + 0.5 * (positive[:, None] == negative[None, :])
    return psi.mean(), psi.mean(axis=1), psi.mean(axis=0)


def test_structural_components_equal_the_pairwise_definition() -> None:
    labels, scores = _data(n=70, seed=21)
    auc, v10, v01 = structural_components(labels, scores)
    expected_auc, expected_v10, expected_v01 = _pairwise_components(labels, scores)
    assert auc == pytest.approx(expected_auc) == pytest.approx(roc_auc_score(labels, scores))
    np.testing.assert_allclose(v10, expected_v10)
    np.testing.assert_allclose(v01, expected_v01)


def test_delong_covariance_equals_the_1988_formula_computed_pairwise() -> None:
    labels, a = _data(n=90, seed=22)
    rng = np.random.default_rng(23)
    b = np.round(a + rng.normal(0, 0.8, a.size), 1)  # correlated with a
    _, covariance = auc_covariance(labels, a, b)
    _, v10a, v01a = _pairwise_components(labels, a)
    _, v10b, v01b = _pairwise_components(labels, b)
    m, n = v10a.size, v01a.size

    def s(x, y):
        return float(np.sum((x - x.mean()) * (y - y.mean())) / (x.size - 1))

    expected = np.array(
        [
            [s(v10a, v10a) / m + s(v01a, v01a) / n, s(v10a, v10b) / m + s(v01a, v01b) / n],
            [s(v10b, v10a) / m + s(v01b, v01a) / n, s(v10b, v10b) / m + s(v01b, v01b) / n],
        ]
    )
    np.testing.assert_allclose(covariance, expected)


def test_delong_standard_error_of_a_paired_difference_matches_a_paired_bootstrap() -> None:
    rng = np.random.default_rng(24)
    n = 400
    labels = rng.integers(0, 2, n)
    shared = rng.normal(labels * 1.0, 1.0)
    a = shared + rng.normal(0, 0.5, n)
    b = shared + rng.normal(labels * 0.3, 0.7, n)
    result = delong_test(labels, a, b)
    weights = patient_counts(n, 3000, seed=25)
    differences = weighted_auc(labels, a, weights) - weighted_auc(labels, b, weights)
    assert result.standard_error == pytest.approx(differences.std(), rel=0.12)
    assert result.difference == pytest.approx(roc_auc_score(labels, a) - roc_auc_score(labels, b))
    assert result.p_value == pytest.approx(2 * (1 - _phi(abs(result.z))))


def test_delong_interval_of_one_auc_has_the_bootstrap_width_and_stays_in_0_1() -> None:
    rng = np.random.default_rng(28)
    n = 400
    labels = rng.integers(0, 2, n)
    scores = rng.normal(labels * 1.0, 1.0)
    auc, low, high = auc_interval(labels, scores)
    bootstrap = weighted_auc(labels, scores, patient_counts(n, 3000, seed=29))
    assert auc == pytest.approx(roc_auc_score(labels, scores))
    assert low < auc < high and high - auc == pytest.approx(auc - low)
    assert (high - low) / (2 * 1.959964) == pytest.approx(bootstrap.std(), rel=0.12)
    assert all(map(math.isnan, auc_interval(labels, labels + 0.0)[1:]))  # perfect: undefined
    assert auc_interval(labels, rng.normal(labels * 4.0, 1.0))[2] <= 1.0


def _phi(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def test_delong_of_one_score_against_itself_is_no_difference() -> None:
    labels, scores = _data(n=40, seed=26)
    result = delong_test(labels, scores, scores)
    assert result.difference == 0.0 and result.p_value == 1.0


def test_delong_without_variance_is_undefined_not_significant() -> None:
    """Four cases, a perfect reader against a constant one: every pair is ranked alike,
    the estimated variance is 0, and no test exists (not p = 0, not a 100–100 interval)."""
    labels = np.array([0, 0, 1, 1])
    perfect, constant = np.array([0.1, 0.2, 0.8, 0.9]), np.full(4, 0.5)
    result = delong_test(labels, perfect, constant)
    assert result.difference == 0.5
    assert all(math.isnan(v) for v in (result.z, result.p_value, result.ci_low, result.ci_high))
    auc, low, high = auc_interval(labels, perfect)
    assert auc == 1.0 and math.isnan(low) and math.isnan(high)


def test_delong_interval_of_a_difference_stays_in_minus_1_to_1() -> None:
    """On a dozen cases the normal interval of an AUC difference can reach past ±1 (a
    phantom check printed -98.8 to +148.8 %); it is clipped as an AUC's is to [0, 1]."""
    rng = np.random.default_rng(3)
    past = 0
    for _ in range(300):
        labels = np.array([0] * 5 + [1] * 6)
        a, b = rng.random(11) + 0.8 * labels, rng.random(11) - 0.8 * labels
        result = delong_test(labels, a, b)
        if math.isnan(result.ci_low):
            continue
        unclipped = 1.96 * result.standard_error
        past += result.difference + unclipped > 1.0 or result.difference - unclipped < -1.0
        assert -1.0 <= result.ci_low <= result.difference <= result.ci_high <= 1.0
    assert past > 0  # the draws do reach past the range, so the clip is exercised


def test_delong_rejects_a_large_true_difference_and_not_a_null_one() -> None:
    rng = np.random.default_rng(27)
    n = 300
    labels = rng.integers(0, 2, n)
    good = rng.normal(labels * 2.0, 1.0)
    noise = rng.normal(0.0, 1.0, n)
    assert delong_test(labels, good, noise).p_value < 1e-6
    null_p = [
        delong_test(labels, rng.normal(labels, 1.0), rng.normal(labels, 1.0)).p_value
        for _ in range(200)
    ]
    assert 0.02 <= np.mean(np.array(null_p) < 0.05) <= 0.10  # nominal 5 %


def test_holm_adjustment_by_hand() -> None:
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, max(0.04·1, 0.06) = 0.06
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = holm_adjust([0.5, math.nan])
    assert adjusted[0] == 0.5 and math.isnan(adjusted[1])


# --- calibration against a known logistic model ----------------------------------------------


@pytest.mark.parametrize(("intercept", "slope"), [(-0.5, 0.6), (0.4, 1.5), (0.0, 1.0)])
def test_calibration_slope_and_intercept_recover_a_known_logistic_model(
    intercept: float, slope: float
) -> None:
    rng = np.random.default_rng(31)
    n = 40_000
    predicted = rng.uniform(0.02, 0.98, n)
    truth = expit(intercept + slope * logit(predicted))
    labels = (rng.uniform(size=n) < truth).astype(int)
    fitted_intercept, fitted_slope = calibration_intercept_slope(labels, predicted, np.ones((1, n)))
    assert fitted_slope[0] == pytest.approx(slope, abs=0.05)
    if slope == 1.0:
        assert fitted_intercept[0] == pytest.approx(intercept, abs=0.05)


def test_calibration_fits_equal_sklearn_and_a_root_finder_with_weights() -> None:
    rng = np.random.default_rng(32)
    n = 300
    predicted = rng.uniform(0.05, 0.95, n)
    labels = (rng.uniform(size=n) < expit(0.3 + 0.7 * logit(predicted))).astype(int)
    weights = patient_counts(n, 5, seed=33)
    intercepts, slopes = calibration_intercept_slope(labels, predicted, weights)
    x = logit(predicted)
    for row, a, b in zip(weights, intercepts, slopes, strict=True):
        model = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000)
        model.fit(x[:, None], labels, sample_weight=row)
        assert b == pytest.approx(model.coef_[0, 0], abs=1e-4)

        def score(alpha: float, row=row) -> float:
            return float(np.sum(row * (labels - expit(alpha + x))))

        assert a == pytest.approx(brentq(score, -10, 10, xtol=1e-12), abs=1e-6)


def test_calibration_is_undefined_for_separable_or_one_class_data() -> None:
    intercept, slope = calibration_intercept_slope(
        np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9]), np.ones((1, 4))
    )
    assert math.isnan(slope[0])
    intercept, slope = calibration_intercept_slope(
        np.array([1, 1, 1]), np.array([0.1, 0.2, 0.8]), np.ones((1, 3))
    )
    assert math.isnan(intercept[0]) and math.isnan(slope[0])


def test_reliability_bins_follow_sklearn_and_count_every_case() -> None:
    labels, scores = _data(n=200, seed=34, ties=False)
    probabilities = expit(scores)
    predicted, observed, counts = reliability_bins(labels, probabilities)
    assert predicted.size == observed.size == counts.size == 10
    assert counts.sum() == 200
    # the observed fraction of the bins, recomputed from the counts
    order = np.argsort(probabilities, kind="mergesort")
    edges = np.cumsum(counts)[:-1]
    fractions = [chunk.mean() for chunk in np.split(labels[order], edges)]
    np.testing.assert_allclose(observed, fractions)


def test_rank_auc_equals_sklearn() -> None:
    labels, scores = _data(n=120, seed=41)
    assert rank_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    assert math.isnan(rank_auc(np.ones(3), np.array([0.1, 0.2, 0.3])))
