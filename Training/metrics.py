"""The paper's metrics: AUC, G-mean, MCC (classification) and MSE, PSNR, SSIM (generation).

Classification metrics come from scikit-learn, image metrics from scikit-image with
``data_range=1`` on the whole 2-D image (images are in [0, 1]; no breast mask). Fold
summaries are mean ± standard error (sample standard deviation / √n), as in the paper.

>>> import numpy as np
>>> scores = classification_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.7, 0.9]))
>>> round(scores["auc"], 2), round(scores["mcc"], 2)
(1.0, 0.58)
>>> [round(v, 3) for v in mean_and_standard_error([0.5, 0.7])]
[0.6, 0.1]
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity
from sklearn.metrics import confusion_matrix, matthews_corrcoef, roc_auc_score

from VirtualBiopsyLib.ensemble import mean_and_standard_error  # one mean ± SE: the library's

CLASSIFICATION_METRICS: tuple[str, ...] = ("auc", "g_mean", "mcc")
GENERATION_METRICS: tuple[str, ...] = ("mse", "psnr", "ssim")
#: The same errors inside the breast (the LE's): the easy background does not inflate them.
BREAST_METRICS: tuple[str, ...] = ("breast_mse", "breast_psnr")
#: Inside the lesion, where a lesion mask is known (the phantom's; real data sets may have none).
LESION_METRICS: tuple[str, ...] = ("lesion_mae",)
#: How the generation tables print each metric: title and decimals.
GENERATION_TITLES: dict[str, str] = {
    "mse": "MSE",
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "breast_mse": "MSE in breast",
    "breast_psnr": "PSNR in breast (dB)",
}
GENERATION_DIGITS: dict[str, int] = {
    "mse": 4,
    "psnr": 2,
    "ssim": 3,
    "breast_mse": 4,
    "breast_psnr": 2,
}
#: Each region's metrics under the key that counts the images they average over.
REGION_METRICS: dict[str, tuple[str, ...]] = {
    "images": GENERATION_METRICS,
    "breast_images": BREAST_METRICS,
    "lesion_images": LESION_METRICS,
}


def mcc(labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5) -> float:
    """Matthews correlation coefficient of ``probability >= threshold``.

    NaN when the labels hold one class only, like AUC and G-mean: a metric undefined on a
    subset is undefined everywhere (scikit-learn would return 0, which reads as chance).
    When every prediction falls in one class the MCC is 0 (scikit-learn's convention).
    """
    labels = np.asarray(labels).astype(int)
    if not _both_classes(labels):
        return math.nan
    predicted = (np.asarray(probabilities) >= threshold).astype(int)
    with warnings.catch_warnings():  # one predicted class only: sklearn warns and returns 0
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(matthews_corrcoef(labels, predicted))


def g_mean(labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5) -> float:
    """sqrt(recall × specificity); NaN when a class is absent (no cases at all included)."""
    labels = np.asarray(labels).astype(int)
    if not _both_classes(labels):
        return math.nan
    predicted = (np.asarray(probabilities) >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
    return math.sqrt(tp / (tp + fn) * tn / (tn + fp))


def auc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Area under the ROC curve; NaN when only one class is present."""
    labels = np.asarray(labels).astype(int)
    if not _both_classes(labels):
        return math.nan
    return float(roc_auc_score(labels, np.asarray(probabilities, dtype=float)))


def best_fixed_mix(
    labels: np.ndarray, first: np.ndarray, second: np.ndarray, steps: int = 20
) -> tuple[float, float]:
    """The weight ``w`` on ``second`` (0, 1/steps, …, 1) whose mix ``(1 − w)·first +
    w·second`` ranks ``labels`` best, and that AUC (the smallest such weight on a tie).

    Chosen on the same cases it is scored on, so an optimistic reference: what any fixed
    weighting of two readers could give at best, not a model. NaN, NaN on one class.

    >>> labels = np.array([0, 0, 1, 1])  # each reader errs on another case: AUC 0.75 each
    >>> best_fixed_mix(labels, np.array([0.1, 0.6, 0.5, 0.9]), np.array([0.5, 0.1, 0.6, 0.4]))
    (0.2, 1.0)
    """
    if not _both_classes(np.asarray(labels).astype(int)):
        return math.nan, math.nan
    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    best_weight, best_auc = 0.0, -math.inf
    for weight in np.linspace(0.0, 1.0, steps + 1):
        value = auc(labels, (1.0 - weight) * first + weight * second)
        if value > best_auc + 1e-12:
            best_weight, best_auc = round(float(weight), 6), value
    return best_weight, best_auc


def _both_classes(labels: np.ndarray) -> bool:
    """Whether ``labels`` hold a benign and a malignant case: every metric needs both."""
    return len(np.unique(labels)) >= 2


def classification_metrics(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """AUC, G-mean and MCC of one set of predictions."""
    return {
        "auc": auc(labels, probabilities),
        "g_mean": g_mean(labels, probabilities, threshold),
        "mcc": mcc(labels, probabilities, threshold),
    }


def generation_metrics(synthetic_des: np.ndarray, real_des: np.ndarray) -> dict[str, float]:
    """MSE, PSNR (dB) and SSIM of one synthetic DES against the real one (data_range=1).

    Computed on the whole image (background included), as the arrays come out of
    preprocessing. A perfect match has infinite PSNR; it is capped at 100 dB.
    """
    synthetic_des = np.asarray(synthetic_des, dtype=np.float64)
    real_des = np.asarray(real_des, dtype=np.float64)
    _check_shapes(synthetic_des, real_des)
    error, psnr = _mse_and_psnr(real_des, synthetic_des)
    ssim = structural_similarity(real_des, synthetic_des, data_range=1.0)
    return {"mse": error, "psnr": psnr, "ssim": float(ssim)}


def _check_shapes(synthetic_des: np.ndarray, real_des: np.ndarray, **masks: np.ndarray) -> None:
    """Refuse arrays on different grids with their shapes (scikit-image says only that
    the dimensions differ; a mask of another size fails as an index error): a synthetic
    DES is compared with the real one on the grid both were preprocessed to."""
    shapes = {"synthetic DES": synthetic_des.shape, "real DES": real_des.shape}
    shapes |= {name.replace("_", " "): mask.shape for name, mask in masks.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"images of different sizes cannot be compared pixel by pixel: {listed}")


def _mse_and_psnr(real: np.ndarray, synthetic: np.ndarray) -> tuple[float, float]:
    """MSE and PSNR (data_range 1, capped at 100 dB: a perfect match is infinite)."""
    error = float(mean_squared_error(real, synthetic))
    psnr = 100.0 if error == 0 else peak_signal_noise_ratio(real, synthetic, data_range=1.0)
    return error, float(min(psnr, 100.0))


def format_mean_se(values: Sequence[float], scale: float = 100.0, digits: int = 2) -> str:
    """``"61.52 ± 10.67"`` in the paper's style (percent by default)."""
    mean, error = mean_and_standard_error(values)
    if math.isnan(mean):
        return "n/a"
    if math.isnan(error):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {error * scale:.{digits}f}"


def masked_generation_metrics(
    synthetic_des: np.ndarray,
    real_des: np.ndarray,
    breast_mask: np.ndarray | None,
    lesion_mask: np.ndarray | None = None,
) -> dict[str, float]:
    """Errors that see what matters: the paper's whole-image metrics plus masked ones.

    ``breast_*``: MSE and PSNR (data_range 1) over the breast only (the background is
    easy and inflates whole-image scores); ``lesion_mae``: mean |synthetic − real| inside
    the lesion. A region without a mask, or with an empty one, gives NaN (undefined, never
    a value from no pixels); :func:`average_generation_metrics` counts what is defined.
    """
    result = generation_metrics(synthetic_des, real_des)
    synthetic_des = np.asarray(synthetic_des, dtype=np.float64)
    real_des = np.asarray(real_des, dtype=np.float64)
    breast = (
        np.zeros(real_des.shape, bool) if breast_mask is None else np.asarray(breast_mask, bool)
    )
    lesion = None if lesion_mask is None else np.asarray(lesion_mask, dtype=bool)
    masks = {"breast_mask": breast} | ({} if lesion is None else {"lesion_mask": lesion})
    _check_shapes(synthetic_des, real_des, **masks)
    if breast.any():
        result["breast_mse"], result["breast_psnr"] = _mse_and_psnr(
            real_des[breast], synthetic_des[breast]
        )
    else:
        result["breast_mse"] = result["breast_psnr"] = math.nan
    result["lesion_mae"] = (
        float(np.mean(np.abs(synthetic_des[lesion] - real_des[lesion])))
        if lesion is not None and lesion.any()
        else math.nan
    )
    return result


def average_generation_metrics(per_image: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Each metric's mean over the images where its region is defined, and per region
    (:data:`REGION_METRICS`) how many images that is: ``lesion_images`` 0 and
    ``lesion_mae`` NaN for a data set without lesion masks, not an error, and one image
    without a breast leaves the others' in-breast means defined.

    >>> images = [{"mse": 0.1, "lesion_mae": 0.2}, {"mse": 0.3, "lesion_mae": math.nan}]
    >>> average_generation_metrics(images)
    {'images': 2, 'mse': 0.2, 'lesion_images': 1, 'lesion_mae': 0.2}
    """
    result: dict[str, float] = {}
    for count, metrics in REGION_METRICS.items():
        shown = [m for m in metrics if any(m in image for image in per_image)]
        if not shown:
            continue
        defined = [
            image
            for image in per_image
            if all(math.isfinite(image.get(m, math.nan)) for m in shown)
        ]
        result[count] = len(defined)
        for metric in shown:
            values = [image[metric] for image in defined]
            result[metric] = float(np.mean(values)) if values else math.nan
    return result
