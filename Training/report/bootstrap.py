"""Patient-level bootstrap: resample patients (with replacement), never images or breasts.

A patient contributes up to two cases (left and right breast) and each case up to four
images; those are correlated, so the resampling unit is the patient. One resample is a
vector of counts, how often each patient was drawn (a multinomial draw of ``n`` patients
with equal probabilities), and a case's weight is its patient's count. A weighted
statistic over cases then equals the statistic on the resampled data set with the
duplicates written out, which lets every resample of every statistic be computed at once
as a ``(resamples, cases)`` weight matrix. All settings of a run share one set of
resamples, so paired differences are paired by construction.

>>> weights = patient_bootstrap_weights(["a", "a", "b"], n_resamples=4, seed=0)
>>> weights.shape, bool((weights[:, 0] == weights[:, 1]).all())
((4, 3), True)
>>> [round(v, 6) for v in percentile_interval(np.arange(101.0))]
[2.5, 97.5]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

DEFAULT_RESAMPLES = 2000
CONFIDENCE = 0.95
MIN_FINITE_SHARE = 0.5  # fewer finite resamples than this: no interval


def patient_counts(n_patients: int, n_resamples: int, seed: int) -> np.ndarray:
    """``(n_resamples, n_patients)`` counts: each row draws ``n_patients`` patients."""
    if n_resamples < 1:
        raise ValueError(f"number of bootstrap resamples must be positive, got {n_resamples}")
    rng = np.random.default_rng(seed)
    if n_patients == 0:
        return np.zeros((n_resamples, 0))
    probabilities = np.full(n_patients, 1.0 / n_patients)
    return rng.multinomial(n_patients, probabilities, size=n_resamples).astype(float)


def patient_bootstrap_weights(
    patients: Sequence[str], n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> np.ndarray:
    """Case weights ``(n_resamples, len(patients))`` from resampling the distinct patients."""
    universe = sorted(set(patients))
    index = {patient: i for i, patient in enumerate(universe)}
    counts = patient_counts(len(universe), n_resamples, seed)
    return counts[:, [index[p] for p in patients]]


def percentile_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the finite resampled values (NaN when too few)."""
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    if values.size == 0 or finite.size < MIN_FINITE_SHARE * values.size or finite.size < 2:
        return math.nan, math.nan
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(low), float(high)


def bootstrap_p_value(differences: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "difference = 0": twice the smaller tail share.

    The percentile-interval duality: the 95 % interval excludes 0 exactly when this is
    below 0.05 (up to the resolution of ``1 / resamples``).
    """
    differences = np.asarray(differences, dtype=float)
    finite = differences[np.isfinite(differences)]
    if finite.size == 0:
        return math.nan
    below = np.mean(finite <= 0.0)
    above = np.mean(finite >= 0.0)
    return float(min(1.0, 2.0 * min(below, above)))
