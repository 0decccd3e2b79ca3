"""Malignancy classifiers: one CNN per modality-view pair (the paper's f[m,v]).

The paper trains ResNet18, ResNet50 or VGG16 on single-channel 256² mammograms and
gives no code; we build the torchvision networks with one input channel and two output
classes (benign, malignant). A tiny ``"demo"`` network (≈100 KB of weights) lets the
phantom demo and the tests run in seconds on a CPU; it is labelled demo wherever it is
stored. Inputs are preprocessed arrays in [0, 1]; each model normalises them itself so
that no caller has to know the statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from VirtualBiopsyLib.errors import ModelPackageError
from VirtualBiopsyLib.models.safetensors_io import read_state_dict
from VirtualBiopsyLib.models.torchvision_compat import import_torchvision

ARCHITECTURES: tuple[str, ...] = ("resnet18", "resnet50", "vgg16", "demo")
DEMO_ARCHITECTURE = "demo"
MALIGNANT_CLASS = 1
# ImageNet statistics averaged over RGB: the grey image that pretrained filters (summed
# over RGB) expect; harmless for networks trained from scratch.
GREY_MEAN = 0.449
GREY_STD = 0.226


class MalignancyClassifier(nn.Module):
    """A CNN that takes ``[B, 1, H, W]`` images in [0, 1] and returns logits ``[B, 2]``.

    ``cam_layer`` is the last convolutional block, the module Grad-CAM hooks.

    >>> import torch
    >>> model = build_classifier("demo").eval()
    >>> model(torch.rand(2, 1, 64, 64)).shape
    torch.Size([2, 2])
    >>> with torch.no_grad():
    ...     probability = model.probability(torch.rand(1, 1, 64, 64))
    >>> 0.0 <= float(probability[0]) <= 1.0
    True
    """

    def __init__(self, backbone: nn.Module, cam_layer: nn.Module, architecture: str) -> None:
        super().__init__()
        self.backbone = backbone
        self.architecture = architecture
        self._cam_layer_name = _module_name(backbone, cam_layer)
        self.register_buffer("input_mean", torch.tensor(GREY_MEAN), persistent=False)
        self.register_buffer("input_std", torch.tensor(GREY_STD), persistent=False)

    @property
    def cam_layer(self) -> nn.Module:
        """The last convolutional block (the Grad-CAM target layer)."""
        return self.backbone.get_submodule(self._cam_layer_name)

    @property
    def is_demo(self) -> bool:
        return self.architecture == DEMO_ARCHITECTURE

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, 2]`` (benign, malignant) of images ``[B, 1, H, W]`` in [0, 1]."""
        return self.backbone((images - self.input_mean) / self.input_std)

    def probability(self, images: torch.Tensor) -> torch.Tensor:
        """Malignancy probability ``[B]``: softmax of the malignant class."""
        return torch.softmax(self(images), dim=1)[:, MALIGNANT_CLASS]


