"""The phantom's hand-drawn segmentations, as CDD-CESM ships them: a VIA CSV export.

CDD-CESM has ``Radiology_hand_drawn_segmentations_v2.csv``, exported by the VGG Image
Annotator (VIA): one row per region, ``#filename`` the JPEG's name as on disk (stray
spaces included), ``region_shape_attributes`` a JSON shape (polygon, polyline, ellipse with
optional ``theta``, circle, point). The phantom derives its regions from its truth masks,
so an importer can be checked against truth: polygons (and polylines) follow the mask's
outline through the midpoints of its pixel edges (coordinates ``x.5``; filled with pixel
centres at ``x + 0.5`` they give back the mask exactly), ellipses and circles are fitted
to the mask's moments (close, not exact). VIA's coordinates: ``x`` right, ``y`` down, in
pixels, the image's top-left corner at 0; ``theta`` turns the ellipse's x radius from
the x axis towards the y axis (clockwise on screen).

>>> mask = np.zeros((6, 8), bool); mask[2:4, 3:6] = True  # rows 2-3, columns 3-5
>>> outline = polygon_region(mask)
>>> min(outline["all_points_x"]), max(outline["all_points_x"]), max(outline["all_points_y"])
(3, 6, 4)
>>> ellipse_region(mask)
{'name': 'ellipse', 'cx': 4.5, 'cy': 3, 'rx': 1.63, 'ry': 1, 'theta': 0.0}
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
from skimage import measure

from VirtualBiopsyLib.phantom.files import write_atomically

SEGMENTATIONS_NAME = "Radiology_hand_drawn_segmentations_v2.csv"
VIA_COLUMNS: tuple[str, ...] = (
    "#filename",
    "file_size",
    "file_attributes",
    "region_count",
    "region_id",
    "region_shape_attributes",
    "region_attributes",
)

Region = dict[str, object]


def _number(value: float, digits: int = 2) -> int | float:
    """A coordinate as VIA writes it: an integer when it is one."""
    value = round(float(value), digits)
    return int(value) if value.is_integer() else value


def polygon_region(mask: np.ndarray, name: str = "polygon") -> Region:
    """The outline of the mask's largest part (``name``: ``polygon`` or ``polyline``)."""
    rows_in, cols_in = np.nonzero(mask)
    top, left = rows_in.min(), cols_in.min()  # trace the lesion's box only: fast at full size
    box = np.asarray(mask[top : rows_in.max() + 1, left : cols_in.max() + 1], dtype=np.float32)
    outline = max(measure.find_contours(np.pad(box, 1), 0.5), key=len)
    outline = measure.approximate_polygon(outline, tolerance=1e-6)[:-1]  # collinear points off
    rows = outline[:, 0] - 0.5 + top  # padding off; VIA puts pixel centres at .5
    cols = outline[:, 1] - 0.5 + left
    if name == "polyline":  # a polyline is drawn open: the annotator ends where it began
        rows, cols = np.append(rows, rows[0]), np.append(cols, cols[0])
    return {
        "name": name,
        "all_points_x": [_number(c) for c in cols],
        "all_points_y": [_number(r) for r in rows],
    }


def _moments(mask: np.ndarray) -> tuple[float, float, np.ndarray]:
    rows, cols = np.nonzero(mask)
    x, y = cols + 0.5, rows + 0.5
    return float(x.mean()), float(y.mean()), np.cov(np.vstack([x, y]), bias=True)


def ellipse_region(mask: np.ndarray) -> Region:
    """The ellipse with the mask's centroid and second moments (VIA 2, with ``theta``)."""
    cx, cy, covariance = _moments(mask)
    variances, axes = np.linalg.eigh(covariance)  # ascending: the major axis last
    theta = float(np.arctan2(axes[1, 1], axes[0, 1]))
    if theta > np.pi / 2:  # the same axis, pointing the other way: keep |theta| <= pi/2
        theta -= np.pi
    elif theta < -np.pi / 2:
        theta += np.pi
    return {
        "name": "ellipse",
        "cx": _number(cx),
        "cy": _number(cy),
        "rx": _number(2 * np.sqrt(variances[1])),
        "ry": _number(2 * np.sqrt(variances[0])),
        "theta": round(theta, 4),
    }


def axis_ratio(mask: np.ndarray) -> float:
    """Minor over major axis of the mask's moment ellipse: 1 for a round lesion."""
    variances = np.linalg.eigvalsh(_moments(mask)[2])
    return float(np.sqrt(variances[0] / variances[1])) if variances[1] > 0 else 1.0


def circle_region(mask: np.ndarray) -> Region:
    """The circle at the mask's centroid with the mask's area."""
    cx, cy, _ = _moments(mask)
    return {
        "name": "circle",
        "cx": _number(cx),
        "cy": _number(cy),
        "r": _number(np.sqrt(np.count_nonzero(mask) / np.pi)),
    }


def point_region(mask: np.ndarray) -> Region:
    """A point on the lesion's centroid (annotators mark some lesions so: no area)."""
    cx, cy, _ = _moments(mask)
    return {"name": "point", "cx": int(cx), "cy": int(cy)}


def via_rows(file_name: str, file_size: int, regions: list[Region]) -> list[list[object]]:
    """The VIA CSV rows of one image: one per region, or one with ``{}`` when it has none."""
    if not regions:
        return [[file_name, file_size, "{}", 0, 0, "{}", "{}"]]
    return [
        [file_name, file_size, "{}", len(regions), index, _json(region), "{}"]
        for index, region in enumerate(regions)
    ]


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def write_segmentations(path: Path, rows: list[list[object]]) -> Path:
    """Write the VIA CSV (header first, CRLF-free) atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(VIA_COLUMNS)
    writer.writerows(rows)
    data = buffer.getvalue().encode("utf-8")
    return write_atomically(path, lambda temp: temp.write_bytes(data))
