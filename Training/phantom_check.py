"""How far a model package is from what the phantom allows: a check anyone can run.

A fresh phantom cohort (a seed no training used) is written, the package scores it with
its fold ensemble (:func:`Training.holdout.score_package`, the inference path), and the
results are printed beside bounds that need no training:

- the hand feature (brightest DES pixel in the eroded breast minus the breast median,
  no fitting) on real and on synthetic DES;
- oracles from the phantom's ground truth (:mod:`Training.phantom_bounds`), each a
  logistic regression scored by 5-fold cross-validation on the check cohort: what DES
  shows at the networks' grid (enhancement strength, pattern, diameter), the same with
  the margin's shape resolved, what LE shows (masked density, diameter, spicules, margin
  blur and irregularity) and the latent aggressiveness behind it, plus single values;
- the same ceilings on 20 000 lesions drawn from the phantom's generative model, free of
  the cohort's sampling noise;
- image oracles: measurements of the network-grid images where the lesion is (the
  phantom's mask), fitted the same way; what the pixels hold for a reader that knew the
  location, for LE, DES, both, and the synthetic DES;
- lesion contrast (lesion minus ring) of real and synthetic DES per label, their
  correlation, the correlation an LE-only predictor could reach at best (the real
  contrast predicted out of fold from the lesion's LE truth: the latent aggressiveness,
  the diameter and what LE shows), and what the LE *pixels* where the lesion is predict
  of it (a fitted reader of the network-grid LE told the mask): the truth's bound asks
  for parameters that a 128² image shows only in part; and the label's own correlation
  with it (what a generator that knew only the diagnosis would reach).

Whole-image, in-breast and in-lesion errors of the synthetic DES are reported beside the
paper's whole-image PSNR/SSIM, which cannot see a lesion under 1 % of the image.
Phantom figures are synthetic: they show the pipeline can learn, not clinical performance.

>>> check = run_phantom_check(load_package(demo_package_path()), patients=60)  # doctest: +SKIP
>>> print(format_phantom_check(check))  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import VirtualBiopsyLib
from Training.cache import PreprocessedCache
from Training.cli import DEMO_COHORT_SEED
from Training.datasets import group_cases, read_manifest
from Training.evaluation import SETTINGS
from Training.holdout import PackageScores, score_package
from Training.local_jobs import default_workers
from Training.metrics import (
    REGION_METRICS,
    auc,
    average_generation_metrics,
    best_fixed_mix,
    contrast_by_label,
    lesion_contrast,
    masked_generation_metrics,
    pearson_r,
)
from Training.phantom_bounds import (
    CV_FOLDS,
    FEATURE_SETS,
    POPULATION_LESIONS,
    ceilings,
    cross_validated_probabilities,
    population_bounds,
)
from Training.phantom_truth import (
    MEASUREMENTS,
    CaseTruth,
    hand_feature,
    lesion_measurements,
    phantom_truth,
    radial_profile,
)
from Training.report.delong import auc_interval, delong_test
from VirtualBiopsyLib.atomic_io import finite_json, write_json_atomic, write_text_atomic
from VirtualBiopsyLib.errors import OutputExistsError, UsageError
from VirtualBiopsyLib.inference.output import check_writable
from VirtualBiopsyLib.phantom import generate_cohort
from VirtualBiopsyLib.roles import VIEWS, Slot, slot_name

PHANTOM_CHECK_SEED = 2027  # no training cohort uses it (the demo model trains on seed 7)
PHANTOM_CHECK_PATIENTS = 60
#: What :func:`write_phantom_check` writes into its folder (and nothing else).
PHANTOM_CHECK_FILES = ("phantom_check.json", "phantom_check.md")
#: The method issue's targets that compare two settings, as (A, B) for AUC(A) − AUC(B).
COMPARISONS: tuple[tuple[str, str], ...] = (("Ĉ", "F"), ("F+Ĉ", "F"), ("F+C", "F"), ("C", "Ĉ"))
#: What a paired AUC difference records (DeLong), beside its case count.
DIFFERENCE_KEYS = ("difference", "ci_low", "ci_high", "p_value")
#: The fusions whose reference is the best fixed weighting of their two inputs, as
#: (fusion, LE setting, DES setting).
FUSIONS: tuple[tuple[str, str, str], ...] = (("F+Ĉ", "F", "Ĉ"), ("F+C", "F", "C"))

#: The lesion truth an LE-only predictor of the real contrast may use: the latent and
#: what LE shows (columns of :func:`Training.phantom_bounds.lesion_features`).
LE_TRUTH = ("aggressiveness", *FEATURE_SETS["le_visible"])
#: What each bound measures, as the check prints it.
BOUND_TITLES = {
    "image_oracle_des_auc": "image oracle: DES measured where the lesion is (true mask; "
    "contrast, peak, rim, size, margin): a reference for C",
    "image_oracle_le_auc": "image oracle: LE measured where the lesion is (true mask; "
    "contrast, surround, size, margin, spicule texture): a reference for F and Ĉ",
    "image_oracle_le_des_auc": "image oracle: LE and DES measured where the lesion is: a "
    "reference for F+C",
    "image_oracle_synthetic_des_auc": "image oracle: synthetic DES measured where the lesion "
    "is: what the generators' images hold for Ĉ",
    "oracle_des_auc": "oracle: everything DES shows, the margin's shape resolved (enhancement, "
    "pattern, diameter, aggressiveness for the shape)",
    "oracle_des_visible_auc": "oracle: what DES shows at the networks' grid (enhancement, "
    "pattern, diameter)",
    "oracle_le_visible_auc": "oracle: what LE shows (masked density, diameter, spicules, "
    "margin blur and irregularity)",
    "oracle_le_auc": "oracle: latent aggressiveness and diameter (what drives LE)",
    "hand_feature_real_des_auc": "hand feature on real DES (no fitting)",
    "hand_feature_synthetic_des_auc": "hand feature on synthetic DES (no fitting)",
    "oracle_des_enhancement_auc": "oracle: true DES enhancement",
    "oracle_le_aggressiveness_auc": "oracle: latent aggressiveness",
    "oracle_lesion_diameter_auc": "oracle: true lesion diameter",
}
POPULATION_TITLES = {
    "enhancement": "true DES enhancement alone",
    "des_visible": "what DES shows at the networks' grid: a ceiling for C",
    "des_all": "everything DES shows, the margin's shape resolved",
    "le_visible": "what LE shows: a ceiling for F and Ĉ (and for F+C with des_all)",
}


@dataclass
class ContrastPair:
    """One DES view of a case: its lesion contrast, real and synthetic, and what its LE
    shows (:func:`le_image_prediction`'s features; None without the view's LE)."""

    label: int
    real: float
    synthetic: float
    truth: CaseTruth
    le_pixels: np.ndarray | None


@dataclass
class PhantomCheck:
    """Scores of one package on one fresh phantom cohort, and the bounds beside them."""

    package: str
    patients: int
    seed: int
    cases: int
    settings: dict[str, dict[str, float]]  # auc, g_mean, mcc, cases, auc_ci_low/high
    comparisons: list[dict[str, Any]]  # the targets' AUC differences, paired (DeLong)
    bounds: dict[str, float]  # ground-truth oracles and hand features on this cohort
    population: dict[str, float]  # the same ceilings on a large draw (no cohort noise)
    lesion_contrast: dict[str, float]
    generation: dict[str, float]
    #: Per fusion of :data:`FUSIONS`: how its two inputs agree and what the best fixed
    #: weighting of them reaches on this cohort (:func:`_fusion_reference`).
    fusion: list[dict[str, Any]] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    #: Another package scored on the same cases: its name, its settings' metrics and
    #: each setting's AUC(package) − AUC(baseline), paired (DeLong). None without one.
    baseline: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return finite_json(asdict(self))


def run_phantom_check(
    package: Any,
    patients: int = PHANTOM_CHECK_PATIENTS,
    seed: int = PHANTOM_CHECK_SEED,
    work_dir: Path | None = None,
    baseline: Any | None = None,
) -> PhantomCheck:
    """Write a fresh phantom cohort, score ``package`` on it and measure the bounds.

    With a ``baseline`` package (an earlier model, say) it scores the same cases too, so a
    retrain is compared with what it replaces case by case, not across cohorts.
    """
    check_phantom_check_arguments(patients, seed)
    with tempfile.TemporaryDirectory(prefix="virtual-biopsy-phantom-check-") as temporary:
        folder = Path(work_dir or temporary)
        manifest = generate_cohort(
            folder / "cohort", patients=patients, seed=seed, workers=default_workers()
        )
        cases = group_cases(read_manifest(manifest).rows, phase="early")
        cache = PreprocessedCache(folder / "cache", package.preprocessing)
        scores = score_package(package, cases, cache)
        truth = phantom_truth(scores.cases, patients, seed, package.preprocessing)
        against = None
        if baseline is not None:
            baseline_cache = (  # one folder: entries are keyed by content and parameters
                cache
                if baseline.preprocessing == package.preprocessing
                else PreprocessedCache(folder / "cache", baseline.preprocessing)
            )
            against = _against_baseline(
                scores,
                score_package(baseline, cases, baseline_cache),
                f"{baseline.name} (model.json sha256 {baseline.sha256[:12]})",
            )
    return PhantomCheck(
        package=str(package.name),
        patients=patients,
        seed=seed,
        cases=len(scores.cases),
        settings=_with_auc_intervals(scores),
        comparisons=[_compare(scores, a, b) for a, b in COMPARISONS],
        bounds=_bounds(scores, truth),
        population=dict(population_bounds()),
        lesion_contrast=_contrast_summary(scores, truth),
        generation=_generation_summary(scores, truth),
        fusion=[_fusion_reference(scores, *names) for names in FUSIONS],
        notices=[
            VirtualBiopsyLib.SYNTHETIC_NOTICE,
            VirtualBiopsyLib.RESEARCH_USE_NOTICE,
            *check_notices(package, seed, baseline),
        ],
        baseline=against,
    )


def check_notices(package: Any, seed: int, baseline: Any | None = None) -> list[str]:
    """What a reader must know before reading the figures: a package (or baseline) with no
    generators leaves Ĉ and F+Ĉ unscored (n/a, not a score of 0), and the demo cohort's
    seed draws the patients ``demo-model`` trains on, so a package trained there is scored
    on data it has seen."""
    notices = []
    for role, candidate in (("package", package), ("baseline package", baseline)):
        if candidate is not None and not candidate.generators:
            notices.append(
                f"The {role} {candidate.name} has no LE-to-DES generators: its Ĉ and F+Ĉ "
                "are not scored (n/a), nor are the synthetic DES's figures."
            )
    if baseline is not None and baseline.sha256 == package.sha256:
        notices.append(
            "The baseline is the package itself (the same model.json sha256): every "
            "difference against it is 0 by construction."
        )
    if seed == DEMO_COHORT_SEED:
        notices.append(
            f"Seed {seed} draws the patients `demo-model` trains on (its default cohort "
            "seed): a package trained on them is scored here on data it has seen, so its "
            "figures are optimistic. Use another seed for a fresh cohort."
        )
    return notices


def _with_auc_intervals(scores: PackageScores) -> dict[str, dict[str, float]]:
    """Each setting's metrics with the 95 % DeLong interval of its AUC (NaN when a class
    is missing)."""
    settings = scores.metrics()
    for setting, metrics in settings.items():
        keys = sorted(scores.probabilities[setting])
        labels = scores.labels(keys)
        low = high = math.nan
        if 0 < labels.sum() < labels.size:
            values = np.array([scores.probabilities[setting][k] for k in keys])
            _, low, high = auc_interval(labels, values)
        metrics.update(auc_ci_low=low, auc_ci_high=high)
    return settings


def _compare(scores: PackageScores, a: str, b: str) -> dict[str, Any]:
    """AUC(a) − AUC(b) on the cases both settings score, DeLong's paired test: does a
    target such as "Ĉ above F" hold beyond chance on this cohort?"""
    paired = _paired_difference(scores, scores.probabilities[a], scores.probabilities[b])
    return {"a": a, "b": b} | paired


def _fusion_reference(scores: PackageScores, fusion: str, le: str, des: str) -> dict[str, Any]:
    """What any fixed weighting of ``le`` and ``des`` could give: the best weight on
    ``des`` (chosen on this cohort, so optimistic), its AUC and its paired difference
    from ``le`` (DeLong), beside the package's own ``fusion`` and the Pearson r of the
    two inputs' probabilities. Two readers of the same information (F and Ĉ both read
    the LE image) agree closely and no weighting lifts one above the other; a DES that
    shows what LE does not (C) lifts F however it is weighted."""
    a, b = scores.probabilities[le], scores.probabilities[des]
    keys = sorted(set(a) & set(b) & set(scores.probabilities[fusion]))
    labels = scores.labels(keys)
    first, second = np.array([a[k] for k in keys]), np.array([b[k] for k in keys])
    weight, best = best_fixed_mix(labels, first, second)
    mixed = dict(zip(keys, (1.0 - weight) * first + weight * second, strict=True))
    difference = _paired_difference(scores, mixed, a)  # NaN on one class, as the weight
    return {
        "fusion": fusion,
        "inputs": [le, des],
        "cases": len(keys),
        "pearson_r": pearson_r(first, second),
        "fusion_auc": auc(labels, np.array([scores.probabilities[fusion][k] for k in keys])),
        "best_weight": weight,
        "best_auc": best,
        "best_minus_first": {key: difference[key] for key in DIFFERENCE_KEYS},
    }


def _against_baseline(scores: PackageScores, baseline: PackageScores, name: str) -> dict[str, Any]:
    """Each setting's AUC(package) − AUC(baseline) on the same cases (paired DeLong)."""
    differences = [
        {"setting": setting}
        | _paired_difference(scores, scores.probabilities[setting], baseline.probabilities[setting])
        for setting in SETTINGS
    ]
    return {
        "package": name,
        "settings": _with_auc_intervals(baseline),
        "differences": differences,
        "comparisons": [_compare(baseline, a, b) for a, b in COMPARISONS],
    }


