"""Training-time augmentation: random shift, zoom and rotation (the paper's ±10 %, ±10 %, ±15°).

Parameters are drawn from a ``numpy.random.Generator`` owned by the training loop (its
state is checkpointed, so a resumed run draws the same values) and applied with
torchvision's ``transforms.v2.functional.affine`` on tensors. Paired images (LE and DES
of one acquisition, for the generator) receive the same transform.

>>> import numpy as np, torch
>>> augment = RandomAffine2d(AugmentConfig(), np.random.default_rng(0))
>>> augment(torch.rand(4, 1, 32, 32)).shape
torch.Size([4, 1, 32, 32])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from Training.config import AugmentConfig
from VirtualBiopsyLib.models.torchvision_compat import import_torchvision


@dataclass(frozen=True)
class AffineParams:
    angle: float
    translate: tuple[int, int]
    scale: float


class RandomAffine2d:
    """Random affine transform of a batch ``[B, C, H, W]``, one draw per image."""

    def __init__(self, config: AugmentConfig, rng: np.random.Generator) -> None:
        self.config = config
        self.rng = rng
        import_torchvision()
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.v2 import functional

        self._functional = functional
        self._bilinear = InterpolationMode.BILINEAR

    def draw(self, height: int, width: int) -> AffineParams:
        """Draw one image's parameters uniformly within the configured ranges."""
        c = self.config
        angle = float(self.rng.uniform(-c.rotation_degrees, c.rotation_degrees))
        dx, dy = self.rng.uniform(-c.shift_fraction, c.shift_fraction, size=2)
        scale = float(self.rng.uniform(1.0 - c.zoom_fraction, 1.0 + c.zoom_fraction))
        return AffineParams(angle, (round(dx * width), round(dy * height)), scale)

    def apply(self, image: torch.Tensor, params: AffineParams) -> torch.Tensor:
        """Apply one draw to ``[C, H, W]`` (bilinear, zero fill = background)."""
        return self._functional.affine(
            image,
            angle=params.angle,
            translate=list(params.translate),
            scale=params.scale,
            shear=[0.0, 0.0],
            interpolation=self._bilinear,
            fill=0.0,
        )

    def __call__(self, *batches: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Augment one or several aligned batches (same draw for the i-th image of each)."""
        if not self.config.enabled:
            return batches[0] if len(batches) == 1 else batches
        height, width = batches[0].shape[-2:]
        outputs: list[list[torch.Tensor]] = [[] for _ in batches]
        for index in range(batches[0].shape[0]):
            params = self.draw(height, width)
            for output, batch in zip(outputs, batches, strict=True):
                output.append(self.apply(batch[index], params))
        stacked = tuple(torch.stack(images) for images in outputs)
        return stacked[0] if len(stacked) == 1 else stacked
