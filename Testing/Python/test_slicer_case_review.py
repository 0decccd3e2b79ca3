"""Case review over a 3-case phantom study, under slicer-core (phantom: synthetic data,
its numbers say nothing about clinical performance)."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
import slicer
from slicer_dicom_loading import FileIndex, load_exam_like_slicer
from slicer_scene import fresh_scene
from test_slicer_bridge import write_result_folder

from VirtualBiopsyLib import RESEARCH_USE_NOTICE
from VirtualBiopsyLib.errors import CaseError
from VirtualBiopsyLib.slicer import bridge
from VirtualBiopsyLib.slicer.case_review import COLUMNS, CaseReview
from VirtualBiopsyLib.slicer.logic import RunOptions


@pytest.fixture
def scene():
    with fresh_scene(slice_views=True) as scene:
        yield scene


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    from VirtualBiopsyLib.phantom import generate_cohort

    # two phantom patients, one imaged on both sides: three cases (breasts) in all
    manifest = generate_cohort(tmp_path_factory.mktemp("study") / "cohort", 2, seed=5)
    return manifest.parent


def test_cases_found_in_a_folder(scene, study):
    review = CaseReview(scene)
    cases = review.find_in_folder(study)
    assert len(cases) == 3
    assert len({case.key for case in cases}) == 3
    for case in cases:
        assert sorted(case.files) == ["DES_CC", "DES_MLO", "LE_CC", "LE_MLO"]
        assert case.key.startswith("case-") and "PHANTOM" not in case.key  # pseudonymous
    rows = bridge.table_rows(review.table())
    assert [row["Case"] for row in rows] == [case.key for case in cases]
    assert {row["Status"] for row in rows} == {"not run"}


def test_cases_found_in_the_loaded_studies(scene, study):
    files = sorted(study.rglob("*.dcm"))
    nodes = load_exam_like_slicer(scene, files)
    assert all(n.GetImageData().GetDimensions()[2] >= 2 for n in nodes)  # series of images
    review = CaseReview(scene, dicom_database=FileIndex(files))
    in_scene = {case.key for case in review.find_in_scene()}
    assert in_scene == {case.key for case in CaseReview(scene).find_in_folder(study)}
    with pytest.raises(CaseError, match="DICOM database"):
        CaseReview(slicer.vtkMRMLScene(), dicom_database=FileIndex(files)).find_in_scene()


class PartlyFailingPredict:
    """Writes results for all but the last case and names that case in an error line."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys
        self.args: list[str] = []
        self.pending: list[str] = []

    def start(self, args: Sequence[str], env_updates: Mapping[str, str] | None = None) -> None:
        self.args = list(args)
        out = Path(args[args.index("--out") + 1])
        results = [str(write_result_folder(out / key)) for key in self.keys[:-1]]
        self.pending = [
            f"WARNING case {self.keys[-1]} not classified: LE_CC: image is empty",
            json.dumps({"step": "done", "fraction": 1.0, "message": "", "results": results}),
        ]

    def read_lines(self) -> list[str]:
        lines, self.pending = self.pending, []
        return lines

    def returncode(self) -> int | None:
        return None if self.pending else 3

    def cancel(self) -> None:
        pass


def test_a_failed_case_says_why_and_the_others_are_kept(scene, study, tmp_path):
    keys = [case.key for case in CaseReview(scene).find_in_folder(study)]
    process = PartlyFailingPredict(keys)
    review = CaseReview(scene, runner_factory=lambda: process, work_root=tmp_path)
    review.find_in_folder(study)
    job = review.start(RunOptions(worker=False))  # one predict process over every case
    assert len([a for a in process.args if a.endswith(".dcm")]) == 12  # all cases, one process
    job.wait(timeout=10)
    cases = review.finish()
    assert [case.status for case in cases[:2]] == ["done", "done"]
    assert cases[2].status.startswith("not classified:") and "image is empty" in cases[2].status
    assert cases[0].fused == pytest.approx(0.71) and cases[0].spread == pytest.approx(0.04)


def test_a_review_that_ended_as_cancel_was_pressed_keeps_its_results(scene, study, tmp_path):
    """The process wrote its results and ended; Cancel comes before the next poll."""
    keys = [case.key for case in CaseReview(scene).find_in_folder(study)]
    review = CaseReview(
        scene, runner_factory=lambda: PartlyFailingPredict(keys), work_root=tmp_path
    )
    review.find_in_folder(study)
    review.start(RunOptions(worker=False))
    review.cancel()
    assert [case.status for case in review.cases[:2]] == ["done", "done"]
    assert review.cases[0].fused == pytest.approx(0.71)


