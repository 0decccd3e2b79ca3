"""The in-memory phantom: anatomy, lesion and enhancement behave as the design says."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage, stats
from skimage.measure import regionprops

from VirtualBiopsyLib.phantom import render_breast, render_exam
from VirtualBiopsyLib.phantom.anatomy import IMAGE_SHAPES, power_law_noise
from VirtualBiopsyLib.phantom.lesion import draw_enhancement
from VirtualBiopsyLib.roles import SLOTS

SEEDS = range(10)


def _image_mask(image: np.ndarray, threshold: float) -> np.ndarray:
    """The breast as seen in an image: smoothed intensity above the background."""
    return ndimage.gaussian_filter(image, 1.5) > threshold


def _lesion_contrast(image: np.ndarray, lesion: np.ndarray, breast: np.ndarray) -> float:
    """Mean inside the lesion minus mean of a ring of breast tissue around it."""
    ring = (
        ndimage.binary_dilation(lesion, iterations=8)
        & ~ndimage.binary_dilation(lesion, iterations=3)
        & breast
    )
    return float(image[lesion].mean() - image[ring].mean())


def test_render_exam_gives_four_slots_in_presentation_range():
    images = render_exam(0, "malignant", "b")
    assert sorted(images) == sorted(SLOTS)
    for image in images.values():
        assert image.shape == IMAGE_SHAPES["small"]
        assert image.dtype == np.float32
        assert image.min() >= 0.0 and image.max() <= 1.0


def test_same_seed_same_pixels_other_seed_other_pixels():
    first, again = render_exam(11, "benign", "c"), render_exam(11, "benign", "c")
    other = render_exam(12, "benign", "c")
    for slot in SLOTS:
        assert np.array_equal(first[slot], again[slot])
        assert not np.array_equal(first[slot], other[slot])


@pytest.mark.parametrize("laterality", ["L", "R"])
def test_le_and_des_of_a_view_are_aligned(laterality):
    breast = render_breast(3, "malignant", "c", laterality=laterality)
    for view in ("CC", "MLO"):
        le_mask = _image_mask(breast.images[f"LE_{view}"], 0.12)
        des_mask = _image_mask(breast.images[f"DES_{view}"], 0.18)
        iou = (le_mask & des_mask).sum() / (le_mask | des_mask).sum()
        assert iou > 0.95, f"{laterality} {view}: IoU {iou:.3f}"


@pytest.mark.parametrize(("laterality", "chest_wall_side"), [("L", "left"), ("R", "right")])
def test_chest_wall_side_follows_dicom_convention(laterality, chest_wall_side):
    breast = render_breast(4, "benign", "b", laterality=laterality)
    for view in ("CC", "MLO"):
        mask = breast.breast_masks[view]
        left_column, right_column = mask[:, 0].mean(), mask[:, -1].mean()
        if chest_wall_side == "left":
            assert left_column > 0.4 and right_column == 0.0
        else:
            assert right_column > 0.4 and left_column == 0.0


def test_lesion_has_same_nipple_distance_in_both_views():
    for seed in SEEDS:
        breast = render_breast(seed, "malignant", "b")
        distance = breast.nipple_distance_mm
        assert abs(distance["CC"] - distance["MLO"]) < 1.0
        for view in ("CC", "MLO"):
            assert (breast.lesion_masks[view] & breast.breast_masks[view]).sum() > 10


def test_glandular_fraction_rises_with_acr_category():
    means = []
    for category in "abcd":
        fractions = [
            render_breast(seed, "benign", category).glandular_fraction["CC"] for seed in range(4)
        ]
        means.append(np.mean(fractions))
    assert all(low < high for low, high in zip(means, means[1:], strict=False)), means
    assert means[0] < 0.2 and means[-1] > 0.6


def test_des_enhancement_is_stronger_for_malignant_than_benign():
    contrast = {}
    for label in ("malignant", "benign"):
        values = []
        for seed in SEEDS:
            breast = render_breast(seed, label, "b")
            values.append(
                _lesion_contrast(
                    breast.images["DES_CC"], breast.lesion_masks["CC"], breast.breast_masks["CC"]
                )
            )
        contrast[label] = np.mean(values)
    assert contrast["malignant"] > contrast["benign"] + 0.05, contrast


def test_le_lesion_is_masked_by_dense_tissue():
    def mean_le_contrast(category: str) -> float:
        values = []
        for seed in SEEDS:
            breast = render_breast(seed, "malignant", category)
            lesion, body = breast.lesion_masks["CC"], breast.breast_masks["CC"]
            values.append(abs(_lesion_contrast(breast.images["LE_CC"], lesion, body)))
        return float(np.mean(values))

    # The DES contrast of the same lesions does not depend on density; LE contrast does.
    assert mean_le_contrast("d") < 0.6 * mean_le_contrast("a")


def _margin_irregularity(lesion_mask: np.ndarray) -> float:
    """1 − solidity of the lesion as outlined in LE: 0 for a convex (oval) mass."""
    return 1.0 - float(regionprops(lesion_mask.astype(np.uint8))[0].solidity)


def _des_enhancement(breast) -> float:
    """Mean DES inside the lesion above the breast's median DES (its background)."""
    des, lesion = breast.images["DES_CC"], breast.lesion_masks["CC"]
    return float(des[lesion].mean() - np.median(des[breast.breast_masks["CC"]]))


