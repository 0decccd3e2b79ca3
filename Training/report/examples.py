"""Generation examples and per-pair generation metrics, from a run's saved generators.

Needs what the run saved (``fold_*/generators/<view>/generator_LE_to_DES_<view>.safetensors``)
and the images: the run's manifest and its preprocessed-image cache (:mod:`Training.cache`,
``RUN_DIR/cache`` by default; images missing there are preprocessed from the manifest's
files). For a few test patients each fold's own generator turns the LE image into a
synthetic DES, shown beside the LE, the real DES and their difference. On request the
same is done for every test pair, so Table 3 gets patient-level bootstrap intervals.
No patient identifier appears: examples are numbered.

Imports torch (the rest of the report does not).

>>> material = generation_material(run, Path("cohort/manifest.csv"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from Training.report.data import ReportInputError, ReportRun, data_sha256

logger = logging.getLogger(__name__)

EXAMPLES = 4


@dataclass
class GenerationExample:
    fold: int
    view: str
    label: int
    le: np.ndarray
    real_des: np.ndarray
    synthetic_des: np.ndarray


@dataclass
class GenerationMaterial:
    examples: list[GenerationExample] = field(default_factory=list)
    pairs: list[dict] = field(default_factory=list)  # fold, view, patient, whole/breast errors
    skipped: list[str] = field(default_factory=list)  # why a fold/view gave nothing


def generation_material(
    run: ReportRun,
    manifest_path: Path,
    cache_dir: Path | None = None,
    examples: int = EXAMPLES,
    all_pairs: bool = False,
    progress: bool = True,
) -> GenerationMaterial:
    """Examples (and, with ``all_pairs``, every test pair's MSE/PSNR/SSIM, whole image and
    in the breast) of one run."""
    import torch
    from tqdm import tqdm

    from Training.cache import PreprocessedCache
    from Training.config import RunConfig
    from Training.datasets import image_pairs, patient_key, read_manifest
    from Training.generator_training import breast_mask, build_config_generator, synthesize_des
    from Training.metrics import masked_generation_metrics
    from Training.run import preprocessing_params
    from VirtualBiopsyLib.models.safetensors_io import read_state_dict
    from VirtualBiopsyLib.roles import VIEWS

    manifest = read_manifest(Path(manifest_path))
    expected = run.record.get("manifest_sha256")
    # the run's manifest, or the same rows with other lesion masks (or none): the examples
    # show LE and DES images, which masks do not change
    if expected and expected != manifest.sha256 and data_sha256(run.record) != manifest.data_sha256:
        raise ReportInputError(
            f"{manifest_path}: not the manifest of run {run.name} (SHA-256 differs from run.json)"
        )
    config = RunConfig.load(run.run_dir / "config.json")
    cache = PreprocessedCache(cache_dir or run.run_dir / "cache", preprocessing_params(config))
    labels = {row.path: row.label for row in manifest.rows}
    material = GenerationMaterial()
    tests = {int(item["fold"]): set(item["test"]) for item in run.splits}
    if not tests:
        material.skipped.append("no splits.json: test patients unknown")
        return material
    jobs = [(fold, view) for fold in sorted(tests) for view in VIEWS]
    wanted = {0: (examples + 1) // 2, 1: examples // 2}  # benign, malignant examples
    for fold, view in tqdm(jobs, desc=f"{run.name}: generators", disable=not progress):
        file = (
            run.run_dir
            / f"fold_{fold}"
            / "generators"
            / view.value
            / f"generator_LE_to_DES_{view.value}.safetensors"
        )
        if not file.exists():
            material.skipped.append(f"fold {fold} {view.value}: no saved generator")
            continue
        pairs = [
            p for p in image_pairs(manifest.rows, view) if patient_key(p.patient_id) in tests[fold]
        ]
        if not all_pairs:
            pairs = _pick(pairs, labels, wanted, material, view.value)
        if not pairs:
            continue
        try:
            generator = build_config_generator(config.generator)
            generator.load_state_dict(read_state_dict(file))
        except (RuntimeError, ValueError, OSError) as error:
            material.skipped.append(f"fold {fold} {view.value}: generator unusable ({error})")
            continue
        le = np.stack([cache.load(p.le_path) for p in pairs])
        des = np.stack([cache.load(p.des_path) for p in pairs])
        with torch.inference_mode():
            synthetic = synthesize_des(generator.eval(), torch.from_numpy(le[:, None].copy()))
        synthetic = synthetic[:, 0].numpy()
        shown: set[int] = set()  # one example per class and fold
        for index, pair in enumerate(pairs):
            label = int(labels.get(pair.le_path, 0))
            if all_pairs:
                metrics = masked_generation_metrics(  # as training scores its test pairs
                    synthetic[index], des[index], breast_mask(le[index])
                )
                material.pairs.append(
                    {
                        "fold": fold,
                        "view": view.value,
                        "patient": patient_key(pair.patient_id),
                        **metrics,
                    }
                )
            if label not in shown and _wants(material, wanted, label, view.value):
                shown.add(label)
                example = GenerationExample(
                    fold, view.value, label, le[index], des[index], synthetic[index]
                )
                material.examples.append(example)
    material.examples.sort(key=lambda e: (e.label, e.fold))
    return material


def _taken(material: GenerationMaterial, label: int) -> int:
    return sum(1 for e in material.examples if e.label == label)


def _wants(material: GenerationMaterial, wanted: dict[int, int], label: int, view: str) -> bool:
    """Examples are CC pairs (MLO when a run has no CC generator), half of each class."""
    if view != "CC" and any(e.view == "CC" for e in material.examples):
        return False
    return _taken(material, label) < wanted.get(label, 0)


def _pick(pairs: Iterable, labels: dict, wanted: dict[int, int], material, view: str) -> list:
    """At most the pairs still wanted as examples (one per class per fold)."""
    chosen, seen = [], set()
    for pair in pairs:
        label = int(labels.get(pair.le_path, 0))
        if label not in seen and _wants(material, wanted, label, view):
            chosen.append(pair)
            seen.add(label)
    return chosen
