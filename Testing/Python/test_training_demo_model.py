"""The committed demo package (``make demo-model``): loadable, small, marked synthetic."""

from __future__ import annotations

import json

import pytest
import torch

import VirtualBiopsyLib
from Training.cli import _work_folder, build_parser, main
from Training.config import RunConfig, demo_config
from VirtualBiopsyLib.models.package import demo_package_path, load_package
from VirtualBiopsyLib.roles import View

MAX_DEMO_BYTES = 8 * 1024 * 1024  # "a few MB": 5.8 MB since the width-16 generators (session 12)


@pytest.fixture(scope="module")
def demo():
    if not (demo_package_path() / "model.json").exists():
        pytest.fail("the demo package is missing: run `make demo-model`")
    return load_package(demo_package_path())


def test_demo_package_is_marked_as_synthetic_demo(demo) -> None:
    manifest = json.loads((demo.directory / "model.json").read_text())
    assert demo.is_demo and manifest["is_demo"] is True
    assert "synthetic" in manifest["intended_use"].lower()
    assert "not for any clinical or research conclusion" in manifest["intended_use"]
    assert manifest["provenance"]["test_metrics"]["synthetic_notice"] == (
        VirtualBiopsyLib.SYNTHETIC_NOTICE
    )
    assert all(path.name.startswith("demo") for path in demo.directory.glob("*.safetensors"))


def test_demo_package_is_small_and_complete(demo) -> None:
    total = sum(path.stat().st_size for path in demo.directory.iterdir())
    assert total < MAX_DEMO_BYTES
    assert len(demo.folds) == 5
    assert all(len(fold.classifiers) == 4 for fold in demo.folds)
    assert {View(view).value for view in demo.generators} == {"CC", "MLO"}


def test_demo_package_was_trained_with_the_current_demo_recipe(demo) -> None:
    """A recipe change (e.g. the generators' width) must come with a retrained package."""
    manifest = json.loads((demo.directory / "model.json").read_text())
    assert RunConfig.from_dict(manifest["provenance"]["training_config"]) == demo_config()


def test_demo_models_run_at_the_package_image_size(demo) -> None:
    size = demo.image_size
    image = torch.rand(1, 1, size, size)
    with torch.no_grad():
        probability = demo.load_classifier(0, "DES_CC", "cpu").probability(image)
        synthetic_des = demo.load_generator("CC", "cpu")(image)
    assert 0.0 <= float(probability[0]) <= 1.0
    assert synthetic_des.shape == image.shape


def test_command_line_lists_the_four_sub_commands(capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    for command in ("train", "package", "experiments", "demo-model"):
        assert command in text


def test_demo_model_refuses_to_replace_a_folder_that_is_not_a_demo(tmp_path, capsys) -> None:
    (tmp_path / "notes.txt").write_text("user data")
    assert main(["demo-model", "--out", str(tmp_path)]) == 5
    assert (tmp_path / "notes.txt").read_text() == "user data"


def test_demo_model_keeps_its_run_only_in_a_new_folder(tmp_path, capsys) -> None:
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("user data")
    out = tmp_path / "package"
    assert main(["demo-model", "--out", str(out), "--keep-run", str(kept)]) == 5
    assert "--keep-run needs a new folder" in capsys.readouterr().err
    assert (kept / "notes.txt").read_text() == "user data" and not out.exists()


def test_the_demo_work_folder_is_kept_when_named_and_removed_otherwise(tmp_path) -> None:
    with _work_folder(tmp_path / "run") as work:
        (work / "history.json").write_text("{}")
    assert (tmp_path / "run" / "history.json").exists()
    with _work_folder(None) as work:
        (work / "history.json").write_text("{}")
    assert not work.exists()
