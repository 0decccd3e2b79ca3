"""A whole run at toy size (16² images, stand-in reader): pre-training, resume, outputs."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from toy_training import SIZE, toy_config, toy_loader, write_cohort

from Training import classifier_training
from Training.evaluation import read_predictions
from Training.run import train_run
from VirtualBiopsyLib.errors import OutputExistsError
from VirtualBiopsyLib.models.safetensors_io import read_state_dict

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_pretrained_generators_are_fine_tuned_per_fold(tmp_path: Path) -> None:
    manifest = write_cohort(tmp_path / "cohort", 15, "P")
    pretrain = write_cohort(tmp_path / "cdd", 6, "C")
    run = train_run(
        manifest,
        tmp_path / "run",
        toy_config(),
        pretrain_manifest=pretrain,
        progress=False,
        loader=toy_loader,
    )
    record = json.loads((run / "run.json").read_text())
    assert record["pretrain_manifest_sha256"] and record["synthetic_data"] is True
    for view in ("CC", "MLO"):
        assert (
            run / "pretrain" / view / f"pretrained_generator_LE_to_DES_{view}.safetensors"
        ).exists()
        assert (run / "fold_0" / "generators" / view / "result.json").exists()
    assert json.loads((run / "config.json").read_text())["image_size"] == SIZE


def test_an_interrupted_run_resumes_from_its_checkpoint_and_finished_jobs_keep_none(
    tmp_path: Path, monkeypatch
) -> None:
    """A finished model's checkpoint (GBs for 30 ResNet jobs) goes once its weights and
    records are written; an interrupted one keeps its checkpoint and --resume continues it
    from there to the straight run's result."""
    manifest = write_cohort(tmp_path / "cohort", 15, "P")
    straight = train_run(
        manifest, tmp_path / "straight", toy_config(), progress=False, loader=toy_loader
    )
    assert not list(straight.rglob("checkpoint*"))
    killed = "fold 3 DES_MLO"  # job 25: killed after one of its two epochs
    first_epoch: list[int] = []
    run_epochs = classifier_training.run_epochs

    def interrupting(loop, train, val, **options):
        if options["description"] != killed:
            return run_epochs(loop, train, val, **options)
        first_epoch.append(loop.epoch)
        if len(first_epoch) == 1:
            run_epochs(loop, train, val, **{**options, "stop_after_epochs": 1})
            raise KeyboardInterrupt
        return run_epochs(loop, train, val, **options)

    monkeypatch.setattr(classifier_training, "run_epochs", interrupting)
    interrupted = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        train_run(manifest, interrupted, toy_config(), progress=False, loader=toy_loader)
    checkpoints = sorted(p.parent.relative_to(interrupted) for p in interrupted.rglob("checkpoint"))
    assert checkpoints == [Path("fold_3/classifiers/DES_MLO")]
    # a finished job whose process was killed right after its last file keeps a checkpoint
    # until the next --resume (which never trains it again)
    leftover = interrupted / "fold_0" / "classifiers" / "LE_CC" / "checkpoint"
    shutil.copytree(interrupted / checkpoints[0] / "checkpoint", leftover)
    with pytest.raises(OutputExistsError):
        train_run(manifest, interrupted, toy_config(), progress=False, loader=toy_loader)
    train_run(manifest, interrupted, toy_config(), resume=True, progress=False, loader=toy_loader)
    assert first_epoch == [0, 1]  # resumed from the checkpoint, not from the start
    assert not list(interrupted.rglob("checkpoint*"))
    for relative in (
        "fold_3/classifiers/DES_MLO/classifier_DES_MLO.safetensors",
        "fold_4/classifiers/LE_CC/classifier_LE_CC.safetensors",
        "fold_4/generators/MLO/generator_LE_to_DES_MLO.safetensors",
        "fold_0/classifiers/LE_CC/classifier_LE_CC.safetensors",
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

    manifest = write_cohort(tmp_path / "cohort", 20, "P")
    base = toy_config()
    config = replace(
        base,
        classifier=replace(
            base.classifier,
            pooling="max",
            synthetic_des_training=True,
            des_max_epochs=1,
            other_view_training="LE",
        ),
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
            other_view_pairs=True,
        ),
        splits=SplitConfig(protocol="every-patient"),
    )
    run = train_run(manifest, tmp_path / "run", config, progress=False, loader=toy_loader)
    folds = load_splits(run / "splits.json")
    assert sorted(p for f in folds for p in f.test) == sorted({p for f in folds for p in f.test})
    assert len({p for f in folds for p in f.test}) == 20  # every patient tested once
    assert (run / "fold_0" / "generators" / "CC" / "result.json").exists()
    assert not (run / "fold_1" / "generators").exists()
    rows = read_predictions(run / "predictions.csv")
    synthetic = [p for p in rows if p.source == "synthetic"]
    # Ĉ test rows come from a fold's own generator only; every fold scores its validation
    # patients' synthetic DES (fold 0's generator) to fit its synthetic-DES calibration
    assert {p.fold for p in synthetic if p.split == "test"} == {0}
    assert {p.fold for p in synthetic if p.split == "val"} == set(range(5))
    result = json.loads((run / "fold_0" / "generators" / "CC" / "result.json").read_text())
    assert "weighted" in result["val_loss_definition"]
    assert "breast_psnr" in result["test_generation"]
    _check_generator_pairs(run, manifest, folds[0])
    for slot, epochs in (("LE_CC", 2), ("LE_MLO", 2), ("DES_CC", 1), ("DES_MLO", 1)):
        classifier = run / "fold_3" / "classifiers" / slot / "result.json"
        assert json.loads(classifier.read_text())["epochs_run"] == epochs  # des_max_epochs
    package = load_package(export_package(run, tmp_path / "package"))
    assert package.pooling == "max" and package.generators["CC"].architecture == "unet"
    _check_synthetic_calibration(run, package)
    _check_synthetic_training(run, manifest, folds)


