"""Runs on one manifest with and without lesion masks are runs on the same data.

The masks column changes the manifest's bytes, so its SHA-256, but not a single image or
label a run learns from: ``run.json`` records ``manifest_data_sha256`` (the manifest
without the column), and ``experiments`` and ``report`` compare runs on it, so a run
with masks beside one without is neither flagged as another data set nor refused the
generation examples of its own manifest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
from toy_training import toy_config, toy_loader, write_cohort

from Training.experiments import write_experiments
from Training.export import export_package
from Training.jobs import plan_jobs
from Training.report.data import ReportInputError, ReportRun, data_sha256, manifest_note
from Training.report.examples import generation_material
from Training.run import train_run
from VirtualBiopsyLib.roles import Modality
from VirtualBiopsyLib.training_manifest import (
    BiopsyLabel,
    read_training_manifest,
    write_training_manifest,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _with_masks(plain: Path, name: str = "masked.csv") -> Path:
    """The same rows, each DES naming a mask (which need not exist: refused when read)."""
    rows = read_training_manifest(plain).rows
    masked = [
        replace(row, lesion_mask=row.path.with_name(row.path.stem + "_lesion_mask.png"))
        if row.modality is Modality.DES
        else row
        for row in rows
    ]
    return write_training_manifest(plain.with_name(name), masked)


def test_the_data_sha256_leaves_out_the_mask_column_only(tmp_path: Path) -> None:
    plain = write_cohort(tmp_path, 4, "P")
    masked = read_training_manifest(_with_masks(plain))
    unmasked = read_training_manifest(plain)
    assert masked.sha256 != unmasked.sha256
    assert masked.data_sha256 == unmasked.data_sha256 == unmasked.sha256
    assert unmasked.sha256 == hashlib.sha256(plain.read_bytes()).hexdigest()
    rows = list(masked.rows)
    rows[0] = replace(rows[0], label=BiopsyLabel.NORMAL)  # other data: another hash
    relabelled = write_training_manifest(tmp_path / "relabelled.csv", rows)
    assert read_training_manifest(relabelled).data_sha256 != unmasked.sha256


def test_runs_with_and_without_masks_are_compared_as_one_data_set(tmp_path: Path) -> None:
    plain = write_cohort(tmp_path / "cohort", 15, "P")
    masked = _with_masks(plain)
    whole = train_run(masked, tmp_path / "masked", toy_config(), progress=False, loader=toy_loader)
    parts = tmp_path / "plain"  # job by job, gathered by package: the jobs record it
    train_run(plain, parts, toy_config(), progress=False, loader=toy_loader, prepare_only=True)
    for job in plan_jobs(toy_config()):
        train_run(plain, parts, toy_config(), progress=False, loader=toy_loader, job=[str(job.id)])
    export_package(parts, tmp_path / "package")
    records = [json.loads((run / "run.json").read_text()) for run in (whole, parts)]
    assert records[0]["manifest_sha256"] != records[1]["manifest_sha256"]
    expected = hashlib.sha256(plain.read_bytes()).hexdigest()
    assert [record["manifest_data_sha256"] for record in records] == [expected, expected]
    assert manifest_note([("a", data_sha256(r)) for r in records]) is None
    tables = write_experiments([whole, parts], tmp_path / "tables")
    texts = [path.read_text() for path in tables if path.suffix in (".csv", ".md")]
    assert texts and not any("different manifests" in text for text in texts)
    # report --manifest: either manifest gives the examples of either run (no splits
    # given here, so it stops right after the check); another data set is still refused
    run = ReportRun("plain", parts, {}, records[1], [], [])
    assert generation_material(run, masked, progress=False).skipped
    other = write_cohort(tmp_path / "other", 4, "Q")
    with pytest.raises(ReportInputError, match="not the manifest of run plain"):
        generation_material(run, other, progress=False)
