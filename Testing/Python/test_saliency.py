"""Grad-CAM: a known answer, gradients only at the hooked layer, maps drawn on the original."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813 (the conventional alias)
import torch
from torch import nn

from VirtualBiopsyLib.images.mammogram import ImageInfo, MammogramImage
from VirtualBiopsyLib.images.preprocessing import PreprocessingParams, preprocess
from VirtualBiopsyLib.inference.fixtures import write_slot_folder, write_untrained_package
from VirtualBiopsyLib.inference.pipeline import Pipeline
from VirtualBiopsyLib.inference.report import display_stride
from VirtualBiopsyLib.inference.runner import gather_cases
from VirtualBiopsyLib.inference.saliency import cam_from, grad_cam
from VirtualBiopsyLib.models.classifiers import build_classifier
from VirtualBiopsyLib.models.package import load_package
from VirtualBiopsyLib.roles import Laterality


class BrightSpotClassifier(nn.Module):
    """Malignancy logit = mean brightness: Grad-CAM must light up where the image is bright.

    ``features`` is an identity convolution, so its activations are the image itself and
    the gradient of the malignant logit is a positive constant: the map is the image.
    """

    def __init__(self) -> None:
        super().__init__()
        self.identity = nn.Conv2d(1, 1, kernel_size=1, bias=False)
        with torch.no_grad():
            self.identity.weight.fill_(1.0)
        self.linear = nn.Linear(1, 2)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[-4.0], [4.0]]))
            self.linear.bias.zero_()

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.identity(images)

    def head(self, activations: torch.Tensor) -> torch.Tensor:
        return self.linear(activations.mean(dim=(2, 3)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def spot_image(size: int, row: int, col: int) -> torch.Tensor:
    image = torch.zeros(1, 1, size, size)
    image[0, 0, row - 2 : row + 3, col - 2 : col + 3] = 1.0
    return image


def test_grad_cam_lights_up_the_evidence():
    model = BrightSpotClassifier().eval()
    probability, maps = grad_cam(model, spot_image(32, 8, 20))
    row, col = np.unravel_index(int(maps[0].argmax()), maps[0].shape)
    assert abs(row - 8) <= 2 and abs(col - 20) <= 2
    assert float(maps[0].max()) == pytest.approx(1.0)
    assert float(maps[0, 28, 2]) == 0.0  # no evidence far from the spot
    with torch.no_grad():
        expected = torch.softmax(model(spot_image(32, 8, 20)), dim=1)[0, 1]
    assert float(probability[0]) == pytest.approx(float(expected))


def test_probability_matches_the_model_and_no_parameter_gets_a_gradient():
    model = build_classifier("demo").eval()
    images = torch.rand(2, 1, 64, 64)
    probability, maps = grad_cam(model, images)
    with torch.inference_mode():
        expected = model.probability(images)
    assert torch.allclose(probability, expected, atol=1e-6)
    assert maps.shape == (2, 64, 64)
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())  # flags restored


@pytest.mark.parametrize("architecture", ["demo", "resnet18", "vgg16"])
def test_grad_cam_equals_autograd_through_the_whole_network(architecture):
    """The cut at the CAM layer changes nothing: same map as a hook on the full network."""
    model = build_classifier(architecture).eval()
    images = torch.rand(1, 1, 64, 64)
    captured = {}

    def keep(_module, _inputs, output):
        output.retain_grad()
        captured["a"] = output

    handle = model.cam_layer.register_forward_hook(keep)
    model(images)[0, 1].backward()
    handle.remove()
    expected = cam_from(captured["a"].detach(), captured["a"].grad, (64, 64))
    _, maps = grad_cam(model, images)
    assert torch.allclose(maps, expected, atol=1e-5)


def test_negative_evidence_gives_an_empty_map():
    activations = torch.ones(1, 3, 4, 4)
    gradients = -torch.ones(1, 3, 4, 4)
    assert float(cam_from(activations, gradients, (8, 8)).abs().max()) == 0.0


def test_map_drawn_back_on_a_left_breast_lands_on_the_lesion():
    """Preprocessing flips left breasts; the map must be flipped back onto the original."""
    original = np.zeros((300, 200), np.float32)
    original[60:80, 20:40] = 1.0  # lesion near the nipple side (left of the image)
    info = ImageInfo(path=Path("le_cc.nrrd"), format="nrrd", laterality=Laterality.L)
    prepared = preprocess(
        MammogramImage(info, original, windowed=True), PreprocessingParams(size=64)
    )
    assert prepared.geometry.flipped
    _, maps = grad_cam(BrightSpotClassifier().eval(), torch.from_numpy(prepared.array)[None, None])
    on_original = prepared.geometry.map_to_original(maps[0].numpy())
    assert on_original.shape == original.shape
    row, col = np.unravel_index(int(on_original.argmax()), on_original.shape)
    assert 55 <= row <= 85 and 15 <= col <= 45


@pytest.fixture
def bright_spot_package(tmp_path, monkeypatch):
    """A package whose every classifier is the known-answer :class:`BrightSpotClassifier`."""
    package = load_package(write_untrained_package(tmp_path / "p", n_folds=2, image_size=64))
    monkeypatch.setattr(
        type(package),
        "load_classifier",
        lambda self, fold, slot, device="cpu": BrightSpotClassifier().eval(),
    )
    return package


def test_right_breast_saliency_maps_back_unflipped(bright_spot_package, tmp_path):
    """Right breasts are not flipped by preprocessing; their map must not come back flipped."""
    folder = write_slot_folder(tmp_path / "right", ["LE_CC"], laterality="R", seed=3)
    [case] = gather_cases([folder]).cases
    outcome = Pipeline(bright_spot_package, synthesis=False).run(case)
    assert outcome.laterality == "R"
    assert Path(outcome.inputs["LE_CC"].path).name == "LE_CC.nrrd"
    assert outcome.modality_probabilities.keys() == {"LE"}
    saliency = outcome.saliency["LE_CC"].pixels
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "LE_CC.nrrd")))
    assert saliency.shape == image.shape
    upright = np.corrcoef(saliency.ravel(), image.ravel())[0, 1]
    mirrored = np.corrcoef(saliency.ravel(), image[:, ::-1].ravel())[0, 1]
    assert upright > 0.5 and upright > mirrored + 0.3


def test_pipeline_saliency_follows_the_lesion_through_the_geometry(bright_spot_package, tmp_path):
    folder = write_slot_folder(tmp_path / "exam", ["DES_CC"], laterality="L", seed=1)
    [case] = gather_cases([folder]).cases
    result = Pipeline(bright_spot_package).run(case)
    saliency, picture = result.saliency["DES_CC"], result.pictures["DES_CC"]
    assert saliency.pixels.shape == picture.shape
    # The known-answer model's map is the (smoothed) image: bright where the image is,
    # both on the full grid and in the report's sampled view.
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "DES_CC.nrrd")))
    assert np.corrcoef(saliency.pixels.ravel(), image.ravel())[0, 1] > 0.5
    stride = display_stride(picture.shape)
    shown = np.corrcoef(saliency.display(stride).ravel(), picture.display(stride).ravel())
    assert shown[0, 1] > 0.5
