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
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from VirtualBiopsyLib.errors import ModelPackageError
from VirtualBiopsyLib.models.names import (
    CLASSIFIER_ARCHITECTURES,
    DEMO_ARCHITECTURE,
    PAPER_POOLING,
    pooling_problem,
)
from VirtualBiopsyLib.models.safetensors_io import read_state_dict
from VirtualBiopsyLib.models.torchvision_compat import import_torchvision

ARCHITECTURES: tuple[str, ...] = CLASSIFIER_ARCHITECTURES
#: The only file type a user's ImageNet weights may come in (never a pickle).
PRETRAINED_SUFFIX = ".safetensors"

MALIGNANT_CLASS = 1
# ImageNet statistics averaged over RGB: the grey image that pretrained filters (summed
# over RGB) expect; harmless for networks trained from scratch.
GREY_MEAN = 0.449
GREY_STD = 0.226


@dataclass(frozen=True)
class NetworkSplit:
    """Where a backbone is cut for Grad-CAM: ``features`` up to the CAM layer, ``head`` after.

    Both are functions of the backbone rather than modules of their own, so the weights
    keep their torchvision names (the package format) and a module replaced later (a
    folded batch norm) is picked up.
    """

    cam_layer: str
    features: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    head: Callable[[nn.Module, torch.Tensor], torch.Tensor]


class MalignancyClassifier(nn.Module):
    """A CNN that takes ``[B, 1, H, W]`` images in [0, 1] and returns logits ``[B, 2]``.

    ``forward`` is ``head(features(images))``: Grad-CAM runs ``features`` without autograd
    and differentiates only the small ``head``. ``cam_layer`` is the last convolutional
    block, whose output ``features`` returns.

    >>> import torch
    >>> model = build_classifier("demo").eval()
    >>> model(torch.rand(2, 1, 64, 64)).shape
    torch.Size([2, 2])
    >>> with torch.no_grad():
    ...     probability = model.probability(torch.rand(1, 1, 64, 64))
    >>> 0.0 <= float(probability[0]) <= 1.0
    True
    """

    def __init__(
        self,
        backbone: nn.Module,
        split: NetworkSplit,
        architecture: str,
        pooling: str = PAPER_POOLING,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.architecture = architecture
        self.pooling = pooling
        self._split = split
        backbone.get_submodule(split.cam_layer)  # fails early on a wrong name

    @property
    def cam_layer(self) -> nn.Module:
        """The last convolutional block (the Grad-CAM target layer)."""
        return self.backbone.get_submodule(self._split.cam_layer)

    @property
    def is_demo(self) -> bool:
        return self.architecture == DEMO_ARCHITECTURE

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Activations ``[B, C, h, w]`` of ``cam_layer`` for images ``[B, 1, H, W]`` in [0, 1]."""
        # Plain numbers, not buffers: nothing to move between devices, nothing left on
        # the meta device when a package adopts its weights.
        return self._split.features(self.backbone, (images - GREY_MEAN) / GREY_STD)

    def head(self, activations: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, 2]`` (benign, malignant) from ``cam_layer`` activations."""
        return self._split.head(self.backbone, activations)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, 2]`` (benign, malignant) of images ``[B, 1, H, W]`` in [0, 1]."""
        return self.head(self.features(images))

    def probability(self, images: torch.Tensor) -> torch.Tensor:
        """Malignancy probability ``[B]``: softmax of the malignant class."""
        return torch.softmax(self(images), dim=1)[:, MALIGNANT_CLASS]


def build_classifier(
    architecture: str,
    pretrained_weights: Path | str | None = None,
    pooling: str = PAPER_POOLING,
) -> MalignancyClassifier:
    """Build a one-channel, two-class classifier by architecture and pooling name.

    ``pretrained_weights`` is an ImageNet state dict of the same torchvision network that
    the user supplies as a ``.safetensors`` file (we never download or unpickle weights).
    Its RGB first convolution is summed over colour to take one grey channel, and its
    1000-class head is replaced by a new 2-class layer. ``pooling`` (one of
    :data:`~VirtualBiopsyLib.models.names.POOLINGS`) replaces the global average pool; the
    module keeps torchvision's name ``avgpool`` so that weight names do not depend on it.

    >>> build_classifier("resnet18").architecture
    'resnet18'
    >>> build_classifier("demo", pooling="max").pooling
    'max'
    >>> build_classifier("demo", pretrained_weights=None).is_demo
    True
    """
    builder = _BUILDERS.get(architecture)
    if builder is None:
        raise ValueError(
            f"unknown classifier architecture {architecture!r}; "
            f"expected one of {', '.join(ARCHITECTURES)}"
        )
    if pretrained_weights is not None:
        problem = pretrained_weights_problem(architecture, pretrained_weights)
        if problem is not None:
            raise ModelPackageError(f"{pretrained_weights}: {problem}")
    problem = pooling_problem(architecture, pooling)
    if problem is not None:
        raise ValueError(problem)
    backbone, split = builder(pretrained_weights)
    backbone.avgpool = _global_pool(pooling, backbone.avgpool, _pooled_channels(backbone))
    _disable_inplace_relu(backbone)
    return MalignancyClassifier(backbone, split, architecture, pooling)


def pretrained_weights_problem(architecture: str, path: Path | str) -> str | None:
    """Why ``path`` cannot start ``architecture``'s training, or None when it may (checked
    before the file is read, so a configuration can be refused before a run starts).

    >>> pretrained_weights_problem("resnet18", "imagenet/resnet18.pth")[:41]
    'pretrained weights must be a .safetensors'
    """
    if architecture == DEMO_ARCHITECTURE:
        return "the demo classifier has no ImageNet weights to start from"
    if Path(path).suffix != PRETRAINED_SUFFIX:
        return (
            f"pretrained weights must be a {PRETRAINED_SUFFIX} file (pickled .pth/.pt files "
            "are refused because unpickling can run code)"
        )
    return None


class GeneralizedMeanPool(nn.Module):
    """GeM pooling: ``(mean x^p)^(1/p)`` with a learnable ``p`` (1 = average, ∞ = max).

    Radenović et al. 2018; the exponent starts at 3, between the two.
    """

    def __init__(self, output_size: int | tuple[int, int] = 1, p: float = 3.0) -> None:
        super().__init__()
        self.output_size = output_size
        self.p = nn.Parameter(torch.tensor(float(p)))

    def forward(self, activations: torch.Tensor) -> torch.Tensor:
        p = self.p.clamp(min=1.0)
        powered = activations.clamp(min=1e-6).pow(p)
        pooled = nn.functional.adaptive_avg_pool2d(powered, self.output_size)
        return pooled.pow(1.0 / p)


class AttentionPool(nn.Module):
    """Attention pooling: a 1×1 convolution scores each position; softmax-weighted sum.

    The network learns where to look (a small lesion) instead of averaging everything.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.score = nn.Conv2d(channels, 1, kernel_size=1)

    def forward(self, activations: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.score(activations).flatten(2), dim=-1)  # [B, 1, HW]
        pooled = (activations.flatten(2) * weights).sum(dim=-1)  # [B, C]
        return pooled[:, :, None, None]


