"""Lesion-region generation metrics on any data set with lesion masks (manifest column
``lesion_mask``): masks on the network's grid, refusals, the cache, the metrics, the
generator's ``result.json`` and the tables; and a breast mask that survives cropped LE."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from toy_training import toy_config, toy_loader, write_cohort

from Training.cache import PreprocessedCache
from Training.datasets import ImagePair, image_pairs, read_manifest
from Training.lesion_masks import (
    LE_SIZE_DIFFERS,
    MAX_NAMED_WARNINGS,
    NOT_2D,
    SIZE_DIFFERS,
    UNREADABLE,
    LesionMaskRefusedError,
    pair_lesion_masks,
)
from Training.metrics import lesion_contrast, lesion_contrast_summary, pearson_r
from VirtualBiopsyLib.images.mammogram import ImageInfo, MammogramImage
from VirtualBiopsyLib.images.preprocessing import PreprocessingParams, preprocess
from VirtualBiopsyLib.images.readers import read_image
from VirtualBiopsyLib.roles import View

SHAPE = (300, 200)  # rows × columns: not square, so padding and resize both matter


def _disc(shape: tuple[int, int], centre: tuple[int, int], radius: int) -> np.ndarray:
    rows, cols = np.indices(shape)
    return np.hypot(rows - centre[0], cols - centre[1]) < radius


def _write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _mammogram(folder: Path, name: str, lesion: np.ndarray) -> Path:
    """A CDD-CESM-named PNG: a grey half-ellipse breast on black with a bright lesion."""
    rows, cols = np.indices(SHAPE)
    chest_right = "_R_" in name
    wall = SHAPE[1] - 1 - cols if chest_right else cols
    breast = ((rows - 150) / 140) ** 2 + (wall / 170) ** 2 < 1
    texture = np.random.default_rng(0).integers(80, 140, SHAPE)
    pixels = np.where(breast, texture, 0).astype(np.uint8)
    pixels[lesion] = 250
    return _write_png(folder / name, pixels)


@pytest.mark.parametrize("name", ["P1_L_CM_CC.png", "P1_R_CM_CC.png"])
def test_a_mask_lands_on_the_preprocessed_lesion_of_its_image(tmp_path: Path, name: str) -> None:
    """Padding, resize and the flip of left breasts move the mask with the image."""
    lesion = _disc(SHAPE, (120, 60 if "_L_" in name else 140), 18)
    image = _mammogram(tmp_path, name, lesion)
    mask = _write_png(tmp_path / "mask.png", (lesion * 255).astype(np.uint8))
    params = PreprocessingParams(size=64)
    mapped = PreprocessedCache(tmp_path / "cache", params).lesion_mask(image, mask)
    bright = preprocess(read_image(image), params).array > 0.8
    assert mapped.dtype == bool and mapped.shape == (64, 64)
    overlap = (mapped & bright).sum() / (mapped | bright).sum()
    assert overlap > 0.8
    assert (np.fliplr(mapped) & bright).sum() < 0.2 * bright.sum()  # a flip error misses


class _CountingLoader:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, path: Path) -> MammogramImage:
        self.calls += 1
        return read_image(path)


def test_mapped_masks_are_cached_and_a_warm_cache_decodes_no_image(tmp_path: Path) -> None:
    lesion = _disc(SHAPE, (120, 60), 18)
    image = _mammogram(tmp_path, "P1_L_CM_CC.png", lesion)
    mask = _write_png(tmp_path / "mask.png", (lesion * 255).astype(np.uint8))
    params = PreprocessingParams(size=64)
    cold_loader, warm_loader = _CountingLoader(), _CountingLoader()
    cold = PreprocessedCache(tmp_path / "cache", params, cold_loader).lesion_mask(image, mask)
    warm = PreprocessedCache(tmp_path / "cache", params, warm_loader).lesion_mask(image, mask)
    assert cold_loader.calls == 1 and warm_loader.calls == 0
    assert np.array_equal(cold, warm)
    entries = list((tmp_path / "cache" / "masks").rglob("*.npy"))
    assert len(entries) == 1 and np.load(entries[0], allow_pickle=False).dtype == bool
    _write_png(mask, (np.roll(lesion, 40, axis=0) * 255).astype(np.uint8))  # edited mask
    moved = PreprocessedCache(tmp_path / "cache", params, warm_loader).lesion_mask(image, mask)
    assert warm_loader.calls == 1 and not np.array_equal(moved, cold)


def _pair(tmp_path: Path, des_mask: Path | None, le_mask: Path | None = None, le_shape=SHAPE):
    lesion = _disc(SHAPE, (120, 60), 18)
    des = _mammogram(tmp_path, "P1_L_CM_CC.png", lesion)
    le_lesion = _disc(le_shape, (120, 60), 18)
    rows, cols = le_shape
    texture = np.random.default_rng(1).integers(60, 120, le_shape)
    le = _write_png(tmp_path / "P1_L_DM_CC.png", np.where(le_lesion, 200, texture).astype(np.uint8))
    assert (rows, cols) == np.asarray(Image.open(le)).shape
    return ImagePair("P1", View.CC, le, des, 1, le_mask, des_mask)


def test_unusable_masks_are_refused_with_a_warning_and_counted(tmp_path: Path, caplog) -> None:
    """Unreadable, not 2-D, another size: a warning naming the mask and the manifest; the
    image counts as not annotated; the record counts reasons, never file names."""
    cache = PreprocessedCache(tmp_path / "cache", PreprocessingParams(size=64))
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    rgb = _write_png(tmp_path / "rgb.png", np.zeros((*SHAPE, 3), np.uint8))
    small = _write_png(tmp_path / "small.png", np.zeros((30, 20), np.uint8))
    good = _write_png(tmp_path / "good.png", (_disc(SHAPE, (120, 60), 18) * 255).astype(np.uint8))
    pairs = [
        _pair(tmp_path, broken),
        _pair(tmp_path, rgb),
        _pair(tmp_path, small),
        _pair(tmp_path, good),
        _pair(tmp_path, None),
    ]
    manifest = tmp_path / "manifest.csv"
    with caplog.at_level(logging.WARNING, logger="Training.lesion_masks"):
        masks = pair_lesion_masks(pairs, cache, manifest)
    assert [m is None for m in masks.masks] == [True, True, True, False, True]
    assert masks.record() == {
        "annotated": 1,
        "too_small_for_grid": 0,
        "refused": 3,
        "refused_by_reason": {NOT_2D: 1, SIZE_DIFFERS: 1, UNREADABLE: 1},
    }
    for name in ("broken.png", "rgb.png", "small.png"):
        assert any(name in m and str(manifest) in m for m in caplog.messages)
    with pytest.raises(LesionMaskRefusedError, match="mask \\(30, 20\\), image \\(300, 200\\)"):
        cache.lesion_mask(pairs[2].des_path, small)  # the cached refusal says the same


def test_a_missing_masks_folder_is_named_a_few_times_then_counted(tmp_path: Path, caplog) -> None:
    """A deleted masks folder refuses every mask: the first few are named, the rest said
    in one line (not a warning per image of a data set)."""
    cache = PreprocessedCache(tmp_path / "cache", PreprocessingParams(size=64))
    pairs = [_pair(tmp_path, tmp_path / "gone" / f"{n}.png") for n in range(12)]
    with caplog.at_level(logging.WARNING, logger="Training.lesion_masks"):
        masks = pair_lesion_masks(pairs, cache, tmp_path / "manifest.csv")
    assert masks.record()["refused_by_reason"] == {UNREADABLE: 12}
    named = [m for m in caplog.messages if "gone" in m]
    assert len(named) == MAX_NAMED_WARNINGS and len(caplog.messages) == MAX_NAMED_WARNINGS + 1
    assert f"{12 - MAX_NAMED_WARNINGS} more lesion masks refused" in caplog.messages[-1]


def test_the_le_mask_serves_a_des_of_the_same_shape_only(tmp_path: Path) -> None:
    cache = PreprocessedCache(tmp_path / "cache", PreprocessingParams(size=64))
    le_mask = _write_png(
        tmp_path / "le_mask.png", (_disc(SHAPE, (120, 60), 18) * 255).astype(np.uint8)
    )
    same = pair_lesion_masks([_pair(tmp_path, None, le_mask)], cache, tmp_path / "m.csv")
    assert same.annotated == 1 and same.masks[0].any()
    other = _pair(tmp_path / "other", None, le_mask, le_shape=(280, 200))
    refused = pair_lesion_masks([other], cache, tmp_path / "m.csv")
    assert refused.masks == [None] and refused.record()["refused_by_reason"] == {LE_SIZE_DIFFERS: 1}


def test_pairs_carry_their_label_and_masks(tmp_path: Path) -> None:
    manifest = write_cohort(tmp_path, 3, "P")
    _add_masks(manifest, les_only_for={"P01"})
    pairs = image_pairs(read_manifest(manifest).rows, "CC")
    assert [p.label for p in pairs] == [0, 1, 1]
    assert pairs[1].le_mask is not None and pairs[1].des_mask is None
    assert pairs[2].des_mask is not None and pairs[0].des_mask is not None


# --- metrics ----------------------------------------------------------------------------------


def test_lesion_contrast_summary_by_label_and_pearson_r_undefined_below_three_pairs() -> None:
    disc = _disc((16, 16), (8, 8), 3)
    image = np.where(disc, 0.9, 0.2)
    assert lesion_contrast(image, disc, np.ones((16, 16), bool)) == pytest.approx(0.7)
    assert math.isnan(lesion_contrast(image, np.zeros((16, 16), bool), np.ones((16, 16), bool)))
    pairs = [
        {"lesion_contrast_real": 0.1, "lesion_contrast_synthetic": 0.0},
        {"lesion_contrast_real": 0.5, "lesion_contrast_synthetic": 0.3},
        {"lesion_contrast_real": math.nan, "lesion_contrast_synthetic": 0.3},  # no ring
        {"mse": 0.1},  # no mask
    ]
    two = lesion_contrast_summary(pairs, [0, 1, 1, 0])
    assert two["lesion_contrast_pairs"] == 2 and math.isnan(two["lesion_contrast_r"])
    assert two["lesion_contrast_real_malignant"] == 0.5
    assert two["lesion_contrast_synthetic_benign"] == 0.0
    constant = [{"lesion_contrast_real": r, "lesion_contrast_synthetic": 0.2} for r in (1, 2, 3)]
    assert math.isnan(lesion_contrast_summary(constant, [1, 1, 1])["lesion_contrast_r"])
    none = lesion_contrast_summary([{"mse": 0.1}], [1])
    assert none["lesion_contrast_pairs"] == 0 and math.isnan(none["lesion_contrast_real"])
    assert pearson_r([1, 2, 3], [1, 2, 4]) > 0.9


# --- breast mask --------------------------------------------------------------------------------


def _otsu_breast(le: np.ndarray) -> np.ndarray:
    """The breast mask before it learnt about cropped images (the reference)."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    labels, count = ndimage.label(le > threshold_otsu(le))
    sizes = np.bincount(labels.ravel())[1:]
    return ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))


