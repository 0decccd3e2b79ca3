"""The paper's preprocessing chain and its invertible geometry record."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from VirtualBiopsyLib.errors import ImageError
from VirtualBiopsyLib.images.mammogram import ImageInfo, MammogramImage
from VirtualBiopsyLib.images.preprocessing import (
    Geometry,
    PreprocessingParams,
    preprocess,
)
from VirtualBiopsyLib.roles import Laterality

BACKGROUND = 0.1
TISSUE = 0.6


def breast_phantom(
    shape: tuple[int, int], laterality: str | None, windowed: bool = True
) -> np.ndarray:
    """Half-ellipse breast attached to the chest wall (right for R, left for L)."""
    height, width = shape
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    depth = (width - 1 - cols) if laterality in ("R", None) else cols
    inside = ((rows - height / 2) / (height / 2)) ** 2 + (depth / (0.8 * width)) ** 2 < 1
    pixels = np.where(inside, TISSUE, BACKGROUND).astype(np.float32)
    return pixels if windowed else pixels * 3000 + 500


def mammogram(
    pixels: np.ndarray, laterality: str | None, windowed: bool = True, name: str = "le_cc.dcm"
) -> MammogramImage:
    lat = Laterality(laterality) if laterality else None
    info = ImageInfo(path=Path(name), format="dicom", laterality=lat)
    return MammogramImage(info=info, pixels=pixels, windowed=windowed)


@pytest.mark.parametrize("laterality", ["L", "R"])
@pytest.mark.parametrize("shape", [(300, 200), (200, 300), (256, 256), (50, 40), (2850, 2396)])
@pytest.mark.parametrize("size", [64, 100, 256])
def test_geometry_round_trip_within_one_original_pixel(shape, size, laterality):
    image = mammogram(breast_phantom(shape, laterality), laterality)
    geometry = preprocess(image, PreprocessingParams(size=size)).geometry
    rng = np.random.default_rng(7)
    original = rng.uniform(0, 1, (50, 2)) * (np.array(shape) - 1)
    back = geometry.to_original(geometry.to_preprocessed(original))
    assert np.abs(back - original).max() < 1.0
    preprocessed = rng.uniform(0, size - 1, (50, 2))
    assert (
        np.abs(geometry.to_preprocessed(geometry.to_original(preprocessed)) - preprocessed).max()
        < 1
    )
    # the whole original image lands inside the preprocessed square
    corners = np.array([[0, 0], [0, shape[1] - 1], [shape[0] - 1, 0], [shape[0] - 1, shape[1] - 1]])
    mapped = geometry.to_preprocessed(corners.astype(float))
    assert mapped.min() >= -0.5 and mapped.max() <= size - 0.5


def test_single_point_keeps_its_shape():
    geometry = Geometry(
        (300, 200), padded_size=300, row_offset=0, col_offset=100, size=100, flipped=True
    )
    point = geometry.to_preprocessed([150.0, 150.0])
    assert point.shape == (2,)
    np.testing.assert_allclose(geometry.to_original(point), [150.0, 150.0])


@pytest.mark.parametrize("shape", [(300, 200), (200, 300)])
def test_left_and_right_breasts_face_the_same_way(shape):
    """A bright marker at the chest wall ends up on the right for both lateralities."""
    right = breast_phantom(shape, "R")
    middle = shape[0] // 2
    right[middle - 2 : middle + 2, -5:-1] = 1.0  # marker at the chest wall (right for R)
    left = np.ascontiguousarray(right[:, ::-1])  # the same breast as a left one
    params = PreprocessingParams(size=64)
    arrays = {
        "R": preprocess(mammogram(right, "R"), params).array,
        "L": preprocess(mammogram(left, "L"), params).array,
    }
    for array in arrays.values():
        marker_row, marker_col = np.unravel_index(np.argmax(array), array.shape)
        assert marker_col >= 60
    # a left breast is the mirror image of a right one: the outputs must be identical
    np.testing.assert_allclose(arrays["L"], arrays["R"], atol=1e-6)


def test_flip_left_false_keeps_left_breast_as_acquired():
    pixels = breast_phantom((300, 200), "L")
    result = preprocess(mammogram(pixels, "L"), PreprocessingParams(size=64, flip_left=False))
    assert not result.geometry.flipped
    assert result.array[:, :8].mean() > result.array[:, -8:].mean()  # tissue still on the left


@pytest.mark.parametrize("windowed", [True, False])
def test_output_is_float32_square_in_unit_range(windowed):
    pixels = breast_phantom((330, 270), "R", windowed=windowed)
    pixels += (
        np.random.default_rng(1)
        .normal(0, 0.2 if windowed else 500, pixels.shape)
        .astype(np.float32)
    )
    array = preprocess(mammogram(pixels, "R", windowed), PreprocessingParams(size=96)).array
    assert array.shape == (96, 96)
    assert array.dtype == np.float32
    assert array.min() >= 0.0 and array.max() <= 1.0
    assert array.flags.c_contiguous


def test_padding_uses_the_background_mean_away_from_the_chest_wall():
    pixels = breast_phantom((400, 200), "R")
    result = preprocess(mammogram(pixels, "R"), PreprocessingParams(size=100))
    assert result.geometry.col_offset == 200  # padded on the left, away from the chest wall
    assert result.background == pytest.approx(BACKGROUND, abs=1e-6)
    np.testing.assert_allclose(result.array[:, :45], BACKGROUND, atol=1e-5)
    assert result.array[:, -5:].mean() > 0.5  # tissue at the chest wall


def test_window_rule_keeps_windowed_values():
    pixels = breast_phantom((256, 256), "R")
    result = preprocess(mammogram(pixels, "R", windowed=True), PreprocessingParams(size=64))
    assert result.stretch_rule == "window"
    assert result.stretch_range == (0.0, 1.0)
    # the reader's window is kept as it is: no further stretching of its values
    assert result.array.min() == pytest.approx(BACKGROUND, abs=1e-5)
    assert result.array.max() == pytest.approx(TISSUE, abs=1e-5)


def test_percentile_rule_stretches_unwindowed_values():
    rng = np.random.default_rng(3)
    pixels = rng.uniform(1000, 3000, (400, 400)).astype(np.float32)
    result = preprocess(mammogram(pixels, "R", windowed=False), PreprocessingParams(size=400))
    assert result.stretch_rule == "percentile"
    low, high = result.stretch_range
    assert low == pytest.approx(1010, abs=15) and high == pytest.approx(2990, abs=15)
    expected = np.clip((pixels - low) / (high - low), 0, 1)
    np.testing.assert_allclose(result.array, expected, atol=1e-5)  # size 400: no resampling


def test_percentile_rule_can_be_forced_on_windowed_images():
    pixels = np.linspace(0.2, 0.4, 300 * 300, dtype=np.float32).reshape(300, 300)
    params = PreprocessingParams(size=300, stretch="percentile", percentiles=(0.0, 100.0))
    result = preprocess(mammogram(pixels, "R", windowed=True), params)
    assert result.stretch_rule == "percentile"
    assert result.array.min() == pytest.approx(0.0, abs=1e-3)
    assert result.array.max() == pytest.approx(1.0, abs=1e-3)


def test_fast_path_matches_explicit_pad_and_antialiased_resize():
    """The block-mean shortcut agrees with padding the full image and resizing it."""
    from skimage.transform import resize

    rng = np.random.default_rng(5)
    pixels = breast_phantom((700, 560), "R") + rng.normal(0, 0.05, (700, 560)).astype(np.float32)
    pixels = np.clip(pixels, 0, 1)
    result = preprocess(mammogram(pixels, "R"), PreprocessingParams(size=128))
    geometry = result.geometry
    padded = np.full((geometry.padded_size,) * 2, result.background, dtype=np.float64)
    padded[:700, geometry.col_offset :] = pixels
    reference = resize(padded, (128, 128), order=1, anti_aliasing=True, mode="edge")
    assert np.abs(result.array - reference).mean() < 0.01


@pytest.mark.parametrize("laterality", ["L", "R"])
@pytest.mark.parametrize("shape", [(700, 550), (550, 700)])
def test_equals_padding_with_background_then_area_resize(shape, laterality):
    """Exact where the padded side is a multiple of the output size (no final resample).

    The shapes put the image edge inside a block, so blocks mixing image and padding occur.
    """
    rng = np.random.default_rng(11)
    pixels = np.clip(breast_phantom(shape, laterality) + rng.normal(0, 0.1, shape), 0, 1)
    pixels = pixels.astype(np.float32)
    result = preprocess(mammogram(pixels, laterality), PreprocessingParams(size=100))
    assert result.geometry.padded_size == 700
    padded = np.full((700, 700), result.background, dtype=np.float64)
    if laterality == "R":
        padded[: shape[0], 700 - shape[1] :] = pixels  # padding on the left, away from the wall
    else:
        padded[: shape[0], : shape[1]] = pixels
    expected = padded.reshape(100, 7, 100, 7).mean(axis=(1, 3))
    if laterality == "L":
        expected = expected[:, ::-1]
    np.testing.assert_allclose(result.array, expected, atol=1e-5)


@pytest.mark.parametrize("laterality", ["L", "R"])
def test_map_to_original_agrees_with_the_point_mapping(laterality):
    """A map holding its own coordinates, mapped back, gives to_preprocessed of each pixel."""
    shape, size = (430, 310), 64
    geometry = preprocess(
        mammogram(breast_phantom(shape, laterality), laterality), PreprocessingParams(size=size)
    ).geometry
    row_map, col_map = np.mgrid[0:size, 0:size].astype(np.float32)
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    expected = geometry.to_preprocessed(np.stack([rows.ravel(), cols.ravel()], axis=1))
    expected = expected.reshape(*shape, 2)
    inside = (expected >= 0).all(axis=2) & (expected <= size - 1).all(axis=2)  # not clamped
    assert inside.mean() > 0.9
    np.testing.assert_allclose(
        geometry.map_to_original(row_map)[inside], expected[..., 0][inside], atol=1e-3
    )
    np.testing.assert_allclose(
        geometry.map_to_original(col_map)[inside], expected[..., 1][inside], atol=1e-3
    )


@pytest.mark.parametrize("laterality", ["L", "R"])
def test_hot_spot_returns_to_where_it_came_from(laterality):
    shape, size = (900, 700), 128
    pixels = breast_phantom(shape, laterality)
    spot = (412, 180 if laterality == "L" else 520)
    pixels[spot[0] - 4 : spot[0] + 5, spot[1] - 4 : spot[1] + 5] = 1.0
    result = preprocess(mammogram(pixels, laterality), PreprocessingParams(size=size))
    geometry = result.geometry
    tolerance = 2.0 / geometry.scale  # two preprocessed pixels, in original pixels

    # a saliency-like map with its peak where the lesion is in the preprocessed image
    saliency = np.zeros((size, size), np.float32)
    peak = np.unravel_index(np.argmax(result.array), result.array.shape)
    saliency[peak] = 1.0
    on_original = geometry.map_to_original(saliency)
    assert on_original.shape == shape and on_original.dtype == np.float32
    found = np.unravel_index(np.argmax(on_original), shape)
    assert np.hypot(found[0] - spot[0], found[1] - spot[1]) <= tolerance

    # the points API agrees with the map
    assert np.hypot(*(geometry.to_original(np.array(peak, float)) - spot)) <= tolerance


def test_map_to_original_reproduces_the_preprocessed_image():
    pixels = breast_phantom((600, 450), "L")
    result = preprocess(mammogram(pixels, "L"), PreprocessingParams(size=150))
    back = result.geometry.map_to_original(result.array)
    inside = slice(20, -20)  # away from the blurred outline the values match
    assert np.abs(back - pixels)[inside, inside].mean() < 0.02


def test_map_of_wrong_shape_is_refused():
    geometry = Geometry(
        (30, 20), padded_size=30, row_offset=0, col_offset=10, size=10, flipped=False
    )
    with pytest.raises(ValueError, match="10×10"):
        geometry.map_to_original(np.zeros((12, 12)))


def test_geometry_dict_round_trip_through_json():
    pixels = breast_phantom((500, 300), "L")
    result = preprocess(mammogram(pixels, "L"), PreprocessingParams(size=64))
    geometry = result.geometry
    restored = Geometry.from_dict(json.loads(json.dumps(geometry.to_dict())))
    provenance = json.loads(json.dumps(result.to_dict()))
    assert Geometry.from_dict(provenance["geometry"]) == geometry
    assert provenance["stretch_rule"] == "window" and provenance["laterality_rule"] == "header"
    assert restored == geometry
    points = np.array([[10.0, 20.0], [400.0, 250.0]])
    np.testing.assert_array_equal(
        restored.to_preprocessed(points), geometry.to_preprocessed(points)
    )
    with pytest.raises(ValueError, match="geometry"):
        Geometry.from_dict({"original_shape": [5, 5]})


def test_params_dict_round_trip_and_validation():
    params = PreprocessingParams(
        size=128, stretch="percentile", percentiles=(1, 99), flip_left=False
    )
    restored = PreprocessingParams.from_dict(json.loads(json.dumps(params.to_dict())))
    assert restored == params
    assert PreprocessingParams.from_dict({}) == PreprocessingParams()
    assert PreprocessingParams().size == 256 and PreprocessingParams().stretch == "window"
    with pytest.raises(ValueError, match="stretch"):
        PreprocessingParams(stretch="histogram")
    with pytest.raises(ValueError, match="percentiles"):
        PreprocessingParams(percentiles=(99.0, 1.0))
    with pytest.raises(ValueError, match="unknown"):
        PreprocessingParams.from_dict({"sise": 256})


def test_unknown_laterality_is_found_from_the_image():
    for laterality in ("L", "R"):
        pixels = breast_phantom((300, 200), laterality)
        result = preprocess(mammogram(pixels, None), PreprocessingParams(size=64))
        assert result.laterality_rule == "image"
        assert result.geometry.flipped == (laterality == "L")


def test_bad_pixels_raise_an_image_error_naming_the_file():
    with pytest.raises(ImageError, match="des_cc.dcm.*2-D"):
        preprocess(mammogram(np.zeros((4, 4, 3), np.float32), "R", name="des_cc.dcm"))
    pixels = breast_phantom((100, 80), "R")
    pixels[50, 40] = np.nan
    with pytest.raises(ImageError, match="des_cc.dcm.*NaN"):
        preprocess(mammogram(pixels, "R", name="des_cc.dcm"), PreprocessingParams(size=32))
    # also where the strided sample used for statistics does not look
    pixels = breast_phantom((1000, 1000), "R")
    pixels[501, 501] = np.inf
    with pytest.raises(ImageError, match="des_cc.dcm.*NaN or infinity"):
        preprocess(mammogram(pixels, "R", name="des_cc.dcm"), PreprocessingParams(size=32))


def test_flat_image_gives_zeros_not_a_division_error():
    flat = np.full((120, 100), 1234.0, np.float32)
    array = preprocess(mammogram(flat, "R", windowed=False), PreprocessingParams(size=32)).array
    assert np.isfinite(array).all() and array.max() == 0.0


def test_module_does_not_import_torch():
    code = (
        "import sys, VirtualBiopsyLib.images.preprocessing as p; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
