"""Per-fold fused metrics from stored predictions: the paper's settings F, C, Ĉ, F+C, F+Ĉ.

Training writes one row per (fold, split, case, slot, source) with the classifier's
malignancy probability; ``source`` is ``real`` or ``synthetic`` (a DES classifier applied
to ``G_v(LE)``). This module fuses them with :mod:`VirtualBiopsyLib.fusion` (views by
MCC[m,v], then modalities by MCC[m], both measured on the fold's validation split):

- ``F``: view-fused LE;       ``C``: view-fused real DES;  ``Ĉ``: view-fused synthetic DES;
- ``F+C``: LE and real DES;   ``F+Ĉ``: LE and synthetic DES (the paper's Eq. 7–8).

Synthetic rows carry the probabilities ``predict`` would give: recalibrated with each
DES classifier's logit shift for synthetic DES, fit on the fold's validation synthetic
rows (:func:`synthetic_logit_shifts`, :func:`recalibrate_synthetic`).

Every setting is scored on the same cases: those with at least one real LE and one real
DES image and, in a run with synthesis, a synthetic DES (:func:`scored_cases`), so that C
and Ĉ, F+C and F+Ĉ, and F against either are paired comparisons on one population. A
fold without synthetic DES in such a run (the demo recipe trains generators in fold 0
only: a later fold's test patients were training patients of that generator) scores no
case. Metrics per fold are AUC, G-mean and MCC at the
package threshold; each is NaN on a subset with one class only. Summaries are mean ±
standard error over folds; with the ``every-patient`` protocol the test predictions of all
folds also pool into one out-of-fold prediction per case (:func:`pooled_test_auc`).

>>> rows = [Prediction(0, "test", "c1", "p1", 1, "b", "LE_CC", "real", 0.8)]
>>> slot_mcc = {"LE_CC": 0.5}
>>> fused_probability(case_inputs(rows)["c1"], "F", slot_mcc, {"LE": 0.5, "DES": 0.5})
0.8
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from Training.datasets import ManifestError
from Training.metrics import (
    CLASSIFICATION_METRICS,
    auc,
    classification_metrics,
    mcc,
    mean_and_standard_error,
)
from VirtualBiopsyLib.atomic_io import write_text_atomic
from VirtualBiopsyLib.calibration import fit_logit_shift, shift_probability
from VirtualBiopsyLib.errors import CaseError
from VirtualBiopsyLib.fusion import fuse_case, fuse_views
from VirtualBiopsyLib.roles import SLOTS, VIEWS, Modality, parse_slot, slot_name

SETTINGS: tuple[str, ...] = ("F", "C", "Ĉ", "F+C", "F+Ĉ")
#: A metric of a subset (a density category within one fold) needs at least this many cases.
MIN_SUBSET_CASES = 3
UNKNOWN_DENSITY = "unknown"
#: The robustness sweep's shares of patients whose real DES is replaced, in percent.
ROBUSTNESS_PERCENTS: tuple[int, ...] = tuple(range(0, 101, 10))
SETTING_ASCII: dict[str, str] = {"F": "F", "C": "C", "Ĉ": "C_hat", "F+C": "F+C", "F+Ĉ": "F+C_hat"}
REAL = "real"
SYNTHETIC = "synthetic"
#: The splits whose predictions training stores.
SPLITS: tuple[str, ...] = ("val", "test")


@dataclass(frozen=True)
class Prediction:
    """One classifier output stored by training (no patient ID: keys are pseudonyms)."""

    fold: int
    split: str  # "val" or "test"
    case: str
    patient: str
    label: int
    acr_density: str
    slot: str
    source: str  # "real" or "synthetic"
    probability: float


@dataclass
class CaseInputs:
    """Everything known about one case of one fold and split."""

    label: int
    patient: str
    acr_density: str
    real: dict[str, float]
    synthetic: dict[str, float]


def write_predictions(predictions: Iterable[Prediction], path: Path) -> None:
    names = [f.name for f in fields(Prediction)]
    lines = [",".join(names)]
    for prediction in predictions:
        values = asdict(prediction)
        lines.append(",".join(_csv_value(values[name]) for name in names))
    write_text_atomic(path, "\n".join(lines) + "\n")


def _csv_value(value: object) -> str:
    return repr(value) if isinstance(value, float) else str(value)


class PredictionsFileError(ManifestError, ValueError):
    """A ``predictions.csv`` row that cannot be scored; names the file, line and value."""


def read_predictions(path: Path) -> list[Prediction]:
    """The rows of a ``predictions.csv``, each checked: a NaN or out-of-range probability
    (a classifier that diverged), an unknown split, slot or source, or a label other than
    0/1 is refused here, naming the file and line, rather than failing deep inside the
    fusion or being dropped from one setting and not the others."""
    with open(path, newline="", encoding="utf-8") as stream:
        try:
            rows = enumerate(csv.DictReader(stream), start=2)
            return [_prediction(row, path, line) for line, row in rows]
        except (UnicodeDecodeError, csv.Error) as error:
            raise PredictionsFileError(f"{path}: not a CSV text file ({error})") from None


def _prediction(row: dict[str, str], path: Path, line: int) -> Prediction:
    try:
        prediction = Prediction(
            fold=int(row["fold"]),
            split=row["split"],
            case=row["case"],
            patient=row["patient"],
            label=int(row["label"]),
            acr_density=row["acr_density"],
            slot=row["slot"],
            source=row["source"],
            probability=float(row["probability"]),
        )
    except KeyError as error:
        raise PredictionsFileError(f"{path}: line {line}: no {error} column") from None
    except (TypeError, ValueError) as error:  # a short row gives None, a bad number ValueError
        raise PredictionsFileError(f"{path}: line {line}: unreadable row ({error})") from None
    problem = _row_problem(prediction)
    if problem:
        raise PredictionsFileError(f"{path}: line {line}: {problem}")
    return prediction


def _row_problem(p: Prediction) -> str | None:
    """What makes a stored prediction unusable, or None."""
    if not 0.0 <= p.probability <= 1.0:  # NaN fails both comparisons
        return f"probability {p.probability!r} of {p.slot} is not a number in [0, 1]"
    if p.label not in (0, 1):
        return f"label {p.label} is neither 0 (benign) nor 1 (malignant)"
    if p.split not in SPLITS:
        return f"split {p.split!r} is not one of {', '.join(SPLITS)}"
    if p.slot not in SLOTS:
        return f"slot {p.slot!r} is not one of {', '.join(SLOTS)}"
    if p.source not in (REAL, SYNTHETIC):
        return f"source {p.source!r} is neither {REAL!r} nor {SYNTHETIC!r}"
    return None


def case_inputs(predictions: Iterable[Prediction]) -> dict[str, CaseInputs]:
    """Group one fold-split's predictions by case."""
    cases: dict[str, CaseInputs] = {}
    for p in predictions:
        case = cases.setdefault(p.case, CaseInputs(p.label, p.patient, p.acr_density, {}, {}))
        (case.real if p.source == REAL else case.synthetic)[p.slot] = p.probability
    return cases


