"""What an image must be to be classified, checked on its decoded pixels.

A classifier gives a probability for any array it is handed, so a 1 × 1 image, a
constant one, a Rescale Slope that flattens every pixel, or a window of width 1e300 that
maps the whole breast to one grey would still get a confident-looking label. An image is
classified only when

1. each side has at least ``VIRTUAL_BIOPSY_MIN_IMAGE_SIDE`` pixels (64 by default; the
   smallest real mammogram has over a thousand);
2. every value is finite;
3. after windowing (the DICOM window the reader applied, else the 0.5–99.5 percentile
   stretch preprocessing uses) it shows at least :data:`MIN_GREY_LEVELS` distinct grey
   levels out of 256;
4. a breast is visible: at least :data:`MIN_BREAST_FRACTION` of the pixels are brighter
   than the background (:data:`BACKGROUND_LEVEL` of the display range), and not
   nearly every pixel is saturated white (:data:`MAX_SATURATED_FRACTION`).

The check runs on a strided sample of about 150 000 pixels (well under a millisecond for
a full-size image) and names the rule that failed.
"""

from __future__ import annotations

import math

import numpy as np

from VirtualBiopsyLib.images.mammogram import MammogramImage
from VirtualBiopsyLib.limits import min_image_side

MIN_GREY_LEVELS = 16
BACKGROUND_LEVEL = 0.1
MIN_BREAST_FRACTION = 0.01
MAX_SATURATED_FRACTION = 0.98
_SAMPLE_PIXELS = 150_000


def classification_problem(image: MammogramImage) -> str | None:
    """Why ``image`` must not be classified, or ``None`` when it may be.

    >>> from pathlib import Path
    >>> from VirtualBiopsyLib.images.mammogram import ImageInfo
    >>> info = ImageInfo(Path("le_cc.dcm"), "dicom")
    >>> classification_problem(MammogramImage(info, np.zeros((1, 1), np.float32)))
    'image is 1 × 1 pixels; classifying needs at least 64 per side (VIRTUAL_BIOPSY_MIN_IMAGE_SIDE)'
    >>> flat = MammogramImage(info, np.full((300, 200), 0.5, np.float32), windowed=True)
    >>> classification_problem(flat)[:40]
    'only 1 grey level(s) after the DICOM win'
    """
    pixels = np.asarray(image.pixels)
    if pixels.ndim != 2:
        return f"expected a 2-D image, got pixel array of shape {pixels.shape}"
    rows, columns = pixels.shape
    side = min_image_side()
    if min(rows, columns) < side:
        return (
            f"image is {rows} × {columns} pixels; classifying needs at least {side} per side "
            "(VIRTUAL_BIOPSY_MIN_IMAGE_SIDE)"
        )
    stride = max(1, int(math.sqrt(pixels.size / _SAMPLE_PIXELS)))
    sample = np.asarray(pixels[::stride, ::stride], dtype=np.float64)
    if not np.isfinite(sample).all() or not np.isfinite(pixels).all():
        return "pixel values contain NaN or infinity"
    if image.windowed:
        display, how = np.clip(sample, 0.0, 1.0), "the DICOM window"
    else:
        low, high = np.percentile(sample, (0.5, 99.5))
        if not high > low:
            return "constant image: every pixel has the same value"
        display, how = np.clip((sample - low) / (high - low), 0.0, 1.0), "contrast stretching"
    levels = int(np.count_nonzero(np.bincount(np.rint(display * 255).astype(np.intp).ravel())))
    if levels < MIN_GREY_LEVELS:
        return (
            f"only {levels} grey level(s) after {how} (at least {MIN_GREY_LEVELS} needed): "
            "a blank or constant image, or a window that hides the breast"
        )
    breast = float(np.mean(display > BACKGROUND_LEVEL))
    if breast < MIN_BREAST_FRACTION:
        return (
            f"no breast visible: {100 * breast:.2f}% of pixels are brighter than the "
            f"background after {how} (at least {100 * MIN_BREAST_FRACTION:g}% needed)"
        )
    saturated = float(np.mean(display >= 0.99))
    if saturated > MAX_SATURATED_FRACTION:
        return f"saturated image: {100 * saturated:.1f}% of pixels are white after {how}"
    return None
