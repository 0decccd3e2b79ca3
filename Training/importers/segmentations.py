"""Hand-drawn lesion segmentations: CDD-CESM's VIA CSV export, read into regions per image.

CDD-CESM ships ``Radiology_hand_drawn_segmentations_v2.csv``, exported by the VGG Image
Annotator: one row per region, ``#filename`` the image's file name (as on disk, stray
spaces included), ``region_shape_attributes`` a JSON shape. Drawable shapes: ``polygon``
and ``polyline`` (filled), ``ellipse`` (VIA 2's optional ``theta``), ``circle``, ``rect``
(drawn by :mod:`~Training.importers.masks`). A region that cannot be drawn is left out with
its reason (malformed JSON, unknown shape, a ``point`` marks no area, missing or
non-numeric coordinates, a coordinate beyond :data:`MAX_COORDINATE`); JSON that a CSV
tool quoted twice (``""name""``) is read as meant. An image listed without regions
(``region_count`` 0, ``{}``) has no region: it gets no mask, *not annotated* as the
manifest reads it. A ``#filename`` with a folder (``images/P1_L_CM_CC.jpg``, as VIA keeps
it for images loaded from a path) names the image by its last part. One bad row never
stops the import.

>>> parse_region('{"name":"circle","cx":5,"cy":4,"r":2}')
Region(shape='circle', values={'cx': 5.0, 'cy': 4.0, 'r': 2.0})
>>> try:
...     parse_region('{"name":"point","cx":5,"cy":4}')
... except RegionError as error:
...     print(error.kind)
point marks no area
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from Training.importers.masks import Region
from Training.importers.sheets import SheetRow, cell_text, normalise_header, read_sheet
from Training.importers.summary import LeftOut
from VirtualBiopsyLib.phantom.segmentations import SEGMENTATIONS_NAME

_COORDINATES = {
    "polygon": ("all_points_x", "all_points_y"),
    "polyline": ("all_points_x", "all_points_y"),
    "ellipse": ("cx", "cy", "rx", "ry"),
    "circle": ("cx", "cy", "r"),
    "rect": ("x", "y", "width", "height"),
}
#: No mammogram is a million pixels across: a coordinate beyond is corrupt, not a lesion.
MAX_COORDINATE = 1e6


class RegionError(ValueError):
    """A region that cannot be drawn: ``kind`` is the left-out reason, the message its detail."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind} ({detail})" if detail else kind)
        self.kind, self.detail = kind, detail


