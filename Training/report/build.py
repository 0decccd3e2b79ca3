"""``write_report``: one folder a researcher can put in a supplement.

``OUT/report.md`` and ``OUT/report.html`` (the same, figures inline), ``*.csv`` (every
number, proportions in [0, 1]), ``*.png`` (every figure) and ``report.json`` (what was
computed, with which parameters). The folder is built beside ``OUT`` and moved into
place at the end, so a failed or interrupted report leaves no half-written folder; an
existing non-empty ``OUT`` is replaced only with ``overwrite=True`` and only when it is a
report folder (has ``report.json``).

>>> write_report([Path("runs/resnet18"), Path("runs/vgg16")], Path("report"))  # doctest: +SKIP
PosixPath('report')
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import VirtualBiopsyLib
from Training.evaluation import SYNTHETIC, has_synthesis
from Training.metrics import (
    BREAST_METRICS,
    GENERATION_DIGITS,
    GENERATION_METRICS,
    GENERATION_TITLES,
    LESION_COLUMNS,
    LESION_SUMMARY_COUNTS,
    lesion_cells,
)
from Training.report import figures
from Training.report.analysis import RunAnalysis, analyse_run
from Training.report.bootstrap import (
    CONFIDENCE,
    DEFAULT_RESAMPLES,
    patient_bootstrap_weights,
    percentile_interval,
)
from Training.report.data import (
    EVERY_PATIENT_PROTOCOL,
    ReportInputError,
    ReportRun,
    data_sha256,
    load_runs,
    manifest_note,
)
from Training.report.document import (
    Block,
    Bullets,
    Code,
    Figure,
    Heading,
    Notice,
    Paragraph,
    Table,
    to_html,
    to_markdown,
)
from Training.report.provenance import (
    RUN_HEADER,
    SPLIT_HEADER,
    TRIPOD_AI_COVERED,
    TRIPOD_AI_NOT_COVERED,
    config_rows,
    git_commit,
    run_rows,
    split_rows,
)
from Training.report.roc import SPECIFICITIES
from VirtualBiopsyLib.errors import OutputExistsError

REPORT_FORMAT = "virtual-biopsy-study-report-v1"
MARKER = "report.json"
#: Table 3: the paper's whole-image metrics and beside them the in-breast ones.
GENERATION_SHOWN = (*GENERATION_METRICS, *BREAST_METRICS)


def write_report(
    run_dirs: Sequence[Path],
    out_dir: Path,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    repetitions: int | None = None,
    manifest: Path | None = None,
    cache_dir: Path | None = None,
    generation_intervals: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Build the report of ``run_dirs`` into ``out_dir`` (see the module docstring)."""
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, overwrite)
    if n_resamples < 100:
        raise ReportInputError(f"--resamples {n_resamples}: at least 100 are needed")
    runs = load_runs(run_dirs)
    analyses = []
    with tqdm(total=4 * len(runs), desc="report", disable=not progress) as bar:
        for run in runs:
            bar.set_postfix_str(run.name)
            analyses.append(
                analyse_run(run, n_resamples, seed, repetitions, progress=lambda _: bar.update())
            )
    generation = {
        run.name: _generation(run, manifest, cache_dir, generation_intervals, progress)
        for run in runs
    }
    files: dict[str, bytes] = {}
    blocks = _document(runs, analyses, generation, files, n_resamples, seed, manifest)
    synthetic = any(run.synthetic for run in runs)
    title = "VirtualBiopsy study report"
    files["report.md"] = to_markdown(blocks).encode("utf-8")
    files["report.html"] = to_html(blocks, title).encode("utf-8")
    files[MARKER] = json.dumps(
        {
            "format": REPORT_FORMAT,
            "created": _now(),
            "runs": [str(run.run_dir) for run in runs],
            "bootstrap_resamples": n_resamples,
            "bootstrap_seed": seed,
            "confidence": CONFIDENCE,
            "report_code_version": VirtualBiopsyLib.__version__,
            "report_code_git_commit": git_commit(),
            "synthetic_data": synthetic,
            "research_use_notice": VirtualBiopsyLib.RESEARCH_USE_NOTICE,
            **({"synthetic_notice": VirtualBiopsyLib.SYNTHETIC_NOTICE} if synthetic else {}),
            "files": sorted(files),
        },
        indent=2,
        allow_nan=False,
        default=str,
    ).encode("utf-8")
    _write_folder(out_dir, files, overwrite)
    return out_dir


