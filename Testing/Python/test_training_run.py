"""A whole run at toy size (16² images, stand-in reader): pre-training, resume, outputs."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from Training.config import GeneratorConfig, tiny_config
from Training.evaluation import read_predictions
from Training.run import train_run
from VirtualBiopsyLib.errors import OutputExistsError
from VirtualBiopsyLib.images.mammogram import ImageInfo, MammogramImage
from VirtualBiopsyLib.models.safetensors_io import read_state_dict
from VirtualBiopsyLib.roles import Laterality

HEADER = "patient_id,study_uid,laterality,view,modality,path,label,acr_density,phase,synthetic\n"
SIZE = 16


def _write_cohort(folder: Path, patients: int, prefix: str) -> Path:
    """Files whose bytes say what they show; the stand-in loader draws them."""
    rows = []
    for index in range(patients):
        label = "malignant" if index % 3 else "benign"
        for slot in ("LE_CC", "LE_MLO", "DES_CC", "DES_MLO"):
            modality, view = slot.split("_")
            name = f"{prefix}{index:02d}_{slot}.img"
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(f"{label},{modality},{index},{view}")
            rows.append(
                f"{prefix}{index:02d},1.2.{index},R,{view},{modality},{name},{label},"
                f"{'abcd'[index % 4]},early,true"
            )
    manifest = folder / "manifest.csv"
    manifest.write_text(HEADER + "\n".join(rows) + "\n")
    return manifest


def _loader(path: Path) -> MammogramImage:
    """A noisy square; malignant DES images carry a bright spot."""
    label, modality, _, _ = path.read_text().split(",")
    seed = int(hashlib.sha256(path.read_bytes()).hexdigest()[:8], 16)
    pixels = np.random.default_rng(seed).random((SIZE, SIZE), dtype=np.float32) * 0.3
    if modality == "DES" and label == "malignant":
        pixels[6:10, 6:10] = 1.0
    info = ImageInfo(path=path, format="dicom", laterality=Laterality.R)
    return MammogramImage(info, pixels, windowed=True)


def _config():
    config = tiny_config(seed=1)
    return replace(
        config,
        image_size=SIZE,
        classifier=replace(config.classifier, max_epochs=2, warmup_epochs=2),
        generator=GeneratorConfig(
            ngf=4,
            n_blocks=1,
            ndf=4,
            n_layers=2,
            max_epochs=1,
            batch_size=4,
            learning_rate=1e-3,
            pretrain_epochs=1,
        ),
    )


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_pretrained_generators_are_fine_tuned_per_fold(tmp_path: Path) -> None:
    manifest = _write_cohort(tmp_path / "cohort", 15, "P")
    pretrain = _write_cohort(tmp_path / "cdd", 6, "C")
    run = train_run(
        manifest,
        tmp_path / "run",
        _config(),
        pretrain_manifest=pretrain,
        progress=False,
        loader=_loader,
    )
    record = json.loads((run / "run.json").read_text())
    assert record["pretrain_manifest_sha256"] and record["synthetic_data"] is True
    for view in ("CC", "MLO"):
        assert (
            run / "pretrain" / view / f"pretrained_generator_LE_to_DES_{view}.safetensors"
        ).exists()
        assert (run / "fold_0" / "generators" / view / "result.json").exists()
    assert json.loads((run / "config.json").read_text())["image_size"] == SIZE


def test_an_interrupted_run_resumes_to_the_same_result(tmp_path: Path) -> None:
    manifest = _write_cohort(tmp_path / "cohort", 15, "P")
    straight = train_run(manifest, tmp_path / "straight", _config(), progress=False, loader=_loader)
    interrupted = tmp_path / "interrupted"
    shutil.copytree(straight, interrupted)
    # a run killed while training fold 3's classifiers: later work absent, a checkpoint left
    shutil.rmtree(interrupted / "fold_4")
    (interrupted / "metrics.json").unlink()
    (interrupted / "predictions.csv").unlink()
    (interrupted / "fold_3" / "classifiers" / "DES_MLO" / "result.json").unlink()
    (interrupted / "fold_3" / "predictions.csv").unlink()
    with pytest.raises(OutputExistsError):
        train_run(manifest, interrupted, _config(), progress=False, loader=_loader)
    train_run(manifest, interrupted, _config(), resume=True, progress=False, loader=_loader)
    for relative in (
        "fold_4/classifiers/LE_CC/classifier_LE_CC.safetensors",
        "fold_4/generators/MLO/generator_LE_to_DES_MLO.safetensors",
    ):
        first = read_state_dict(straight / relative)
        second = read_state_dict(interrupted / relative)
        assert all(torch.equal(first[k], second[k]) for k in first)
    assert read_predictions(interrupted / "predictions.csv") == read_predictions(
        straight / "predictions.csv"
    )


def test_the_method_recipe_runs_end_to_end_with_generators_in_fold_zero_only(
    tmp_path: Path,
) -> None:
    """U-Net pix2pix with emphasis on crops, max-pool classifiers, every-patient folds."""
    from Training.config import SplitConfig
    from Training.export import export_package
    from Training.splits import load_splits
    from VirtualBiopsyLib.models.package import load_package

    manifest = _write_cohort(tmp_path / "cohort", 20, "P")
    base = _config()
    config = replace(
        base,
        classifier=replace(base.classifier, pooling="max"),
        generator=replace(
            base.generator,
            recipe="pix2pix",
            architecture="unet",
            base_width=4,
            levels=3,
            lesion_emphasis=20.0,
            selection="emphasis_l1",
            crop_size=8,
            lambda_adversarial=0.0,  # a PatchGAN needs more than 8² pixels
            folds=1,
        ),
        splits=SplitConfig(protocol="every-patient"),
    )
    run = train_run(manifest, tmp_path / "run", config, progress=False, loader=_loader)
    folds = load_splits(run / "splits.json")
    assert sorted(p for f in folds for p in f.test) == sorted({p for f in folds for p in f.test})
    assert len({p for f in folds for p in f.test}) == 20  # every patient tested once
    assert (run / "fold_0" / "generators" / "CC" / "result.json").exists()
    assert not (run / "fold_1" / "generators").exists()
    synthetic_folds = {
        p.fold for p in read_predictions(run / "predictions.csv") if p.source == "synthetic"
    }
    assert synthetic_folds == {0}
    result = json.loads((run / "fold_0" / "generators" / "CC" / "result.json").read_text())
    assert "weighted" in result["val_loss_definition"]
    assert "breast_psnr" in result["test_generation"]
    package = load_package(export_package(run, tmp_path / "package"))
    assert package.pooling == "max" and package.generators["CC"].architecture == "unet"