def test_breast_mask_of_whole_phantom_images_is_unchanged_and_a_cropped_le_keeps_fat() -> None:
    from Training.generator_training import breast_mask
    from VirtualBiopsyLib.phantom import render_breast

    was = []
    for seed, density in ((1, "a"), (2, "b"), (3, "c"), (4, "d")):
        breast = render_breast(seed, "malignant", density, laterality="LR"[seed % 2])
        for view in ("CC", "MLO"):
            info = ImageInfo(Path("x.dcm"), "dicom", laterality=breast.laterality)
            pixels = breast.images[f"LE_{view}"].astype(np.float32)
            le = preprocess(MammogramImage(info, pixels), PreprocessingParams(size=64)).array
            assert np.array_equal(breast_mask(le), _otsu_breast(le))
            inside = breast.breast_masks[view]
            rows, cols = np.nonzero(inside)
            window = (
                slice(int(np.percentile(rows, 20)), int(np.percentile(rows, 80))),
                slice(int(np.percentile(cols, 30)), int(np.percentile(cols, 90))),
            )
            crop = np.ascontiguousarray(pixels[window])  # the breast, little background
            cropped = preprocess(MammogramImage(info, crop), PreprocessingParams(size=64))
            true_breast = cropped.geometry.map_to_preprocessed(inside[window]) >= 0.5
            found = breast_mask(cropped.array)
            assert (found & true_breast).sum() >= 0.97 * true_breast.sum()
            assert (found & ~true_breast).sum() <= 80  # of the padding: one mixed column
            was.append((_otsu_breast(cropped.array) & true_breast).sum() / true_breast.sum())
    assert min(was) < 0.7  # Otsu alone lost fatty tissue (less in dense breasts)


