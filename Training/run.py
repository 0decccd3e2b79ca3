"""A whole training run: splits, cache, per fold two generators and four classifiers.

A run is a set of independent jobs, one per model (:mod:`Training.jobs`): ``train_run``
runs all of them, or those chosen by ``fold`` / ``slot`` / ``job`` (a scheduler runs the
others side by side into the same folder), and :func:`finalize_run` gathers them.

Output folder (``RUN_DIR``)::

    config.json           the RunConfig (defaults = the paper's numbers), written once
    jobs.json             the job plan (IDs, dependencies, manifest SHA-256), written once
    jobs/<name>.json      each job's status (running, complete, skipped, failed), device
    run.json              provenance: manifest SHA-256, dates, code version, notices, status
    splits.json           patient keys (pseudonyms) of every fold's train/val/test
    fold_<k>/generators/<CC|MLO>/   generator_LE_to_DES_<view>.safetensors,
                                    result.json (val loss history, test MSE/PSNR/SSIM),
                                    checkpoint/ while it trains
    fold_<k>/classifiers/<slot>/    classifier_<slot>.safetensors, result.json,
                                    predictions.csv (this classifier's val/test rows),
                                    checkpoint/ while it trains
    fold_<k>/predictions.csv        val/test probabilities, real and synthetic DES (the
                                    synthetic rows recalibrated with the fold's shifts)
    fold_<k>/fold.json              validation MCC per slot and per modality, and each DES
                                    classifier's synthetic-DES logit shift
    predictions.csv       all folds' predictions
    metrics.json          per-fold and mean ± SE test metrics of F, C, Ĉ, F+C, F+Ĉ
    pretrain/<view>/      the generator pre-trained on ``--pretrain-manifest`` (optional)

Each model's folder is complete once its ``result.json`` (and a classifier's
``predictions.csv``) exists; its checkpoint is deleted then (a finished model is never
trained again). ``resume=True`` skips finished models and continues an interrupted one
from its checkpoint. Under torchrun every rank runs the same jobs and only rank 0 writes.

>>> from Training.config import tiny_config
>>> train_run(Path("cohort/manifest.csv"), Path("runs/tiny"), tiny_config())  # doctest: +SKIP
PosixPath('runs/tiny')
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

import VirtualBiopsyLib
from Training.cache import ImageLoader, PreprocessedCache
from Training.classifier_training import (
    ImageSet,
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
    PredictionsFileError,
    modality_mccs,
    per_fold_metrics,
    pooled_test_scores,
    read_predictions,
    recalibrate_synthetic,
    slot_mccs,
    summarize,
    synthetic_logit_shifts,
    synthetic_rows,
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
from Training.jobs import (
    COMPLETE,
    FAILED,
    RUNNING,
    SKIPPED,
    Job,
    JobError,
    check_needs,
    claim_plan,
    create_once,
    describe_missing,
    is_finished,
    job_lock,
    job_status,
    missing_jobs,
    plan_jobs,
    plan_record,
    read_plan,
    select_jobs,
    write_status,
)
from Training.lesion_masks import LesionMaskSet, pair_lesion_masks
from Training.metrics import (
    BREAST_METRICS,
    GENERATION_METRICS,
    LESION_FIGURES,
    LESION_SUMMARY_COUNTS,
    auc,
    average_generation_metrics,
    lesion_contrast_summary,
    mean_and_standard_error,
)
from Training.runtime import CheckpointStore, Runtime, make_runtime, seed_everything
from Training.splits import FoldSplit, make_splits, patient_labels, save_splits
from VirtualBiopsyLib.atomic_io import finite_json, sync_to_disk, write_text_atomic
from VirtualBiopsyLib.errors import OutputExistsError
from VirtualBiopsyLib.images.preprocessing import PreprocessingParams
from VirtualBiopsyLib.models.classifiers import build_classifier
from VirtualBiopsyLib.models.safetensors_io import read_state_dict, write_state_dict
from VirtualBiopsyLib.roles import SLOTS, VIEWS, Slot, View, parse_slot, slot_name

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
    """What every job of a run shares."""

    out_dir: Path
    config: RunConfig
    manifest: Manifest
    images: dict[Path, np.ndarray]
    runtime: Runtime
    resume: bool
    progress: bool
    synthetic_data: bool
    folds: list[FoldSplit]
    jobs: list[Job]
    cache: PreprocessedCache | None = None
    pretrain_manifest: Manifest | None = None
    selective: bool = False


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
    fold: int | None = None,
    slot: str | None = None,
    job: Sequence[str] | None = None,
    prepare_only: bool = False,
) -> Path:
    """Train a run's jobs on a manifest and write ``out_dir`` (see module docstring).

    Without ``fold`` / ``slot`` / ``job`` every job runs (in ID order) and the run is
    summarised (``metrics.json``, ``run.json`` complete). With them only the chosen jobs
    run, into a folder that other jobs of the same run may be filling at the same time;
    ``package`` (:func:`finalize_run`) summarises once all are finished.
    ``prepare_only`` writes the shared files (config, plan, splits) and fills the image
    cache, then stops: run it once before a scheduler starts the jobs side by side, so
    that they do not all decode the same images at once.
    ``synthetic_data`` marks every output as computed on synthetic data (auto-detected
    from the manifest when ``None``: a phantom cohort marks its rows ``synthetic``).
    """
    out_dir = Path(out_dir)
    selective = prepare_only or fold is not None or slot is not None or job is not None
    saved = out_dir / "config.json"
    if resume and saved.exists():  # the saved recipe, this call's device
        config = same_config(saved, RunConfig.load(saved), config)
    # everything that can refuse the call does so before the first shared file is written
    manifest = read_manifest(manifest_path)
    pretrain = read_manifest(pretrain_manifest) if pretrain_manifest else None
    jobs = plan_jobs(config, pretrain is not None)
    chosen = select_jobs(jobs, fold=fold, slot=slot, job=job) if selective else jobs
    if prepare_only:
        chosen = []
    _check_pretrained_weights(config, chosen)
    runtime = make_runtime(config.device, config.amp, config.channels_last)
    config = runtime.on_main(lambda: _prepare_out_dir(out_dir, config, resume, selective))
    if synthetic_data is None:
        synthetic_data = is_phantom_manifest(manifest)
    seed_everything(config.seed)
    cache = PreprocessedCache(cache_dir or out_dir / "cache", preprocessing_params(config), loader)
    images = _load_images(runtime, cache, manifest)
    folds = make_splits(
        patient_labels(list(manifest.rows)),
        config.splits.n_folds,
        config.splits.seed,
        config.splits.protocol,
    )
    context = RunContext(
        out_dir, config, manifest, images, runtime, resume, progress, synthetic_data,
        folds, jobs, cache, pretrain, selective,
    )  # fmt: skip
    runtime.on_main(lambda: _claim_run(context, folds, pretrain))
    for chosen_job in chosen:
        run_job(context, chosen_job)
    if not selective:
        runtime.on_main(lambda: finalize_run(out_dir))
    return out_dir


def _load_images(
    runtime: Runtime, cache: PreprocessedCache, manifest: Manifest
) -> dict[Path, np.ndarray]:
    """Rank 0 fills the cache; the other ranks then read it (no image decoded twice)."""
    paths = [row.path for row in manifest.rows]
    loaded: dict[str, dict[Path, np.ndarray]] = {}
    runtime.on_main(lambda: loaded.setdefault("images", cache.load_many(paths)) and None)
    return loaded["images"] if "images" in loaded else cache.load_many(paths)


def is_phantom_manifest(manifest: Manifest) -> bool:
    """True when the training manifest's own provenance marks any image synthetic.

    The phantom writes ``synthetic=true`` on every row; importers of real data write
    ``false`` (see :mod:`VirtualBiopsyLib.training_manifest`). No file beside it is read.
    """
    return manifest.synthetic


def require_new_run_folder(out_dir: Path) -> None:
    """A whole run starts in a new or empty folder; ``--resume`` is how one continues."""
    if out_dir.exists() and any(out_dir.iterdir()):
        raise OutputExistsError(
            f"{out_dir}: folder exists and is not empty; use --resume to continue a run "
            "or choose a new folder"
        )


def _check_pretrained_weights(config: RunConfig, jobs: Sequence[Job]) -> None:
    """Read the user's ImageNet weights once now when classifiers will start from them: a
    missing file or one of another network is refused (naming it) before the generators
    train for hours, not when the first classifier job starts."""
    classifier = config.classifier
    if classifier.pretrained_weights and any(job.kind == "classifier" for job in jobs):
        build_classifier(classifier.architecture, classifier.pretrained_weights, classifier.pooling)


def _prepare_out_dir(out_dir: Path, config: RunConfig, resume: bool, selective: bool) -> RunConfig:
    """The run's configuration: saved once, then the same for every job of the run.

    A whole run needs a new (or empty) folder unless resumed. A job (``--fold`` /
    ``--slot`` / ``--job``) may join a folder that other jobs of the run are filling, if
    the configuration is the same (``device`` aside: each job runs where it is started);
    the first job writes ``config.json``.
    """
    saved = out_dir / "config.json"
    if not selective:
        if resume:
            if not saved.exists():
                raise ManifestError(f"{out_dir}: nothing to resume (no config.json)")
            return config  # train_run has checked it against the saved one (same_config)
        require_new_run_folder(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n"
    try:
        existing = RunConfig.from_dict(json.loads(create_once(saved, text)))
    except ValueError as error:  # a config.json that is not one
        raise ManifestError(f"{saved}: not a run configuration ({error})") from error
    return same_config(saved, existing, config)


def same_config(saved: Path, existing: RunConfig, config: RunConfig) -> RunConfig:
    """The run's configuration with this call's device, if the rest is this call's.

    Every job of a run, resumed or not, must train the recipe the run was started with;
    ``device`` aside: where a job runs is its own choice.
    """
    existing = replace(existing, device=config.device)
    if existing != config:
        differing = sorted(
            key for key, value in config.to_dict().items() if existing.to_dict()[key] != value
        )
        raise JobError(
            f"{saved}: the run's configuration differs from this job's in "
            f"{', '.join(differing)}; start and resume every job of a run with the same "
            "options"
        )
    return existing


def _claim_run(context: RunContext, folds: list[FoldSplit], pretrain: Manifest | None) -> None:
    """The files every job shares, each written once: job plan, splits, run record."""
    plan = plan_record(
        context.jobs,
        context.manifest.sha256,
        pretrain.sha256 if pretrain else None,
        context.synthetic_data,
    )
    claim_plan(context.out_dir, plan)
    splits = context.out_dir / "splits.json"
    if not splits.exists():
        staged = splits.with_name(f".splits.{secrets.token_hex(8)}.json")
        save_splits(folds, staged, context.config.splits.protocol)
        create_once(splits, staged.read_text(encoding="utf-8"))
        staged.unlink(missing_ok=True)
    if not context.selective:
        _write_run_record(
            context.out_dir,
            plan,
            "running",
            context.runtime,
            manifest_data_sha256=context.manifest.data_sha256,
        )


def _write_run_record(
    out_dir: Path,
    plan: dict[str, Any],
    status: str,
    runtime: Runtime | None = None,
    **fields: Any,
) -> None:
    path = out_dir / "run.json"
    record: dict[str, Any] = {}
    if path.exists():
        record = json.loads(path.read_text(encoding="utf-8"))
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    devices, world_sizes = _job_devices(out_dir, runtime)
    record.update(
        {
            "format": RUN_FORMAT,
            "status": status,
            "manifest_sha256": plan["manifest_sha256"],
            "pretrain_manifest_sha256": plan["pretrain_manifest_sha256"],
            "code_version": VirtualBiopsyLib.__version__,
            "torch_version": torch.__version__,
            "device": ", ".join(devices),
            "world_size": max(world_sizes),
            "synthetic_data": plan["synthetic_data"],
            "research_use_notice": VirtualBiopsyLib.RESEARCH_USE_NOTICE,
            "updated": now,
            **fields,
        }
    )
    record.setdefault("started", now)
    if plan["synthetic_data"]:
        record["synthetic_notice"] = VirtualBiopsyLib.SYNTHETIC_NOTICE
    write_text_atomic(path, json.dumps(record, indent=2) + "\n")


def _job_devices(out_dir: Path, runtime: Runtime | None) -> tuple[list[str], list[int]]:
    """The devices and world sizes the run's jobs ran on (from their status files)."""
    devices, sizes = set(), set()
    if runtime is not None:
        devices.add(str(runtime.device))
        sizes.add(runtime.world_size)
    for path in sorted((out_dir / "jobs").glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if record.get("device"):
            devices.add(str(record["device"]))
            sizes.add(int(record.get("world_size", 1)))
    return sorted(devices) or ["unknown"], sorted(sizes) or [1]


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


# --- one job ------------------------------------------------------------------------------


def run_job(context: RunContext, job: Job) -> str:
    """Train one job's model unless it is finished; returns its final status.

    Its inputs (a pre-trained or fold generator) must be finished first
    (:func:`Training.jobs.check_needs` says which is not). Only rank 0 writes; the job's
    status file records running → complete / skipped / failed. Rank 0 holds the job's
    lock throughout (:func:`Training.jobs.job_lock`): a second copy of the job is refused.
    Under torchrun rank 0 alone takes the lock and decides whether the job runs; every
    rank follows (a refusal stops all of them with its message), and no other rank reads
    or locks the job's files, where its probe of a free lock could make rank 0 refuse.
    A finished model keeps no checkpoint (:func:`_drop_checkpoint`).
    """
    with contextlib.ExitStack() as stack:

        def lock() -> None:
            stack.enter_context(job_lock(context.out_dir, job))

        context.runtime.on_main(lock)
        return _run_job(context, job)


def _finished_or_refused(context: RunContext, job: Job) -> bool:
    """Rank 0's decision under the job's lock: True when the job is finished already;
    an error when it may not start (finished or checkpointed without ``--resume``, or
    what it needs is not finished)."""
    out_dir = context.out_dir
    if is_finished(out_dir, job):
        if context.selective and not context.resume:
            raise OutputExistsError(
                f"{out_dir}: {job.describe()} is finished already; use --resume to skip "
                "finished jobs"
            )
        _drop_checkpoint(out_dir, job)  # left by a process killed right after finishing
        return True
    if context.selective and not context.resume and CheckpointStore(job.folder(out_dir)).exists():
        raise OutputExistsError(
            f"{job.folder(out_dir)}: {job.describe()} has a checkpoint; continue it with --resume"
        )
    check_needs(out_dir, context.jobs, job)
    return False


def _drop_checkpoint(out_dir: Path, job: Job) -> None:
    """Delete a finished job's resume state (GBs for 30 ResNet jobs), once its weights
    and records are on disk: a finished job is never trained again."""
    folder = job.folder(out_dir)
    store = CheckpointStore(folder)
    if store.present():
        sync_to_disk(*[path for path in job.finished_files(out_dir) if path.exists()], folder)
        store.remove()


def _run_job(context: RunContext, job: Job) -> str:
    runtime, out_dir = context.runtime, context.out_dir
    if runtime.on_main(lambda: _finished_or_refused(context, job)):
        return COMPLETE
    provenance = {
        "device": str(runtime.device),
        "world_size": runtime.world_size,
        "manifest_sha256": context.manifest.sha256,
        "manifest_data_sha256": context.manifest.data_sha256,
        "code_version": VirtualBiopsyLib.__version__,
    }
    runtime.on_main(lambda: write_status(out_dir, job, RUNNING, **provenance))
    train = {"pretrain": _pretrain_job, "generator": _generator_job, "classifier": _classifier_job}
    try:
        skipped, details = train[job.kind](context, job)
    except BaseException as error:
        if runtime.is_main:
            reason = "interrupted" if isinstance(error, KeyboardInterrupt) else str(error)
            write_status(out_dir, job, FAILED, error=f"{type(error).__name__}: {reason}"[:500])
        raise
    status = SKIPPED if skipped else COMPLETE

    def finish() -> None:
        write_status(out_dir, job, status, **provenance, **details)
        _drop_checkpoint(out_dir, job)

    runtime.on_main(finish)
    return status


def _fold(context: RunContext, job: Job) -> FoldSplit:
    return next(fold for fold in context.folds if fold.fold == job.fold)


def _pretrain_job(context: RunContext, job: Job) -> tuple[bool, dict[str, Any]]:
    """Pre-train one view's generator on another manifest (90/10 patient split)."""
    manifest = context.pretrain_manifest
    if manifest is None:
        raise JobError(f"{job.describe()} needs --pretrain-manifest (the run was planned with it)")
    context.images.update(_load_images(context.runtime, context.cache, manifest))
    view = View(job.view)
    folder = job.folder(context.out_dir)
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
        seed=_model_seed(context.config, 99, VIEWS.index(view)),
        runtime=context.runtime,
        resume=context.resume,
        progress=context.progress,
        description=f"pretrain G_{view.value}",
        max_epochs=context.config.generator.pretrain_epochs,
    )
    file = job.finished_files(context.out_dir)[0]
    context.runtime.on_main(lambda: write_state_dict(result.network.state_dict(), file))
    return False, {"pairs": {"train": len(train), "val": len(val)}}


