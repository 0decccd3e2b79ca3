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
from scipy import ndimage
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity
from sklearn.metrics import confusion_matrix, matthews_corrcoef, roc_auc_score

from VirtualBiopsyLib.ensemble import mean_and_standard_error  # one mean ± SE: the library's

CLASSIFICATION_METRICS: tuple[str, ...] = ("auc", "g_mean", "mcc")
GENERATION_METRICS: tuple[str, ...] = ("mse", "psnr", "ssim")
#: The same errors inside the breast (the LE's): the easy background does not inflate them.
BREAST_METRICS: tuple[str, ...] = ("breast_mse", "breast_psnr")
#: Inside the lesion, where a lesion mask is known (the phantom's, or the manifest's
#: ``lesion_mask`` column; data sets without annotations have none).
LESION_METRICS: tuple[str, ...] = ("lesion_mae", "lesion_mse", "lesion_psnr")
#: Lesion contrast of the real and the synthetic DES (:func:`lesion_contrast_summary`): their
#: means over the pairs with a contrast, per label, and their Pearson r.
CONTRAST_METRICS: tuple[str, ...] = (
    "lesion_contrast_real",
    "lesion_contrast_synthetic",
    "lesion_contrast_real_benign",
    "lesion_contrast_synthetic_benign",
    "lesion_contrast_real_malignant",
    "lesion_contrast_synthetic_malignant",
    "lesion_contrast_r",
)
#: How many pairs each contrast figure is taken over (the r over all pairs with a contrast).
CONTRAST_COUNTS: dict[str, str] = {
    "lesion_contrast_real": "lesion_contrast_pairs",
    "lesion_contrast_synthetic": "lesion_contrast_pairs",
    "lesion_contrast_real_benign": "lesion_contrast_benign_pairs",
    "lesion_contrast_synthetic_benign": "lesion_contrast_benign_pairs",
    "lesion_contrast_real_malignant": "lesion_contrast_malignant_pairs",
    "lesion_contrast_synthetic_malignant": "lesion_contrast_malignant_pairs",
    "lesion_contrast_r": "lesion_contrast_pairs",
}
#: Each lesion figure of Table 3 and the count (of a fold's ``test_generation``) it is over.
LESION_FIGURES: dict[str, str] = {
    **dict.fromkeys(LESION_METRICS, "lesion_images"),
    **CONTRAST_COUNTS,
}
#: What each figure's count is called in a summary over folds
#: (``Training.run.generation_summary``): the test pairs of the folds that define it. The
#: r has a count of its own: a fold with a contrast on fewer than 3 pairs has no r, so
#: its pairs are not behind the mean r (they are behind the mean contrasts).
LESION_SUMMARY_COUNTS: dict[str, str] = LESION_FIGURES | {
    "lesion_contrast_r": "lesion_contrast_r_pairs"
}
#: The ring around a lesion that its contrast is measured against: this many pixels wide.
RING_PIXELS = 3
#: How the generation tables print each metric: title and decimals.
GENERATION_TITLES: dict[str, str] = {
    "mse": "MSE",
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "breast_mse": "MSE in breast",
    "breast_psnr": "PSNR in breast (dB)",
    "lesion_mae": "MAE in lesion",
    "lesion_mse": "MSE in lesion",
    "lesion_psnr": "PSNR in lesion (dB)",
    "lesion_contrast_real": "lesion contrast, real DES",
    "lesion_contrast_synthetic": "lesion contrast, synthetic DES",
    "lesion_contrast_real_benign": "lesion contrast benign, real DES",
    "lesion_contrast_synthetic_benign": "lesion contrast benign, synthetic DES",
    "lesion_contrast_real_malignant": "lesion contrast malignant, real DES",
    "lesion_contrast_synthetic_malignant": "lesion contrast malignant, synthetic DES",
    "lesion_contrast_r": "r of lesion contrast, real vs synthetic",
}
GENERATION_DIGITS: dict[str, int] = {
    "mse": 4,
    "psnr": 2,
    "ssim": 3,
    "breast_mse": 4,
    "breast_psnr": 2,
    "lesion_mae": 4,
    "lesion_mse": 4,
    "lesion_psnr": 2,
    **{metric: 3 for metric in CONTRAST_METRICS},
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
    return format_mean_and_error(*mean_and_standard_error(values), scale=scale, digits=digits)


def format_mean_and_error(
    mean: float | None, error: float | None, scale: float = 100.0, digits: int = 2
) -> str:
    """``mean ± error`` scaled (percent by default): ``n/a`` for a missing or undefined
    mean, the mean alone for an undefined error (one fold). The one way tables print it.

    >>> format_mean_and_error(0.6152, 0.1067), format_mean_and_error(0.5, None)
    ('61.52 ± 10.67', '50.00')
    """
    if mean is None or math.isnan(mean):
        return "n/a"
    if error is None or math.isnan(error):
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
    easy and inflates whole-image scores); ``lesion_mae``, ``lesion_mse``, ``lesion_psnr``:
    the errors inside the lesion, which covers under 1 % of the image and is what the
    synthetic DES is for. A region without a mask, or with an empty one, gives NaN
    (undefined, never a value from no pixels); :func:`average_generation_metrics` counts
    what is defined.
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
    if lesion is not None and lesion.any():
        result["lesion_mae"] = float(np.mean(np.abs(synthetic_des[lesion] - real_des[lesion])))
        result["lesion_mse"], result["lesion_psnr"] = _mse_and_psnr(
            real_des[lesion], synthetic_des[lesion]
        )
    else:
        result["lesion_mae"] = result["lesion_mse"] = result["lesion_psnr"] = math.nan
    return result