# --- output folder -------------------------------------------------------------------------


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise OutputExistsError(f"{out_dir}: folder exists and is not empty (use --overwrite)")
        if not (out_dir / MARKER).is_file():
            raise OutputExistsError(
                f"{out_dir}: not a report folder (no {MARKER}); refusing to replace it"
            )


def _write_folder(out_dir: Path, files: dict[str, bytes], overwrite: bool) -> None:
    """Write every file into a sibling temporary folder, then swap it into place."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private; a report is shared
    try:
        for name, data in files.items():
            (staging / name).write_bytes(data)
        _check_out_dir(out_dir, overwrite)  # nothing appeared meanwhile
        old = None
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
            os.rmdir(old)
            os.replace(out_dir, old)
        os.replace(staging, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# --- formatting ----------------------------------------------------------------------------


def _pct(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.{digits}f}"


def _ci(row: dict[str, Any], name: str, scale: float = 100.0, digits: int = 1) -> str:
    value = row.get(name, math.nan)
    if value is None or math.isnan(value):
        return "n/a"
    low, high = row.get(f"{name}_ci_low", math.nan), row.get(f"{name}_ci_high", math.nan)
    text = f"{scale * value:.{digits}f}"
    if not (math.isnan(low) or math.isnan(high)):
        text += f" [{scale * low:.{digits}f}, {scale * high:.{digits}f}]"
    return text


def _fold(row: dict[str, Any], metric: str) -> str:
    mean, error = row.get(f"{metric}_fold_mean", math.nan), row.get(f"{metric}_fold_se", math.nan)
    if mean is None or math.isnan(mean):
        return "n/a"
    return f"{100 * mean:.1f}" + ("" if math.isnan(error) else f" ± {100 * error:.1f}")


def _p(value: Any) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _csv(rows: list[dict[str, Any]], synthetic: bool) -> bytes:
    buffer = io.StringIO()
    if synthetic:
        buffer.write(f"# {VirtualBiopsyLib.SYNTHETIC_NOTICE}\n")
    buffer.write(f"# {VirtualBiopsyLib.RESEARCH_USE_NOTICE}\n")
    header: list[str] = []
    for row in rows:
        header += [key for key in row if key not in header]
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_csv_value(row.get(key, "")) for key in header])
    return buffer.getvalue().encode("utf-8")


def _csv_value(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return "nan" if math.isnan(value) else f"{float(value):.6g}"
    return str(value)


def _fixed(value: float, digits: int) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _figure_stems(names: Sequence[str]) -> dict[str, str]:
    """One distinct file-name stem per run name, so no run's figures replace another's.

    :func:`_safe` maps ``run.1`` and ``run_1`` (or, on a case-insensitive disk, ``Run``
    and ``run``) to one file; each name whose stem is shared gets a suffix from its own
    hash, the same whatever order the runs come in. Other names keep the plain stem.

    >>> _figure_stems(["resnet18", "run.1", "run_1"])
    {'resnet18': 'resnet18', 'run.1': 'run_1-2c44f212', 'run_1': 'run_1-37ddff8e'}
    """
    plain = {name: _safe(name) for name in names}
    counts = Counter(stem.casefold() for stem in plain.values())
    taken = {stem.casefold() for stem in plain.values() if counts[stem.casefold()] == 1}
    stems = {}
    for name, stem in plain.items():
        if counts[stem.casefold()] > 1:
            stem = f"{stem}-{hashlib.sha256(name.encode('utf-8')).hexdigest()[:8]}"
            base, number = stem, 2
            while stem.casefold() in taken:  # a run already named like the suffixed stem
                stem, number = f"{base}-{number}", number + 1
            taken.add(stem.casefold())
        stems[name] = stem
    return stems


# --- generation ----------------------------------------------------------------------------


def _generation(
    run: ReportRun,
    manifest: Path | None,
    cache_dir: Path | None,
    all_pairs: bool,
    progress: bool,
) -> dict[str, Any]:
    """Table 3 from the run's result files and, with the images, examples and intervals."""
    from Training.run import generation_summary

    result: dict[str, Any] = {"summary": generation_summary(run.run_dir), "material": None}
    manifest = manifest or _recorded_manifest(run)
    if manifest is None:
        result["note"] = (
            "No generation examples: give the run's manifest (--manifest) so that the "
            "images can be read."
        )
        return result
    from Training.report.examples import generation_material

    try:
        result["material"] = generation_material(
            run, manifest, cache_dir, all_pairs=all_pairs, progress=progress
        )
    except ReportInputError as error:
        result["note"] = f"No generation examples: {error}"
    return result


