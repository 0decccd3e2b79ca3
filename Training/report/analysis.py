"""The report's numbers for one run: intervals, paired tests, calibration, density, sweep.

Everything here is computed on the pooled out-of-fold scores of :mod:`.data` with one set
of patient-level bootstrap resamples per run (:mod:`.bootstrap`), shared by every
setting, so that paired differences are paired resample by resample. Point estimates
come from scikit-learn; the resamples from the batched statistics of :mod:`.roc` and
:mod:`.calibration` (the tests show both agree). The paper's mean ± standard error over
folds is taken from :mod:`Training.evaluation` and shown beside each interval.

>>> analysis = analyse_run(load_run(Path("runs/resnet18")), n_resamples=2000)  # doctest: +SKIP
>>> analysis.settings[0]["setting"], analysis.settings[0]["auc"]  # doctest: +SKIP
('F', 0.71)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import brier_score_loss, confusion_matrix, roc_auc_score, roc_curve

from Training.evaluation import (
    SETTINGS,
    density_category,
    density_metrics,
    fused_probability,
    per_fold_metrics,
    summarize,
)
from Training.report.bootstrap import (
    DEFAULT_RESAMPLES,
    bootstrap_p_value,
    patient_counts,
    percentile_interval,
)
from Training.report.calibration import (
    calibration_intercept_slope,
    reliability_bins,
    weighted_brier,
)
from Training.report.data import (
    FoldCases,
    ReportRun,
    SettingScores,
    fold_cases,
    load_run,
    pooled_scores,
    repeated_test_cases,
)
from Training.report.delong import delong_test, holm_adjust
from Training.report.roc import (
    SPECIFICITIES,
    rank_auc,
    roc_band,
    sensitivity_at_specificity,
    threshold_statistics,
    weighted_auc,
)

__all__ = ["RunAnalysis", "analyse_run", "load_run"]

COMPARISONS: tuple[tuple[str, str], ...] = (("F", "F+C"), ("F", "F+Ĉ"), ("C", "Ĉ"), ("F+C", "F+Ĉ"))
DENSITY_SETTINGS: tuple[str, ...] = ("F", "F+C", "F+Ĉ")
MIN_CASES_PER_CLASS = 3  # fewer malignant or benign cases in a subgroup: no metric reported
SIGNIFICANCE = 0.05
ROC_GRID = np.linspace(0.0, 1.0, 101)
ROBUSTNESS_PERCENTS: tuple[int, ...] = tuple(range(0, 101, 10))
FOLD_METRICS = ("auc", "g_mean", "mcc")


@dataclass
class RunAnalysis:
    """All numbers and curves of one run, as plain rows (the CSV files) and arrays."""

    run: ReportRun
    scores: dict[str, SettingScores]
    n_resamples: int
    seed: int
    repeated_cases: int
    settings: list[dict[str, Any]] = field(default_factory=list)
    paired: list[dict[str, Any]] = field(default_factory=list)
    calibration: list[dict[str, Any]] = field(default_factory=list)
    density: list[dict[str, Any]] = field(default_factory=list)
    robustness: list[dict[str, Any]] = field(default_factory=list)
    roc: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    reliability: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)


class _Resamples:
    """One run's patient resamples; ``weights(scores)`` gives the case weight matrix."""

    def __init__(self, patients: Sequence[str], n_resamples: int, seed: int) -> None:
        self.universe = sorted(set(patients))
        self.index = {patient: i for i, patient in enumerate(self.universe)}
        self.counts = patient_counts(len(self.universe), n_resamples, seed)

    def weights(self, scores: SettingScores) -> np.ndarray:
        return self.counts[:, [self.index[p] for p in scores.patients]]