def lesion_contrast(image: np.ndarray, lesion: np.ndarray, breast: np.ndarray) -> float:
    """Mean inside the lesion minus the mean of a ring around it, inside the breast: whether
    an image (a real or a synthetic DES) shows the lesion. NaN without a lesion or a ring.

    The ring is :data:`RING_PIXELS` wide; the one definition used by training's test
    metrics and by the phantom check.

    >>> disc = np.zeros((16, 16)); disc[6:10, 6:10] = 1.0
    >>> lesion_contrast(disc + 0.2, disc > 0, np.ones((16, 16), bool))
    1.0
    """
    lesion = np.asarray(lesion, dtype=bool)
    if not lesion.any():
        return math.nan
    ring = ndimage.binary_dilation(lesion, iterations=RING_PIXELS) & ~lesion
    ring &= np.asarray(breast, dtype=bool)
    if not ring.any():
        return math.nan
    image = np.asarray(image, dtype=np.float64)
    return float(image[lesion].mean() - image[ring].mean())


def pearson_r(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Pearson r over the pairs where both are defined; NaN (JSON ``null``) for fewer than 3
    pairs or a constant series, where a correlation means nothing.

    >>> pearson_r([1.0, 2.0, 3.0, math.nan], [2.0, 4.0, 7.0, 1.0]) > 0.99
    True
    >>> math.isnan(pearson_r([1.0, 2.0], [1.0, 2.0]))
    True
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    both = ~(np.isnan(x) | np.isnan(y))
    x, y = x[both], y[both]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:  # ptp: exact; std rounds
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def contrast_by_label(
    real: np.ndarray, synthetic: np.ndarray, labels: np.ndarray
) -> dict[str, float | int]:
    """Mean lesion contrast of the real and of the synthetic DES per label (benign 0,
    malignant 1), and over how many pairs: does the generator draw malignant lesions
    brighter than benign ones, as the real DES does? NaN for a label without pairs."""
    result: dict[str, float | int] = {}
    for name, label in (("benign", 0), ("malignant", 1)):
        chosen = np.asarray(labels) == label
        result[f"{name}_pairs"] = int(chosen.sum())
        result[f"real_{name}"] = float(real[chosen].mean()) if chosen.any() else math.nan
        result[f"synthetic_{name}"] = float(synthetic[chosen].mean()) if chosen.any() else math.nan
    return result


def lesion_contrast_summary(
    per_pair: Sequence[Mapping[str, float]], labels: Sequence[int | None]
) -> dict[str, float | int]:
    """:data:`CONTRAST_METRICS` and their counts over test pairs whose metrics hold
    ``lesion_contrast_real`` and ``lesion_contrast_synthetic`` (both defined).

    Pairs without a lesion mask have neither: a data set without masks gives counts 0 and
    NaN figures, not an error. ``labels`` are the pairs' biopsy labels (0 benign,
    1 malignant; others, e.g. ``normal``, count in the overall figures only).

    >>> pairs = [{"lesion_contrast_real": r, "lesion_contrast_synthetic": r / 2}
    ...          for r in (0.1, 0.3, 0.5)]
    >>> summary = lesion_contrast_summary(pairs, [0, 1, 1])
    >>> summary["lesion_contrast_pairs"], round(summary["lesion_contrast_r"], 3)
    (3, 1.0)
    >>> summary["lesion_contrast_malignant_pairs"], summary["lesion_contrast_real_malignant"]
    (2, 0.4)
    """
    chosen = [
        (pair["lesion_contrast_real"], pair["lesion_contrast_synthetic"], label)
        for pair, label in zip(per_pair, labels, strict=True)
        if math.isfinite(pair.get("lesion_contrast_real", math.nan))
        and math.isfinite(pair.get("lesion_contrast_synthetic", math.nan))
    ]
    real = np.array([item[0] for item in chosen], dtype=float)
    synthetic = np.array([item[1] for item in chosen], dtype=float)
    classes = np.array([-1 if item[2] is None else int(item[2]) for item in chosen], dtype=int)
    summary: dict[str, float | int] = {
        "lesion_contrast_pairs": len(chosen),
        "lesion_contrast_real": float(real.mean()) if chosen else math.nan,
        "lesion_contrast_synthetic": float(synthetic.mean()) if chosen else math.nan,
    }
    by_label = contrast_by_label(real, synthetic, classes)
    summary |= {f"lesion_contrast_{key}": value for key, value in by_label.items()}
    summary["lesion_contrast_r"] = pearson_r(real, synthetic)
    return summary


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


#: Table 3's lesion columns (experiments and report): title and the figures in each cell.
LESION_COLUMNS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("MAE in lesion", ("lesion_mae",), "lesion_images"),
    ("PSNR in lesion (dB)", ("lesion_psnr",), "lesion_images"),
    (
        "lesion contrast benign, real / synthetic DES",
        ("lesion_contrast_real_benign", "lesion_contrast_synthetic_benign"),
        "lesion_contrast_benign_pairs",
    ),
    (
        "lesion contrast malignant, real / synthetic DES",
        ("lesion_contrast_real_malignant", "lesion_contrast_synthetic_malignant"),
        "lesion_contrast_malignant_pairs",
    ),
    ("r of lesion contrast, real vs synthetic", ("lesion_contrast_r",), "lesion_contrast_r_pairs"),
)