def _recorded_manifest(run: ReportRun) -> Path | None:
    for key in ("manifest", "manifest_path"):
        value = run.record.get(key)
        if value and Path(value).is_file():
            return Path(value)
    return None


def _pair_intervals(
    pairs: list[dict[str, Any]], n_resamples: int, seed: int
) -> dict[str, dict[str, tuple[float, float, float, int]]]:
    """Per view: pooled mean of each metric over test pairs with a patient-bootstrap CI."""
    result: dict[str, dict[str, tuple[float, float, float, int]]] = {}
    for view in sorted({p["view"] for p in pairs}):
        rows = [p for p in pairs if p["view"] == view]
        weights = patient_bootstrap_weights([p["patient"] for p in rows], n_resamples, seed)
        result[view] = {}
        for metric in GENERATION_SHOWN:
            values = np.array([p.get(metric, math.nan) for p in rows], dtype=float)
            defined = np.isfinite(values)  # no breast in an image: not in its breast mean
            if not defined.any():
                result[view][metric] = (math.nan, math.nan, math.nan, 0)
                continue
            with np.errstate(invalid="ignore", divide="ignore"):
                means = weights[:, defined] @ values[defined] / weights[:, defined].sum(axis=1)
            low, high = percentile_interval(means)
            result[view][metric] = (float(values[defined].mean()), low, high, int(defined.sum()))
    return result


def _lesion_csv(metrics: dict[str, Any]) -> dict[str, Any]:
    """The lesion figures of one view for ``generation.csv``: fold mean, SE and count
    (empty cells where no test image had a mask)."""
    row: dict[str, Any] = {}
    for metric, count in LESION_SUMMARY_COUNTS.items():
        mean, error = metrics.get(metric) or ("", "")
        row[f"{metric}_fold_mean"] = "" if mean is None else mean
        row[f"{metric}_fold_se"] = "" if error is None else error
        row[count] = metrics.get(count, 0)
    return row


# --- the document --------------------------------------------------------------------------


def _document(
    runs: Sequence[ReportRun],
    analyses: Sequence[RunAnalysis],
    generation: dict[str, dict[str, Any]],
    files: dict[str, bytes],
    n_resamples: int,
    seed: int,
    manifest: Path | None,
) -> list[Block]:
    synthetic = any(run.synthetic for run in runs)
    blocks: list[Block] = [Heading(1, "VirtualBiopsy study report")]
    if synthetic:
        blocks.append(Notice(VirtualBiopsyLib.SYNTHETIC_NOTICE))
        blocks.append(
            Notice(
                "Every number and figure below comes from synthetic (phantom) data: it shows "
                "that the pipeline can learn, not how it performs on patients."
            )
        )
    blocks.append(Notice(VirtualBiopsyLib.RESEARCH_USE_NOTICE))
    blocks += _provenance(runs, analyses, n_resamples, seed)
    blocks += _methods(runs, n_resamples, seed)
    stems = _figure_stems([run.name for run in runs])
    blocks += _discrimination(analyses, files, synthetic, stems)
    blocks += _paired_section(analyses, files, synthetic)
    blocks += _operating_points(analyses, files, synthetic)
    blocks += _calibration_section(analyses, files, synthetic, stems)
    blocks += _robustness_section(analyses, files, synthetic)
    blocks += _density_section(analyses, files, synthetic)
    blocks += _generation_section(runs, generation, files, synthetic, n_resamples, seed, stems)
    blocks.append(Heading(2, "Appendix: configuration files"))
    for run in runs:
        blocks.append(Paragraph(f"{run.name}: config.json"))
        blocks.append(Code(json.dumps(run.config, indent=2, sort_keys=True)))
    return blocks


