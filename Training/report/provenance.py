"""The report's first page: where the numbers come from (runs, data, code, configuration).

Also the TRIPOD+AI items (Collins et al., BMJ 2024;385:e078378) this report covers and
those it cannot: a report computed from one cross-validated run cannot supply external
validation, a sample-size rationale or the study's clinical context.

>>> commit = git_commit()  # doctest: +SKIP
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from Training.report.data import ReportRun, patient_labels

CODE_ROOT = Path(__file__).resolve().parents[2]

TRIPOD_AI_COVERED: tuple[str, ...] = (
    "Data sources: the manifest's SHA-256 identifies the data set used by each run.",
    "Participants and outcome: patients, cases and images per split and class; outcome = "
    "the manifest's benign/malignant label.",
    "Data preparation and predictors: image size and intensity stretch from the configuration.",
    "Analytical methods: models, fusion, cross-validation protocol and every statistic's "
    "method (bootstrap, DeLong, logistic recalibration) stated with its parameters.",
    "Training versus evaluation: patient-disjoint folds; pooled out-of-fold test cases only.",
    "Model performance: discrimination (AUC, G-mean, MCC) with 95 % confidence intervals, "
    "paired comparisons with a named test, calibration (Brier, intercept, slope, "
    "reliability diagrams), operating points (threshold and fixed specificities).",
    "Performance in subgroups: ACR breast density categories, with n per category.",
    "Open science: code version (git commit when available) and the full configuration.",
)

TRIPOD_AI_NOT_COVERED: tuple[str, ...] = (
    "External validation (another centre, another vendor, another period): not possible "
    "from a cross-validated run.",
    "Sample size justification, eligibility criteria, recruitment dates and setting: "
    "properties of the study, not of the run; to be written by the authors.",
    "Missing data handling beyond what the settings state (a case enters a setting only "
    "with its inputs); reasons for missing images are not recorded in a run.",
    "Fairness across demographic groups (age, ethnicity, vendor): the manifest carries no "
    "such variables.",
    "Clinical utility (decision curves, net benefit), model updating, patient and public "
    "involvement, ethics, funding and conflicts of interest.",
)


def git_commit(root: Path = CODE_ROOT) -> str | None:
    """The report code's git commit (``+ local changes`` when the tree is dirty), or None."""
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit} + local changes" if dirty else commit


def run_rows(runs: Sequence[ReportRun]) -> list[list[str]]:
    rows = []
    for run in runs:
        record = run.record
        code = str(record.get("code_version", "unknown"))
        if record.get("git_commit"):
            code += f" (git {record['git_commit']})"
        rows.append(
            [
                run.name,
                run.architecture,
                run.protocol,
                str(len(run.folds)),
                str(record.get("status", "unknown")),
                str(record.get("manifest_sha256", "unknown")),
                code,
                str(record.get("started", "unknown")),
                "yes" if run.synthetic else "no",
            ]
        )
    return rows


RUN_HEADER = (
    "run",
    "architecture",
    "protocol",
    "folds",
    "status",
    "manifest SHA-256",
    "training code",
    "started",
    "synthetic data",
)


def split_rows(run: ReportRun) -> list[list[str]]:
    """Per fold: patients (malignant/benign) per split; cases/images classified in val/test."""
    labels = patient_labels(run)
    cases: dict[tuple[int, str], set[str]] = {}
    images: dict[tuple[int, str], int] = {}
    for p in run.predictions:
        cases.setdefault((p.fold, p.split), set()).add(p.case)
        if p.source == "real":
            images[(p.fold, p.split)] = images.get((p.fold, p.split), 0) + 1
    rows = []
    for item in run.splits:
        fold = int(item["fold"])
        row = [run.name, str(fold)]
        for split in ("train", "val", "test"):
            patients = list(item.get(split, []))
            malignant = sum(1 for p in patients if labels.get(p) == 1)
            benign = sum(1 for p in patients if labels.get(p) == 0)
            unknown = len(patients) - malignant - benign
            text = f"{len(patients)} ({malignant}/{benign}"
            row.append(text + (f"/{unknown} unknown)" if unknown else ")"))
        for split in ("val", "test"):
            row.append(f"{len(cases.get((fold, split), ()))} / {images.get((fold, split), 0)}")
        rows.append(row)
    return rows


SPLIT_HEADER = (
    "run",
    "fold",
    "train patients (mal./ben.)",
    "val patients (mal./ben.)",
    "test patients (mal./ben.)",
    "val cases / images",
    "test cases / images",
)


def config_rows(runs: Sequence[ReportRun]) -> list[list[str]]:
    """The settings a reader asks for first, per run (the full files are in the appendix)."""
    keys = (
        ("image size", ("image_size",)),
        ("intensity stretch", ("stretch",)),
        ("classifier phase", ("classifier_phase",)),
        ("architecture", ("classifier", "architecture")),
        ("pooling", ("classifier", "pooling")),
        ("classifier max epochs", ("classifier", "max_epochs")),
        ("batch size", ("classifier", "batch_size")),
        ("learning rate", ("classifier", "learning_rate")),
        ("class weighting", ("classifier", "class_weighting")),
        ("generators trained", ("train_generators",)),
        ("generator recipe", ("generator", "recipe")),
        ("generator max epochs", ("generator", "max_epochs")),
        ("folds", ("splits", "n_folds")),
        ("split seed", ("splits", "seed")),
        ("protocol", ("splits", "protocol")),
        ("threshold", ("threshold",)),
        ("seed", ("seed",)),
    )
    rows = []
    for label, path in keys:
        values = [_lookup(run.config, path) for run in runs]
        if all(v is None for v in values):
            continue
        rows.append([label, *["—" if v is None else str(v) for v in values]])
    return rows


def _lookup(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = data
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value
