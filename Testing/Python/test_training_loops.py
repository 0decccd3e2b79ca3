"""Training loops: repeatable, resumable, best-validation weights, the paper's stopping rule."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from Training.classifier_training import ImageSet, _ClassifierLoop, train_classifier
from Training.config import ClassifierConfig, GeneratorConfig
from Training.generator_training import (
    PairSet,
    generator_runtime,
    train_generator,
    validation_loss,
)
from Training.runtime import CheckpointStore, EarlyStopping, Runtime, make_runtime
from VirtualBiopsyLib.models.safetensors_io import read_state_dict

CLASSIFIER = ClassifierConfig(
    architecture="demo", max_epochs=4, batch_size=4, warmup_epochs=1, early_stopping_patience=10
)
GENERATOR = GeneratorConfig(
    ngf=4,
    n_blocks=1,
    ndf=4,
    n_layers=2,
    max_epochs=3,
    batch_size=2,
    learning_rate=1e-3,
    warmup_epochs=1,
    early_stopping_patience=10,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _images(n: int = 12, size: int = 32, seed: int = 1) -> ImageSet:
    generator = torch.Generator().manual_seed(seed)
    return ImageSet(
        torch.rand(n, 1, size, size, generator=generator), torch.tensor([0, 1] * (n // 2))
    )


def _pairs(n: int = 4, size: int = 16, seed: int = 2) -> PairSet:
    generator = torch.Generator().manual_seed(seed)
    le = torch.rand(n, 1, size, size, generator=generator)
    return PairSet(le, (le * 0.5).clamp(0, 1))


def _same_weights(first: dict, second: dict) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_classifier_run_is_repeatable_with_fixed_seeds() -> None:
    data = _images()
    first = train_classifier(data, data, CLASSIFIER, None, seed=3, progress=False)
    second = train_classifier(data, data, CLASSIFIER, None, seed=3, progress=False)
    assert _same_weights(first.network.state_dict(), second.network.state_dict())
    assert first.history == second.history


def test_killed_and_resumed_classifier_run_ends_with_identical_weights(tmp_path: Path) -> None:
    data = _images()
    straight = train_classifier(
        data, data, CLASSIFIER, tmp_path / "straight", seed=3, progress=False
    )
    train_classifier(
        data, data, CLASSIFIER, tmp_path / "killed", seed=3, progress=False, stop_after_epochs=2
    )
    state = CheckpointStore(tmp_path / "killed").load()[3]
    assert state["epoch"] == 2
    resumed = train_classifier(
        data, data, CLASSIFIER, tmp_path / "killed", seed=3, progress=False, resume=True
    )
    assert resumed.history == straight.history
    assert _same_weights(resumed.network.state_dict(), straight.network.state_dict())
    last_straight = read_state_dict(tmp_path / "straight" / "checkpoint" / "weights.safetensors")
    last_resumed = read_state_dict(tmp_path / "killed" / "checkpoint" / "weights.safetensors")
    assert _same_weights(last_straight, last_resumed)


def test_checkpoint_holds_safetensors_and_a_weights_only_optimizer_file(tmp_path: Path) -> None:
    data = _images(n=4)
    train_classifier(data, data, replace(CLASSIFIER, max_epochs=1), tmp_path, progress=False)
    folder = tmp_path / "checkpoint"
    assert sorted(p.name for p in folder.iterdir()) == [
        "best.safetensors",
        "optimizer.pt",
        "state.json",
        "weights.safetensors",
    ]
    torch_state = torch.load(folder / "optimizer.pt", weights_only=True)
    assert {"optimizer", "scheduler", "torch_rng", "shuffle_rng"} <= set(torch_state)
    assert not (tmp_path / "checkpoint.tmp").exists()


def test_the_kept_weights_are_those_of_the_best_validation_loss() -> None:
    train, val = _images(seed=1), _images(n=6, seed=9)
    config = replace(CLASSIFIER, max_epochs=6, learning_rate=3e-2)
    result = train_classifier(train, val, config, None, seed=0, progress=False)
    losses = [record["val_loss"] for record in result.history]
    assert result.best_val_loss == min(losses)
    assert result.best_epoch == losses.index(min(losses))
    loop = _ClassifierLoop(result.network, config, 0, make_runtime("cpu"))
    assert loop.validation_loss(val) == pytest.approx(result.best_val_loss, rel=1e-5)


def test_early_stopping_waits_for_the_warm_up_then_the_patience() -> None:
    stopper = EarlyStopping(patience=3, warmup_epochs=5)
    stops = []
    for loss in [1.0, 0.9, 1.0, 1.0, 1.0, 1.0, 1.0]:
        stopper.update(loss)
        stops.append(stopper.should_stop)
    # 3 epochs without improvement after epoch 2, but not before 5 epochs have run
    assert stops == [False, False, False, False, True, True, True]


def test_classifier_stops_early_and_reduces_the_learning_rate() -> None:
    data = _images(n=8)
    config = replace(
        CLASSIFIER,
        max_epochs=40,
        warmup_epochs=2,
        early_stopping_patience=3,
        lr_patience=1,
        learning_rate=1.0,
    )  # diverges: no improvement after a while
    result = train_classifier(data, data, config, None, seed=0, progress=False)
    assert result.epochs_run < 40
    assert result.epochs_run - 1 - result.best_epoch == 3
    assert result.history[-1]["lr"] < 1.0


def test_killed_and_resumed_generator_run_ends_with_identical_weights(tmp_path: Path) -> None:
    train, val = _pairs(), _pairs(n=2, seed=5)
    straight = train_generator(train, val, GENERATOR, tmp_path / "a", seed=1, progress=False)
    train_generator(
        train, val, GENERATOR, tmp_path / "b", seed=1, progress=False, stop_after_epochs=1
    )
    resumed = train_generator(
        train, val, GENERATOR, tmp_path / "b", seed=1, progress=False, resume=True
    )
    assert resumed.epochs_run == straight.epochs_run == 3
    assert _same_weights(resumed.network.state_dict(), straight.network.state_dict())
    assert _same_weights(
        read_state_dict(tmp_path / "a" / "checkpoint" / "weights.safetensors"),
        read_state_dict(tmp_path / "b" / "checkpoint" / "weights.safetensors"),
    )


def test_generator_learning_rate_decays_linearly_and_resumes_on_schedule(tmp_path) -> None:
    train, val = _pairs(), _pairs(n=2, seed=5)
    config = replace(GENERATOR, max_epochs=5, lr_decay_epochs=3, learning_rate=1e-3)
    straight = train_generator(train, val, config, tmp_path / "a", seed=1, progress=False)
    assert [r["lr"] for r in straight.history] == pytest.approx([1e-3, 1e-3, 7.5e-4, 5e-4, 2.5e-4])
    train_generator(train, val, config, tmp_path / "b", seed=1, progress=False, stop_after_epochs=3)
    resumed = train_generator(
        train, val, config, tmp_path / "b", seed=1, progress=False, resume=True
    )
    assert [r["lr"] for r in resumed.history] == [r["lr"] for r in straight.history]
    assert _same_weights(resumed.network.state_dict(), straight.network.state_dict())
    constant = train_generator(train, val, GENERATOR, None, seed=1, progress=False)
    assert {r["lr"] for r in constant.history} == {GENERATOR.learning_rate}


def test_generator_learns_and_keeps_its_best_validation_l1() -> None:
    train, val = _pairs(n=8), _pairs(n=2, seed=5)
    config = replace(GENERATOR, max_epochs=6, learning_rate=3e-3)
    untrained = train_generator(
        train, val, replace(config, max_epochs=1, learning_rate=0.0), None, seed=1, progress=False
    )
    result = train_generator(train, val, config, None, seed=1, progress=False)
    assert result.best_val_loss == min(r["val_loss"] for r in result.history)
    loss = validation_loss(result.network, val, config)
    assert loss == pytest.approx(result.best_val_loss, rel=1e-5)
    assert result.best_val_loss < untrained.best_val_loss


def test_classifiers_train_channels_last_on_cpu_and_generators_stay_contiguous() -> None:
    """Channels-last halves a demo classifier's CPU step; the generators gain nothing
    from it on CPU and stay contiguous (the committed demo generators, bit for bit)."""
    runtime = make_runtime("cpu")
    conv = runtime.prepare_model(torch.nn.Conv2d(2, 4, 3))
    batch = runtime.prepare_batch(torch.rand(2, 2, 8, 8))
    assert runtime.channels_last
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert batch.is_contiguous(memory_format=torch.channels_last)
    assert not batch.is_contiguous()
    generators = generator_runtime(runtime)
    assert not generators.channels_last and generators.device == runtime.device
    plain = generators.prepare_batch(torch.rand(2, 2, 8, 8))
    assert plain.is_contiguous() and not plain.is_contiguous(memory_format=torch.channels_last)
    cuda = Runtime(torch.device("cuda"), channels_last=True)  # nothing moves: policy only
    assert generator_runtime(cuda) is cuda
