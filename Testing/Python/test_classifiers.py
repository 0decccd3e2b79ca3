"""One-channel malignancy classifiers: shapes, ranges, Grad-CAM layer, ImageNet start."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from VirtualBiopsyLib.errors import ModelPackageError
from VirtualBiopsyLib.models.classifiers import (
    GREY_MEAN,
    GREY_STD,
    MalignancyClassifier,
    build_classifier,
    count_parameters,
    fold_batch_norms,
)
from VirtualBiopsyLib.models.torchvision_compat import import_torchvision


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _first_conv(model: MalignancyClassifier) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


def _last_linear(model: MalignancyClassifier) -> nn.Linear:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


@pytest.mark.parametrize("architecture", ["demo", "resnet18"])
def test_logits_and_probability_for_a_batch(architecture: str) -> None:
    model = build_classifier(architecture).eval()
    images = torch.rand(3, 1, 64, 64)
    with torch.no_grad():
        logits = model(images)
        probability = model.probability(images)
    assert logits.shape == (3, 2)
    assert probability.shape == (3,)
    assert torch.allclose(probability, torch.softmax(logits, dim=1)[:, 1])
    assert bool(((probability >= 0) & (probability <= 1)).all())


# torchvision's parameter counts with a 1-channel stem and a 2-class head, derived from its
# published 3-channel, 1000-class totals: minus 2 of 3 stem input channels, minus 998 head rows.
EXPECTED_PARAMETERS = {
    "resnet18": 11_689_512 - 2 * 64 * 7 * 7 - 998 * (512 + 1),
    "resnet50": 25_557_032 - 2 * 64 * 7 * 7 - 998 * (2048 + 1),
    "vgg16": 138_357_544 - 2 * 64 * 3 * 3 - 998 * (4096 + 1),
}


@pytest.mark.parametrize("architecture", ["resnet50", "vgg16"])
def test_large_architectures_single_forward(architecture: str) -> None:
    model = build_classifier(architecture).eval()
    with torch.no_grad():
        probability = model.probability(torch.rand(1, 1, 64, 64))
    assert probability.shape == (1,)
    assert 0.0 <= float(probability) <= 1.0
    assert _first_conv(model).in_channels == 1
    assert _last_linear(model).out_features == 2
    assert count_parameters(model) == EXPECTED_PARAMETERS[architecture]


def test_resnet18_parameter_count_matches_torchvision() -> None:
    model = build_classifier("resnet18")
    assert count_parameters(model) == EXPECTED_PARAMETERS["resnet18"]
    assert _first_conv(model).in_channels == 1 and _last_linear(model).out_features == 2


def test_demo_classifier_is_tiny_and_labelled() -> None:
    model = build_classifier("demo")
    weight_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert weight_bytes < 300 * 1024
    assert model.is_demo and model.architecture == "demo"
    assert not build_classifier("resnet18").is_demo


def test_model_normalises_its_input_itself() -> None:
    model = build_classifier("demo").eval()
    images = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        expected = model.backbone((images - GREY_MEAN) / GREY_STD)
        assert torch.equal(model(images), expected)


@pytest.mark.parametrize("architecture", ["demo", "resnet18"])
def test_cam_layer_gives_spatial_activations_and_gradients(architecture: str) -> None:
    model = build_classifier(architecture).eval()
    captured: dict[str, torch.Tensor] = {}

    def keep(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        output.retain_grad()
        captured["activation"] = output

    handle = model.cam_layer.register_forward_hook(keep)
    model(torch.rand(1, 1, 64, 64))[:, 1].sum().backward()
    handle.remove()
    activation = captured["activation"]
    assert activation.dim() == 4 and activation.shape[-1] > 1
    assert activation.grad is not None and activation.grad.abs().sum() > 0


def test_cam_layer_backward_hook_works_without_inplace_errors() -> None:
    model = build_classifier("resnet18").eval()
    gradients: list[torch.Tensor] = []
    handle = model.cam_layer.register_full_backward_hook(
        lambda _m, _gin, gout: gradients.append(gout[0])
    )
    model(torch.rand(1, 1, 64, 64))[:, 1].sum().backward()
    handle.remove()
    assert gradients and gradients[0].shape[1] == 512


@pytest.mark.parametrize("architecture", ["demo", "resnet18", "resnet50"])
def test_folding_batch_norms_keeps_the_function(architecture: str) -> None:
    model = build_classifier(architecture)
    for module in model.modules():  # non-trivial statistics, as after training
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    model.eval()
    images = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        expected = model(images)
        folded = fold_batch_norms(model)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
        assert torch.allclose(folded(images), expected, atol=1e-4, rtol=1e-4)


def test_unknown_architecture_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown classifier architecture 'alexnet'"):
        build_classifier("alexnet")


def _imagenet_resnet18(path: Path) -> nn.Module:
    """A stand-in for the user's ImageNet file: torchvision's RGB, 1000-class layout."""
    rgb_network = import_torchvision().models.resnet18(weights=None)
    save_file({k: v.contiguous() for k, v in rgb_network.state_dict().items()}, str(path))
    return rgb_network.eval()


def test_pretrained_weights_sum_rgb_filters_and_replace_the_head(tmp_path: Path) -> None:
    path = tmp_path / "resnet18_imagenet.safetensors"
    rgb_network = _imagenet_resnet18(path)
    model = build_classifier("resnet18", pretrained_weights=path).eval()
    backbone = model.backbone
    assert torch.equal(backbone.conv1.weight, rgb_network.conv1.weight.sum(dim=1, keepdim=True))
    assert torch.equal(backbone.layer4[1].conv2.weight, rgb_network.layer4[1].conv2.weight)
    assert backbone.fc.out_features == 2
    # A grey image seen by the summed filter equals the RGB filter on the grey image
    # repeated over three channels: the point of summing.
    grey = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(
            backbone.conv1(grey), rgb_network.conv1(grey.repeat(1, 3, 1, 1)), atol=1e-5
        )


def test_pretrained_weights_must_be_safetensors(tmp_path: Path) -> None:
    pickled = tmp_path / "resnet18.pth"
    pickled.write_bytes(b"not opened")
    with pytest.raises(ModelPackageError, match=r"resnet18\.pth.*safetensors"):
        build_classifier("resnet18", pretrained_weights=pickled)


def test_pretrained_weights_of_another_network_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "wrong.safetensors"
    save_file({"conv1.weight": torch.zeros(8, 3, 3, 3)}, str(path))
    with pytest.raises(ModelPackageError, match=r"wrong\.safetensors.*do not fit"):
        build_classifier("resnet18", pretrained_weights=path)


def test_corrupt_pretrained_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(b"\x10\x00")
    with pytest.raises(ModelPackageError, match=r"truncated\.safetensors"):
        build_classifier("resnet18", pretrained_weights=path)


def test_demo_has_no_imagenet_start(tmp_path: Path) -> None:
    with pytest.raises(ModelPackageError, match=r"x\.safetensors: the demo classifier"):
        build_classifier("demo", pretrained_weights=tmp_path / "x.safetensors")