def _global_pool(pooling: str, current: nn.Module, channels: int) -> nn.Module:
    """The pooling module that replaces ``current`` (an adaptive average pool)."""
    output_size = current.output_size
    if pooling == "avg":
        return current
    if pooling == "max":
        return nn.AdaptiveMaxPool2d(output_size)
    if pooling == "gem":
        return GeneralizedMeanPool(output_size)
    return AttentionPool(channels)  # a global pool only (names.pooling_problem)


def _pooled_channels(backbone: nn.Module) -> int:
    """Channels of the feature map the global pool receives (the input width of ``fc``)."""
    fc = getattr(backbone, "fc", None)
    return int(fc.in_features) if isinstance(fc, nn.Linear) else 512  # VGG16: 512


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (weights and biases) of a network."""
    return sum(parameter.numel() for parameter in model.parameters())


def fold_batch_norms(network: nn.Module) -> nn.Module:
    """Fold every eval-mode batch norm into the convolution before it, in place.

    For inference only: the folded network computes the same function with one operation
    less per convolution (measured 51 → 43 ms per ResNet18 pass at 256² on 2 CPU cores)
    and cannot be trained any more (the batch norms become identities). Covers the
    layouts our architectures use: ``Sequential(conv, bn, …)`` and sibling ``convN`` /
    ``bnN`` attributes (torchvision ResNet blocks and stem). The weights are scaled where
    they lie (``torch.nn.utils.fusion`` would copy every one of them).
    """
    for parent in list(network.modules()):
        for conv_name, bn_name in _conv_bn_pairs(parent):
            _fold_into(getattr(parent, conv_name), getattr(parent, bn_name))
            parent.add_module(bn_name, nn.Identity())
    return network


@torch.no_grad()
def _fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """conv ← bn ∘ conv: w·γ/σ and (b − μ)·γ/σ + β, with σ = √(running var + ε)."""
    gamma = bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(bn.running_mean)
    scale = gamma * torch.rsqrt(bn.running_var + bn.eps)
    conv.weight.mul_(scale.reshape(-1, *([1] * (conv.weight.dim() - 1))))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.bias = nn.Parameter((bias - bn.running_mean) * scale + beta, requires_grad=False)


def _conv_bn_pairs(parent: nn.Module) -> list[tuple[str, str]]:
    """Names of (Conv2d, BatchNorm2d) children where the norm directly follows the conv."""
    children = dict(parent.named_children())
    if isinstance(parent, nn.Sequential):
        names = list(children)
        candidates = list(zip(names, names[1:], strict=False))
    else:
        candidates = [(n, "bn" + n[4:]) for n in children if n.startswith("conv")]
    return [
        (conv, bn)
        for conv, bn in candidates
        if isinstance(children.get(conv), nn.Conv2d)
        and isinstance(children.get(bn), nn.BatchNorm2d)
    ]


def _resnet_features(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = network.maxpool(network.relu(network.bn1(network.conv1(x))))
    return network.layer4(network.layer3(network.layer2(network.layer1(x))))


def _pool_and_classify(network: nn.Module, activations: torch.Tensor) -> torch.Tensor:
    """Global pooling, flatten and the last layer(s): the head of ResNet and the demo."""
    return network.fc(torch.flatten(network.avgpool(activations), 1))


def _vgg_features(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return network.features[:-1](x)  # up to the last conv block's ReLU


def _vgg_head(network: nn.Module, activations: torch.Tensor) -> torch.Tensor:
    pooled = network.avgpool(network.features[-1](activations))
    return network.classifier(torch.flatten(pooled, 1))


def _demo_features(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return network.features(x)


RESNET_SPLIT = NetworkSplit("layer4", _resnet_features, _pool_and_classify)
VGG_SPLIT = NetworkSplit("features.29", _vgg_features, _vgg_head)  # the last conv's ReLU
DEMO_SPLIT = NetworkSplit("features.3", _demo_features, _pool_and_classify)


def _build_resnet(name: str) -> Callable[[Path | str | None], tuple[nn.Module, NetworkSplit]]:
    def build(pretrained_weights: Path | str | None) -> tuple[nn.Module, NetworkSplit]:
        torchvision = import_torchvision()
        network = getattr(torchvision.models, name)(weights=None)
        if pretrained_weights is not None:
            _load_imagenet(network, pretrained_weights)
        network.conv1 = _grey_conv(network.conv1)
        network.fc = nn.Linear(network.fc.in_features, 2)
        return network, RESNET_SPLIT

    return build


def _build_vgg16(pretrained_weights: Path | str | None) -> tuple[nn.Module, NetworkSplit]:
    torchvision = import_torchvision()
    network = torchvision.models.vgg16(weights=None)
    if pretrained_weights is not None:
        _load_imagenet(network, pretrained_weights)
    network.features[0] = _grey_conv(network.features[0])
    network.classifier[-1] = nn.Linear(network.classifier[-1].in_features, 2)
    return network, VGG_SPLIT


def _build_demo(_: Path | str | None) -> tuple[nn.Module, NetworkSplit]:
    """Four conv blocks 1→8→16→32→64, global average pool, linear 64→2 (≈24 k params)."""
    widths = (1, 8, 16, 32, 64)
    blocks = [_demo_block(c_in, c_out) for c_in, c_out in zip(widths, widths[1:], strict=False)]
    features = nn.Sequential(*blocks)
    network = nn.Sequential()
    network.add_module("features", features)
    network.add_module("avgpool", nn.AdaptiveAvgPool2d(1))
    network.add_module("flatten", nn.Flatten())
    network.add_module("fc", nn.Linear(widths[-1], 2))
    return network, DEMO_SPLIT


def _demo_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


_BUILDERS: dict[str, Callable[[Path | str | None], tuple[nn.Module, NetworkSplit]]] = {
    "resnet18": _build_resnet("resnet18"),
    "resnet50": _build_resnet("resnet50"),
    "vgg16": _build_vgg16,
    "demo": _build_demo,
}


def _load_imagenet(network: nn.Module, path: Path | str) -> None:
    """Load a user-supplied ImageNet state dict (safetensors only) into the RGB network."""
    path = Path(path)
    state = read_state_dict(path)  # build_classifier has checked the suffix
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


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(lines[:3])