def inputs_of(probabilities: Mapping[str, float], modality: Modality) -> dict[str, float]:
    """The slot probabilities of one modality (``{"LE_CC": p, …}`` → its LE or DES part)."""
    return {s: p for s, p in probabilities.items() if parse_slot(s)[0] is modality}


def scored_cases(cases: Mapping[str, CaseInputs], synthesis: bool = False) -> dict[str, CaseInputs]:
    """The cases every setting is scored on: at least one real LE and one real DES image,
    and with ``synthesis`` (the run synthesized DES) at least one synthetic DES."""
    return {
        key: case
        for key, case in cases.items()
        if inputs_of(case.real, Modality.LE)
        and inputs_of(case.real, Modality.DES)
        and (not synthesis or inputs_of(case.synthetic, Modality.DES))
    }


def has_synthesis(predictions: Iterable[Prediction]) -> bool:
    """Whether the run scored synthetic DES at all (not with ``--no-generators``)."""
    return any(p.source == SYNTHETIC for p in predictions)


def fold_test_cases(
    predictions: Sequence[Prediction], fold: int, synthesis: bool | None = None
) -> dict[str, CaseInputs]:
    """The scored test cases of one fold (``synthesis``: default, whether the run has any)."""
    synthesis = has_synthesis(predictions) if synthesis is None else synthesis
    return scored_cases(case_inputs(select(predictions, fold, "test")), synthesis)


def select(
    predictions: Iterable[Prediction], fold: int | None = None, split: str | None = None
) -> list[Prediction]:
    return [
        p
        for p in predictions
        if (fold is None or p.fold == fold) and (split is None or p.split == split)
    ]


