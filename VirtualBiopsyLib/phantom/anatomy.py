"""Breast anatomy of the phantom: outline, skin line, nipple, pectoral muscle, glandular tissue.

Everything is drawn in a *canonical frame* (chest wall at column 0, nipple pointing to
higher columns, i.e. a left breast as DICOM displays it) and flipped for right breasts by
:func:`to_display_orientation`, so right-breast images have the chest wall on the image's
right side, as in real exams.

Fibroglandular tissue is 1/f^β noise (β ≈ 3, as measured on mammograms) thresholded so that
the glandular fraction of the breast follows the ACR density category.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.special import expit

from VirtualBiopsyLib.roles import Laterality, View

#: Image size (rows, columns) and pixel spacing (mm) per phantom size. ``full`` matches the
#: GE Senographe Pristina 2850×2396 detector at 0.1 mm; ``small`` is 1/8 of it (same aspect).
IMAGE_SHAPES: dict[str, tuple[int, int]] = {"small": (356, 299), "full": (2850, 2396)}
PIXEL_SPACING_MM: dict[str, float] = {"small": 0.8, "full": 0.1}

#: Target glandular fraction of the breast area per ACR category (low, high).
ACR_GLANDULAR_FRACTION: dict[str, tuple[float, float]] = {
    "a": (0.04, 0.14),
    "b": (0.20, 0.32),
    "c": (0.42, 0.56),
    "d": (0.66, 0.80),
}
ACR_CATEGORIES: tuple[str, ...] = ("a", "b", "c", "d")

_NOISE_GRID = 384  # smooth fields are synthesised at most this large, then upsampled


def image_shape(size: str) -> tuple[int, int]:
    """Rows × columns of a phantom image of ``size`` ("small" or "full")."""
    if size not in IMAGE_SHAPES:
        raise ValueError(f"unknown phantom size {size!r}; expected 'small' or 'full'")
    return IMAGE_SHAPES[size]


def power_law_noise(rng: np.random.Generator, shape: tuple[int, int], beta: float) -> np.ndarray:
    """Zero-mean, unit-variance noise with a 1/f^β power spectrum (FFT synthesis).

    Mammographic parenchyma has β ≈ 2.5–3.5; the spectrum is dominated by low frequencies,
    so the field is synthesised on a coarse grid and upsampled linearly for speed.
    """
    factor = max(1, int(np.ceil(max(shape) / _NOISE_GRID)))
    coarse_shape = (-(-shape[0] // factor), -(-shape[1] // factor))
    freq_rows = np.fft.fftfreq(coarse_shape[0])[:, None]
    freq_cols = np.fft.rfftfreq(coarse_shape[1])[None, :]
    radius = np.hypot(freq_rows, freq_cols)
    radius[0, 0] = 1.0
    amplitude = radius ** (-beta / 2.0)
    amplitude[0, 0] = 0.0
    white = rng.standard_normal(coarse_shape)
    field = np.fft.irfft2(np.fft.rfft2(white) * amplitude, s=coarse_shape)
    field = ((field - field.mean()) / (field.std() + 1e-12)).astype(np.float32)
    if factor > 1:
        field = ndimage.zoom(
            field, factor, output=np.float32, order=1, grid_mode=True, mode="nearest"
        )
    return field[: shape[0], : shape[1]].astype(np.float32)


@dataclass(frozen=True)
class BreastShape:
    """Size of one breast, shared by its CC and MLO views (fractions of the image)."""

    depth: float  # chest wall to nipple, fraction of the columns
    half_height: float  # CC half-height, fraction of the rows
    roundness: float  # superellipse exponent along the depth axis
    pectoral_width: float  # MLO pectoral muscle at the top edge, fraction of columns
    pectoral_height: float  # MLO pectoral muscle along the chest wall, fraction of rows
    acr_density: str
    glandular_target: float


def draw_breast_shape(rng: np.random.Generator, acr_density: str) -> BreastShape:
    """Random breast geometry and glandular target for one breast of ACR ``acr_density``."""
    if acr_density not in ACR_GLANDULAR_FRACTION:
        raise ValueError(f"unknown ACR density {acr_density!r}; expected one of a, b, c, d")
    low, high = ACR_GLANDULAR_FRACTION[acr_density]
    return BreastShape(
        depth=float(rng.uniform(0.62, 0.82)),
        half_height=float(rng.uniform(0.30, 0.40)),
        roundness=float(rng.uniform(1.7, 2.4)),
        pectoral_width=float(rng.uniform(0.22, 0.36)),
        pectoral_height=float(rng.uniform(0.40, 0.62)),
        acr_density=acr_density,
        glandular_target=float(rng.uniform(low, high)),
    )


@dataclass
class ViewAnatomy:
    """One view of one breast in the canonical frame (chest wall at column 0)."""

    view: View
    breast_mask: np.ndarray  # bool
    thickness: np.ndarray  # float32 in [0, 1]: compressed thickness, falls towards the skin
    skin: np.ndarray  # float32 in [0, 1]: the skin line
    pectoral: np.ndarray  # float32 in [0, 1]: pectoral muscle (zeros for CC)
    glandular: np.ndarray  # float32 in [0, 1]: fibroglandular tissue
    nipple_rc: tuple[float, float]  # nipple position (row, column)
    spacing_mm: float

    @property
    def glandular_fraction(self) -> float:
        """Fraction of the breast (outside the pectoral muscle) that is glandular."""
        tissue = self.breast_mask & (self.pectoral < 0.5)
        return float((self.glandular[tissue] > 0.5).mean()) if tissue.any() else 0.0


def _radius_field(
    shape: tuple[int, int],
    centre_row: float,
    depth_px: float,
    half_height_px: float,
    roundness: float,
) -> np.ndarray:
    """Superellipse 'radius' (1 on the outline) of a half-breast against the chest wall."""
    rows = np.arange(shape[0], dtype=np.float32)[:, None]
    cols = np.arange(shape[1], dtype=np.float32)[None, :]
    along = np.abs(cols / depth_px) ** roundness
    across = ((rows - centre_row) / half_height_px) ** 2
    return np.power(along + across, 1.0 / 2.0, dtype=np.float32)


def _outline_from_radius(radius: np.ndarray, skin_px: float, scale_px: float) -> tuple:
    """Mask, thickness and skin line from a radius field (1 = outline)."""
    mask = radius <= 1.0
    inside = np.clip((1.0 - radius) * scale_px, 0.0, None)  # approx. distance to the skin
    thickness = np.sqrt(np.clip(inside / (0.18 * scale_px), 0.0, 1.0)).astype(np.float32)
    skin = (np.exp(-((inside / skin_px) ** 2)) * mask).astype(np.float32)
    return mask, thickness, skin


def build_view(
    rng: np.random.Generator,
    shape_params: BreastShape,
    view: View | str,
    image_shape_rc: tuple[int, int],
    spacing_mm: float,
) -> ViewAnatomy:
    """Draw one view of a breast: outline, skin, nipple, pectoral (MLO) and glandular tissue.

    >>> rng = np.random.default_rng(0)
    >>> anatomy = build_view(rng, draw_breast_shape(rng, "c"), "CC", (356, 299), 0.8)
    >>> anatomy.breast_mask.shape, 0.3 < anatomy.glandular_fraction < 0.7
    ((356, 299), True)
    """
    view = View(view)
    rows, cols = image_shape_rc
    depth_px = shape_params.depth * cols
    if view is View.CC:
        centre_row = rows * float(rng.uniform(0.47, 0.53))
        half_height_px = shape_params.half_height * rows
    else:
        centre_row = rows * float(rng.uniform(0.56, 0.62))
        half_height_px = shape_params.half_height * rows * 1.2
    radius = _radius_field(
        image_shape_rc, centre_row, depth_px, half_height_px, shape_params.roundness
    )
    if view is View.MLO:  # axillary tail: the breast widens towards the top of the chest wall
        row_idx = np.arange(rows, dtype=np.float32)[:, None]
        col_idx = np.arange(cols, dtype=np.float32)[None, :]
        tail_edge = shape_params.pectoral_width * 1.15 * cols + (
            depth_px * 0.8 - shape_params.pectoral_width * cols
        ) * np.clip(row_idx / centre_row, 0, 1)
        tail_radius = np.where(row_idx <= centre_row, col_idx / tail_edge, np.inf)
        radius = np.minimum(radius, tail_radius.astype(np.float32))
    nipple_rc = (float(centre_row), float(depth_px))
    nipple_radius = max(2.0, 4.0 / spacing_mm)
    row_idx = np.arange(rows, dtype=np.float32)[:, None]
    col_idx = np.arange(cols, dtype=np.float32)[None, :]
    nipple_dist = np.hypot(row_idx - nipple_rc[0], (col_idx - nipple_rc[1]) * 1.4)
    radius = np.minimum(radius, (nipple_dist / nipple_radius).astype(np.float32))
    mask, thickness, skin = _outline_from_radius(radius, max(1.0, 1.5 / spacing_mm), depth_px)
    pectoral = _pectoral(shape_params, view, image_shape_rc, spacing_mm) * mask
    glandular = _glandular(rng, shape_params, mask, pectoral, nipple_rc, half_height_px, depth_px)
    return ViewAnatomy(
        view, mask, thickness, skin, pectoral.astype(np.float32), glandular, nipple_rc, spacing_mm
    )


def _pectoral(
    shape_params: BreastShape, view: View, shape: tuple[int, int], spacing_mm: float
) -> np.ndarray:
    """Pectoral muscle of an MLO view: a soft-edged triangle in the upper chest-wall corner."""
    if view is View.CC:
        return np.zeros(shape, dtype=np.float32)
    rows = np.arange(shape[0], dtype=np.float32)[:, None]
    cols = np.arange(shape[1], dtype=np.float32)[None, :]
    edge = cols / (shape_params.pectoral_width * shape[1]) + rows / (
        shape_params.pectoral_height * shape[0]
    )
    softness = max(1.0, 3.0 / spacing_mm) / (shape_params.pectoral_width * shape[1])
    return expit((1.0 - edge) / softness).astype(np.float32)


def _glandular(
    rng: np.random.Generator,
    shape_params: BreastShape,
    mask: np.ndarray,
    pectoral: np.ndarray,
    nipple_rc: tuple[float, float],
    half_height_px: float,
    depth_px: float,
) -> np.ndarray:
    """Fibroglandular tissue: 1/f^β noise plus a retro-areolar envelope, thresholded to target."""
    shape = mask.shape
    noise = power_law_noise(rng, shape, beta=3.0)
    rows = np.arange(shape[0], dtype=np.float32)[:, None]
    cols = np.arange(shape[1], dtype=np.float32)[None, :]
    envelope = np.exp(-(((rows - nipple_rc[0]) / (0.75 * half_height_px)) ** 2)) * np.exp(
        -(((cols - 0.5 * depth_px) / (0.45 * depth_px)) ** 2)
    )
    score = noise + 1.6 * envelope
    tissue = mask & (pectoral < 0.5)
    step = max(1, shape[0] // 256)
    sample = score[::step, ::step][tissue[::step, ::step]]
    threshold = np.quantile(sample, 1.0 - shape_params.glandular_target)
    glandular = expit((score - threshold) / 0.3)
    return (glandular * tissue).astype(np.float32)


def to_display_orientation(array: np.ndarray, laterality: Laterality | str) -> np.ndarray:
    """Flip a canonical-frame array so a right breast has its chest wall on the image's right."""
    if Laterality(laterality) is Laterality.R:
        return np.ascontiguousarray(array[:, ::-1])
    return array
