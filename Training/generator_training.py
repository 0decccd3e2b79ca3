"""Train the CycleGAN of one view: LE → DES (the paper's G_v) and its DES → LE partner.

Losses (paper §2.5): least-squares adversarial (MSE against 1 / 0 on PatchGAN logits),
cycle consistency L1 ×10, identity L1 ×5. Adam lr 1e-5, β1 0.5, weight decay 1e-5; up to
200 epochs; early stopping patience 50 after 50 warm-up epochs. The validation loss is
the mean absolute difference between ``G(LE)`` and the real DES of the validation pairs
(whole image); the LE → DES generator of the best epoch is kept. Paired LE/DES images
receive the same random affine augmentation. A generator pre-trained on another manifest
(``initial_generator``) is fine-tuned the same way.

>>> import torch
>>> from Training.config import GeneratorConfig
>>> pairs = PairSet(torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32))
>>> config = GeneratorConfig(ngf=4, n_blocks=1, ndf=4, n_layers=2, max_epochs=1, batch_size=2)
>>> train_generator(pairs, pairs, config, work_dir=None, progress=False).epochs_run
1
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from Training.classifier_training import _batches
from Training.config import GeneratorConfig
from Training.epochs import EpochLoop, run_epochs
from Training.metrics import generation_metrics
from Training.runtime import (
    CheckpointStore,
    Runtime,
    copy_state,
    evaluating,
    make_runtime,
    unwrap,
)
from VirtualBiopsyLib.models.cyclegan import (
    ResnetGenerator,
    build_discriminator,
    build_generator,
)

NETWORKS: tuple[str, ...] = ("le_to_des", "des_to_le", "d_des", "d_le")


@dataclass
class PairSet:
    """Registered LE and DES images of one view, ``[N, 1, H, W]`` each, in [0, 1]."""

    le: torch.Tensor
    des: torch.Tensor

    def __len__(self) -> int:
        return int(self.le.shape[0])


@dataclass
class GeneratorResult:
    """The best LE → DES generator and its training record."""

    generator: ResnetGenerator
    best_val_loss: float
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)


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
) -> GeneratorResult:
    """Train one view's CycleGAN; ``work_dir`` (if given) receives an every-epoch checkpoint.

    ``initial_generator`` holds LE → DES weights to fine-tune (pre-training);
    ``max_epochs`` overrides ``config.max_epochs`` (used for the pre-training phase).
    """
    runtime = runtime or make_runtime("cpu")
    torch.manual_seed(seed)
    loop = _CycleGanLoop(config, seed, runtime)
    if initial_generator is not None:
        unwrap(loop.networks["le_to_des"]).load_state_dict(initial_generator)
        loop.best_state = copy_state(loop.networks["le_to_des"])
    store = CheckpointStore(work_dir) if work_dir is not None else None
    if resume and store is not None and store.exists():
        loop.restore(store)
    limit = max_epochs if max_epochs is not None else config.max_epochs
    run_epochs(
        loop,
        train,
        val,
        limit=limit,
        store=store,
        progress=progress,
        description=description,
        postfix="val_l1",
        stop_after_epochs=stop_after_epochs,
    )
    best = build_generator(config.ngf, config.n_blocks)
    best.load_state_dict(loop.best_state)
    return GeneratorResult(
        generator=best.eval(),
        best_val_loss=loop.stopper.best_loss,
        best_epoch=loop.stopper.best_epoch,
        epochs_run=loop.epoch,
        history=loop.history,
    )


class _CycleGanLoop(EpochLoop):
    """Mutable state of one CycleGAN's training: four networks, two optimisers, RNGs."""

    def __init__(self, config: GeneratorConfig, seed: int, runtime: Runtime) -> None:
        super().__init__(
            seed, runtime, config.augment, config.early_stopping_patience, config.warmup_epochs
        )
        self.config = config
        self.networks: dict[str, nn.Module] = {
            "le_to_des": build_generator(config.ngf, config.n_blocks),
            "des_to_le": build_generator(config.ngf, config.n_blocks),
            "d_des": build_discriminator(config.ndf, config.n_layers),
            "d_le": build_discriminator(config.ndf, config.n_layers),
        }
        self.networks = {
            name: runtime.wrap(runtime.prepare_model(network))
            for name, network in self.networks.items()
        }
        adam = {
            "lr": config.learning_rate,
            "betas": (config.beta1, config.beta2),
            "weight_decay": config.weight_decay,
        }
        self.optimizer_g = torch.optim.Adam(
            [*self.networks["le_to_des"].parameters(), *self.networks["des_to_le"].parameters()],
            **adam,
        )
        self.optimizer_d = torch.optim.Adam(
            [*self.networks["d_des"].parameters(), *self.networks["d_le"].parameters()], **adam
        )
        self.best_state = copy_state(self.networks["le_to_des"])

    def run_epoch(self, train: PairSet, val: PairSet) -> dict[str, float]:
        losses = self._train_one_epoch(train)
        val_loss = validation_l1(self.networks["le_to_des"], val, self.runtime)
        if self.stopper.update(val_loss):
            self.best_state = copy_state(self.networks["le_to_des"])
        record = {"epoch": self.epoch, **losses, "val_loss": val_loss}
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
            le, des = self.runtime.prepare_batch(le), self.runtime.prepare_batch(des)
            loss_g, loss_d = self._step(le, des)
            totals["loss_g"] += loss_g * len(indices)
            totals["loss_d"] += loss_d * len(indices)
            count += len(indices)
        return {name: value / max(count, 1) for name, value in totals.items()}

    def _step(self, le: torch.Tensor, des: torch.Tensor) -> tuple[float, float]:
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
                nn.functional.l1_loss(n["le_to_des"](synthetic_le), des)
            )
            identity = nn.functional.l1_loss(n["le_to_des"](des), des) + (
                nn.functional.l1_loss(n["des_to_le"](le), le)
            )
            loss_g = adversarial + c.lambda_cycle * cycle + c.lambda_identity * identity
        self.scaler.scale(loss_g).backward()
        self.scaler.step(self.optimizer_g)
        _set_requires_grad((n["d_des"], n["d_le"]), True)
        self.optimizer_d.zero_grad(set_to_none=True)
        with self.runtime.autocast():
            loss_d = 0.5 * (
                _lsgan(n["d_des"](des), True) + _lsgan(n["d_des"](synthetic_des.detach()), False)
            ) + 0.5 * (
                _lsgan(n["d_le"](le), True) + _lsgan(n["d_le"](synthetic_le.detach()), False)
            )
        self.scaler.scale(loss_d).backward()
        self.scaler.step(self.optimizer_d)
        self.scaler.update()
        return float(loss_g.detach()), float(loss_d.detach())

    def save(self, store: CheckpointStore) -> None:
        weights = {
            f"{name}.{key}": value
            for name, network in self.networks.items()
            for key, value in copy_state(network).items()
        }
        torch_state, state = self.shared_checkpoint()
        torch_state["optimizer_g"] = self.optimizer_g.state_dict()
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
        self.optimizer_d.load_state_dict(torch_state["optimizer_d"])
        self.restore_shared(torch_state, state)


