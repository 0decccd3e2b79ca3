"""A run whose classifiers start from the user's ImageNet weights (``pretrained_weights``):
the file is checked before anything trains, and a config file's relative path is read
from the file's folder and saved absolute, so jobs started elsewhere find it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from toy_training import toy_config, toy_loader, write_cohort

from Training.cli import main
from Training.run import train_run
from VirtualBiopsyLib.errors import ModelPackageError


def test_missing_weights_are_refused_before_the_generators_train(tmp_path: Path) -> None:
    config = toy_config()
    missing = tmp_path / "imagenet" / "resnet18.safetensors"
    config = replace(
        config,
        classifier=replace(
            config.classifier, architecture="resnet18", pretrained_weights=str(missing)
        ),
    )
    manifest = write_cohort(tmp_path / "cohort", 15, "P")
    with pytest.raises(ModelPackageError, match="resnet18.safetensors"):
        train_run(manifest, tmp_path / "run", config, progress=False, loader=toy_loader)
    assert not (tmp_path / "run" / "config.json").exists()  # nothing written, nothing trained


def test_a_config_files_relative_weights_are_read_from_its_folder(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    folder = tmp_path / "recipes"
    folder.mkdir()
    config = toy_config().to_dict()
    config["classifier"].update(architecture="resnet18", pretrained_weights="w/r18.safetensors")
    (folder / "config.json").write_text(json.dumps(config))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    manifest = write_cohort(tmp_path / "cohort", 15, "P")
    code = main(
        ["train", str(manifest), "--out", str(tmp_path / "run"), "--config",
         str(folder / "config.json"), "--no-progress"]
    )  # fmt: skip
    assert code != 0
    assert str(folder / "w" / "r18.safetensors") in capsys.readouterr().err
