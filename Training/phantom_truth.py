"""Ground truth of a phantom cohort, on the network's grid: lesion and breast masks, latents.

The phantom is deterministic, so a cohort's breasts can be rendered again from its seed
and plan (:func:`VirtualBiopsyLib.phantom.cohort.render_patient`) to recover what the
files do not carry: where the lesion is, its latent aggressiveness (which drives what LE
shows) and its DES enhancement. Masks are resampled with each image's own preprocessing
geometry, so they lie on the arrays the networks see.

Lesion contrast (:func:`Training.metrics.lesion_contrast`, the one definition that
training's test metrics use too) measures whether a DES, real or synthetic, shows the
lesion. The hand feature is the brightest DES pixel of the eroded breast minus the breast's
median: no fitting, so it bounds what a DES image shows without any training.

>>> truth = phantom_truth(cases, patients=60, seed=2027,
...                       params=PreprocessingParams(size=64))  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from Training.datasets import TrainingCase
from Training.metrics import RING_PIXELS
from Training.phantom_bounds import lesion_features
from VirtualBiopsyLib.images.preprocessing import PreprocessingParams, preprocess
from VirtualBiopsyLib.images.readers import read_image
from VirtualBiopsyLib.phantom.plan import plan_cohort, render_patient
from VirtualBiopsyLib.roles import VIEWS, slot_name

#: The hand feature ignores this many pixels next to the skin line (bright skin).
EROSION_PIXELS = 3
#: :func:`radial_profile` measures this many one-pixel rings out from the lesion's centre.
PROFILE_RINGS = 10


@dataclass
class CaseTruth:
    """What the phantom put into one breast, on the preprocessed grid of each slot."""

    label: int
    aggressiveness: float
    enhancement: float  # DES enhancement strength (0 for non-enhancing lesions)
    pattern: str
    diameter_mm: float
    features: dict[str, float] = field(default_factory=dict)  # phantom_bounds.lesion_features
    lesion_masks: dict[str, np.ndarray] = field(default_factory=dict)  # per slot, bool
    breast_masks: dict[str, np.ndarray] = field(default_factory=dict)  # per slot, bool


def phantom_truth(
    cases: list[TrainingCase],
    patients: int,
    seed: int,
    params: PreprocessingParams,
    size: str = "small",
) -> dict[str, CaseTruth]:
    """``{case key: CaseTruth}`` for the cases of a phantom cohort written with these settings."""
    by_identity = {(case.patient_id, case.laterality): case for case in cases}
    truth: dict[str, CaseTruth] = {}
    for plan in plan_cohort(patients, seed):
        patient_id = f"PHANTOM-{plan.number:04d}"
        for breast in render_patient(plan, seed, size):
            case = by_identity.get((patient_id, breast.laterality.value))
            if case is None:
                continue
            lesion = breast.lesion
            record = CaseTruth(
                label=case.label,
                aggressiveness=lesion.aggressiveness,
                enhancement=lesion.enhancement if lesion.pattern != "none" else 0.0,
                pattern=lesion.pattern,
                diameter_mm=lesion.diameter_mm,
                features=lesion_features(lesion, np.mean(list(breast.glandular_fraction.values()))),
            )
            for view in VIEWS:
                for modality in ("LE", "DES"):
                    slot = slot_name(modality, view)
                    path = case.slots.get(slot)
                    if path is None:
                        continue
                    geometry = preprocess(read_image(path), params).geometry
                    lesion_map = geometry.map_to_preprocessed(breast.lesion_masks[view.value])
                    breast_map = geometry.map_to_preprocessed(breast.breast_masks[view.value])
                    record.lesion_masks[slot] = lesion_map >= 0.5
                    record.breast_masks[slot] = breast_map >= 0.5
            truth[case.key] = record
    return truth


def hand_feature(des: np.ndarray, breast: np.ndarray) -> float:
    """Brightest DES pixel of the eroded breast minus the breast median (no fitting)."""
    inner = ndimage.binary_erosion(breast, iterations=EROSION_PIXELS)
    if not inner.any():
        return float("nan")
    return float(des[inner].max() - np.median(des[breast]))


#: What :func:`lesion_measurements` measures, in its order.
MEASUREMENTS = ("contrast", "surround", "peak", "rim", "area", "edge", "ring_texture")


def lesion_measurements(image: np.ndarray, lesion: np.ndarray, breast: np.ndarray) -> np.ndarray:
    """Measurements of an image where its lesion is known (the phantom's mask), on the
    network's grid: what a classifier could read from the pixels if it knew the location.

    contrast: lesion mean − ring mean; surround: ring mean − the mean of the band beyond
    it (blurred margins and spicules spill outwards); peak: the lesion's 90th percentile −
    ring mean; rim: the lesion's one-pixel shell mean − its core mean (0 without a core);
    area: lesion pixels; edge: mean gradient magnitude on the margin (sharp or blurred);
    ring_texture: standard deviation of the high-pass image in the ring (spicules).
    NaN everywhere without a lesion or a ring inside the breast.
    """
    ring = ndimage.binary_dilation(lesion, iterations=RING_PIXELS) & ~lesion & breast
    if not lesion.any() or not ring.any():
        return np.full(len(MEASUREMENTS), np.nan)
    beyond = ndimage.binary_dilation(lesion, iterations=3 * RING_PIXELS) & breast
    beyond &= ~ndimage.binary_dilation(lesion, iterations=RING_PIXELS)
    core = ndimage.binary_erosion(lesion)
    margin = ndimage.binary_dilation(lesion) & ~core
    ring_mean = image[ring].mean()
    gradient = ndimage.gaussian_gradient_magnitude(image, sigma=1.0)
    high_pass = image - ndimage.gaussian_filter(image, sigma=2.0)
    return np.array(
        [
            image[lesion].mean() - ring_mean,
            ring_mean - image[beyond].mean() if beyond.any() else 0.0,
            np.percentile(image[lesion], 90) - ring_mean,
            image[lesion & ~core].mean() - image[core].mean() if core.any() else 0.0,
            float(lesion.sum()),
            gradient[margin].mean(),
            high_pass[ring].std(),
        ]
    )


def radial_profile(image: np.ndarray, lesion: np.ndarray, breast: np.ndarray) -> np.ndarray:
    """Mean and standard deviation of the breast's pixels in :data:`PROFILE_RINGS`
    one-pixel rings around the lesion's centre, each mean taken relative to the band just
    beyond them (three pixels wide): how the image falls off from the lesion outwards,
    whatever its outline. ``[mean_0, sd_0, mean_1, sd_1, ...]``; NaN where a ring holds no
    breast pixel, all NaN without a lesion.

    >>> yy, xx = np.indices((40, 40))
    >>> disc = (np.hypot(yy - 20, xx - 20) < 4).astype(float)
    >>> profile = radial_profile(disc, disc > 0, np.ones((40, 40), bool))
    >>> float(profile[0]), float(profile[-2])
    (1.0, 0.0)
    """
    values = np.full(2 * PROFILE_RINGS, np.nan)
    if not lesion.any():
        return values
    centre_row, centre_col = ndimage.center_of_mass(lesion)
    rows, cols = np.indices(image.shape)
    radius = np.hypot(rows - centre_row, cols - centre_col)
    beyond = (radius >= PROFILE_RINGS) & (radius < PROFILE_RINGS + 3) & breast
    reference = image[beyond].mean() if beyond.any() else 0.0
    for ring in range(PROFILE_RINGS):
        pixels = image[(radius >= ring) & (radius < ring + 1) & breast]
        if pixels.size:
            values[2 * ring : 2 * ring + 2] = pixels.mean() - reference, pixels.std()
    return values