def _check_synthetic_training(run: Path, manifest: Path, folds) -> None:
    """Every fold's DES classifiers also trained on fold 0's G_v(LE) of each training
    case with an LE of that view; LE classifiers on no synthetic image, but on the other
    view's LE images of their training patients too (``other_view_training="LE"``)."""
    from Training.datasets import group_cases, read_manifest

    cases = group_cases(read_manifest(manifest).rows, phase="early")
    for fold in folds:
        train = [case for case in cases if fold.split_of(case.patient) == "train"]
        for slot in ("LE_CC", "LE_MLO", "DES_CC", "DES_MLO"):
            images = json.loads(
                (run / f"fold_{fold.fold}" / "classifiers" / slot / "result.json").read_text()
            )["images"]
            assert images["train"] == sum(slot in case.slots for case in train)
            view = slot.split("_")[1]
            expected = sum(f"LE_{view}" in case.slots for case in train) if "DES" in slot else 0
            assert images["synthetic_train"] == expected, (fold.fold, slot)
            assert expected > 0 or "LE" in slot
            other = f"LE_{'MLO' if view == 'CC' else 'CC'}"
            other_view = sum(other in case.slots for case in train) if "LE" in slot else 0
            assert images["other_view_train"] == other_view, (fold.fold, slot)
            assert other_view > 0 or "DES" in slot


def _check_generator_pairs(run: Path, manifest: Path, fold) -> None:
    """G_v trained on its view's pairs and the other view's pairs of the same training
    patients (``other_view_pairs``), and validated on its own view's pairs only."""
    from Training.datasets import image_pairs, read_manifest

    rows = read_manifest(manifest).rows
    for view, other in (("CC", "MLO"), ("MLO", "CC")):
        pairs = json.loads((run / "fold_0" / "generators" / view / "result.json").read_text())
        counted = pairs["pairs"]
        own = [p for p in image_pairs(rows, view) if fold.split_of(p.patient) == "train"]
        extra = [p for p in image_pairs(rows, other) if fold.split_of(p.patient) == "train"]
        validation = [p for p in image_pairs(rows, view) if fold.split_of(p.patient) == "val"]
        assert counted["train"] == len(own) and counted["other_view_train"] == len(extra) > 0
        assert counted["val"] == len(validation)


def _check_synthetic_calibration(run: Path, package) -> None:
    """Each fold's shifts are fit on its validation synthetic rows, applied to its
    synthetic rows (and only those), and carried into the package."""
    from VirtualBiopsyLib.calibration import fit_logit_shift, shift_probability

    fitted = 0
    for fold, entry in enumerate(package.folds):
        record = json.loads((run / f"fold_{fold}" / "fold.json").read_text())
        gathered = {
            (p.split, p.case, p.slot, p.source): p.probability
            for p in read_predictions(run / f"fold_{fold}" / "predictions.csv")
        }
        for slot in ("LE_CC", "LE_MLO", "DES_CC", "DES_MLO"):
            raw = read_predictions(run / f"fold_{fold}" / "classifiers" / slot / "predictions.csv")
            val = [p for p in raw if p.split == "val" and p.source == "synthetic"]
            expected = fit_logit_shift([p.probability for p in val], [p.label for p in val])
            assert record["synthetic_logit_shift"].get(slot) == expected
            assert entry.classifiers[slot].synthetic_logit_shift == expected
            fitted += expected is not None
            for p in raw:
                shift = expected if p.source == "synthetic" else None
                assert gathered[p.split, p.case, p.slot, p.source] == pytest.approx(
                    shift_probability(p.probability, shift), abs=1e-12
                )
    assert fitted > 0  # at least one fold's validation split holds both classes


def _refuse_constant(name: str) -> None:
    raise ValueError(f"not strict JSON: {name}")


def test_a_blank_le_among_the_test_pairs_leaves_the_in_breast_means_defined(
    tmp_path: Path,
) -> None:
    """A test pair whose LE shows no breast has no in-breast error; the fold's means are
    taken over the other pairs (they were NaN, written as bare NaN into result.json)."""
    from Training.datasets import patient_key
    from Training.splits import load_splits

    manifest = write_cohort(tmp_path / "cohort", 15, "P")
    run = tmp_path / "run"
    train_run(manifest, run, toy_config(), progress=False, loader=toy_loader, prepare_only=True)
    test_keys = load_splits(run / "splits.json")[0].test
    patients = [f"P{i:02d}" for i in range(15)]
    blank = next(p for p in patients if patient_key(p) in test_keys)

    def loader(path: Path):
        image = toy_loader(path)
        if path.name.startswith(f"{blank}_LE_"):
            image.pixels[:] = 0.0  # a blank LE: no breast to measure in
        return image

    train_run(
        manifest, run, toy_config(), progress=False, loader=loader, job=["fold_0/G_CC"],
        cache_dir=tmp_path / "cache",  # not the prepared cache of the unblanked images
    )  # fmt: skip
    record = json.loads(
        (run / "fold_0" / "generators" / "CC" / "result.json").read_text(),
        parse_constant=_refuse_constant,
    )
    quality = record["test_generation"]
    assert quality["n_pairs"] == len(test_keys) and quality["breast_images"] == len(test_keys) - 1
    assert quality["breast_psnr"] is not None and quality["breast_psnr"] > 0
