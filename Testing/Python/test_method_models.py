"""Networks that can see a small lesion: classifier pooling by name, the U-Net generator,
and packages that remember both."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from VirtualBiopsyLib.errors import ModelPackageError
from VirtualBiopsyLib.inference.saliency import cam_from, grad_cam
from VirtualBiopsyLib.models.classifiers import build_classifier
from VirtualBiopsyLib.models.generators import build_named_generator, generator_spec
from VirtualBiopsyLib.models.names import CLASSIFIER_ARCHITECTURES, POOLINGS, pooling_problem
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
    generators = {"CC": build_unet_generator(**DEMO_UNET).eval()}
    package = load_package(_write_demo_package(tmp_path / "pkg", classifiers, generators))
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


def _write_demo_package(
    directory: Path,
    classifiers: dict[str, torch.nn.Module] | None = None,
    generators: dict[str, torch.nn.Module] | None = None,
    pooling: str = "avg",
) -> Path:
    """A one-fold demo-network package (new networks unless given), 64² images."""
    if classifiers is None:
        classifiers = {slot: build_classifier("demo", pooling=pooling).eval() for slot in SLOTS}
    fold = FoldModels(classifiers, {slot: 0.5 for slot in SLOTS}, {"LE": 0.3, "DES": 0.6})
    if generators is None:
        generators = {"CC": build_unet_generator(**DEMO_UNET).eval()}
    return write_package(
        directory,
        name="test",
        version="1",
        architecture="demo",
        folds=[fold],
        generators=generators,
        preprocessing={"size": 64},
    )


def _edit_manifest(directory: Path, edit: Callable[[dict], None]) -> None:
    manifest = json.loads((directory / "model.json").read_text())
    edit(manifest)
    (directory / "model.json").write_text(json.dumps(manifest))


def test_a_package_naming_a_pooling_its_architecture_cannot_use_is_refused_on_load(
    tmp_path: Path,
) -> None:
    """Refused by load_package with the manifest named, not by the first classifier built
    during a prediction (a plain ValueError from the builder)."""
    directory = _write_demo_package(tmp_path / "pkg", pooling="attention")

    def vgg16_with_attention(manifest: dict) -> None:
        manifest["architecture"] = "vgg16"

    _edit_manifest(directory, vgg16_with_attention)
    with pytest.raises(ModelPackageError, match=r"model\.json.*'attention' with vgg16"):
        load_package(directory)


def test_a_package_naming_a_unet_too_wide_to_build_is_refused_on_load(tmp_path: Path) -> None:
    directory = _write_demo_package(tmp_path / "pkg")

    def too_wide(manifest: dict) -> None:
        manifest["generators"]["CC"].update(base_width=256, levels=6)  # 8192 at the bottom

    _edit_manifest(directory, too_wide)
    with pytest.raises(ModelPackageError, match=r"model\.json.*invalid U-Net size"):
        load_package(directory)


def test_a_package_at_an_image_size_its_classifiers_cannot_take_is_refused_on_load(
    tmp_path: Path,
) -> None:
    """The demo network halves its input four times: at 8² its forward fails."""
    directory = _write_demo_package(tmp_path / "pkg")

    def eight_pixels(manifest: dict) -> None:
        manifest["image_size"] = manifest["preprocessing"]["size"] = 8

    _edit_manifest(directory, eight_pixels)
    with pytest.raises(ModelPackageError, match=r"model\.json.*image_size 8 is too small for demo"):
        load_package(directory)


@pytest.mark.parametrize("side", [15, 30, 33, 64])
def test_the_resnet_generator_returns_the_size_of_any_input(side: int) -> None:
    """Two stride-2 steps need multiples of 4; an odd crop or a package image size of 30
    gave a 16² or 32² synthetic DES (a training crash, a refused saliency map)."""
    generator = build_named_generator("resnet", {"ngf": 4, "n_blocks": 1}).eval()
    le = torch.rand(1, 1, side, side + 2)
    with torch.no_grad():
        synthetic = generator(le)
        assert synthetic.shape == le.shape
        if side % 4 == 0 and (side + 2) % 4 == 0:  # never padded: the network as it was
            assert torch.equal(synthetic, generator.model(le))


def test_a_package_at_an_image_size_that_is_not_a_multiple_of_four_synthesizes_des(
    tmp_path: Path,
) -> None:
    from VirtualBiopsyLib.inference.fixtures import write_slot_folder, write_untrained_package
    from VirtualBiopsyLib.inference.pipeline import Pipeline
    from VirtualBiopsyLib.inference.runner import gather_cases

    package = load_package(write_untrained_package(tmp_path / "pkg", n_folds=1, image_size=30))
    folder = write_slot_folder(tmp_path / "exam", ["LE_CC", "LE_MLO", "DES_MLO"])
    [case] = gather_cases([folder]).cases
    with Pipeline(package, synthesis_precision="float32") as pipeline:
        result = pipeline.run(case)
    assert result.inputs["DES_CC"].source.value == "synthetic"
    assert result.saliency["DES_CC"].pixels.shape == result.pictures["DES_CC"].pixels.shape


@pytest.mark.parametrize(
    ("architecture", "pooling"),
    [
        (architecture, pooling)
        for architecture in CLASSIFIER_ARCHITECTURES
        for pooling in POOLINGS
        if pooling_problem(architecture, pooling) is None
    ],
)
def test_every_allowed_pooling_gives_grad_cam_of_the_whole_network(
    architecture: str, pooling: str
) -> None:
    """Grad-CAM differentiates only the head (pooling included): its map must equal the
    one from autograd through the whole network, for every pooling of every architecture."""
    model = build_classifier(architecture, pooling=pooling).eval()
    images = torch.rand(1, 1, 32, 32)
    activations: list[torch.Tensor] = []
    hook = model.cam_layer.register_forward_hook(lambda *args: activations.append(args[2]))
    logits = model(images)
    hook.remove()
    (gradients,) = torch.autograd.grad(logits[:, 1].sum(), activations[0])
    expected = cam_from(activations[0].detach(), gradients, images.shape[-2:])
    probabilities, maps = grad_cam(model, images)
    assert torch.allclose(maps, expected, atol=1e-6)
    assert torch.allclose(probabilities, torch.softmax(logits.detach(), 1)[:, 1], atol=1e-6)