# --- a tiny training run --------------------------------------------------------------------


def _add_masks(manifest: Path, les_only_for: set[str] = frozenset(), wrong_for=()) -> None:
    """Give every DES row a mask (malignant: the toy's bright spot; benign: a patch of
    background); patients in ``les_only_for`` have it on their LE rows instead;
    ``wrong_for`` get a mask of another size."""
    lines = manifest.read_text().splitlines()
    out = [lines[0] + ",lesion_mask"]
    for line in lines[1:]:
        fields = line.split(",")
        patient, modality, label = fields[0], fields[4], fields[6]
        want = "LE" if patient in les_only_for else "DES"
        mask = ""
        if modality == want:
            array = np.zeros((8, 8) if patient in wrong_for else (16, 16), np.uint8)
            if label == "malignant":
                array[6:10, 6:10] = 255
            else:
                array[3:7, 9:13] = 255
            name = f"masks/{patient}_{modality}_{fields[3]}.png"
            _write_png(manifest.parent / name, array)
            mask = name
        out.append(line + "," + mask)
    manifest.write_text("\n".join(out) + "\n")


def _strict(path: Path) -> dict:
    def refuse(name: str) -> None:
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.usefixtures("one_torch_thread")
def test_a_tiny_run_with_masks_reports_lesion_figures_with_counts_and_without_none(
    tmp_path: Path,
) -> None:
    from Training.experiments import generation_table, load_run
    from Training.run import generation_summary, train_run
    from Training.splits import load_splits

    with_masks = write_cohort(tmp_path / "masked", 15, "P")
    without = write_cohort(tmp_path / "plain", 15, "P")
    run = tmp_path / "run"
    train_run(with_masks, run, toy_config(), progress=False, loader=toy_loader, prepare_only=True)
    test = load_splits(run / "splits.json")[0].test
    from Training.datasets import patient_key

    tested = sorted(p for p in (f"P{i:02d}" for i in range(15)) if patient_key(p) in test)
    _add_masks(with_masks, les_only_for={tested[0]}, wrong_for={tested[1]})
    options = {"progress": False, "loader": toy_loader, "job": ["fold_0/G_CC"]}
    train_run(with_masks, tmp_path / "masked_run", toy_config(), **options)
    train_run(without, tmp_path / "plain_run", toy_config(), **options)

    result = _strict(tmp_path / "masked_run/fold_0/generators/CC/result.json")["test_generation"]
    annotated = len(tested) - 1
    assert result["lesion_masks"] == {
        "annotated": annotated,
        "too_small_for_grid": 0,
        "refused": 1,
        "refused_by_reason": {SIZE_DIFFERS: 1},
    }
    assert result["lesion_images"] == annotated
    assert all(result[m] is not None for m in ("lesion_mae", "lesion_mse", "lesion_psnr"))
    assert 0 < result["lesion_contrast_pairs"] <= annotated
    assert result["lesion_contrast_real"] is not None
    benign, malignant = (result[f"lesion_contrast_{n}_pairs"] for n in ("benign", "malignant"))
    assert benign + malignant == result["lesion_contrast_pairs"]
    if malignant and benign:  # the toy's malignant DES has a bright spot, its benign none
        assert result["lesion_contrast_real_malignant"] > result["lesion_contrast_real_benign"]

    plain = _strict(tmp_path / "plain_run/fold_0/generators/CC/result.json")["test_generation"]
    assert plain["lesion_images"] == 0 and plain["lesion_contrast_pairs"] == 0
    assert plain["lesion_mae"] is None and plain["lesion_contrast_r"] is None
    assert plain["lesion_masks"] == {
        "annotated": 0,
        "too_small_for_grid": 0,
        "refused": 0,
        "refused_by_reason": {},
    }
    for key in ("mse", "psnr", "ssim", "breast_mse", "breast_psnr", "images", "breast_images"):
        assert plain[key] == result[key]  # masks change no other figure

    summary = generation_summary(tmp_path / "masked_run")["CC"]
    assert summary["lesion_images"] == annotated and len(summary["lesion_mae"]) == 2
    assert "lesion_mae" not in generation_summary(tmp_path / "plain_run")["CC"]
    for name in ("masked_run", "plain_run"):  # tables need finished runs' files only
        (tmp_path / name / "predictions.csv").write_text(
            "fold,case,label,split,slot,source,probability,acr_density\n"
        )
        (tmp_path / name / "run.json").write_text("{}")
    header, rows = generation_table(
        [load_run(tmp_path / "masked_run", "masked"), load_run(tmp_path / "plain_run", "plain")]
    )
    lesion = header.index("MAE in lesion")
    masked_row = next(r for r in rows if r[0] == "masked" and r[1] == "CC")
    plain_row = next(r for r in rows if r[0] == "plain" and r[1] == "CC")
    assert masked_row[lesion].endswith(f"(n {annotated})")
    assert plain_row[lesion:] == ["n/a"] * (len(header) - lesion)