def _number(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RegionError("non-numeric or missing coordinates", f"{key} is {_shown(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise RegionError("non-numeric or missing coordinates", f"{key} is {value!r}")
    if abs(value) > MAX_COORDINATE:  # an int of 400 digits, 1e308: would overflow the drawing
        raise RegionError("coordinate out of range", f"{key} beyond ±{MAX_COORDINATE:g}")
    return float(value)


def _shown(value: object) -> str:
    """A cell's value for a message: short, however long the cell."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _loads(text: str) -> object:
    """JSON, also as a CSV tool quoted it twice (``"{""name"":…}"``): that form is
    unambiguous, so it is read rather than left out."""
    try:
        return json.loads(text)
    except ValueError:
        inner = text.strip()
        if inner.startswith('"') and inner.endswith('"') and len(inner) > 1:
            inner = inner[1:-1]
        if '""' not in inner:
            raise
        return json.loads(inner.replace('""', '"'))


def parse_region(text: str) -> Region | None:
    """The region of a ``region_shape_attributes`` cell; None for ``{}`` (no region).

    Raises :class:`RegionError` with the left-out reason for anything that cannot be drawn.
    """
    try:
        shape = _loads(text) if text.strip() else {}
    except (ValueError, RecursionError) as error:
        raise RegionError("malformed JSON", str(error)) from None
    if not isinstance(shape, dict):
        raise RegionError("malformed JSON", "not a JSON object")
    if not shape:
        return None
    name = str(shape.get("name", "")).strip().lower()
    if name == "point":
        raise RegionError("point marks no area")
    if name not in _COORDINATES:
        raise RegionError("unknown shape", _shown(shape.get("name")))
    values: dict[str, float | tuple[float, ...]] = {}
    for key in _COORDINATES[name]:
        if key not in shape:
            raise RegionError("non-numeric or missing coordinates", f"no {key}")
        item = shape[key]
        if key.startswith("all_points"):
            if not isinstance(item, list):
                raise RegionError("non-numeric or missing coordinates", f"{key} is not a list")
            values[key] = tuple(_number(value, key) for value in item)
        else:
            values[key] = _number(item, key)
    if name == "ellipse" and "theta" in shape:
        values["theta"] = _number(shape["theta"], "theta")
    _check_area(name, values)
    return Region(name, values)


def _check_area(name: str, values: dict[str, float | tuple[float, ...]]) -> None:
    """A shape must enclose an area: three points, or positive radii / sides."""
    if name in ("polygon", "polyline"):
        counts = {len(values[key]) for key in _COORDINATES[name]}  # type: ignore[arg-type]
        if len(counts) > 1:
            raise RegionError("non-numeric or missing coordinates", "x and y differ in length")
        if min(counts) < 3:
            raise RegionError("region marks no area", f"{name} of {min(counts)} points")
        return
    sizes = {"ellipse": ("rx", "ry"), "circle": ("r",), "rect": ("width", "height")}[name]
    if any(float(values[key]) <= 0 for key in sizes):  # type: ignore[arg-type]
        raise RegionError("region marks no area", ", ".join(f"{k} {values[k]}" for k in sizes))


# --- the CSV --------------------------------------------------------------------------


def find_segmentations(folder: Path) -> Path | None:
    """The segmentation CSV in ``folder``, names matched ignoring case, spaces and
    punctuation (``…segmentations_v2.csv``, or any version: the highest); None if absent."""
    wanted = normalise_header(Path(SEGMENTATIONS_NAME).stem)
    prefix = wanted.rstrip("v0123456789")
    found = [
        child
        for child in sorted(folder.iterdir(), key=_version_order)
        if child.is_file()
        and child.suffix.lower() == ".csv"
        and normalise_header(child.stem).startswith(prefix)
    ]
    exact = [child for child in found if normalise_header(child.stem) == wanted]
    return (exact or found or [None])[-1]


def _version_order(path: Path) -> tuple[int, str]:
    """Sort key: the version number a name ends with (``_v10`` after ``_v9``), then the name."""
    digits = re.search(r"(\d+)$", normalise_header(path.stem))
    return (int(digits.group(1)) if digits else -1, path.name)


@dataclass
class ImageRegions:
    """The regions read for one file name of the CSV, with the rows they came from."""

    file_name: str
    rows: list[int] = field(default_factory=list)
    regions: list[tuple[int, Region]] = field(default_factory=list)  # (row, region)

    @property
    def image_name(self) -> str:
        """The name without a folder VIA kept (``images/P1_L_CM_CC.jpg``, ``C:\\x\\…``)."""
        return self.file_name.replace("\\", "/").rsplit("/", 1)[-1]


@dataclass
class Segmentations:
    """A read segmentation CSV: regions per file name, and every region left out."""

    path: Path
    images: dict[str, ImageRegions]
    left_out: list[LeftOut]


def read_segmentations(path: Path) -> Segmentations:
    """Read a VIA CSV export; a bad row is left out with its reason, never fatal."""
    sheet = read_sheet(path)
    name_column = sheet.require_column("file name", "#filename", "filename")
    shape_column = sheet.require_column("region shape", "region_shape_attributes")
    images: dict[str, ImageRegions] = {}
    left_out: list[LeftOut] = []
    for row in sheet.rows:
        file_name = cell_text(row.values.get(name_column))
        where = f"segmentations row {row.number}"
        if not file_name:
            left_out.append(LeftOut(where, "no file name"))
            continue
        image = images.setdefault(file_name, ImageRegions(file_name))
        image.rows.append(row.number)
        try:
            region = parse_region(_text(row, shape_column))
        except RegionError as error:
            detail = f"{file_name}: {error.detail}" if error.detail else file_name
            left_out.append(LeftOut(where, error.kind, detail))
            continue
        if region is not None:
            image.regions.append((row.number, region))
    return Segmentations(path, images, left_out)


def _text(row: SheetRow, column: str) -> str:
    value = row.values.get(column)
    return "" if value is None else str(value)
