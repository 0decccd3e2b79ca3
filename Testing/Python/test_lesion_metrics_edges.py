"""Lesion-region metrics at their edges: damaged mask cache entries, lesions too small for
the network's grid, the r's count over folds, and a breast mask beside a bright object."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from Training.cache import PreprocessedCache
from Training.datasets import ImagePair
from Training.lesion_masks import SIZE_DIFFERS, pair_lesion_masks
from VirtualBiopsyLib.images.mammogram import ImageInfo, MammogramImage
from VirtualBiopsyLib.images.preprocessing import PreprocessingParams, preprocess
from VirtualBiopsyLib.roles import View

SHAPE = (600, 450)


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _des(folder: Path) -> Path:
    """A right CC DES: a textured half-ellipse breast on black."""
    rows, cols = np.indices(SHAPE)
    breast = ((rows - 300) / 280) ** 2 + (cols / 400) ** 2 < 1
    texture = np.random.default_rng(0).integers(80, 140, SHAPE)
    return _png(folder / "P1_R_CM_CC.png", np.where(breast, texture, 0).astype(np.uint8))


def _mask(path: Path, radius: float) -> Path:
    rows, cols = np.indices(SHAPE)
    return _png(path, ((np.hypot(rows - 300, cols - 120) < radius) * 255).astype(np.uint8))


def _pairs(des: Path, *masks: Path) -> list[ImagePair]:
    return [ImagePair("P1", View.CC, des, des, 1, None, mask) for mask in masks]


def test_damaged_mask_and_image_entries_are_rebuilt_not_a_crash(tmp_path: Path, caplog) -> None:
    """An empty entry (a full disk, a killed copy) or a refusal record that does not parse
    is built again, as any bad cache entry is; the figures are those of a cold cache."""
    des = _des(tmp_path)
    good = _mask(tmp_path / "good.png", 40)
    small = _png(tmp_path / "small.png", np.zeros((30, 20), np.uint8))
    params = PreprocessingParams(size=64)
    cold = pair_lesion_masks(
        _pairs(des, good, small), PreprocessedCache(tmp_path / "c", params), des
    )
    PreprocessedCache(tmp_path / "c", params).load_many([des])
    for entry in (tmp_path / "c").rglob("*.npy"):
        entry.write_bytes(b"")
    for entry in (tmp_path / "c").rglob("*.refused.json"):
        entry.write_text("{")
    with caplog.at_level(logging.WARNING, logger="Training.cache"):
        cache = PreprocessedCache(tmp_path / "c", params)
        assert cache.load_many([des])[des].shape == (64, 64)
        warm = pair_lesion_masks(_pairs(des, good, small), cache, des)
    assert np.array_equal(warm.masks[0], cold.masks[0]) and warm.masks[1] is None
    assert warm.record() == cold.record() and warm.refused == {SIZE_DIFFERS: 1}
    assert any("rebuilding" in m for m in caplog.messages)
    for entry in (tmp_path / "c").rglob("*.refused.json"):
        entry.write_text(json.dumps({"reason": "elsewhere"}))  # another format's record
    again = pair_lesion_masks(_pairs(des, small), PreprocessedCache(tmp_path / "c", params), des)
    assert again.refused == {SIZE_DIFFERS: 1}


def test_a_lesion_too_small_for_the_grid_is_counted_with_a_warning(tmp_path: Path, caplog) -> None:
    """A 3-mm lesion of a full-size image covers no 64² pixel by half: it is annotated, but
    no lesion figure is over it, and the record and the log say so; an all-zero mask
    (annotated, no lesion) is not counted as one."""
    des = _des(tmp_path)
    tiny, big = _mask(tmp_path / "tiny.png", 4), _mask(tmp_path / "big.png", 40)
    empty = _png(tmp_path / "empty.png", np.zeros(SHAPE, np.uint8))
    cache = PreprocessedCache(tmp_path / "c", PreprocessingParams(size=64))
    with caplog.at_level(logging.WARNING, logger="Training.lesion_masks"):
        masks = pair_lesion_masks(_pairs(des, tiny, empty, big), cache, tmp_path / "m.csv")
    assert [bool(m.any()) for m in masks.masks] == [False, False, True]
    assert masks.record()["annotated"] == 3 and masks.record()["too_small_for_grid"] == 1
    assert sum("tiny.png" in m and "too small" in m for m in caplog.messages) == 1
    assert not any("empty.png" in m for m in caplog.messages)


def _fold(run: Path, fold: int, pairs: int, r: float | None) -> None:
    folder = run / f"fold_{fold}" / "generators" / "CC"
    folder.mkdir(parents=True)
    test = {"mse": 0.01, "psnr": 20.0, "ssim": 0.5, "lesion_images": pairs, "lesion_mae": 0.1}
    test |= {"lesion_contrast_pairs": pairs, "lesion_contrast_real": 0.2}
    test |= {"lesion_contrast_synthetic": 0.1, "lesion_contrast_r": r}
    (folder / "result.json").write_text(json.dumps({"fold": fold, "test_generation": test}))


def test_the_r_of_table_3_counts_the_pairs_of_the_folds_that_have_an_r(tmp_path: Path) -> None:
    """A fold with 2 pairs has no r (null): its pairs are behind the mean contrast, not
    behind the mean r; n says how many pairs each figure rests on."""
    from Training.metrics import LESION_COLUMNS, lesion_cells
    from Training.run import generation_summary

    _fold(tmp_path, 0, 2, None)
    _fold(tmp_path, 1, 10, 0.5)
    summary = generation_summary(tmp_path)["CC"]
    assert summary["lesion_contrast_r"][0] == 0.5 and summary["lesion_contrast_r_pairs"] == 10
    assert summary["lesion_contrast_pairs"] == 12 and summary["lesion_images"] == 12
    titles = [title for title, _, _ in LESION_COLUMNS]
    cells = dict(zip(titles, lesion_cells(summary), strict=True))
    assert cells["r of lesion contrast, real vs synthetic"] == "0.500 (n 10)"
    assert cells["MAE in lesion"].endswith("(n 12)")


def test_a_bright_object_in_the_background_does_not_make_the_image_all_breast() -> None:
    """A marker or unexposed band larger than the dense tissue takes Otsu's first split;
    the background is then inside the darker class, and the breast must stay the breast
    (not every non-zero pixel, as for an LE cropped to the breast)."""
    from Training.generator_training import breast_mask
    from VirtualBiopsyLib.phantom import render_breast

    breast = render_breast(1, "malignant", "a", laterality="L")
    pixels = breast.images["LE_CC"].astype(np.float32)
    inside = breast.breast_masks["CC"]
    rows, cols = pixels.shape
    band = (slice(rows - 200, rows - 20), slice(cols - 55, cols - 5))  # 8 % of the image
    assert not inside[band].any()
    pixels[band] = 1.5 * pixels.max()
    info = ImageInfo(Path("x.dcm"), "dicom", laterality="L")
    for size in (64, 128):
        processed = preprocess(MammogramImage(info, pixels), PreprocessingParams(size=size))
        truth = processed.geometry.map_to_preprocessed(inside.astype(np.float32)) >= 0.5
        found = breast_mask(processed.array)
        assert (found & truth).sum() >= 0.95 * truth.sum()
        assert (found & ~truth).sum() <= 0.02 * size * size


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_the_breast_mask_of_whole_phantom_images_keeps_the_otsu_mask(seed: int) -> None:
    """Where Otsu's darker class is background, the mask is exactly Otsu's (unchanged)."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    from Training.generator_training import breast_mask
    from VirtualBiopsyLib.phantom import render_breast

    breast = render_breast(seed, "benign", "abcd"[seed - 1], laterality="LR"[seed % 2])
    info = ImageInfo(Path("x.dcm"), "dicom", laterality=breast.laterality)
    for view in ("CC", "MLO"):
        pixels = breast.images[f"LE_{view}"].astype(np.float32)
        le = preprocess(MammogramImage(info, pixels), PreprocessingParams(size=128)).array
        labels, _ = ndimage.label(le > threshold_otsu(le))
        largest = 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
        assert np.array_equal(breast_mask(le), ndimage.binary_fill_holes(labels == largest))


def test_a_palette_mask_is_read_as_it_looks_not_by_its_indices(tmp_path) -> None:
    """A palette PNG whose index 0 is white: its black pixels are outside the lesion."""
    from PIL import Image

    from Training.lesion_masks import read_lesion_mask

    pixels = np.zeros((6, 8), np.uint8)
    pixels[2:4, 3:6] = 1  # a block of index 1; the palette shows index 0 white, 1 black
    image = Image.fromarray(pixels, mode="P")
    image.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)  # 0 white, 1 black
    image.save(tmp_path / "mask.png")
    mask = read_lesion_mask(tmp_path / "mask.png")
    assert mask.sum() == 48 - 6 and not mask[2:4, 3:6].any()  # white (non-zero) everywhere else