def test_le_morphology_carries_part_of_the_malignancy_and_of_the_des_enhancement():
    """Malignant masses look more irregular in LE; DES enhancement follows that only in part."""
    irregularity, enhancement, malignant = [], [], []
    for seed in range(24):
        for label in ("malignant", "benign"):
            breast = render_breast(100 + seed, label, "abcd"[seed % 4])
            irregularity.append(_margin_irregularity(breast.lesion_masks["CC"]))
            enhancement.append(_des_enhancement(breast))
            malignant.append(label == "malignant")
    irregularity, enhancement = np.array(irregularity), np.array(enhancement)
    malignant = np.array(malignant)
    mean_malignant, mean_benign = irregularity[malignant].mean(), irregularity[~malignant].mean()
    assert mean_malignant > 1.5 * mean_benign, (mean_malignant, mean_benign)
    # ... but the classes overlap: some benign masses are more irregular than some malignant.
    assert irregularity[~malignant].max() > np.percentile(irregularity[malignant], 25)
    rho = stats.spearmanr(irregularity, enhancement)[0]
    assert 0.15 < rho < 0.8, rho


def test_enhancement_depends_on_aggressiveness_and_on_the_label_alone():
    """Two sources: the LE-visible aggressiveness, and the label (seen only in DES)."""

    def mean_strength(label: str, aggressiveness: float) -> float:
        rng = np.random.default_rng(5)
        return float(np.mean([draw_enhancement(rng, label, aggressiveness)[0] for _ in range(400)]))

    for label in ("malignant", "benign"):
        assert mean_strength(label, 0.9) > mean_strength(label, 0.1) + 0.1
    for aggressiveness in (0.2, 0.8):
        assert mean_strength("malignant", aggressiveness) > mean_strength("benign", aggressiveness)


def test_late_phase_and_high_energy_images_when_asked():
    breast = render_breast(2, "malignant", "c", late_phase=True, high_energy=True)
    assert sorted(breast.late_images) == ["DES_CC", "LE_CC"]
    assert sorted(breast.high_energy) == ["CC", "MLO"]
    assert not np.array_equal(breast.late_images["DES_CC"], breast.images["DES_CC"])


def test_power_law_noise_has_the_requested_spectral_slope():
    noise = power_law_noise(np.random.default_rng(0), (256, 256), beta=3.0)
    power = np.abs(np.fft.fft2(noise)) ** 2
    freq = np.hypot(*np.meshgrid(np.fft.fftfreq(256), np.fft.fftfreq(256), indexing="ij"))
    band = (freq > 0.02) & (freq < 0.3)
    slope = np.polyfit(np.log(freq[band]), np.log(power[band]), 1)[0]
    assert -3.5 < slope < -2.5
    assert abs(noise.mean()) < 1e-3 and abs(noise.std() - 1.0) < 1e-3


def test_unknown_label_or_density_is_refused():
    with pytest.raises(ValueError, match="label"):
        render_exam(0, "normal", "b")
    with pytest.raises(ValueError, match="ACR"):
        render_exam(0, "benign", "e")


def test_full_size_has_detector_geometry_and_same_anatomy_in_mm():
    small = render_breast(21, "malignant", "c", size="small")
    full = render_breast(21, "malignant", "c", size="full")
    assert full.images["DES_MLO"].shape == (2850, 2396) and full.spacing_mm == 0.1
    assert abs(full.nipple_distance_mm["CC"] - small.nipple_distance_mm["CC"]) < 2.0
    assert abs(full.glandular_fraction["CC"] - small.glandular_fraction["CC"]) < 0.08


def test_le_predicts_des_only_in_part():
    """LE and DES share anatomy (correlated) but DES is far from a function of LE."""
    for seed in range(4):
        breast = render_breast(seed, "malignant", "abcd"[seed])
        inside = breast.breast_masks["CC"]
        le, des = breast.images["LE_CC"][inside], breast.images["DES_CC"][inside]
        correlation = np.corrcoef(le, des)[0, 1]
        assert 0.2 < correlation < 0.8, correlation
