"""Grad-CAM saliency (Selvaraju et al. 2017) on a classifier's ``cam_layer``.

Why written here rather than taken from MONAI: the pipeline needs the probability and the
map from *one* forward pass per model, and gradients only from the logits back to the
hooked layer. A forward hook hands the rest of the network a detached copy of the layer's
activations that requires grad, so autograd records the head alone (pooling and the last
linear layers) and the backward pass costs next to nothing; parameters never get
gradients. The malignant-class logit is the score explained.

>>> import torch
>>> from VirtualBiopsyLib.models.classifiers import build_classifier
>>> model = build_classifier("demo").eval()
>>> probabilities, maps = grad_cam(model, torch.rand(2, 1, 64, 64))
>>> tuple(probabilities.shape), tuple(maps.shape)
((2,), (2, 64, 64))
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as functional
from torch import nn

MALIGNANT_CLASS = 1


@contextmanager
def _frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Switch off parameter gradients for the duration (restored afterwards)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


def grad_cam(
    model: nn.Module, images: torch.Tensor, target_layer: nn.Module | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Malignancy probabilities ``[B]`` and Grad-CAM maps ``[B, H, W]`` in [0, 1].

    ``target_layer`` defaults to ``model.cam_layer``. Each map is the ReLU of the
    gradient-weighted sum of the layer's channels, upsampled bilinearly to the input size
    and divided by its maximum (an all-zero map stays zero).
    """
    layer = target_layer if target_layer is not None else model.cam_layer
    captured: list[torch.Tensor] = []

    def keep_activations(_: nn.Module, __: object, output: torch.Tensor) -> torch.Tensor:
        activations = output.detach().requires_grad_(True)
        captured.append(activations)
        return activations

    handle = layer.register_forward_hook(keep_activations)
    try:
        with _frozen_parameters(model), torch.enable_grad():
            logits = model(images.detach())
            (gradients,) = torch.autograd.grad(logits[:, MALIGNANT_CLASS].sum(), captured[-1])
    finally:
        handle.remove()
    probabilities = torch.softmax(logits.detach(), dim=1)[:, MALIGNANT_CLASS]
    maps = cam_from(captured[-1].detach(), gradients, images.shape[-2:])
    return probabilities, maps


def cam_from(
    activations: torch.Tensor, gradients: torch.Tensor, size: torch.Size | tuple[int, int]
) -> torch.Tensor:
    """Grad-CAM of activations ``[B, C, h, w]`` and their gradients, at ``size``, in [0, 1]."""
    channel_weights = gradients.mean(dim=(2, 3), keepdim=True)
    cams = torch.relu((channel_weights * activations).sum(dim=1, keepdim=True))
    cams = functional.interpolate(cams, size=tuple(size), mode="bilinear", align_corners=False)
    cams = cams[:, 0]
    peaks = cams.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
    return cams / peaks  # an all-zero map stays zero