@pytest.mark.slow
def test_review_runs_every_case_in_one_process_and_shows_one(scene, study, tmp_path):
    """The real predict command (bundled demo model) over the 3-case study."""
    from VirtualBiopsyLib.slicer.process import SubprocessRunner

    started = []

    def runner_factory():
        started.append(1)
        return SubprocessRunner()

    review = CaseReview(scene, runner_factory=runner_factory, work_root=tmp_path / "work")
    review.find_in_folder(study)
    review.start(RunOptions(python=sys.executable)).wait(timeout=300)
    cases = review.finish()

    assert started == [1]
    assert [case.status for case in cases] == ["done"] * 3
    for row in bridge.table_rows(review.table()):
        assert row["Label"] in ("malignant", "benign")
        assert 0.0 <= row["Fused probability"] <= 1.0
        assert row["Fold spread (SD)"] >= 0.0
    assert all(case.result["model"]["is_demo"] for case in cases)

    images, loaded, shown = review.show(cases[1].key)
    assert sorted(images) == ["DES_CC", "DES_MLO", "LE_CC", "LE_MLO"]
    assert shown == {"Red": "LE_CC", "Slice4": "LE_MLO", "Green": "DES_CC", "Yellow": "DES_MLO"}
    red = bridge.slice_composite_nodes(scene)["Red"]
    assert red.GetBackgroundVolumeID() == images["LE_CC"].GetID()
    assert red.GetForegroundVolumeID() == loaded.saliency["LE_CC"].GetID()
    assert loaded.table.GetAttribute("VirtualBiopsy.IsDemoModel") == "true"

    exported = review.export_csv(tmp_path / "review.csv")
    lines = exported.read_text().splitlines()
    assert lines[-1] == f"# {RESEARCH_USE_NOTICE}"
    rows = list(csv.DictReader(lines[:-1]))
    assert tuple(rows[0]) == COLUMNS and len(rows) == 3
    assert float(rows[1]["Fused probability"]) == pytest.approx(cases[1].fused, abs=1e-4)
    with pytest.raises(CaseError, match="exists"):
        review.export_csv(exported)
    work_dir = review.work_dir
    review.clear_results()
    assert not work_dir.exists()


def test_review_sends_each_case_to_the_sessions_worker(scene, study, tmp_path):
    """Real worker, tiny untrained package: one request per case, all answered by the
    logic's worker process (the Runs' too); a case whose files went away fails alone."""
    import shutil

    from VirtualBiopsyLib.inference.fixtures import write_untrained_package
    from VirtualBiopsyLib.slicer.logic import VirtualBiopsyLogic
    from VirtualBiopsyLib.slicer.process import JobState

    package = write_untrained_package(tmp_path / "package", n_folds=2, image_size=64)
    copied = shutil.copytree(study, tmp_path / "study")
    logic = VirtualBiopsyLogic(scene, work_root=tmp_path / "work")
    review = CaseReview(scene, workers=logic.workers, work_root=tmp_path / "work")
    cases = review.find_in_folder(copied)
    for path in cases[2].files.values():
        path.unlink()
    options = RunOptions(model_dir=package, python=sys.executable)
    try:
        review.start(options).wait(timeout=180)
        assert review.step() is JobState.DONE
        review.finish()
        worker = logic.workers.worker
        assert [case.status for case in cases[:2]] == ["done", "done"]
        assert cases[2].status.startswith("not classified: no such file or folder")
        assert worker.starts == 1 and worker.info["requests"] == 3
        built = worker.info["networks_built"]
        rows = bridge.table_rows(review.table())
        assert [row["Status"] for row in rows][:2] == ["done", "done"]
        assert all(0.0 <= row["Fused probability"] <= 1.0 for row in rows[:2])

        review.start(options).wait(timeout=180)  # again: the same process, nothing rebuilt
        review.finish()
        assert worker.starts == 1 and worker.info["requests"] == 6
        assert worker.info["networks_built"] == built
        assert cases[0].status == "done"
    finally:
        logic.close()
    assert not worker.running
