"""A report built from a real (tiny) training run opens and its figures render.

One tiny run (20 phantom patients, 64² images, demo networks, 4 classifier epochs and one
generator epoch: about 20 s on one CPU thread) is trained here; the report is built with
its manifest so that the saved generators draw generation examples and recompute every
test pair's MSE / PSNR / SSIM, which must agree with what training recorded. Its numbers
are noise from synthetic data and are not checked for size.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import VirtualBiopsyLib
from Training.config import tiny_config
from Training.report.build import write_report
from Training.report.data import ReportInputError, load_run
from Training.report.examples import generation_material
from Training.run import train_run
from VirtualBiopsyLib.phantom import generate_cohort

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("report_run")
    manifest = generate_cohort(root / "cohort", patients=20, seed=7)
    config = tiny_config(seed=0)
    config = replace(
        config,
        classifier=replace(config.classifier, max_epochs=4, warmup_epochs=4),
        generator=replace(
            config.generator, max_epochs=1, warmup_epochs=1, early_stopping_patience=1
        ),
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_dir = train_run(manifest, root / "run", config, progress=False)
    finally:
        torch.set_num_threads(threads)
    return manifest, run_dir


@pytest.fixture(scope="module")
def report(tiny_run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    manifest, run_dir = tiny_run
    out = tmp_path_factory.mktemp("tiny_report") / "report"
    return write_report(
        [run_dir],
        out,
        n_resamples=300,
        manifest=manifest,
        generation_intervals=True,
        progress=False,
    )


def test_report_of_the_tiny_run_opens_and_every_figure_renders(report: Path, tiny_run) -> None:
    pngs = sorted(report.glob("*.png"))
    assert {p.name for p in pngs} >= {
        "roc_run.png",
        "reliability_run.png",
        "robustness.png",
        "density.png",
        "generation_examples_run.png",
    }
    for png in pngs:
        with Image.open(png) as image:
            image.verify()
        with Image.open(png) as image:
            assert np.asarray(image.convert("L")).std() > 5, png.name
    html = (report / "report.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert len(re.findall(r'<img src="data:image/png;base64,', html)) == len(pngs)
    markdown = (report / "report.md").read_text(encoding="utf-8")
    record = json.loads((tiny_run[1] / "run.json").read_text())
    assert record["manifest_sha256"] in markdown
    assert VirtualBiopsyLib.SYNTHETIC_NOTICE in markdown
    lines = [
        line
        for line in (report / "generation.csv").read_text().splitlines()
        if not line.startswith("#")
    ]
    rows = list(csv.DictReader(lines))
    assert {row["view"] for row in rows} == {"CC", "MLO"}
    for row in rows:  # patient-bootstrap interval around the pooled mean of the test pairs
        low, mean, high = (float(row[k]) for k in ("mse_ci_low", "mse", "mse_ci_high"))
        assert low <= mean <= high and int(row["pairs"]) > 0


def test_recomputed_generation_metrics_equal_those_recorded_by_training(tiny_run) -> None:
    manifest, run_dir = tiny_run
    run = load_run(run_dir)
    material = generation_material(run, manifest, all_pairs=True, progress=False)
    assert material.pairs and not material.skipped
    tests = {int(item["fold"]): set(item["test"]) for item in run.splits}
    for pair in material.pairs:
        assert pair["patient"] in tests[pair["fold"]]  # test patients of that fold only
    for result in run_dir.glob("fold_*/generators/*/result.json"):
        recorded = json.loads(result.read_text())
        rows = [
            p
            for p in material.pairs
            if p["fold"] == recorded["fold"] and p["view"] == recorded["view"]
        ]
        quality = recorded["test_generation"]
        assert len(rows) == quality["n_pairs"]
        if rows:
            for metric in ("mse", "psnr", "ssim", "breast_mse", "breast_psnr"):
                assert np.mean([r[metric] for r in rows]) == pytest.approx(
                    quality[metric], rel=1e-4, abs=1e-6
                )
    labels = {e.label for e in material.examples}
    assert labels == {0, 1} and len(material.examples) == 4


def test_a_manifest_of_another_cohort_is_refused(tiny_run, tmp_path: Path) -> None:
    other = generate_cohort(tmp_path / "other", patients=2, seed=1)
    with pytest.raises(ReportInputError, match="SHA-256 differs"):
        generation_material(load_run(tiny_run[1]), other, progress=False)
    out = write_report(
        [tiny_run[1]], tmp_path / "r", n_resamples=100, manifest=other, progress=False
    )
    assert "not the manifest of run" in (out / "report.md").read_text()
