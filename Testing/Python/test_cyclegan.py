"""CycleGAN generator and 70×70 PatchGAN discriminator: shapes, ranges, sizes, receptive field."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from VirtualBiopsyLib.models.classifiers import count_parameters
from VirtualBiopsyLib.models.cyclegan import (
    DEMO_GENERATOR,
    PAPER_GENERATOR,
    ResidualBlock,
    build_discriminator,
    build_generator,
    patch_receptive_field,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _generator_parameters(ngf: int, n_blocks: int) -> int:
    """Parameters of the ResNet generator with 1 input/output channel, counted layer by layer.

    Instance norm has no affine parameters (as in the CycleGAN reference).
    """
    conv = lambda c_in, c_out, k: c_in * c_out * k * k + c_out  # noqa: E731
    return (
        conv(1, ngf, 7)  # stem
        + conv(ngf, 2 * ngf, 3)  # downsampling 1
        + conv(2 * ngf, 4 * ngf, 3)  # downsampling 2
        + n_blocks * 2 * conv(4 * ngf, 4 * ngf, 3)  # residual blocks
        + conv(4 * ngf, 2 * ngf, 3)  # transposed conv 1
        + conv(2 * ngf, ngf, 3)  # transposed conv 2
        + conv(ngf, 1, 7)  # output
    )


def test_paper_generator_parameter_count() -> None:
    generator = build_generator()
    assert generator.hyperparameters == PAPER_GENERATOR == {"ngf": 64, "n_blocks": 9}
    assert count_parameters(generator) == _generator_parameters(64, 9) == 11_365_633


def test_demo_generator_is_small() -> None:
    generator = build_generator(**DEMO_GENERATOR)
    assert count_parameters(generator) == _generator_parameters(8, 2)
    weight_bytes = sum(t.numel() * t.element_size() for t in generator.state_dict().values())
    assert weight_bytes < 300 * 1024


def test_generator_maps_unit_interval_to_unit_interval() -> None:
    generator = build_generator(**DEMO_GENERATOR).eval()
    le_cc = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        synthetic_des = generator(le_cc)
    assert synthetic_des.shape == le_cc.shape
    assert float(synthetic_des.min()) >= 0.0 and float(synthetic_des.max()) <= 1.0
    assert float(synthetic_des.std()) > 0  # not a constant image


def test_generator_layout_follows_the_paper() -> None:
    generator = build_generator(ngf=4, n_blocks=3)
    convs = [m for m in generator.modules() if isinstance(m, nn.Conv2d)]
    transposed = [m for m in generator.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert convs[0].kernel_size == (7, 7) and convs[-1].kernel_size == (7, 7)
    assert [c.out_channels for c in convs[:3]] == [4, 8, 16]  # ngf → 2ngf → 4ngf
    assert [c.stride for c in convs[1:3]] == [(2, 2), (2, 2)]
    assert [t.stride for t in transposed] == [(2, 2), (2, 2)]
    assert sum(isinstance(m, ResidualBlock) for m in generator.modules()) == 3
    assert any(isinstance(m, nn.ReflectionPad2d) for m in generator.modules())
    assert any(isinstance(m, nn.InstanceNorm2d) for m in generator.modules())
    assert isinstance(generator.model[-1], nn.Sigmoid)


def test_generator_trains_end_to_end() -> None:
    generator = build_generator(**DEMO_GENERATOR)
    loss = generator(torch.rand(1, 1, 32, 32)).mean()
    loss.backward()
    assert all(p.grad is not None for p in generator.parameters())


def test_invalid_generator_size_is_refused() -> None:
    with pytest.raises(ValueError, match="ngf=0"):
        build_generator(ngf=0)


def test_patchgan_discriminator_shape_widths_and_logits() -> None:
    discriminator = build_discriminator().eval()
    convs = [m for m in discriminator.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]
    assert [c.stride for c in convs] == [(2, 2), (2, 2), (2, 2), (1, 1), (1, 1)]
    assert all(c.kernel_size == (4, 4) for c in convs)
    assert not any(isinstance(m, nn.Sigmoid) for m in discriminator.modules())
    norms = [m for m in discriminator.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert len(norms) == 3  # none on the first layer, as in the 70×70 PatchGAN
    slopes = {m.negative_slope for m in discriminator.modules() if isinstance(m, nn.LeakyReLU)}
    assert slopes == {0.2}
    with torch.no_grad():
        logits = discriminator(torch.rand(1, 1, 64, 64))
    assert logits.shape == (1, 1, 6, 6)


def test_discriminator_on_a_256_image_gives_30_by_30_patches() -> None:
    discriminator = build_discriminator(ndf=4).eval()
    with torch.no_grad():
        assert discriminator(torch.rand(1, 1, 256, 256)).shape == (1, 1, 30, 30)


def test_receptive_field_is_70_pixels_measured_by_gradient() -> None:
    discriminator = build_discriminator(ndf=2)
    for name, module in list(discriminator.named_modules()):  # norms see the whole image;
        if isinstance(module, nn.InstanceNorm2d):  # remove them to measure locality
            parent = discriminator.get_submodule(name.rsplit(".", 1)[0])
            setattr(parent, name.rsplit(".", 1)[1], nn.Identity())
    image = torch.rand(1, 1, 160, 160, requires_grad=True)
    logits = discriminator(image)
    centre = logits.shape[-1] // 2
    logits[0, 0, centre, centre].backward()
    rows = image.grad[0, 0].abs().sum(dim=1).nonzero()
    extent = int(rows.max() - rows.min() + 1)
    assert extent == patch_receptive_field(3) == 70
