"""One configuration object per training job; defaults are the paper's numbers.

Every run saves its :class:`RunConfig` as ``config.json`` beside its outputs, so a run can
be reproduced and compared. :func:`tiny_config` is the small setting used by CI (64×64
images, demo-size networks, a few epochs); :func:`demo_config` is the same with generators
trained longer, for the committed demo package (``make demo-model``).

Every configuration is checked as it is made, read from JSON or built in code: a value
of the wrong JSON type (``"false"`` for a boolean), one that training would fail on hours
into a run, silently ignore, or that its model package could not hold is a
:class:`ConfigError` naming the option.

>>> config = RunConfig()
>>> config.classifier.learning_rate, config.classifier.max_epochs, config.generator.max_epochs
(0.001, 300, 200)
>>> RunConfig.from_dict(config.to_dict()) == config
True
"""

from __future__ import annotations

import functools
import json
import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from VirtualBiopsyLib.atomic_io import write_text_atomic
from VirtualBiopsyLib.errors import VirtualBiopsyError
from VirtualBiopsyLib.images.preprocessing import STRETCH_RULES
from VirtualBiopsyLib.limits import GENERATOR_MAXIMA, MAX_NETWORK_INPUT_SIZE
from VirtualBiopsyLib.models.classifiers import pretrained_weights_problem
from VirtualBiopsyLib.models.cyclegan import DEMO_GENERATOR, smallest_patchgan_input
from VirtualBiopsyLib.models.generators import smallest_generator_input
from VirtualBiopsyLib.models.names import (
    CLASSIFIER_ARCHITECTURES,
    GENERATOR_ARCHITECTURES,
    GENERATOR_HYPERPARAMETERS,
    GENERATOR_MINIMA,
    POOLINGS,
    SMALLEST_CLASSIFIER_INPUT,
    pooling_problem,
    unet_size_problem,
)
from VirtualBiopsyLib.models.package import MIN_IMAGE_SIZE
from VirtualBiopsyLib.roles import Modality, Slot
from VirtualBiopsyLib.training_manifest import PHASES

CLASS_WEIGHTINGS: tuple[str, ...] = ("none", "balanced")
#: Whose classifiers also train on the other view's images (``other_view_training``).
OTHER_VIEW_TRAINING: tuple[str, ...] = ("none", "LE", "DES", "all")
GENERATOR_RECIPES: tuple[str, ...] = ("cyclegan", "pix2pix")
GENERATOR_SELECTIONS: tuple[str, ...] = ("l1", "emphasis_l1")
SPLIT_PROTOCOLS: tuple[str, ...] = ("paper", "every-patient")


class ConfigError(VirtualBiopsyError):
    """A configuration file or value that cannot be used."""


@dataclass(frozen=True)
class AugmentConfig:
    """Random affine augmentation of training images (paper: shift ±10 %, zoom ±10 %, ±15°)."""

    enabled: bool = True
    shift_fraction: float = 0.10
    zoom_fraction: float = 0.10
    rotation_degrees: float = 15.0

    def __post_init__(self) -> None:
        _check_types(self)
        _check_range(self, "shift_fraction", 0.0, 1.0)
        _check_range(self, "zoom_fraction", 0.0, 1.0, high_open=True)  # 1: zoom to nothing
        _check_range(self, "rotation_degrees", 0.0, 180.0)