def lesion_cells(summary: Mapping[str, object]) -> list[str]:
    """Table 3's lesion cells of one view's summary (``Training.run.generation_summary``):
    mean ± SE over folds of each figure, then ``(n …)``, the test pairs behind it (of the
    folds that define it); ``n/a`` where no image had a mask (or a run predates lesion figures).

    >>> lesion_cells({"lesion_mae": [0.0125, 0.001], "lesion_images": 24})[0]
    '0.0125 ± 0.0010 (n 24)'
    >>> lesion_cells({})[-1]
    'n/a'
    """
    cells = []
    for _, metrics, count in LESION_COLUMNS:
        parts = [
            _mean_se_text(summary.get(metric), GENERATION_DIGITS[metric]) for metric in metrics
        ]
        if all(part == "n/a" for part in parts):
            cells.append("n/a")
            continue
        cells.append(f"{' / '.join(parts)} (n {int(summary.get(count) or 0)})")
    return cells


def _mean_se_text(value: object, digits: int) -> str:
    """:func:`format_mean_and_error` of a ``[mean, se]`` pair as summaries store it."""
    if not isinstance(value, Sequence) or not value:
        return "n/a"
    mean, error = (*value, None)[:2]
    return format_mean_and_error(mean, error, scale=1.0, digits=digits)
