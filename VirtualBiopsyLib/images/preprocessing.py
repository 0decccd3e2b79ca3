"""The paper's preprocessing chain, with a geometry record that can be inverted.

Every image, for every task, goes through the same chain (Rofena et al. 2026, §2):

1. pad to a square with the mean background value, on the side away from the chest wall
   (the authors' code padded that way); extra rows go at the bottom;
2. contrast stretching — the DICOM window when the reader applied one
   (``MammogramImage.windowed``), otherwise the percentile rule below;
3. scale to [0, 1] (clip);
4. antialiased resize to ``size × size`` (256 in the paper);
5. flip left breasts horizontally, so every breast has its chest wall on the image's right
   (the DICOM display convention for right breasts).

Percentile rule: the ``percentiles`` (default 0.5 and 99.5) of the *whole unpadded image*
(breast and background together, on a strided subsample of about 150 000 pixels) are
mapped to 0 and 1. The whole image is used rather than a breast mask because the low
percentile then lands on the background, which becomes black as with a clinical window,
and no segmentation can fail. It is a robust version of the per-image min-max
normalisation of the authors' code.

Background: pixels at or below an Otsu threshold computed on a strided subsample; their
mean (in the image's own units, before stretching) is the pad value.

Speed: padding is never materialised at full size. The padded square is reduced by an
integer block mean (``np.add.reduceat``; padding blocks are filled analytically), then a
small bilinear resize gives ``size × size``. A full-size 2850×2396 image takes a few tens
of milliseconds and one float32 working copy (none for windowed images). The padded side
is rounded up to a multiple of the block size (at most ``block - 1`` extra pixels, also
on the side away from the chest wall); :class:`Geometry` records the exact square used.

Coordinates: points are ``(row, col)`` float arrays of shape ``(N, 2)`` (or ``(2,)``) in
pixel-centre coordinates: the centre of pixel ``[i, j]`` is ``(i, j)``, its edges are at
``± 0.5``. This module never imports torch.

>>> import numpy as np
>>> from pathlib import Path
>>> from VirtualBiopsyLib.images.mammogram import ImageInfo, MammogramImage
>>> from VirtualBiopsyLib.roles import Laterality
>>> info = ImageInfo(path=Path("le_cc.dcm"), format="dicom", laterality=Laterality.L)
>>> le_cc = MammogramImage(info, np.random.default_rng(0).random((600, 400), np.float32))
>>> prepared = preprocess(le_cc, PreprocessingParams(size=128))
>>> prepared.array.shape, prepared.array.dtype.name
((128, 128), 'float32')
>>> prepared.geometry.map_to_original(prepared.array).shape
(600, 400)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from VirtualBiopsyLib.errors import ImageError
from VirtualBiopsyLib.images.mammogram import MammogramImage
from VirtualBiopsyLib.limits import MAX_NETWORK_INPUT_SIZE
from VirtualBiopsyLib.roles import Laterality

STRETCH_RULES = ("window", "percentile")
_SUBSAMPLE_PIXELS = 150_000  # enough for stable percentiles and Otsu, < 1 ms to gather


@dataclass(frozen=True)
class PreprocessingParams:
    """Knobs of the chain; the defaults are the paper's. Stored in ``model.json``.

    ``stretch="window"`` uses the DICOM window when the reader applied one and falls back to
    the percentile rule otherwise; ``"percentile"`` always uses the percentile rule.

    >>> PreprocessingParams.from_dict(PreprocessingParams(size=128).to_dict()).size
    128
    """

    size: int = 256
    stretch: str = "window"
    percentiles: tuple[float, float] = (0.5, 99.5)
    flip_left: bool = True

    def __post_init__(self) -> None:
        if int(self.size) != self.size or not 1 <= self.size <= MAX_NETWORK_INPUT_SIZE:
            raise ValueError(
                f"preprocessing size must be an integer from 1 to {MAX_NETWORK_INPUT_SIZE}, "
                f"got {self.size!r}"
            )
        if self.stretch not in STRETCH_RULES:
            raise ValueError(
                f"unknown stretch rule {self.stretch!r}; expected one of {STRETCH_RULES}"
            )
        low, high = self.percentiles
        if not 0.0 <= low < high <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {low}, {high}")
        object.__setattr__(self, "percentiles", (float(low), float(high)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (lists, not tuples)."""
        return {
            "size": int(self.size),
            "stretch": self.stretch,
            "percentiles": list(self.percentiles),
            "flip_left": bool(self.flip_left),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessingParams:
        """Inverse of :meth:`to_dict`; missing keys take the paper's defaults."""
        unknown = set(data) - {"size", "stretch", "percentiles", "flip_left"}
        if unknown:
            raise ValueError(f"unknown preprocessing parameters: {sorted(unknown)}")
        defaults = cls()
        return cls(
            size=int(data.get("size", defaults.size)),
            stretch=str(data.get("stretch", defaults.stretch)),
            percentiles=tuple(data.get("percentiles", defaults.percentiles)),  # type: ignore[arg-type]
            flip_left=bool(data.get("flip_left", defaults.flip_left)),
        )


@dataclass(frozen=True)
class Geometry:
    """Where each preprocessed pixel came from, so maps can be drawn on the original.

    The original image sits at ``(row_offset, col_offset)`` inside a ``padded_size`` square,
    which is resized to ``size × size`` and then mirrored left-right when ``flipped``.
    Points are ``(row, col)`` in pixel-centre coordinates (see the module docstring).

    >>> g = Geometry((300, 200), padded_size=300, row_offset=0, col_offset=100, size=100,
    ...              flipped=False)
    >>> g.to_preprocessed([[0.0, 0.0]]).round(3).tolist()
    [[-0.333, 33.0]]
    >>> g.to_original(g.to_preprocessed([[10.0, 20.0]])).round(6).tolist()
    [[10.0, 20.0]]
    """

    original_shape: tuple[int, int]
    padded_size: int
    row_offset: int
    col_offset: int
    size: int
    flipped: bool

    @property
    def scale(self) -> float:
        """Preprocessed pixels per original pixel (< 1 when shrinking)."""
        return self.size / self.padded_size

    def to_preprocessed(self, points_rc: Any) -> np.ndarray:
        """Original ``(row, col)`` points → preprocessed ``(row, col)`` points."""
        points = _as_points(points_rc)
        rows = (points[:, 0] + self.row_offset + 0.5) * self.scale - 0.5
        cols = (points[:, 1] + self.col_offset + 0.5) * self.scale - 0.5
        if self.flipped:
            cols = (self.size - 1) - cols
        return _shape_like(np.stack([rows, cols], axis=1), points_rc)

    def to_original(self, points_rc: Any) -> np.ndarray:
        """Preprocessed ``(row, col)`` points → original ``(row, col)`` points."""
        points = _as_points(points_rc)
        cols = (self.size - 1) - points[:, 1] if self.flipped else points[:, 1]
        rows = (points[:, 0] + 0.5) / self.scale - 0.5 - self.row_offset
        cols = (cols + 0.5) / self.scale - 0.5 - self.col_offset
        return _shape_like(np.stack([rows, cols], axis=1), points_rc)

    def map_to_original(self, map_2d: np.ndarray) -> np.ndarray:
        """Resample a ``size × size`` map (Grad-CAM, synthetic DES) onto the original grid.

        Undoes the flip, the resize (bilinear, edge values held) and the padding; returns
        float32 of ``original_shape``. Separable, so a full-size map takes ~20 ms.
        """
        values = np.asarray(map_2d, dtype=np.float32)
        if values.shape != (self.size, self.size):
            raise ValueError(
                f"map of shape {values.shape} does not match the preprocessed size "
                f"{self.size}×{self.size}"
            )
        if self.flipped:
            values = values[:, ::-1]
        height, width = self.original_shape
        low_r, high_r, weight_r = _linear_taps(height, self.row_offset, self.scale, self.size)
        low_c, high_c, weight_c = _linear_taps(width, self.col_offset, self.scale, self.size)
        by_rows = np.take(values, low_r, axis=0)  # original rows × size: small
        by_rows *= (1.0 - weight_r)[:, None]
        by_rows += np.take(values, high_r, axis=0) * weight_r[:, None]
        low_weight, high_weight = (1.0 - weight_c).astype(np.float32), weight_c.astype(np.float32)
        result = np.empty((height, width), dtype=np.float32)
        for start in range(0, height, _BAND_ROWS):  # in bands: no second full-size array
            band, out = by_rows[start : start + _BAND_ROWS], result[start : start + _BAND_ROWS]
            np.take(band, low_c, axis=1, out=out)
            out *= low_weight
            upper = np.take(band, high_c, axis=1)
            upper *= high_weight
            out += upper
        return result

    def map_to_preprocessed(self, map_2d: np.ndarray, pad_value: float = 0.0) -> np.ndarray:
        """Resample a map on the original grid (a lesion mask) onto the network's grid.

        The same padding, block mean, resize and flip as the image: a mask comes out as
        the fraction of each preprocessed pixel it covers (float32 ``size × size``).
        """
        values = np.asarray(map_2d, dtype=np.float32)
        if values.shape != self.original_shape:
            raise ValueError(
                f"map of shape {values.shape} does not match the original {self.original_shape}"
            )
        array = _resize_small(_block_mean(values, self, pad_value), self.size)
        return np.ascontiguousarray(array[:, ::-1] if self.flipped else array, dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, e.g. to store beside a result."""
        data = asdict(self)
        data["original_shape"] = list(self.original_shape)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Geometry:
        """Inverse of :meth:`to_dict`."""
        try:
            height, width = (int(v) for v in data["original_shape"])
            return cls(
                original_shape=(height, width),
                padded_size=int(data["padded_size"]),
                row_offset=int(data["row_offset"]),
                col_offset=int(data["col_offset"]),
                size=int(data["size"]),
                flipped=bool(data["flipped"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a geometry record: {error}") from error


@dataclass
class PreprocessedImage:
    """The network input and how it was made.

    ``array``: float32 ``size × size`` in [0, 1], chest wall on the right.
    ``stretch_rule``: ``"window"`` or ``"percentile"`` (what actually fired);
    ``stretch_range``: the input values mapped to 0 and 1 (``(0, 1)`` for a window the
    reader applied); ``background``: the pad value in input units;
    ``laterality_rule``: ``"header"`` or ``"image"`` (chest wall found from intensities).
    """

    array: np.ndarray
    geometry: Geometry
    stretch_rule: str
    stretch_range: tuple[float, float]
    background: float
    laterality_rule: str

    def to_dict(self) -> dict[str, Any]:
        """How the array was made (no pixels), JSON-ready for a result's provenance."""
        return {
            "geometry": self.geometry.to_dict(),
            "stretch_rule": self.stretch_rule,
            "stretch_range": list(self.stretch_range),
            "background": self.background,
            "laterality_rule": self.laterality_rule,
        }


def preprocess(
    image: MammogramImage, params: PreprocessingParams | None = None
) -> PreprocessedImage:
    """Run the paper's chain on one image (see the module docstring for each step).

    >>> import numpy as np
    >>> from pathlib import Path
    >>> from VirtualBiopsyLib.images.mammogram import ImageInfo, MammogramImage
    >>> from VirtualBiopsyLib.roles import Laterality
    >>> info = ImageInfo(path=Path("des_mlo.dcm"), format="dicom", laterality=Laterality.R)
    >>> des_mlo = MammogramImage(info, np.zeros((300, 200), np.float32), windowed=True)
    >>> preprocess(des_mlo, PreprocessingParams(size=64)).geometry.col_offset
    100
    """
    params = params or PreprocessingParams()
    pixels = _checked_pixels(image)
    sample = _subsample(pixels)
    if not np.isfinite(sample).all():  # the rest is caught on the small output below
        raise ImageError(image.info.path, "pixel values contain NaN or infinity")
    chest_wall_right, laterality_rule = _chest_wall_side(image, sample)
    background = _background_mean(sample)
    stretch_rule, (low, high) = _stretch_range(image, sample, params)

    geometry = _plan_geometry(pixels.shape, params.size, chest_wall_right, params.flip_left)
    # Clip at full resolution (not linear), block-average, then the linear map on the
    # small array: equal to stretching first, with one full-size pass instead of three.
    clipped = pixels if (low, high) == (0.0, 1.0) else np.clip(pixels, low, high)
    pad_value = min(max(background, low), high)
    block = _block_mean(clipped, geometry, pad_value)
    array = _resize_small(_linear_stretch(block, low, high), params.size)
    if geometry.flipped:
        array = array[:, ::-1]
    if not np.isfinite(array).all():  # NaN anywhere (or infinity in a windowed image)
        raise ImageError(image.info.path, "pixel values contain NaN or infinity")
    array = np.ascontiguousarray(np.clip(array, 0.0, 1.0), dtype=np.float32)
    return PreprocessedImage(
        array=array,
        geometry=geometry,
        stretch_rule=stretch_rule,
        stretch_range=(float(low), float(high)),
        background=float(background),
        laterality_rule=laterality_rule,
    )


def _checked_pixels(image: MammogramImage) -> np.ndarray:
    """2-D float32 pixels (converted if needed), or an ImageError naming the file."""
    pixels = np.asarray(image.pixels)
    path = getattr(image.info, "path", None)
    if pixels.ndim != 2 or min(pixels.shape) < 1:
        raise ImageError(path, f"expected a 2-D image, got pixel array of shape {pixels.shape}")
    if pixels.dtype != np.float32:
        pixels = pixels.astype(np.float32)
    return pixels


def _subsample(pixels: np.ndarray) -> np.ndarray:
    """A strided, contiguous sample of about ``_SUBSAMPLE_PIXELS`` values (a small copy)."""
    stride = max(1, int(math.sqrt(pixels.size / _SUBSAMPLE_PIXELS)))
    return np.ascontiguousarray(pixels[::stride, ::stride])


def _chest_wall_side(image: MammogramImage, sample: np.ndarray) -> tuple[bool, str]:
    """True when the chest wall is on the right: from laterality, else from intensities.

    Without a laterality the breast's widest, brightest part (the chest wall side) is
    taken from the column profile: the half with the larger summed intensity.
    """
    laterality = image.info.laterality
    if laterality is not None:
        return Laterality(laterality) is Laterality.R, "header"
    profile = sample.sum(axis=0, dtype=np.float64)
    half = profile.size // 2
    return bool(profile[-half:].sum() > profile[:half].sum()), "image"


def _background_mean(sample: np.ndarray) -> float:
    """Mean of the pixels outside the breast (at or below Otsu's threshold)."""
    from skimage.filters import threshold_otsu

    low, high = float(sample.min()), float(sample.max())
    if high <= low:
        return low
    threshold = threshold_otsu(sample)
    background = sample[sample <= threshold]
    return float(background.mean()) if background.size else low


def _stretch_range(
    image: MammogramImage, sample: np.ndarray, params: PreprocessingParams
) -> tuple[str, tuple[float, float]]:
    """The input values mapped to 0 and 1, and which rule chose them."""
    if params.stretch == "window" and image.windowed:
        return "window", (0.0, 1.0)
    low, high = np.percentile(sample, params.percentiles)
    return "percentile", (float(low), float(high))


def _linear_stretch(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map [low, high] onto [0, 1] in place (values already clipped to [low, high])."""
    if high <= low:
        return np.zeros_like(values)
    values -= np.float32(low)
    values *= np.float32(1.0 / (high - low))
    return values


def _plan_geometry(
    shape: tuple[int, int], size: int, chest_wall_right: bool, flip_left: bool
) -> Geometry:
    """Choose the padded square: a multiple of the integer block that shrinks it."""
    height, width = shape
    side = max(height, width)
    block = max(1, side // size)
    padded_size = -(-side // block) * block
    col_offset = padded_size - width if chest_wall_right else 0
    return Geometry(
        original_shape=(int(height), int(width)),
        padded_size=int(padded_size),
        row_offset=0,
        col_offset=int(col_offset),
        size=int(size),
        flipped=bool(flip_left and not chest_wall_right),
    )


_BAND_ROWS = 256  # rows resampled at a time when a map is drawn back onto the original


def _block_mean(pixels: np.ndarray, geometry: Geometry, pad_value: float) -> np.ndarray:
    """Mean over ``block × block`` tiles of the padded square, without building it.

    Tiles that hold image pixels are summed from the image; the padding's share of each
    tile (and the tiles that are all padding) is added as ``pad_value × count``.
    """
    height, width = geometry.original_shape
    block = max(1, max(height, width) // geometry.size)
    tiles = geometry.padded_size // block
    row_sums, row_counts, first_row = _row_tile_sums(pixels, geometry.row_offset, block)
    col_starts, col_counts, first_col = _tile_starts(width, geometry.col_offset, block)
    sums = np.add.reduceat(row_sums, col_starts, axis=1, dtype=np.float32)
    padding_counts = block * block - np.outer(row_counts, col_counts)
    sums += np.float32(pad_value) * padding_counts.astype(np.float32)
    result = np.full((tiles, tiles), pad_value * block * block, dtype=np.float32)
    result[first_row : first_row + sums.shape[0], first_col : first_col + sums.shape[1]] = sums
    result /= np.float32(block * block)
    return result


def _row_tile_sums(
    pixels: np.ndarray, offset: int, block: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Sums of the image rows falling in each tile of ``block`` padded rows.

    The whole tiles are summed through a reshape (a fast, copy-free reduction); the
    partial tiles at either end are summed separately.
    """
    height = pixels.shape[0]
    head = min(height, (-offset) % block)
    whole = (height - head) // block
    tail = height - head - whole * block
    parts, counts = [], []
    if head:
        parts.append(pixels[:head].sum(axis=0, keepdims=True, dtype=np.float32))
        counts.append(head)
    if whole:
        body = pixels[head : head + whole * block].reshape(whole, block, pixels.shape[1])
        parts.append(body.sum(axis=1, dtype=np.float32))
        counts.extend([block] * whole)
    if tail:
        parts.append(pixels[height - tail :].sum(axis=0, keepdims=True, dtype=np.float32))
        counts.append(tail)
    sums = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
    return sums, np.asarray(counts), offset // block


def _tile_starts(length: int, offset: int, block: int) -> tuple[np.ndarray, np.ndarray, int]:
    """First image index and image-pixel count of every tile that holds image pixels."""
    first_tile = offset // block
    last_tile = (offset + length - 1) // block
    tile_edges = np.arange(first_tile, last_tile + 2) * block - offset
    edges = np.clip(tile_edges, 0, length)
    return edges[:-1].astype(np.intp), np.diff(edges), int(first_tile)


def _resize_small(block_mean: np.ndarray, size: int) -> np.ndarray:
    """Bilinear, antialiased resize of the (already small) block mean to ``size × size``."""
    if block_mean.shape == (size, size):
        return block_mean
    from skimage.transform import resize

    shrinking = block_mean.shape[0] > size
    resized = resize(
        block_mean,
        (size, size),
        order=1,
        mode="edge",
        anti_aliasing=shrinking,
        preserve_range=True,
    )
    return resized.astype(np.float32, copy=False)


def _linear_taps(
    length: int, offset: int, scale: float, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neighbour indices and weights to sample a ``size`` axis at original pixel centres."""
    positions = (np.arange(length, dtype=np.float64) + offset + 0.5) * scale - 0.5
    positions = np.clip(positions, 0.0, size - 1)
    low = np.floor(positions).astype(np.intp)
    high = np.minimum(low + 1, size - 1)
    return low, high, (positions - low).astype(np.float32)


def _as_points(points_rc: Any) -> np.ndarray:
    """``(N, 2)`` float64 view of points given as ``(2,)`` or ``(N, 2)``."""
    points = np.asarray(points_rc, dtype=np.float64)
    if points.shape == (2,):
        return points[None, :]
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must be (row, col) pairs of shape (N, 2), got {points.shape}")
    return points


def _shape_like(points: np.ndarray, original: Any) -> np.ndarray:
    """Return a single point as ``(2,)`` when it was given that way."""
    return points[0] if np.shape(original) == (2,) else points
