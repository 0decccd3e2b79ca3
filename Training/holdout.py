"""Score a model package on patients it never saw: the fold ensemble, as inference uses it.

Every fold's classifiers predict each held-out case; the library's
:func:`VirtualBiopsyLib.ensemble.fold_ensemble` fuses them fold by fold with that fold's
validation MCCs (Eq. 7–8) and averages over folds — the same function ``predict`` uses.
Settings are those of the paper: ``F`` (LE), ``C`` (real DES), ``Ĉ`` (DES synthesised by
the package's generator G_v from LE, its probabilities recalibrated for synthetic DES as
``predict`` does), ``F+C`` and ``F+Ĉ``.

All five settings are scored on the same cases: those with at least one LE and one real
DES image, so that C and Ĉ (and F+C and F+Ĉ) are paired comparisons on one population.
A separate held-out cohort scored by the ensemble is a steadier check than the pooled
per-fold test predictions of tiny cross-validation folds.

>>> from VirtualBiopsyLib.models.package import load_package
>>> scores = evaluate_package(load_package(Path("pkg")), Path("heldout/manifest.csv"),
...                           Path("cache"))  # doctest: +SKIP
>>> scores["F+C"]["auc"] > 0.5  # doctest: +SKIP
True
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from Training.cache import PreprocessedCache
from Training.datasets import TrainingCase, group_cases, read_manifest
from Training.evaluation import SETTINGS, inputs_of
from Training.metrics import classification_metrics
from VirtualBiopsyLib.ensemble import fold_ensemble
from VirtualBiopsyLib.roles import SLOTS, VIEWS, Modality, slot_name

Images = dict[str, dict[str, np.ndarray]]  # {slot: {case key: preprocessed array}}


@dataclass
class PackageScores:
    """A package's fold-ensemble probabilities on held-out cases, and what it saw."""

    cases: list[TrainingCase]  # the scored population (LE and real DES present)
    probabilities: dict[str, dict[str, float]]  # {setting: {case key: fused probability}}
    real: Images
    synthetic: Images  # G_v(LE) per DES slot
    threshold: float

    def labels(self, keys: list[str]) -> np.ndarray:
        by_key = {case.key: case.label for case in self.cases}
        return np.array([by_key[key] for key in keys], dtype=int)

    def metrics(self) -> dict[str, dict[str, float]]:
        """AUC / G-mean / MCC and the case count of every setting."""
        result = {}
        for setting in SETTINGS:
            keys = sorted(self.probabilities[setting])
            scores = np.array([self.probabilities[setting][k] for k in keys])
            result[setting] = {
                **classification_metrics(self.labels(keys), scores, self.threshold),
                "cases": len(keys),
            }
        return result


def score_package(
    package: Any, cases: list[TrainingCase], cache: PreprocessedCache
) -> PackageScores:
    """Fold-ensemble probabilities of every setting for the cases with LE and real DES."""
    cases = [case for case in cases if _has(case, Modality.LE) and _has(case, Modality.DES)]
    real = {
        slot: {case.key: cache.load(case.slots[slot]) for case in cases if slot in case.slots}
        for slot in SLOTS
    }
    synthetic = _synthetic_des(package, real)
    folds = range(len(package.folds))
    per_fold_real = [_fold_probabilities(package, k, real) for k in folds]
    per_fold_fake = [_fold_probabilities(package, k, synthetic, synthetic=True) for k in folds]
    probabilities: dict[str, dict[str, float]] = {setting: {} for setting in SETTINGS}
    for case in cases:
        inputs = [
            _setting_inputs(real_k.get(case.key, {}), fake_k.get(case.key, {}))
            for real_k, fake_k in zip(per_fold_real, per_fold_fake, strict=True)
        ]
        for setting in SETTINGS:
            per_fold = [fold_inputs[setting] for fold_inputs in inputs]
            if all(per_fold):
                ensemble = fold_ensemble(per_fold, package.folds, package.threshold)
                probabilities[setting][case.key] = ensemble.mean
    return PackageScores(cases, probabilities, real, synthetic, package.threshold)


def evaluate_package(
    package: Any, manifest_path: Path, cache_dir: Path, phase: str | None = "early"
) -> dict[str, dict[str, float]]:
    """AUC / G-mean / MCC (and case count) of each setting on a held-out manifest."""
    cases = group_cases(read_manifest(manifest_path).rows, phase=phase)
    cache = PreprocessedCache(cache_dir, package.preprocessing)
    return score_package(package, cases, cache).metrics()


def _has(case: TrainingCase, modality: Modality) -> bool:
    return any(slot_name(modality, view) in case.slots for view in VIEWS)


@torch.no_grad()
def _synthetic_des(package: Any, real: Images) -> Images:
    synthetic: Images = {}
    for view in VIEWS:
        generator = package.load_generator(view, "cpu")
        le = real[slot_name("LE", view)]
        if generator is None or not le:
            continue
        keys = sorted(le)
        output = generator(torch.from_numpy(np.stack([le[k] for k in keys]))[:, None])
        synthetic[slot_name("DES", view)] = {k: output[i, 0].numpy() for i, k in enumerate(keys)}
    return synthetic


@torch.no_grad()
def _fold_probabilities(
    package: Any, fold: int, images: Images, synthetic: bool = False
) -> dict[str, dict[str, float]]:
    """{case key: {slot: p}} of one fold's classifiers on the images given per slot;
    ``synthetic`` images get the classifier's synthetic-DES recalibration, as in
    ``predict``."""
    result: dict[str, dict[str, float]] = {}
    for slot, by_case in images.items():
        entry = package.folds[fold].classifiers.get(slot)
        if not by_case or entry is None:
            continue
        keys = sorted(by_case)
        model = package.load_classifier(fold, slot, "cpu")
        batch = torch.from_numpy(np.stack([by_case[k] for k in keys]))[:, None]
        for key, probability in zip(keys, model.probability(batch).tolist(), strict=True):
            value = entry.on_synthetic(probability) if synthetic else float(probability)
            result.setdefault(key, {})[slot] = value
    return result


def _setting_inputs(
    real: dict[str, float], synthetic: dict[str, float]
) -> dict[str, dict[str, float]]:
    le, des = inputs_of(real, Modality.LE), inputs_of(real, Modality.DES)
    return {
        "F": le,
        "C": des,
        "Ĉ": synthetic,
        "F+C": {**le, **des} if le and des else {},
        "F+Ĉ": {**le, **synthetic} if le and synthetic else {},
    }
