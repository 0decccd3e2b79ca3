"""Train one modality-view classifier f[m,v] with the paper's recipe.

Cross-entropy (optionally class-weighted: ``ClassifierConfig.class_weighting``), Adam (lr
1e-3, β1 0.9, weight decay 1e-5), ReduceLROnPlateau (×0.1 after 10 epochs without a better
validation loss), early stopping on validation loss (patience 50 after a 50-epoch
warm-up), at most 300 epochs, augmentation on the training images only.
The weights with the best validation loss are kept. Beyond the paper: a global pooling
by name (``pooling``), a floor under the learning rate, and a smoothed validation loss
for the schedule, early stopping and the kept weights (``val_loss_smoothing``); see
:class:`Training.config.ClassifierConfig`. Every epoch ends with a checkpoint,
so ``resume=True`` continues a killed run to the same result (on CPU with fixed seeds).

>>> import torch
>>> from Training.config import ClassifierConfig
>>> data = ImageSet(torch.rand(8, 1, 32, 32), torch.tensor([0, 1] * 4))
>>> result = train_classifier(data, data, ClassifierConfig(architecture="demo", max_epochs=1),
...                           work_dir=None, seed=0, progress=False)
>>> result.epochs_run, len(result.history)
(1, 1)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight
from torch import nn

from Training.config import ClassifierConfig
from Training.epochs import EpochLoop, TrainedNetwork, run_epochs
from Training.runtime import (
    CheckpointStore,
    Runtime,
    copy_state,
    evaluating,
    make_runtime,
    unwrap,
)
from VirtualBiopsyLib.models.classifiers import MalignancyClassifier, build_classifier

logger = logging.getLogger(__name__)
N_CLASSES = 2


@dataclass
class ImageSet:
    """Images ``[N, 1, H, W]`` in [0, 1] with labels ``[N]`` (0 benign, 1 malignant)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def extended(self, more: ImageSet) -> ImageSet:
        """These images followed by ``more``'s: a training set grown with extra examples."""
        return ImageSet(
            torch.cat([self.images, more.images]), torch.cat([self.labels, more.labels])
        )


def train_classifier(
    train: ImageSet,
    val: ImageSet,
    config: ClassifierConfig,
    work_dir: Path | None,
    seed: int = 0,
    runtime: Runtime | None = None,
    resume: bool = False,
    progress: bool = True,
    description: str = "classifier",
    stop_after_epochs: int | None = None,
) -> TrainedNetwork:
    """Train one classifier; ``work_dir`` (if given) receives an every-epoch checkpoint.

    ``stop_after_epochs``: see :func:`Training.epochs.run_epochs` (used by resume tests).
    """
    runtime = runtime or make_runtime("cpu")
    torch.manual_seed(seed)
    model = runtime.prepare_model(
        build_classifier(config.architecture, config.pretrained_weights, config.pooling)
    )
    weights = class_weights(train.labels, config.class_weighting)
    loop = _ClassifierLoop(model, config, seed, runtime, weights)
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
        postfix="val_loss",
        build=lambda: build_config_classifier(config),
        stop_after_epochs=stop_after_epochs,
    )


def build_config_classifier(config: ClassifierConfig) -> MalignancyClassifier:
    """A fresh classifier of the configured architecture and pooling (no ImageNet start)."""
    return build_classifier(config.architecture, pooling=config.pooling)


def class_weights(labels: torch.Tensor, weighting: str = "none") -> torch.Tensor | None:
    """Per-class cross-entropy weights ``[benign, malignant]``, or None for plain CE.

    ``"balanced"`` is inverse class frequency, ``n / (2 · n_class)`` (scikit-learn's
    definition): on a 70 % malignant split the benign class weighs 7/3 as much, so the
    classifier's probabilities centre on the 0.5 threshold instead of the prevalence.
    A split that lacks one class falls back to plain cross-entropy.

    >>> class_weights(torch.tensor([1, 1, 1, 0]), "balanced").tolist()
    [2.0, 0.6666666865348816]
    >>> class_weights(torch.tensor([1, 0]), "none") is None
    True
    """
    if weighting == "none":
        return None
    if weighting != "balanced":
        raise ValueError(f"unknown class weighting {weighting!r}")
    labels_np = labels.detach().cpu().numpy()
    classes = np.arange(N_CLASSES)
    if not np.isin(classes, labels_np).all():
        logger.warning("class weighting skipped: the training split lacks a class")
        return None
    weights = compute_class_weight("balanced", classes=classes, y=labels_np)
    return torch.as_tensor(weights, dtype=torch.float32)


