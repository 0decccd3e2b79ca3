"""report.png: one picture of a case's virtual biopsy that a person can read at a glance.

Left: the four slots (LE and DES rows, CC and MLO columns) on their original grids with
the Grad-CAM overlay; a synthetic DES carries a red 'SYNTHETIC' banner and frame, a
missing slot says so. Right: the label, the fused probability with its spread over folds,
the per-modality and per-image numbers, and the notices (research use; demo model).

Drawn with Pillow on one RGB canvas (15 × 9.6 inches at ``dpi``, sizes in points as a
figure's): a later case in the persistent worker spent 0.3–0.6 s of its ≈ 3 CPU-s in
matplotlib's figure, axes and text machinery, and a one-shot ``predict`` 0.4 s more
importing it (measured, issue 14); this canvas draws the same content in a few tens of
milliseconds, without importing matplotlib: its bundled DejaVu fonts are found by path,
and the saliency overlay's inferno colours are a table here (checked against
matplotlib's by a test).

>>> drawing = draw_report(result)                                       # doctest: +SKIP
>>> RESEARCH_USE_NOTICE in " ".join(drawing.texts)                       # doctest: +SKIP
True
>>> render_report(result, Path("out/case/report.png"))                  # doctest: +SKIP
PosixPath('out/case/report.png')
"""

from __future__ import annotations

import importlib.util
import textwrap
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from VirtualBiopsyLib import RESEARCH_USE_NOTICE
from VirtualBiopsyLib.atomic_io import write_atomically
from VirtualBiopsyLib.roles import MODALITIES, VIEWS, Source, slot_name

if TYPE_CHECKING:
    from PIL import Image as PILImage
    from PIL import ImageFont

    from VirtualBiopsyLib.inference.result import CaseResult

DISPLAY_ROWS = 450  # pictures are strided to about this many rows: the panels' own height
SYNTHETIC_RED = "#d62728"
MALIGNANT_COLOUR = "#b2182b"
BENIGN_COLOUR = "#2166ac"
NOTICE_COLOUR = "#8c2d04"
DEMO_COLOUR = "#e08214"
MISSING_GREY = "#555555"
PANEL_GREY = "#dddddd"
SALIENCY_FLOOR = 0.25  # saliency below this fraction of the map's peak stays transparent
SALIENCY_OPACITY = 0.55  # at the map's peak
FIGURE_INCHES = (15.0, 9.6)
LINE_SPACING = 1.2  # line height in font sizes
# The layout, in fractions of the canvas (origin bottom left, as a figure's): the 2 × 3
# grid of panels (images | images | numbers) and the gaps between them (fractions of
# the mean panel size).
GRID_LEFT, GRID_RIGHT, GRID_TOP, GRID_BOTTOM = 0.02, 0.99, 0.90, 0.08
GRID_WSPACE, GRID_HSPACE = 0.06, 0.12
COLUMN_RATIOS = (1.0, 1.0, 1.15)
TITLE_PAD_PT = 6.0  # a panel's caption above its picture
SYNTHETIC_FRAME_PT = 4.0


def display_stride(shape: tuple[int, ...]) -> int:
    """The pixel step that brings an image to about ``DISPLAY_ROWS`` rows for drawing."""
    return max(1, int(np.ceil(shape[0] / DISPLAY_ROWS)))


@dataclass
class ReportDrawing:
    """A drawn report: the canvas and every text on it, in drawing order (what a reader
    can see; tests check the numbers and notices here)."""

    image: PILImage.Image
    texts: list[str] = field(default_factory=list)


def render_report(result: CaseResult, path: Path, dpi: int = 100) -> Path:
    """Draw ``result`` into the PNG ``path`` (written atomically) and return the path."""
    drawing = draw_report(result, dpi)
    return write_atomically(
        Path(path), lambda temporary: drawing.image.save(temporary, format="PNG", compress_level=1)
    )


def draw_report(result: CaseResult, dpi: int = 100) -> ReportDrawing:
    """The report of ``result`` as an RGB image (see the module docstring)."""
    canvas = _Canvas(dpi)
    _draw_title(canvas, result)
    cells = _grid_cells(canvas.width, canvas.height)
    for row, modality in enumerate(MODALITIES):
        for column, view in enumerate(VIEWS):
            _draw_slot(canvas, cells[row][column], result, slot_name(modality, view))
    top, bottom = cells[0][2], cells[1][2]
    _draw_numbers(canvas, (top[0], top[1], top[2], bottom[3]), result)
    _draw_footer(canvas, result)
    return ReportDrawing(canvas.image, canvas.texts)


