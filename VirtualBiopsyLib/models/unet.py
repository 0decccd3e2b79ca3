"""A U-Net generator for paired LE → DES synthesis (pix2pix-style training).

Studies of virtual contrast enhancement for CESM found U-Net generators trained on paired
images gave DES that served classification better than CycleGAN's ResNet generator
(the paired loss sees where the lesion enhances; the skip connections keep its outline
where it is). Design: ``levels`` resolutions, two 3×3 convolutions with instance norm
and LeakyReLU each, stride-2 convolutions down, bilinear upsampling plus a convolution
up (no transposed convolutions, hence no checkerboard), skip connections by
concatenation, a sigmoid output in [0, 1] like every preprocessed image. Plain torch,
so inference needs no MONAI.

>>> import torch
>>> generator = build_unet_generator(base_width=4, levels=3).eval()
>>> generator(torch.rand(1, 1, 64, 64)).shape
torch.Size([1, 1, 64, 64])
"""

from __future__ import annotations

import torch
from torch import nn

from VirtualBiopsyLib.models.names import unet_size_problem

IMAGE_CHANNELS = 1
PAPER_UNET: dict[str, int] = {"base_width": 32, "levels": 5}
DEMO_UNET: dict[str, int] = {"base_width": 8, "levels": 4}


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, padding_mode="reflect"),
        nn.InstanceNorm2d(out_channels, affine=True),
        nn.LeakyReLU(0.2),
        nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, padding_mode="reflect"),
        nn.InstanceNorm2d(out_channels, affine=True),
        nn.LeakyReLU(0.2),
    )


def smallest_unet_input(levels: int) -> int:
    """The smallest image side a U-Net of ``levels`` trains on: its deepest level must keep
    two pixels (reflection padding and instance norm refuse one).

    >>> smallest_unet_input(4)
    9
    """
    return 2 ** (levels - 1) + 1


class UNetGenerator(nn.Module):
    """LE ``[B, 1, H, W]`` in [0, 1] → synthetic DES ``[B, 1, H, W]`` in [0, 1].

    Any H and W of at least :func:`smallest_unet_input` (the decoder upsamples to each
    skip connection's size).
    """

    def __init__(self, base_width: int = 32, levels: int = 5) -> None:
        super().__init__()
        problem = unet_size_problem(base_width, levels)
        if problem is not None:
            raise ValueError(problem)
        self.base_width = base_width
        self.levels = levels
        widths = [base_width * 2**level for level in range(levels)]
        self.encoders = nn.ModuleList([_double_conv(IMAGE_CHANNELS, widths[0])])
        self.downsamplers = nn.ModuleList()
        for level in range(1, levels):
            self.downsamplers.append(
                nn.Conv2d(widths[level - 1], widths[level - 1], 3, stride=2, padding=1)
            )
            self.encoders.append(_double_conv(widths[level - 1], widths[level]))
        self.reducers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in reversed(range(levels - 1)):
            self.reducers.append(nn.Conv2d(widths[level + 1], widths[level], kernel_size=1))
            self.decoders.append(_double_conv(2 * widths[level], widths[level]))
        self.output = nn.Conv2d(widths[0], IMAGE_CHANNELS, kernel_size=1)

    @property
    def hyperparameters(self) -> dict[str, int]:
        """What :func:`build_unet_generator` needs to rebuild this network."""
        return {"base_width": self.base_width, "levels": self.levels}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        skips = []
        features = self.encoders[0](images)
        for downsample, encoder in zip(self.downsamplers, self.encoders[1:], strict=True):
            skips.append(features)
            features = encoder(downsample(features))
        for reduce, decoder in zip(self.reducers, self.decoders, strict=True):
            skip = skips.pop()
            upsampled = nn.functional.interpolate(
                features, size=skip.shape[-2:], mode="bilinear", align_corners=False
            )
            features = decoder(torch.cat([reduce(upsampled), skip], dim=1))
        return torch.sigmoid(self.output(features))


def build_unet_generator(base_width: int = 32, levels: int = 5) -> UNetGenerator:
    """U-Net generator; see the module docstring.

    >>> build_unet_generator(**DEMO_UNET).hyperparameters
    {'base_width': 8, 'levels': 4}
    """
    return UNetGenerator(base_width=base_width, levels=levels)