@dataclass(frozen=True)
class ClassifierConfig:
    """The paper's classifier recipe (Section 2.4): Adam, cross-entropy, plateau schedule.

    ``class_weighting`` weights the cross-entropy per class: ``"none"`` is the paper's plain
    cross-entropy; ``"balanced"`` weights each class by the inverse of its frequency in the
    training split (scikit-learn's "balanced": ``n / (2 · n_class)``), so that a skewed
    cohort does not push every probability past the 0.5 threshold. The same weights apply
    to the validation loss that drives the schedule and early stopping.

    ``pooling`` is the global pooling before the last layer (``"avg"``, the paper's, or
    ``"max"``, ``"gem"``, ``"attention"``: a lesion under 1 % of the image is diluted by
    an average). ``min_learning_rate`` is the floor of the plateau schedule, and
    ``val_loss_smoothing`` (0 = none, the paper) is the factor of an exponential moving
    average of the validation loss that the schedule and early stopping watch: with
    validation splits of a dozen images the raw loss is noise and drives the rate to
    1e-7 within a few epochs. The kept weights (``keep_best``) are those of the best
    smoothed loss too. ``min_learning_rate`` may not exceed ``learning_rate`` (the schedule
    only lowers the rate; equal to it, the rate stays constant).

    ``pretrained_weights``: a ``.safetensors`` ImageNet state dict of the same torchvision
    network (never a pickle; not for the demo network), read when each classifier starts.

    ``synthetic_des_training`` (not in the paper, which trains on real DES only): a DES
    classifier also trains on its fold's generator's synthetic DES of the same training
    patients, with their labels, so that it ranks the fainter synthetic lesions it is
    given when DES is missing (the Ĉ path) as well as real ones. Its epochs then hold
    twice the images, hence ``des_max_epochs``: the DES classifiers' epoch limit when it
    differs from the LE classifiers' (None: ``max_epochs`` for every slot).

    ``other_view_training`` (not in the paper): the classifiers of these modalities (``"LE"``,
    ``"DES"``, ``"all"``; ``"none"`` is the paper) also train on the *other* view's images
    of their training patients, with the same labels: f[LE,CC] sees LE MLO images too. Each
    is still one network per modality-view pair, validated and weighted on its own view;
    it only gets twice the examples of a small lesion, and each epoch twice the steps.
    """

    architecture: str = "resnet18"
    pooling: str = "avg"
    min_learning_rate: float = 0.0
    val_loss_smoothing: float = 0.0
    max_epochs: int = 300
    des_max_epochs: int | None = None  # None: max_epochs (DES slots only; see above)
    batch_size: int = 8
    learning_rate: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 1e-5
    lr_factor: float = 0.1
    lr_patience: int = 10
    early_stopping_patience: int = 50
    warmup_epochs: int = 50
    pretrained_weights: str | None = None
    keep_best: bool = True  # keep the best-validation-loss weights (paper); False: the last
    class_weighting: str = "none"  # "none" (paper) or "balanced" (inverse class frequency)
    synthetic_des_training: bool = False  # DES classifiers also see G_v(LE) (not the paper)
    other_view_training: str = "none"  # "none" (paper), "LE", "DES" or "all" (see above)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        _check_types(self)
        _check_choice(self, "architecture", CLASSIFIER_ARCHITECTURES)
        _check_choice(self, "pooling", POOLINGS)
        _check_choice(self, "class_weighting", CLASS_WEIGHTINGS)
        _check_choice(self, "other_view_training", OTHER_VIEW_TRAINING)
        problem = pooling_problem(self.architecture, self.pooling)
        if problem is not None:
            raise ConfigError(
                f"pooling {self.pooling!r} cannot be used with architecture "
                f"{self.architecture!r}: {problem}"
            )
        if self.pretrained_weights is not None:
            problem = pretrained_weights_problem(self.architecture, self.pretrained_weights)
            if problem is not None:
                raise ConfigError(f"pretrained_weights {self.pretrained_weights!r}: {problem}")
        for name in ("max_epochs", "des_max_epochs", "batch_size"):
            _check_at_least(self, name, 1)
        _check_optimiser(self)
        _check_range(self, "min_learning_rate", 0.0, math.inf)
        if self.min_learning_rate > self.learning_rate:  # ReduceLROnPlateau would ignore it
            raise ConfigError(
                f"min_learning_rate {self.min_learning_rate!r} is above learning_rate "
                f"{self.learning_rate!r}: the plateau schedule only lowers the rate (set them "
                "equal for a constant rate)"
            )
        _check_range(self, "val_loss_smoothing", 0.0, 1.0, high_open=True)
        _check_range(self, "lr_factor", 0.0, 1.0, low_open=True, high_open=True)
        for name in ("lr_patience", "early_stopping_patience", "warmup_epochs"):
            _check_at_least(self, name, 0)

    def trains_on_other_view(self, slot: Slot | str) -> bool:
        """Whether ``slot``'s classifier also trains on the other view's images.

        >>> ClassifierConfig(other_view_training="LE").trains_on_other_view("LE_MLO")
        True
        """
        return self.other_view_training in ("all", Slot(slot).modality.value)

    def for_slot(self, slot: Slot | str) -> ClassifierConfig:
        """The recipe of one slot's classifier: ``des_max_epochs`` is a DES slot's limit.

        >>> config = ClassifierConfig(max_epochs=60, des_max_epochs=30)
        >>> config.for_slot("LE_CC").max_epochs, config.for_slot("DES_CC").max_epochs
        (60, 30)
        """
        if self.des_max_epochs is None or Slot(slot).modality is not Modality.DES:
            return self
        return replace(self, max_epochs=self.des_max_epochs)


