"""Train the generator G_v of one view (LE → DES), with the paper's recipe or a paired one.

``recipe="cyclegan"`` (the paper, §2.5): G_v and a DES → LE partner with least-squares
adversarial losses (MSE against 1 / 0 on PatchGAN logits), cycle consistency L1 ×10,
identity L1 ×5. ``recipe="pix2pix"``: G_v alone with the paired L1 to the real DES
×``lambda_l1`` plus an LSGAN loss from a conditional PatchGAN that sees (LE, DES) side
by side ×``lambda_adversarial`` (Isola et al. 2017). Either way every L1 term can weigh
the lesion up (``lesion_emphasis``, see :func:`emphasis_weights`): a lesion covers under
1 % of the image, and a whole-image L1 is nearly blind to it.

Adam, early stopping with warm-up, paired augmentation (the same random affine for LE
and DES). The validation loss (``selection``) is the paper's whole-image L1 or the
emphasis-weighted L1; the generator of the best epoch is kept. A generator pre-trained on
another manifest (``initial_generator``) is fine-tuned the same way.

>>> import torch
>>> from Training.config import GeneratorConfig
>>> pairs = PairSet(torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32))
>>> config = GeneratorConfig(ngf=4, n_blocks=1, ndf=4, n_layers=2, max_epochs=1, batch_size=2)
>>> train_generator(pairs, pairs, config, work_dir=None, progress=False).epochs_run
1
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch import nn

from Training.classifier_training import _batches
from Training.config import GeneratorConfig
from Training.epochs import EpochLoop, TrainedNetwork, run_epochs
from Training.metrics import lesion_contrast, masked_generation_metrics
from Training.runtime import (
    CheckpointStore,
    Runtime,
    copy_state,
    evaluating,
    make_runtime,
    unwrap,
)
from VirtualBiopsyLib.models.cyclegan import build_discriminator
from VirtualBiopsyLib.models.generators import build_named_generator

NETWORKS: tuple[str, ...] = ("le_to_des", "des_to_le", "d_des", "d_le")
#: The local median that the lesion emphasis subtracts is taken on an image of this side.
EMPHASIS_GRID = 64
#: λ of the "emphasis_l1" validation loss: fixed, so that runs with different training
#: emphasis are selected (and compared) by the same yardstick.
SELECTION_EMPHASIS = 20.0


@dataclass
class PairSet:
    """Registered LE and DES images of one view, ``[N, 1, H, W]`` each, in [0, 1]."""

    le: torch.Tensor
    des: torch.Tensor
    _emphasis: dict[tuple[float, float], torch.Tensor] = field(
        default_factory=dict, repr=False, compare=False
    )

    def __len__(self) -> int:
        return int(self.le.shape[0])

    def emphasis(self, config: GeneratorConfig) -> torch.Tensor:
        """:func:`emphasis_weights` of every DES, computed once per λ and window (the
        validation weights, the same every epoch; each image's weights depend on that
        image only, so computing them once changes nothing).

        Training batches are augmented first, so their weights are taken per batch. A
        variant that augmented precomputed weights with their pair (a near-identical
        definition, about a quarter less CPU per epoch) trained a generator whose
        synthetic DES scored Ĉ 65.8 instead of 76.3 on the phantom check (README):
        within the run-to-run spread of generator training, but not an improvement.
        """
        key = (config.lesion_emphasis, config.emphasis_window)
        if key not in self._emphasis:
            chunks = [emphasis_weights(chunk, config) for chunk in self.des.split(64)]
            self._emphasis[key] = torch.cat(chunks) if chunks else self.des.clone()
        return self._emphasis[key]


def train_generator(
    train: PairSet,
    val: PairSet,
    config: GeneratorConfig,
    work_dir: Path | None,
    seed: int = 0,
    runtime: Runtime | None = None,
    resume: bool = False,
    progress: bool = True,
    description: str = "generator",
    initial_generator: dict[str, torch.Tensor] | None = None,
    max_epochs: int | None = None,
    stop_after_epochs: int | None = None,
) -> TrainedNetwork:
    """Train one view's CycleGAN; ``work_dir`` (if given) receives an every-epoch checkpoint.

    ``initial_generator`` holds LE → DES weights to fine-tune (pre-training);
    ``max_epochs`` overrides ``config.max_epochs`` (used for the pre-training phase).
    """
    runtime = generator_runtime(runtime or make_runtime("cpu"))
    if len(train):  # a clear error now, not a shape error in the first step
        config.check_training_side(min(train.le.shape[-2:]))
    if max_epochs is not None:  # the phase's own length (the learning-rate decay reads it)
        config = replace(config, max_epochs=max_epochs)
    torch.manual_seed(seed)
    loop_type = _Pix2PixLoop if config.recipe == "pix2pix" else _CycleGanLoop
    loop = loop_type(config, seed, runtime)
    if initial_generator is not None:
        unwrap(loop.networks["le_to_des"]).load_state_dict(initial_generator)
        loop.best_state = copy_state(loop.networks["le_to_des"])
    store = CheckpointStore(work_dir) if work_dir is not None else None
    if resume and store is not None and store.exists():
        loop.restore(store)
    return run_epochs(
        loop,
        train,
        val,
        limit=config.max_epochs,
        store=store,
        progress=progress,
        description=description,
        postfix=f"val_{config.selection}",
        build=lambda: build_config_generator(config),
        stop_after_epochs=stop_after_epochs,
    )


def build_config_generator(config: GeneratorConfig) -> nn.Module:
    """A fresh G_v of the configured architecture and size."""
    sizes = {
        "ngf": config.ngf,
        "n_blocks": config.n_blocks,
        "base_width": config.base_width,
        "levels": config.levels,
    }
    return build_named_generator(config.architecture, sizes)


def learning_rate_factor(epoch: int, planned_epochs: int, decay_epochs: int) -> float:
    """The learning rate of (0-based) ``epoch`` over the configured one: 1, then linear
    down over the last ``decay_epochs`` of ``planned_epochs`` (pix2pix's and CycleGAN's
    schedule: constant, then linearly to 0; the last epoch keeps 1 / (decay + 1)).

    A function of the epoch alone, so a resumed run sets the same rates.

    >>> [round(learning_rate_factor(e, 6, 3), 2) for e in range(6)]
    [1.0, 1.0, 1.0, 0.75, 0.5, 0.25]
    """
    if decay_epochs <= 0:
        return 1.0
    return min(1.0, (planned_epochs - epoch) / (decay_epochs + 1))


class _GeneratorLoop(EpochLoop):
    """What both recipes share: networks by name, two Adam optimisers, epochs, checkpoints.

    Subclasses pass their ``networks`` (``le_to_des`` is G_v), name the ``GENERATORS``
    (the generator optimiser's networks; every other network is a discriminator, updated
    by the second optimiser) and implement ``_step``.
    """

    GENERATORS: tuple[str, ...] = ()

    def __init__(
        self, config: GeneratorConfig, seed: int, runtime: Runtime, networks: dict[str, nn.Module]
    ) -> None:
        super().__init__(
            seed, runtime, config.augment, config.early_stopping_patience, config.warmup_epochs
        )
        self.config = config
        self.networks = {
            name: runtime.wrap(runtime.prepare_model(network)) for name, network in networks.items()
        }
        adam = {
            "lr": config.learning_rate,
            "betas": (config.beta1, config.beta2),
            "weight_decay": config.weight_decay,
        }
        self.optimizer_g = torch.optim.Adam(
            [p for name in self.GENERATORS for p in self.networks[name].parameters()], **adam
        )
        discriminator_parameters = [
            p
            for name, network in self.networks.items()
            if name not in self.GENERATORS
            for p in network.parameters()
        ]
        self.optimizer_d = (
            torch.optim.Adam(discriminator_parameters, **adam) if discriminator_parameters else None
        )
        self.best_state = copy_state(self.networks["le_to_des"])
        self.loss_factor = 1.0  # this rank's share of the batch loss (Runtime.shard)

    def _step(
        self, le: torch.Tensor, des: torch.Tensor, weights: torch.Tensor | None
    ) -> tuple[float, float]:
        """One optimisation step on a batch; ``weights`` are the L1 emphasis (or None)."""
        raise NotImplementedError

    def run_epoch(self, train: PairSet, val: PairSet) -> dict[str, float]:
        factor = learning_rate_factor(
            self.epoch, self.config.max_epochs, self.config.lr_decay_epochs
        )
        learning_rate = self.config.learning_rate * factor
        for optimizer in filter(None, (self.optimizer_g, self.optimizer_d)):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate
        losses = self._train_one_epoch(train)
        val_loss = validation_loss(self.networks["le_to_des"], val, self.config, self.runtime)
        if self.stopper.update(val_loss):
            self.best_state = copy_state(self.networks["le_to_des"])
        record = {"epoch": self.epoch, **losses, "val_loss": val_loss, "lr": learning_rate}
        self.history.append(record)
        self.epoch += 1
        return record

    def _train_one_epoch(self, train: PairSet) -> dict[str, float]:
        for network in self.networks.values():
            network.train()
        totals = {"loss_g": 0.0, "loss_d": 0.0}
        count = 0
        for indices in _batches(
            len(train), self.config.batch_size, self.shuffle, self.runtime, self.seed, self.epoch
        ):
            le, des = self.augment(train.le[indices], train.des[indices])
            weights = emphasis_weights(des, self.config) if self.config.lesion_emphasis else None
            if self.config.crop_size:
                le, des, weights = self._crop(le, des, weights)
            # the whole batch is augmented and cropped on every rank (same draws), then
            # sharded; with lesion emphasis the weighted L1 is normalised per rank
            parts, self.loss_factor = self.runtime.shard(
                le, des, *(() if weights is None else (weights,))
            )
            le, des = self.runtime.prepare_batch(parts[0]), self.runtime.prepare_batch(parts[1])
            weights = parts[2].to(des.device) if weights is not None else None
            loss_g, loss_d = self._step(le, des, weights)
            totals["loss_g"] += loss_g * self.loss_factor * len(indices)
            totals["loss_d"] += loss_d * self.loss_factor * len(indices)
            count += len(indices)
        return {
            name: self.runtime.mean_over_ranks(value) / max(count, 1)
            for name, value in totals.items()
        }

    def _crop(
        self, le: torch.Tensor, des: torch.Tensor, weights: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One ``crop_size`` square per pair, half of them centred where the DES enhances.

        The generator is fully convolutional, so it trains on crops and synthesises whole
        images. Half of the centres are drawn uniformly, half in proportion to the squared
        emphasis ``(w − 1)²``, which concentrates on lesions rather than on noise (all
        uniform without emphasis). The draws come from the loop's checkpointed generator,
        so a resumed run draws the same crops.
        """
        size, (height, width) = self.config.crop_size, le.shape[-2:]
        if size >= min(height, width):
            return le, des, weights
        crops: list[list[torch.Tensor]] = [[], [], []]
        for index in range(le.shape[0]):
            centre = int(
                torch.multinomial(
                    self._centre_chance(weights, index, height, width), 1, generator=self.shuffle
                )
            )
            row = min(max(centre // width - size // 2, 0), height - size)
            col = min(max(centre % width - size // 2, 0), width - size)
            window = (..., slice(row, row + size), slice(col, col + size))
            crops[0].append(le[index][window])
            crops[1].append(des[index][window])
            if weights is not None:
                crops[2].append(weights[index][window])
        return (
            torch.stack(crops[0]),
            torch.stack(crops[1]),
            torch.stack(crops[2]) if weights is not None else None,
        )

    def _centre_chance(
        self, weights: torch.Tensor | None, index: int, height: int, width: int
    ) -> torch.Tensor:
        uniform = torch.ones(height * width)
        if weights is None or float(torch.rand((), generator=self.shuffle)) < 0.5:
            return uniform
        emphasis = (weights[index, 0].flatten() - 1.0).clamp(min=0.0) ** 2
        return emphasis if float(emphasis.sum()) > 0 else uniform

    def save(self, store: CheckpointStore) -> None:
        weights = {
            f"{name}.{key}": value
            for name, network in self.networks.items()
            for key, value in copy_state(network).items()
        }
        torch_state, state = self.shared_checkpoint()
        torch_state["optimizer_g"] = self.optimizer_g.state_dict()
        if self.optimizer_d is not None:
            torch_state["optimizer_d"] = self.optimizer_d.state_dict()
        store.save(weights, self.best_state, torch_state, state)

    def restore(self, store: CheckpointStore) -> None:
        weights, best, torch_state, state = store.load()
        for name, network in self.networks.items():
            prefix = f"{name}."
            unwrap(network).load_state_dict(
                {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
            )
        self.best_state = best
        self.optimizer_g.load_state_dict(torch_state["optimizer_g"])
        if self.optimizer_d is not None:
            self.optimizer_d.load_state_dict(torch_state["optimizer_d"])
        self.restore_shared(torch_state, state)


class _CycleGanLoop(_GeneratorLoop):
    """The paper's CycleGAN: two generators, two PatchGANs, unpaired losses."""

    GENERATORS = ("le_to_des", "des_to_le")

    def __init__(self, config: GeneratorConfig, seed: int, runtime: Runtime) -> None:
        networks = {
            "le_to_des": build_config_generator(config),
            "des_to_le": build_config_generator(config),
            "d_des": build_discriminator(config.ndf, config.n_layers),
            "d_le": build_discriminator(config.ndf, config.n_layers),
        }
        super().__init__(config, seed, runtime, networks)

    def _step(
        self, le: torch.Tensor, des: torch.Tensor, weights: torch.Tensor | None
    ) -> tuple[float, float]:
        """One CycleGAN iteration: generators first, then discriminators on detached fakes."""
        n = self.networks
        c = self.config
        _set_requires_grad((n["d_des"], n["d_le"]), False)
        self.optimizer_g.zero_grad(set_to_none=True)
        with self.runtime.autocast():
            synthetic_des = n["le_to_des"](le)
            synthetic_le = n["des_to_le"](des)
            adversarial = _lsgan(n["d_des"](synthetic_des), True) + _lsgan(
                n["d_le"](synthetic_le), True
            )
            cycle = nn.functional.l1_loss(n["des_to_le"](synthetic_des), le) + (
                weighted_l1(n["le_to_des"](synthetic_le), des, weights)
            )
            identity = weighted_l1(n["le_to_des"](des), des, weights) + (
                nn.functional.l1_loss(n["des_to_le"](le), le)
            )
            loss_g = adversarial + c.lambda_cycle * cycle + c.lambda_identity * identity
        self.scaler.scale(loss_g * self.loss_factor).backward()
        self.scaler.step(self.optimizer_g)
        _set_requires_grad((n["d_des"], n["d_le"]), True)
        self.optimizer_d.zero_grad(set_to_none=True)
        with self.runtime.autocast():
            loss_d = 0.5 * (
                _lsgan(n["d_des"](des), True) + _lsgan(n["d_des"](synthetic_des.detach()), False)
            ) + 0.5 * (
                _lsgan(n["d_le"](le), True) + _lsgan(n["d_le"](synthetic_le.detach()), False)
            )
        self.scaler.scale(loss_d * self.loss_factor).backward()
        self.scaler.step(self.optimizer_d)
        self.scaler.update()
        return float(loss_g.detach()), float(loss_d.detach())


class _Pix2PixLoop(_GeneratorLoop):
    """Paired training: G_v with a weighted L1 to the real DES and a conditional PatchGAN."""

    GENERATORS = ("le_to_des",)

    def __init__(self, config: GeneratorConfig, seed: int, runtime: Runtime) -> None:
        networks = {"le_to_des": build_config_generator(config)}
        if config.lambda_adversarial > 0:
            networks["d_pair"] = build_discriminator(config.ndf, config.n_layers, in_channels=2)
        super().__init__(config, seed, runtime, networks)

    def _step(
        self, le: torch.Tensor, des: torch.Tensor, weights: torch.Tensor | None
    ) -> tuple[float, float]:
        """Generator step (L1 + adversarial), then the discriminator on a detached fake."""
        n, c = self.networks, self.config
        discriminator = n.get("d_pair")
        if discriminator is not None:
            _set_requires_grad((discriminator,), False)
        self.optimizer_g.zero_grad(set_to_none=True)
        with self.runtime.autocast():
            synthetic_des = n["le_to_des"](le)
            loss_g = c.lambda_l1 * weighted_l1(synthetic_des, des, weights)
            if discriminator is not None:
                fake_pair = torch.cat([le, synthetic_des], dim=1)
                loss_g = loss_g + c.lambda_adversarial * _lsgan(discriminator(fake_pair), True)
        self.scaler.scale(loss_g * self.loss_factor).backward()
        self.scaler.step(self.optimizer_g)
        loss_d = torch.zeros(())
        if discriminator is not None and self.optimizer_d is not None:
            _set_requires_grad((discriminator,), True)
            self.optimizer_d.zero_grad(set_to_none=True)
            with self.runtime.autocast():
                real_pair = torch.cat([le, des], dim=1)
                fake_pair = torch.cat([le, synthetic_des.detach()], dim=1)
                loss_d = 0.5 * (
                    _lsgan(discriminator(real_pair), True) + _lsgan(discriminator(fake_pair), False)
                )
            self.scaler.scale(loss_d * self.loss_factor).backward()
            self.scaler.step(self.optimizer_d)
        self.scaler.update()
        return float(loss_g.detach()), float(loss_d.detach())


def emphasis_weights(des: torch.Tensor, config: GeneratorConfig) -> torch.Tensor:
    """Per-pixel L1 weights ``1 + λ·r`` from real DES ``[B, 1, H, W]`` (no gradient).

    ``r`` is the positive residual of the DES from its local median, normalised by each
    image's largest residual (at least 0.05, so a flat image is not amplified): what
    enhances more than its surroundings (lesion, vessels) weighs up to ``1 + λ``. The
    median is taken on a copy of side :data:`EMPHASIS_GRID` (a window of
    ``emphasis_window`` × the side), then upsampled: cheap at any image size.
    """
    with torch.no_grad():
        des = des.float()
        size = des.shape[-1]
        factor = max(1, size // EMPHASIS_GRID)
        coarse = nn.functional.avg_pool2d(des, factor) if factor > 1 else des
        window = max(3, int(round(config.emphasis_window * coarse.shape[-1])) | 1)
        median = local_median(coarse, window)
        if factor > 1:
            median = nn.functional.interpolate(
                median, size=des.shape[-2:], mode="bilinear", align_corners=False
            )
        residual = (des - median).clamp(min=0.0)
        scale = residual.flatten(1).amax(dim=1).clamp(min=0.05)[:, None, None, None]
        return 1.0 + config.lesion_emphasis * (residual / scale).clamp(max=1.0)


def local_median(images: torch.Tensor, window: int) -> torch.Tensor:
    """Median of every odd ``window`` × ``window`` neighbourhood of ``[B, C, H, W]``
    images, the borders mirrored (torch's "reflect" padding, SciPy's "mirror").

    Exactly the values of ``unfold(...).median(dim=1)`` (a median of an odd count is one
    of the samples), about 9× faster on a generator batch: numpy selects the middle
    sample of each window in place (``partition``), where torch sorts a strided
    ``[B, window², H·W]`` copy. Computed on the CPU; returned on ``images``' device.
    """
    if window % 2 == 0:
        raise ValueError(f"local_median: the window must be odd, not {window}")
    pad = window // 2
    padded = nn.functional.pad(images.detach().float(), (pad, pad, pad, pad), mode="reflect")
    windows = sliding_window_view(padded.cpu().numpy(), (window, window), axis=(-2, -1))
    samples = windows.reshape(*images.shape, window * window)  # a copy, one window per row
    middle = window * window // 2
    samples.partition(middle, axis=-1)
    median = torch.from_numpy(np.ascontiguousarray(samples[..., middle]))
    return median.to(images.device)


def weighted_l1(
    synthetic: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None
) -> torch.Tensor:
    """Mean absolute error, pixel-weighted when ``weights`` is given (weighted mean)."""
    error = (synthetic.float() - target.float()).abs()
    if weights is None:
        return error.mean()
    return (error * weights).sum() / weights.sum()


def _lsgan(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss: MSE of PatchGAN logits against 1 (real) or 0 (fake)."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return nn.functional.mse_loss(logits.float(), target.float())


def _set_requires_grad(networks: tuple[nn.Module, ...], flag: bool) -> None:
    for network in networks:
        for parameter in network.parameters():
            parameter.requires_grad_(flag)


def validation_loss(
    generator: nn.Module, val: PairSet, config: GeneratorConfig, runtime: Runtime | None = None
) -> float:
    """The early-stopping loss: whole-image L1 (the paper) or the emphasis-weighted L1."""
    if len(val) == 0:
        return math.nan
    synthetic = synthesize_des(generator, val.le, runtime)
    if config.selection == "l1":
        return float((synthetic - val.des).abs().mean())
    weights = val.emphasis(replace(config, lesion_emphasis=SELECTION_EMPHASIS))
    return float(weighted_l1(synthetic, val.des, weights))


def generator_runtime(runtime: Runtime) -> Runtime:
    """``runtime`` for the generators: contiguous memory on CPU, channels-last on CUDA.

    On CPU the demo U-Net's training step is no faster channels-last (72 vs 74 ms, batch 8
    at 64², one thread), unlike the classifiers' (``Training.runtime``); the paper's
    CycleGAN (13 s per iteration here) is GPU work. Contiguous memory keeps CPU generator
    training and synthesis the same computation as before, bit for bit: the committed
    demo generators are reproduced exactly.
    """
    if runtime.device.type == "cpu" and runtime.channels_last:
        return replace(runtime, channels_last=False)
    return runtime


@torch.no_grad()
def synthesize_des(
    generator: nn.Module, le: torch.Tensor, runtime: Runtime | None = None, batch_size: int = 16
) -> torch.Tensor:
    """Synthetic DES ``[N, 1, H, W]`` (CPU float32) from LE images with G in eval mode."""
    runtime = generator_runtime(runtime or make_runtime("cpu"))
    outputs: list[torch.Tensor] = []
    with evaluating(generator):
        for start in range(0, le.shape[0], batch_size):
            batch = runtime.prepare_batch(le[start : start + batch_size])
            with runtime.autocast():
                outputs.append(generator(batch).float().cpu())
    return torch.cat(outputs) if outputs else torch.zeros_like(le)


def generation_quality(
    generator: nn.Module,
    test: PairSet,
    runtime: Runtime | None = None,
    lesion_masks: Sequence[np.ndarray | None] | None = None,
) -> list[dict[str, float]]:
    """Per test pair: the paper's MSE / PSNR / SSIM (data_range 1, whole image), the
    MSE / PSNR inside the breast (:func:`breast_mask` of the LE), which the easy background
    does not inflate, and where a lesion mask is given (on the network's grid,
    :mod:`Training.lesion_masks`) the errors inside the lesion and the lesion contrast of
    the real and of the synthetic DES (``lesion_contrast_real`` / ``_synthetic``,
    :func:`Training.metrics.lesion_contrast`, its ring inside that breast)."""
    synthetic = synthesize_des(generator, test.le, runtime)
    masks = list(lesion_masks) if lesion_masks is not None else [None] * len(test)
    if len(masks) != len(test):
        raise ValueError(f"{len(masks)} lesion masks for {len(test)} test pairs")
    quality = []
    for i, lesion in enumerate(masks):
        fake, real = synthetic[i, 0].numpy(), test.des[i, 0].numpy()
        breast = breast_mask(test.le[i, 0].numpy())
        metrics = masked_generation_metrics(fake, real, breast, lesion)
        if lesion is not None:  # nothing more to compute for an image without a mask
            metrics["lesion_contrast_real"] = lesion_contrast(real, lesion, breast)
            metrics["lesion_contrast_synthetic"] = lesion_contrast(fake, lesion, breast)
        quality.append(metrics)
    return quality


#: The preprocessing maps the background to about 0 (the clinical window, or the 0.5th
#: percentile of an image that is mostly background): an Otsu class darker than this on
#: average is background. The phantom's is 0.02–0.03; the darker class of an LE cropped
#: to the breast (fatty tissue) is 0.2 or more.
BACKGROUND_LEVEL = 0.1
#: The percentile stretch clips the darkest 0.5 % to 0 in every image; a dark class must
#: be well over that (and over a padding band) to be background.
CLIPPED_FRACTION = 0.05
#: Edge rows or columns that vary less than this are padding (a constant), not breast.
PADDING_RANGE = 1e-3


def breast_mask(le: np.ndarray) -> np.ndarray:
    """The breast of a preprocessed LE image: above an Otsu threshold, largest component,
    holes filled, when the darker Otsu class is background (:data:`BACKGROUND_LEVEL`).

    An LE cropped to the breast has little or no background, and Otsu then splits fatty
    from dense tissue, which would keep the dense tissue only; such an image's breast is
    every non-zero pixel except the constant bands that padded it to a square
    (:func:`_no_background_mask`). Images with a background keep exactly the Otsu mask;
    where a bright object in the background took Otsu's split, a second Otsu split of the
    darker class finds the background (not the whole image as breast).

    >>> image = np.zeros((32, 32), np.float32); image[4:20, 8:30] = 0.6
    >>> int(breast_mask(image).sum())
    352
    >>> cropped = 0.3 + 0.1 * np.random.default_rng(0).random((32, 32), np.float32)
    >>> cropped[8:24, 8:24] += 0.5
    >>> int(breast_mask(cropped).sum())  # fatty and dense tissue, no background
    1024
    """
    from skimage.filters import threshold_otsu

    values = np.asarray(le, dtype=np.float32)
    if float(values.max()) <= float(values.min()):
        return np.zeros(values.shape, dtype=bool)
    threshold = threshold_otsu(values)
    darker = values[values <= threshold]
    if float(darker.mean()) > BACKGROUND_LEVEL:
        # a bright object in the background (a marker, an unexposed band) larger than the
        # dense tissue can take Otsu's split: then the background is within the darker class
        if float(darker.max()) > float(darker.min()):
            inner = threshold_otsu(darker)
            if _is_background(values, darker[darker <= inner]):
                return _largest_filled_component(values > inner)
        return _no_background_mask(values)
    return _largest_filled_component(values > threshold)


def _is_background(values: np.ndarray, darkest: np.ndarray) -> bool:
    """Whether ``darkest`` (a class of ``values``) is background: dark on average
    (:data:`BACKGROUND_LEVEL`) and more than the darkest :data:`CLIPPED_FRACTION` that the
    stretch clips to 0 in any image."""
    return (
        float(darkest.mean()) <= BACKGROUND_LEVEL and darkest.size > CLIPPED_FRACTION * values.size
    )


def _no_background_mask(values: np.ndarray) -> np.ndarray:
    """The breast of an image without background: every non-zero pixel (the stretch clips
    the darkest 0.5 % to 0; inner ones are holes, filled), less the constant bands that
    preprocessing padded the image to a square with (at the fatty tissue's level)."""
    inside = values > 0.0
    rows, cols = np.ptp(values, axis=1) <= PADDING_RANGE, np.ptp(values, axis=0) <= PADDING_RANGE
    for flat, axis in ((rows, 0), (cols, 1)):
        for run in (flat, flat[::-1]):
            count = int(np.argmin(run)) if not run.all() else run.size
            band = slice(0, count) if run is flat else slice(run.size - count, run.size)
            index = (band, slice(None)) if axis == 0 else (slice(None), band)
            inside[index] = False
    return _largest_filled_component(inside)


def _largest_filled_component(foreground: np.ndarray) -> np.ndarray:
    """The largest connected component of ``foreground``, holes filled (none: all False)."""
    from scipy import ndimage

    labels, count = ndimage.label(foreground)
    if count == 0:
        return np.zeros(foreground.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())[1:]
    return ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))
