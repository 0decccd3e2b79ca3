"""The paper's experiments as tables, from one or more finished runs (one per architecture).

- ``settings.csv|md`` — Table A1: AUC, G-mean, MCC of F, C, Ĉ, F+C, F+Ĉ per run, and
  over how many folds (a fold whose test cases hold one class defines no metric);
- ``robustness.csv|md`` (+ ``robustness.png``) — Figure 5: real DES of n % of test
  patients replaced by synthetic DES (n = 0, 10 … 100, repetitions from the config);
- ``density.csv|md`` — Table 4: F, F+C, F+Ĉ per ACR category with n and folds, plus
  the runs' average (not for runs trained on different manifests);
- ``generation.csv|md`` — Table 3: MSE, PSNR, SSIM per view (data_range 1, whole image),
  MSE, PSNR inside the breast and, where the manifest had lesion masks, MAE and PSNR
  inside the lesion and the lesion contrast of real and synthetic DES per label with
  their Pearson r, each with the test pairs it is over (``n/a`` without masks).

Values are percentages for classification metrics, mean ± standard error over folds.
When a run was trained on synthetic (phantom) data every table says so: Markdown files
start with ``SYNTHETIC_NOTICE`` and CSV files with a ``# `` comment line carrying it;
runs trained on different manifests are flagged the same way (and in a warning).

>>> write_experiments([Path("runs/resnet18")], Path("tables"))  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import VirtualBiopsyLib
from Training.config import RunConfig
from Training.datasets import ManifestError
from Training.evaluation import (
    SETTINGS,
    Prediction,
    defined_folds,
    density_metrics,
    per_fold_metrics,
    read_predictions,
    robustness_sweep,
    summarize,
)
from Training.metrics import (
    BREAST_METRICS,
    CLASSIFICATION_METRICS,
    GENERATION_DIGITS,
    GENERATION_METRICS,
    GENERATION_TITLES,
    LESION_COLUMNS,
    format_mean_and_error,
    lesion_cells,
)
from Training.report.data import data_sha256, manifest_note, run_names
from Training.run import generation_summary
from VirtualBiopsyLib.atomic_io import write_bytes_atomic, write_text_atomic
from VirtualBiopsyLib.errors import OutputExistsError

logger = logging.getLogger(__name__)

METRIC_TITLES = {"auc": "AUC", "g_mean": "G-mean", "mcc": "MCC", **GENERATION_TITLES}


@dataclass
class RunTables:
    """What the tables need from one run; rows are keyed by ``name``, the run folder's name.

    Two runs of one architecture (other seeds, other recipes) stay two rows.
    """

    name: str
    architecture: str
    predictions: list[Prediction]
    config: RunConfig
    synthetic: bool
    run_dir: Path
    manifest_sha256: str | None = None


def load_run(run_dir: Path, name: str | None = None) -> RunTables:
    """The run in ``run_dir``, named ``name`` or, by default, as :func:`run_names` names
    it alone (its folder as resolved: ``.`` or ``runs/x/..`` name the folder they are)."""
    run_dir = Path(run_dir)
    predictions_file = run_dir / "predictions.csv"
    if not predictions_file.exists():
        raise ManifestError(f"{run_dir}: no predictions.csv; is the run complete?")
    config = RunConfig.load(run_dir / "config.json")
    record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    return RunTables(
        name or run_names([run_dir])[0],
        config.classifier.architecture,
        read_predictions(predictions_file),
        config,
        bool(record.get("synthetic_data")),
        run_dir,
        data_sha256(record),
    )


def write_experiments(
    run_dirs: Sequence[Path],
    out_dir: Path,
    repetitions: int | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write every table for the runs into ``out_dir``; returns the files written."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise OutputExistsError(f"{out_dir}: folder exists and is not empty (use --overwrite)")
    names = run_names(run_dirs)  # refuses one folder given twice
    runs = [load_run(path, name) for path, name in zip(run_dirs, names, strict=True)]
    synthetic = any(run.synthetic for run in runs)
    note = manifest_note([(run.name, run.manifest_sha256) for run in runs])
    if note:  # a warning, not a refusal: comparing data sets is a choice, pooling them is not
        logger.warning(note)
    tables = {
        "settings": settings_table(runs),
        "robustness": robustness_table(runs, repetitions),
        "density": density_table(runs, average=note is None),
        "generation": generation_table(runs),
    }
    notices = _notice_lines(synthetic) + ([note] if note else [])
    written = []
    for name, (header, rows) in tables.items():
        written.append(_write_csv(out_dir / f"{name}.csv", header, rows, notices))
        written.append(_write_markdown(out_dir / f"{name}.md", name, header, rows, notices))
    plot = _plot_robustness(out_dir / "robustness.png", tables["robustness"][1], synthetic)
    if plot is not None:
        written.append(plot)
    return written


Table = tuple[list[str], list[list[str]]]


def settings_table(runs: Sequence[RunTables]) -> Table:
    """Table A1: one row per architecture and setting."""
    header = [
        "run",
        "architecture",
        "setting",
        *[METRIC_TITLES[m] for m in CLASSIFICATION_METRICS],
        "folds",
    ]
    rows = []
    for run in runs:
        per_fold = per_fold_metrics(run.predictions, run.config.threshold)
        summary = summarize(per_fold)
        total = len({p.fold for p in run.predictions})
        for setting in SETTINGS:
            rows.append(
                [
                    run.name,
                    run.architecture,
                    setting,
                    *[format_mean_and_error(*summary[setting][m]) for m in CLASSIFICATION_METRICS],
                    f"{defined_folds(per_fold[setting])} of {total}",
                ]
            )
    return header, rows


def robustness_table(runs: Sequence[RunTables], repetitions: int | None) -> Table:
    """Figure 5 as a table: one row per architecture, n % and curve (F, C*, F+C*)."""
    header = [
        "run",
        "percent_synthetic",
        "setting",
        *[METRIC_TITLES[m] for m in CLASSIFICATION_METRICS],
    ]
    rows = []
    for run in runs:
        sweep = robustness_sweep(
            run.predictions,
            repetitions or run.config.robustness_repetitions,
            run.config.seed,
            run.config.threshold,
        )
        cells: dict[tuple[int, str], dict[str, str]] = {}
        for item in sweep:
            key = (int(item["percent"]), str(item["setting"]))
            cells.setdefault(key, {})[str(item["metric"])] = format_mean_and_error(
                item["mean"], item["se"]
            )
        for (percent, setting), metrics in sorted(cells.items()):
            rows.append(
                [
                    run.name,
                    str(percent),
                    setting,
                    *[metrics.get(m, "n/a") for m in CLASSIFICATION_METRICS],
                ]
            )
    return header, rows


def density_table(runs: Sequence[RunTables], average: bool = True) -> Table:
    """Table 4: per ACR category and setting; the last block averages the architectures
    (with ``average``: not for runs on different manifests, whose patients differ)."""
    header = [
        "run",
        "acr_density",
        "setting",
        "n",
        *[METRIC_TITLES[m] for m in CLASSIFICATION_METRICS],
        "folds",
    ]
    rows = []
    means: dict[tuple[str, str, str], list[float]] = {}
    for run in runs:
        table = density_metrics(run.predictions, run.config.threshold)
        for category, settings in sorted(table.items()):
            for setting, metrics in settings.items():
                rows.append(
                    [
                        run.name,
                        category,
                        setting,
                        str(int(metrics["n"][0])),
                        *[format_mean_and_error(*metrics[m]) for m in CLASSIFICATION_METRICS],
                        str(int(metrics["defined_folds"][0])),
                    ]
                )
                for m in CLASSIFICATION_METRICS:
                    means.setdefault((category, setting, m), []).append(metrics[m][0])
    if average and len(runs) > 1:
        for category, setting in sorted({(c, s) for c, s, _ in means}):
            values = [_mean_of(means[(category, setting, m)]) for m in CLASSIFICATION_METRICS]
            rows.append(
                [
                    "average",
                    category,
                    setting,
                    "",
                    *[format_mean_and_error(v, math.nan) for v in values],
                    "",
                ]
            )
    return header, rows


def _mean_of(values: list[float]) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def generation_table(runs: Sequence[RunTables]) -> Table:
    """Table 3: per run and view, MSE / PSNR / SSIM mean ± SE over folds (whole image, the
    paper's), beside them MSE / PSNR inside the breast, then the lesion figures with
    their counts (:func:`Training.metrics.lesion_cells`; ``n/a`` for a run without
    lesion masks or written before lesion figures existed)."""
    metrics_shown = (*GENERATION_METRICS, *BREAST_METRICS)
    header = [
        "run",
        "view",
        *[METRIC_TITLES[m] for m in metrics_shown],
        *[title for title, _, _ in LESION_COLUMNS],
    ]
    rows = []
    for run in runs:
        for view, metrics in generation_summary(run.run_dir).items():
            cells = [
                format_mean_and_error(
                    *metrics.get(m, (math.nan, math.nan)), scale=1.0, digits=GENERATION_DIGITS[m]
                )
                for m in metrics_shown
            ]
            rows.append([run.name, view, *cells, *lesion_cells(metrics)])
    return header, rows


def _notice_lines(synthetic: bool) -> list[str]:
    lines = [VirtualBiopsyLib.RESEARCH_USE_NOTICE]
    if synthetic:
        lines.insert(0, VirtualBiopsyLib.SYNTHETIC_NOTICE)
    return lines


def _write_csv(path: Path, header: list[str], rows: list[list[str]], notices: list[str]) -> Path:
    buffer = io.StringIO()
    for line in notices:
        buffer.write(f"# {line}\n")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())
    return path


def _write_markdown(
    path: Path, name: str, header: list[str], rows: list[list[str]], notices: list[str]
) -> Path:
    lines = [f"# {name.capitalize()}", ""]
    lines += [f"> {line}" for line in notices]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def _plot_robustness(path: Path, rows: list[list[str]], synthetic: bool) -> Path | None:
    """Figure 5: AUC against the share of synthetic DES, one panel per run."""
    from matplotlib import pyplot as plt

    from Training.report.figures import finish_figure  # Agg backend, the report's marks

    runs = sorted({row[0] for row in rows})
    if not runs:
        return None
    figure, axes = plt.subplots(1, len(runs), figsize=(4 * len(runs), 3.2), squeeze=False)
    for axis, run in zip(axes[0], runs, strict=True):
        for setting in ("F", "C*", "F+C*"):
            points = [
                (int(r[1]), _mean_cell(r[3])) for r in rows if r[0] == run and r[2] == setting
            ]
            if points:
                axis.plot(*zip(*points, strict=True), marker="o", label=setting)
        axis.set(title=run, xlabel="% of test patients with synthetic DES", ylabel="AUC (%)")
        axis.legend()
    write_bytes_atomic(path, finish_figure(figure, synthetic))
    return path


def _mean_cell(cell: str) -> float:
    try:
        return float(cell.split(" ± ")[0])
    except ValueError:
        return math.nan