def _paired_difference(
    scores: PackageScores, a: dict[str, float], b: dict[str, float]
) -> dict[str, Any]:
    """AUC(a) − AUC(b) over the cases both score, with its DeLong interval and p (NaN
    when those cases hold one class, as every AUC of one class)."""
    keys = sorted(set(a) & set(b))
    labels = scores.labels(keys)
    record: dict[str, Any] = {"cases": len(keys)}
    if not 0 < labels.sum() < labels.size:
        return record | dict.fromkeys(DIFFERENCE_KEYS, math.nan)
    result = delong_test(labels, np.array([a[k] for k in keys]), np.array([b[k] for k in keys]))
    return record | {
        "difference": result.difference,
        "ci_low": result.ci_low,
        "ci_high": result.ci_high,
        "p_value": result.p_value,
    }


def _case_max(images: dict[str, dict[str, np.ndarray]], truth: dict[str, CaseTruth], key: str):
    """The hand feature of one case: the larger of its DES views (NaN if none)."""
    values = [
        hand_feature(images[slot][key], truth[key].breast_masks[slot])
        for slot in (slot_name("DES", v) for v in VIEWS)
        if key in images.get(slot, {}) and slot in truth[key].breast_masks
    ]
    return max(values) if values else math.nan


def _bounds(scores: PackageScores, truth: dict[str, CaseTruth]) -> dict[str, float]:
    keys = [case.key for case in scores.cases]
    labels = scores.labels(keys)

    def auc_of(values: list[float]) -> float:
        usable = [(label, v) for label, v in zip(labels, values, strict=True) if not math.isnan(v)]
        if not usable:
            return math.nan
        y, x = zip(*usable, strict=True)
        return auc(np.array(y), np.array(x))

    def fitted(features: Any) -> float:
        return auc_of(list(cross_validated_probabilities(features, labels)))

    cohort = ceilings([truth[k].features for k in keys], labels)
    measured = {m: _case_measurements(scores.real, truth, keys, m) for m in ("LE", "DES")}
    synthetic = _case_measurements(scores.synthetic, truth, keys, "DES")
    return {
        "image_oracle_des_auc": fitted(measured["DES"]),
        "image_oracle_le_auc": fitted(measured["LE"]),
        "image_oracle_le_des_auc": fitted(np.hstack([measured["LE"], measured["DES"]])),
        "image_oracle_synthetic_des_auc": fitted(synthetic),
        "oracle_des_auc": cohort["des_all"],
        "oracle_des_visible_auc": cohort["des_visible"],
        "oracle_le_visible_auc": cohort["le_visible"],
        "oracle_le_auc": fitted([[truth[k].aggressiveness, truth[k].diameter_mm] for k in keys]),
        "hand_feature_real_des_auc": auc_of([_case_max(scores.real, truth, k) for k in keys]),
        "hand_feature_synthetic_des_auc": auc_of(
            [_case_max(scores.synthetic, truth, k) for k in keys]
        ),
        "oracle_des_enhancement_auc": auc_of([truth[k].enhancement for k in keys]),
        "oracle_le_aggressiveness_auc": auc_of([truth[k].aggressiveness for k in keys]),
        "oracle_lesion_diameter_auc": auc_of([truth[k].diameter_mm for k in keys]),
    }