class _ClassifierLoop(EpochLoop):
    """Mutable state of one classifier's training: model, optimiser, RNGs, counters."""

    def __init__(
        self,
        model: nn.Module,
        config: ClassifierConfig,
        seed: int,
        runtime: Runtime,
        weights: torch.Tensor | None = None,
    ) -> None:
        super().__init__(
            seed, runtime, config.augment, config.early_stopping_patience, config.warmup_epochs
        )
        self.config = config
        self.model = model
        self.network = runtime.wrap(model)
        self.optimizer = torch.optim.Adam(
            model.parameters(),
            lr=config.learning_rate,
            betas=(config.beta1, config.beta2),
            weight_decay=config.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer,
            mode="min",
            factor=config.lr_factor,
            patience=config.lr_patience,
            min_lr=config.min_learning_rate,
        )
        self.smoothed_val_loss: float | None = None
        self.class_weights = None if weights is None else weights.to(runtime.device)
        self.loss_function = nn.CrossEntropyLoss(weight=self.class_weights)
        self.best_state = copy_state(model)

    def run_epoch(self, train: ImageSet, val: ImageSet) -> dict[str, float]:
        train_loss = self._train_one_epoch(train)
        val_loss = self.validation_loss(val)
        smoothed = self._smooth(val_loss)
        self.scheduler.step(smoothed)
        if self.stopper.update(smoothed) or not self.config.keep_best:
            self.best_state = copy_state(self.model)
        record = {
            "epoch": self.epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "smoothed_val_loss": smoothed,
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        self.history.append(record)
        self.epoch += 1
        return record

    def _smooth(self, val_loss: float) -> float:
        """Exponential moving average of the validation loss (the raw loss when factor 0)."""
        factor = self.config.val_loss_smoothing
        previous = self.smoothed_val_loss
        if previous is None or factor == 0.0 or math.isnan(previous):
            self.smoothed_val_loss = val_loss
        else:
            self.smoothed_val_loss = factor * previous + (1.0 - factor) * val_loss
        return self.smoothed_val_loss

    def _train_one_epoch(self, train: ImageSet) -> float:
        self.network.train()
        total, count = 0.0, 0
        for indices in _batches(
            len(train), self.config.batch_size, self.shuffle, self.runtime, self.seed, self.epoch
        ):
            # the whole batch is augmented on every rank (same draws), then sharded
            labels = train.labels[indices]
            weights = (
                None
                if self.class_weights is None
                else self.class_weights[labels.to(self.class_weights.device)]
            )
            (images, labels), factor = self.runtime.shard(
                self.augment(train.images[indices]), labels, weights=weights
            )
            images = self.runtime.prepare_batch(images)
            labels = labels.to(self.runtime.device)
            self.optimizer.zero_grad(set_to_none=True)
            with self.runtime.autocast():
                loss = self.loss_function(self.network(images), labels) * factor
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            total += float(loss.detach()) * len(indices)
            count += len(indices)
        return self.runtime.mean_over_ranks(total) / max(count, 1)

    def validation_loss(self, val: ImageSet) -> float:
        """Mean cross-entropy over the validation images (no augmentation).

        With class weights it is the weighted mean, as ``nn.CrossEntropyLoss`` computes it.
        """
        if len(val) == 0:
            return math.nan
        total, weight_sum = 0.0, 0.0
        with evaluating(self.model):
            for start in range(0, len(val), 64):
                images = self.runtime.prepare_batch(val.images[start : start + 64])
                labels = val.labels[start : start + 64].to(self.runtime.device)
                with self.runtime.autocast():
                    logits = self.model(images)
                total += float(
                    nn.functional.cross_entropy(
                        logits.float(), labels, weight=self.class_weights, reduction="sum"
                    )
                )
                weight_sum += (
                    len(labels)
                    if self.class_weights is None
                    else float(self.class_weights[labels].sum())
                )
        return total / weight_sum

    def save(self, store: CheckpointStore) -> None:
        torch_state, state = self.shared_checkpoint()
        torch_state["optimizer"] = self.optimizer.state_dict()
        torch_state["scheduler"] = self.scheduler.state_dict()
        state["smoothed_val_loss"] = self.smoothed_val_loss
        store.save(copy_state(self.model), self.best_state, torch_state, state)

    def restore(self, store: CheckpointStore) -> None:
        weights, best, torch_state, state = store.load()
        unwrap(self.model).load_state_dict(weights)
        self.best_state = best
        self.optimizer.load_state_dict(torch_state["optimizer"])
        self.scheduler.load_state_dict(torch_state["scheduler"])
        self.restore_shared(torch_state, state)
        self.smoothed_val_loss = state.get("smoothed_val_loss")


def _batches(
    n: int, batch_size: int, shuffle: torch.Generator, runtime: Runtime, seed: int, epoch: int
) -> list[torch.Tensor]:
    """Shuffled index batches of the whole set (global batches).

    Under torchrun every rank draws the same batches (the ``shuffle`` generators are
    seeded alike) and trains on its part of each (:meth:`Runtime.shard`).
    """
    order = torch.randperm(n, generator=shuffle)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def predict_probabilities(
    model: nn.Module, images: torch.Tensor, runtime: Runtime | None = None, batch_size: int = 64
) -> np.ndarray:
    """Malignancy probabilities ``[N]`` of images ``[N, 1, H, W]`` (eval mode)."""
    runtime = runtime or make_runtime("cpu")
    model = unwrap(model).to(runtime.device).eval()
    outputs: list[torch.Tensor] = []
    for start in range(0, images.shape[0], batch_size):
        batch = runtime.prepare_batch(images[start : start + batch_size])
        with runtime.autocast():
            outputs.append(model.probability(batch).float().cpu())
    if not outputs:
        return np.zeros(0, dtype=np.float64)
    return torch.cat(outputs).numpy().astype(np.float64)
