"""Discrimination statistics over many weight vectors at once (point estimate = weights 1).

scikit-learn computes one ROC curve per call; a bootstrap of 2 000 resamples × five
settings × three runs would call it 30 000 times per statistic. Here a case weight matrix
``W`` of shape ``(resamples, cases)`` (see :mod:`Training.report.bootstrap`) gives every
resample's statistic in one pass over the cases sorted by score. Ties are grouped, so the
AUC is the Mann-Whitney statistic with ties counted one half, as ``roc_auc_score``; the
ROC points are those of ``roc_curve(..., drop_intermediate=False)``. The tests check both
against scikit-learn on data with the duplicates written out.

>>> labels, scores = np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])
>>> float(weighted_auc(labels, scores, np.ones((1, 4)))[0])
0.75
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

SPECIFICITIES: tuple[float, ...] = (0.90, 0.95)


def _grouped(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray):
    """Weighted positives and negatives per distinct score, highest score first."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=float)
    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    w = weights[:, order]
    positive = np.add.reduceat(w * labels[order], starts, axis=1)
    negative = np.add.reduceat(w * ~labels[order], starts, axis=1)
    return sorted_scores[starts], positive, negative


def weighted_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC per weight row; NaN where a row has no positive or no negative weight."""
    if np.asarray(scores).size == 0:
        return np.full(np.atleast_2d(weights).shape[0], np.nan)
    _, positive, negative = _grouped(labels, scores, weights)
    # negatives strictly below each group = total negatives - negatives at or above it
    negatives_above = np.cumsum(negative, axis=1)
    total_negative = negatives_above[:, -1:]
    below = total_negative - negatives_above
    pairs = positive.sum(axis=1) * total_negative[:, 0]
    concordant = (positive * (below + 0.5 * negative)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, concordant / pairs, np.nan)


def rank_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """One AUC from mid-ranks (Mann-Whitney U / (m·n)); NaN without both classes."""
    labels = np.asarray(labels).astype(bool)
    m = int(labels.sum())
    n = labels.size - m
    if m == 0 or n == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - m * (m + 1) / 2) / (m * n))


def weighted_roc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray):
    """``(fpr, tpr, thresholds)``: per weight row, the ROC points from (0, 0) to (1, 1)."""
    thresholds, positive, negative = _grouped(labels, scores, weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.cumsum(positive, axis=1) / positive.sum(axis=1, keepdims=True)
        fpr = np.cumsum(negative, axis=1) / negative.sum(axis=1, keepdims=True)
    zeros = np.zeros((tpr.shape[0], 1))
    return np.hstack([zeros, fpr]), np.hstack([zeros, tpr]), np.r_[np.inf, thresholds]


def sensitivity_at_specificity(
    labels: np.ndarray, scores: np.ndarray, weights: np.ndarray, specificity: float
) -> np.ndarray:
    """Highest sensitivity among thresholds whose specificity is at least ``specificity``."""
    fpr, tpr, _ = weighted_roc(labels, scores, weights)
    allowed = fpr <= 1.0 - specificity + 1e-12
    result = np.where(allowed, tpr, -np.inf).max(axis=1)
    return np.where(np.isfinite(result) & np.isfinite(fpr[:, -1]), result, np.nan)


def roc_band(
    labels: np.ndarray, scores: np.ndarray, weights: np.ndarray, grid: np.ndarray
) -> np.ndarray:
    """Sensitivity at each false-positive rate of ``grid`` per weight row (the ROC step)."""
    fpr, tpr, _ = weighted_roc(labels, scores, weights)
    result = np.empty((fpr.shape[0], grid.size))
    for row in range(fpr.shape[0]):
        # highest TPR among points with FPR <= grid value: fpr is non-decreasing
        index = np.searchsorted(fpr[row], grid, side="right") - 1
        result[row] = tpr[row][np.clip(index, 0, None)]
    return result


def threshold_statistics(
    labels: np.ndarray, scores: np.ndarray, weights: np.ndarray, threshold: float
) -> dict[str, np.ndarray]:
    """Sensitivity, specificity, G-mean and MCC of ``score >= threshold`` per weight row.

    A metric is NaN when a class is absent from the (resampled) labels, never 0; when every
    case is predicted one class the MCC is 0, as ``Training.metrics.mcc`` and scikit-learn
    have it (no skill), so fold means and pooled values follow one convention.
    """
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(scores, dtype=float) >= threshold
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    tp = (w * (labels & predicted)).sum(axis=1)
    fn = (w * (labels & ~predicted)).sum(axis=1)
    tn = (w * (~labels & ~predicted)).sum(axis=1)
    fp = (w * (~labels & predicted)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        specificity = np.where(tn + fp > 0, tn / (tn + fp), np.nan)
        denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        mcc = np.where(denominator > 0, (tp * tn - fp * fn) / denominator, 0.0)
        mcc = np.where((tp + fn > 0) & (tn + fp > 0), mcc, np.nan)
    return {
        "sensitivity": sensitivity,
        "specificity": specificity,
        "g_mean": np.sqrt(sensitivity * specificity),
        "mcc": mcc,
    }
