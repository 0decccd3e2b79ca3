"""Names a model package may use, without importing torch (checked when a package loads).

>>> "max" in POOLINGS, GENERATOR_HYPERPARAMETERS["unet"]
(True, ('base_width', 'levels'))
"""

from __future__ import annotations

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
