"""Calibration: Brier score, calibration intercept and slope (logistic recalibration).

With ``x = logit(p)`` the predicted log-odds, the calibration slope is ``b`` of the
logistic model ``logit P(y = 1) = a + b·x`` (1 when the spread of the predictions is
right; below 1 when they are too extreme), and the calibration intercept
("calibration-in-the-large") is ``a`` of ``logit P(y = 1) = a + x`` with the slope fixed
at 1 (0 when the predictions are right on average; Van Calster et al., J Clin Epidemiol
2016). scikit-learn fits the first model but not the second (an offset), and not for
2 000 bootstrap weight vectors at once, so both are fitted here by Newton's method on the
weighted log-likelihood, all weight rows together. The reliability diagram itself uses
scikit-learn's ``calibration_curve``.

>>> rng = np.random.default_rng(0)
>>> p = rng.uniform(0.05, 0.95, 20000)
>>> y = rng.uniform(size=p.size) < p
>>> intercept, slope = calibration_intercept_slope(y, p, np.ones((1, p.size)))
>>> round(float(intercept[0]), 1) + 0.0, round(float(slope[0]), 1)
(0.0, 1.0)
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, logit

PROBABILITY_CLIP = 1e-6  # probabilities of exactly 0 or 1 have infinite log-odds
NEWTON_STEPS = 50
RIDGE = 1e-9


def log_odds(probabilities: np.ndarray) -> np.ndarray:
    probabilities = np.asarray(probabilities, dtype=float)
    return logit(np.clip(probabilities, PROBABILITY_CLIP, 1 - PROBABILITY_CLIP))


def weighted_brier(labels: np.ndarray, probabilities: np.ndarray, weights: np.ndarray):
    """Brier score (mean squared error of the probability) per weight row."""
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    error = (np.asarray(probabilities, dtype=float) - np.asarray(labels, dtype=float)) ** 2
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (w * error).sum(axis=1) / total, np.nan)


def _fit_logistic(
    y: np.ndarray, design: np.ndarray, offset: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Weighted maximum-likelihood coefficients ``(rows, k)``; NaN where it does not exist.

    ``design`` is ``(n, k)``; each weight row is a separate fit. A row whose data are
    separable (or of one class) has no finite maximum: its coefficients are NaN.
    """
    rows, k = weights.shape[0], design.shape[1]
    beta = np.zeros((rows, k))
    products = (design[:, :, None] * design[:, None, :]).reshape(design.shape[0], k * k)
    active = np.arange(rows)
    for _ in range(NEWTON_STEPS):
        w = weights[active]
        mu = expit(beta[active] @ design.T + offset)
        gradient = (w * (y - mu)) @ design
        hessian = ((w * mu * (1 - mu)) @ products).reshape(-1, k, k) + RIDGE * np.eye(k)
        step = np.clip(np.linalg.solve(hessian, gradient[..., None])[..., 0], -5.0, 5.0)
        beta[active] += step
        active = active[np.any(np.abs(step) >= 1e-10, axis=1)]
        if active.size == 0:
            break
    eta = beta @ design.T + offset
    mu = expit(eta)
    gradient = (weights * (y - mu)) @ design
    total = weights.sum(axis=1, keepdims=True)
    converged = np.all(np.abs(gradient) / np.maximum(total, 1e-12) < 1e-6, axis=1)
    positives = (weights * y).sum(axis=1)
    negatives = (weights * (1 - y)).sum(axis=1)
    valid = converged & (positives > 0) & (negatives > 0) & np.all(np.abs(beta) < 50, axis=1)
    beta[~valid] = np.nan
    return beta


def calibration_intercept_slope(
    labels: np.ndarray, probabilities: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Calibration intercept (slope fixed at 1) and calibration slope per weight row."""
    y = np.asarray(labels, dtype=float)
    x = log_odds(probabilities)
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    ones = np.ones((y.size, 1))
    intercept = _fit_logistic(y, ones, x, w)[:, 0]
    slope = _fit_logistic(y, np.hstack([ones, x[:, None]]), np.zeros_like(x), w)[:, 1]
    slope[_separated(y, x, w)] = np.nan  # the likelihood has no finite maximum
    return intercept, slope


def _separated(y: np.ndarray, x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Rows whose drawn cases are (quasi-)separated by ``x``: classes do not overlap."""
    drawn = weights > 0
    positive, negative = drawn & (y == 1), drawn & (y == 0)
    lowest_positive = np.where(positive, x, np.inf).min(axis=1)
    highest_positive = np.where(positive, x, -np.inf).max(axis=1)
    lowest_negative = np.where(negative, x, np.inf).min(axis=1)
    highest_negative = np.where(negative, x, -np.inf).max(axis=1)
    return (lowest_positive >= highest_negative) | (highest_positive <= lowest_negative)


def reliability_bins(labels: np.ndarray, probabilities: np.ndarray, max_bins: int = 10):
    """``(mean predicted, observed fraction, count)`` per quantile bin (scikit-learn).

    The number of bins falls with the number of cases (about 20 cases per bin, 2 to
    ``max_bins``) so that each observed fraction rests on more than a handful of cases.
    """
    from sklearn.calibration import calibration_curve

    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, dtype=float)
    n_bins = int(np.clip(labels.size // 20, 2, max_bins))
    observed, predicted = calibration_curve(
        labels, probabilities, n_bins=n_bins, strategy="quantile"
    )
    # counts per bin by scikit-learn's own rule (percentile edges, searchsorted)
    edges = np.percentile(probabilities, np.linspace(0, 100, n_bins + 1))
    totals = np.bincount(np.searchsorted(edges[1:-1], probabilities), minlength=n_bins)
    counts = totals[totals != 0]
    return predicted, observed, counts
