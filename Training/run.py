"""A whole training run: splits, cache, per fold two generators and four classifiers.

Output folder (``RUN_DIR``)::

    config.json           the RunConfig (defaults = the paper's numbers)
    run.json              provenance: manifest SHA-256, dates, code version, notices, status
    splits.json           patient keys (pseudonyms) of every fold's train/val/test
    fold_<k>/generators/<CC|MLO>/   checkpoint/, generator_LE_to_DES_<view>.safetensors,
                                    result.json (val loss history, test MSE/PSNR/SSIM)
    fold_<k>/classifiers/<slot>/    checkpoint/, classifier_<slot>.safetensors, result.json
    fold_<k>/predictions.csv        val/test probabilities, real and synthetic DES
    fold_<k>/fold.json              validation MCC per slot and per modality
    predictions.csv       all folds' predictions
    metrics.json          per-fold and mean ± SE test metrics of F, C, Ĉ, F+C, F+Ĉ
    pretrain/<view>/      the generator pre-trained on ``--pretrain-manifest`` (optional)

Each model's folder is complete once its ``result.json`` exists; ``resume=True`` skips
finished models and continues an interrupted one from its checkpoint.

>>> from Training.config import tiny_config
>>> train_run(Path("cohort/manifest.csv"), Path("runs/tiny"), tiny_config())  # doctest: +SKIP
PosixPath('runs/tiny')
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import VirtualBiopsyLib
from Training.cache import ImageLoader, PreprocessedCache
from Training.classifier_training import (
    ImageSet,
    build_config_classifier,
    predict_probabilities,
    train_classifier,
)
from Training.config import RunConfig
from Training.datasets import (
    Manifest,
    ManifestError,
    TrainingCase,
    cases_with_slot,
    group_cases,
    image_pairs,
    read_manifest,
)
from Training.evaluation import (
    REAL,
    SYNTHETIC,
    Prediction,
    modality_mccs,
    per_fold_metrics,
    pooled_test_auc,
    slot_mccs,
    summarize,
    write_predictions,
)
from Training.generator_training import (
    SELECTION_EMPHASIS,
    PairSet,
    build_config_generator,
    generation_quality,
    synthesize_des,
    train_generator,
)
from Training.metrics import GENERATION_METRICS, mean_and_standard_error
from Training.runtime import Runtime, make_runtime, seed_everything
from Training.splits import FoldSplit, make_splits, patient_labels, save_splits
from VirtualBiopsyLib.atomic_io import write_text_atomic
from VirtualBiopsyLib.errors import OutputExistsError
from VirtualBiopsyLib.images.preprocessing import PreprocessingParams
from VirtualBiopsyLib.models.safetensors_io import read_state_dict, write_state_dict
from VirtualBiopsyLib.roles import SLOTS, VIEWS, View, parse_slot, slot_name

logger = logging.getLogger(__name__)

RUN_FORMAT = "virtual-biopsy-training-run-v1"
VAL_LOSS_DEFINITIONS = {
    "l1": "mean |G(LE) - DES| over validation pairs, whole image",
    "emphasis_l1": "mean |G(LE) - DES| over validation pairs, weighted "
    f"1 + {SELECTION_EMPHASIS:g} r per pixel "
    "(r: the real DES's normalised residual from its local median; lesion emphasis)",
}


@dataclass
class RunContext:
    """What every step of a run shares."""

    out_dir: Path
    config: RunConfig
    manifest: Manifest
    images: dict[Path, np.ndarray]
    runtime: Runtime
    resume: bool
    progress: bool
    synthetic_data: bool


def preprocessing_params(config: RunConfig) -> PreprocessingParams:
    return PreprocessingParams(size=config.image_size, stretch=config.stretch)


def train_run(
    manifest_path: Path,
    out_dir: Path,
    config: RunConfig,
    *,
    resume: bool = False,
    pretrain_manifest: Path | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
    synthetic_data: bool | None = None,
    loader: ImageLoader | None = None,
) -> Path:
    """Train every fold's models on a manifest and write ``out_dir`` (see module docstring).

    ``synthetic_data`` marks every output as computed on synthetic data (auto-detected
    from the manifest when ``None``: a phantom cohort marks its rows ``synthetic``).
    """
    out_dir = Path(out_dir)
    config = _prepare_out_dir(out_dir, config, resume)
    manifest = read_manifest(manifest_path)
    if synthetic_data is None:
        synthetic_data = is_phantom_manifest(manifest)
    seed_everything(config.seed)
    runtime = make_runtime(config.device, config.amp, config.channels_last)
    cache = PreprocessedCache(cache_dir or out_dir / "cache", preprocessing_params(config), loader)
    images = cache.load_many(row.path for row in manifest.rows)
    context = RunContext(
        out_dir, config, manifest, images, runtime, resume, progress, synthetic_data
    )
    folds = make_splits(
        patient_labels(list(manifest.rows)),
        config.splits.n_folds,
        config.splits.seed,
        config.splits.protocol,
    )
    if runtime.is_main:
        save_splits(folds, out_dir / "splits.json", config.splits.protocol)
        _write_run_record(context, "running", pretrain_manifest)
    pretrained = _pretrain(context, pretrain_manifest, cache) if pretrain_manifest else {}
    predictions: list[Prediction] = []
    for fold in folds:
        predictions.extend(_train_fold(context, fold, pretrained))
    if runtime.is_main:
        _write_summary(context, predictions)
        _write_run_record(context, "complete", pretrain_manifest)
    return out_dir


def is_phantom_manifest(manifest: Manifest) -> bool:
    """True when the training manifest's own provenance marks any image synthetic.

    The phantom writes ``synthetic=true`` on every row; importers of real data write
    ``false`` (see :mod:`VirtualBiopsyLib.training_manifest`). No file beside it is read.
    """
    return manifest.synthetic


def _prepare_out_dir(out_dir: Path, config: RunConfig, resume: bool) -> RunConfig:
    saved = out_dir / "config.json"
    if resume:
        if not saved.exists():
            raise ManifestError(f"{out_dir}: nothing to resume (no config.json)")
        return RunConfig.load(saved)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise OutputExistsError(
            f"{out_dir}: folder exists and is not empty; use --resume to continue a run "
            "or choose a new folder"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save(saved)
    return config


def _write_run_record(context: RunContext, status: str, pretrain: Path | None) -> None:
    path = context.out_dir / "run.json"
    record: dict[str, Any] = {}
    if path.exists():
        record = json.loads(path.read_text(encoding="utf-8"))
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    record.update(
        {
            "format": RUN_FORMAT,
            "status": status,
            "manifest_sha256": context.manifest.sha256,
            "pretrain_manifest_sha256": read_manifest(pretrain).sha256 if pretrain else None,
            "code_version": VirtualBiopsyLib.__version__,
            "torch_version": torch.__version__,
            "device": str(context.runtime.device),
            "world_size": context.runtime.world_size,
            "synthetic_data": context.synthetic_data,
            "research_use_notice": VirtualBiopsyLib.RESEARCH_USE_NOTICE,
            "updated": now,
        }
    )
    record.setdefault("started", now)
    if context.synthetic_data:
        record["synthetic_notice"] = VirtualBiopsyLib.SYNTHETIC_NOTICE
    write_text_atomic(path, json.dumps(record, indent=2) + "\n")


def _model_seed(config: RunConfig, fold: int, index: int) -> int:
    """A distinct, reproducible seed per model (fold × model index)."""
    return config.seed * 1_000_003 + fold * 101 + index


def _stack(context: RunContext, paths: list[Path]) -> torch.Tensor:
    size = context.config.image_size
    if not paths:
        return torch.zeros(0, 1, size, size)
    return torch.from_numpy(np.stack([context.images[p] for p in paths])[:, None].copy())


def _pair_set(context: RunContext, pairs: list) -> PairSet:
    return PairSet(
        _stack(context, [p.le_path for p in pairs]), _stack(context, [p.des_path for p in pairs])
    )


def _image_set(context: RunContext, cases: list[TrainingCase], slot: str) -> ImageSet:
    return ImageSet(
        _stack(context, [case.slots[slot] for case in cases]),
        torch.tensor([case.label for case in cases], dtype=torch.long),
    )


# --- generators ---------------------------------------------------------------------------


def _pretrain(
    context: RunContext, manifest_path: Path, cache: PreprocessedCache
) -> dict[View, dict[str, torch.Tensor]]:
    """Pre-train one generator per view on another manifest (90/10 patient split)."""
    manifest = read_manifest(manifest_path)
    context.images.update(cache.load_many(row.path for row in manifest.rows))
    weights: dict[View, dict[str, torch.Tensor]] = {}
    for index, view in enumerate(VIEWS):
        folder = context.out_dir / "pretrain" / view.value
        file = folder / f"pretrained_generator_LE_to_DES_{view.value}.safetensors"
        if context.resume and file.exists():
            weights[view] = read_state_dict(file)
            continue
        pairs = image_pairs(manifest.rows, view)
        patients = sorted({p.patient for p in pairs})
        val_patients = set(patients[: max(1, len(patients) // 10)])
        train = [p for p in pairs if p.patient not in val_patients]
        val = [p for p in pairs if p.patient in val_patients]
        result = train_generator(
            _pair_set(context, train),
            _pair_set(context, val),
            context.config.generator,
            folder,
            seed=_model_seed(context.config, 99, index),
            runtime=context.runtime,
            resume=context.resume,
            progress=context.progress,
            description=f"pretrain G_{view.value}",
            max_epochs=context.config.generator.pretrain_epochs,
        )
        weights[view] = result.network.state_dict()
        if context.runtime.is_main:
            write_state_dict(weights[view], file)
    return weights


def _train_generators(
    context: RunContext, fold: FoldSplit, pretrained: dict[View, dict[str, torch.Tensor]]
) -> dict[View, torch.nn.Module]:
    generators: dict[View, torch.nn.Module] = {}
    limit = context.config.generator.folds
    if not context.config.train_generators or (limit is not None and fold.fold >= limit):
        return generators  # no G_v in this fold: its Ĉ / F+Ĉ rows are absent, not faked
    for index, view in enumerate(VIEWS):
        folder = context.out_dir / f"fold_{fold.fold}" / "generators" / view.value
        file = folder / f"generator_LE_to_DES_{view.value}.safetensors"
        config = context.config.generator
        if (folder / "result.json").exists():
            generator = build_config_generator(config)
            generator.load_state_dict(read_state_dict(file))
            generators[view] = generator.eval()
            continue
        pairs = image_pairs(context.manifest.rows, view)
        by_split = {
            name: [p for p in pairs if fold.split_of(p.patient) == name]
            for name in ("train", "val", "test")
        }
        if not by_split["train"] or not by_split["val"]:
            logger.warning(
                "fold %d: no %s LE/DES pairs to train or validate G_%s; skipped",
                fold.fold,
                view.value,
                view.value,
            )
            continue
        result = train_generator(
            _pair_set(context, by_split["train"]),
            _pair_set(context, by_split["val"]),
            config,
            folder,
            seed=_model_seed(context.config, fold.fold, 10 + index),
            runtime=context.runtime,
            resume=context.resume,
            progress=context.progress,
            description=f"fold {fold.fold} G_{view.value}",
            initial_generator=pretrained.get(view),
        )
        quality = generation_quality(
            result.network, _pair_set(context, by_split["test"]), context.runtime
        )
        if context.runtime.is_main:
            write_state_dict(result.network.state_dict(), file, {"synthetic_output": "true"})
            _write_result(
                folder,
                {
                    "view": view.value,
                    "fold": fold.fold,
                    **result.summary(),
                    "val_loss_definition": VAL_LOSS_DEFINITIONS[config.selection],
                    "pairs": {name: len(items) for name, items in by_split.items()},
                    "test_generation": _generation_summary(quality),
                },
            )
        generators[view] = result.network
    return generators


def _generation_summary(quality: list[dict[str, float]]) -> dict[str, Any]:
    """Mean of each image metric over a fold's test pairs (data_range 1).

    ``mse``/``psnr``/``ssim`` over the whole image (the paper's Table 3); ``breast_mse`` /
    ``breast_psnr`` inside the breast of the LE (see ``generator_training.breast_mask``).
    """
    summary: dict[str, Any] = {"n_pairs": len(quality), "data_range": 1.0, "region": "whole image"}
    for metric in (*GENERATION_METRICS, "breast_mse", "breast_psnr"):
        values = [q[metric] for q in quality]
        summary[metric] = float(np.mean(values)) if values else None
    return summary


# --- classifiers --------------------------------------------------------------------------


def _train_fold(
    context: RunContext, fold: FoldSplit, pretrained: dict[View, dict[str, torch.Tensor]]
) -> list[Prediction]:
    fold_dir = context.out_dir / f"fold_{fold.fold}"
    generators = _train_generators(context, fold, pretrained)
    cases = group_cases(context.manifest.rows, phase=context.config.classifier_phase)
    split_cases = {
        name: [c for c in cases if fold.split_of(c.patient) == name]
        for name in ("train", "val", "test")
    }
    synthetic = _synthetic_des(context, split_cases["val"] + split_cases["test"], generators)
    predictions: list[Prediction] = []
    for index, slot in enumerate(SLOTS):
        if not all(cases_with_slot(split_cases[name], slot) for name in ("train", "val")):
            logger.warning(
                "fold %d: no %s images to train or validate on; skipped", fold.fold, slot
            )
            continue
        model = _train_slot(context, fold, slot, index, split_cases)
        predictions.extend(_predict(context, fold, slot, model, split_cases, synthetic))
    val = [p for p in predictions if p.split == "val"]
    slot_mcc = slot_mccs(val, context.config.threshold)
    fold_record = {
        "fold": fold.fold,
        "val_mcc": slot_mcc,
        "modality_mcc": modality_mccs(val, slot_mcc, context.config.threshold),
        "cases": {name: len(items) for name, items in split_cases.items()},
    }
    if context.runtime.is_main:
        write_predictions(predictions, fold_dir / "predictions.csv")
        write_text_atomic(fold_dir / "fold.json", json.dumps(fold_record, indent=2) + "\n")
    return predictions


def _train_slot(
    context: RunContext,
    fold: FoldSplit,
    slot: str,
    index: int,
    split_cases: dict[str, list[TrainingCase]],
) -> torch.nn.Module:
    folder = context.out_dir / f"fold_{fold.fold}" / "classifiers" / slot
    file = folder / f"classifier_{slot}.safetensors"
    config = context.config.classifier
    if (folder / "result.json").exists():
        model = build_config_classifier(config)
        model.load_state_dict(read_state_dict(file))
        return model.eval()
    train = _image_set(context, cases_with_slot(split_cases["train"], slot), slot)
    val = _image_set(context, cases_with_slot(split_cases["val"], slot), slot)
    result = train_classifier(
        train,
        val,
        config,
        folder,
        seed=_model_seed(context.config, fold.fold, index),
        runtime=context.runtime,
        resume=context.resume,
        progress=context.progress,
        description=f"fold {fold.fold} {slot}",
    )
    if context.runtime.is_main:
        write_state_dict(result.network.state_dict(), file)
        _write_result(
            folder,
            {
                "slot": slot,
                "fold": fold.fold,
                "architecture": config.architecture,
                **result.summary(),
                "images": {"train": len(train), "val": len(val)},
            },
        )
    return result.network


def _synthetic_des(
    context: RunContext, cases: list[TrainingCase], generators: dict[View, torch.nn.Module]
) -> dict[tuple[str, str], np.ndarray]:
    """G_v(LE) for every val/test case with an LE image of view v: {(case, DES slot): image}."""
    result: dict[tuple[str, str], np.ndarray] = {}
    for view, generator in generators.items():
        le_slot, des_slot = slot_name("LE", view), slot_name("DES", view)
        with_le = [c for c in cases if le_slot in c.slots]
        if not with_le:
            continue
        le = _stack(context, [c.slots[le_slot] for c in with_le])
        synthetic = synthesize_des(generator, le, context.runtime)
        for case, image in zip(with_le, synthetic, strict=True):
            result[(case.key, des_slot)] = image[0].numpy()
    return result


def _predict(
    context: RunContext,
    fold: FoldSplit,
    slot: str,
    model: torch.nn.Module,
    split_cases: dict[str, list[TrainingCase]],
    synthetic: dict[tuple[str, str], np.ndarray],
) -> list[Prediction]:
    rows: list[Prediction] = []
    for split in ("val", "test"):
        cases = cases_with_slot(split_cases[split], slot)
        probabilities = predict_probabilities(
            model, _image_set(context, cases, slot).images, context.runtime
        )
        rows.extend(_rows(fold, split, cases, slot, REAL, probabilities))
        if parse_slot(slot)[0].value != "DES":
            continue
        with_synthetic = [c for c in split_cases[split] if (c.key, slot) in synthetic]
        if with_synthetic:
            images = torch.from_numpy(np.stack([synthetic[(c.key, slot)] for c in with_synthetic]))
            probabilities = predict_probabilities(model, images[:, None], context.runtime)
            rows.extend(_rows(fold, split, with_synthetic, slot, SYNTHETIC, probabilities))
    return rows


def _rows(
    fold: FoldSplit,
    split: str,
    cases: list[TrainingCase],
    slot: str,
    source: str,
    probabilities: np.ndarray,
) -> list[Prediction]:
    return [
        Prediction(
            fold.fold, split, c.key, c.patient, c.label, c.acr_density, slot, source, float(p)
        )
        for c, p in zip(cases, probabilities, strict=True)
    ]


def _write_result(folder: Path, record: dict[str, Any]) -> None:
    write_text_atomic(folder / "result.json", json.dumps(record, indent=2) + "\n")


def _write_summary(context: RunContext, predictions: list[Prediction]) -> None:
    """All folds' predictions, test metrics per setting and generation quality per view."""
    write_predictions(predictions, context.out_dir / "predictions.csv")
    threshold = context.config.threshold
    per_fold = per_fold_metrics(predictions, threshold)
    metrics: dict[str, Any] = {
        "architecture": context.config.classifier.architecture,
        "threshold": threshold,
        "per_fold": per_fold,
        "summary": summarize(per_fold),
        "summary_definition": "mean and standard error over folds of the test-split metrics",
        "pooled_test_auc": {
            setting: pooled_test_auc(predictions, setting, threshold) for setting in per_fold
        },
        "generation": generation_summary(context.out_dir),
        "research_use_notice": VirtualBiopsyLib.RESEARCH_USE_NOTICE,
    }
    if context.synthetic_data:
        metrics["synthetic_notice"] = VirtualBiopsyLib.SYNTHETIC_NOTICE
    write_text_atomic(
        context.out_dir / "metrics.json", json.dumps(metrics, indent=2, allow_nan=True) + "\n"
    )


def generation_summary(out_dir: Path) -> dict[str, dict[str, list]]:
    """Table 3: per view, mean ± SE over folds of the test MSE / PSNR / SSIM."""
    summary: dict[str, dict[str, list]] = {}
    for view in VIEWS:
        per_fold = []
        for result in sorted(out_dir.glob(f"fold_*/generators/{view.value}/result.json")):
            per_fold.append(json.loads(result.read_text(encoding="utf-8"))["test_generation"])
        if per_fold:
            summary[view.value] = {
                metric: list(
                    mean_and_standard_error([f[metric] for f in per_fold if f[metric] is not None])
                )
                for metric in GENERATION_METRICS
            }
    return summary


def fold_dirs(out_dir: Path) -> list[Path]:
    return sorted(out_dir.glob("fold_*"), key=lambda p: int(p.name.split("_")[1]))