@dataclass(frozen=True)
class GeneratorConfig:
    """How G_v is built and trained; the defaults are the paper's CycleGAN recipe (§2.5).

    ``recipe``: ``"cyclegan"`` (the paper: LSGAN + cycle L1 ×10 + identity L1 ×5, unpaired
    losses on paired data) or ``"pix2pix"`` (paired: L1 ×``lambda_l1`` + LSGAN ×
    ``lambda_adversarial`` from a PatchGAN that sees LE and DES together; 0 turns the
    adversary off). ``architecture``: ``"resnet"`` (ngf, n_blocks) or ``"unet"``
    (base_width, levels).

    ``lesion_emphasis`` λ weights every L1 term pixel by pixel with ``1 + λ·r``, where ``r``
    is the real DES's positive residual from its local median (window
    ``emphasis_window`` of the image side), normalised per image: enhancing lesions and
    vessels are bright locally and weigh up to 1 + λ times the flat background. The paper
    has none (0). ``selection`` is the validation loss that early stopping and the kept
    weights use: ``"l1"`` (the paper's whole-image L1) or ``"emphasis_l1"`` (the same
    weighted L1 on the validation pairs, which a generator that leaves the lesion out
    cannot win). ``crop_size`` trains the (fully convolutional) generator on one square
    crop per pair, centred on a pixel drawn in proportion to its emphasis weight — a
    quarter of the cost at half the side, with lesions in many crops; the paper trains on
    whole images (None; a crop at least as large as the image is the whole image). Any
    side works for either architecture, down to the smallest the networks take (checked
    with the run's ``image_size``: a U-Net keeps two pixels at its deepest level, a
    PatchGAN needs 3 × 2^``n_layers``). ``folds`` trains generators in the first N folds only (None:
    every fold, the paper): synthesis is most of a run's cost, the package keeps one
    generator per view, and folds without one simply have no Ĉ / F+Ĉ rows.
    ``lr_decay_epochs`` N: the learning rate falls linearly towards 0 over the last N
    epochs (pix2pix's and CycleGAN's own schedule); 0 keeps it constant (the paper).
    ``other_view_pairs`` (not in the paper): G_v also trains on the other view's LE/DES
    pairs of its training patients (validated on its own view only), twice the examples
    of how a lesion enhances; the package still keeps one generator per view.
    """

    recipe: str = "cyclegan"
    architecture: str = "resnet"
    ngf: int = 64
    n_blocks: int = 9
    base_width: int = 32
    levels: int = 5
    lambda_l1: float = 100.0
    lambda_adversarial: float = 1.0
    lesion_emphasis: float = 0.0
    emphasis_window: float = 0.15
    selection: str = "l1"
    crop_size: int | None = None  # train on crops of this side (None: whole images, paper)
    folds: int | None = None  # train G_v in the first N folds only (None: every fold, paper)
    ndf: int = 64
    n_layers: int = 3
    max_epochs: int = 200
    batch_size: int = 8
    learning_rate: float = 1e-5
    beta1: float = 0.5
    beta2: float = 0.999
    weight_decay: float = 1e-5
    lambda_cycle: float = 10.0
    lambda_identity: float = 5.0
    early_stopping_patience: int = 50
    warmup_epochs: int = 50
    pretrain_epochs: int = 200
    lr_decay_epochs: int = 0  # linear decay to 0 over the last N epochs (0: constant, paper)
    other_view_pairs: bool = False  # also train on the other view's pairs (paper: no)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        _check_types(self)
        _check_choice(self, "recipe", GENERATOR_RECIPES)
        _check_choice(self, "architecture", GENERATOR_ARCHITECTURES)
        _check_choice(self, "selection", GENERATOR_SELECTIONS)
        for name in GENERATOR_HYPERPARAMETERS[self.architecture]:  # what the package stores
            _check_at_least(self, name, GENERATOR_MINIMA[name], GENERATOR_MAXIMA[name])
        if self.architecture == "unet":
            problem = unet_size_problem(self.base_width, self.levels)
            if problem is not None:
                raise ConfigError(problem)
        for name in ("max_epochs", "batch_size", "pretrain_epochs", "ndf", "n_layers"):
            _check_at_least(self, name, 1)
        for name in ("crop_size", "folds"):  # None: whole images, every fold
            _check_at_least(self, name, 1)
        for name in ("lr_decay_epochs", "early_stopping_patience", "warmup_epochs"):
            _check_at_least(self, name, 0)
        _check_optimiser(self)
        for name in ("lambda_l1", "lambda_adversarial", "lambda_cycle", "lambda_identity"):
            _check_range(self, name, 0.0, math.inf)
        _check_range(self, "lesion_emphasis", 0.0, math.inf)
        _check_range(self, "emphasis_window", 0.0, 1.0, low_open=True)

    @property
    def has_discriminator(self) -> bool:
        """Whether training needs a PatchGAN (CycleGAN always; pix2pix with an adversary)."""
        return self.recipe == "cyclegan" or self.lambda_adversarial > 0

    def smallest_training_side(self) -> int:
        """The smallest image or crop side these networks train on."""
        sizes = {name: getattr(self, name) for name in GENERATOR_HYPERPARAMETERS[self.architecture]}
        side = smallest_generator_input(self.architecture, sizes)
        if self.has_discriminator:
            side = max(side, smallest_patchgan_input(self.n_layers))
        return side

    def check_training_side(self, image_size: int) -> None:
        """Refuse images of ``image_size`` (or this config's crops of them) that are too
        small for its networks, before training rather than in its first step.

        >>> GeneratorConfig(crop_size=16).smallest_training_side()  # a PatchGAN of 3 layers
        24
        """
        crop = self.crop_size
        cropped = crop is not None and crop < image_size  # else: the whole image
        side = crop if cropped else image_size
        smallest = self.smallest_training_side()
        if side >= smallest:
            return
        what = f"generator.crop_size {crop}" if cropped else f"image_size {image_size}"
        networks = f"a {self.architecture} generator" + (
            f" and a PatchGAN of n_layers {self.n_layers}" if self.has_discriminator else ""
        )
        raise ConfigError(
            f"{what} is too small for {networks}: they need at least {smallest} pixels"
        )