def analyse_run(
    run: ReportRun,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    repetitions: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> RunAnalysis:
    """Every table and curve of one run (see the module docstring)."""
    step = progress or (lambda _name: None)
    folds = fold_cases(run)
    scores = pooled_scores(run, folds)
    everyone = [p for s in scores.values() for p in s.patients]
    resamples = _Resamples(everyone, n_resamples, seed)
    analysis = RunAnalysis(run, scores, n_resamples, seed, repeated_test_cases(folds))
    fold_summary = summarize(per_fold_metrics(run.predictions, run.threshold))
    for setting in SETTINGS:
        _analyse_setting(analysis, setting, resamples, fold_summary.get(setting, {}))
    step("settings")
    analysis.paired = _paired(scores, resamples)
    step("paired comparisons")
    analysis.density = _density(run, scores, resamples)
    step("density")
    reps = repetitions or int(run.config.get("robustness_repetitions", 10) or 10)
    analysis.robustness = robustness_curve(folds, reps, seed)
    step("robustness")
    return analysis


# --- one setting ---------------------------------------------------------------------------


def point_statistics(labels: np.ndarray, probabilities: np.ndarray, threshold: float):
    """Point estimates with scikit-learn (NaN where a statistic is undefined)."""
    labels = np.asarray(labels).astype(int)
    both = labels.size > 0 and 0 < labels.sum() < labels.size
    predicted = (probabilities >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
    sensitivity = tp / (tp + fn) if tp + fn else math.nan
    specificity = tn / (tn + fp) if tn + fp else math.nan
    denominator = math.sqrt(float((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
    result = {
        "auc": float(roc_auc_score(labels, probabilities)) if both else math.nan,
        "g_mean": math.sqrt(sensitivity * specificity),
        "mcc": (float(tp * tn - fp * fn) / denominator if denominator else 0.0)
        if both
        else math.nan,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "brier": float(brier_score_loss(labels, probabilities)) if labels.size else math.nan,
    }
    for target in SPECIFICITIES:
        if both:
            fpr, tpr, _ = roc_curve(labels, probabilities, drop_intermediate=False)
            result[_spec_key(target)] = float(tpr[fpr <= 1 - target + 1e-12].max())
        else:
            result[_spec_key(target)] = math.nan
    return result


def _spec_key(specificity: float) -> str:
    return f"sensitivity_at_{round(specificity * 100)}_specificity"


def _with_interval(row: dict[str, Any], name: str, value: float, resampled: np.ndarray) -> None:
    low, high = percentile_interval(resampled) if np.isfinite(value) else (math.nan, math.nan)
    row[name], row[f"{name}_ci_low"], row[f"{name}_ci_high"] = value, low, high


def _counts(scores: SettingScores) -> dict[str, int]:
    return {
        "cases": len(scores),
        "patients": len(set(scores.patients)),
        "malignant": int(scores.labels.sum()),
        "benign": int(len(scores) - scores.labels.sum()),
    }


def _analyse_setting(
    analysis: RunAnalysis,
    setting: str,
    resamples: _Resamples,
    fold_summary: dict[str, list],
) -> None:
    scores = analysis.scores[setting]
    threshold = analysis.run.threshold
    row: dict[str, Any] = {"run": analysis.run.name, "setting": setting, **_counts(scores)}
    calibration: dict[str, Any] = {"run": analysis.run.name, "setting": setting}
    calibration["cases"] = len(scores)
    if len(scores) == 0:
        analysis.settings.append(row)
        analysis.calibration.append(calibration)
        return
    labels, probabilities = scores.labels, scores.probabilities
    weights = resamples.weights(scores)
    point = point_statistics(labels, probabilities, threshold)
    at_threshold = threshold_statistics(labels, probabilities, weights, threshold)
    resampled = {
        "auc": weighted_auc(labels, probabilities, weights),
        **at_threshold,
        **{
            _spec_key(t): sensitivity_at_specificity(labels, probabilities, weights, t)
            for t in SPECIFICITIES
        },
    }
    for metric in FOLD_METRICS:
        mean, error = fold_summary.get(metric, (math.nan, math.nan))
        row[f"{metric}_fold_mean"], row[f"{metric}_fold_se"] = mean, error
    for name, values in resampled.items():
        _with_interval(row, name, point[name], values)
    analysis.settings.append(row)

    intercepts, slopes = calibration_intercept_slope(labels, probabilities, weights)
    point_intercept, point_slope = calibration_intercept_slope(
        labels, probabilities, np.ones((1, len(scores)))
    )
    _with_interval(
        calibration, "brier", point["brier"], weighted_brier(labels, probabilities, weights)
    )
    _with_interval(calibration, "intercept", float(point_intercept[0]), intercepts)
    _with_interval(calibration, "slope", float(point_slope[0]), slopes)
    calibration["mean_probability"] = float(probabilities.mean())
    calibration["observed_rate"] = float(labels.mean())
    analysis.calibration.append(calibration)

    if 0 < labels.sum() < labels.size:
        fpr, tpr, _ = roc_curve(labels, probabilities)
        band = roc_band(labels, probabilities, weights, ROC_GRID)
        finite = band[np.isfinite(band).all(axis=1)]
        low, high = (
            np.quantile(finite, [0.025, 0.975], axis=0)
            if finite.shape[0] >= 2
            else (np.full(ROC_GRID.size, np.nan),) * 2
        )
        analysis.roc[setting] = {"fpr": fpr, "tpr": tpr, "grid": ROC_GRID, "low": low, "high": high}
        analysis.reliability[setting] = reliability_bins(labels, probabilities)


# --- paired comparisons --------------------------------------------------------------------


def _paired(scores: dict[str, SettingScores], resamples: _Resamples) -> list[dict[str, Any]]:
    """AUC(B) − AUC(A) on the cases both settings score: DeLong and a paired bootstrap."""
    rows = []
    for first, second in COMPARISONS:
        a, b = scores[first], scores[second]
        in_b = set(b.cases)
        common = a.subset([case in in_b for case in a.cases])  # sorted keys, as b
        position_b = {case: i for i, case in enumerate(b.cases)}
        score_b = b.probabilities[[position_b[c] for c in common.cases]]
        labels = common.labels
        row: dict[str, Any] = {"comparison": f"{second} − {first}", "a": first, "b": second}
        row.update(_counts(common))
        if min(row["malignant"], row["benign"]) < 2:
            row["test"] = "not computed: fewer than two cases of a class"
            rows.append(row)
            continue
        result = delong_test(labels, score_b, common.probabilities)
        weights = resamples.weights(common)
        differences = weighted_auc(labels, score_b, weights) - weighted_auc(
            labels, common.probabilities, weights
        )
        low, high = percentile_interval(differences)
        row.update(
            {
                "auc_a": result.auc_b,
                "auc_b": result.auc_a,
                "difference": result.difference,
                "bootstrap_ci_low": low,
                "bootstrap_ci_high": high,
                "delong_se": result.standard_error,
                "delong_ci_low": result.ci_low,
                "delong_ci_high": result.ci_high,
                "delong_z": result.z,
                "delong_p": result.p_value,
                "bootstrap_p": bootstrap_p_value(differences),
                "test": "DeLong, two-sided; interval: paired patient-level bootstrap",
            }
        )
        rows.append(row)
    adjusted = holm_adjust([r.get("delong_p", math.nan) for r in rows])
    for row, p in zip(rows, adjusted, strict=True):
        row["delong_p_holm"] = p
        row["conclusion"] = _conclusion(row)
    return rows


def _conclusion(row: dict[str, Any]) -> str:
    """A "higher" claim needs the Holm-adjusted DeLong p and the bootstrap CI to agree."""
    p = row.get("delong_p_holm", math.nan)
    low, high = row.get("bootstrap_ci_low", math.nan), row.get("bootstrap_ci_high", math.nan)
    if p is None or math.isnan(p):
        return "not tested"
    if p < SIGNIFICANCE and low > 0:
        return f"{row['b']} higher than {row['a']}"
    if p < SIGNIFICANCE and high < 0:
        return f"{row['b']} lower than {row['a']}"
    return "no significant difference"


# --- density (Table 4) ---------------------------------------------------------------------


def _density(
    run: ReportRun, scores: dict[str, SettingScores], resamples: _Resamples
) -> list[dict[str, Any]]:
    """Per ACR category: n, pooled metrics with intervals, and the paper's fold mean ± SE."""
    fold_table = density_metrics(run.predictions, run.threshold)
    rows = []
    every = [d for setting in DENSITY_SETTINGS for d in scores[setting].densities]
    categories = sorted({density_category(d) for d in every})
    for category in categories:
        for setting in DENSITY_SETTINGS:
            densities = scores[setting].densities
            subset = scores[setting].subset([density_category(d) == category for d in densities])
            row: dict[str, Any] = {
                "run": run.name,
                "acr_density": category,
                "setting": setting,
                **_counts(subset),
            }
            folds = fold_table.get(category, {}).get(setting, {})
            for metric in FOLD_METRICS:
                mean, error = folds.get(metric, (math.nan, math.nan))
                row[f"{metric}_fold_mean"], row[f"{metric}_fold_se"] = mean, error
            enough = min(row["malignant"], row["benign"]) >= MIN_CASES_PER_CLASS
            row["reported"] = enough
            if enough:
                weights = resamples.weights(subset)
                point = point_statistics(subset.labels, subset.probabilities, run.threshold)
                stats = threshold_statistics(
                    subset.labels, subset.probabilities, weights, run.threshold
                )
                resampled = {"auc": weighted_auc(subset.labels, subset.probabilities, weights)}
                resampled.update({k: stats[k] for k in ("g_mean", "mcc")})
                for name, values in resampled.items():
                    _with_interval(row, name, point[name], values)
            else:
                for metric in FOLD_METRICS:  # too few cases: the fold means are not shown
                    row[f"{metric}_fold_mean"] = row[f"{metric}_fold_se"] = math.nan
            rows.append(row)
    return rows


# --- robustness (Figure 5) -----------------------------------------------------------------


def robustness_curve(
    folds: Sequence[FoldCases],
    repetitions: int,
    seed: int,
    percents: Sequence[int] = ROBUSTNESS_PERCENTS,
) -> list[dict[str, Any]]:
    """Pooled AUC when the real DES of n % of patients is replaced by synthetic DES.

    The population is fixed: every test case with real *and* synthetic DES. For each n and
    repetition a seeded random n % of its patients lose their real DES (both views) for
    the synthetic one; C* and F+C* are scored on the whole population, F (no DES) is the
    flat reference. Rows give the mean, standard deviation, minimum and maximum over the
    repetitions (n = 0 and 100 % have no spread).
    """
    population = []  # (patient, label, F, C real, C synthetic, F+C real, F+C synthetic)
    for item in folds:
        slot_mcc, modality_mcc = item.weights.slot_mcc, item.weights.modality_mcc
        for case in item.cases.values():
            synthetic = {s: p for s, p in case.synthetic.items() if s.startswith("DES_")}
            if not synthetic:  # a run without synthesis: no curve
                continue
            values = [
                fused_probability(case, "F", slot_mcc, modality_mcc),
                fused_probability(case, "C", slot_mcc, modality_mcc),
                fused_probability(case, "C", slot_mcc, modality_mcc, synthetic),
                fused_probability(case, "F+C", slot_mcc, modality_mcc),
                fused_probability(case, "F+C", slot_mcc, modality_mcc, synthetic),
            ]
            if all(v is not None for v in values):
                population.append((case.patient, case.label, *values))
    if not population:
        return []
    patients = np.array([item[0] for item in population])
    labels = np.array([item[1] for item in population], dtype=int)
    table = np.array([item[2:] for item in population], dtype=float)
    if labels.sum() in (0, labels.size):
        return []
    distinct = np.array(sorted(set(patients.tolist())))
    rows = []
    reference = rank_auc(labels, table[:, 0])
    for percent in percents:
        count = round(distinct.size * percent / 100)
        aucs: dict[str, list[float]] = {"C*": [], "F+C*": []}
        for repetition in range(repetitions):
            rng = np.random.default_rng([seed, percent, repetition])
            chosen = rng.choice(distinct, size=count, replace=False) if count else []
            replaced = np.isin(patients, chosen)
            aucs["C*"].append(rank_auc(labels, np.where(replaced, table[:, 2], table[:, 1])))
            aucs["F+C*"].append(rank_auc(labels, np.where(replaced, table[:, 4], table[:, 3])))
        aucs["F"] = [reference] * repetitions
        for curve, values in aucs.items():
            array = np.array(values)
            rows.append(
                {
                    "percent_synthetic": percent,
                    "curve": curve,
                    "auc_mean": float(array.mean()),
                    "auc_sd": float(array.std(ddof=1)) if array.size > 1 else math.nan,
                    "auc_min": float(array.min()),
                    "auc_max": float(array.max()),
                    "repetitions": repetitions,
                    "cases": int(labels.size),
                    "patients": int(distinct.size),
                }
            )
    return rows
