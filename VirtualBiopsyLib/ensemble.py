"""The paper's fold ensemble and its spread: one implementation for inference and Training.

Each cross-validation fold k has its own four classifiers and validation MCCs. A case is
fused *per fold* (:func:`VirtualBiopsyLib.fusion.fuse_case`: views, then modalities,
weighted by that fold's MCCs), and the case's probability is the mean of the per-fold
fused probabilities; the spread over folds is reported as sample standard deviation and
standard error (std / √n), as in the paper's tables. No torch: the Slicer bridge,
``Training.holdout`` and ``Training.evaluation`` use it on plain numbers.

>>> from types import SimpleNamespace as Weights
>>> fold = Weights(slot_mcc={"LE_CC": 0.3, "DES_CC": 0.6}, modality_mcc={"LE": 0.2, "DES": 0.8})
>>> per_fold = [{"LE_CC": 0.2, "DES_CC": 0.9}, {"LE_CC": 0.4, "DES_CC": 0.7}]
>>> ensemble = fold_ensemble(per_fold, [fold, fold])
>>> round(ensemble.mean, 3), ensemble.label, ensemble.probability.sem
(0.7, 'malignant', 0.06)
>>> mean_and_standard_error([0.6, 0.8, float("nan")])
(0.7, 0.1)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from VirtualBiopsyLib.fusion import DEFAULT_THRESHOLD, CaseFusion, fuse_case
from VirtualBiopsyLib.roles import MODALITIES, SLOTS


def fold_spread(values: Sequence[float | None]) -> tuple[float, float, float]:
    """(mean, sample std, standard error) of one value per fold; None/NaN folds skipped.

    A single usable fold has no spread: std and SE are NaN; no usable fold: all NaN.
    """
    finite = np.array(
        [float(v) for v in values if v is not None and not math.isnan(float(v))], dtype=float
    )
    if finite.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(np.mean(finite))
    if finite.size == 1:
        return mean, math.nan, math.nan
    std = float(np.std(finite, ddof=1))
    return mean, std, std / math.sqrt(finite.size)


def mean_and_standard_error(values: Sequence[float | None]) -> tuple[float, float]:
    """Mean ± standard error over folds, ignoring None/NaN (undefined) folds."""
    mean, _, standard_error = fold_spread(values)
    return mean, standard_error


@dataclass(frozen=True)
class FoldStats:
    """A probability over the folds as ``result.json`` stores it: mean, std, SE, the folds.

    Rounded to 6 decimals; a single fold has std and SE 0 (JSON has no NaN).

    >>> FoldStats.from_folds([0.2, 0.4]).mean
    0.3
    """

    mean: float
    std: float
    sem: float
    folds: tuple[float, ...]

    @classmethod
    def from_folds(cls, values: Sequence[float] | np.ndarray) -> FoldStats:
        folds = tuple(float(v) for v in values)
        if not folds:
            raise ValueError("no fold values to summarise")
        mean, std, sem = fold_spread(folds)
        if len(folds) == 1:
            std = sem = 0.0
        return cls(round(mean, 6), round(std, 6), round(sem, 6), folds)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "sem": self.sem, "folds": list(self.folds)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FoldStats:
        return cls(
            float(data["mean"]),
            float(data["std"]),
            float(data.get("sem", 0.0)),
            tuple(float(v) for v in data["folds"]),
        )


class FoldWeights(Protocol):
    """What the ensemble needs of a fold: its validation MCCs (a package's ``FoldEntry``,
    Training's ``FoldWeights``)."""

    @property
    def slot_mcc(self) -> Mapping[str, float]: ...

    @property
    def modality_mcc(self) -> Mapping[Any, float]: ...


@dataclass(frozen=True)
class FoldEnsemble:
    """A case fused fold by fold, and the summaries over folds."""

    fusions: tuple[CaseFusion, ...]
    probability: FoldStats  # the fused probability over folds (what the label uses)
    modalities: dict[str, FoldStats]  # per modality, the view-fused probability
    images: dict[str, FoldStats]  # per slot, the classifier's probability
    threshold: float

    @property
    def mean(self) -> float:
        """The unrounded mean of the per-fold fused probabilities."""
        return fold_spread([f.probability for f in self.fusions])[0]

    @property
    def label(self) -> str:
        """'malignant' when the (rounded, as stored) fused mean reaches the threshold."""
        return "malignant" if self.probability.mean >= self.threshold else "benign"

    def weights(self) -> list[dict[str, Any]]:
        """Per fold, the fusion weights used (``result.json``'s ``weights``)."""
        return [
            {
                "fold": index,
                "views": {m: r.to_dict() for m, r in fusion.views.items()},
                "modalities": fusion.modalities.to_dict(),
            }
            for index, fusion in enumerate(self.fusions)
        ]


def fold_ensemble(
    fold_probabilities: Sequence[Mapping[str, float | None]],
    folds: Sequence[FoldWeights],
    threshold: float = DEFAULT_THRESHOLD,
) -> FoldEnsemble:
    """Fuse a case with each fold's MCCs and summarise over folds (the module docstring).

    ``fold_probabilities[k]`` maps slots (``"LE_CC"`` …) to fold k's classifier
    probability (absent or None: missing); ``folds[k]`` gives fold k's ``slot_mcc`` and
    ``modality_mcc``. Raises :class:`~VirtualBiopsyLib.errors.CaseError` when a fold has
    nothing to fuse, ``ValueError`` when the two sequences differ in length or are empty.
    """
    if len(fold_probabilities) != len(folds) or not folds:
        raise ValueError(
            f"fold_ensemble: {len(fold_probabilities)} fold probabilities for {len(folds)} folds"
        )
    fusions = tuple(
        fuse_case(probabilities, fold.slot_mcc, fold.modality_mcc, threshold)
        for probabilities, fold in zip(fold_probabilities, folds, strict=True)
    )
    present = [s for s in SLOTS if all(p.get(s) is not None for p in fold_probabilities)]
    images = {
        slot: FoldStats.from_folds([float(p.get(slot) or 0.0) for p in fold_probabilities])
        for slot in present
    }
    modalities = {
        m.value: FoldStats.from_folds([f.views[m.value].probability for f in fusions])
        for m in MODALITIES
        if m.value in fusions[0].views
    }
    fused = FoldStats.from_folds([f.probability for f in fusions])
    return FoldEnsemble(fusions, fused, modalities, images, threshold)
