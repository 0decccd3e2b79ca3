"""``virtual-biopsy demo``: synthetic cohort → two exams (one with synthesized DES) → reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from VirtualBiopsyLib import RESEARCH_USE_NOTICE, SYNTHETIC_NOTICE
from VirtualBiopsyLib.cli import main
from VirtualBiopsyLib.commands.demo import MARKER
from VirtualBiopsyLib.errors import EXIT_OK, EXIT_OUTPUT_EXISTS
from VirtualBiopsyLib.inference import runner
from VirtualBiopsyLib.inference.fixtures import write_untrained_package
from VirtualBiopsyLib.models.package import demo_package_path, load_package


@pytest.fixture()
def tiny_demo_model(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> Path:
    """Stand in for the trained demo package: same role (is_demo), untrained weights."""
    package = write_untrained_package(
        tmp_path_factory.mktemp("demo") / "DemoModel", n_folds=2, image_size=64, is_demo=True
    )
    monkeypatch.setattr(runner, "demo_package_path", lambda: package)
    return package


def test_demo_shows_real_and_synthetic_des_and_says_it_is_synthetic(
    tiny_demo_model, tmp_path, capsys
):
    out = tmp_path / "demo-output"
    assert main(["demo", "--out", str(out)]) == EXIT_OK
    printed = capsys.readouterr().out
    assert SYNTHETIC_NOTICE in printed and RESEARCH_USE_NOTICE in printed
    assert "DEMO MODEL" in printed
    results = [json.loads(p.read_text()) for p in sorted(out.glob("results/*/result.json"))]
    assert len(results) == 2
    sources = [{slot: v["source"] for slot, v in r["inputs"].items()} for r in results]
    assert any(s["DES_CC"] == "real" and s["DES_MLO"] == "real" for s in sources)
    assert any(s["DES_CC"] == "synthetic" and s["DES_MLO"] == "synthetic" for s in sources)
    assert all(r["model"]["is_demo"] for r in results)
    for result_json in out.glob("results/*/result.json"):
        assert (result_json.parent / "report.png").is_file()
        assert str(result_json.parent / "report.png") in printed
    assert "PHANTOM-" not in printed  # case keys only, even for phantom patients


def test_demo_refuses_to_overwrite_unless_asked(tiny_demo_model, tmp_path, capsys):
    out = tmp_path / "demo-output"
    out.mkdir()
    (out / MARKER).write_text("an earlier demo")
    (out / "stale.txt").write_text("from the earlier demo")
    assert main(["demo", "--out", str(out)]) == EXIT_OUTPUT_EXISTS
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "stale.txt").exists()
    assert main(["demo", "--out", str(out), "--overwrite"]) == EXIT_OK
    assert (out / MARKER).is_file() and not (out / "stale.txt").exists()
    assert len(list(out.glob("results/*/result.json"))) == 2


def test_demo_never_deletes_a_folder_that_is_not_a_demo(tiny_demo_model, tmp_path, capsys):
    out = tmp_path / "my-data"
    out.mkdir()
    (out / "precious.dcm").write_bytes(b"user data")
    assert main(["demo", "--out", str(out), "--overwrite"]) == EXIT_OUTPUT_EXISTS
    assert (out / "precious.dcm").read_bytes() == b"user data"
    assert "refusing" in capsys.readouterr().err


def test_demo_runs_end_to_end_with_the_bundled_demo_model(tmp_path, capsys):
    """``make demo`` on the committed package: it must exist, verify and say it is a demo."""
    package = load_package(demo_package_path())  # raises if missing or tampered
    assert package.is_demo
    assert main(["demo", "--out", str(tmp_path / "demo")]) == EXIT_OK
    printed = capsys.readouterr().out
    assert "DEMO MODEL" in printed and "SYNTHETIC" in printed
    results = sorted((tmp_path / "demo").glob("results/*/result.json"))
    assert len(results) == 2
    sources = [json.loads(r.read_text())["inputs"]["DES_CC"]["source"] for r in results]
    assert sorted(sources) == ["real", "synthetic"]


def test_bundled_demo_model_labels_both_demo_cases_right_with_saliency_on_the_lesion(tmp_path):
    """``make demo`` on the committed package: the phantom's own labels, and the DES
    saliency of the real-DES case concentrated on the lesion the phantom drew there.
    (Synthetic data: this checks the method works on the phantom, nothing clinical.)"""
    import nrrd
    import numpy as np
    from scipy import ndimage

    from VirtualBiopsyLib.commands.demo import (
        DEMO_PATIENTS,
        DEMO_SEED,
        choose_exams,
        lesion_aggressiveness,
    )
    from VirtualBiopsyLib.phantom.plan import plan_cohort, render_patient

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == EXIT_OK
    with_des, le_only = choose_exams(
        out / "cohort" / "manifest.csv", lesion_aggressiveness(DEMO_PATIENTS, DEMO_SEED)
    )
    results = {}
    for path in out.glob("results/*/result.json"):
        record = json.loads(path.read_text())
        results[record["inputs"]["DES_CC"]["source"]] = (record, path.parent)
    for source, exam in (("real", with_des), ("synthetic", le_only)):
        record, _ = results[source]
        assert record["label"] == exam["label"], (source, record["probabilities"]["fused"])
    breasts = {
        (f"PHANTOM-{plan.number:04d}", breast.laterality.value): breast
        for plan in plan_cohort(DEMO_PATIENTS, DEMO_SEED)
        for breast in render_patient(plan, DEMO_SEED, "small")
    }
    breast = breasts[(with_des["patient_id"], with_des["laterality"])]
    _, folder = results["real"]
    for view in ("CC", "MLO"):
        saliency, _ = nrrd.read(str(folder / f"saliency_DES_{view}.nrrd"), index_order="C")
        saliency = np.squeeze(saliency).astype(np.float32)
        lesion = ndimage.binary_dilation(breast.lesion_masks[view], iterations=10)
        inside, tissue = saliency[lesion].mean(), saliency[breast.breast_masks[view]].mean()
        assert inside > 2.0 * tissue, (view, inside, tissue)
