"""MCC-weighted fusion (method.md Eq. 7–8) with hand-computed numbers."""

from __future__ import annotations

import math
import random

import pytest

from VirtualBiopsyLib.errors import CaseError
from VirtualBiopsyLib.fusion import (
    MCC_FLOOR,
    CaseFusion,
    fuse_case,
    fuse_modalities,
    fuse_views,
    mcc_weights,
)
from VirtualBiopsyLib.roles import Modality, View

SLOT_MCC = {"LE_CC": 0.30, "LE_MLO": 0.10, "DES_CC": 0.60, "DES_MLO": 0.40}
MODALITY_MCC = {"LE": 0.20, "DES": 0.60}


def test_eq_7_and_8_reproduced_by_hand() -> None:
    probabilities = {"LE_CC": 0.40, "LE_MLO": 0.20, "DES_CC": 0.90, "DES_MLO": 0.70}
    # Eq. 7: p[LE]  = (0.40·0.30 + 0.20·0.10) / (0.30 + 0.10) = 0.14 / 0.40 = 0.35
    #        p[DES] = (0.90·0.60 + 0.70·0.40) / (0.60 + 0.40) = 0.82 / 1.00 = 0.82
    # Eq. 8: p      = (0.35·0.20 + 0.82·0.60) / (0.20 + 0.60) = 0.562 / 0.80 = 0.7025
    fused = fuse_case(probabilities, SLOT_MCC, MODALITY_MCC)
    assert fused.views["LE"].probability == pytest.approx(0.35)
    assert fused.views["DES"].probability == pytest.approx(0.82)
    assert fused.probability == pytest.approx(0.7025)
    assert fused.label == "malignant"
    assert fused.missing_slots == ()
    assert fused.views["LE"].weights == pytest.approx({"CC": 0.75, "MLO": 0.25})
    assert fused.modalities.weights == pytest.approx({"LE": 0.25, "DES": 0.75})
    assert fused.modalities.rule == "mcc"


def test_missing_view_is_dropped_and_weights_renormalised() -> None:
    probabilities = {"LE_CC": 0.40, "LE_MLO": 0.20, "DES_CC": 0.90, "DES_MLO": None}
    # p[DES] = 0.90 alone (weight 1); p = (0.35·0.20 + 0.90·0.60) / 0.80 = 0.7625
    fused = fuse_case(probabilities, SLOT_MCC, MODALITY_MCC)
    assert fused.views["DES"].weights == {"CC": 1.0}
    assert fused.views["DES"].missing == ("MLO",)
    assert fused.missing_slots == ("DES_MLO",)
    assert fused.probability == pytest.approx(0.7625)


def test_slot_absent_from_mapping_counts_as_missing() -> None:
    fused = fuse_case({"LE_CC": 0.40, "DES_CC": 0.90}, SLOT_MCC, MODALITY_MCC)
    assert fused.missing_slots == ("LE_MLO", "DES_MLO")
    # p = (0.40·0.20 + 0.90·0.60) / 0.80 = 0.62 / 0.80 = 0.775
    assert fused.probability == pytest.approx(0.775)


def test_missing_modality_leaves_the_other_alone() -> None:
    fused = fuse_case({"LE_CC": 0.40, "LE_MLO": 0.20}, SLOT_MCC, MODALITY_MCC)
    assert fused.modalities.missing == ("DES",)
    assert fused.modalities.weights == {"LE": 1.0}
    assert "DES" not in fused.views
    assert fused.probability == pytest.approx(0.35)
    assert fused.label == "benign"


def test_nothing_present_raises_case_error() -> None:
    with pytest.raises(CaseError, match="no LE or DES"):
        fuse_case({"LE_CC": None, "DES_MLO": None}, SLOT_MCC, MODALITY_MCC)
    with pytest.raises(CaseError, match="every view is missing"):
        fuse_views({"CC": None, "MLO": None}, {"CC": 0.5, "MLO": 0.5})