# --- the canvas ---------------------------------------------------------------------------

Box = tuple[float, float, float, float]  # left, top, right, bottom in pixels


class _Canvas:
    """An RGB image with text in points and a record of what was written on it."""

    def __init__(self, dpi: int) -> None:
        from PIL import Image, ImageDraw

        self.px_per_pt = dpi / 72.0
        self.width = round(FIGURE_INCHES[0] * dpi)
        self.height = round(FIGURE_INCHES[1] * dpi)
        self.image = Image.new("RGB", (self.width, self.height), "white")
        self.draw = ImageDraw.Draw(self.image, "RGBA")  # RGBA fills blend (alpha boxes)
        self.texts: list[str] = []

    def at(self, fx: float, fy: float) -> tuple[float, float]:
        """Canvas fractions (origin bottom left) → pixels (origin top left)."""
        return fx * self.width, (1.0 - fy) * self.height

    def points(self, value: float) -> float:
        return value * self.px_per_pt

    def text(
        self,
        xy: tuple[float, float],
        text: str,
        size: float,
        colour: str = "black",
        *,
        bold: bool = False,
        mono: bool = False,
        ha: str = "left",
        va: str = "top",
        box: str | None = None,
        box_alpha: float = 1.0,
        pad: float = 0.0,
    ) -> Box:
        """Write ``text`` (lines split at newlines) anchored at ``xy`` in pixels, ``size``
        in points; ``box``: a filled rectangle ``pad`` points around it. Returns the
        text's bounding box."""
        font = _font(round(self.points(size)), bold, mono)
        lines = text.split("\n")
        line_height = self.points(size) * LINE_SPACING
        widths = [self.draw.textlength(line, font=font) for line in lines]
        ascent, descent = font.getmetrics()
        block = line_height * (len(lines) - 1) + ascent + descent
        x, y = xy
        top = {"top": y, "center": y - block / 2, "bottom": y - block, "baseline": y - ascent}[va]
        width = max(widths)
        left = {"left": x, "center": x - width / 2, "right": x - width}[ha]
        bounds = (left, top, left + width, top + block)
        if box is not None:
            margin = self.points(pad)
            fill = _rgba(box, box_alpha)
            self.draw.rectangle(
                (bounds[0] - margin, bounds[1] - margin, bounds[2] + margin, bounds[3] + margin),
                fill=fill,
            )
        for index, (line, line_width) in enumerate(zip(lines, widths, strict=True)):
            line_left = {"left": left, "center": left + (width - line_width) / 2}.get(
                ha, left + width - line_width
            )
            self.draw.text(
                (line_left, top + index * line_height), line, fill=colour, font=font, anchor="la"
            )
        self.texts.append(text)
        return bounds

    def rectangle(self, box: Box, colour: str, alpha: float = 1.0) -> None:
        self.draw.rectangle(box, fill=_rgba(colour, alpha))

    def frame(self, box: Box, colour: str, width: float) -> None:
        """An outline ``width`` pixels wide centred on ``box``'s edges."""
        half = width / 2
        outer = (box[0] - half, box[1] - half, box[2] + half, box[3] + half)
        self.draw.rectangle(outer, outline=colour, width=max(1, round(width)))

    def line(self, points: list[tuple[float, float]], colour: str, width: float) -> None:
        self.draw.line(points, fill=colour, width=max(1, round(width)))


def _rgba(colour: str, alpha: float) -> tuple[int, int, int, int]:
    from PIL import ImageColor

    red, green, blue = ImageColor.getrgb(colour)[:3]
    return red, green, blue, round(255 * alpha)


def _grid_cells(width: int, height: int) -> list[list[Box]]:
    """The 2 × 3 panel boxes in pixels, split as a figure's grid spec splits its area."""
    columns = _split(
        GRID_LEFT * width, GRID_RIGHT * width, COLUMN_RATIOS, GRID_WSPACE
    )  # left → right
    rows = _split((1 - GRID_TOP) * height, (1 - GRID_BOTTOM) * height, (1.0, 1.0), GRID_HSPACE)
    return [[(c0, r0, c1, r1) for c0, c1 in columns] for r0, r1 in rows]


