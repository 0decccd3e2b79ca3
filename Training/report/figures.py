"""The report's figures (matplotlib, Agg): PNG bytes, marked synthetic where the data are.

- ROC curves per setting with the 95 % patient-bootstrap band;
- the robustness curve (Figure 5) with the spread over repetitions (min–max band);
- reliability diagrams per setting with Brier score, calibration intercept and slope;
- paired AUC differences with their intervals (a forest plot);
- the density table (Table 4) as a chart with n per category.

>>> png = roc_figure(analysis, synthetic=True)  # doctest: +SKIP
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402

from Training.evaluation import SETTINGS  # noqa: E402
from Training.report.analysis import DENSITY_SETTINGS, RunAnalysis  # noqa: E402

SYNTHETIC_MARK = "SYNTHETIC (phantom) DATA: not evidence of clinical performance"
RESEARCH_MARK = "Research use only"
COLOURS = {"F": "#4c72b0", "C": "#dd8452", "Ĉ": "#55a868", "F+C": "#c44e52", "F+Ĉ": "#8172b3"}
CURVE_COLOURS = {"F": "#4c72b0", "C*": "#dd8452", "F+C*": "#c44e52"}
DPI = 100


def finish_figure(figure, synthetic: bool) -> bytes:
    """The figure as PNG bytes, marked research use only (and synthetic data) at its foot."""
    mark = f"{SYNTHETIC_MARK} · {RESEARCH_MARK}" if synthetic else RESEARCH_MARK
    figure.text(
        0.5,
        0.005,
        mark,
        ha="center",
        va="bottom",
        fontsize=7,
        color="#b00020" if synthetic else "#555555",
    )
    height = figure.get_figheight()
    bottom = 0.28 / height  # room for the mark below the axis labels
    top = 1 - 0.22 / height if figure.get_suptitle() else 1  # and for the title above
    figure.tight_layout(rect=(0, bottom, 1, top))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    plt.close(figure)
    return buffer.getvalue()


def _percent(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def roc_figure(analysis: RunAnalysis, synthetic: bool) -> bytes:
    """One panel per setting: the pooled ROC curve and its 95 % bootstrap band."""
    figure, axes = plt.subplots(1, len(SETTINGS), figsize=(3.0 * len(SETTINGS), 3.3))
    rows = {row["setting"]: row for row in analysis.settings}
    for axis, setting in zip(axes, SETTINGS, strict=True):
        axis.plot([0, 1], [0, 1], color="#999999", lw=0.8, ls="--")
        curve = analysis.roc.get(setting)
        if curve is not None:
            axis.fill_between(
                curve["grid"],
                curve["low"],
                curve["high"],
                step="post",
                color=COLOURS[setting],
                alpha=0.25,
                lw=0,
                label="95 % bootstrap band",
            )
            axis.plot(
                curve["fpr"], curve["tpr"], color=COLOURS[setting], lw=1.6, drawstyle="steps-post"
            )
            row = rows[setting]
            axis.set_title(
                f"{setting}: AUC {_percent(row['auc'])} "
                f"[{_percent(row['auc_ci_low'])}, {_percent(row['auc_ci_high'])}]\n"
                f"n = {row['cases']} ({row['malignant']} malignant)",
                fontsize=8,
            )
        else:
            axis.set_title(f"{setting}: no cases of both classes", fontsize=8)
        axis.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 − specificity")
        axis.set_aspect("equal")
    axes[0].set_ylabel("sensitivity")
    axes[0].legend(loc="lower right", fontsize=7)
    figure.suptitle(f"ROC curves, pooled out-of-fold test cases: {analysis.run.name}", fontsize=9)
    return finish_figure(figure, synthetic)


def reliability_figure(analysis: RunAnalysis, synthetic: bool) -> bytes:
    """One panel per setting: observed malignancy rate against the mean probability."""
    figure, axes = plt.subplots(1, len(SETTINGS), figsize=(3.0 * len(SETTINGS), 3.4))
    rows = {row["setting"]: row for row in analysis.calibration}
    for axis, setting in zip(axes, SETTINGS, strict=True):
        axis.plot([0, 1], [0, 1], color="#999999", lw=0.8, ls="--")
        bins = analysis.reliability.get(setting)
        if bins is not None:
            predicted, observed, counts = bins
            sizes = 12 + 60 * counts / max(counts.max(), 1)
            axis.plot(predicted, observed, color=COLOURS[setting], lw=1)
            axis.scatter(predicted, observed, s=sizes, color=COLOURS[setting], zorder=3)
            row = rows[setting]
            axis.set_title(
                f"{setting}: Brier {row['brier']:.3f}\n"
                f"intercept {_number(row['intercept'])}, slope {_number(row['slope'])}",
                fontsize=8,
            )
        else:
            axis.set_title(f"{setting}: not enough cases", fontsize=8)
        axis.set(xlim=(0, 1), ylim=(-0.02, 1.02), xlabel="mean predicted probability")
        axis.set_aspect("equal")
    axes[0].set_ylabel("observed fraction malignant")
    figure.suptitle(
        f"Reliability (quantile bins; marker size ∝ cases): {analysis.run.name}", fontsize=9
    )
    return finish_figure(figure, synthetic)


def _number(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.2f}"


def robustness_figure(analyses: Sequence[RunAnalysis], synthetic: bool) -> bytes | None:
    """Figure 5: AUC against the share of patients with synthetic DES, one panel per run."""
    with_rows = [a for a in analyses if a.robustness]
    if not with_rows:
        return None
    figure, axes = plt.subplots(
        1, len(with_rows), figsize=(4.2 * len(with_rows), 3.4), squeeze=False
    )
    for axis, analysis in zip(axes[0], with_rows, strict=True):
        for curve, colour in CURVE_COLOURS.items():
            rows = [r for r in analysis.robustness if r["curve"] == curve]
            x = [r["percent_synthetic"] for r in rows]
            axis.fill_between(
                x,
                [100 * r["auc_min"] for r in rows],
                [100 * r["auc_max"] for r in rows],
                color=colour,
                alpha=0.2,
                lw=0,
            )
            axis.plot(
                x, [100 * r["auc_mean"] for r in rows], marker="o", ms=3, color=colour, label=curve
            )
        first = analysis.robustness[0]
        axis.set(
            title=f"{analysis.run.name}: {first['cases']} cases, "
            f"{first['repetitions']} repetitions",
            xlabel="% of patients with synthetic DES",
            ylabel="AUC (%)",
        )
        axis.title.set_fontsize(8)
        axis.legend(fontsize=7)
    figure.suptitle("Robustness to missing DES (mean; band: min–max over repetitions)", fontsize=9)
    return finish_figure(figure, synthetic)


def paired_figure(analyses: Sequence[RunAnalysis], synthetic: bool) -> bytes | None:
    """AUC differences with paired-bootstrap 95 % intervals, one row per comparison."""
    rows = [(a.run.name, r) for a in analyses for r in a.paired if "difference" in r]
    if not rows:
        return None
    figure, axis = plt.subplots(figsize=(7.0, 0.38 * len(rows) + 1.3))
    colours = {"higher": "#c44e52", "lower": "#4c72b0"}
    for index, (_name, row) in enumerate(reversed(rows)):
        low, high = row["bootstrap_ci_low"], row["bootstrap_ci_high"]
        verdict = row["conclusion"].split()[1] if " than " in row["conclusion"] else ""
        colour = colours.get(verdict, "#555555")
        axis.plot([100 * low, 100 * high], [index, index], color=colour, lw=2)
        axis.plot(100 * row["difference"], index, "o", color=colour)
        axis.text(
            1.02,
            index,
            f"p = {row['delong_p_holm']:.3g} (Holm)",
            transform=axis.get_yaxis_transform(),
            va="center",
            fontsize=7,
        )
    axis.axvline(0, color="#999999", lw=0.8)
    axis.set_yticks(range(len(rows)))
    axis.set_yticklabels(
        [f"{name}: {row['comparison']}" for name, row in reversed(rows)], fontsize=7
    )
    axis.set_xlabel("AUC difference (percentage points), 95 % paired patient bootstrap")
    axis.set_title(
        "Paired comparisons on the same cases (DeLong p, Holm-adjusted per run)", fontsize=9
    )
    return finish_figure(figure, synthetic)


def density_figure(analyses: Sequence[RunAnalysis], synthetic: bool) -> bytes | None:
    """Table 4 as a chart: pooled AUC per ACR category with its interval and n."""
    with_rows = [a for a in analyses if a.density]
    if not with_rows:
        return None
    figure, axes = plt.subplots(
        1, len(with_rows), figsize=(4.6 * len(with_rows), 3.6), squeeze=False
    )
    width = 0.8 / len(DENSITY_SETTINGS)
    for axis, analysis in zip(axes[0], with_rows, strict=True):
        categories = sorted({r["acr_density"] for r in analysis.density})
        labels = []
        for position, category in enumerate(categories):
            rows = {r["setting"]: r for r in analysis.density if r["acr_density"] == category}
            for offset, setting in enumerate(DENSITY_SETTINGS):
                row = rows.get(setting)
                x = position + (offset - (len(DENSITY_SETTINGS) - 1) / 2) * width
                if row is None or not row.get("reported"):
                    axis.text(x, 2, "too\nfew", ha="center", va="bottom", fontsize=6)
                    continue
                value = 100 * row["auc"] if not math.isnan(row["auc"]) else 0.0
                error = [
                    [max(value - 100 * row["auc_ci_low"], 0)],
                    [max(100 * row["auc_ci_high"] - value, 0)],
                ]
                axis.bar(
                    x,
                    value,
                    width,
                    color=COLOURS[setting],
                    label=setting if position == 0 else None,
                )
                axis.errorbar(x, value, yerr=error, color="black", lw=0.8, capsize=2)
            first = rows.get(DENSITY_SETTINGS[0]) or next(iter(rows.values()))
            labels.append(f"{category}\nn = {first['cases']}\n({first['malignant']} mal.)")
        axis.set_xticks(range(len(categories)))
        axis.set_xticklabels(labels, fontsize=7)
        axis.set(ylim=(0, 105), ylabel="AUC (%)", title=f"{analysis.run.name}")
        axis.title.set_fontsize(8)
        axis.axhline(50, color="#999999", lw=0.6, ls="--")
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7, loc="lower right")
    figure.suptitle("AUC per ACR breast density (pooled test cases, 95 % bootstrap CI)", fontsize=9)
    return finish_figure(figure, synthetic)


def generation_figure(examples: Sequence, synthetic: bool) -> bytes | None:
    """LE, real DES, synthetic DES and their difference for a few test patients."""
    if not examples:
        return None
    figure, axes = plt.subplots(
        len(examples), 4, figsize=(9.6, 2.5 * len(examples) + 0.6), squeeze=False
    )
    titles = ("LE (input)", "real DES", "SYNTHETIC DES  G(LE)", "synthetic − real")
    for row, example in enumerate(examples):
        difference = example.synthetic_des - example.real_des
        limit = max(float(np.abs(difference).max()), 1e-6)
        images = (example.le, example.real_des, example.synthetic_des, difference)
        for column, (axis, image) in enumerate(zip(axes[row], images, strict=True)):
            if column == 3:
                shown = axis.imshow(image, cmap="coolwarm", vmin=-limit, vmax=limit)
                figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.02)
            else:
                axis.imshow(image, cmap="gray", vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(titles[column], fontsize=8)
        label = "malignant" if example.label else "benign"
        axes[row][0].set_ylabel(
            f"example {row + 1}\n{label}, fold {example.fold}, {example.view}", fontsize=7
        )
    figure.suptitle(
        "Generation examples: unseen test patients, each through its own fold's generator",
        fontsize=9,
    )
    return finish_figure(figure, synthetic)
