"""What every training loop shares: the epoch driver and the resumable per-loop state.

The classifier and the CycleGAN loops differ in their networks, optimisers and losses;
their shuffling and augmentation RNGs, early stopping, history, progress bar and the part
of the checkpoint that holds those are the same, and live here once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from Training.augment import RandomAffine2d
from Training.config import AugmentConfig
from Training.runtime import (
    CheckpointStore,
    EarlyStopping,
    Runtime,
    rng_from_json,
    rng_state_to_json,
)


class EpochLoop:
    """Base of a training loop: RNGs, counters, early stopping and their checkpoint.

    Subclasses build their networks and optimisers, set ``best_state``, and implement
    ``run_epoch(train, val) -> record`` (a dict with ``val_loss``), ``save`` and
    ``restore``, using :meth:`shared_checkpoint` / :meth:`restore_shared` for this part.
    """

    def __init__(
        self,
        seed: int,
        runtime: Runtime,
        augment: AugmentConfig,
        patience: int,
        warmup_epochs: int,
    ) -> None:
        self.seed = seed
        self.runtime = runtime
        self.scaler = runtime.grad_scaler()
        self.shuffle = torch.Generator().manual_seed(seed)
        self.augment = RandomAffine2d(augment, np.random.default_rng(seed))
        self.stopper = EarlyStopping(patience, warmup_epochs)
        self.history: list[dict[str, float]] = []
        self.epoch = 0
        self.best_state: dict[str, torch.Tensor] = {}

    def run_epoch(self, train: Any, val: Any) -> dict[str, float]:
        raise NotImplementedError

    def save(self, store: CheckpointStore) -> None:
        raise NotImplementedError

    def shared_checkpoint(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The torch-side and JSON-side state every loop saves beside its own."""
        torch_state = {
            "scaler": self.scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "shuffle_rng": self.shuffle.get_state(),
        }
        state = {
            "epoch": self.epoch,
            "stopper": self.stopper.state_dict(),
            "history": self.history,
            "augment_rng": rng_state_to_json(self.augment.rng),
        }
        return torch_state, state

    def restore_shared(self, torch_state: dict[str, Any], state: dict[str, Any]) -> None:
        """Inverse of :meth:`shared_checkpoint`."""
        self.scaler.load_state_dict(torch_state["scaler"])
        torch.set_rng_state(torch_state["torch_rng"])
        self.shuffle.set_state(torch_state["shuffle_rng"])
        self.epoch = int(state["epoch"])
        self.stopper.load_state_dict(state["stopper"])
        self.history = list(state["history"])
        self.augment.rng = rng_from_json(state["augment_rng"])


@dataclass
class TrainedNetwork:
    """What every training loop returns: the kept network and how training went."""

    network: nn.Module  # the best-validation-loss weights, in eval mode
    best_val_loss: float
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The record as a run's ``result.json`` stores it (no weights)."""
        return {
            "best_val_loss": self.best_val_loss,
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "history": self.history,
        }


def run_epochs(
    loop: EpochLoop,
    train: Any,
    val: Any,
    *,
    limit: int,
    store: CheckpointStore | None,
    progress: bool,
    description: str,
    postfix: str,
    build: Callable[[], nn.Module],
    stop_after_epochs: int | None = None,
) -> TrainedNetwork:
    """Run epochs until ``limit`` or early stopping, checkpointing after each one.

    Returns a fresh network from ``build`` holding the loop's best weights, with the
    record. ``stop_after_epochs`` ends the call after that many epochs of this call, as a
    kill would (used by the resume tests); the checkpoint lets a later call continue.
    """
    bar = tqdm(
        total=limit,
        initial=loop.epoch,
        desc=description,
        leave=False,
        disable=not (progress and loop.runtime.is_main),
    )
    epochs_this_call = 0
    with bar:
        while loop.epoch < limit and not loop.stopper.should_stop:
            if stop_after_epochs is not None and epochs_this_call >= stop_after_epochs:
                break
            record = loop.run_epoch(train, val)
            epochs_this_call += 1
            bar.update(1)
            bar.set_postfix({postfix: f"{record['val_loss']:.4f}"})
            if store is not None and loop.runtime.is_main:
                loop.save(store)
    best = build()
    best.load_state_dict(loop.best_state)
    return TrainedNetwork(
        network=best.eval(),
        best_val_loss=loop.stopper.best_loss,
        best_epoch=loop.stopper.best_epoch,
        epochs_run=loop.epoch,
        history=loop.history,
    )