def _case_measurements(
    images: dict[str, dict[str, np.ndarray]],
    truth: dict[str, CaseTruth],
    keys: list[str],
    modality: str,
) -> np.ndarray:
    """``[case, measurement]``: :func:`lesion_measurements` of a modality's images, the
    mean over a case's views; a value no view has takes its column's mean."""
    rows = np.full((len(keys), len(MEASUREMENTS)), np.nan)
    for row, key in enumerate(keys):
        record = truth[key]
        views = [
            lesion_measurements(
                images[slot][key], record.lesion_masks[slot], record.breast_masks[slot]
            )
            for slot in (slot_name(modality, view) for view in VIEWS)
            if key in images.get(slot, {}) and slot in record.lesion_masks
        ]
        if views:  # NaN-free mean over the views (NaN where no view has a value)
            rows[row] = np.ma.masked_invalid(np.array(views)).mean(axis=0).filled(np.nan)
    column_means = np.ma.masked_invalid(rows).mean(axis=0).filled(0.0)
    rows = np.where(np.isnan(rows), column_means, rows)
    return rows


def _des_images(scores: PackageScores, truth: dict[str, CaseTruth]):
    """(case, truth or None, slot, real DES, synthetic DES) for every DES view with both
    images, whatever masks its truth holds: a view without a lesion mask still has its
    whole-image and in-breast errors."""
    for case in scores.cases:
        record = truth.get(case.key)
        for view in VIEWS:
            slot = slot_name("DES", view)
            real = scores.real.get(slot, {}).get(case.key)
            fake = scores.synthetic.get(slot, {}).get(case.key)
            if real is not None and fake is not None:
                yield case, record, slot, real, fake


