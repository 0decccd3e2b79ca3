"""A finished run as the report sees it, and its pooled out-of-fold scores per setting.

The report reads only files a run writes (``config.json``, ``run.json``, ``splits.json``,
``predictions.csv``, ``fold_*/generators/*/result.json``) and fuses the per-image
predictions with :mod:`Training.evaluation` (each fold with its own validation MCCs).
Runs are keyed by their folder name (``parent/name`` when two folders share a name), so
two runs of one architecture keep their own rows.

Pooled out-of-fold scores: every fold's *test* cases, each scored by its own fold's
models. Under the paper's protocol the five test sets are disjoint but cover only part of
the cohort; under the every-patient protocol they cover every patient once. Every
setting is scored on the same cases (:func:`Training.evaluation.scored_cases`: real LE,
real DES and, when the run synthesized DES, synthetic DES), so that C and Ĉ, and F
against either, are compared on the same patients.

>>> run = load_run(Path("runs/resnet18"))  # doctest: +SKIP
>>> scores = pooled_scores(run)  # doctest: +SKIP
>>> scores["F+Ĉ"].labels.size  # doctest: +SKIP
42
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from Training.datasets import ManifestError
from Training.evaluation import (
    SETTINGS,
    CaseInputs,
    FoldWeights,
    Prediction,
    PredictionsFileError,
    fold_test_cases,
    fold_weights,
    fused_probability,
    has_synthesis,
    read_predictions,
)

PAPER_PROTOCOL = "paper"
EVERY_PATIENT_PROTOCOL = "every-patient"


class ReportInputError(ManifestError):
    """A run folder the report cannot use (names the file and what is wrong)."""


@dataclass
class ReportRun:
    """What the report needs from one run folder."""

    name: str
    run_dir: Path
    config: dict[str, Any]
    record: dict[str, Any]
    predictions: list[Prediction]
    splits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def architecture(self) -> str:
        return str(self.config.get("classifier", {}).get("architecture", "unknown"))

    @property
    def threshold(self) -> float:
        return float(self.config.get("threshold", 0.5))

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    @property
    def protocol(self) -> str:
        splits = self.config.get("splits", {})
        value = splits.get("protocol") if isinstance(splits, dict) else None
        return str(value or PAPER_PROTOCOL)

    @property
    def synthetic(self) -> bool:
        return bool(self.record.get("synthetic_data"))

    @property
    def folds(self) -> list[int]:
        return sorted({p.fold for p in self.predictions})


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportInputError(f"{path}: missing; is the run complete?") from None
    except (OSError, ValueError) as error:
        raise ReportInputError(f"{path}: unreadable JSON ({error})") from None
    if not isinstance(data, dict):
        raise ReportInputError(f"{path}: expected a JSON object")
    return data


def load_run(run_dir: Path, name: str | None = None) -> ReportRun:
    """Read one run folder; a clear error names the file that is missing or broken."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportInputError(f"{run_dir}: not a run folder")
    config = _read_json(run_dir / "config.json")
    record = _read_json(run_dir / "run.json")
    predictions_file = run_dir / "predictions.csv"
    if not predictions_file.exists():
        raise ReportInputError(f"{predictions_file}: missing; is the run complete?")
    try:
        predictions = read_predictions(predictions_file)
    except PredictionsFileError as error:  # names the file and line already
        raise ReportInputError(str(error)) from None
    if not any(p.split == "test" for p in predictions):
        raise ReportInputError(f"{predictions_file}: no test predictions")
    splits: list[dict[str, Any]] = []
    if (run_dir / "splits.json").exists():
        splits = list(_read_json(run_dir / "splits.json").get("folds", []))
    name = name or run_names([run_dir])[0]
    return ReportRun(name, run_dir, config, record, predictions, splits)


def run_names(run_dirs: Sequence[Path]) -> list[str]:
    """One distinct name per run folder, the key of its rows, figures and file names
    (``experiments`` and the report name runs alike).

    The folder's own name as resolved, so ``.`` or ``runs/x/..`` name the folder they
    are rather than nothing; ``parent/name`` where two runs share a name; the resolved
    paths where even those repeat. The same folder given twice is refused.

    >>> run_names([Path("/runs/a/resnet18"), Path("/runs/b/resnet18"), Path("/runs/vgg16")])
    ['a/resnet18', 'b/resnet18', 'vgg16']
    """
    folders = [Path(path).resolve() for path in run_dirs]
    twice = sorted({str(folder) for folder in folders if folders.count(folder) > 1})
    if twice:
        raise ReportInputError(f"{', '.join(twice)}: the same run folder is given twice")
    plain = [folder.name or str(folder) for folder in folders]
    counts = Counter(plain)
    names = [
        f"{folder.parent.name}/{name}" if counts[name] > 1 else name
        for folder, name in zip(folders, plain, strict=True)
    ]
    if len(set(names)) != len(names):
        names = [str(folder) for folder in folders]
    return names


