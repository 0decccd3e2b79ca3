"""Class-weighted cross-entropy (``ClassifierConfig.class_weighting``).

The phantom cohort is about 70 % malignant; with plain cross-entropy the tiny demo
classifiers learn the prevalence and put everyone above 0.5. "balanced" weights each
class by the inverse of its training frequency so probabilities centre on the threshold.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from Training.classifier_training import (
    ImageSet,
    _ClassifierLoop,
    class_weights,
    predict_probabilities,
    train_classifier,
)
from Training.config import AugmentConfig, ClassifierConfig
from Training.runtime import make_runtime
from VirtualBiopsyLib.models.classifiers import build_classifier

CONFIG = ClassifierConfig(
    architecture="demo",
    max_epochs=60,
    batch_size=8,
    learning_rate=1e-2,
    warmup_epochs=60,
    keep_best=False,
    augment=AugmentConfig(enabled=False),
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_balanced_weights_are_inverse_class_frequency() -> None:
    labels = torch.tensor([1, 1, 1, 1, 1, 1, 0, 0])  # 6 malignant, 2 benign
    weights = class_weights(labels, "balanced")
    # n / (2 · n_class): benign 8 / 4, malignant 8 / 12
    assert weights.tolist() == pytest.approx([2.0, 8 / 12])
    # each class then carries the same total weight
    assert float(weights[0] * 2) == pytest.approx(float(weights[1] * 6))


def test_no_weighting_and_a_missing_class_give_plain_cross_entropy() -> None:
    assert class_weights(torch.tensor([0, 1, 1]), "none") is None
    assert class_weights(torch.tensor([1, 1, 1]), "balanced") is None
    with pytest.raises(ValueError, match="uniform"):
        class_weights(torch.tensor([0, 1]), "uniform")


def test_validation_loss_is_the_weighted_cross_entropy() -> None:
    generator = torch.Generator().manual_seed(0)
    val = ImageSet(torch.rand(6, 1, 32, 32, generator=generator), torch.tensor([1, 1, 1, 1, 0, 0]))
    model = build_classifier("demo").eval()
    weights = torch.tensor([3.0, 0.5])
    loop = _ClassifierLoop(model, CONFIG, 0, make_runtime("cpu"), weights)
    assert torch.equal(loop.loss_function.weight, weights)
    with torch.no_grad():
        expected = nn.functional.cross_entropy(model(val.images), val.labels, weight=weights)
        plain = nn.functional.cross_entropy(model(val.images), val.labels)
    assert loop.validation_loss(val) == pytest.approx(float(expected), rel=1e-5)
    assert float(expected) != pytest.approx(float(plain), rel=1e-3)


def _uninformative(n_malignant: int, n_benign: int) -> ImageSet:
    """Identical images: the best a classifier can do is output its (weighted) prior."""
    labels = torch.tensor([1] * n_malignant + [0] * n_benign)
    return ImageSet(torch.full((len(labels), 1, 32, 32), 0.5), labels)


def test_balanced_weighting_centres_probabilities_on_the_threshold() -> None:
    data = _uninformative(n_malignant=12, n_benign=4)  # 75 % malignant
    plain = train_classifier(data, data, CONFIG, None, seed=0, progress=False)
    balanced = train_classifier(
        data, data, replace(CONFIG, class_weighting="balanced"), None, seed=0, progress=False
    )
    p_plain = predict_probabilities(plain.network, data.images).mean()
    p_balanced = predict_probabilities(balanced.network, data.images).mean()
    assert p_plain == pytest.approx(0.75, abs=0.05)
    assert p_balanced == pytest.approx(0.5, abs=0.05)
