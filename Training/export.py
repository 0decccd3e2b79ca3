"""Export a finished training run as a model package (``virtual-biopsy-train package``).

A run whose jobs ran separately (``train --job``, say a Slurm array) is gathered first
(:func:`gather_run`); if any job is not finished the error names each one and no
package is written. The package holds, per fold, the four classifiers with their
validation MCCs and the view-fused modality MCCs (the fusion weights), and one
generator per view: the fold whose generator reached the lowest validation loss (mean
|G(LE) − DES|). Provenance carries the manifest hash, the training configuration and
the test metrics of the settings F, C, Ĉ, F+C, F+Ĉ (mean ± SE over folds), with the
synthetic-data notice when the run was trained on phantom data.

>>> export_package(Path("runs/tiny"), Path("packages/tiny"))  # doctest: +SKIP
PosixPath('packages/tiny')
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import VirtualBiopsyLib
from Training.classifier_training import build_config_classifier
from Training.config import RunConfig
from Training.datasets import ManifestError
from Training.generator_training import build_config_generator
from Training.jobs import Job, JobError, describe_missing, missing_jobs, read_plan
from Training.run import finalize_run, fold_dirs, gathering_fingerprint, preprocessing_params
from VirtualBiopsyLib.atomic_io import finite_json
from VirtualBiopsyLib.models.package import FoldModels, write_package
from VirtualBiopsyLib.models.safetensors_io import read_state_dict
from VirtualBiopsyLib.roles import SLOTS, VIEWS, View

GENERATOR_SELECTION = "per view, the fold whose generator had the lowest validation loss"
SYNTHETIC_CALIBRATION = (
    "per DES classifier, a logit shift for synthetic DES input, fit by class-balanced log "
    "loss on its fold's validation synthetic DES (absent: none fit)"
)


def export_package(
    run_dir: Path,
    out_dir: Path,
    *,
    name: str | None = None,
    version: str = VirtualBiopsyLib.__version__,
    is_demo: bool = False,
    intended_use: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the model package of a complete run to ``out_dir`` (via ``write_package``)."""
    run_dir = Path(run_dir)
    gather_run(run_dir)
    record = _read_json(run_dir / "run.json")
    if record.get("status") != "complete":
        raise ManifestError(f"{run_dir}: the run is not complete (status {record.get('status')})")
    config = RunConfig.load(run_dir / "config.json")
    metrics = _read_json(run_dir / "metrics.json")
    folds = [_fold_models(folder, config) for folder in fold_dirs(run_dir)]
    generators, chosen = _best_generators(run_dir, config)
    provenance = {
        "dataset_manifest_sha256": record.get("manifest_sha256"),
        "training_config": config.to_dict(),
        "test_metrics": finite_json(
            {
                "settings": metrics.get("summary"),
                "definition": metrics.get("summary_definition"),
                "generation": metrics.get("generation"),
                "synthetic_data": bool(record.get("synthetic_data")),
                **(
                    {"synthetic_notice": VirtualBiopsyLib.SYNTHETIC_NOTICE}
                    if record.get("synthetic_data")
                    else {}
                ),
            }
        ),
        "generator_selection": {"rule": GENERATOR_SELECTION, "folds": chosen},
        "synthetic_calibration": SYNTHETIC_CALIBRATION,
        "pretrain_manifest_sha256": record.get("pretrain_manifest_sha256"),
    }
    return write_package(
        out_dir,
        name=name or f"virtual-biopsy-{config.classifier.architecture}",
        version=version,
        architecture=config.classifier.architecture,
        folds=folds,
        generators=generators,
        preprocessing=preprocessing_params(config),
        threshold=config.threshold,
        provenance=provenance,
        is_demo=is_demo,
        intended_use=intended_use,
        overwrite=overwrite,
    )


def gather_run(run_dir: Path) -> None:
    """Summarise a run whose jobs ran separately (``train --job``), or say what is missing.

    Raises :class:`Training.jobs.JobError` listing every unfinished job (ID, name, what
    it is, its state) before anything is written; a run gathered already is left as is.
    A run folder from before job plans (no ``jobs.json``) must be complete already.
    """
    jobs = read_plan(run_dir)
    if jobs is None:
        return
    missing = missing_jobs(run_dir, jobs)
    if missing:
        raise JobError(describe_missing(run_dir, missing))
    if not _gathered(run_dir, jobs):
        finalize_run(run_dir)


def _gathered(run_dir: Path, jobs: list[Job]) -> bool:
    """True when ``run.json`` says complete and every job file and summary file is the
    one gathered (:func:`Training.run.gathering_fingerprint`): a job trained again or
    restored from an older copy, or a summary file removed, makes the summary stale."""
    path = run_dir / "run.json"
    if not path.exists():
        return False
    record = _read_json(path)
    if record.get("status") != "complete":
        return False
    return record.get("gathered") == gathering_fingerprint(run_dir, jobs)


def _fold_models(folder: Path, config: RunConfig) -> FoldModels:
    fold_record = _read_json(folder / "fold.json")
    classifiers = {}
    for slot in SLOTS:
        file = folder / "classifiers" / slot / f"classifier_{slot}.safetensors"
        if not file.exists():
            continue
        model = build_config_classifier(config.classifier)
        model.load_state_dict(read_state_dict(file))
        classifiers[slot] = model
    return FoldModels(
        classifiers=classifiers,
        val_mcc=fold_record["val_mcc"],
        modality_mcc=fold_record["modality_mcc"],
        synthetic_logit_shift=fold_record.get("synthetic_logit_shift", {}),
    )


def _best_generators(run_dir: Path, config: RunConfig) -> tuple[dict[View, Any], dict[str, int]]:
    generators: dict[View, Any] = {}
    chosen: dict[str, int] = {}
    for view in VIEWS:
        results = []
        for folder in fold_dirs(run_dir):
            result_file = folder / "generators" / view.value / "result.json"
            if result_file.exists():
                result = _read_json(result_file)
                loss = result.get("best_val_loss")
                if loss is not None and math.isfinite(loss):
                    results.append((loss, int(result["fold"]), result_file.parent))
        if not results:
            continue
        _, fold, folder = min(results)
        generator = build_config_generator(config.generator)
        generator.load_state_dict(
            read_state_dict(folder / f"generator_LE_to_DES_{view.value}.safetensors")
        )
        generators[view] = generator.eval()
        chosen[view.value] = fold
    return generators, chosen


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ManifestError(f"{path}: missing or unreadable run file ({error})") from None