def slot_mccs(val_predictions: Sequence[Prediction], threshold: float = 0.5) -> dict[str, float]:
    """Validation MCC of each classifier f[m,v] on real images (the Eq. 7 weights)."""
    result = {}
    for slot in SLOTS:
        rows = [p for p in val_predictions if p.slot == slot and p.source == REAL]
        if rows:
            labels = np.array([p.label for p in rows])
            result[slot] = _weight(mcc(labels, np.array([p.probability for p in rows]), threshold))
    return result


def synthetic_logit_shifts(val_predictions: Sequence[Prediction]) -> dict[str, float]:
    """Per DES classifier, the logit shift for synthetic DES fit on its validation
    synthetic rows (:func:`VirtualBiopsyLib.calibration.fit_logit_shift`); a classifier
    without such rows, or with one class among them, gets none."""
    result = {}
    for slot in SLOTS:
        rows = synthetic_rows(val_predictions, slot)
        shift = fit_logit_shift([p.probability for p in rows], [p.label for p in rows])
        if shift is not None:
            result[slot] = shift
    return result


def synthetic_rows(predictions: Sequence[Prediction], slot: str) -> list[Prediction]:
    """The rows of ``slot`` scored on synthetic DES (what a logit shift is fit on)."""
    return [p for p in predictions if p.slot == slot and p.source == SYNTHETIC]


def recalibrate_synthetic(
    predictions: Sequence[Prediction], shifts: Mapping[str, float]
) -> list[Prediction]:
    """The rows with each synthetic-DES probability shifted as ``predict`` shifts it."""
    return [
        replace(p, probability=shift_probability(p.probability, shifts[p.slot]))
        if p.source == SYNTHETIC and p.slot in shifts
        else p
        for p in predictions
    ]


def _weight(value: float) -> float:
    """An MCC as a fusion weight: undefined (one-class validation split) counts as 0."""
    return 0.0 if math.isnan(value) else value


def modality_mccs(
    val_predictions: Sequence[Prediction], slot_mcc: Mapping[str, float], threshold: float = 0.5
) -> dict[str, float]:
    """Validation MCC of each modality after view fusion (the Eq. 8 weights)."""
    cases = case_inputs(val_predictions)
    result = {}
    for modality in (Modality.LE, Modality.DES):
        labels, fused = [], []
        for case in cases.values():
            probability = _view_fused(case.real, modality, slot_mcc)
            if probability is not None:
                labels.append(case.label)
                fused.append(probability)
        if labels:
            result[modality.value] = _weight(mcc(np.array(labels), np.array(fused), threshold))
    return result


def _view_fused(
    probabilities: Mapping[str, float], modality: Modality, slot_mcc: Mapping[str, float]
) -> float | None:
    per_view = {v.value: probabilities.get(slot_name(modality, v)) for v in VIEWS}
    if all(value is None for value in per_view.values()):
        return None
    weights = {v.value: slot_mcc.get(slot_name(modality, v), 0.0) for v in VIEWS}
    return fuse_views(per_view, weights).probability


def fused_probability(
    case: CaseInputs,
    setting: str,
    slot_mcc: Mapping[str, float],
    modality_mcc: Mapping[str, float],
    des_override: Mapping[str, float] | None = None,
) -> float | None:
    """The case's fused probability in one setting, or ``None`` if it lacks an input.

    ``des_override`` replaces the DES inputs (used by the robustness sweep).
    """
    le = inputs_of(case.real, Modality.LE)
    if des_override is not None:
        des = dict(des_override)
    elif "Ĉ" in setting:
        des = inputs_of(case.synthetic, Modality.DES)
    else:
        des = inputs_of(case.real, Modality.DES)
    if setting == "F":
        return _view_fused(le, Modality.LE, slot_mcc)
    if setting in ("C", "Ĉ"):
        return _view_fused(des, Modality.DES, slot_mcc)
    if not le or not des:
        return None
    try:
        return fuse_case({**le, **des}, slot_mcc, modality_mcc).probability
    except CaseError:
        return None


@dataclass(frozen=True)
class FoldWeights:
    slot_mcc: dict[str, float]
    modality_mcc: dict[str, float]