def _provenance(runs, analyses, n_resamples, seed) -> list[Block]:
    commit = git_commit()
    blocks: list[Block] = [
        Heading(2, "Provenance"),
        Paragraph(
            f"Created {_now()} by VirtualBiopsy {VirtualBiopsyLib.__version__}"
            + (f", git commit {commit}" if commit else ", git commit not available")
            + f". Confidence intervals: {int(CONFIDENCE * 100)} %, percentile patient-level "
            f"bootstrap with {n_resamples} resamples, seed {seed}."
        ),
        Table(RUN_HEADER, tuple(tuple(r) for r in run_rows(runs)), "Runs"),
    ]
    note = manifest_note([(run.name, data_sha256(run.record)) for run in runs])
    if note:
        blocks.append(Notice(note))
    for run, analysis in zip(runs, analyses, strict=True):
        blocks.append(Paragraph(_coverage(run, analysis)))
    rows = [tuple(row) for run in runs for row in split_rows(run)]
    if rows:
        blocks.append(
            Table(
                SPLIT_HEADER,
                tuple(rows),
                "Data per fold and split. A patient is malignant if any case is; images = "
                "classified real images (the classifier phase).",
            )
        )
    config = config_rows(runs)
    header = ("setting", *[r.name for r in runs])
    blocks.append(Table(header, tuple(tuple(r) for r in config), "Configuration"))
    blocks += [
        Heading(3, "TRIPOD+AI items this report covers"),
        Bullets(TRIPOD_AI_COVERED),
        Heading(3, "TRIPOD+AI items it cannot cover"),
        Bullets(TRIPOD_AI_NOT_COVERED),
    ]
    return blocks


def _coverage(run: ReportRun, analysis: RunAnalysis) -> str:
    """Which patients the pooled figures cover, from the scored cases themselves: the
    every-patient protocol tests each patient once, but only the patients with a scored
    case (real LE and DES, and synthetic DES in a run with synthesis) are in the pool, and
    a fold without generators in such a run scores none; "every patient" is said only
    when it holds."""
    covered = {p for s in analysis.scores.values() for p in s.patients}
    everyone = {p for item in run.splits for s in ("train", "val", "test") for p in item.get(s, [])}
    share = f"{len(covered)} of {len(everyone)}" if everyone else f"{len(covered)}"
    if run.protocol == EVERY_PATIENT_PROTOCOL:
        note = (
            "every patient is tested once"
            if everyone and covered == everyone
            else "the every-patient protocol tests each patient once; the others have "
            "no scored case"
        )
    else:
        note = (
            "the paper's protocol: the folds' test sets are disjoint but leave the "
            "other patients untested"
        )
    text = f"{run.name}: pooled out-of-fold test set of {share} patients ({note})."
    scored = {int(fold) for s in analysis.scores.values() for fold in s.folds}
    unscored = [fold for fold in run.folds if fold not in scored]
    synthesis = has_synthesis(run.predictions)
    with_synthetic = {p.fold for p in run.predictions if p.source == SYNTHETIC}
    without_generator = [f for f in unscored if synthesis and f not in with_synthetic]
    if without_generator:
        text += (
            f" Fold(s) {', '.join(map(str, without_generator))} score no case: they have no "
            "synthetic DES (no generator), and every setting is scored on the cases with one."
        )
    if other := [f for f in unscored if f not in without_generator]:
        text += (
            f" Fold(s) {', '.join(map(str, other))} score no case: none has a real LE, a "
            "real DES" + (" and a synthetic DES." if synthesis else " image.")
        )
    if analysis.repeated_cases:
        text += f" {analysis.repeated_cases} cases were tested in more than one fold."
    return text


def _methods(runs, n_resamples, seed) -> list[Block]:
    thresholds = sorted({run.threshold for run in runs})
    return [
        Heading(2, "Statistical methods"),
        Bullets(
            (
                "Settings: F = view-fused LE; C = view-fused real DES; Ĉ = view-fused "
                "synthetic DES G(LE); F+C and F+Ĉ = LE fused with real / synthetic DES "
                "(MCC-weighted, each fold with its own validation MCCs). Ĉ and F+Ĉ are "
                "scored on the cases that have real DES, the population of C.",
                "Mean ± SE: the paper's summary, mean and standard error over folds of each "
                "fold's test metrics.",
                "Pooled estimate [95 % CI]: all folds' test cases pooled (each scored by its "
                f"own fold's models); percentile interval over {n_resamples} bootstrap "
                f"resamples of patients (not images or breasts), seed {seed}; the same "
                "resamples for every setting of a run.",
                "Paired comparisons: AUC difference on the cases both settings score; "
                "p-value from DeLong's test for correlated ROC curves (two-sided, cases "
                "taken as independent), Holm-adjusted over the four comparisons of a run; "
                "interval from the paired patient bootstrap. A setting is called higher "
                "only when the adjusted p < 0.05 and the interval excludes 0.",
                "Calibration: Brier score; calibration intercept (logistic model with "
                "logit(p) as offset) and slope (logistic regression of the outcome on "
                "logit(p)); reliability diagram with quantile bins.",
                f"Operating points: sensitivity and specificity at the threshold "
                f"{', '.join(str(t) for t in thresholds)}; sensitivity at "
                f"{', '.join(f'{round(100 * s)} %' for s in SPECIFICITIES)} specificity "
                "(best threshold reaching that specificity on the pooled cases, so "
                "optimistic).",
                "A metric undefined on a set of cases (one class only) is n/a, never 0; the MCC "
                "is 0 when every case is predicted one class (no skill).",
            )
        ),
    ]