@dataclass(frozen=True)
class SplitConfig:
    """Patient-disjoint stratified cross-validation: 5 folds of 80/10/10 (see splits.py)."""

    n_folds: int = 5
    seed: int = 2026
    protocol: str = "paper"  # "paper" (5 × 80/10/10) or "every-patient" (each tested once)

    def __post_init__(self) -> None:
        _check_types(self)
        _check_choice(self, "protocol", SPLIT_PROTOCOLS)
        # one fold has no training chunk (paper) or validates on its test chunk (every-patient)
        _check_at_least(self, "n_folds", 2)


@dataclass(frozen=True)
class RunConfig:
    """Everything one ``virtual-biopsy-train train`` run needs besides its data."""

    image_size: int = 256
    stretch: str = "window"
    classifier_phase: str | None = "early"  # paper: classification on early-phase images
    train_generators: bool = True
    seed: int = 0
    device: str = "auto"  # "auto" picks CUDA when present
    amp: bool = True  # mixed precision, CUDA only
    channels_last: bool = True  # every device (Training.runtime: faster on CPU too)
    threshold: float = 0.5
    robustness_repetitions: int = 10
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    splits: SplitConfig = field(default_factory=SplitConfig)

    def __post_init__(self) -> None:
        _check_types(self)
        _check_choice(self, "stretch", STRETCH_RULES)
        if self.classifier_phase is not None:
            _check_choice(self, "classifier_phase", PHASES)
        _check_at_least(self, "image_size", MIN_IMAGE_SIZE, MAX_NETWORK_INPUT_SIZE)  # packages
        smallest = SMALLEST_CLASSIFIER_INPUT[self.classifier.architecture]
        if self.image_size < smallest:
            raise ConfigError(
                f"image_size {self.image_size} is too small for the "
                f"{self.classifier.architecture} classifier: it needs at least {smallest} pixels"
            )
        _check_range(self, "threshold", 0.0, 1.0, low_open=True, high_open=True)
        _check_at_least(self, "robustness_repetitions", 1)
        if self.train_generators:
            self.generator.check_training_side(self.image_size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Rebuild a config from :meth:`to_dict` output; unknown keys are an error."""
        return _build(cls, data, "config")

    def save(self, path: Path) -> None:
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> RunConfig:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ConfigError(f"{path}: cannot read training configuration ({error})") from None
        try:
            return cls.from_dict(data)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None


_NESTED = {
    "augment": AugmentConfig,
    "classifier": ClassifierConfig,
    "generator": GeneratorConfig,
    "splits": SplitConfig,
}


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    """``cls`` from a JSON object; its own checks (``__post_init__``) run as it is made."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a JSON object")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {where} keys: {', '.join(unknown)}")
    values = {}
    for name, value in data.items():
        nested = _NESTED.get(name)
        values[name] = _build(nested, value, f"{where}.{name}") if nested else value
    try:
        return cls(**values)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check_types(config: Any) -> None:
    """Every field holds its annotated type: a JSON string where a number or a boolean
    belongs (``"false"`` is true) would otherwise pass until it is used, or never fail."""
    for name, kind in _field_types(type(config)).items():
        value = getattr(config, name)
        if not _is_instance(value, kind):
            raise ConfigError(f"{name} must be {_describe(kind)}, got {value!r}")


