"""What stays loaded is chosen by the work, and the numbers do not depend on it.

A pipeline for one case (``keep_models=False``) loads each network on the worker that
uses it and frees it after its pass; a pipeline for many cases keeps them all. Both must
give the same result, bit for bit: the same weights, the same passes on the same
one-thread workers. ``predict`` chooses by the number of cases to compute.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from VirtualBiopsyLib.errors import ModelPackageError
from VirtualBiopsyLib.inference import pipeline as pipeline_module
from VirtualBiopsyLib.inference.fixtures import write_slot_folder, write_untrained_package
from VirtualBiopsyLib.inference.pipeline import Pipeline
from VirtualBiopsyLib.inference.runner import gather_cases, predict_paths
from VirtualBiopsyLib.models.cyclegan import DEMO_GENERATOR
from VirtualBiopsyLib.models.package import load_package
from VirtualBiopsyLib.roles import Source


@pytest.fixture(scope="module", params=["demo", "resnet18"])
def package(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A small package of each classifier family (torchvision's ResNet folds its norms)."""
    folds = 3 if request.param == "demo" else 1
    folder = tmp_path_factory.mktemp(request.param) / "package"
    return load_package(
        write_untrained_package(
            folder,
            architecture=request.param,
            n_folds=folds,
            image_size=64,
            generator=DEMO_GENERATOR,
        )
    )


@pytest.fixture(scope="module")
def exam(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LE CC, LE MLO and DES MLO: the CC DES is synthesized."""
    return write_slot_folder(
        tmp_path_factory.mktemp("exam") / "exam", ["LE_CC", "LE_MLO", "DES_MLO"], seed=3
    )


def _run(package, exam: Path, *, keep_models: bool, precision: str):
    [case] = gather_cases([exam]).cases
    with Pipeline(package, synthesis_precision=precision, keep_models=keep_models) as pipeline:
        result = pipeline.run(case)
        loaded = pipeline.models.loaded
    return result, loaded


def _numbers(result) -> dict:
    record = result.to_dict()
    record.pop("created", None)
    return record


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_one_case_loading_gives_the_kept_models_numbers_bit_for_bit(package, exam, precision):
    kept, kept_loaded = _run(package, exam, keep_models=True, precision=precision)
    single, single_loaded = _run(package, exam, keep_models=False, precision=precision)
    assert kept.inputs["DES_CC"].source is Source.SYNTHETIC
    # tolerance 0: every probability, fold value, weight and setting is identical
    assert json.dumps(_numbers(single), sort_keys=True) == json.dumps(
        _numbers(kept), sort_keys=True
    )
    for slot, picture in kept.saliency.items():
        assert np.array_equal(single.saliency[slot].pixels, picture.pixels), slot
    assert np.array_equal(single.pictures["DES_CC"].pixels, kept.pictures["DES_CC"].pixels)
    n_folds = len(package.folds)
    assert kept_loaded == 4 * n_folds + 1  # every classifier and the CC generator, kept
    assert single_loaded == 0  # nothing held once the case is done


def test_a_worker_pipeline_prepared_ahead_gives_the_same_numbers(package, exam):
    """What the worker does before it says ready (every network loaded, one warm-up pass
    of each kind on a blank image) leaves no trace in a case's numbers; one-case
    pipelines load nothing ahead and still warm up."""
    expected, _ = _run(package, exam, keep_models=True, precision="float32")
    [case] = gather_cases([exam]).cases
    with Pipeline(package, synthesis_precision="float32") as pipeline:
        assert pipeline.load_networks() == 4 * len(package.folds) + len(package.generators)
        pipeline.warm_up()
        loaded = pipeline.models.loaded
        prepared = pipeline.run(case)
        assert pipeline.models.loaded == loaded  # the case built nothing more
    assert json.dumps(_numbers(prepared), sort_keys=True) == json.dumps(
        _numbers(expected), sort_keys=True
    )
    for slot, picture in expected.saliency.items():
        assert np.array_equal(prepared.saliency[slot].pixels, picture.pixels), slot
    with Pipeline(package, keep_models=False) as single:
        assert single.load_networks() == 0
        single.warm_up()
        assert single.models.loaded == 0


def test_one_case_pipeline_reads_its_weights_for_each_case(package, exam, tmp_path):
    """Nothing is cached behind the caller's back: a removed file is missed at once."""
    copy = load_package(shutil.copytree(package.directory, tmp_path / "package"))
    [case] = gather_cases([exam]).cases
    with Pipeline(copy, saliency=False, keep_models=False) as pipeline:
        pipeline.run(case)
        victim = copy.directory / copy.folds[0].classifiers["LE_MLO"].file
        victim.unlink()
        with pytest.raises(ModelPackageError, match=rf"fold 0 LE_MLO classifier.*{victim.name}"):
            pipeline.run(case)


def test_predict_keeps_networks_only_when_more_than_one_case_is_queued(
    package, exam, tmp_path, monkeypatch
):
    chosen: list[bool] = []

    class Recording(Pipeline):
        def __init__(self, *args, **kwargs) -> None:
            chosen.append(kwargs["keep_models"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(pipeline_module, "Pipeline", Recording)
    second = write_slot_folder(
        tmp_path / "second", ["LE_CC", "DES_CC"], patient_id="PHANTOM-0002", seed=4
    )
    predict_paths([exam], tmp_path / "one", package=package, saliency=False)
    predict_paths([exam, second], tmp_path / "two", package=package, saliency=False)
    predict_paths([exam], tmp_path / "forced", package=package, saliency=False, keep_models=True)
    assert chosen == [False, True, True]
