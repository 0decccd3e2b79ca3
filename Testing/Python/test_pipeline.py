"""The virtual biopsy of one case (Algorithm 1): synthesis, classification, fusion, outputs."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813 (the conventional alias)
import torch

from VirtualBiopsyLib import RESEARCH_USE_NOTICE
from VirtualBiopsyLib.errors import CaseError, ModelPackageError, OutputExistsError
from VirtualBiopsyLib.fusion import fuse_case
from VirtualBiopsyLib.images.cases import Case
from VirtualBiopsyLib.inference.fixtures import write_slot_folder, write_untrained_package
from VirtualBiopsyLib.inference.output import SYNTHETIC_KEY, read_picture, write_case
from VirtualBiopsyLib.inference.pipeline import Pipeline
from VirtualBiopsyLib.inference.result import FoldStats
from VirtualBiopsyLib.inference.runner import gather_cases
from VirtualBiopsyLib.models.package import load_package
from VirtualBiopsyLib.roles import SLOTS, Laterality, Source


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("package")
    return load_package(write_untrained_package(root / "tiny", n_folds=3, image_size=64))


@pytest.fixture(scope="module")
def exam_without_des_cc(tmp_path_factory: pytest.TempPathFactory) -> Case:
    folder = write_slot_folder(
        tmp_path_factory.mktemp("exam") / "exam", ["LE_CC", "LE_MLO", "DES_MLO"], laterality="L"
    )
    [case] = gather_cases([folder]).cases
    return case


@pytest.fixture(scope="module")
def pipeline(package):
    with Pipeline(package, synthesis_precision="float32") as pipeline:
        yield pipeline


@pytest.fixture(scope="module")
def result(pipeline, exam_without_des_cc):
    return pipeline.run(exam_without_des_cc)


def test_missing_des_is_synthesized_from_le_of_the_same_view(result):
    assert result.inputs["DES_CC"].source is Source.SYNTHETIC
    assert result.inputs["DES_CC"].generated_from == "LE_CC"
    assert result.inputs["DES_MLO"].source is Source.REAL
    assert result.inputs["LE_CC"].path.endswith("LE_CC.nrrd")
    assert set(result.image_probabilities) == set(SLOTS)
    assert result.missing == []


def test_fused_probability_is_the_fold_mean_of_per_fold_mcc_fusion(package, result):
    expected_folds = []
    for index, fold in enumerate(package.folds):
        per_image = {slot: result.image_probabilities[slot].folds[index] for slot in SLOTS}
        expected_folds.append(fuse_case(per_image, fold.slot_mcc, fold.modality_mcc).probability)
    assert result.fused.folds == pytest.approx(expected_folds, abs=1e-9)
    assert result.fused.mean == pytest.approx(np.mean(expected_folds), abs=1e-6)
    assert result.fused.std == pytest.approx(np.std(expected_folds, ddof=1), abs=1e-6)
    assert result.fused.sem == pytest.approx(result.fused.std / math.sqrt(3), abs=1e-6)
    assert len(result.weights) == 3


def test_label_is_malignant_exactly_at_the_threshold():
    stats = FoldStats.from_folds([0.5, 0.5])
    assert stats.std == 0.0 and stats.sem == 0.0
    assert FoldStats.from_folds([0.7]).std == 0.0  # one fold: no spread to report


def test_synthetic_des_and_saliency_lie_on_the_original_grid(result, exam_without_des_cc):
    le_cc = sitk.ReadImage(str(exam_without_des_cc.slots["LE_CC"].path))
    shape = sitk.GetArrayFromImage(le_cc).shape
    assert result.pictures["DES_CC"].pixels.shape == shape
    assert result.pictures["DES_CC"].spacing == pytest.approx((0.2, 0.2))
    for slot in SLOTS:
        saliency = result.saliency[slot].pixels
        assert saliency.shape == shape
        assert float(saliency.min()) >= 0.0 and float(saliency.max()) <= 1.0 + 1e-6


def test_probabilities_do_not_depend_on_saliency(package, exam_without_des_cc, result):
    plain = Pipeline(package, saliency=False, synthesis_precision="float32").run(
        exam_without_des_cc
    )
    assert plain.saliency == {}
    for slot in SLOTS:
        assert plain.image_probabilities[slot].folds == pytest.approx(
            result.image_probabilities[slot].folds, abs=1e-5
        )


def test_saliency_leaves_no_parameter_gradients(pipeline, result):
    model = pipeline.models.classifier(0, "LE_CC")  # the network that made ``result``
    assert all(p.grad is None for p in model.parameters())


def test_no_synthesis_leaves_des_missing_and_says_so(package, exam_without_des_cc):
    plain = Pipeline(package, synthesis=False, saliency=False).run(exam_without_des_cc)
    assert plain.inputs["DES_CC"].source is Source.MISSING
    assert "DES_CC" not in plain.image_probabilities
    assert plain.missing == ["DES_CC"]
    assert any("synthesis switched off" in warning for warning in plain.warnings)


def test_package_without_generator_classifies_what_is_there(tmp_path, exam_without_des_cc):
    bare = load_package(write_untrained_package(tmp_path / "bare", with_generators=False))
    outcome = Pipeline(bare, saliency=False).run(exam_without_des_cc)
    assert outcome.inputs["DES_CC"].source is Source.MISSING
    assert any("no CC generator" in warning for warning in outcome.warnings)


def test_case_without_any_image_is_a_case_error(package):
    empty = Case("P9", "1.2.3", Laterality.R)
    with pytest.raises(CaseError, match="no LE and no DES"):
        Pipeline(package).run(empty)


def test_models_are_loaded_once_for_many_cases(package, exam_without_des_cc, tmp_path):
    copy = load_package(shutil.copytree(package.directory, tmp_path / "package"))
    with Pipeline(copy, saliency=False, synthesis_precision="float32") as pipeline:
        first = pipeline.run(exam_without_des_cc)
        for weights in copy.directory.glob("*.safetensors"):
            weights.unlink()  # nothing left to load from: the networks must be in memory
        second = pipeline.run(exam_without_des_cc)
    assert second.fused.folds == first.fused.folds
    assert pipeline.models.loaded == 3 * 4 + 1  # 3 folds × 4 slots, one CC generator
    with pytest.raises(ModelPackageError, match="missing"):  # a new pipeline loads anew
        Pipeline(copy, saliency=False).run(exam_without_des_cc)


def test_write_produces_the_documented_files(result, tmp_path):
    folder = write_case(result, tmp_path)
    assert folder == tmp_path / result.key
    data = json.loads((folder / "result.json").read_text())
    assert data["notice"] == RESEARCH_USE_NOTICE
    assert data["format_version"] == 1
    assert data["case"]["key"] == result.key and data["case"]["laterality"] == "L"
    assert data["inputs"]["DES_CC"] == {
        "source": "synthetic",
        "path": None,
        "generated_from": "LE_CC",
    }
    assert data["model"]["sha256"] == result.model.sha256
    assert data["label"] in ("malignant", "benign")
    assert data["probabilities"]["fused"]["sem"] == result.fused.sem
    assert set(data["probabilities"]["modalities"]) == {"LE", "DES"}
    for name in data["outputs"].values():
        assert (folder / name).is_file()
    assert data["outputs"]["synthetic_DES_CC"] == "synthetic_DES_CC.nrrd"
    _, spacing, header = read_picture(folder / "synthetic_DES_CC.nrrd")
    assert header[SYNTHETIC_KEY] == "true" and spacing == pytest.approx((0.2, 0.2))
    assert read_picture(folder / "saliency_LE_CC.nrrd")[2][SYNTHETIC_KEY] == "false"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_write_never_overwrites_without_permission(result, tmp_path):
    folder = write_case(result, tmp_path, report=False)
    (folder / "marker").write_text("old")
    with pytest.raises(OutputExistsError):
        write_case(result, tmp_path, report=False)
    assert (folder / "marker").exists()
    write_case(result, tmp_path, overwrite=True, report=False)
    assert not (folder / "marker").exists()


def test_overwrite_never_replaces_a_folder_that_is_not_a_result(result, tmp_path):
    user_folder = tmp_path / result.key
    user_folder.mkdir()
    (user_folder / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not a VirtualBiopsy result"):
        write_case(result, tmp_path, overwrite=True, report=False)
    assert (user_folder / "notes.txt").read_text() == "mine"


def _pixels_of_colour(png: Path, hex_colour: str) -> int:
    from PIL import Image

    rgb = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)
    target = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb.astype(int) - target).sum(axis=1) <= 6).sum())


def test_report_marks_synthetic_images_and_only_them(
    package, exam_without_des_cc, result, tmp_path
):
    from VirtualBiopsyLib.inference.report import SYNTHETIC_RED, render_report

    with_synthetic = render_report(result, tmp_path / "synthetic.png")
    plain = Pipeline(package, synthesis=False, saliency=False).run(exam_without_des_cc)
    without = render_report(plain, tmp_path / "plain.png")
    assert _pixels_of_colour(with_synthetic, SYNTHETIC_RED) > 2000  # banner, frame, caption
    assert _pixels_of_colour(without, SYNTHETIC_RED) < 50
    assert not list(tmp_path.glob(".*"))  # written through a temporary file


def test_bfloat16_synthesis_stays_close_to_float32_and_is_recorded(
    package, exam_without_des_cc, result
):
    fast = Pipeline(package, saliency=False, synthesis_precision="bfloat16")
    outcome = fast.run(exam_without_des_cc)
    assert outcome.settings["synthesis_precision"] == "bfloat16"
    assert result.settings["synthesis_precision"] == "float32"
    difference = np.abs(outcome.pictures["DES_CC"].data - result.pictures["DES_CC"].data)
    assert float(difference.mean()) < 0.01
    assert abs(outcome.fused.mean - result.fused.mean) < 0.02
    generator = package.load_generator("CC", "cpu", torch.bfloat16)
    assert next(generator.parameters()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="synthesis_precision"):
        Pipeline(package, synthesis_precision="float16")


def test_auto_precision_is_bfloat16_only_where_the_hardware_has_it(package, monkeypatch):
    from VirtualBiopsyLib.inference import pipeline

    for native, expected in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(pipeline, "native_bfloat16", lambda device, native=native: native)
        assert Pipeline(package).synthesis_precision == expected
        assert Pipeline(package, synthesis_precision="float32").synthesis_precision == "float32"