def _generator_job(context: RunContext, job: Job) -> tuple[bool, dict[str, Any]]:
    fold, view = _fold(context, job), View(job.view)
    folder = job.folder(context.out_dir)
    file = folder / f"generator_LE_to_DES_{view.value}.safetensors"
    config = context.config.generator
    by_split = _split_pairs(context, fold, view)
    counts = {name: len(items) for name, items in by_split.items()}
    if not by_split["train"] or not by_split["val"]:
        logger.warning(
            "fold %d: no %s LE/DES pairs to train or validate G_%s; skipped",
            fold.fold,
            view.value,
            view.value,
        )
        return True, {"reason": "no LE/DES pairs to train or validate on", "pairs": counts}
    initial = None
    if job.needs:
        pretrained = context.out_dir / "pretrain" / view.value
        initial = read_state_dict(
            pretrained / f"pretrained_generator_LE_to_DES_{view.value}.safetensors"
        )
    train = by_split["train"]
    if config.other_view_pairs:
        train = train + _split_pairs(context, fold, view.other)["train"]
        counts["other_view_train"] = len(train) - counts["train"]
    result = train_generator(
        _pair_set(context, train),
        _pair_set(context, by_split["val"]),
        config,
        folder,
        seed=_model_seed(context.config, fold.fold, 10 + VIEWS.index(view)),
        runtime=context.runtime,
        resume=context.resume,
        progress=context.progress,
        description=f"fold {fold.fold} G_{view.value}",
        initial_generator=initial,
    )
    test = by_split["test"]

    def write() -> None:
        # the test metrics go into rank 0's record only: under torchrun the other ranks
        # neither synthesise the test set nor map (or warn about) its lesion masks again
        lesions = pair_lesion_masks(test, context.cache, context.manifest.path)
        quality = generation_quality(
            result.network, _pair_set(context, test), context.runtime, lesions.masks
        )
        write_state_dict(result.network.state_dict(), file, {"synthetic_output": "true"})
        _write_result(
            folder,
            {
                "view": view.value,
                "fold": fold.fold,
                **result.summary(),
                "val_loss_definition": VAL_LOSS_DEFINITIONS[config.selection],
                "pairs": counts,
                "test_generation": _generation_summary(
                    quality, [pair.label for pair in test], lesions
                ),
            },
        )

    context.runtime.on_main(write)
    return False, {"pairs": counts}


