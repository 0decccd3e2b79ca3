"""Generators trained and selected on losses that see the lesion (the method issue's audit:
whole-image L1 and PSNR cannot tell a DES without its lesion from the real one)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from Training.config import ConfigError, GeneratorConfig, RunConfig
from Training.generator_training import (
    PairSet,
    emphasis_weights,
    local_median,
    train_generator,
    validation_loss,
    weighted_l1,
)

PIX2PIX = GeneratorConfig(
    recipe="pix2pix",
    architecture="unet",
    base_width=4,
    levels=3,
    ndf=4,
    n_layers=2,
    max_epochs=2,
    batch_size=4,
    learning_rate=2e-3,
    lesion_emphasis=20.0,
    selection="emphasis_l1",
)


def _des_with_lesion(n: int = 4, size: int = 64) -> torch.Tensor:
    """Flat DES-like images (0.3 with a little noise) with a bright 5×5 lesion each."""
    generator = torch.Generator().manual_seed(0)
    des = 0.3 + 0.01 * torch.randn(n, 1, size, size, generator=generator)
    for index in range(n):
        row, col = 10 + 8 * index, 20 + 5 * index
        des[index, 0, row : row + 5, col : col + 5] += 0.3
    return des.clamp(0, 1)


def test_emphasis_weights_peak_on_the_lesion_and_stay_one_on_flat_background() -> None:
    des = _des_with_lesion()
    weights = emphasis_weights(des, PIX2PIX)
    lesion = weights[0, 0, 11:14, 21:24]
    background = weights[0, 0, 40:60, 40:60]
    assert float(lesion.min()) > 15.0  # 1 + λ·r with r ≈ 1 at the lesion
    assert float(background.mean()) < 1.5


@pytest.mark.parametrize(("shape", "window"), [((8, 1, 64, 64), 11), ((3, 2, 17, 23), 3)])
def test_local_median_equals_the_sorted_median_of_every_mirrored_window(shape, window) -> None:
    """The fast median is the definition's, bit for bit: torch's reflect-padded windows,
    each median taken by sorting (so emphasis weights, and generators, train unchanged)."""
    images = torch.rand(shape, generator=torch.Generator().manual_seed(window))
    images[0, 0, :4, :4] = 0.5  # ties
    pad = window // 2
    padded = torch.nn.functional.pad(images, (pad,) * 4, mode="reflect")
    windows = torch.nn.functional.unfold(padded.flatten(0, 1)[:, None], window)
    expected = windows.sort(dim=1).values[:, window * window // 2].view_as(images)
    assert torch.equal(local_median(images, window), expected)
    assert torch.equal(local_median(images.double(), window), expected)  # float32 inside
    with pytest.raises(ValueError, match="odd"):
        local_median(images, 4)


def test_a_pair_sets_emphasis_is_computed_once_and_equals_the_per_image_weights() -> None:
    """Computed once per λ (in chunks of 64), the weights are those of each image alone."""
    des = torch.cat([_des_with_lesion(4, 32)] * 18)  # 72 images: two chunks
    pairs = PairSet(des.clone(), des)
    weights = pairs.emphasis(PIX2PIX)
    assert weights is pairs.emphasis(PIX2PIX)  # cached
    assert torch.allclose(weights, emphasis_weights(des, PIX2PIX), atol=1e-6)
    assert torch.allclose(weights[5:6], emphasis_weights(des[5:6], PIX2PIX), atol=1e-6)
    other = pairs.emphasis(replace(PIX2PIX, lesion_emphasis=5.0))
    assert float(other.max()) < float(weights.max())  # another λ, another entry


def test_emphasis_l1_ranks_a_des_without_its_lesion_below_a_slightly_noisy_one() -> None:
    """Whole-image L1 prefers the DES with the lesion erased; the emphasis L1 does not."""
    real = _des_with_lesion()
    erased = real.clone()
    for index in range(real.shape[0]):
        row, col = 10 + 8 * index, 20 + 5 * index
        erased[index, 0, row : row + 5, col : col + 5] = 0.3
    noisy = real + 0.01 * torch.randn(real.shape, generator=torch.Generator().manual_seed(1))
    weights = emphasis_weights(real, replace(PIX2PIX, lesion_emphasis=20.0))
    assert float((erased - real).abs().mean()) < float((noisy - real).abs().mean())
    assert float(weighted_l1(erased, real, weights)) > float(weighted_l1(noisy, real, weights))


@pytest.mark.parametrize("recipe", ["pix2pix", "cyclegan"])
def test_each_recipe_trains_a_unet_and_keeps_its_best_selection_loss(recipe: str) -> None:
    le = torch.rand(8, 1, 32, 32)
    pairs = PairSet(le, (0.5 * le + 0.2).clamp(0, 1))
    config = replace(PIX2PIX, recipe=recipe, max_epochs=3)
    result = train_generator(pairs, pairs, config, None, seed=0, progress=False)
    assert result.epochs_run == 3
    assert result.best_val_loss == min(r["val_loss"] for r in result.history)
    assert validation_loss(result.network, pairs, config) == pytest.approx(
        result.best_val_loss, rel=1e-5
    )


def test_pix2pix_without_an_adversary_is_plain_supervised_l1() -> None:
    le = torch.rand(8, 1, 32, 32)
    pairs = PairSet(le, (1.0 - le).clamp(0, 1))
    config = replace(PIX2PIX, lambda_adversarial=0.0, lesion_emphasis=0.0, max_epochs=8)
    untrained = train_generator(
        pairs, pairs, replace(config, learning_rate=0.0, max_epochs=1), None, seed=0, progress=False
    )
    trained = train_generator(pairs, pairs, config, None, seed=0, progress=False)
    assert trained.best_val_loss < untrained.best_val_loss
    assert all(record["loss_d"] == 0.0 for record in trained.history)


def test_pix2pix_resumes_to_the_same_weights(tmp_path) -> None:
    le = torch.rand(8, 1, 32, 32)
    pairs = PairSet(le, (0.5 * le).clamp(0, 1))
    config = replace(PIX2PIX, max_epochs=3)
    straight = train_generator(pairs, pairs, config, tmp_path / "a", seed=2, progress=False)
    train_generator(
        pairs, pairs, config, tmp_path / "b", seed=2, progress=False, stop_after_epochs=1
    )
    resumed = train_generator(
        pairs, pairs, config, tmp_path / "b", seed=2, progress=False, resume=True
    )
    for key, value in straight.network.state_dict().items():
        assert torch.equal(value, resumed.network.state_dict()[key]), key


def test_unknown_recipe_selection_or_architecture_is_a_config_error() -> None:
    base = RunConfig().to_dict()
    for key, value in (("recipe", "diffusion"), ("selection", "psnr"), ("architecture", "vit")):
        data = {**base, "generator": {**base["generator"], key: value}}
        with pytest.raises(ConfigError, match=f"unknown {key}"):
            RunConfig.from_dict(data)


def test_crops_are_drawn_towards_the_lesion_and_training_on_crops_runs() -> None:
    from Training.generator_training import _Pix2PixLoop
    from Training.runtime import make_runtime

    config = replace(PIX2PIX, crop_size=16, lambda_adversarial=0.0)
    loop = _Pix2PixLoop(config, 0, make_runtime("cpu"))
    des = _des_with_lesion(n=4)
    weights = emphasis_weights(des, config)
    hits = 0
    for _ in range(10):
        _, crops, crop_weights = loop._crop(des, des, weights)
        assert crops.shape == (4, 1, 16, 16) and crop_weights.shape == (4, 1, 16, 16)
        hits += int((crops.amax(dim=(1, 2, 3)) > 0.5).sum())  # the lesion is in the crop
    assert hits >= 14  # of 40 crops; uniform draws of 16² in 64² would hit about 4
    le = torch.rand(8, 1, 32, 32)
    result = train_generator(
        PairSet(le, le.clone()), PairSet(le, le.clone()), config, None, progress=False
    )
    assert result.network(torch.rand(1, 1, 32, 32)).shape == (1, 1, 32, 32)


@pytest.mark.parametrize("recipe", ["cyclegan", "pix2pix"])
def test_a_resnet_generator_trains_on_odd_crops(recipe: str) -> None:
    """The paper's generator with either recipe on 13² crops of 32² pairs: not multiples
    of 4, its output was 16², a shape error in the first L1."""
    config = GeneratorConfig(
        recipe=recipe, ngf=4, n_blocks=1, ndf=4, n_layers=2, max_epochs=1, batch_size=4
    )
    pairs = PairSet(torch.rand(4, 1, 32, 32), torch.rand(4, 1, 32, 32))
    result = train_generator(pairs, pairs, replace(config, crop_size=13), None, progress=False)
    assert result.epochs_run == 1
    assert result.network(torch.rand(1, 1, 30, 30)).shape == (1, 1, 30, 30)


def test_crops_too_small_for_the_networks_are_refused_before_training() -> None:
    """A PatchGAN of 2 layers needs 12 pixels; a 3-level U-Net 5: a config error naming
    the option, not a padding error from inside a network."""
    pairs = PairSet(torch.rand(4, 1, 32, 32), torch.rand(4, 1, 32, 32))
    with pytest.raises(ConfigError, match="crop_size 8 is too small .* at least 12 pixels"):
        train_generator(pairs, pairs, replace(PIX2PIX, crop_size=8), None, progress=False)
    with pytest.raises(ConfigError, match="crop_size 4 is too small for a unet generator:"):
        config = replace(PIX2PIX, crop_size=4, lambda_adversarial=0.0)
        train_generator(pairs, pairs, config, None, progress=False)