def _lsgan(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss: MSE of PatchGAN logits against 1 (real) or 0 (fake)."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return nn.functional.mse_loss(logits.float(), target.float())


def _set_requires_grad(networks: tuple[nn.Module, ...], flag: bool) -> None:
    for network in networks:
        for parameter in network.parameters():
            parameter.requires_grad_(flag)


def validation_l1(generator: nn.Module, val: PairSet, runtime: Runtime | None = None) -> float:
    """Mean |G(LE) − DES| over the validation pairs (whole image): the early-stopping loss."""
    if len(val) == 0:
        return math.nan
    synthetic = synthesize_des(generator, val.le, runtime)
    return float((synthetic - val.des).abs().mean())


@torch.no_grad()
def synthesize_des(
    generator: nn.Module, le: torch.Tensor, runtime: Runtime | None = None, batch_size: int = 16
) -> torch.Tensor:
    """Synthetic DES ``[N, 1, H, W]`` (CPU float32) from LE images with G in eval mode."""
    runtime = runtime or make_runtime("cpu")
    outputs: list[torch.Tensor] = []
    with evaluating(generator):
        for start in range(0, le.shape[0], batch_size):
            batch = runtime.prepare_batch(le[start : start + batch_size])
            with runtime.autocast():
                outputs.append(generator(batch).float().cpu())
    return torch.cat(outputs) if outputs else torch.zeros_like(le)


def generation_quality(
    generator: nn.Module, test: PairSet, runtime: Runtime | None = None
) -> list[dict[str, float]]:
    """MSE / PSNR / SSIM (data_range 1, whole image) of each test pair."""
    synthetic = synthesize_des(generator, test.le, runtime)
    return [
        generation_metrics(synthetic[i, 0].numpy(), test.des[i, 0].numpy())
        for i in range(len(test))
    ]