def _discrimination(analyses, files, synthetic, stems: dict[str, str]) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Discrimination (Table A1)")]
    rows, csv_rows = [], []
    for analysis in analyses:
        for row in analysis.settings:
            csv_rows.append(row)
            rows.append(
                (
                    analysis.run.name,
                    row["setting"],
                    f"{row['cases']} ({row['malignant']}/{row['benign']})",
                    _fold(row, "auc"),
                    _ci(row, "auc"),
                    _fold(row, "g_mean"),
                    _ci(row, "g_mean"),
                    _fold(row, "mcc"),
                    _ci(row, "mcc"),
                )
            )
    files["settings.csv"] = _csv(csv_rows, synthetic)
    blocks.append(
        Table(
            (
                "run",
                "setting",
                "cases (mal./ben.)",
                "AUC mean ± SE",
                "AUC [95 % CI]",
                "G-mean mean ± SE",
                "G-mean [95 % CI]",
                "MCC mean ± SE",
                "MCC [95 % CI]",
            ),
            tuple(rows),
            "Percent. Mean ± SE over folds (the paper's summary) and pooled out-of-fold "
            "estimate with a patient-level bootstrap 95 % CI." + _partial_pool_caveat(analyses),
        )
    )
    for analysis in analyses:
        name = f"roc_{stems[analysis.run.name]}.png"
        files[name] = figures.roc_figure(analysis, synthetic)
        blocks.append(Figure(name, files[name], f"ROC curves per setting, {analysis.run.name}"))
    return blocks


def _partial_pool_caveat(analyses: Sequence[RunAnalysis]) -> str:
    """What the pooled columns are for runs of the paper's protocol: its five 10 % test
    sets leave about half of the patients untested, so its pool is not an estimate over
    the cohort, and a caption must not let it read as one."""
    paper = [a.run.name for a in analyses if a.run.protocol != EVERY_PATIENT_PROTOCOL]
    if not paper:
        return ""
    return (
        f" {', '.join(paper)}: the paper's protocol; the pooled estimate covers only the "
        "patients its folds tested (see Provenance), not the whole cohort."
    )


def _paired_section(analyses, files, synthetic) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Paired comparisons (same cases)")]
    rows, csv_rows = [], []
    for analysis in analyses:
        for row in analysis.paired:
            csv_rows.append({"run": analysis.run.name, **row})
            rows.append(
                (
                    analysis.run.name,
                    row["comparison"],
                    str(row["cases"]),
                    _pct(row.get("auc_a")),
                    _pct(row.get("auc_b")),
                    _ci(
                        {
                            "d": row.get("difference", math.nan),
                            "d_ci_low": row.get("bootstrap_ci_low", math.nan),
                            "d_ci_high": row.get("bootstrap_ci_high", math.nan),
                        },
                        "d",
                    ),
                    _p(row.get("delong_p", math.nan)),
                    _p(row.get("delong_p_holm", math.nan)),
                    row["conclusion"],
                )
            )
    files["paired_comparisons.csv"] = _csv(csv_rows, synthetic)
    blocks.append(
        Table(
            (
                "run",
                "B − A",
                "cases",
                "AUC A",
                "AUC B",
                "difference [95 % CI]",
                "DeLong p",
                "Holm p",
                "conclusion",
            ),
            tuple(rows),
            "Percent. Difference = AUC(B) − AUC(A) on the cases both settings score; CI "
            "from the paired patient bootstrap; p from DeLong's test.",
        )
    )
    png = figures.paired_figure(analyses, synthetic)
    if png:
        files["paired_comparisons.png"] = png
        blocks.append(Figure("paired_comparisons.png", png, "AUC differences with 95 % CIs"))
    return blocks


