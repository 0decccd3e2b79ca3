"""report.png: one picture of a case's virtual biopsy that a person can read at a glance.

Left: the four slots (LE and DES rows, CC and MLO columns) on their original grids with
the Grad-CAM overlay; a synthetic DES carries a red 'SYNTHETIC' banner and frame, a
missing slot says so. Right: the label, the fused probability with its spread over folds,
the per-modality and per-image numbers, and the notices (research use; demo model).

matplotlib is imported lazily and only through ``Figure`` (Agg canvas, no pyplot), so
nothing here needs a display or changes the caller's backend.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from VirtualBiopsyLib import RESEARCH_USE_NOTICE
from VirtualBiopsyLib.atomic_io import write_atomically
from VirtualBiopsyLib.roles import MODALITIES, VIEWS, Source, slot_name

if TYPE_CHECKING:
    from VirtualBiopsyLib.inference.result import CaseResult

DISPLAY_ROWS = 450  # pictures are strided to about this many rows: the panels' own height
SYNTHETIC_RED = "#d62728"
MALIGNANT_COLOUR = "#b2182b"
BENIGN_COLOUR = "#2166ac"
SALIENCY_FLOOR = 0.25  # saliency below this fraction of the map's peak stays transparent


def render_report(result: CaseResult, path: Path, dpi: int = 100) -> Path:
    """Draw ``result`` into the PNG ``path`` (written atomically) and return the path.

    >>> render_report(result, Path("out/case/report.png"))  # doctest: +SKIP
    PosixPath('out/case/report.png')
    """
    from matplotlib.figure import Figure  # no pyplot: no backend, no display, no globals

    figure = Figure(figsize=(15, 9.6), dpi=dpi, facecolor="white")
    grid = figure.add_gridspec(
        2,
        3,
        width_ratios=(1, 1, 1.15),
        left=0.02,
        right=0.99,
        top=0.90,
        bottom=0.08,
        wspace=0.06,
        hspace=0.12,
    )
    _draw_title(figure, result)
    for row, modality in enumerate(MODALITIES):
        for column, view in enumerate(VIEWS):
            _draw_slot(figure.add_subplot(grid[row, column]), result, slot_name(modality, view))
    _draw_numbers(figure.add_subplot(grid[:, 2]), result)
    _draw_footer(figure, result)
    try:
        return _save_atomic(figure, Path(path))
    finally:
        # A figure is a web of reference cycles that only the cyclic collector frees;
        # cleared here, its pictures and pixel buffer (tens of MB) go at once instead
        # of piling up case after case.
        figure.clear()
        figure.canvas.__dict__.pop("renderer", None)


def _draw_title(figure: Any, result: CaseResult) -> None:
    laterality = {"L": "left breast", "R": "right breast"}.get(result.laterality or "", "")
    title = f"VirtualBiopsy — case {result.key}" + (f" ({laterality})" if laterality else "")
    figure.text(0.01, 0.965, title, fontsize=17, weight="bold", va="center")
    if result.model.is_demo:
        figure.text(
            0.99,
            0.965,
            "DEMO MODEL — trained on synthetic data, not for real patients",
            fontsize=12,
            weight="bold",
            color="white",
            ha="right",
            va="center",
            bbox={"facecolor": "#e08214", "edgecolor": "none", "pad": 5},
        )


def display_stride(shape: tuple[int, ...]) -> int:
    """The pixel step that brings an image to about ``DISPLAY_ROWS`` rows for drawing."""
    return max(1, int(np.ceil(shape[0] / DISPLAY_ROWS)))


def _draw_slot(axes: Any, result: CaseResult, slot: str) -> None:
    record = result.inputs[slot]
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_facecolor("#dddddd")
    if record.source is Source.MISSING or slot not in result.pictures:
        axes.text(
            0.5,
            0.5,
            f"{slot}\nmissing",
            ha="center",
            va="center",
            fontsize=16,
            color="#555555",
            transform=axes.transAxes,
        )
        axes.set_title(f"{slot}: missing", fontsize=12, color="#555555")
        return
    picture = result.pictures[slot]
    stride = display_stride(picture.shape)
    image = picture.display(stride)
    axes.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="antialiased")
    if slot in result.saliency:
        _overlay_saliency(axes, result.saliency[slot].display(stride), image.shape)
    _caption(axes, result, slot)
    if record.source is Source.SYNTHETIC:
        _mark_synthetic(axes, record.generated_from)


def _overlay_saliency(axes: Any, saliency: np.ndarray, shape: tuple[int, ...]) -> None:
    from matplotlib import colormaps

    saliency = saliency[: shape[0], : shape[1]]
    colours = colormaps["inferno"](saliency)
    alpha = np.clip((saliency - SALIENCY_FLOOR) / (1.0 - SALIENCY_FLOOR), 0.0, 1.0) * 0.55
    colours[..., 3] = alpha
    axes.imshow(colours, interpolation="antialiased")


def _caption(axes: Any, result: CaseResult, slot: str) -> None:
    probability = result.image_probabilities.get(slot)
    text = slot
    if probability is not None:
        text = f"{slot}   p = {probability.mean:.2f} ± {probability.std:.2f}"
    source = result.inputs[slot].source
    colour = SYNTHETIC_RED if source is Source.SYNTHETIC else "black"
    axes.set_title(text, fontsize=12, color=colour, weight="bold")


def _mark_synthetic(axes: Any, generated_from: str | None) -> None:
    for spine in axes.spines.values():
        spine.set_edgecolor(SYNTHETIC_RED)
        spine.set_linewidth(4)
    banner = "SYNTHETIC" + (f"\nfrom {generated_from}" if generated_from else "")
    axes.text(
        0.5,
        0.975,
        banner,
        transform=axes.transAxes,
        ha="center",
        va="top",
        fontsize=12,
        linespacing=1.1,
        multialignment="center",
        weight="bold",
        color="white",
        bbox={"facecolor": SYNTHETIC_RED, "edgecolor": "none", "pad": 4, "alpha": 0.9},
    )


def _draw_numbers(axes: Any, result: CaseResult) -> None:
    axes.axis("off")
    colour = MALIGNANT_COLOUR if result.label == "malignant" else BENIGN_COLOUR
    fused = result.fused
    axes.text(0.02, 0.985, "Virtual biopsy", fontsize=13, color="#444444", va="top")
    axes.text(0.02, 0.94, result.label.upper(), fontsize=30, weight="bold", color=colour, va="top")
    axes.text(
        0.02,
        0.855,
        f"p(malignant) = {fused.mean:.2f}  (std {fused.std:.2f}, SE {fused.sem:.2f} over "
        f"{len(fused.folds)} folds)\nthreshold {result.threshold:.2f}",
        fontsize=11.5,
        va="top",
    )
    _probability_bar(axes, fused.mean, fused.std, result.threshold, colour)
    axes.text(0.02, 0.69, _table(result), fontsize=10.5, family="monospace", va="top")
    warnings = [w for w in result.all_warnings()][:4]
    if warnings:
        wrapped = "\n".join(textwrap.fill("• " + w, 62) for w in warnings)
        axes.text(0.02, 0.27, wrapped, fontsize=9.5, va="top", color="#8c2d04")


def _probability_bar(axes: Any, mean: float, std: float, threshold: float, colour: str) -> None:
    """A 0–1 scale with the fused probability, its ±std band and the threshold."""
    y, height = 0.745, 0.03
    axes.add_patch(_rectangle((0.02, y), 0.9, height, "#eeeeee"))
    low, high = max(0.0, mean - std), min(1.0, mean + std)
    axes.add_patch(_rectangle((0.02 + 0.9 * low, y), 0.9 * (high - low), height, colour, 0.3))
    axes.plot([0.02 + 0.9 * mean] * 2, [y - 0.008, y + height + 0.008], color=colour, lw=3)
    axes.plot(
        [0.02 + 0.9 * threshold] * 2, [y - 0.004, y + height + 0.004], color="black", lw=1, ls="--"
    )
    for tick in (0.0, 0.5, 1.0):
        axes.text(0.02 + 0.9 * tick, y - 0.012, f"{tick:.1f}", ha="center", va="top", fontsize=8)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)


def _rectangle(
    xy: tuple[float, float], width: float, height: float, colour: str, alpha: float = 1.0
) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle(xy, width, height, facecolor=colour, edgecolor="none", alpha=alpha)


def _table(result: CaseResult) -> str:
    """Per-modality and per-image numbers as an aligned monospace table."""
    lines = ["input     source      p mean ± std", "-" * 35]
    for modality in MODALITIES:
        stats = result.modality_probabilities.get(modality.value)
        value = f"{stats.mean:.2f} ± {stats.std:.2f}" if stats else "  —"
        lines.append(f"{modality.value + ' (views)':<21} {value}")
    lines.append("")
    for modality in MODALITIES:
        for view in VIEWS:
            slot = slot_name(modality, view)
            stats = result.image_probabilities.get(slot)
            value = f"{stats.mean:.2f} ± {stats.std:.2f}" if stats else "  —"
            lines.append(f"{slot:<9} {result.inputs[slot].source.value:<11} {value}")
    overlay = (
        ("overlay: Grad-CAM saliency (mean over folds);\nbrighter = more weight for 'malignant'")
        if result.saliency
        else "no saliency"
    )
    lines += [
        "",
        overlay,
        "",
        f"model  {result.model.name} {result.model.version}",
        f"       {result.model.architecture}, {len(result.fused.folds)} folds",
    ]
    return "\n".join(lines)


def _draw_footer(figure: Any, result: CaseResult) -> None:
    figure.text(
        0.01,
        0.035,
        textwrap.fill(RESEARCH_USE_NOTICE, 150),
        fontsize=10,
        weight="bold",
        color="#8c2d04",
        va="center",
    )
    figure.text(0.99, 0.008, f"created {result.created}", fontsize=8, ha="right", color="#666666")


def _save_atomic(figure: Any, path: Path) -> Path:
    return write_atomically(
        path,
        lambda temporary: figure.savefig(
            temporary, format="png", facecolor="white", pil_kwargs={"compress_level": 1}
        ),
    )