def _split_pairs(context: RunContext, fold: FoldSplit, view: View) -> dict[str, list]:
    """The view's LE/DES pairs of the fold's train, val and test patients."""
    pairs = image_pairs(context.manifest.rows, view)
    return {
        name: [p for p in pairs if fold.split_of(p.patient) == name]
        for name in ("train", "val", "test")
    }


def _generation_summary(
    quality: list[dict[str, float]],
    labels: Sequence[int | None],
    lesions: LesionMaskSet | None = None,
) -> dict[str, Any]:
    """Mean of each image metric over a fold's test pairs (data_range 1), each with the
    number of pairs it averages.

    ``mse``/``psnr``/``ssim`` over the whole image (the paper's Table 3); ``breast_mse`` /
    ``breast_psnr`` inside the breast of the LE (see ``generator_training.breast_mask``);
    ``lesion_mae`` / ``_mse`` / ``_psnr`` inside the lesion over ``lesion_images`` pairs
    with a non-empty lesion mask, and the lesion contrast of real and synthetic DES
    (:func:`Training.metrics.lesion_contrast_summary`: means per label, Pearson r).
    Without masks the counts are 0 and the lesion figures null. ``lesion_masks`` counts
    the test pairs' masks: annotated, and refused by reason (no file names).
    """
    summary: dict[str, Any] = {"n_pairs": len(quality), "data_range": 1.0, "region": "whole image"}
    summary |= average_generation_metrics(quality)  # a pair without a region: left out there
    summary |= lesion_contrast_summary(quality, labels)
    summary["lesion_masks"] = (lesions or LesionMaskSet([None] * len(quality))).record()
    return summary


