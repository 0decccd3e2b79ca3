"""Recalibrating a real-DES classifier for synthetic DES: one logit shift per classifier.

The DES classifiers are trained on real DES. A generator that draws lesions fainter than
they are (on the phantom, about two thirds of the real lesion contrast) leaves the
classifier's *ranking* of synthetic DES useful (its AUC) but puts its probabilities on a
different scale: every synthetic case can fall below the 0.5 threshold, so the label,
sensitivity, G-mean and MCC of the synthetic path collapse although its AUC holds. The
paper applies the real-DES threshold unchanged; it has no calibration at all.

Our rule: each DES classifier f[DES,v] of a fold gets one number, a shift ``b`` added to
the logit of its probability whenever its input is synthetic:
``p' = σ(logit(p) + b)``. It is monotone (each fold's ranking and AUC are unchanged) and
is fit on the fold's *validation* patients' synthetic DES by class-balanced logistic
loss, the same balance the classifiers are trained with, so a calibrated synthetic
probability of 0.5 means what 0.5 means on real DES. One parameter fits on the dozen or
so validation cases a fold has; a validation split with one class only gives no shift
(the classifier is used as it is). Real DES is never changed. No torch, no SciPy: the
balanced loss is convex in ``b`` and its root is found by bisection.

>>> shift = fit_logit_shift([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1])
>>> round(shift, 2), round(shift_probability(0.3, shift), 2)
(1.2, 0.59)
>>> fit_logit_shift([0.2, 0.3], [1, 1]) is None
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: A shift is clipped to ± this (a factor of about 22 000 in the odds).
MAX_LOGIT_SHIFT = 10.0
_EPSILON = 1e-6  # probabilities are clipped to [ε, 1 − ε] before the logit
_BISECTION_STEPS = 60


def logit(probability: float | np.ndarray) -> float | np.ndarray:
    """log(p / (1 − p)), with p clipped away from 0 and 1 (finite for any input)."""
    p = np.clip(probability, _EPSILON, 1.0 - _EPSILON)
    return np.log(p) - np.log1p(-p)


def shift_probability(probability: float, shift: float | None) -> float:
    """σ(logit(p) + shift); ``shift`` None (no calibration) returns ``p`` unchanged."""
    if shift is None:
        return float(probability)
    return float(1.0 / (1.0 + math.exp(-(float(logit(probability)) + shift))))


def fit_logit_shift(probabilities: Sequence[float], labels: Sequence[int]) -> float | None:
    """The shift that minimises the class-balanced log loss of σ(logit(p) + b).

    None when ``labels`` hold one class only (nothing to balance) or nothing at all;
    ValueError for a label other than 0 (benign) and 1 (malignant). At the optimum the
    balanced mean of σ(logit(p) + b) − y is zero: each class weighs half, whatever its
    count.
    """
    x = np.asarray(logit(np.asarray(probabilities, dtype=float)), dtype=float)
    y = np.asarray(labels, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"{x.size} probabilities for {y.size} labels")
    unknown = sorted(set(y[(y != 0) & (y != 1)].tolist()))
    if unknown:
        raise ValueError(f"labels must be 0 (benign) or 1 (malignant), not {unknown}")
    positives = int(np.sum(y == 1))
    negatives = y.size - positives
    if positives == 0 or negatives == 0:
        return None
    weights = np.where(y == 1, 0.5 / positives, 0.5 / negatives)

    def gradient(shift: float) -> float:  # increasing in shift
        return float(np.sum(weights * (1.0 / (1.0 + np.exp(-(x + shift))) - y)))

    low, high = -MAX_LOGIT_SHIFT, MAX_LOGIT_SHIFT
    if gradient(low) >= 0.0:
        return low
    if gradient(high) <= 0.0:
        return high
    for _ in range(_BISECTION_STEPS):
        middle = 0.5 * (low + high)
        if gradient(middle) < 0.0:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)
