"""The module logic end to end over a real slicer-core scene: with a stand-in one-shot
predict process (``RunOptions(worker=False)``), and with the real session worker."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK
import slicer
import slicer.util
from slicer_scene import fresh_scene
from test_slicer_bridge import add_volume, marked_picture, write_result_folder

from VirtualBiopsyLib.errors import CaseError
from VirtualBiopsyLib.roles import Laterality
from VirtualBiopsyLib.slicer import bridge
from VirtualBiopsyLib.slicer.logic import (
    RunOptions,
    VirtualBiopsyLogic,
    library_path_entry,
    model_dir_option,
    model_folder_text,
)
from VirtualBiopsyLib.slicer.process import (
    JobCancelledError,
    JobState,
    ProcessFailedError,
    Progress,
)

ONE_SHOT = {"worker": False}  # the stand-in below is a one-shot predict process


class FakePredictProcess:
    """A :class:`ProcessRunner` that behaves like ``predict --progress json``, in-process.

    It checks the exported folder, writes a result folder like the real command, and
    hands out progress lines one poll at a time.
    """

    def __init__(self, exit_code: int = 0, stderr: str = "") -> None:
        self.exit_code = exit_code
        self.stderr = stderr
        self.args: list[str] = []
        self.env_updates: dict[str, str] = {}
        self.exported: dict[str, np.ndarray] = {}
        self.case_json: dict = {}
        self.pending: list[str] = []
        self.cancelled = False

    def start(self, args: Sequence[str], env_updates: Mapping[str, str] | None = None) -> None:
        self.args = list(args)
        self.env_updates = dict(env_updates or {})
        self.paths = [Path(a) for a in args[4 : args.index("--out")]]
        out = Path(args[args.index("--out") + 1])
        for folder in (p for p in self.paths if p.is_dir()):
            for path in folder.glob("*.nrrd"):
                image = SimpleITK.ReadImage(str(path))
                self.exported[path.stem] = SimpleITK.GetArrayFromImage(image)
            self.case_json = json.loads((folder / "case.json").read_text())
        progress = [("read", 0.1), ("synthesize", 0.4), ("classify", 0.8)]
        self.pending = [json.dumps({"step": s, "fraction": f, "message": s}) for s, f in progress]
        if self.exit_code:
            self.pending.append(self.stderr)
            return
        result_json = write_result_folder(out / "case-ab12-L")
        self.pending.append(
            json.dumps(
                {
                    "step": "done",
                    "fraction": 1.0,
                    "message": "1 case",
                    "results": [str(result_json)],
                }
            )
        )

    def read_lines(self) -> list[str]:
        return [self.pending.pop(0)] if self.pending else []

    def returncode(self) -> int | None:
        return None if self.pending else self.exit_code

    def cancel(self) -> None:
        self.cancelled = True


@pytest.fixture
def scene():
    with fresh_scene(slice_views=True) as scene:
        yield scene


def test_run_exports_runs_and_imports(scene, tmp_path):
    le_cc = add_volume(marked_picture(), "P1_L_DM_CC")
    le_mlo = add_volume(marked_picture() * 2, "P1_L_DM_MLO")
    process = FakePredictProcess()
    seen: list[Progress] = []
    logic = VirtualBiopsyLogic(
        scene, runner_factory=lambda: process, sleep=lambda s: None, work_root=tmp_path
    )

    runs = logic.run(
        options=RunOptions(synthesis=True, device="cpu", **ONE_SHOT), on_progress=seen.append
    )

    assert [p.step for p in seen] == ["read", "synthesize", "classify", "done"]
    assert sorted(process.exported) == ["LE_CC", "LE_MLO"]
    np.testing.assert_array_equal(process.exported["LE_MLO"], marked_picture() * 2)
    assert process.case_json["laterality"] == "L"
    assert process.args[2:4] == ["VirtualBiopsyLib", "predict"]
    assert process.env_updates["PYTHONPATH"].split(os.pathsep)[0] == library_path_entry()
    (run,) = runs
    assert run.nodes.synthetic["DES_CC"].GetName() == "SYNTHETIC DES CC (VirtualBiopsy)"
    assert run.shown == {"Red": "LE_CC", "Slice4": "LE_MLO", "Green": "DES_CC"}
    red = bridge.slice_composite_nodes(scene)["Red"]
    assert red.GetBackgroundVolumeID() == le_cc.GetID()
    assert red.GetForegroundVolumeID() == run.nodes.saliency["LE_CC"].GetID()
    assert le_mlo.GetID() == bridge.slice_composite_nodes(scene)["Slice4"].GetBackgroundVolumeID()
    # the run's folder under the temporary path (patient pixels, result files) is gone;
    # the nodes hold the results
    assert list(tmp_path.iterdir()) == []
    assert slicer.util.arrayFromVolume(run.nodes.synthetic["DES_CC"]).max() > 0.5


def test_failure_carries_the_process_message(scene, tmp_path):
    add_volume(marked_picture(), "L LE CC")
    process = FakePredictProcess(exit_code=3, stderr="ERROR LE_CC.nrrd: image is empty")
    logic = VirtualBiopsyLogic(
        scene, runner_factory=lambda: process, sleep=lambda s: None, work_root=tmp_path
    )
    with pytest.raises(ProcessFailedError, match="LE_CC.nrrd: image is empty"):
        logic.run(options=RunOptions(**ONE_SHOT))
    assert list(tmp_path.iterdir()) == []


def test_unknown_laterality_is_a_case_error(scene, tmp_path):
    add_volume(marked_picture(), "LE_CC")
    logic = VirtualBiopsyLogic(scene, runner_factory=FakePredictProcess, work_root=tmp_path)
    with pytest.raises(CaseError, match="laterality unknown"):
        logic.run()
    runs = logic.run(options=RunOptions(laterality=Laterality.R, **ONE_SHOT), timeout=30)
    assert runs[0].nodes.table is not None


def test_panel_style_start_poll_finish_and_cancel(scene, tmp_path):
    """What the panel does: start, poll from a timer, import; or cancel half-way."""
    add_volume(marked_picture(), "P1_R_DM_CC")
    process = FakePredictProcess()
    logic = VirtualBiopsyLogic(scene, runner_factory=lambda: process, work_root=tmp_path)
    volumes = logic.assign_slots().slots
    handle = logic.start(volumes, RunOptions(saliency=False, **ONE_SHOT))
    assert "--no-saliency" in process.args
    polls = 1
    while handle.job.step() is JobState.RUNNING:
        polls += 1
    assert polls == 4  # one progress line per poll: the GUI stays responsive
    assert logic.finish(handle)[0].nodes.table.GetAttribute("VirtualBiopsy.Label") == "malignant"

    second = FakePredictProcess()
    logic.runner_factory = lambda: second
    handle = logic.start(volumes, RunOptions(**ONE_SHOT))
    handle.job.step()
    logic.cancel(handle)
    assert second.cancelled and handle.job.state is JobState.CANCELLED
    assert not handle.work_dir.exists()
    with pytest.raises(JobCancelledError):
        logic.finish(handle)


@pytest.mark.slow
def test_real_predict_command_end_to_end(scene, tmp_path):
    """The real predict command in a child process on volumes exported from the scene."""
    from VirtualBiopsyLib.inference.fixtures import write_slot_folder, write_untrained_package

    package = write_untrained_package(tmp_path / "DemoModel", n_folds=2, is_demo=True)
    phantom = write_slot_folder(tmp_path / "phantom", ["LE_CC", "LE_MLO", "DES_CC"], laterality="R")
    inputs = {}
    for slot, name in (
        ("LE_CC", "P5_R_DM_CC"),
        ("LE_MLO", "P5_R_DM_MLO"),
        ("DES_CC", "P5_R_CM_CC"),
    ):
        picture, spacing = bridge.read_picture_nrrd(phantom / f"{slot}.nrrd")
        inputs[slot] = bridge.add_picture_volume(scene, picture, spacing, name, None)
        inputs[slot].RemoveAttribute("VirtualBiopsy.Result")  # a user's volume, not ours
    logic = VirtualBiopsyLogic(scene, work_root=tmp_path / "work")
    seen: list[Progress] = []

    runs = logic.run(
        options=RunOptions(model_dir=package, python=sys.executable),
        on_progress=seen.append,
        timeout=120,
    )

    assert seen[-1].step == "done" and len(seen) > 0
    (run,) = runs
    result = run.nodes.result
    assert result["inputs"]["DES_MLO"]["source"] == "synthetic"
    assert result["case"]["laterality"] == "R"
    rows = {(r["Level"], r["Input"]): r for r in bridge.table_rows(run.nodes.table)}
    assert rows[("fused", "case")]["Probability"] == pytest.approx(
        result["probabilities"]["fused"]["mean"]
    )
    synthetic = run.nodes.synthetic["DES_MLO"]
    assert synthetic.GetName() == "SYNTHETIC DES MLO (VirtualBiopsy)"
    assert (
        synthetic.GetImageData().GetDimensions()[:2]
        == inputs["LE_MLO"].GetImageData().GetDimensions()[:2]
    )
    assert run.shown["Yellow"] == "DES_MLO"
    assert ("notice", "demo model") in rows


def test_parameter_node_is_the_modules_singleton(scene):
    logic = VirtualBiopsyLogic(scene)
    node = logic.parameter_node()
    assert node.IsA("vtkMRMLScriptedModuleNode")
    assert node.GetAttribute("ModuleName") == "VirtualBiopsy"
    assert node.GetSingletonTag() == "VirtualBiopsy"
    assert VirtualBiopsyLogic(scene).parameter_node() is node
    assert scene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode") == 1


def test_model_folder_field_never_shows_a_dot():
    assert model_folder_text(".") == model_folder_text("") == model_folder_text(None) == ""
    assert model_folder_text(" /models/v2 ") == "/models/v2"
    assert model_dir_option(".") is None and model_dir_option("/m") == "/m"


def test_runs_reuse_the_session_worker_and_cancel_starts_a_fresh_one(scene, tmp_path):
    """Real worker process, tiny untrained package: two Runs in one process (no network
    built again), Cancel kills it, the next Run starts a new one, close ends it."""
    from VirtualBiopsyLib.inference.fixtures import write_slot_folder, write_untrained_package
    from VirtualBiopsyLib.processes import process_alive

    package = write_untrained_package(tmp_path / "package", n_folds=2)
    phantom = write_slot_folder(tmp_path / "phantom", ["LE_CC", "LE_MLO"], laterality="L")
    for slot, name in (("LE_CC", "P7_L_DM_CC"), ("LE_MLO", "P7_L_DM_MLO")):
        picture, spacing = bridge.read_picture_nrrd(phantom / f"{slot}.nrrd")
        node = bridge.add_picture_volume(scene, picture, spacing, name, None)
        node.RemoveAttribute("VirtualBiopsy.Result")  # a user's volume, not ours
    logic = VirtualBiopsyLogic(scene, work_root=tmp_path / "work")
    options = RunOptions(model_dir=package, python=sys.executable)
    # the widget starts the worker once an exam is assigned; the first Run uses it
    assert logic.prepare_worker(options) and not logic.prepare_worker(options)
    assert not logic.prepare_worker(replace(options, worker=False))  # one-shot: nothing

    (first,) = logic.run(options=options, timeout=120)
    worker = logic.workers.worker
    built, pid = worker.info["networks_built"], worker.info["pid"]
    (second,) = logic.run(options=options, timeout=120)
    assert worker.starts == 1 and worker.info["pid"] == pid and worker.info["requests"] == 2
    assert worker.info["networks_built"] == built
    fused = [run.nodes.result["probabilities"]["fused"]["mean"] for run in (first, second)]
    assert fused[0] == pytest.approx(fused[1], abs=1e-6)
    assert second.nodes.synthetic["DES_CC"].GetName() == "SYNTHETIC DES CC (VirtualBiopsy)"

    handle = logic.start(logic.assign_slots().slots, options)
    while handle.job.step() is JobState.RUNNING and handle.job.last_progress is None:
        time.sleep(0.02)
    logic.cancel(handle)
    assert handle.job.state is JobState.CANCELLED and not process_alive(pid)
    assert not handle.work_dir.exists()

    (third,) = logic.run(options=options, timeout=120)
    assert worker.starts == 2 and third.nodes.table is not None
    new_pid = worker.info["pid"]
    logic.close()
    assert not process_alive(new_pid)
    assert list((tmp_path / "work").iterdir()) == []