def _operating_points(analyses, files, synthetic) -> list[Block]:
    rows = []
    spec_keys = [f"sensitivity_at_{round(s * 100)}_specificity" for s in SPECIFICITIES]
    for analysis in analyses:
        for row in analysis.settings:
            rows.append(
                (
                    analysis.run.name,
                    row["setting"],
                    _ci(row, "sensitivity"),
                    _ci(row, "specificity"),
                    *[_ci(row, key) for key in spec_keys],
                )
            )
    thresholds = ", ".join(sorted({str(a.run.threshold) for a in analyses}))
    return [
        Heading(2, "Operating points"),
        Table(
            (
                "run",
                "setting",
                f"sensitivity at {thresholds}",
                f"specificity at {thresholds}",
                *[f"sensitivity at {round(s * 100)} % specificity" for s in SPECIFICITIES],
            ),
            tuple(rows),
            "Percent, pooled estimate [95 % CI]; all values also in settings.csv.",
        ),
    ]


def _calibration_section(analyses, files, synthetic, stems: dict[str, str]) -> list[Block]:
    rows, csv_rows = [], []
    for analysis in analyses:
        for row in analysis.calibration:
            csv_rows.append(row)
            rows.append(
                (
                    analysis.run.name,
                    row["setting"],
                    str(row.get("cases", 0)),
                    _ci(row, "brier", 1.0, 3),
                    _ci(row, "intercept", 1.0, 2),
                    _ci(row, "slope", 1.0, 2),
                    _pct(row.get("mean_probability")),
                    _pct(row.get("observed_rate")),
                )
            )
    files["calibration.csv"] = _csv(csv_rows, synthetic)
    blocks: list[Block] = [
        Heading(2, "Calibration"),
        Table(
            (
                "run",
                "setting",
                "cases",
                "Brier [95 % CI]",
                "intercept [95 % CI]",
                "slope [95 % CI]",
                "mean probability (%)",
                "observed malignant (%)",
            ),
            tuple(rows),
            "Ideal: intercept 0, slope 1. n/a: undefined (e.g. the classes are separated, "
            "so the slope has no finite estimate).",
        ),
    ]
    for analysis in analyses:
        name = f"reliability_{stems[analysis.run.name]}.png"
        files[name] = figures.reliability_figure(analysis, synthetic)
        blocks.append(Figure(name, files[name], f"Reliability diagrams, {analysis.run.name}"))
    return blocks


def _robustness_section(analyses, files, synthetic) -> list[Block]:
    csv_rows = [{"run": a.run.name, **row} for a in analyses for row in a.robustness]
    files["robustness.csv"] = _csv(csv_rows, synthetic)
    blocks: list[Block] = [
        Heading(2, "Robustness to missing DES (Figure 5)"),
        Paragraph(
            "Population fixed per run: the pooled test cases with real and synthetic DES. For "
            "each share n (0 … 100 %) and repetition, a seeded random n % of those patients "
            "have their real DES replaced by the synthetic one; C* and F+C* are scored on "
            "the whole population, F (no DES) is the reference. Values in robustness.csv."
        ),
    ]
    png = figures.robustness_figure(analyses, synthetic)
    if png:
        files["robustness.png"] = png
        blocks.append(Figure("robustness.png", png, "AUC against the share of synthetic DES"))
    else:
        blocks.append(Paragraph("No case has both real and synthetic DES: no sweep."))
    return blocks


def _density_section(analyses, files, synthetic) -> list[Block]:
    rows, csv_rows = [], []
    for analysis in analyses:
        for row in analysis.density:
            csv_rows.append(row)
            shown = row.get("reported")
            rows.append(
                (
                    analysis.run.name,
                    row["acr_density"],
                    row["setting"],
                    f"{row['cases']} ({row['malignant']}/{row['benign']})",
                    _fold(row, "auc") if shown else "too few",
                    _ci(row, "auc") if shown else "too few",
                    _ci(row, "g_mean") if shown else "too few",
                    _ci(row, "mcc") if shown else "too few",
                )
            )
    files["density.csv"] = _csv(csv_rows, synthetic)
    blocks: list[Block] = [
        Heading(2, "Breast density (Table 4)"),
        Table(
            (
                "run",
                "ACR",
                "setting",
                "cases (mal./ben.)",
                "AUC mean ± SE",
                "AUC [95 % CI]",
                "G-mean [95 % CI]",
                "MCC [95 % CI]",
            ),
            tuple(rows),
            "Percent. A category with fewer than 3 malignant or 3 benign cases reports no metric.",
        ),
    ]
    png = figures.density_figure(analyses, synthetic)
    if png:
        files["density.png"] = png
        blocks.append(Figure("density.png", png, "AUC per ACR density category with n"))
    return blocks


