"""DeLong's test for two correlated AUCs (DeLong, DeLong & Clarke-Pearson, Biometrics 1988).

Two settings scored on the same cases give two AUCs whose difference has the variance
``var(A) + var(B) - 2 cov(A, B)``, estimated from the structural components (placement
values) of each case: for a malignant case ``V10 = P(score > a benign score)`` and for a
benign case ``V01 = P(a malignant score > score)``, ties counting one half. The
components come from mid-ranks (Sun & Xu, IEEE Signal Process. Lett. 2014), which is
O(n log n); the tests check them against the O(n²) pairwise definition. SciPy and
scikit-learn have no paired AUC test.

Cases are taken as independent; two breasts of one patient are not quite, which the
report's patient-level bootstrap interval of the same difference accounts for.

>>> labels = np.array([0, 0, 0, 1, 1, 1])
>>> a = np.array([0.1, 0.2, 0.6, 0.5, 0.8, 0.9])
>>> result = delong_test(labels, a, a)
>>> result.auc_a, result.difference
(0.8888888888888888, 0.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, rankdata

_NO_VARIANCE = 1e-15  # a standard error at or below this is none


@dataclass(frozen=True)
class DeLongResult:
    """AUCs of A and B, their difference A − B with its standard error, z, p, 95 % CI."""

    auc_a: float
    auc_b: float
    difference: float
    standard_error: float
    z: float
    p_value: float
    ci_low: float
    ci_high: float


def structural_components(labels: np.ndarray, scores: np.ndarray):
    """``(auc, v10, v01)``: the AUC and the placement value of each positive / negative."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=float)
    positive, negative = scores[labels], scores[~labels]
    m, n = positive.size, negative.size
    if m == 0 or n == 0:
        raise ValueError("DeLong's test needs malignant and benign cases")
    ranks_all = rankdata(np.r_[positive, negative])  # mid-ranks handle ties
    ranks_positive = rankdata(positive)
    ranks_negative = rankdata(negative)
    v10 = (ranks_all[:m] - ranks_positive) / n
    v01 = 1.0 - (ranks_all[m:] - ranks_negative) / m
    return float(v10.mean()), v10, v01


def auc_covariance(labels: np.ndarray, *score_sets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their DeLong covariance matrix for several scores of the same cases."""
    aucs, v10s, v01s = [], [], []
    for scores in score_sets:
        auc, v10, v01 = structural_components(labels, scores)
        aucs.append(auc)
        v10s.append(v10)
        v01s.append(v01)
    m, n = v10s[0].size, v01s[0].size
    s10 = np.atleast_2d(np.cov(np.vstack(v10s))) if m > 1 else np.zeros((len(aucs),) * 2)
    s01 = np.atleast_2d(np.cov(np.vstack(v01s))) if n > 1 else np.zeros((len(aucs),) * 2)
    return np.array(aucs), s10 / m + s01 / n


def auc_interval(
    labels: np.ndarray, scores: np.ndarray, confidence: float = 0.95
) -> tuple[float, float, float]:
    """``(auc, low, high)``: one AUC and its DeLong (normal) interval, clipped to [0, 1].

    Where the estimated variance is 0 (an AUC of 0 or 1: every pair ranked alike) the
    normal interval is undefined: NaN, not an interval of width 0 that three cases
    would seem to give.
    """
    aucs, covariance = auc_covariance(labels, scores)
    error = math.sqrt(max(float(covariance[0, 0]), 0.0))
    quantile = float(norm.ppf(0.5 + confidence / 2.0))
    auc = float(aucs[0])
    if error <= _NO_VARIANCE:
        return auc, math.nan, math.nan
    return auc, max(0.0, auc - quantile * error), min(1.0, auc + quantile * error)


def delong_test(
    labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, confidence: float = 0.95
) -> DeLongResult:
    """Two-sided test of AUC(A) = AUC(B) on the same cases.

    With no estimated variance of the difference (each reader ranks every pair alike: a
    perfect and a constant reader, or a handful of cases) a non-zero difference has no
    test: z, p and the interval are NaN, not p = 0. Identical rankings give p = 1.
    """
    aucs, covariance = auc_covariance(labels, scores_a, scores_b)
    difference = float(aucs[0] - aucs[1])
    variance = float(covariance[0, 0] + covariance[1, 1] - 2.0 * covariance[0, 1])
    error = math.sqrt(max(variance, 0.0))
    quantile = float(norm.ppf(0.5 + confidence / 2.0))
    if error <= _NO_VARIANCE:
        undefined = abs(difference) >= _NO_VARIANCE
        z, p = (math.nan, math.nan) if undefined else (0.0, 1.0)
        low = high = math.nan if undefined else difference
    else:
        z = difference / error
        p = float(2.0 * norm.sf(abs(z)))
        # clipped to the range a difference of two AUCs can take, as an AUC's is to [0, 1]
        low = max(-1.0, difference - quantile * error)
        high = min(1.0, difference + quantile * error)
    return DeLongResult(float(aucs[0]), float(aucs[1]), difference, error, z, p, low, high)


def holm_adjust(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (NaN entries left out)."""
    indexed = [(p, i) for i, p in enumerate(p_values) if p is not None and not math.isnan(p)]
    indexed.sort()
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    count = len(indexed)
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (count - rank) * p))
        adjusted[i] = running
    return adjusted