def _split(
    start: float, end: float, ratios: tuple[float, ...], space: float
) -> list[tuple[float, float]]:
    """Cut [start, end] into cells in ``ratios`` with gaps of ``space`` × the mean cell."""
    count = len(ratios)
    mean_cell = (end - start) / (count + space * (count - 1))
    gap = space * mean_cell
    total = mean_cell * count
    cells, position = [], start
    for ratio in ratios:
        size = total * ratio / sum(ratios)
        cells.append((position, position + size))
        position += size + gap
    return cells


# --- fonts and colours ----------------------------------------------------------------------


@lru_cache(maxsize=32)
def _font(pixels: int, bold: bool, mono: bool) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu (matplotlib's bundled copy) at ``pixels``; Pillow's own font without it."""
    from PIL import ImageFont

    name = ("DejaVuSansMono" if mono else "DejaVuSans") + ("-Bold" if bold else "") + ".ttf"
    folder = _font_folder()
    if folder is not None and (folder / name).is_file():
        return ImageFont.truetype(str(folder / name), pixels)
    return ImageFont.load_default(pixels)


@lru_cache(maxsize=1)
def _font_folder() -> Path | None:
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf"


# matplotlib's inferno colour map (van der Walt & Smith, CC0) as 256 RGB bytes, so the
# report needs no matplotlib import (0.2 CPU-s of a one-shot predict); a test checks it
# against matplotlib's own table.
INFERNO_RGB_HEX = (
    "00000401000501010601010802010a02020c02020e03021004031204031405041706041907051b08051d"
    "09061f0a07220b07240c08260d08290e092b10092d110a30120a32140b34150b37160b39180c3c190c3e"
    "1b0c411c0c431e0c451f0c48210c4a230c4c240c4f260c51280b53290b552b0b572d0b592f0a5b310a5c"
    "320a5e340a5f3609613809623909633b09643d09653e0966400a67420a68440a68450a69470b6a490b6a"
    "4a0c6b4c0c6b4d0d6c4f0d6c510e6c520e6d540f6d550f6d57106e59106e5a116e5c126e5d126e5f136e"
    "61136e62146e64156e65156e67166e69166e6a176e6c186e6d186e6f196e71196e721a6e741a6e751b6e"
    "771c6d781c6d7a1d6d7c1d6d7d1e6d7f1e6c801f6c82206c84206b85216b87216b88226a8a226a8c2369"
    "8d23698f24699025689225689326679526679727669827669a28659b29649d29649f2a63a02a63a22b62"
    "a32c61a52c60a62d60a82e5fa92e5eab2f5ead305dae305cb0315bb1325ab3325ab43359b63458b73557"
    "b93556ba3655bc3754bd3853bf3952c03a51c13a50c33b4fc43c4ec63d4dc73e4cc83f4bca404acb4149"
    "cc4248ce4347cf4446d04545d24644d34743d44842d54a41d74b3fd84c3ed94d3dda4e3cdb503bdd513a"
    "de5238df5337e05536e15635e25734e35933e45a31e55c30e65d2fe75e2ee8602de9612bea632aeb6429"
    "eb6628ec6726ed6925ee6a24ef6c23ef6e21f06f20f1711ff1731df2741cf3761bf37819f47918f57b17"
    "f57d15f67e14f68013f78212f78410f8850ff8870ef8890cf98b0bf98c0af98e09fa9008fa9207fa9407"
    "fb9606fb9706fb9906fb9b06fb9d07fc9f07fca108fca309fca50afca60cfca80dfcaa0ffcac11fcae12"
    "fcb014fcb216fcb418fbb61afbb81dfbba1ffbbc21fbbe23fac026fac228fac42afac62df9c72ff9c932"
    "f9cb35f8cd37f8cf3af7d13df7d340f6d543f6d746f5d949f5db4cf4dd4ff4df53f4e156f3e35af3e55d"
    "f2e661f2e865f2ea69f1ec6df1ed71f1ef75f1f179f2f27df2f482f3f586f3f68af4f88ef5f992f6fa96"
    "f8fb9af9fc9dfafda1fcffa4"
)


@lru_cache(maxsize=1)
def _inferno() -> np.ndarray:
    """The 256 RGB colours (float32, 0–1) of the inferno colour map."""
    table = np.frombuffer(bytes.fromhex(INFERNO_RGB_HEX), dtype=np.uint8).reshape(256, 3)
    return table.astype(np.float32) / np.float32(255.0)


def _colour_index(values: np.ndarray) -> np.ndarray:
    """Colour-table rows of values in [0, 1], as a 256-colour map looks them up."""
    return np.clip((values * 256).astype(np.int64), 0, 255)


# --- the parts ----------------------------------------------------------------------------


def _draw_title(canvas: _Canvas, result: CaseResult) -> None:
    laterality = {"L": "left breast", "R": "right breast"}.get(result.laterality or "", "")
    title = f"VirtualBiopsy — case {result.key}" + (f" ({laterality})" if laterality else "")
    canvas.text(canvas.at(0.01, 0.965), title, 17, bold=True, va="center")
    if result.model.is_demo:
        canvas.text(
            canvas.at(0.99, 0.965),
            "DEMO MODEL — trained on synthetic data, not for real patients",
            12,
            "white",
            bold=True,
            ha="right",
            va="center",
            box=DEMO_COLOUR,
            pad=5,
        )


def _draw_slot(canvas: _Canvas, cell: Box, result: CaseResult, slot: str) -> None:
    record = result.inputs[slot]
    centre_x = (cell[0] + cell[2]) / 2
    if record.source is Source.MISSING or slot not in result.pictures:
        canvas.rectangle(cell, PANEL_GREY)
        centre = (centre_x, (cell[1] + cell[3]) / 2)
        canvas.text(centre, f"{slot}\nmissing", 16, MISSING_GREY, ha="center", va="center")
        canvas.text(
            (centre_x, cell[1] - canvas.points(TITLE_PAD_PT)),
            f"{slot}: missing",
            12,
            MISSING_GREY,
            ha="center",
            va="bottom",
        )
        return
    picture = result.pictures[slot]
    stride = display_stride(picture.shape)
    image = picture.display(stride)
    box = _fit(cell, image.shape)
    size = (round(box[2]) - round(box[0]), round(box[3]) - round(box[1]))
    grey = _resized(image, size)
    if slot in result.saliency:
        saliency = result.saliency[slot].display(stride)[: image.shape[0], : image.shape[1]]
        pixels = _with_saliency(grey, _resized(saliency, size))
    else:
        pixels = np.repeat(grey[..., None], 3, axis=2)
    from PIL import Image

    rgb = np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8)
    canvas.image.paste(Image.fromarray(rgb, "RGB"), (round(box[0]), round(box[1])))
    _caption(canvas, box, result, slot)
    if record.source is Source.SYNTHETIC:
        _mark_synthetic(canvas, box, record.generated_from)


def _fit(cell: Box, shape: tuple[int, ...]) -> Box:
    """The largest box of the picture's aspect centred in ``cell``."""
    cell_width, cell_height = cell[2] - cell[0], cell[3] - cell[1]
    scale = min(cell_width / shape[1], cell_height / shape[0])
    width, height = shape[1] * scale, shape[0] * scale
    left = cell[0] + (cell_width - width) / 2
    top = cell[1] + (cell_height - height) / 2
    return left, top, left + width, top + height


def _resized(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A [0, 1] picture resampled to ``size`` (width, height), antialiased."""
    from PIL import Image

    picture = Image.fromarray(np.ascontiguousarray(values, dtype=np.float32), "F")
    return np.asarray(picture.resize(size, Image.Resampling.BILINEAR), dtype=np.float32)


def _with_saliency(grey: np.ndarray, saliency: np.ndarray) -> np.ndarray:
    """RGB of ``grey`` under the inferno-coloured saliency, transparent below the floor."""
    colours = _inferno()[_colour_index(saliency)]
    alpha = np.clip((saliency - SALIENCY_FLOOR) / (1.0 - SALIENCY_FLOOR), 0.0, 1.0)
    alpha = (alpha * SALIENCY_OPACITY)[..., None]
    return grey[..., None] * (1.0 - alpha) + colours * alpha


def _caption(canvas: _Canvas, box: Box, result: CaseResult, slot: str) -> None:
    probability = result.image_probabilities.get(slot)
    text = slot
    if probability is not None:
        text = f"{slot}   p = {probability.mean:.2f} ± {probability.std:.2f}"
    source = result.inputs[slot].source
    colour = SYNTHETIC_RED if source is Source.SYNTHETIC else "black"
    position = ((box[0] + box[2]) / 2, box[1] - canvas.points(TITLE_PAD_PT))
    canvas.text(position, text, 12, colour, bold=True, ha="center", va="bottom")


def _mark_synthetic(canvas: _Canvas, box: Box, generated_from: str | None) -> None:
    canvas.frame(box, SYNTHETIC_RED, canvas.points(SYNTHETIC_FRAME_PT))
    banner = "SYNTHETIC" + (f"\nfrom {generated_from}" if generated_from else "")
    top = box[1] + 0.025 * (box[3] - box[1])
    canvas.text(
        ((box[0] + box[2]) / 2, top + canvas.points(4)),
        banner,
        12,
        "white",
        bold=True,
        ha="center",
        va="top",
        box=SYNTHETIC_RED,
        box_alpha=0.9,
        pad=4,
    )


def _draw_numbers(canvas: _Canvas, panel: Box, result: CaseResult) -> None:
    left, top, right, bottom = panel

    def at(fx: float, fy: float) -> tuple[float, float]:  # the panel's own fractions
        return left + fx * (right - left), bottom - fy * (bottom - top)

    colour = MALIGNANT_COLOUR if result.label == "malignant" else BENIGN_COLOUR
    fused = result.fused
    canvas.text(at(0.02, 0.985), "Virtual biopsy", 13, "#444444")
    canvas.text(at(0.02, 0.94), result.label.upper(), 30, colour, bold=True)
    canvas.text(
        at(0.02, 0.855),
        f"p(malignant) = {fused.mean:.2f}  (std {fused.std:.2f}, SE {fused.sem:.2f} over "
        f"{len(fused.folds)} folds)\nthreshold {result.threshold:.2f}",
        11.5,
    )
    _probability_bar(canvas, at, fused.mean, fused.std, result.threshold, colour)
    canvas.text(at(0.02, 0.69), _table(result), 10.5, mono=True)
    warnings = list(result.all_warnings())[:6]
    if warnings:
        wrapped = "\n".join(textwrap.fill("• " + w, 62) for w in warnings)
        canvas.text(at(0.02, 0.27), wrapped, 9.5, NOTICE_COLOUR)


def _probability_bar(
    canvas: _Canvas, at: Any, mean: float, std: float, threshold: float, colour: str
) -> None:
    """A 0–1 scale with the fused probability, its ±std band and the threshold."""
    y, height, x0, length = 0.745, 0.03, 0.02, 0.9

    def span(start: float, end: float, low: float, high: float) -> Box:
        (x_start, y_high), (x_end, y_low) = at(start, high), at(end, low)
        return x_start, y_high, x_end, y_low

    canvas.rectangle(span(x0, x0 + length, y, y + height), "#eeeeee")
    low, high = max(0.0, mean - std), min(1.0, mean + std)
    band = span(x0 + length * low, x0 + length * high, y, y + height)
    canvas.rectangle(band, colour, 0.3)
    canvas.line(
        [at(x0 + length * mean, y - 0.008), at(x0 + length * mean, y + height + 0.008)],
        colour,
        canvas.points(3),
    )
    _dashed(
        canvas,
        at(x0 + length * threshold, y + height + 0.004),
        at(x0 + length * threshold, y - 0.004),
    )
    for tick in (0.0, 0.5, 1.0):
        canvas.text(at(x0 + length * tick, y - 0.012), f"{tick:.1f}", 8, ha="center")


def _dashed(canvas: _Canvas, start: tuple[float, float], end: tuple[float, float]) -> None:
    """A vertical black dashed line from ``start`` down to ``end`` (the threshold)."""
    x, y, dash, gap = start[0], start[1], canvas.points(3.7), canvas.points(1.6)
    while y < end[1]:
        canvas.line([(x, y), (x, min(y + dash, end[1]))], "black", canvas.points(1))
        y += dash + gap


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


def _draw_footer(canvas: _Canvas, result: CaseResult) -> None:
    canvas.text(
        canvas.at(0.01, 0.035),
        textwrap.fill(RESEARCH_USE_NOTICE, 150),
        10,
        NOTICE_COLOUR,
        bold=True,
        va="center",
    )
    canvas.text(
        canvas.at(0.99, 0.008),
        f"created {result.created}",
        8,
        "#666666",
        ha="right",
        va="baseline",
    )
