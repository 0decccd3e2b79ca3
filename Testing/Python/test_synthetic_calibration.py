"""Synthetic-DES recalibration: the fit, the package field, and where it is applied.

A generator that draws lesions fainter than real keeps the real-DES classifier's ranking
of synthetic DES but moves its probabilities below the threshold (phantom check: Ĉ G-mean
0 at AUC 76 %). Each DES classifier carries one logit shift, fit on its fold's validation
synthetic DES; ``predict`` and the held-out scoring apply it to synthetic DES only.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from Training.holdout import _fold_probabilities
from Training.metrics import classification_metrics
from VirtualBiopsyLib.calibration import (
    MAX_LOGIT_SHIFT,
    fit_logit_shift,
    logit,
    shift_probability,
)
from VirtualBiopsyLib.errors import ModelPackageError
from VirtualBiopsyLib.inference.fixtures import write_slot_folder, write_untrained_package
from VirtualBiopsyLib.inference.pipeline import Pipeline
from VirtualBiopsyLib.inference.runner import gather_cases
from VirtualBiopsyLib.models.package import load_package
from VirtualBiopsyLib.roles import Source

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _scores(seed: int = 0, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Logits of a useful classifier: malignant around +1.5, benign around −1.5."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 3 != 0).astype(int)  # two thirds malignant, as the phantom
    return np.where(labels == 1, 1.5, -1.5) + rng.normal(0.0, 1.2, n), labels


# --- the fit -------------------------------------------------------------------------------


def test_the_shift_undoes_a_uniform_logit_offset() -> None:
    """Equivariance: offsetting every logit by c moves the fitted shift by exactly −c."""
    logits, labels = _scores()
    base = fit_logit_shift(_sigmoid(logits), labels)
    for offset in (-3.0, -1.0, 2.0):
        assert fit_logit_shift(_sigmoid(logits + offset), labels) == pytest.approx(
            base - offset, abs=1e-6
        )


def test_the_shift_balances_the_classes_whatever_their_counts() -> None:
    logits, labels = _scores()
    once = fit_logit_shift(_sigmoid(logits), labels)
    negatives = labels == 0
    tripled = fit_logit_shift(
        _sigmoid(np.concatenate([logits, logits[negatives], logits[negatives]])),
        np.concatenate([labels, labels[negatives], labels[negatives]]),
    )
    assert tripled == pytest.approx(once, abs=1e-6)
    symmetric = fit_logit_shift(_sigmoid(np.array([-2.0, -1.0, 1.0, 2.0])), [0, 0, 1, 1])
    assert symmetric == pytest.approx(0.0, abs=1e-9)


def test_a_fainter_synthetic_path_gets_its_sensitivity_back_and_keeps_its_auc() -> None:
    """What the phantom check showed: every synthetic probability below 0.5."""
    logits, labels = _scores(seed=1)
    synthetic = _sigmoid(0.6 * logits - 4.0)  # compressed and pulled down
    before = classification_metrics(labels, synthetic, 0.5)
    assert before["g_mean"] == 0.0  # nothing called malignant
    shift = fit_logit_shift(synthetic, labels)
    calibrated = np.array([shift_probability(p, shift) for p in synthetic])
    after = classification_metrics(labels, calibrated, 0.5)
    assert after["auc"] == pytest.approx(before["auc"], abs=1e-12)
    assert after["g_mean"] > 0.6 and after["mcc"] > 0.3


def test_no_shift_without_both_classes_and_a_bounded_one_when_separable() -> None:
    assert fit_logit_shift([0.2, 0.3, 0.9], [1, 1, 1]) is None
    assert fit_logit_shift([], []) is None
    with pytest.raises(ValueError, match=r"0 \(benign\) or 1 \(malignant\), not \[2.0\]"):
        fit_logit_shift([0.2, 0.3, 0.9], [0, 1, 2])
    with pytest.raises(ValueError, match="3 probabilities for 2 labels"):
        fit_logit_shift([0.1, 0.2, 0.3], [0, 1])
    extreme = fit_logit_shift([1e-12, 2e-12, 3e-12], [0, 1, 1])
    assert extreme == MAX_LOGIT_SHIFT
    assert shift_probability(0.3, None) == 0.3
    assert math.isfinite(float(logit(0.0))) and math.isfinite(float(logit(1.0)))


# --- the package -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory):
    """The same untrained networks without and with synthetic-DES shifts (1.5 + 0.25 k)."""
    root = tmp_path_factory.mktemp("calibration")
    plain = write_untrained_package(root / "plain", n_folds=2, image_size=64)
    shifted = write_untrained_package(
        root / "shifted", n_folds=2, image_size=64, synthetic_logit_shift=1.5
    )
    return load_package(plain), load_package(shifted)


def test_the_package_keeps_a_shift_per_des_classifier_only(packages) -> None:
    plain, shifted = packages
    assert [f.classifiers["DES_CC"].synthetic_logit_shift for f in shifted.folds] == [1.5, 1.75]
    assert shifted.folds[0].classifiers["LE_CC"].synthetic_logit_shift is None
    assert all(e.synthetic_logit_shift is None for f in plain.folds for e in f.classifiers.values())
    manifest = json.loads((shifted.directory / "model.json").read_text())
    assert manifest["folds"][1]["classifiers"]["DES_MLO"]["synthetic_logit_shift"] == 1.75
    assert "synthetic_logit_shift" not in manifest["folds"][0]["classifiers"]["LE_MLO"]


def test_a_shift_out_of_range_is_refused_naming_the_file(packages, tmp_path) -> None:
    import shutil

    _, shifted = packages
    broken = shutil.copytree(shifted.directory, tmp_path / "broken")
    manifest = json.loads((broken / "model.json").read_text())
    manifest["folds"][0]["classifiers"]["DES_CC"]["synthetic_logit_shift"] = 40.0
    (broken / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelPackageError, match=r"model\.json"):
        load_package(broken)


def test_a_shift_for_an_le_classifier_is_not_written(tmp_path) -> None:
    from VirtualBiopsyLib.models.classifiers import build_classifier
    from VirtualBiopsyLib.models.package import FoldModels, write_package

    fold = FoldModels(
        classifiers={"LE_CC": build_classifier("demo")},
        val_mcc={"LE_CC": 0.3},
        modality_mcc={"LE": 0.3},
        synthetic_logit_shift={"LE_CC": 1.0},
    )
    with pytest.raises(ValueError, match="synthetic-DES shift for \\['LE_CC'\\]"):
        write_package(tmp_path / "p", name="x", version="0", architecture="demo", folds=[fold])
    assert not (tmp_path / "p").exists()


# --- where it is applied ---------------------------------------------------------------------


def test_predict_shifts_synthetic_des_only_and_says_so(packages, tmp_path) -> None:
    folder = write_slot_folder(tmp_path / "exam", ["LE_CC", "LE_MLO", "DES_MLO"])
    [case] = gather_cases([folder]).cases
    results = []
    for package in packages:
        with Pipeline(package, saliency=False, synthesis_precision="float32") as pipeline:
            results.append(pipeline.run(case))
    plain, shifted = results
    assert shifted.inputs["DES_CC"].source is Source.SYNTHETIC
    raw = np.array(plain.image_probabilities["DES_CC"].folds)
    calibrated = np.array(shifted.image_probabilities["DES_CC"].folds)
    assert logit(calibrated) - logit(raw) == pytest.approx([1.5, 1.75], abs=1e-6)
    for slot in ("LE_CC", "LE_MLO", "DES_MLO"):  # real images: untouched
        assert shifted.image_probabilities[slot] == plain.image_probabilities[slot]
    notes = [w for w in shifted.warnings if "recalibrated" in w]
    assert notes == [
        "DES_CC: probability recalibrated for synthetic DES (logit shift per fold, mean +1.62)"
    ]
    assert not any("recalibrated" in w for w in plain.warnings)


def test_held_out_scoring_shifts_synthetic_images_as_predict_does(packages) -> None:
    plain, shifted = packages
    images = {
        "DES_CC": {f"c{i}": np.random.default_rng(i).random((64, 64), np.float32) for i in range(3)}
    }
    for fold, shift in enumerate((1.5, 1.75)):
        raw = _fold_probabilities(plain, fold, images, synthetic=True)
        real = _fold_probabilities(shifted, fold, images)
        synthetic = _fold_probabilities(shifted, fold, images, synthetic=True)
        for key in images["DES_CC"]:
            assert real[key] == raw[key]  # the same networks; real images are not shifted
            assert float(logit(synthetic[key]["DES_CC"]) - logit(raw[key]["DES_CC"])) == (
                pytest.approx(shift, abs=1e-6)
            )