# --- classifiers --------------------------------------------------------------------------


def _split_cases(context: RunContext, fold: FoldSplit) -> dict[str, list[TrainingCase]]:
    cases = group_cases(context.manifest.rows, phase=context.config.classifier_phase)
    return {
        name: [c for c in cases if fold.split_of(c.patient) == name]
        for name in ("train", "val", "test")
    }


def _classifier_job(context: RunContext, job: Job) -> tuple[bool, dict[str, Any]]:
    """Train f[slot] of a fold, then score its val/test images (and synthetic DES)."""
    fold, slot = _fold(context, job), job.slot
    split_cases = _split_cases(context, fold)
    details: dict[str, Any] = {"fold_cases": {k: len(v) for k, v in split_cases.items()}}
    if not all(cases_with_slot(split_cases[name], slot) for name in ("train", "val")):
        logger.warning("fold %d: no %s images to train or validate on; skipped", fold.fold, slot)
        return True, {**details, "reason": f"no {slot} images to train or validate on"}
    folder = job.folder(context.out_dir)
    file = folder / f"classifier_{slot}.safetensors"
    config = context.config.classifier.for_slot(slot)
    synthetic = _synthetic_des(context, job, split_cases)
    train = _image_set(context, cases_with_slot(split_cases["train"], slot), slot)
    real_train = len(train)
    if config.synthetic_des_training:
        train = _with_synthetic(train, split_cases["train"], slot, synthetic)
    with_synthetic = len(train)
    if config.trains_on_other_view(slot):
        train = _with_other_view(context, train, split_cases["train"], Slot(slot))
    val = _image_set(context, cases_with_slot(split_cases["val"], slot), slot)
    result = train_classifier(
        train,
        val,
        config,
        folder,
        seed=_model_seed(context.config, fold.fold, SLOTS.index(slot)),
        runtime=context.runtime,
        resume=context.resume,
        progress=context.progress,
        description=f"fold {fold.fold} {slot}",
    )
    predictions = _predict(context, fold, slot, result.network, split_cases, synthetic)

    def write() -> None:
        write_state_dict(result.network.state_dict(), file)
        _write_result(
            folder,
            {
                "slot": slot,
                "fold": fold.fold,
                "architecture": config.architecture,
                **result.summary(),
                "images": {
                    "train": real_train,
                    "synthetic_train": with_synthetic - real_train,
                    "other_view_train": len(train) - with_synthetic,
                    "val": len(val),
                },
            },
        )
        write_predictions(predictions, folder / "predictions.csv")  # last: the job is done

    context.runtime.on_main(write)
    return False, details