def _is_instance(value: Any, kind: Any) -> bool:
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        return any(_is_instance(value, option) for option in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if kind is float:  # a JSON number: 1 and 1.0 alike, never true/false
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _describe(kind: Any) -> str:
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        return " or ".join(_describe(option) for option in typing.get_args(kind))
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if kind is type(None):
        return "null"
    if is_dataclass(kind):
        return "a JSON object"
    return names.get(kind, str(kind))


def _check_choice(config: Any, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(config, name)
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; expected one of {', '.join(choices)}")


def _check_at_least(config: Any, name: str, minimum: int, maximum: int | None = None) -> None:
    """An integer option (None allowed where it is optional) within its bounds."""
    value = getattr(config, name)
    if value is None:
        return
    if value < minimum or (maximum is not None and value > maximum):
        if maximum is not None:
            kind = f"an integer from {minimum} to {maximum}"
        else:
            kind = {0: "a non-negative integer", 1: "a positive integer"}.get(
                minimum, f"an integer >= {minimum}"
            )
        raise ConfigError(f"{name} must be {kind}, got {value!r}")


def _check_range(
    config: Any,
    name: str,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """A number within ``[low, high]`` (``(`` / ``)`` where open); NaN and infinity never are."""
    value = getattr(config, name)
    above = value > low if low_open else value >= low
    below = value < high if high_open or math.isinf(high) else value <= high
    if not (above and below):
        if math.isinf(high):
            bound = f"a finite number {'>' if low_open else '>='} {low:g}"
        else:
            bound = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ConfigError(f"{name} must be {bound}, got {value!r}")


def _check_optimiser(config: ClassifierConfig | GeneratorConfig) -> None:
    """Adam's settings, as torch would refuse them only once training starts."""
    _check_range(config, "learning_rate", 0.0, math.inf)  # 0: frozen (Adam allows it)
    _check_range(config, "beta1", 0.0, 1.0, high_open=True)
    _check_range(config, "beta2", 0.0, 1.0, high_open=True)
    _check_range(config, "weight_decay", 0.0, math.inf)


def tiny_config(seed: int = 0) -> RunConfig:
    """The CI / demo setting: 64×64 images, demo networks, a handful of epochs.

    The classifiers keep the paper's optimiser but train all 40 epochs and keep the last
    weights: validation splits of three or four phantom patients make the best-loss epoch
    noise. Their cross-entropy is class-balanced: the phantom cohort is about 70 %
    malignant, and plain cross-entropy puts every tiny classifier's probabilities above
    0.5, which makes every validation MCC 0. The generators' learning rate is raised so
    that two epochs learn something.

    >>> tiny_config().image_size
    64
    """
    return RunConfig(
        image_size=64,
        seed=seed,
        robustness_repetitions=3,
        classifier=ClassifierConfig(
            architecture="demo",
            max_epochs=40,
            batch_size=8,
            warmup_epochs=40,
            keep_best=False,
            class_weighting="balanced",
        ),
        generator=GeneratorConfig(
            ngf=DEMO_GENERATOR["ngf"],
            n_blocks=DEMO_GENERATOR["n_blocks"],
            ndf=8,
            n_layers=3,
            max_epochs=2,
            batch_size=8,
            learning_rate=2e-3,
            early_stopping_patience=2,
            warmup_epochs=2,
            pretrain_epochs=2,
        ),
    )


DEMO_GENERATOR_EPOCHS = 200
DEMO_CLASSIFIER_EPOCHS = 60  # LE; DES classifiers train half (twice the images)
DEMO_IMAGE_SIZE = 128


def demo_config(seed: int = 0) -> RunConfig:
    """The demo package's setting: the recipe that makes the method work on the phantom.

    Chosen from phantom measurements (README, "Making the method work"); with the 300
    patients of ``demo-model`` it took 69 minutes on two AVX2 cores (two workers, 7821 CPU-s,
    the two generators 84 minutes of one core between them):

    - 128² images: at 64² a phantom lesion spans 2–7 pixels and neither LE morphology nor
      its enhancement survives; at 128² it spans 4–14.
    - Every-patient protocol: every phantom patient is tested once (70/10/20 folds).
    - Classifiers: the demo network with a global *max* pool (the lesion covers < 1 % of
      the image and an average dilutes it), class-balanced cross-entropy and a constant
      learning rate (the plateau schedule's floor is its start); the last weights are kept
      (validation splits of a dozen patients are too noisy to pick an epoch). LE
      classifiers train 60 epochs: with the rate falling to a floor of 1e-4 within 40,
      four of the five LE_CC folds stayed at chance (AUC 0.49–0.57 on 321 fresh cases);
      a constant rate for 60 epochs brought three such folds to 0.66–0.76. DES classifiers
      also train on fold 0's synthetic DES of their training patients (trained on real DES
      only, one ranked synthetic DES at AUC 0.63, with it 0.72–0.73), so their epochs
      hold twice the images: 30 of them (the same number of steps; real DES AUC 0.861 /
      0.895 for CC / MLO against 0.859 / 0.895 with 40 epochs and the floor).
    - LE classifiers also train on the other view's LE images of their training patients
      (``other_view_training="LE"``): trained on one view, single LE models scored
      0.56–0.80 on 321 fresh cases and training loss fell to 0.13–0.21 (memorised); on
      both views every fold reached 0.77–0.83 and the LE ensemble gained 4–6 AUC points
      on three fresh cohorts (README, "LE classifiers on both views").
    - Generators: a U-Net of base width 16 trained pix2pix-style (paired L1 ×100 + LSGAN)
      with the lesion emphasis (λ 30) on 64² crops, half of them centred where the DES
      enhances, selected on the emphasis-weighted validation L1; trained in fold 0 only
      (the package keeps one generator per view; folds 1–4 have no Ĉ rows). Width 16
      instead of 8 draws brighter lesions (malignant synthetic contrast 0.060 → 0.078,
      real 0.127) and raised Ĉ by 2.4 AUC points pooled over three fresh cohorts (paired,
      +1.0 to +3.7), at about twice the generators' CPU.

    >>> config = demo_config()
    >>> config.image_size, config.classifier.pooling, config.generator.architecture
    (128, 'max', 'unet')
    >>> config.classifier.other_view_training
    'LE'
    """
    tiny = tiny_config(seed)
    classifier = replace(
        tiny.classifier,
        pooling="max",
        max_epochs=DEMO_CLASSIFIER_EPOCHS,
        des_max_epochs=DEMO_CLASSIFIER_EPOCHS // 2,
        warmup_epochs=DEMO_CLASSIFIER_EPOCHS,
        min_learning_rate=tiny.classifier.learning_rate,  # constant: the floor is the start
        synthetic_des_training=True,
        other_view_training="LE",
    )
    generator = GeneratorConfig(
        recipe="pix2pix",
        architecture="unet",
        base_width=16,
        levels=4,
        ndf=8,
        n_layers=3,
        max_epochs=DEMO_GENERATOR_EPOCHS,
        batch_size=8,
        learning_rate=2e-3,
        lambda_l1=100.0,
        lambda_adversarial=1.0,
        lesion_emphasis=30.0,
        selection="emphasis_l1",
        crop_size=64,
        folds=1,
        early_stopping_patience=DEMO_GENERATOR_EPOCHS,
        warmup_epochs=DEMO_GENERATOR_EPOCHS,
    )
    return replace(
        tiny,
        image_size=DEMO_IMAGE_SIZE,
        classifier=classifier,
        generator=generator,
        splits=SplitConfig(protocol="every-patient"),
    )
