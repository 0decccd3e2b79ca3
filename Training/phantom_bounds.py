"""What the phantom's lesions allow a classifier to reach, from their true parameters.

The phantom draws each lesion's parameters from label-dependent distributions
(:mod:`VirtualBiopsyLib.phantom.lesion`). A logistic regression on the *true* values of
the parameters an image shows, scored by 5-fold cross-validation, is an upper reference
for any classifier of that image: the image shows each parameter only through noise,
anatomy, background enhancement and a coarse grid, never better than its true value.
It separates what an image shows from the hidden variables behind it:

- ``des_visible``: enhancement strength, pattern (rim, none, heterogeneous) and diameter,
  everything a DES shows whose scale survives the networks' grid. The enhancing margin's
  lobulation also carries the label (it grows with the latent aggressiveness), but at most
  17 % of a radius that spans 2–7 pixels at 128², a pixel or less, so it is left out;
- ``des_all``: the same with the latent aggressiveness standing for the margin's shape,
  the ceiling when every detail of the DES is resolved;
- ``le_visible``: LE density as dense tissue masks it, diameter, spicule count, margin
  blur and margin irregularity: what LE morphology shows, without the latent itself;
- ``enhancement``: the enhancement strength alone (no fitting).

:func:`population_bounds` computes them on a large draw of the generative model (no
rendering; 5–10 s for 20 000 lesions on two cores), so the ceilings carry no cohort
sampling noise; :func:`ceilings` computes the same on any lesions, a check cohort's own.
Phantom figures are synthetic: they say what the phantom allows, nothing clinical.

>>> bounds = population_bounds(2000, seed=0)
>>> bounds["enhancement"] < bounds["des_visible"] < bounds["des_all"]
True
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from Training.metrics import auc
from VirtualBiopsyLib.phantom.anatomy import draw_breast_shape
from VirtualBiopsyLib.phantom.enhancement import LE_DENSITY_MASKING
from VirtualBiopsyLib.phantom.lesion import LesionSpec, draw_lesion
from VirtualBiopsyLib.phantom.plan import ACR_WEIGHTS, MALIGNANT_SHARE

#: The feature sets (columns of :func:`lesion_features`) each ceiling is fitted on.
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "enhancement": ("enhancement",),
    "des_visible": ("enhancement", "rim", "non_enhancing", "heterogeneous", "diameter_mm"),
    "des_all": (
        "enhancement",
        "rim",
        "non_enhancing",
        "heterogeneous",
        "diameter_mm",
        "aggressiveness",
    ),
    "le_visible": (
        "masked_density",
        "diameter_mm",
        "spicules",
        "margin_blur",
        "margin_irregularity",
    ),
}
POPULATION_LESIONS = 20_000
CV_FOLDS = 5


def lesion_features(spec: LesionSpec, glandular_fraction: float) -> dict[str, float]:
    """The true parameters of one lesion that its images show (see the module doc).

    ``glandular_fraction``: the breast's, standing for the tissue that masks the lesion's
    LE density (:func:`VirtualBiopsyLib.phantom.enhancement.form_low_energy`).
    """
    enhancing = spec.pattern != "none"
    return {
        "enhancement": spec.enhancement if enhancing else 0.0,
        "rim": float(spec.pattern == "rim"),
        "non_enhancing": float(not enhancing),
        "heterogeneous": float(spec.pattern == "heterogeneous"),
        "diameter_mm": spec.diameter_mm,
        "aggressiveness": spec.aggressiveness,
        "masked_density": spec.le_density * (1.0 - LE_DENSITY_MASKING * glandular_fraction),
        "spicules": float(len(spec.spicules)),
        "margin_blur": spec.margin_blur,
        "margin_irregularity": sum(a for order, a, _ in spec.margin_harmonics if order > 2),
    }


def cross_validated_probabilities(features: Sequence[Sequence[float]], labels: np.ndarray):
    """Out-of-fold probabilities of a standardised logistic regression (5 folds); NaN
    when a class has fewer than 5 cases."""
    labels = np.asarray(labels, dtype=int)
    if min(np.bincount(labels, minlength=2)) < CV_FOLDS:
        return np.full(len(labels), math.nan)
    model = make_pipeline(StandardScaler(), LogisticRegression())
    folds = StratifiedKFold(CV_FOLDS, shuffle=True, random_state=0)
    x = np.asarray(features, dtype=float)
    return cross_val_predict(model, x, labels, cv=folds, method="predict_proba")[:, 1]


def ceilings(features: Sequence[dict[str, float]], labels: np.ndarray) -> dict[str, float]:
    """The cross-validated AUC of every feature set (the lone enhancement unfitted)."""
    labels = np.asarray(labels, dtype=int)
    result = {}
    for name, columns in FEATURE_SETS.items():
        x = np.array([[row[column] for column in columns] for row in features], dtype=float)
        scores = x[:, 0] if len(columns) == 1 else cross_validated_probabilities(x, labels)
        result[name] = math.nan if np.isnan(scores).any() else auc(labels, scores)
    return result


@functools.cache
def population_bounds(lesions: int = POPULATION_LESIONS, seed: int = 0) -> dict[str, float]:
    """The ceilings on ``lesions`` fresh draws of the phantom's generative model.

    Labels follow the cohorts' malignant share and densities the cohorts' ACR shares; each
    draw is a breast shape (its glandular fraction) and a lesion, as a cohort draws them.
    Cached per process (deterministic in its arguments): copy the result before changing it.
    """
    rng = np.random.default_rng(seed)
    categories = list(ACR_WEIGHTS)
    features, labels = [], []
    for _ in range(lesions):
        malignant = bool(rng.random() < MALIGNANT_SHARE)
        density = str(rng.choice(categories, p=list(ACR_WEIGHTS.values())))
        glandular = draw_breast_shape(rng, density).glandular_target
        spec = draw_lesion(rng, "malignant" if malignant else "benign")
        features.append(lesion_features(spec, glandular))
        labels.append(int(malignant))
    return ceilings(features, np.array(labels))