def _synthetic_des(
    context: RunContext, job: Job, split_cases: dict[str, list[TrainingCase]]
) -> dict[tuple[str, str], np.ndarray]:
    """G_v(LE) for a DES classifier's val/test cases with an LE of view v (and its
    training cases with ``synthetic_des_training``): {(case, DES slot): image}. Empty for
    LE slots and runs without generators.

    The fold's own G_v scores val and test (the Ĉ rows). A fold without generators
    borrows the first generator fold's G_v for its validation (and training) cases
    only: they fit the classifier's synthetic-DES calibration; test rows from a
    generator that may have trained on those patients would overstate Ĉ, so there are
    none. (Such a generator also saw real DES of this fold's test patients; what its
    synthetic DES of *other* patients carries of them into this fold's training is at
    most indirect. A fresh phantom cohort, the phantom check, is free of it.)
    """
    if not job.needs:
        return {}
    generator_job = next(j for j in context.jobs if j.name == job.needs[0])
    folder = generator_job.folder(context.out_dir)
    if job_status(context.out_dir, generator_job)["status"] != COMPLETE:
        return {}  # skipped: no G_v in this fold, its Ĉ rows are absent, not faked
    splits = ("val", "test") if generator_job.fold == job.fold else ("val",)
    if context.config.classifier.synthetic_des_training:
        splits = ("train", *splits)
    cases = [case for split in splits for case in split_cases[split]]
    view = View(generator_job.view)
    generator = build_config_generator(context.config.generator)
    generator.load_state_dict(
        read_state_dict(folder / f"generator_LE_to_DES_{view.value}.safetensors")
    )
    le_slot = slot_name("LE", view)
    with_le = [c for c in cases if le_slot in c.slots]
    if not with_le:
        return {}
    le = _stack(context, [c.slots[le_slot] for c in with_le])
    synthetic = synthesize_des(generator.eval(), le, context.runtime)
    return {
        (case.key, job.slot): image[0].numpy()
        for case, image in zip(with_le, synthetic, strict=True)
    }