def data_sha256(record: dict[str, Any]) -> str | None:
    """What identifies a run's data in ``run.json``: the manifest's SHA-256 without its
    lesion masks (``manifest_data_sha256``), else the manifest's own (runs written
    before it existed). Masks only annotate test images, so a run with masks and one
    without on the same rows are runs on the same patients.

    >>> data_sha256({"manifest_sha256": "ab", "manifest_data_sha256": "cd"})
    'cd'
    """
    return record.get("manifest_data_sha256") or record.get("manifest_sha256")


def manifest_note(manifests: Sequence[tuple[str, str | None]]) -> str | None:
    """A warning when runs, given as ``(name, manifest SHA-256 or None)``, were trained
    on different manifests (or on one whose hash a run does not record): their rows
    describe different patients, so they are neither paired nor averaged. None when
    every run names the same manifest (or none does: nothing to compare).

    >>> manifest_note([("resnet18", "ab" * 32), ("vgg16", "cd" * 32)])[:44]
    'The runs were trained on different manifests'
    """
    if len({sha for _, sha in manifests}) < 2:
        return None
    listing = "; ".join(f"{name} {sha[:12] if sha else 'unknown'}" for name, sha in manifests)
    return (
        f"The runs were trained on different manifests (SHA-256 {listing}): each row "
        "describes its own data set; rows of different runs are not a comparison on the "
        "same patients and are not averaged."
    )


def load_runs(run_dirs: Sequence[Path]) -> list[ReportRun]:
    """Every run, keyed by :func:`run_names`."""
    paths = [Path(p) for p in run_dirs]
    return [load_run(path, name) for path, name in zip(paths, run_names(paths), strict=True)]


@dataclass
class SettingScores:
    """Pooled out-of-fold fused probabilities of one setting, one entry per case."""

    cases: list[str]
    patients: list[str]
    labels: np.ndarray
    probabilities: np.ndarray
    folds: np.ndarray
    densities: list[str]

    def __len__(self) -> int:
        return len(self.cases)

    def subset(self, keep: Sequence[bool] | np.ndarray) -> SettingScores:
        keep = np.asarray(keep, dtype=bool)
        return SettingScores(
            [c for c, k in zip(self.cases, keep, strict=True) if k],
            [p for p, k in zip(self.patients, keep, strict=True) if k],
            self.labels[keep],
            self.probabilities[keep],
            self.folds[keep],
            [d for d, k in zip(self.densities, keep, strict=True) if k],
        )


@dataclass
class FoldCases:
    """One fold's test cases and fusion weights (the robustness sweep re-fuses them)."""

    fold: int
    weights: FoldWeights
    cases: dict[str, CaseInputs]


def fold_cases(run: ReportRun) -> list[FoldCases]:
    """Each fold's scored test cases (the same for every setting) and fusion weights."""
    synthesis = has_synthesis(run.predictions)
    return [
        FoldCases(
            fold,
            fold_weights(run.predictions, fold, run.threshold),
            fold_test_cases(run.predictions, fold, synthesis),
        )
        for fold in run.folds
    ]


def pooled_scores(
    run: ReportRun, folds: Sequence[FoldCases] | None = None
) -> dict[str, SettingScores]:
    """Every setting's pooled out-of-fold scores (see the module docstring).

    A case tested in more than one fold (no protocol here does that) would get the mean
    of its folds' probabilities, so that it still counts once.
    """
    folds = fold_cases(run) if folds is None else folds
    result = {}
    for setting in SETTINGS:
        collected: dict[str, list] = {}
        for item in folds:
            for key, case in item.cases.items():
                probability = fused_probability(
                    case, setting, item.weights.slot_mcc, item.weights.modality_mcc
                )
                if probability is None or math.isnan(probability):
                    continue
                entry = collected.setdefault(key, [case, [], []])
                entry[1].append(probability)
                entry[2].append(item.fold)
        keys = sorted(collected)
        result[setting] = SettingScores(
            keys,
            [collected[k][0].patient for k in keys],
            np.array([collected[k][0].label for k in keys], dtype=int),
            np.array([float(np.mean(collected[k][1])) for k in keys]),
            np.array([collected[k][2][0] for k in keys], dtype=int),
            [collected[k][0].acr_density for k in keys],
        )
    return result


def repeated_test_cases(folds: Sequence[FoldCases]) -> int:
    """How many cases appear in more than one fold's test split (0 for both protocols)."""
    counts = Counter(key for item in folds for key in item.cases)
    return sum(1 for count in counts.values() if count > 1)


def patient_labels(run: ReportRun) -> dict[str, int]:
    """Label per patient key from the predictions (malignant if any case is)."""
    labels: dict[str, int] = {}
    for p in run.predictions:
        labels[p.patient] = max(labels.get(p.patient, 0), p.label)
    return labels
