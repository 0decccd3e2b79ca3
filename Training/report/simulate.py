"""Run folders with a known signal and no training: for tests, benchmarks and a first look.

A simulated run has every file the report reads (``config.json``, ``run.json``,
``splits.json``, ``predictions.csv``, ``fold_*/fold.json``, generator ``result.json``) and
per-image probabilities drawn from a logistic model whose strength per modality is set
by the caller, so the report's numbers have a known direction (real DES > synthetic DES >
LE by default). Every simulated run is marked synthetic: its numbers are not evidence of
anything clinical.

>>> run_dir = simulate_run(Path("runs/simulated"), patients=200)  # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

import VirtualBiopsyLib
from Training.config import RunConfig, SplitConfig
from Training.evaluation import (
    REAL,
    SYNTHETIC,
    Prediction,
    modality_mccs,
    slot_mccs,
    write_predictions,
)
from Training.report.data import EVERY_PATIENT_PROTOCOL, PAPER_PROTOCOL
from VirtualBiopsyLib.atomic_io import write_text_atomic
from VirtualBiopsyLib.roles import SLOTS

DENSITIES = ("A", "B", "C", "D")


def _chunks(patients: list[str], n_chunks: int, rng: np.random.Generator) -> list[list[str]]:
    order = list(rng.permutation(patients))
    return [order[i::n_chunks] for i in range(n_chunks)]


def simulate_run(
    out_dir: Path,
    patients: int = 200,
    architecture: str = "resnet18",
    protocol: str = PAPER_PROTOCOL,
    n_folds: int = 5,
    seed: int = 0,
    strength: dict[str, float] | None = None,
    missing_des: float = 0.1,
) -> Path:
    """Write a simulated run folder; ``strength`` is the log-odds shift per modality."""
    strength = {"LE": 0.5, "DES": 1.4, "SYNTHETIC": 0.8, **(strength or {})}
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    names = [f"sim{index:04d}" for index in range(patients)]
    n_chunks = 2 * n_folds if protocol == PAPER_PROTOCOL else n_folds
    chunks = _chunks(names, n_chunks, rng)
    folds = []
    for fold in range(n_folds):
        if protocol == PAPER_PROTOCOL:
            test, val = chunks[2 * fold], chunks[2 * fold + 1]
        else:
            test, val = chunks[fold], chunks[(fold + 1) % n_folds]
        train = sorted(set(names) - set(test) - set(val))
        folds.append({"fold": fold, "train": train, "val": sorted(val), "test": sorted(test)})
    cases = []
    for patient in names:
        density = DENSITIES[int(rng.integers(0, 4))]
        for side in ("L", "R")[: int(rng.integers(1, 3))]:
            label = int(rng.uniform() < 0.6)
            no_des = bool(rng.uniform() < missing_des)
            cases.append((patient, f"{patient}_{side}", label, density, no_des))
    predictions: list[Prediction] = []
    for item in folds:
        for split in ("val", "test"):
            members = set(item[split])
            for patient, case, label, density, no_des in cases:
                if patient not in members:
                    continue
                sign = 2 * label - 1
                latent = rng.normal()  # what LE and synthetic DES share
                for slot in SLOTS:
                    modality = slot.split("_")[0]
                    if not (modality == "DES" and no_des):
                        logit = strength[modality] * sign + rng.normal(0, 1.0)
                        if modality == "LE":
                            logit += 0.5 * latent
                        probability = float(1 / (1 + np.exp(-logit)))
                        predictions.append(
                            Prediction(
                                item["fold"],
                                split,
                                case,
                                patient,
                                label,
                                density,
                                slot,
                                REAL,
                                probability,
                            )
                        )
                    if modality == "DES":
                        logit = strength["SYNTHETIC"] * sign + 0.5 * latent + rng.normal(0, 1.0)
                        predictions.append(
                            Prediction(
                                item["fold"],
                                split,
                                case,
                                patient,
                                label,
                                density,
                                slot,
                                SYNTHETIC,
                                float(1 / (1 + np.exp(-logit))),
                            )
                        )
    _write(out_dir, architecture, protocol, n_folds, folds, predictions, rng)
    return out_dir


def _write(out_dir, architecture, protocol, n_folds, folds, predictions, rng) -> None:
    config = RunConfig()
    config = replace(
        config,
        classifier=replace(config.classifier, architecture=architecture),
        splits=replace(config.splits, n_folds=n_folds),
    ).to_dict()
    if protocol != PAPER_PROTOCOL or "protocol" in {f.name for f in fields(SplitConfig)}:
        config["splits"]["protocol"] = protocol
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "config.json", json.dumps(config, indent=2) + "\n")
    record = {
        "format": "virtual-biopsy-training-run-v1",
        "status": "complete",
        "simulated": True,
        "manifest_sha256": "0" * 64,
        "code_version": VirtualBiopsyLib.__version__,
        "synthetic_data": True,
        "synthetic_notice": VirtualBiopsyLib.SYNTHETIC_NOTICE,
        "research_use_notice": VirtualBiopsyLib.RESEARCH_USE_NOTICE,
        "started": "2026-01-01T00:00:00+00:00",
        "updated": "2026-01-01T00:00:00+00:00",
    }
    write_text_atomic(out_dir / "run.json", json.dumps(record, indent=2) + "\n")
    scheme = {"scheme": f"simulated ({protocol} protocol)", "folds": folds}
    write_text_atomic(out_dir / "splits.json", json.dumps(scheme, indent=2) + "\n")
    write_predictions(predictions, out_dir / "predictions.csv")
    for item in folds:
        fold = item["fold"]
        rows = [p for p in predictions if p.fold == fold]
        fold_dir = out_dir / f"fold_{fold}"
        write_predictions(rows, fold_dir / "predictions.csv")
        val = [p for p in rows if p.split == "val"]
        slot_mcc = slot_mccs(val)
        record = {"fold": fold, "val_mcc": slot_mcc, "modality_mcc": modality_mccs(val, slot_mcc)}
        write_text_atomic(fold_dir / "fold.json", json.dumps(record, indent=2) + "\n")
        for view in ("CC", "MLO"):
            quality = {
                "n_pairs": len(item["test"]),
                "data_range": 1.0,
                "region": "whole image",
                "mse": float(rng.uniform(0.002, 0.004)),
                "psnr": float(rng.uniform(24, 28)),
                "ssim": float(rng.uniform(0.7, 0.8)),
                "breast_mse": float(rng.uniform(0.006, 0.01)),  # the breast is harder
                "breast_psnr": float(rng.uniform(20, 23)),
            }
            result = {"view": view, "fold": fold, "test_generation": quality}
            folder = fold_dir / "generators" / view
            write_text_atomic(folder / "result.json", json.dumps(result, indent=2) + "\n")


__all__ = ["EVERY_PATIENT_PROTOCOL", "PAPER_PROTOCOL", "simulate_run"]