def _with_synthetic(
    train: ImageSet,
    cases: list[TrainingCase],
    slot: str,
    synthetic: dict[tuple[str, str], np.ndarray],
) -> ImageSet:
    """``train`` followed by the synthetic DES of its cases that have one, same labels
    (patients without a real DES count too: their LE gives one)."""
    twins = [case for case in cases if (case.key, slot) in synthetic]
    if not twins:
        return train
    images = torch.from_numpy(np.stack([synthetic[(case.key, slot)] for case in twins]))
    labels = torch.tensor([case.label for case in twins], dtype=torch.long)
    return train.extended(ImageSet(images[:, None], labels))


def _with_other_view(
    context: RunContext, train: ImageSet, cases: list[TrainingCase], slot: Slot
) -> ImageSet:
    """``train`` followed by the same training patients' images of the slot's other view
    (``ClassifierConfig.other_view_training``), with their labels."""
    other = slot_name(slot.modality, slot.view.other)
    return train.extended(_image_set(context, cases_with_slot(cases, other), other))


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
    write_text_atomic(folder / "result.json", json.dumps(finite_json(record), indent=2) + "\n")


# --- the run's summary ----------------------------------------------------------------------


def finalize_run(out_dir: Path) -> Path:
    """Gather a run whose jobs are all finished: per fold ``predictions.csv`` and
    ``fold.json``, then ``predictions.csv``, ``metrics.json`` and ``run.json`` (complete).

    Reads only the jobs' files (no manifest, no images), so ``package`` can do it after a
    scheduler ran the jobs. Raises :class:`Training.jobs.JobError` naming every job that
    is not finished; nothing is written then. Deterministic: gathering twice writes the
    same files.
    """
    out_dir = Path(out_dir)
    jobs = read_plan(out_dir)
    if jobs is None:
        raise JobError(f"{out_dir}: no jobs.json; not a training run folder")
    missing = missing_jobs(out_dir, jobs)
    if missing:
        raise JobError(describe_missing(out_dir, missing))
    config = RunConfig.load(out_dir / "config.json")
    plan = json.loads((out_dir / "jobs.json").read_text(encoding="utf-8"))
    inputs = gathering_fingerprint(out_dir, jobs)["jobs"]
    predictions: list[Prediction] = []
    for fold in range(config.splits.n_folds):
        predictions.extend(_gather_fold(out_dir, config, fold, jobs))
    _write_summary(out_dir, config, plan["synthetic_data"], predictions)
    gathered = {**gathering_fingerprint(out_dir, jobs), "jobs": inputs}
    _write_run_record(out_dir, plan, "complete", gathered=gathered, **_data_sha256(out_dir, jobs))
    return out_dir