def fold_weights(predictions: Sequence[Prediction], fold: int, threshold: float) -> FoldWeights:
    val = select(predictions, fold, "val")
    slot_mcc = slot_mccs(val, threshold)
    return FoldWeights(slot_mcc, modality_mccs(val, slot_mcc, threshold))


def setting_scores(
    cases: Mapping[str, CaseInputs],
    setting: str,
    weights: FoldWeights,
    des_overrides: Mapping[str, Mapping[str, float]] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Labels, fused probabilities and case keys of the cases that have the setting's inputs."""
    labels, scores, keys = [], [], []
    for key, case in cases.items():
        override = des_overrides.get(key) if des_overrides else None
        probability = fused_probability(
            case, setting, weights.slot_mcc, weights.modality_mcc, override
        )
        if probability is not None:
            labels.append(case.label)
            scores.append(probability)
            keys.append(key)
    return np.array(labels, dtype=int), np.array(scores, dtype=float), keys


def per_fold_metrics(
    predictions: Sequence[Prediction], threshold: float = 0.5
) -> dict[str, list[dict[str, float]]]:
    """AUC / G-mean / MCC of every setting on every fold's test split."""
    result: dict[str, list[dict[str, float]]] = {setting: [] for setting in SETTINGS}
    synthesis = has_synthesis(predictions)
    for fold in sorted({p.fold for p in predictions}):
        weights = fold_weights(predictions, fold, threshold)
        cases = fold_test_cases(predictions, fold, synthesis)
        for setting in SETTINGS:
            labels, scores, _ = setting_scores(cases, setting, weights)
            if labels.size:
                result[setting].append(classification_metrics(labels, scores, threshold))
    return result


def defined_folds(folds: Sequence[Mapping[str, float]], metric: str = "auc") -> int:
    """How many folds define ``metric``: a fold whose scored test cases hold one class
    (or none) gives NaN and is left out of the mean, so a table says over how many
    folds its mean ± SE is taken."""
    return sum(1 for fold in folds if not math.isnan(fold[metric]))


def summarize(per_fold: Mapping[str, Sequence[Mapping[str, float]]]) -> dict[str, dict[str, list]]:
    """``{setting: {metric: [mean, standard_error]}}`` over folds (NaN folds ignored)."""
    return {
        setting: {
            metric: list(mean_and_standard_error([fold[metric] for fold in folds]))
            for metric in CLASSIFICATION_METRICS
        }
        for setting, folds in per_fold.items()
    }


def pooled_test_scores(
    predictions: Sequence[Prediction], setting: str, threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and fused probabilities of every fold's scored test cases, pooled (each fold
    fused with its own MCCs): one out-of-fold prediction per case under the every-patient
    protocol, the tested part of the cohort under the paper's."""
    synthesis = has_synthesis(predictions)
    labels_all, scores_all = [], []
    for fold in sorted({p.fold for p in predictions}):
        weights = fold_weights(predictions, fold, threshold)
        cases = fold_test_cases(predictions, fold, synthesis)
        labels, scores, _ = setting_scores(cases, setting, weights)
        labels_all.extend(labels)
        scores_all.extend(scores)
    return np.array(labels_all, dtype=int), np.array(scores_all, dtype=float)


def pooled_test_auc(predictions: Sequence[Prediction], setting: str, threshold: float = 0.5):
    """AUC of :func:`pooled_test_scores`; NaN without cases (Ĉ of ``--no-generators``)."""
    return auc(*pooled_test_scores(predictions, setting, threshold))


def robustness_sweep(
    predictions: Sequence[Prediction],
    repetitions: int = 10,
    seed: int = 0,
    threshold: float = 0.5,
    percents: Sequence[int] = ROBUSTNESS_PERCENTS,
) -> list[dict[str, float | int | str]]:
    """The paper's Figure 5: replace the real DES of n % of test patients by synthetic DES.

    The population is fixed: the scored test cases of each fold (:func:`scored_cases`,
    which all have real and synthetic DES), whatever n. For each fold, n (0 included: the
    C and F+C of the same population) and repetition, a seeded random subset of those
    patients loses its real DES (both views) in favour of the synthetic one; ``C*`` and
    ``F+C*`` are then scored, ``F`` (no DES) is the flat reference. Per fold the
    repetitions are averaged; rows give mean ± standard error over folds. A run without
    synthetic DES has the 0 % rows only.
    """
    rows = []
    folds = sorted({p.fold for p in predictions})
    synthesis = has_synthesis(predictions)
    if not synthesis:
        percents = [percent for percent in percents if percent == 0]
    for percent in percents:
        per_setting: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for fold in folds:
            weights = fold_weights(predictions, fold, threshold)
            cases = fold_test_cases(predictions, fold, synthesis)
            fold_scores = _fold_robustness(
                cases, weights, percent, repetitions, seed, fold, threshold
            )
            for setting, metrics in fold_scores.items():
                for metric, value in metrics.items():
                    per_setting[setting][metric].append(value)
        for setting, metrics in per_setting.items():
            for metric, values in metrics.items():
                mean, error = mean_and_standard_error(values)
                rows.append(
                    {
                        "percent": percent,
                        "setting": setting,
                        "metric": metric,
                        "mean": mean,
                        "se": error,
                    }
                )
    return rows


def _fold_robustness(
    cases: Mapping[str, CaseInputs],
    weights: FoldWeights,
    percent: int,
    repetitions: int,
    seed: int,
    fold: int,
    threshold: float,
) -> dict[str, dict[str, float]]:
    patients = sorted({case.patient for case in cases.values()})
    count = round(len(patients) * percent / 100)
    collected: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for repetition in range(repetitions):
        rng = np.random.default_rng([seed, fold, percent, repetition])
        replaced = set(rng.choice(patients, size=count, replace=False)) if count else set()
        overrides = {key: _mixed_des(case, case.patient in replaced) for key, case in cases.items()}
        for setting, name in (("F", "F"), ("C", "C*"), ("F+C", "F+C*")):
            labels, scores, _ = setting_scores(
                cases, setting, weights, None if setting == "F" else overrides
            )
            if labels.size:
                for metric, value in classification_metrics(labels, scores, threshold).items():
                    collected[name][metric].append(value)
    return {
        name: {
            metric: float(np.nanmean(values)) if not all(map(math.isnan, values)) else math.nan
            for metric, values in metrics.items()
        }
        for name, metrics in collected.items()
    }


def _mixed_des(case: CaseInputs, use_synthetic: bool) -> dict[str, float]:
    return inputs_of(case.synthetic if use_synthetic else case.real, Modality.DES)


def density_category(acr_density: str) -> str:
    """A case's row in Table 4: its ACR category, or ``unknown`` when the manifest has
    none (such cases are counted in a row of their own, never dropped without a word)."""
    return acr_density or UNKNOWN_DENSITY


def density_metrics(
    predictions: Sequence[Prediction], threshold: float = 0.5
) -> dict[str, dict[str, dict[str, list]]]:
    """Table 4: F, F+C, F+Ĉ per ACR density category, mean ± SE over folds, with n.

    Within a fold a category's metrics are computed on that fold's scored test cases of
    the category, and only when there are at least :data:`MIN_SUBSET_CASES` of them:
    one or two cases make no metric. Undefined values (one class only) are left out of
    the mean. Each category also reports ``n`` (its scored test cases over all folds),
    ``folds`` (how many folds had enough cases) and ``defined_folds`` (how many of those
    held both classes: the folds its mean ± SE is taken over).
    """
    result: dict[str, dict[str, dict[str, list]]] = {}
    categories = sorted({density_category(p.acr_density) for p in predictions})
    synthesis = has_synthesis(predictions)
    for category in categories:
        per_fold: dict[str, list[dict[str, float]]] = {s: [] for s in ("F", "F+C", "F+Ĉ")}
        n_cases = 0
        for fold in sorted({p.fold for p in predictions}):
            weights = fold_weights(predictions, fold, threshold)
            cases = {
                key: case
                for key, case in fold_test_cases(predictions, fold, synthesis).items()
                if density_category(case.acr_density) == category
            }
            n_cases += len(cases)
            if len(cases) < MIN_SUBSET_CASES:
                continue
            for setting in per_fold:
                labels, scores, _ = setting_scores(cases, setting, weights)
                if labels.size:
                    per_fold[setting].append(classification_metrics(labels, scores, threshold))
        summary = summarize(per_fold)
        for setting, folds in per_fold.items():
            summary[setting]["n"] = [n_cases, math.nan]
            summary[setting]["folds"] = [len(folds), math.nan]
            summary[setting]["defined_folds"] = [defined_folds(folds), math.nan]
        result[category] = summary
    return result
