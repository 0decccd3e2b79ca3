"""The phantom's lesion: one finding per breast, placed consistently in both views.

A lesion keeps the same distance from the nipple in CC and MLO (as radiologists use to
match findings between views); only its direction from the nipple changes. Malignant
lesions are irregular or spiculated, benign ones round or oval with smooth margins; in LE
their density is partly masked by dense tissue (see :mod:`.enhancement` for DES).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from VirtualBiopsyLib.phantom.anatomy import ViewAnatomy
from VirtualBiopsyLib.roles import View

LABELS: tuple[str, ...] = ("malignant", "benign")


@dataclass(frozen=True)
class LesionSpec:
    """One lesion, independent of the view it is seen in."""

    label: str  # "malignant" or "benign"
    nipple_distance: float  # fraction of the nipple-to-chest-wall depth
    angle_deg: dict[str, float]  # direction from the nipple per view (0 = towards chest wall)
    diameter_mm: float
    elongation: float  # ratio of the axes (1 = round)
    orientation_rad: float
    margin_harmonics: tuple[tuple[int, float, float], ...]  # (order, amplitude, phase)
    spicules: tuple[tuple[float, float], ...]  # (angle rad, length as a multiple of radius)
    le_density: float  # added LE brightness in fatty tissue
    enhancement: float  # DES enhancement strength (0 = none)
    pattern: str  # "homogeneous", "heterogeneous", "rim" or "none"


def draw_lesion(rng: np.random.Generator, label: str) -> LesionSpec:
    """Random lesion of ``label``: shape, size, position and enhancement.

    >>> spec = draw_lesion(np.random.default_rng(1), "malignant")
    >>> spec.label, spec.enhancement > 0.2
    ('malignant', True)
    """
    if label not in LABELS:
        raise ValueError(f"unknown label {label!r}; expected 'malignant' or 'benign'")
    malignant = label == "malignant"
    if malignant:
        harmonics = tuple(
            (k, float(rng.uniform(0.05, 0.16)), float(rng.uniform(0, 2 * np.pi)))
            for k in (3, 5, 7, 9)
        )
        n_spicules = int(rng.integers(0, 9))
        spicules = tuple(
            (float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(1.5, 2.6)))
            for _ in range(n_spicules)
        )
        enhancement = float(rng.uniform(0.18, 0.55))
        pattern = str(rng.choice(["heterogeneous", "rim", "homogeneous"], p=[0.45, 0.35, 0.2]))
        diameter = float(rng.uniform(10.0, 30.0))
    else:
        harmonics = ((2, float(rng.uniform(0.0, 0.05)), float(rng.uniform(0, 2 * np.pi))),)
        spicules = ()
        enhancement = float(rng.uniform(0.02, 0.32)) if rng.random() < 0.7 else 0.0
        pattern = "homogeneous" if enhancement > 0 else "none"
        diameter = float(rng.uniform(8.0, 25.0))
    return LesionSpec(
        label=label,
        nipple_distance=float(rng.uniform(0.25, 0.65)),
        angle_deg={
            View.CC.value: float(rng.uniform(-35, 35)),
            View.MLO.value: float(rng.uniform(-30, 30)),
        },
        diameter_mm=diameter,
        elongation=float(rng.uniform(1.0, 1.6)),
        orientation_rad=float(rng.uniform(0, np.pi)),
        margin_harmonics=harmonics,
        spicules=spicules,
        le_density=float(rng.uniform(0.11, 0.19) if malignant else rng.uniform(0.07, 0.14)),
        enhancement=enhancement,
        pattern=pattern,
    )


def lesion_centre(spec: LesionSpec, anatomy: ViewAnatomy) -> tuple[float, float]:
    """Lesion centre (row, column) in the canonical frame: same nipple distance in each view."""
    depth_px = anatomy.nipple_rc[1]
    distance = spec.nipple_distance * depth_px
    angle = np.deg2rad(spec.angle_deg[anatomy.view.value])
    row = anatomy.nipple_rc[0] + distance * np.sin(angle)
    col = anatomy.nipple_rc[1] - distance * np.cos(angle)
    return float(row), float(col)


@dataclass
class LesionMaps:
    """A lesion drawn in one view (canonical frame, full image size)."""

    body: np.ndarray  # float32 [0, 1]: soft mask of the mass
    spicules: np.ndarray  # float32 [0, 1]: spicules (malignant only)
    relative_radius: np.ndarray  # float32: distance from the centre / local margin radius
    centre_rc: tuple[float, float]

    @property
    def mask(self) -> np.ndarray:
        """The lesion as a boolean mask (the mass, not its spicules)."""
        return self.body > 0.5


def draw_lesion_maps(spec: LesionSpec, anatomy: ViewAnatomy) -> LesionMaps:
    """Rasterise the lesion into one view, computing only a patch around it."""
    shape = anatomy.breast_mask.shape
    centre = lesion_centre(spec, anatomy)
    radius_px = 0.5 * spec.diameter_mm / anatomy.spacing_mm
    reach = int(np.ceil(radius_px * (3.0 if spec.spicules else 1.8))) + 2
    r0, r1 = max(0, int(centre[0]) - reach), min(shape[0], int(centre[0]) + reach + 1)
    c0, c1 = max(0, int(centre[1]) - reach), min(shape[1], int(centre[1]) + reach + 1)
    rows = np.arange(r0, r1, dtype=np.float32)[:, None] - centre[0]
    cols = np.arange(c0, c1, dtype=np.float32)[None, :] - centre[1]
    cos_o, sin_o = np.cos(spec.orientation_rad), np.sin(spec.orientation_rad)
    u = (cols * cos_o + rows * sin_o) / spec.elongation
    v = -cols * sin_o + rows * cos_o
    rho = np.hypot(u, v)
    phi = np.arctan2(v, u)
    margin = np.ones_like(rho)
    for order, amplitude, phase in spec.margin_harmonics:
        margin += amplitude * np.cos(order * phi + phase)
    relative = rho / (radius_px * margin)
    edge = max(0.04, 1.0 / radius_px)
    body_patch = expit((1.0 - relative) / edge)
    spicule_patch = np.zeros_like(rho)
    width = max(0.8, 0.6 / anatomy.spacing_mm)
    for angle, length in spec.spicules:
        along = np.cos(angle) * cols + np.sin(angle) * rows
        across = -np.sin(angle) * cols + np.cos(angle) * rows
        taper = np.clip(1.0 - along / (length * radius_px), 0.0, 1.0) * (along > 0)
        spicule_patch = np.maximum(spicule_patch, taper * np.exp(-((across / width) ** 2)))
    body = np.zeros(shape, dtype=np.float32)
    spicules = np.zeros(shape, dtype=np.float32)
    relative_full = np.full(shape, np.inf, dtype=np.float32)
    inside = anatomy.breast_mask[r0:r1, c0:c1]
    body[r0:r1, c0:c1] = body_patch * inside
    spicules[r0:r1, c0:c1] = spicule_patch * inside
    relative_full[r0:r1, c0:c1] = relative
    return LesionMaps(body, spicules, relative_full, centre)
