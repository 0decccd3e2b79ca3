"""Grad-CAM saliency (Selvaraju et al. 2017) on a classifier's CAM layer.

Why written here rather than taken from MONAI: the pipeline needs the probability and the
map from *one* forward pass per model, and gradients only from the logits back to the
CAM layer. The classifier is cut there (``features`` / ``head``, see
:class:`~VirtualBiopsyLib.models.classifiers.MalignancyClassifier`): ``features`` runs
under ``torch.inference_mode`` like any prediction, and autograd records only the small
``head`` (pooling and the last linear layers). Parameters never get gradients. The
malignant-class logit is the score explained.

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
from typing import Protocol

import torch
import torch.nn.functional as functional
from torch import nn

MALIGNANT_CLASS = 1


class SplitClassifier(Protocol):
    """What Grad-CAM needs of a classifier: the network cut at its CAM layer."""

    def features(self, images: torch.Tensor) -> torch.Tensor: ...

    def head(self, activations: torch.Tensor) -> torch.Tensor: ...

    def parameters(self) -> Iterator[nn.Parameter]: ...


@contextmanager
def _frozen_parameters(model: SplitClassifier) -> Iterator[None]:
    """Switch off parameter gradients for the duration (restored afterwards)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


def grad_cam(model: SplitClassifier, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Malignancy probabilities ``[B]`` and Grad-CAM maps ``[B, H, W]`` in [0, 1].

    Each map is the ReLU of the gradient-weighted sum of the CAM layer's channels,
    upsampled bilinearly to the input size and divided by its maximum (an all-zero map
    stays zero).
    """
    with torch.inference_mode():
        activations = model.features(images)
    activations = activations.clone().requires_grad_(True)  # a normal tensor autograd can use
    with _frozen_parameters(model), torch.enable_grad():
        logits = model.head(activations)
        (gradients,) = torch.autograd.grad(logits[:, MALIGNANT_CLASS].sum(), activations)
    probabilities = torch.softmax(logits.detach(), dim=1)[:, MALIGNANT_CLASS]
    maps = cam_from(activations.detach(), gradients, images.shape[-2:])
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