def test_all_non_positive_mcc_gives_equal_weights() -> None:
    result = fuse_views({"CC": 0.8, "MLO": 0.2}, {"CC": -0.2, "MLO": 0.0})
    assert result.rule == "equal"
    assert result.weights == {"CC": 0.5, "MLO": 0.5}
    assert result.probability == pytest.approx(0.5)


def test_non_positive_mcc_is_raised_to_the_floor() -> None:
    # weights: LE → 0.01 (floor), DES → 0.49; normalised 0.02 and 0.98
    # p = 0.10·0.02 + 0.90·0.98 = 0.884
    result = fuse_modalities({"LE": 0.10, "DES": 0.90}, {"LE": -0.30, "DES": 0.49})
    assert MCC_FLOOR == 0.01
    assert result.rule == "floored"
    assert result.weights == pytest.approx({"LE": 0.02, "DES": 0.98})
    assert result.probability == pytest.approx(0.884)


def test_nan_mcc_is_treated_as_non_positive() -> None:
    weights, rule = mcc_weights({"CC": math.nan, "MLO": 0.99})
    assert rule == "floored"
    assert weights == pytest.approx({"CC": 0.01, "MLO": 0.99})
    assert mcc_weights({"CC": math.nan, "MLO": -1.0}) == ({"CC": 0.5, "MLO": 0.5}, "equal")


def test_roles_or_names_as_keys_give_the_same_result() -> None:
    by_role = fuse_views({View.CC: 0.8, View.MLO: 0.4}, {View.CC: 0.6, View.MLO: 0.2})
    by_name = fuse_views({"CC": 0.8, "MLO": 0.4}, {"CC": 0.6, "MLO": 0.2})
    assert by_role == by_name
    by_modality = fuse_modalities({Modality.LE: 0.3}, {Modality.LE: 0.1})
    assert by_modality.weights == {"LE": 1.0}


@pytest.mark.parametrize("bad", [math.nan, -0.1, 1.5])
def test_probability_outside_unit_interval_is_refused(bad: float) -> None:
    with pytest.raises(CaseError, match="CC"):
        fuse_views({"CC": bad, "MLO": 0.5}, {"CC": 0.5, "MLO": 0.5})


def test_present_view_without_mcc_is_refused() -> None:
    with pytest.raises(CaseError, match="no validation MCC for view MLO"):
        fuse_views({"CC": 0.5, "MLO": 0.5}, {"CC": 0.5})


def test_threshold_is_inclusive_and_configurable() -> None:
    fused = fuse_case({"DES_CC": 0.5}, SLOT_MCC, MODALITY_MCC)
    assert fused.label == "malignant"  # p ≥ 0.5 is malignant (Algorithm 1, step 5)
    stricter = fuse_case({"DES_CC": 0.5}, SLOT_MCC, MODALITY_MCC, threshold=0.6)
    assert stricter.label == "benign"


def test_fused_probability_is_a_convex_combination() -> None:
    rng = random.Random(7)
    for _ in range(200):
        probabilities = {slot: rng.random() for slot in SLOT_MCC}
        slot_mcc = {slot: rng.uniform(-1, 1) for slot in SLOT_MCC}
        modality_mcc = {"LE": rng.uniform(-1, 1), "DES": rng.uniform(-1, 1)}
        fused = fuse_case(probabilities, slot_mcc, modality_mcc)
        assert min(probabilities.values()) - 1e-12 <= fused.probability
        assert fused.probability <= max(probabilities.values()) + 1e-12
        for result in [*fused.views.values(), fused.modalities]:
            assert sum(result.weights.values()) == pytest.approx(1.0)
            assert all(weight > 0 for weight in result.weights.values())


def test_to_dict_records_weights_and_missing() -> None:
    fused = fuse_case({"LE_CC": 0.4, "DES_CC": 0.9}, SLOT_MCC, MODALITY_MCC)
    record = fused.to_dict()
    assert isinstance(fused, CaseFusion)
    assert record["missing_slots"] == ["LE_MLO", "DES_MLO"]
    assert record["views"]["LE"]["missing"] == ["MLO"]
    assert record["modalities"]["weights"] == pytest.approx({"LE": 0.25, "DES": 0.75})
    assert record["label"] == fused.label
