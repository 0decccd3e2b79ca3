"""The phantom's own ceilings: what its images show, from the lesions' true parameters.
Phantom figures are synthetic: they bound what the phantom allows, nothing clinical."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from Training.phantom_bounds import FEATURE_SETS, ceilings, lesion_features, population_bounds
from VirtualBiopsyLib.phantom.lesion import draw_lesion


@pytest.fixture(scope="module")
def population() -> dict[str, float]:
    return dict(population_bounds(4000, seed=1))


def test_what_des_shows_bounds_c_below_everything_it_holds(population) -> None:
    """Enhancement alone < what DES shows at the networks' grid < with the margin's shape.

    The values are the phantom's design (README, "Making the method work"): a change of
    the lesion model that moves them must be written down there.
    """
    assert population["enhancement"] < population["des_visible"] < population["des_all"]
    assert 0.86 < population["enhancement"] < 0.92
    assert 0.92 < population["des_visible"] < 0.97
    assert 0.88 < population["le_visible"] < 0.95  # LE morphology carries most of the label


def test_features_read_the_lesion_and_the_tissue_that_masks_it() -> None:
    rng = np.random.default_rng(3)
    spec = draw_lesion(rng, "malignant")
    fatty, dense = lesion_features(spec, 0.0), lesion_features(spec, 0.8)
    assert fatty["masked_density"] == pytest.approx(spec.le_density)
    assert dense["masked_density"] < 0.5 * fatty["masked_density"]
    assert fatty["diameter_mm"] == spec.diameter_mm
    assert fatty["spicules"] == len(spec.spicules)
    silent = lesion_features(replace(spec, pattern="none"), 0.0)
    assert silent["enhancement"] == 0.0 and silent["non_enhancing"] == 1.0
    every_column = {column for columns in FEATURE_SETS.values() for column in columns}
    assert every_column <= set(fatty)


def test_ceilings_are_undefined_on_one_class() -> None:
    rows = [lesion_features(draw_lesion(np.random.default_rng(n), "benign"), 0.3) for n in range(8)]
    result = ceilings(rows, np.zeros(8, dtype=int))
    assert set(result) == set(FEATURE_SETS)
    assert all(math.isnan(value) for value in result.values())


def test_a_ceiling_fits_what_separates_the_labels() -> None:
    """A feature set that holds the label reaches AUC 1; the lone enhancement is unfitted."""
    labels = np.array([0, 1] * 20)
    rows = []
    for label in labels:
        row = dict.fromkeys({c for cols in FEATURE_SETS.values() for c in cols}, 0.0)
        row["diameter_mm"] = 10.0 + 10.0 * label  # only the diameter tells the labels apart
        rows.append(row)
    result = ceilings(rows, labels)
    assert result["des_visible"] == pytest.approx(1.0)
    assert result["enhancement"] == pytest.approx(0.5)
