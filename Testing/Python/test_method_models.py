"""Networks that can see a small lesion: classifier pooling by name, the U-Net generator,
and packages that remember both."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from VirtualBiopsyLib.models.classifiers import build_classifier
from VirtualBiopsyLib.models.generators import build_named_generator, generator_spec
from VirtualBiopsyLib.models.names import POOLINGS
from VirtualBiopsyLib.models.package import FoldModels, load_package, write_package
from VirtualBiopsyLib.models.unet import DEMO_UNET, build_unet_generator
from VirtualBiopsyLib.roles import SLOTS


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_every_pooling_classifies_and_keeps_the_cam_split(pooling: str) -> None:
    model = build_classifier("demo", pooling=pooling).eval()
    images = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(images), model.head(model.features(images)))
    assert model.pooling == pooling


def test_max_pooling_sees_one_bright_pixel_that_average_pooling_dilutes() -> None:
    """A lesion covering one feature position: max pooling passes it on at full strength."""
    avg = build_classifier("demo", pooling="avg").eval()
    top = build_classifier("demo", pooling="max").eval()
    activations = torch.zeros(1, 64, 8, 8)
    activations[0, :, 3, 4] = 1.0  # one position of 64 lights up
    assert float(avg.backbone.avgpool(activations).max()) == pytest.approx(1 / 64)
    assert float(top.backbone.avgpool(activations).max()) == pytest.approx(1.0)


def test_attention_pooling_is_refused_for_vgg16() -> None:
    with pytest.raises(ValueError, match="attention pooling needs a global pool"):
        build_classifier("vgg16", pooling="attention")


def test_unknown_pooling_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown pooling"):
        build_classifier("demo", pooling="median")


def test_unet_generator_maps_le_to_a_des_in_unit_range() -> None:
    generator = build_unet_generator(**DEMO_UNET).eval()
    with torch.no_grad():
        output = generator(torch.rand(2, 1, 64, 64))
    assert output.shape == (2, 1, 64, 64)
    assert float(output.min()) >= 0.0 and float(output.max()) <= 1.0


def test_generators_by_name_round_trip_their_spec() -> None:
    for architecture, sizes in (("resnet", {"ngf": 4, "n_blocks": 1}), ("unet", DEMO_UNET)):
        network = build_named_generator(architecture, sizes)
        assert generator_spec(network) == (architecture, sizes)
    with pytest.raises(ValueError, match="unknown generator architecture"):
        build_named_generator("transformer", {})
    with pytest.raises(ValueError, match="needs base_width"):
        build_named_generator("unet", {"levels": 3})


def test_a_package_rebuilds_its_pooling_and_unet_generators(tmp_path: Path) -> None:
    classifiers = {slot: build_classifier("demo", pooling="max").eval() for slot in SLOTS}
    fold = FoldModels(classifiers, {slot: 0.5 for slot in SLOTS}, {"LE": 0.3, "DES": 0.6})
    generators = {"CC": build_unet_generator(**DEMO_UNET).eval()}
    directory = write_package(
        tmp_path / "pkg",
        name="test",
        version="1",
        architecture="demo",
        folds=[fold],
        generators=generators,
        preprocessing={"size": 64},
        is_demo=True,
    )
    package = load_package(directory)
    assert package.pooling == "max"
    assert package.generators["CC"].architecture == "unet"
    images = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        expected = generators["CC"](images)
        assert torch.allclose(package.load_generator("CC")(images), expected, atol=1e-6)
        loaded = package.load_classifier(0, "DES_CC")
        assert torch.allclose(loaded(images), classifiers["DES_CC"](images), atol=1e-4)


def test_classifiers_with_different_poolings_cannot_share_a_package(tmp_path: Path) -> None:
    classifiers = {slot: build_classifier("demo") for slot in SLOTS}
    classifiers["DES_CC"] = build_classifier("demo", pooling="max")
    fold = FoldModels(classifiers, {slot: 0.5 for slot in SLOTS}, {"LE": 0.3, "DES": 0.6})
    with pytest.raises(ValueError, match="share a pooling"):
        write_package(tmp_path / "pkg", name="t", version="1", architecture="demo", folds=[fold])