def build_classifier(
    architecture: str, pretrained_weights: Path | str | None = None
) -> MalignancyClassifier:
    """Build a one-channel, two-class classifier by architecture name.

    ``pretrained_weights`` is an ImageNet state dict of the same torchvision network that
    the user supplies as a ``.safetensors`` file (we never download or unpickle weights).
    Its RGB first convolution is summed over colour to take one grey channel, and its
    1000-class head is replaced by a new 2-class layer.

    >>> build_classifier("resnet18").architecture
    'resnet18'
    >>> build_classifier("demo", pretrained_weights=None).is_demo
    True
    """
    builder = _BUILDERS.get(architecture)
    if builder is None:
        raise ValueError(
            f"unknown classifier architecture {architecture!r}; "
            f"expected one of {', '.join(ARCHITECTURES)}"
        )
    if pretrained_weights is not None and architecture == DEMO_ARCHITECTURE:
        raise ValueError("the demo classifier has no ImageNet weights to start from")
    backbone, cam_layer = builder(pretrained_weights)
    _disable_inplace_relu(backbone)
    return MalignancyClassifier(backbone, cam_layer, architecture)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (weights and biases) of a network."""
    return sum(parameter.numel() for parameter in model.parameters())


def _build_resnet(name: str) -> Callable[[Path | str | None], tuple[nn.Module, nn.Module]]:
    def build(pretrained_weights: Path | str | None) -> tuple[nn.Module, nn.Module]:
        torchvision = import_torchvision()
        network = getattr(torchvision.models, name)(weights=None)
        if pretrained_weights is not None:
            _load_imagenet(network, pretrained_weights)
        network.conv1 = _grey_conv(network.conv1)
        network.fc = nn.Linear(network.fc.in_features, 2)
        return network, network.layer4

    return build


def _build_vgg16(pretrained_weights: Path | str | None) -> tuple[nn.Module, nn.Module]:
    torchvision = import_torchvision()
    network = torchvision.models.vgg16(weights=None)
    if pretrained_weights is not None:
        _load_imagenet(network, pretrained_weights)
    network.features[0] = _grey_conv(network.features[0])
    network.classifier[-1] = nn.Linear(network.classifier[-1].in_features, 2)
    last_conv_relu = network.features[-2]  # features[-1] is the final max-pool
    return network, last_conv_relu


def _build_demo(_: Path | str | None) -> tuple[nn.Module, nn.Module]:
    """Four conv blocks 1→8→16→32→64, global average pool, linear 64→2 (≈24 k params)."""
    widths = (1, 8, 16, 32, 64)
    blocks = [_demo_block(c_in, c_out) for c_in, c_out in zip(widths, widths[1:], strict=False)]
    features = nn.Sequential(*blocks)
    network = nn.Sequential()
    network.add_module("features", features)
    network.add_module("pool", nn.AdaptiveAvgPool2d(1))
    network.add_module("flatten", nn.Flatten())
    network.add_module("fc", nn.Linear(widths[-1], 2))
    return network, features[-1]


def _demo_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


_BUILDERS: dict[str, Callable[[Path | str | None], tuple[nn.Module, nn.Module]]] = {
    "resnet18": _build_resnet("resnet18"),
    "resnet50": _build_resnet("resnet50"),
    "vgg16": _build_vgg16,
    "demo": _build_demo,
}


def _load_imagenet(network: nn.Module, path: Path | str) -> None:
    """Load a user-supplied ImageNet state dict (safetensors only) into the RGB network."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ModelPackageError(
            f"{path}: pretrained weights must be a .safetensors file (pickled .pth/.pt files "
            "are refused because unpickling can run code)"
        )
    state = read_state_dict(path)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ModelPackageError(
            f"{path}: these weights do not fit torchvision's "
            f"{type(network).__name__}: {_first_line(error)}"
        ) from error


def _grey_conv(rgb_conv: nn.Conv2d) -> nn.Conv2d:
    """A one-channel copy of a first convolution: RGB filters summed over colour."""
    grey = nn.Conv2d(
        1,
        rgb_conv.out_channels,
        kernel_size=rgb_conv.kernel_size,
        stride=rgb_conv.stride,
        padding=rgb_conv.padding,
        bias=rgb_conv.bias is not None,
    )
    with torch.no_grad():
        grey.weight.copy_(rgb_conv.weight.sum(dim=1, keepdim=True))
        if rgb_conv.bias is not None:
            grey.bias.copy_(rgb_conv.bias)
    return grey


def _disable_inplace_relu(network: nn.Module) -> None:
    """In-place ReLUs break Grad-CAM's backward hooks; the memory they save is small."""
    for module in network.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False


def _module_name(root: nn.Module, target: nn.Module) -> str:
    for name, module in root.named_modules():
        if module is target:
            return name
    raise ValueError("the Grad-CAM layer is not part of the network")


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(lines[:3])