def _contrast_pairs(scores: PackageScores, truth: dict[str, CaseTruth]) -> list[ContrastPair]:
    """One :class:`ContrastPair` per case and DES view with a lesion mask and both
    contrasts defined."""
    pairs = []
    for case, record, slot, real, fake in _des_images(scores, truth):
        if record is None or slot not in record.lesion_masks or slot not in record.breast_masks:
            continue
        mask, breast = record.lesion_masks[slot], record.breast_masks[slot]
        real_contrast = lesion_contrast(real, mask, breast)
        fake_contrast = lesion_contrast(fake, mask, breast)
        if math.isnan(real_contrast) or math.isnan(fake_contrast):
            continue
        le_slot = Slot(slot).partner
        le = scores.real.get(le_slot, {}).get(case.key)
        le_mask, le_breast = record.lesion_masks.get(le_slot), record.breast_masks.get(le_slot)
        le_pixels = (
            np.concatenate(
                [
                    lesion_measurements(le, le_mask, le_breast),
                    radial_profile(le, le_mask, le_breast),
                ]
            )
            if le is not None and le_mask is not None and le_breast is not None
            else None
        )
        pairs.append(ContrastPair(case.label, real_contrast, fake_contrast, record, le_pixels))
    return pairs


def _contrast_summary(scores: PackageScores, truth: dict[str, CaseTruth]) -> dict[str, float]:
    pairs = _contrast_pairs(scores, truth)
    if len(pairs) < 3:
        return {"images": len(pairs)}
    labels = np.array([pair.label for pair in pairs])
    real = np.array([pair.real for pair in pairs])
    fake = np.array([pair.synthetic for pair in pairs])
    summary = {"images": len(pairs)}
    by_label = contrast_by_label(real, fake, labels)
    summary |= {key: value for key, value in by_label.items() if not key.endswith("_pairs")}
    summary["pearson_r_real_vs_synthetic"] = pearson_r(real, fake)
    summary["pearson_r_bound_from_le"] = pearson_r(real, _le_prediction(pairs))
    summary["pearson_r_le_image_reference"] = pearson_r(real, le_image_prediction(pairs))
    summary["pearson_r_label"] = pearson_r(real, labels.astype(float))  # knowing the diagnosis
    return summary


