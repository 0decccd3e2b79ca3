"""LE → DES generators by name: the paper's CycleGAN ResNet generator or a U-Net.

A model package stores a generator's architecture name and hyperparameters; this module
rebuilds the network from them. Packages written before the name existed hold ResNet
generators (``{"ngf", "n_blocks"}``).

>>> build_named_generator("unet", {"base_width": 4, "levels": 3}).hyperparameters
{'base_width': 4, 'levels': 3}
>>> generator_spec(build_named_generator("resnet", {"ngf": 4, "n_blocks": 1}))
('resnet', {'ngf': 4, 'n_blocks': 1})
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from VirtualBiopsyLib.models.cyclegan import (
    SMALLEST_RESNET_INPUT,
    ResnetGenerator,
    build_generator,
)
from VirtualBiopsyLib.models.names import GENERATOR_ARCHITECTURES, GENERATOR_HYPERPARAMETERS
from VirtualBiopsyLib.models.unet import UNetGenerator, build_unet_generator, smallest_unet_input


def build_named_generator(architecture: str, hyperparameters: Mapping[str, int]) -> nn.Module:
    """A freshly initialised generator of ``architecture`` with these sizes."""
    names = GENERATOR_HYPERPARAMETERS.get(architecture)
    if names is None:
        raise ValueError(
            f"unknown generator architecture {architecture!r}; "
            f"expected one of {', '.join(GENERATOR_ARCHITECTURES)}"
        )
    missing = [name for name in names if name not in hyperparameters]
    if missing:
        raise ValueError(f"{architecture} generator needs {', '.join(missing)}")
    sizes = {name: int(hyperparameters[name]) for name in names}
    if architecture == "unet":
        return build_unet_generator(**sizes)
    return build_generator(**sizes)


def smallest_generator_input(architecture: str, hyperparameters: Mapping[str, int]) -> int:
    """The smallest image side a generator of ``architecture`` trains on.

    >>> smallest_generator_input("unet", {"base_width": 16, "levels": 4})
    9
    """
    if architecture == "unet":
        return smallest_unet_input(int(hyperparameters["levels"]))
    return SMALLEST_RESNET_INPUT


def generator_spec(network: nn.Module) -> tuple[str, dict[str, int]]:
    """``(architecture, hyperparameters)`` of a generator, as model.json stores them."""
    if isinstance(network, UNetGenerator):
        return "unet", network.hyperparameters
    if isinstance(network, ResnetGenerator):
        return "resnet", network.hyperparameters
    raise TypeError(f"not a known generator: {type(network).__name__}")