def _generation_section(
    runs, generation, files, synthetic, n_resamples, seed, stems: dict[str, str]
) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Generation quality (Table 3)")]
    rows, csv_rows, lesion_rows = [], [], []
    for run in runs:
        item = generation[run.name]
        material = item.get("material")
        intervals = (
            _pair_intervals(material.pairs, n_resamples, seed)
            if material is not None and material.pairs
            else {}
        )
        for view, metrics in item["summary"].items():
            csv_row: dict[str, Any] = {"run": run.name, "view": view}
            cells = []
            for metric in GENERATION_SHOWN:
                mean, error = metrics.get(metric, (math.nan, math.nan))
                csv_row[f"{metric}_fold_mean"], csv_row[f"{metric}_fold_se"] = mean, error
                digits = GENERATION_DIGITS[metric]
                cell = "n/a" if mean is None or math.isnan(mean) else f"{mean:.{digits}f}"
                if error is not None and not math.isnan(error):
                    cell += f" ± {error:.{digits}f}"
                if view in intervals:
                    pooled, low, high, n = intervals[view][metric]
                    csv_row.update(
                        {metric: pooled, f"{metric}_ci_low": low, f"{metric}_ci_high": high}
                    )
                    csv_row["pairs" if metric in GENERATION_METRICS else f"{metric}_pairs"] = n
                    if n:
                        cell += f"; pooled {_fixed(pooled, digits)} [{_fixed(low, digits)}, "
                        cell += f"{_fixed(high, digits)}]"
                cells.append(cell)
            rows.append((run.name, view, *cells))
            lesion_rows.append((run.name, view, *lesion_cells(metrics)))
            csv_rows.append(csv_row | _lesion_csv(metrics))
    files["generation.csv"] = _csv(csv_rows, synthetic)
    blocks.append(
        Table(
            ("run", "view", *[GENERATION_TITLES[m] for m in GENERATION_SHOWN]),
            tuple(rows),
            "Data range 1; the paper's whole-image MSE, PSNR and SSIM, and beside them MSE "
            "and PSNR inside the breast (an Otsu mask of the LE), which the flat background "
            "does not flatter: mean ± SE over folds of each fold's test mean; 'pooled' (when "
            "the images were given with --generation-intervals): mean over all test pairs "
            "(with a breast, for the in-breast ones) with a patient-bootstrap 95 % CI.",
        )
    )
    blocks.append(
        Table(
            ("run", "view", *[title for title, _, _ in LESION_COLUMNS]),
            tuple(lesion_rows),
            "Inside the lesion, where the manifest gave lesion masks: mean ± SE over folds "
            "of each fold's test mean, and n, the test pairs behind it (of the folds "
            "that define it: an r needs 3 pairs in its fold); "
            "lesion contrast = mean of the DES inside the lesion − mean of a 3-pixel ring "
            "around it inside the breast, of the real and of the synthetic DES, per label, "
            "and Pearson r between the two over the pairs (defined from 3 pairs); n/a "
            "where no test image had a mask.",
        )
    )
    for run in runs:
        item = generation[run.name]
        if item.get("note"):
            blocks.append(Paragraph(f"{run.name}: {item['note']}"))
        material = item.get("material")
        if material is None:
            continue
        for reason in material.skipped:
            blocks.append(Paragraph(f"{run.name}: {reason}"))
        png = figures.generation_figure(material.examples, synthetic)
        if png:
            name = f"generation_examples_{stems[run.name]}.png"
            files[name] = png
            blocks.append(
                Figure(
                    name,
                    png,
                    f"Generation examples, {run.name}: LE, real DES, SYNTHETIC DES, difference",
                )
            )
    return blocks


__all__ = ["REPORT_FORMAT", "write_report"]
