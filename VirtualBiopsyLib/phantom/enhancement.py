"""Image formation of the phantom: the LE image and the dual-energy subtracted (DES) image.

Both are composed from the same :class:`~.anatomy.ViewAnatomy` and lesion, so LE and DES of
a view are pixel-aligned. What DES shows is only partly predictable from LE:

- LE: fat, fibroglandular tissue, pectoral muscle, skin line and the lesion, whose
  density, size, margin irregularity, spiculation and margin blur grow with its latent
  aggressiveness (see :mod:`.lesion`); its density is masked where tissue is dense, so in
  dense breasts it nearly vanishes;
- DES: a low, flat anatomical background, background parenchymal enhancement (BPE) at a
  random level per patient, enhancing vessels, and lesion enhancement whose strength
  follows partly the aggressiveness (hence partly predictable from LE morphology) and
  partly the label and chance, with a label-dependent pattern (malignant: heterogeneous,
  rim or homogeneous; benign: homogeneous, sometimes heterogeneous, or none). BPE,
  vessels and the DES-only part of the enhancement are not visible in LE.

Values are presentation-space floats (0 = black, 1 = white), as a radiologist sees them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from VirtualBiopsyLib.phantom.anatomy import ViewAnatomy, power_law_noise
from VirtualBiopsyLib.phantom.lesion import LesionMaps, LesionSpec

#: BPE levels (minimal, mild, moderate, marked) and their added DES brightness.
BPE_LEVELS: dict[str, float] = {"minimal": 0.02, "mild": 0.06, "moderate": 0.11, "marked": 0.17}
_BPE_PROBABILITIES = {  # denser breasts tend to enhance more
    "a": (0.55, 0.30, 0.10, 0.05),
    "b": (0.40, 0.35, 0.17, 0.08),
    "c": (0.30, 0.35, 0.22, 0.13),
    "d": (0.25, 0.30, 0.25, 0.20),
}
#: How much of the lesion's LE density dense tissue hides (1 − this × glandular is left).
LE_DENSITY_MASKING = 0.8
LATE_PHASE_FACTOR = {"malignant": 0.75, "benign": 1.25}  # washout versus persistent uptake


def draw_bpe_level(rng: np.random.Generator, acr_density: str) -> str:
    """Background parenchymal enhancement category of one breast."""
    return str(rng.choice(list(BPE_LEVELS), p=_BPE_PROBABILITIES[acr_density]))


@dataclass
class ViewComponents:
    """Everything needed to form the LE and DES images of one view (canonical frame)."""

    anatomy: ViewAnatomy
    lesion: LesionSpec
    lesion_maps: LesionMaps
    vessels: np.ndarray  # float32 [0, 1]
    bpe_texture: np.ndarray  # float32 [0, 1]: where the glandular tissue enhances
    bpe_level: str
    heterogeneity: np.ndarray  # float32 [0, 1]: texture of heterogeneous enhancement (else 1)


def draw_vessels(rng: np.random.Generator, anatomy: ViewAnatomy) -> np.ndarray:
    """A few curved vessels running from the chest wall towards the nipple."""
    shape = anatomy.breast_mask.shape
    factor = max(1, int(np.ceil(max(shape) / 384)))
    coarse = np.zeros((-(-shape[0] // factor), -(-shape[1] // factor)), dtype=np.float32)
    nipple = np.array(anatomy.nipple_rc) / factor
    t = np.linspace(0.0, 1.0, 600)[:, None]
    for _ in range(int(rng.integers(2, 6))):
        start = np.array([nipple[0] + rng.uniform(-0.35, 0.35) * coarse.shape[0], 0.0])
        end = nipple + np.array(
            [rng.uniform(-0.15, 0.15) * coarse.shape[0], -rng.uniform(0.05, 0.3) * nipple[1]]
        )
        bend = (start + end) / 2 + rng.normal(0, 0.08, 2) * coarse.shape
        points = (1 - t) ** 2 * start + 2 * (1 - t) * t * bend + t**2 * end
        rr = np.clip(np.round(points[:, 0]).astype(int), 0, coarse.shape[0] - 1)
        cc = np.clip(np.round(points[:, 1]).astype(int), 0, coarse.shape[1] - 1)
        coarse[rr, cc] = 1.0
    coarse = ndimage.gaussian_filter(coarse, sigma=0.8)
    coarse /= coarse.max() + 1e-6
    full = ndimage.zoom(coarse, factor, output=np.float32, order=1, grid_mode=True, mode="nearest")
    return (full[: shape[0], : shape[1]] * anatomy.breast_mask).astype(np.float32)


def draw_view_components(
    rng: np.random.Generator,
    anatomy: ViewAnatomy,
    lesion: LesionSpec,
    lesion_maps: LesionMaps,
    bpe_level: str,
) -> ViewComponents:
    """Random vessels and enhancement textures of one view."""
    shape = anatomy.breast_mask.shape
    vessels = draw_vessels(rng, anatomy)
    bpe_texture = np.clip(0.5 + 0.35 * power_law_noise(rng, shape, beta=2.2), 0.0, 1.0)
    heterogeneity = np.ones(shape, dtype=np.float32)
    if lesion.pattern == "heterogeneous":  # only the lesion's bounding box needs texture
        rows, cols = np.nonzero(lesion_maps.enhancing > 0.01)
        if rows.size:
            box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
            patch = power_law_noise(rng, heterogeneity[box].shape, beta=1.6)
            heterogeneity[box] = np.clip(0.55 + 0.45 * patch, 0.0, 1.0)
    return ViewComponents(
        anatomy, lesion, lesion_maps, vessels, bpe_texture, bpe_level, heterogeneity
    )


def form_low_energy(components: ViewComponents, rng: np.random.Generator) -> np.ndarray:
    """LE image: tissue attenuation; lesion density masked by dense tissue."""
    anatomy, lesion = components.anatomy, components.lesion
    maps = components.lesion_maps
    masking = 1.0 - LE_DENSITY_MASKING * anatomy.glandular
    lesion_density = lesion.le_density * masking * (maps.body + 0.7 * maps.spicules)
    tissue = (
        0.20
        + 0.24 * anatomy.thickness
        + 0.36 * anatomy.glandular
        + 0.34 * anatomy.pectoral
        + 0.10 * anatomy.skin
        + 0.03 * components.vessels
        + lesion_density
    )
    image = np.where(anatomy.breast_mask, tissue, 0.02)
    image = image + rng.normal(0.0, 0.012, image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def lesion_enhancement(components: ViewComponents) -> np.ndarray:
    """DES lesion enhancement inside the sharp tumour margin (see module docstring)."""
    lesion, maps = components.lesion, components.lesion_maps
    if lesion.pattern == "none" or lesion.enhancement <= 0:
        return np.zeros_like(maps.enhancing)
    if lesion.pattern == "rim":
        weight = 0.25 + 0.75 * np.clip((maps.relative_radius - 0.5) / 0.35, 0.0, 1.0)
    elif lesion.pattern == "heterogeneous":
        weight = components.heterogeneity
    else:
        weight = np.ones_like(maps.enhancing)
    return (lesion.enhancement * weight * maps.enhancing).astype(np.float32)


def form_subtracted(
    components: ViewComponents,
    rng: np.random.Generator,
    phase: str = "early",
) -> np.ndarray:
    """DES image: flat background, BPE, vessels and the lesion's enhancement."""
    anatomy = components.anatomy
    phase_factor = 1.0 if phase == "early" else LATE_PHASE_FACTOR[components.lesion.label]
    bpe = BPE_LEVELS[components.bpe_level] * (1.0 if phase == "early" else 1.3)
    tissue = (
        0.30
        + 0.03 * anatomy.glandular
        - 0.06 * (1.0 - anatomy.thickness)
        + 0.05 * anatomy.pectoral
        + 0.10 * anatomy.skin
        + bpe * anatomy.glandular * components.bpe_texture
        + 0.09 * components.vessels
        + phase_factor * lesion_enhancement(components)
    )
    image = np.where(anatomy.breast_mask, tissue, 0.10)
    image = image + rng.normal(0.0, 0.02, image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def form_high_energy(low_energy: np.ndarray, subtracted: np.ndarray) -> np.ndarray:
    """High-energy image (written, never used): a blend with lower tissue contrast."""
    return np.clip(0.55 * low_energy + 0.45 * subtracted, 0.0, 1.0).astype(np.float32)