def _le_prediction(pairs: list[ContrastPair]) -> np.ndarray:
    """Each image's real lesion contrast as the lesion's LE truth predicts it, out of fold.

    The best an LE→DES generator could draw: gradient boosting (5 folds) on the latent
    aggressiveness and what LE shows, the diameter included (:data:`LE_TRUTH`); whatever
    the real contrast owes to the label alone or to chance no LE predictor can know.
    """
    if len(pairs) < 2 * CV_FOLDS:
        return np.full(len(pairs), math.nan)
    real = np.array([pair.real for pair in pairs])
    x = np.array([[pair.truth.features[column] for column in LE_TRUTH] for pair in pairs])
    model = HistGradientBoostingRegressor(max_depth=3, max_iter=200, random_state=0)
    return cross_val_predict(model, x, real, cv=KFold(CV_FOLDS, shuffle=True, random_state=0))


def le_image_prediction(pairs: list[ContrastPair]) -> np.ndarray:
    """Each image's real lesion contrast as the LE *pixels* where the lesion is predict it,
    out of fold: what the network-grid LE image shows of the truth behind the contrast.

    A standardised ridge regression (5 folds, its penalty chosen inside each) on the LE
    image's :func:`lesion_measurements` and :func:`radial_profile` at the true mask: a
    fitted reader told where the lesion is, a reference for a generator that must find
    it (not a ceiling: a network may read more of the pixels). NaN for fewer than ten
    images with LE; images without LE get NaN.
    """
    usable = [i for i, pair in enumerate(pairs) if pair.le_pixels is not None]
    prediction = np.full(len(pairs), math.nan)
    if len(usable) < 2 * CV_FOLDS:
        return prediction
    x = np.array([pairs[i].le_pixels for i in usable])
    x = np.where(np.isnan(x), np.nanmean(x, axis=0), x)  # a ring outside the breast
    x = np.nan_to_num(x)  # a column NaN everywhere
    real = np.array([pairs[i].real for i in usable])
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
    folds = KFold(CV_FOLDS, shuffle=True, random_state=0)
    prediction[usable] = cross_val_predict(model, x, real, cv=folds)
    return prediction


