"""Imported manifests train unchanged: the paper's protocol on the two imports (tiny, slow).

A phantom cohort in the DICOM layout is imported with a per-breast clinical sheet (one
breast marked normal), a phantom in the CDD-CESM layout is imported as the pre-training
set, and ``train`` runs on them with the tiny CI configuration shrunk further (2 folds,
2 classifier epochs, 1 generator epoch). Phantom numbers are not evidence of clinical
performance; the test checks that the run completes on imported data and uses it right.
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import pytest

from Training.config import GeneratorConfig, SplitConfig, tiny_config
from Training.datasets import group_cases
from Training.importers.cdd_cesm import import_cdd_cesm
from Training.importers.clinical_sheet import ClinicalMapping
from Training.importers.dicom_exams import import_dicom_exams
from Training.importers.summary import write_import
from Training.importers.values import LABEL_VALUES, ValueMapping
from Training.run import train_run
from VirtualBiopsyLib.phantom import generate_cohort
from VirtualBiopsyLib.training_manifest import BiopsyLabel, read_training_manifest

pytestmark = pytest.mark.slow


def _config():
    config = tiny_config(seed=3)
    return replace(
        config,
        image_size=32,
        splits=SplitConfig(n_folds=2),
        classifier=replace(config.classifier, max_epochs=2, warmup_epochs=2),
        generator=GeneratorConfig(
            ngf=4, n_blocks=1, ndf=4, n_layers=2, max_epochs=1, batch_size=4,
            learning_rate=1e-3, pretrain_epochs=1,
        ),
    )  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_train_runs_on_the_dicom_import_with_the_cdd_cesm_import_as_pretraining(tmp_path):
    phantom = read_training_manifest(generate_cohort(tmp_path / "exams", patients=8, seed=11))
    breasts = {(r.patient_id, r.laterality): r for r in phantom.rows}
    normal = sorted(breasts)[0]
    with open(tmp_path / "clinical.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["PatientID", "Laterality", "Biopsy", "Density"])
        for key, row in breasts.items():
            label = "N" if key == normal else row.label.text[0].upper()
            writer.writerow([*key, label, row.acr_density])
    labels = ValueMapping.parse("N=normal,B=benign,M=malignant", LABEL_VALUES, "label")
    exams = tmp_path / "imports" / "exams.csv"
    mapping = ClinicalMapping(labels=labels)
    write_import(import_dicom_exams(tmp_path / "exams", tmp_path / "clinical.csv", mapping), exams)
    generate_cohort(tmp_path / "cdd", patients=6, seed=12, layout="cdd-cesm")
    cdd = tmp_path / "imports" / "cdd.csv"
    write_import(import_cdd_cesm(tmp_path / "cdd"), cdd)

    rows = read_training_manifest(exams).rows
    assert any(row.label is BiopsyLabel.NORMAL for row in rows)
    cases = group_cases(rows, phase="early")
    assert normal[0] not in {c.patient_id for c in cases if c.laterality == normal[1]}

    run = train_run(exams, tmp_path / "run", _config(), pretrain_manifest=cdd, progress=False)
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "complete" and record["synthetic_data"] is True
    assert record["pretrain_manifest_sha256"]
    for view in ("CC", "MLO"):
        weights = run / "pretrain" / view / f"pretrained_generator_LE_to_DES_{view}.safetensors"
        assert weights.is_file()
    fold = json.loads((run / "fold_0" / "fold.json").read_text())
    assert sum(fold["cases"].values()) == len({(c.patient, c.laterality) for c in cases})
    metrics = json.loads((run / "metrics.json").read_text())
    assert "synthetic_notice" in metrics
    # the lesion masks kept beside the exams reach the generators' test metrics, and the
    # CDD-CESM import's masks (drawn from its segmentation CSV) reach its manifest
    generation = [
        json.loads(path.read_text())["test_generation"]
        for path in run.glob("fold_*/generators/*/result.json")
    ]
    assert any(g["lesion_images"] > 0 and g["lesion_mae"] is not None for g in generation)
    assert all(g["lesion_masks"]["refused"] == 0 for g in generation)
    assert all(row.lesion_mask and row.lesion_mask.is_file() for row in rows)
    assert all(row.lesion_mask for row in read_training_manifest(cdd).rows)
