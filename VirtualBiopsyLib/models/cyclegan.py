"""CycleGAN networks that synthesise a DES image from an LE image (one generator per view).

The generator follows the authors' 2024 code and the CycleGAN reference (Zhu et al.):
a ResNet-block encoder-decoder with reflection padding and instance norm, but with a
sigmoid output so that synthetic DES lies in [0, 1] like the preprocessed inputs. The
discriminator is the 70×70 PatchGAN (64-128-256-512), built from MONAI's
``PatchDiscriminator`` with instance norm and no final sigmoid (least-squares GAN loss).
Every knob is an argument whose default is the published value; ``DEMO_GENERATOR`` holds
the tiny size the phantom demo uses.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

PAPER_GENERATOR: dict[str, int] = {"ngf": 64, "n_blocks": 9}
DEMO_GENERATOR: dict[str, int] = {"ngf": 8, "n_blocks": 2}
IMAGE_CHANNELS = 1
#: The ResNet generator downsamples twice: it works on sides that are multiples of this.
RESNET_STRIDE = 4
#: The smallest side it trains on: padded to 8, its residual blocks see 2 × 2.
SMALLEST_RESNET_INPUT = 5


class ResidualBlock(nn.Module):
    """Two reflection-padded 3×3 convolutions with instance norm and an identity skip."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, kernel_size=3),
            nn.InstanceNorm2d(channels),
            nn.ReLU(),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, kernel_size=3),
            nn.InstanceNorm2d(channels),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features + self.body(features)


class ResnetGenerator(nn.Module):
    """LE ``[B, 1, H, W]`` in [0, 1] → synthetic DES ``[B, 1, H, W]`` in [0, 1].

    Two stride-2 downsamplings need sides that are multiples of 4: other sides (an odd
    training crop, a package's image size) are reflection-padded at the bottom and right
    and the output cropped back, so the synthetic DES always has the LE's size. Sides
    that are multiples of 4 are computed exactly as before.

    >>> import torch
    >>> generator = build_generator(**DEMO_GENERATOR).eval()
    >>> generator(torch.rand(1, 1, 64, 64)).shape
    torch.Size([1, 1, 64, 64])
    """

    def __init__(self, ngf: int = 64, n_blocks: int = 9) -> None:
        super().__init__()
        if ngf < 1 or n_blocks < 0:
            raise ValueError(f"invalid generator size ngf={ngf}, n_blocks={n_blocks}")
        self.ngf = ngf
        self.n_blocks = n_blocks
        self.model = nn.Sequential(
            *_stem(IMAGE_CHANNELS, ngf),
            *_downsample(ngf, 2 * ngf),
            *_downsample(2 * ngf, 4 * ngf),
            *[ResidualBlock(4 * ngf) for _ in range(n_blocks)],
            *_upsample(4 * ngf, 2 * ngf),
            *_upsample(2 * ngf, ngf),
            nn.ReflectionPad2d(3),
            nn.Conv2d(ngf, IMAGE_CHANNELS, kernel_size=7),
            nn.Sigmoid(),
        )

    @property
    def hyperparameters(self) -> dict[str, int]:
        """What :func:`build_generator` needs to rebuild this network (stored in model.json)."""
        return {"ngf": self.ngf, "n_blocks": self.n_blocks}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        pad_bottom, pad_right = -height % RESNET_STRIDE, -width % RESNET_STRIDE
        if not (pad_bottom or pad_right):
            return self.model(images)
        padded = nn.functional.pad(images, (0, pad_right, 0, pad_bottom), mode="reflect")
        return self.model(padded)[..., :height, :width]


class PatchGANDiscriminator(nn.Module):
    """PatchGAN: a map of real/fake logits, one per overlapping patch (70×70 for 3 layers).

    >>> import torch
    >>> build_discriminator()(torch.rand(1, 1, 64, 64)).shape
    torch.Size([1, 1, 6, 6])
    """

    def __init__(self, ndf: int = 64, n_layers: int = 3, in_channels: int = IMAGE_CHANNELS) -> None:
        super().__init__()
        from monai.networks.nets import PatchDiscriminator

        self.ndf = ndf
        self.n_layers = n_layers
        self.network = PatchDiscriminator(
            spatial_dims=2,
            channels=ndf,
            in_channels=in_channels,
            out_channels=1,
            num_layers_d=n_layers,
            kernel_size=4,
            norm="INSTANCE",
            bias=True,
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # MONAI returns every intermediate feature map; the last one is the patch logits.
        return self.network(images)[-1]


def build_generator(ngf: int = 64, n_blocks: int = 9) -> ResnetGenerator:
    """ResNet-block CycleGAN generator; defaults are the paper's (ngf 64, 9 blocks).

    >>> build_generator(**DEMO_GENERATOR).hyperparameters
    {'ngf': 8, 'n_blocks': 2}
    """
    return ResnetGenerator(ngf=ngf, n_blocks=n_blocks)


def build_discriminator(
    ndf: int = 64, n_layers: int = 3, in_channels: int = IMAGE_CHANNELS
) -> PatchGANDiscriminator:
    """70×70 PatchGAN discriminator (64-128-256-512 for the defaults), logits without sigmoid.

    ``in_channels=2`` makes the conditional discriminator of pix2pix (LE and DES stacked).

    >>> build_discriminator(ndf=8).n_layers
    3
    """
    return PatchGANDiscriminator(ndf=ndf, n_layers=n_layers, in_channels=in_channels)


def smallest_patchgan_input(n_layers: int = 3) -> int:
    """The smallest image side a PatchGAN of ``n_layers`` gives a logit for (24 for 3):
    ``n_layers`` halvings, then two 4×4 convolutions that each take one pixel off.

    >>> smallest_patchgan_input(3)
    24
    """
    return 3 * 2**n_layers


def patch_receptive_field(n_layers: int = 3) -> int:
    """Side in pixels of the input patch one discriminator output sees (70 for 3 layers).

    >>> patch_receptive_field(3)
    70
    """
    strides = [2] * n_layers + [1, 1]  # initial + (n_layers - 1) stride-2, then two stride-1
    field = 1
    for stride in reversed(strides):
        field = (field - 1) * stride + 4
    return field


def _stem(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.ReflectionPad2d(3),
        nn.Conv2d(in_channels, out_channels, kernel_size=7),
        nn.InstanceNorm2d(out_channels),
        nn.ReLU(),
    ]


def _downsample(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1),
        nn.InstanceNorm2d(out_channels),
        nn.ReLU(),
    ]


def _upsample(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.ConvTranspose2d(
            in_channels, out_channels, kernel_size=3, stride=2, padding=1, output_padding=1
        ),
        nn.InstanceNorm2d(out_channels),
        nn.ReLU(),
    ]


def generator_kwargs(entry: dict[str, Any]) -> dict[str, int]:
    """The builder arguments stored for a generator in model.json."""
    return {"ngf": int(entry["ngf"]), "n_blocks": int(entry["n_blocks"])}