def _generation_summary(scores: PackageScores, truth: dict[str, CaseTruth]) -> dict[str, float]:
    """Whole-image, in-breast and in-lesion errors (data_range 1), each averaged over the
    DES images whose region is known and not empty, with how many those are
    (:func:`Training.metrics.average_generation_metrics`)."""
    per_image = [
        masked_generation_metrics(
            fake,
            real,
            None if record is None else record.breast_masks.get(slot),
            None if record is None else record.lesion_masks.get(slot),
        )
        for _, record, slot, real, fake in _des_images(scores, truth)
    ]
    return average_generation_metrics(per_image)


def _number(value: float | None, percent: bool = True) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.1f}" if percent else f"{value:.3f}"


def _signed(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{100 * value:+.1f}"


def _p_value(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def format_phantom_check(check: PhantomCheck) -> str:
    """The check as Markdown: settings, bounds, lesion contrast, generation quality."""
    lines = [f"# Phantom check: {check.package}", ""]
    lines += [f"> {notice}" for notice in check.notices]
    lines += [
        "",
        f"{check.cases} cases (LE and real DES) of {check.patients} fresh phantom patients "
        f"(seed {check.seed}); fold ensemble as in `predict`.",
        "",
        "| setting | AUC (%) | AUC 95 % CI (DeLong) | G-mean (%) | MCC (%) | cases |",
        "|---|---|---|---|---|---|",
    ]
    for setting in SETTINGS:
        m = check.settings[setting]
        interval = f"{_number(m.get('auc_ci_low'))}–{_number(m.get('auc_ci_high'))}"
        lines.append(
            f"| {setting} | {_number(m['auc'])} | {interval} | {_number(m['g_mean'])} | "
            f"{_number(m['mcc'])} | {m['cases']} |"
        )
    lines += ["", *_comparison_table(check.comparisons), "", *_fusion_table(check.fusion)]
    if check.baseline is not None:
        lines += ["", *_baseline_tables(check.settings, check.baseline)]
    lines += ["", "| bound (this cohort) | AUC (%) |", "|---|---|"]
    lines += [f"| {BOUND_TITLES[key]} | {_number(value)} |" for key, value in check.bounds.items()]
    lines += [
        "",
        f"| ceiling of the phantom itself ({POPULATION_LESIONS} drawn lesions, no cohort "
        "noise) | AUC (%) |",
        "|---|---|",
    ]
    population = check.population.items()
    lines += [f"| {POPULATION_TITLES[key]} | {_number(value)} |" for key, value in population]
    contrast = check.lesion_contrast
    lines += ["", "| lesion contrast (lesion − ring) | benign | malignant |", "|---|---|---|"]
    for source in ("real", "synthetic"):
        lines.append(
            f"| {source} DES | {_number(contrast.get(f'{source}_benign'), False)} | "
            f"{_number(contrast.get(f'{source}_malignant'), False)} |"
        )
    lines += [
        "",
        f"Pearson r of lesion contrast, real vs synthetic: "
        f"{_number(contrast.get('pearson_r_real_vs_synthetic'), False)} over "
        f"{contrast.get('images', 0)} DES images; best an LE-only predictor reaches "
        f"(out of fold, from the lesion's LE truth): "
        f"{_number(contrast.get('pearson_r_bound_from_le'), False)}; what the LE pixels "
        "where the lesion is predict (out of fold, a ridge regression told the mask): "
        f"{_number(contrast.get('pearson_r_le_image_reference'), False)}; the label alone "
        f"(a generator that knew the diagnosis and nothing more): "
        f"{_number(contrast.get('pearson_r_label'), False)}.",
        "",
        "| generation (synthetic vs real DES, data_range 1) | value | DES images |",
        "|---|---|---|",
    ]
    generation = check.generation
    rows = [
        f"| {name} | {_number(generation[name], False)} | {int(generation.get(count, 0))} |"
        for count, metrics in REGION_METRICS.items()
        for name in metrics
        if name in generation
    ]
    if not rows:  # no synthetic DES: an empty table would read as a lost result
        rows = ["| no synthetic DES beside a real one: nothing to compare | n/a | 0 |"]
    return "\n".join(lines + rows) + "\n"


def _comparison_table(comparisons: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| paired comparison (same cases, DeLong) | AUC difference (%) | 95 % CI | p | cases |",
        "|---|---|---|---|---|",
    ]
    for c in comparisons:
        lines.append(f"| {c['a']} − {c['b']} | {_difference_cells(c)} | {c['cases']} |")
    return lines


def _fusion_table(fusion: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| fusion | its AUC (%) | r of its inputs | best fixed weight on the second input "
        "(chosen here: optimistic) | its AUC (%) | − first input (%) | 95 % CI | p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in fusion:
        first, second = f["inputs"]
        lines.append(
            f"| {f['fusion']} ({first}, {second}) | {_number(f['fusion_auc'])} | "
            f"{_number(f['pearson_r'], False)} | {_number(f['best_weight'], False)} | "
            f"{_number(f['best_auc'])} | {_difference_cells(f['best_minus_first'])} |"
        )
    return lines


def _baseline_tables(settings: dict[str, dict[str, float]], baseline: dict[str, Any]) -> list[str]:
    """This package against the baseline, setting by setting, then the baseline's own
    target comparisons."""
    lines = [
        f"Against the baseline package {baseline['package']}, on the same cases:",
        "",
        "| setting | AUC (%) | baseline AUC (%) | difference (%) | 95 % CI | p | cases |",
        "|---|---|---|---|---|---|---|",
    ]
    for d in baseline["differences"]:
        setting = d["setting"]
        lines.append(
            f"| {setting} | {_number(settings[setting]['auc'])} | "
            f"{_number(baseline['settings'][setting]['auc'])} | {_difference_cells(d)} | "
            f"{d['cases']} |"
        )
    return [
        *lines,
        "",
        "The baseline's own comparisons:",
        "",
        *_comparison_table(baseline["comparisons"]),
    ]


def _difference_cells(record: dict[str, Any]) -> str:
    return (
        f"{_signed(record.get('difference'))} | {_signed(record.get('ci_low'))} to "
        f"{_signed(record.get('ci_high'))} | {_p_value(record.get('p_value'))}"
    )


def check_phantom_check_arguments(patients: int, seed: int) -> None:
    """Refuse a cohort the phantom cannot draw (:class:`UsageError`), before the minutes
    a check takes rather than deep inside cohort generation."""
    if patients < 1:
        raise UsageError(f"--patients {patients}: a phantom check needs at least 1 patient")
    if seed < 0:
        raise UsageError(f"--seed {seed}: the phantom's seed must be 0 or more")


def check_phantom_check_out(out_dir: Path, overwrite: bool = False) -> None:
    """Refuse ``out_dir`` before the check runs (it takes minutes) when writing there would
    fail or replace a user's earlier check.

    :class:`OutputExistsError` for a file in the way (:func:`check_writable`, as
    ``predict --out``) or, without ``overwrite``, for :data:`PHANTOM_CHECK_FILES` already
    there; :class:`OutputNotWritableError` for a folder that cannot be written. Other
    files in ``out_dir`` are never touched, so they do not count.
    """
    out_dir = Path(out_dir)
    check_writable(out_dir)
    existing = [out_dir / name for name in PHANTOM_CHECK_FILES if os.path.lexists(out_dir / name)]
    for path in existing:
        if not path.is_file():
            raise OutputExistsError(f"{path}: exists and is not a file; choose another output")
    if existing and not overwrite:
        names = " and ".join(path.name for path in existing)
        raise OutputExistsError(
            f"{out_dir}: holds an earlier phantom check ({names}); use --overwrite to replace it"
        )


def write_phantom_check(
    check: PhantomCheck, out_dir: Path, *, overwrite: bool = False
) -> list[Path]:
    """``phantom_check.json`` and ``phantom_check.md`` in ``out_dir``, each atomic; an
    earlier check there is replaced only with ``overwrite`` (:func:`check_phantom_check_out`,
    checked again here in case one appeared while the check ran)."""
    out_dir = Path(out_dir)
    check_phantom_check_out(out_dir, overwrite)
    json_path, markdown_path = (out_dir / name for name in PHANTOM_CHECK_FILES)
    record, markdown = check.to_dict(), format_phantom_check(check)  # both before either file
    write_json_atomic(json_path, record)
    write_text_atomic(markdown_path, markdown)
    return [json_path, markdown_path]