def _data_sha256(out_dir: Path, jobs: Sequence[Job]) -> dict[str, str]:
    """``manifest_data_sha256`` as the jobs recorded it (one manifest, so one value), for
    ``run.json``: the tables compare runs on it. Nothing when no job recorded it (jobs
    written before it existed): the tables then compare ``manifest_sha256``."""
    found = {job_status(out_dir, job).get("manifest_data_sha256") for job in jobs} - {None}
    return {"manifest_data_sha256": found.pop()} if len(found) == 1 else {}


def gathering_fingerprint(
    out_dir: Path, jobs: Sequence[Job]
) -> dict[str, dict[str, list[int] | None]]:
    """Size and modification time of every finished job's files ("jobs") and of what
    gathering writes from them ("summary"); None for a file that is missing.

    ``run.json`` keeps it: a gathered run whose files differ in any way (a job trained
    again, or restored from an older copy with its old date; a summary file removed) is
    gathered again by ``package`` (:func:`Training.export.gather_run`).
    """
    folds = sorted({job.fold for job in jobs if job.kind == "classifier"})
    summary = [out_dir / "predictions.csv", out_dir / "metrics.json"]
    summary += [
        out_dir / f"fold_{k}" / name for k in folds for name in ("predictions.csv", "fold.json")
    ]
    files = [path for job in jobs for path in job.finished_files(out_dir)]
    return {"jobs": _fingerprint(out_dir, files), "summary": _fingerprint(out_dir, summary)}


def _fingerprint(out_dir: Path, paths: Sequence[Path]) -> dict[str, list[int] | None]:
    """{path in the run: [size, modification time in ns], or None when missing}."""
    fingerprint: dict[str, list[int] | None] = {}
    for path in paths:
        try:
            stat = path.stat()
        except FileNotFoundError:
            stat = None
        key = path.relative_to(out_dir).as_posix()
        fingerprint[key] = None if stat is None else [stat.st_size, stat.st_mtime_ns]
    return fingerprint


def _gather_fold(out_dir: Path, config: RunConfig, fold: int, jobs: list[Job]) -> list[Prediction]:
    """One fold's classifier predictions in slot order, with its validation MCCs and
    synthetic-DES logit shifts; the synthetic rows it returns and writes are recalibrated
    (each classifier's own ``predictions.csv`` keeps its raw output)."""
    fold_dir = out_dir / f"fold_{fold}"
    predictions: list[Prediction] = []
    cases: dict[str, int] = {}
    for job in (j for j in jobs if j.kind == "classifier" and j.fold == fold):
        status = job_status(out_dir, job)
        cases = cases or dict(status.get("fold_cases", {}))
        if status["status"] == COMPLETE:
            predictions.extend(_job_predictions(out_dir, job))
    val = [p for p in predictions if p.split == "val"]
    slot_mcc = slot_mccs(val, config.threshold)
    shifts = synthetic_logit_shifts(val)
    predictions = recalibrate_synthetic(predictions, shifts)
    fold_record = {
        "fold": fold,
        "val_mcc": slot_mcc,
        "modality_mcc": modality_mccs(val, slot_mcc, config.threshold),
        "synthetic_logit_shift": shifts,
        "synthetic_calibration_cases": {slot: len(synthetic_rows(val, slot)) for slot in shifts},
        "cases": cases,
    }
    write_predictions(predictions, fold_dir / "predictions.csv")
    write_text_atomic(fold_dir / "fold.json", json.dumps(fold_record, indent=2) + "\n")
    return predictions


