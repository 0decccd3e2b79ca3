"""The phantom's lesion: one finding per breast, placed consistently in both views.

A lesion keeps the same distance from the nipple in CC and MLO (as radiologists use to
match findings between views); only its direction from the nipple changes.

Each lesion has a latent *aggressiveness* in [0, 1], drawn from overlapping distributions
per label (malignant: mostly high, benign: mostly low). It drives what LE shows, as in the
BI-RADS mass descriptors: margin irregularity, spiculation, indistinct margins, density and
size. It also drives part of the DES enhancement (see :func:`draw_enhancement`); the rest
of the enhancement depends on the label alone or is random, so LE predicts DES only in
part, and LE alone carries some, but not all, of the malignancy information. In LE the
lesion's density is masked by dense tissue (see :mod:`.enhancement`).
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
    aggressiveness: float = 0.5  # latent [0, 1]: drives LE morphology and part of DES
    margin_blur: float = 1.0  # margin width as a multiple of the sharpest (indistinct > 1)


#: Beta-distribution parameters of the aggressiveness per label (overlapping on purpose).
AGGRESSIVENESS_BETA: dict[str, tuple[float, float]] = {
    "malignant": (4.0, 2.0),
    "benign": (2.0, 4.5),
}
#: Share of benign lesions that do not enhance at all.
BENIGN_NON_ENHANCING = 0.25
#: Probabilities of the enhancing patterns (heterogeneous, rim, homogeneous) per label.
PATTERN_PROBABILITIES: dict[str, tuple[float, float, float]] = {
    "malignant": (0.4, 0.3, 0.3),
    "benign": (0.25, 0.0, 0.75),
}


def draw_lesion(rng: np.random.Generator, label: str) -> LesionSpec:
    """Random lesion of ``label``: aggressiveness, shape, size, position and enhancement.

    >>> spec = draw_lesion(np.random.default_rng(1), "malignant")
    >>> spec.label, 0.0 <= spec.aggressiveness <= 1.0, spec.enhancement > 0.0
    ('malignant', True, True)
    """
    if label not in LABELS:
        raise ValueError(f"unknown label {label!r}; expected 'malignant' or 'benign'")
    aggressiveness = float(rng.beta(*AGGRESSIVENESS_BETA[label]))
    enhancement, pattern = draw_enhancement(rng, label, aggressiveness)
    return LesionSpec(
        label=label,
        nipple_distance=float(rng.uniform(0.25, 0.65)),
        angle_deg={
            View.CC.value: float(rng.uniform(-35, 35)),
            View.MLO.value: float(rng.uniform(-30, 30)),
        },
        diameter_mm=float(rng.uniform(8.0, 20.0) + 12.0 * aggressiveness),
        elongation=float(rng.uniform(1.0, 1.6)),
        orientation_rad=float(rng.uniform(0, np.pi)),
        margin_harmonics=_draw_margin_harmonics(rng, aggressiveness),
        spicules=_draw_spicules(rng, aggressiveness),
        le_density=float(0.14 + 0.20 * aggressiveness + rng.uniform(-0.03, 0.03)),
        enhancement=enhancement,
        pattern=pattern,
        aggressiveness=aggressiveness,
        margin_blur=float(1.0 + 3.0 * aggressiveness**2),
    )


def _draw_margin_harmonics(
    rng: np.random.Generator, aggressiveness: float
) -> tuple[tuple[int, float, float], ...]:
    """Oval (order 2) plus lobulation/irregularity (orders 3–9) growing with aggressiveness."""
    oval = (2, float(rng.uniform(0.0, 0.05)), float(rng.uniform(0, 2 * np.pi)))
    scale = 0.17 * aggressiveness**1.5
    irregular = tuple(
        (k, float(scale * rng.uniform(0.4, 1.0)), float(rng.uniform(0, 2 * np.pi)))
        for k in (3, 5, 7, 9)
    )
    return (oval, *irregular)


def _draw_spicules(
    rng: np.random.Generator, aggressiveness: float
) -> tuple[tuple[float, float], ...]:
    """Spicules: none below moderate aggressiveness, up to about a dozen above."""
    n_spicules = int(rng.poisson(12.0 * max(0.0, aggressiveness - 0.45) / 0.55))
    return tuple(
        (float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(1.5, 2.8))) for _ in range(n_spicules)
    )


def draw_enhancement(
    rng: np.random.Generator, label: str, aggressiveness: float
) -> tuple[float, str]:
    """DES enhancement strength and pattern of a lesion.

    Three parts: one follows the aggressiveness (so it is predictable from the lesion's LE
    morphology), one follows the label only and one is random; the last two are visible
    only in DES. Some benign lesions do not enhance at all.

    >>> strength, pattern = draw_enhancement(np.random.default_rng(0), "benign", 0.2)
    >>> 0.0 <= strength <= 0.6, pattern in {"homogeneous", "heterogeneous", "none"}
    (True, True)
    """
    malignant = label == "malignant"
    if not malignant and rng.random() < BENIGN_NON_ENHANCING:
        return 0.0, "none"
    strength = 0.04 + 0.20 * aggressiveness + (0.06 if malignant else 0.0)
    strength = float(np.clip(strength + rng.normal(0.0, 0.08), 0.02, 0.6))
    patterns, weights = ("heterogeneous", "rim", "homogeneous"), PATTERN_PROBABILITIES[label]
    return strength, str(rng.choice(patterns, p=weights))


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

    body: np.ndarray  # float32 [0, 1]: soft mask of the mass as LE shows it (blurred margin)
    enhancing: np.ndarray  # float32 [0, 1]: the mass with a sharp margin, where DES enhances
    spicules: np.ndarray  # float32 [0, 1]: spicules (aggressive lesions only)
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
    reach = int(np.ceil(radius_px * (3.0 if spec.spicules else 1.8) + 4 * spec.margin_blur)) + 2
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
    body_patch = expit((1.0 - relative) / (edge * spec.margin_blur))
    enhancing_patch = expit((1.0 - relative) / edge)
    spicule_patch = np.zeros_like(rho)
    width = max(0.8, 1.0 / anatomy.spacing_mm)
    for angle, length in spec.spicules:
        along = np.cos(angle) * cols + np.sin(angle) * rows
        across = -np.sin(angle) * cols + np.cos(angle) * rows
        taper = np.clip(1.0 - along / (length * radius_px), 0.0, 1.0) * (along > 0)
        spicule_patch = np.maximum(spicule_patch, taper * np.exp(-((across / width) ** 2)))
    body = np.zeros(shape, dtype=np.float32)
    enhancing = np.zeros(shape, dtype=np.float32)
    spicules = np.zeros(shape, dtype=np.float32)
    relative_full = np.full(shape, np.inf, dtype=np.float32)
    inside = anatomy.breast_mask[r0:r1, c0:c1]
    body[r0:r1, c0:c1] = body_patch * inside
    enhancing[r0:r1, c0:c1] = enhancing_patch * inside
    spicules[r0:r1, c0:c1] = spicule_patch * inside
    relative_full[r0:r1, c0:c1] = relative
    return LesionMaps(body, enhancing, spicules, relative_full, centre)
