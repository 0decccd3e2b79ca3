"""Names a model package may use, without importing torch (checked when a package loads).

>>> "max" in POOLINGS, GENERATOR_HYPERPARAMETERS["unet"]
(True, ('base_width', 'levels'))
>>> pooling_problem("vgg16", "attention") is not None, pooling_problem("resnet50", "gem")
(True, None)
"""

from __future__ import annotations

#: The classifier families (one per experiment); "demo" is the tiny network of the demo
#: and the tests. Training, the package and the builders all read this one list.
CLASSIFIER_ARCHITECTURES: tuple[str, ...] = ("resnet18", "resnet50", "vgg16", "demo")
DEMO_ARCHITECTURE = "demo"
#: The smallest image side each classifier accepts: the demo network halves it four
#: times and VGG16 five times before its last block; torchvision's ResNets pool adaptively.
SMALLEST_CLASSIFIER_INPUT: dict[str, int] = {
    "resnet18": 1,
    "resnet50": 1,
    "vgg16": 32,
    "demo": 16,
}

#: Global pooling of a classifier's last feature map. "avg" is the paper's (torchvision's
#: default); a lesion under 1 % of the image is diluted by an average, so "max", "gem"
#: (generalised mean, learnable exponent) and "attention" (learned weights) are offered.
POOLINGS: tuple[str, ...] = ("avg", "max", "gem", "attention")
PAPER_POOLING = "avg"

#: LE → DES generator families and the hyperparameters model.json stores for each.
GENERATOR_HYPERPARAMETERS: dict[str, tuple[str, ...]] = {
    "resnet": ("ngf", "n_blocks"),  # the paper's CycleGAN ResNet generator
    "unet": ("base_width", "levels"),
}
GENERATOR_ARCHITECTURES: tuple[str, ...] = tuple(GENERATOR_HYPERPARAMETERS)
#: The smallest value of each generator hyperparameter (the maxima are the input limits
#: of :data:`VirtualBiopsyLib.limits.GENERATOR_MAXIMA`): a U-Net needs two levels to
#: have a skip connection; a ResNet generator may have no residual block.
GENERATOR_MINIMA: dict[str, int] = {"ngf": 1, "base_width": 1, "n_blocks": 0, "levels": 2}
#: The widest level a U-Net may have (``base_width × 2^(levels − 1)``).
MAX_UNET_WIDTH = 1024


def pooling_problem(architecture: str, pooling: str) -> str | None:
    """Why ``architecture``'s classifier cannot use ``pooling``, or None when it can.

    One rule for training, the builders and the package loader, so that a configuration
    is refused before it trains rather than when inference rebuilds it: attention pools
    to one position, and VGG16's head reads a 7×7 map.
    """
    if pooling not in POOLINGS:
        return f"unknown pooling {pooling!r}; expected one of {', '.join(POOLINGS)}"
    if pooling == "attention" and architecture == "vgg16":
        return "attention pooling needs a global pool (not VGG16's 7×7 pool)"
    return None


def unet_size_problem(base_width: int, levels: int) -> str | None:
    """Why a U-Net of this size cannot be built, or None: one rule for the builder, the
    training configuration and the package loader.

    >>> unet_size_problem(16, 4) is None, unet_size_problem(512, 5) is None
    (True, False)
    """
    too_small = base_width < GENERATOR_MINIMA["base_width"] or levels < GENERATOR_MINIMA["levels"]
    if too_small or base_width * 2 ** (levels - 1) > MAX_UNET_WIDTH:
        return (
            f"invalid U-Net size base_width={base_width}, levels={levels} (base_width >= 1, "
            f"levels >= 2, base_width × 2^(levels − 1) <= {MAX_UNET_WIDTH})"
        )
    return None