def _job_predictions(out_dir: Path, job: Job) -> list[Prediction]:
    """A finished classifier's predictions; a file cut short or edited is that job's error."""
    path = job.folder(out_dir) / "predictions.csv"
    try:
        rows = read_predictions(path)
    except PredictionsFileError as error:  # names the file and line itself
        problem = str(error)
    except (OSError, KeyError, TypeError, ValueError) as error:
        problem = f"{path}: unreadable ({type(error).__name__}: {error})"
    else:
        if rows:
            return rows
        problem = f"{path}: no predictions"
    raise JobError(
        f"{problem}; {job.describe()} must be trained again: remove "
        f"{job.folder(out_dir)} and run `train … --job {job.id}`"
    )


def _write_summary(
    out_dir: Path, config: RunConfig, synthetic_data: bool, predictions: list[Prediction]
) -> None:
    """All folds' predictions, test metrics per setting and generation quality per view."""
    write_predictions(predictions, out_dir / "predictions.csv")
    threshold = config.threshold
    per_fold = per_fold_metrics(predictions, threshold)
    pooled = {setting: pooled_test_scores(predictions, setting, threshold) for setting in per_fold}
    metrics: dict[str, Any] = {
        "architecture": config.classifier.architecture,
        "threshold": threshold,
        "per_fold": per_fold,
        "summary": summarize(per_fold),
        "summary_definition": "mean and standard error over folds of the test-split metrics",
        "protocol": config.splits.protocol,
        "pooled_test_auc": {setting: auc(*scores) for setting, scores in pooled.items()},
        "pooled_test_cases": {setting: int(scores[0].size) for setting, scores in pooled.items()},
        "pooled_definition": "every fold's scored test cases, each fused with its fold's "
        "weights: one out-of-fold prediction per case under the every-patient protocol, "
        "only the tested part of the cohort under the paper's",
        "generation": generation_summary(out_dir),
        "research_use_notice": VirtualBiopsyLib.RESEARCH_USE_NOTICE,
    }
    if synthetic_data:
        metrics["synthetic_notice"] = VirtualBiopsyLib.SYNTHETIC_NOTICE
    write_text_atomic(out_dir / "metrics.json", json.dumps(finite_json(metrics), indent=2) + "\n")


def generation_summary(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Table 3: per view, mean ± SE over folds of the test MSE / PSNR / SSIM, and beside
    them MSE / PSNR inside the breast (absent from runs written before they existed) and
    the lesion figures with their counts summed over folds (:func:`_lesion_summary`)."""
    summary: dict[str, dict[str, Any]] = {}
    for view in VIEWS:
        per_fold = []
        for result in sorted(out_dir.glob(f"fold_*/generators/{view.value}/result.json")):
            per_fold.append(json.loads(result.read_text(encoding="utf-8"))["test_generation"])
        if not per_fold:
            continue
        summary[view.value] = {}
        for metric in (*GENERATION_METRICS, *BREAST_METRICS):
            values = [f[metric] for f in per_fold if f.get(metric) is not None]
            if values or metric in GENERATION_METRICS:
                summary[view.value][metric] = list(mean_and_standard_error(values))
        summary[view.value] |= _lesion_summary(per_fold)
    return summary


def _lesion_summary(per_fold: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± SE over folds of each lesion figure some fold defines, and the number of
    test pairs behind it: summed over the folds that define it (a fold with too few pairs
    for an r adds none to the r's, :data:`LESION_SUMMARY_COUNTS`). Nothing for a run
    without lesion masks or written before lesion figures existed: its summary stays
    what it was."""
    result: dict[str, Any] = {}
    for metric, count in LESION_FIGURES.items():
        defined = [fold for fold in per_fold if fold.get(metric) is not None]
        if defined:
            result[metric] = list(mean_and_standard_error([fold[metric] for fold in defined]))
            result[LESION_SUMMARY_COUNTS[metric]] = sum(
                int(fold.get(count) or 0) for fold in defined
            )
    return result


def fold_dirs(out_dir: Path) -> list[Path]:
    return sorted(out_dir.glob("fold_*"), key=lambda p: int(p.name.split("_")[1]))
