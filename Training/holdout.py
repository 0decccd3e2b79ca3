"""Score a model package on patients it never saw: the fold ensemble, as inference uses it.

Every fold's classifiers predict each held-out case; each fold fuses them with its own
validation MCCs (Eq. 7–8) and the case's probability is the mean over folds. Settings are
those of the paper: ``F`` (LE), ``C`` (real DES), ``Ĉ`` (DES synthesised by the package's
generator G_v from LE), ``F+C`` and ``F+Ĉ``. With tiny cross-validation folds the pooled
per-fold test predictions mix five differently calibrated models; a separate held-out
cohort scored by the ensemble is the steadier check that training learned something.

>>> from VirtualBiopsyLib.models.package import load_package
>>> scores = evaluate_package(load_package(Path("pkg")), Path("heldout/manifest.csv"),
...                           Path("cache"))  # doctest: +SKIP
>>> scores["F+C"]["auc"] > 0.5  # doctest: +SKIP
True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from Training.cache import PreprocessedCache
from Training.datasets import TrainingCase, group_cases, read_manifest
from Training.evaluation import SETTINGS
from Training.metrics import classification_metrics
from VirtualBiopsyLib.fusion import fuse_case
from VirtualBiopsyLib.roles import SLOTS, VIEWS, slot_name


def evaluate_package(
    package: Any, manifest_path: Path, cache_dir: Path, phase: str | None = "early"
) -> dict[str, dict[str, float]]:
    """AUC / G-mean / MCC (and case count) of each setting on a held-out manifest."""
    cases = group_cases(read_manifest(manifest_path).rows, phase=phase)
    cache = PreprocessedCache(cache_dir, package.preprocessing)
    images = {slot: _slot_images(cases, slot, cache) for slot in SLOTS}
    synthetic = _synthetic_des(package, cases, images)
    per_case: dict[str, dict[str, list[float]]] = {s: {} for s in SETTINGS}
    for index, fold in enumerate(package.folds):
        real = _fold_probabilities(package, index, images)
        fake = _fold_probabilities(package, index, synthetic, slots=("DES_CC", "DES_MLO"))
        modality_mcc = {getattr(m, "value", m): v for m, v in fold.modality_mcc.items()}
        for case in cases:
            inputs = _setting_inputs(real.get(case.key, {}), fake.get(case.key, {}))
            for setting, probabilities in inputs.items():
                if probabilities:
                    fused = fuse_case(probabilities, fold.slot_mcc, modality_mcc).probability
                    per_case[setting].setdefault(case.key, []).append(fused)
    labels = {case.key: case.label for case in cases}
    result = {}
    for setting, scores in per_case.items():
        keys = sorted(scores)
        y = np.array([labels[k] for k in keys])
        p = np.array([np.mean(scores[k]) for k in keys])
        result[setting] = {**classification_metrics(y, p, package.threshold), "cases": len(keys)}
    return result


def _slot_images(
    cases: list[TrainingCase], slot: str, cache: PreprocessedCache
) -> dict[str, np.ndarray]:
    return {case.key: cache.load(case.slots[slot]) for case in cases if slot in case.slots}


@torch.no_grad()
def _synthetic_des(
    package: Any, cases: list[TrainingCase], images: dict[str, dict[str, np.ndarray]]
) -> dict[str, dict[str, np.ndarray]]:
    synthetic: dict[str, dict[str, np.ndarray]] = {}
    for view in VIEWS:
        generator = package.load_generator(view, "cpu")
        le = images[slot_name("LE", view)]
        if generator is None or not le:
            continue
        keys = sorted(le)
        output = generator(torch.from_numpy(np.stack([le[k] for k in keys]))[:, None])
        synthetic[slot_name("DES", view)] = {k: output[i, 0].numpy() for i, k in enumerate(keys)}
    return synthetic


@torch.no_grad()
def _fold_probabilities(
    package: Any,
    fold: int,
    images: dict[str, dict[str, np.ndarray]],
    slots: tuple[str, ...] = SLOTS,
) -> dict[str, dict[str, float]]:
    """{case key: {slot: p}} of one fold's classifiers."""
    result: dict[str, dict[str, float]] = {}
    for slot in slots:
        by_case = images.get(slot, {})
        if not by_case:
            continue
        keys = sorted(by_case)
        model = package.load_classifier(fold, slot, "cpu")
        batch = torch.from_numpy(np.stack([by_case[k] for k in keys]))[:, None]
        for key, probability in zip(keys, model.probability(batch).tolist(), strict=True):
            result.setdefault(key, {})[slot] = float(probability)
    return result


def _setting_inputs(
    real: dict[str, float], synthetic: dict[str, float]
) -> dict[str, dict[str, float]]:
    le = {s: p for s, p in real.items() if s.startswith("LE_")}
    des = {s: p for s, p in real.items() if s.startswith("DES_")}
    return {
        "F": le,
        "C": des,
        "Ĉ": synthetic,
        "F+C": {**le, **des} if le and des else {},
        "F+Ĉ": {**le, **synthetic} if le and synthetic else {},
    }
