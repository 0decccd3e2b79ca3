"""MCC-weighted late fusion of per-image probabilities (the paper's Eq. 7–8). No torch.

A case's probability is fused in two steps, views first, then modalities:

- view fusion (Eq. 7):     p[m] = Σ_v p[m,v]·MCC[m,v] / Σ_v MCC[m,v]
- modality fusion (Eq. 8): p    = Σ_m p[m]·MCC[m]     / Σ_m MCC[m]

The weights are validation Matthews correlation coefficients. The paper gives no rule
for the cases below; ours, applied to the inputs that are present in each step:

1. Missing inputs (``None``, NaN-free absence) are dropped and the weights renormalised
   over what is present; the result records what was missing. A modality whose views are
   all missing is itself missing in the modality step.
2. If every present weight is ≤ 0 (a classifier no better than chance), all present
   inputs get equal weights (rule ``"equal"``).
3. Otherwise, any weight below ``MCC_FLOOR`` (0.01), including zero and negative ones, is
   raised to ``MCC_FLOOR`` (rule ``"floored"``), so a worse-than-chance model keeps a tiny
   say instead of a negative one. With all weights ≥ the floor the MCCs are used as they
   are (rule ``"mcc"``).
4. Nothing present: :class:`~VirtualBiopsyLib.errors.CaseError`.

Results are typed: :class:`FusionResult` per step and :class:`CaseFusion` per case, with
the probability, the normalised weights actually used and what was missing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from VirtualBiopsyLib.errors import CaseError
from VirtualBiopsyLib.roles import MODALITIES, VIEWS, slot_name

MCC_FLOOR = 0.01
DEFAULT_THRESHOLD = 0.5
RULE_MCC = "mcc"
RULE_FLOORED = "floored"
RULE_EQUAL = "equal"


@dataclass(frozen=True)
class FusionResult:
    """One weighted average: its probability, the normalised weights used, what was missing.

    ``weights`` sums to 1 over the present inputs; ``rule`` is ``"mcc"``, ``"floored"`` or
    ``"equal"`` (see the module docstring).
    """

    probability: float
    weights: dict[str, float]
    missing: tuple[str, ...]
    rule: str

    def to_dict(self) -> dict[str, object]:
        return {
            "probability": self.probability,
            "weights": dict(self.weights),
            "missing": list(self.missing),
            "rule": self.rule,
        }


@dataclass(frozen=True)
class CaseFusion:
    """The fused case: view fusion per modality, then modality fusion."""

    probability: float
    views: dict[str, FusionResult]
    modalities: FusionResult
    missing_slots: tuple[str, ...]
    threshold: float = DEFAULT_THRESHOLD

    @property
    def label(self) -> str:
        """``"malignant"`` when the fused probability reaches the threshold (step 5)."""
        return "malignant" if self.probability >= self.threshold else "benign"

    def to_dict(self) -> dict[str, object]:
        return {
            "probability": self.probability,
            "label": self.label,
            "threshold": self.threshold,
            "views": {modality: result.to_dict() for modality, result in self.views.items()},
            "modalities": self.modalities.to_dict(),
            "missing_slots": list(self.missing_slots),
        }


def mcc_weights(mcc: Mapping[str, float]) -> tuple[dict[str, float], str]:
    """Normalised fusion weights from MCCs, with the floor / equal-weight rules.

    >>> mcc_weights({"CC": 0.5, "MLO": 0.5})
    ({'CC': 0.5, 'MLO': 0.5}, 'mcc')
    >>> mcc_weights({"CC": -0.1, "MLO": 0.0})
    ({'CC': 0.5, 'MLO': 0.5}, 'equal')
    """
    if not mcc:
        raise CaseError("no inputs to weight")
    usable = {key: value for key, value in mcc.items() if math.isfinite(value)}
    if not any(value > 0 for value in usable.values()):
        return {key: 1.0 / len(mcc) for key in mcc}, RULE_EQUAL
    raw = {key: max(usable.get(key, MCC_FLOOR), MCC_FLOOR) for key in mcc}
    rule = RULE_FLOORED if any(usable.get(key, 0.0) < MCC_FLOOR for key in mcc) else RULE_MCC
    total = sum(raw.values())
    return {key: value / total for key, value in raw.items()}, rule


def weighted_fusion(
    probabilities: Mapping[str, float | None], mcc: Mapping[str, float], what: str = "input"
) -> FusionResult:
    """MCC-weighted average of the present probabilities (``None`` = missing).

    >>> weighted_fusion({"CC": 0.9, "MLO": None}, {"CC": 0.5, "MLO": 0.4}, "view").weights
    {'CC': 1.0}
    """
    present = {key: _probability(value, key) for key, value in probabilities.items()}
    present = {key: value for key, value in present.items() if value is not None}
    missing = tuple(key for key in probabilities if key not in present)
    if not present:
        raise CaseError(f"nothing to fuse: every {what} is missing ({', '.join(missing)})")
    absent_weights = [key for key in present if key not in mcc]
    if absent_weights:
        raise CaseError(f"no validation MCC for {what} {', '.join(absent_weights)}")
    weights, rule = mcc_weights({key: float(mcc[key]) for key in present})
    probability = sum(present[key] * weights[key] for key in present)
    return FusionResult(_clip(probability), weights, missing, rule)


def fuse_views(
    view_probabilities: Mapping[object, float | None], view_mcc: Mapping[object, float]
) -> FusionResult:
    """Eq. 7 for one modality: fuse the CC and MLO probabilities by their classifiers' MCC.

    >>> result = fuse_views({"CC": 0.8, "MLO": 0.4}, {"CC": 0.6, "MLO": 0.2})
    >>> round(result.probability, 4), {view: round(w, 4) for view, w in result.weights.items()}
    (0.7, {'CC': 0.75, 'MLO': 0.25})
    """
    return weighted_fusion(_keyed(view_probabilities), _keyed(view_mcc), "view")


def fuse_modalities(
    modality_probabilities: Mapping[object, float | None], modality_mcc: Mapping[object, float]
) -> FusionResult:
    """Eq. 8: fuse the view-fused LE and DES probabilities by their modality MCC.

    >>> round(fuse_modalities({"LE": 0.3, "DES": 0.9}, {"LE": 0.1, "DES": 0.5}).probability, 4)
    0.8
    """
    return weighted_fusion(_keyed(modality_probabilities), _keyed(modality_mcc), "modality")


def fuse_case(
    slot_probabilities: Mapping[str, float | None],
    slot_mcc: Mapping[str, float],
    modality_mcc: Mapping[object, float],
    threshold: float = DEFAULT_THRESHOLD,
) -> CaseFusion:
    """The paper's steps 3–5 for one case: views, then modalities, then the threshold.

    ``slot_probabilities`` maps ``"LE_CC"`` … to p[m,v] (absent or ``None`` = missing);
    ``slot_mcc`` holds MCC[m,v] and ``modality_mcc`` MCC[m].

    >>> fused = fuse_case(
    ...     {"LE_CC": 0.4, "LE_MLO": 0.2, "DES_CC": 0.9, "DES_MLO": None},
    ...     {"LE_CC": 0.3, "LE_MLO": 0.1, "DES_CC": 0.6, "DES_MLO": 0.5},
    ...     {"LE": 0.25, "DES": 0.75})
    >>> round(fused.probability, 4), fused.label, fused.missing_slots
    (0.7625, 'malignant', ('DES_MLO',))
    """
    views: dict[str, FusionResult] = {}
    modality_probabilities: dict[str, float | None] = {}
    for modality in MODALITIES:
        per_view = {view.value: slot_probabilities.get(slot_name(modality, view)) for view in VIEWS}
        if all(value is None for value in per_view.values()):
            modality_probabilities[modality.value] = None
            continue
        view_mcc = {
            view.value: slot_mcc[slot_name(modality, view)]
            for view in VIEWS
            if slot_name(modality, view) in slot_mcc
        }
        views[modality.value] = fuse_views(per_view, view_mcc)
        modality_probabilities[modality.value] = views[modality.value].probability
    if all(value is None for value in modality_probabilities.values()):
        raise CaseError("nothing to fuse: the case has no LE or DES probability in any view")
    modalities = fuse_modalities(modality_probabilities, modality_mcc)
    missing_slots = tuple(
        slot_name(m, v)
        for m in MODALITIES
        for v in VIEWS
        if slot_probabilities.get(slot_name(m, v)) is None
    )
    return CaseFusion(modalities.probability, views, modalities, missing_slots, threshold)


def _keyed(mapping: Mapping[object, float | None]) -> dict[str, float | None]:
    """Accept roles (``View.CC``) or their names (``"CC"``) as keys."""
    return {
        key.value if isinstance(key, Enum) else str(key): value for key, value in mapping.items()
    }


def _probability(value: float | None, key: str) -> float | None:
    if value is None:
        return None
    probability = float(value)
    if not 0.0 <= probability <= 1.0:  # also rejects NaN
        raise CaseError(f"probability of {key} is {value!r}, expected a number in [0, 1]")
    return probability


def _clip(probability: float) -> float:
    """Guard against rounding drift just outside [0, 1]."""
    return min(1.0, max(0.0, probability))
