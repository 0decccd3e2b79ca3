"""The Slicer module's logic, usable from the Python console and from tests.

It joins the bridge (nodes ↔ files) and the process runner (the predict command in the
background): hand the case's original DICOM files (or NRRD exports of other volumes) to
``predict``, import the results as nodes, fill the results table, set up and fit the 2×2
view, and remove the run's temporary folder. By default every Run is a request to the
session's persistent worker (:class:`~VirtualBiopsyLib.slicer.process.SessionWorker`,
shared with the case review), so the models load once per session; Cancel stops the
Run's own request only (a review's go on) and removes the Run's folder;
:meth:`VirtualBiopsyLogic.close` stops the Runs still running, removes their folders and
ends the worker.
The collaborators are passed in: the runner
(a :class:`~VirtualBiopsyLib.slicer.process.ProcessRunner` factory), the clock, the DICOM
database (a :class:`~VirtualBiopsyLib.slicer.slots.DicomDatabase`) and the view fitter,
so tests use slicer-core and stand-ins, and the module the application's own.

This is the module's only logic class: the module file creates it with the application's
collaborators and keeps no logic of its own.

Console example (in Slicer's Python console, with an exam loaded)::

    >>> from VirtualBiopsyLib.slicer.logic import VirtualBiopsyLogic, RunOptions
    >>> logic = VirtualBiopsyLogic(slicer.mrmlScene)                  # doctest: +SKIP
    >>> assignment = logic.assign_slots()                             # doctest: +SKIP
    >>> runs = logic.run(assignment.slots, RunOptions(laterality=assignment.laterality,
    ...                  python=shutil.which("PythonSlicer")),
    ...                  on_progress=lambda p: print(p.fraction, p.message))  # doctest: +SKIP
    >>> runs[0].nodes.result["probabilities"]["fused"]["mean"]        # doctest: +SKIP
    0.71
    >>> logic.close()  # ends the session's worker process                # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import VirtualBiopsyLib
from VirtualBiopsyLib.errors import CaseError, VirtualBiopsyError
from VirtualBiopsyLib.roles import SLOTS, Laterality
from VirtualBiopsyLib.slicer import bridge
from VirtualBiopsyLib.slicer.inputs import PreparedInputs, prepare_inputs
from VirtualBiopsyLib.slicer.process import (
    PredictJob,
    ProcessRunner,
    Progress,
    SessionWorker,
    SubprocessRunner,
    WorkerJob,
    predict_command,
    worker_command,
)
from VirtualBiopsyLib.slicer.slots import DicomDatabase, SlotAssignment, assign_slots

log = logging.getLogger(__name__)

#: Module name: the parameter node's singleton tag and ModuleName attribute.
MODULE_NAME = "VirtualBiopsy"


@dataclass
class RunOptions:
    """What the panel's controls choose; defaults are the command line's."""

    model_dir: Path | str | None = None  # None: the bundled demo model
    synthesis: bool = True
    saliency: bool = True
    device: str = "cpu"
    laterality: Laterality | str | None = None  # None: from names / attributes
    python: str | None = None  # PythonSlicer inside the app; this interpreter otherwise
    keep_inputs: bool = False  # keep the run's folder (exports and result files)
    worker: bool = True  # a request to the session's worker; False: a predict process

    def predict_command(self, paths: Sequence[Path], out_dir: Path) -> list[str]:
        """A one-shot ``predict`` process's command for these options (``worker=False``)."""
        return predict_command(
            paths,
            out_dir,
            model_dir=self.model_dir,
            synthesis=self.synthesis,
            saliency=self.saliency,
            device=self.device,
            python=self.python,
        )

    def worker_command(self) -> list[str]:
        """The session worker's command for these options (a change restarts it)."""
        return worker_command(
            model_dir=self.model_dir,
            synthesis=self.synthesis,
            saliency=self.saliency,
            device=self.device,
            python=self.python,
        )


@dataclass
class RunHandle:
    """A started run: its job (poll ``job.step()``), its inputs and its folders."""

    job: PredictJob | WorkerJob
    inputs: dict[str, Any]
    work_dir: Path
    input_dir: Path
    out_dir: Path
    prepared: PreparedInputs | None = None


@dataclass
class CaseRun:
    """One imported case: the nodes made and the views that show them."""

    result_json: Path
    nodes: bridge.ResultNodes
    shown: dict[str, str] = field(default_factory=dict)


def model_folder_text(value: Path | str | None) -> str:
    """What the model-folder field shows: empty for "no folder" (never ``"."``).

    ``str(pathlib.Path(""))`` is ``"."``, which a path parameter would put in the field.

    >>> model_folder_text("."), model_folder_text(None), model_folder_text("/models/v2")
    ('', '', '/models/v2')
    """
    text = str(value or "").strip()
    return "" if text in ("", ".") else text


def model_dir_option(value: Path | str | None) -> str | None:
    """The ``--model`` folder for a field's text; None means the bundled demo model."""
    return model_folder_text(value) or None


def library_path_entry() -> str:
    """The folder holding the ``VirtualBiopsyLib`` package, for the child's PYTHONPATH."""
    return str(Path(VirtualBiopsyLib.__file__).resolve().parent.parent)


def _child_env() -> dict[str, str]:
    """What a predict or worker process gets on top of Slicer's environment."""
    return {"PYTHONPATH": child_python_path()}


def child_python_path() -> str:
    """PYTHONPATH of a predict or worker process: the library first."""
    return os.pathsep.join(filter(None, [library_path_entry(), os.environ.get("PYTHONPATH")]))


class VirtualBiopsyLogic:
    """Export → predict in a separate process → import, over one MRML scene.

    >>> import slicer
    >>> logic = VirtualBiopsyLogic(slicer.vtkMRMLScene())
    >>> logic.assign_slots().present
    []
    """

    def __init__(
        self,
        scene: Any,
        runner_factory: Callable[[], ProcessRunner] = SubprocessRunner,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        work_root: Path | str | None = None,
        dicom_database: DicomDatabase | None = None,
        fit_view: Callable[[str], None] | None = None,
    ) -> None:
        self.scene = scene
        self.runner_factory = runner_factory
        self.clock = clock
        self.sleep = sleep
        self.work_root = Path(work_root) if work_root is not None else None
        self.dicom_database = dicom_database
        self.fit_view = fit_view
        # the session's worker, shared with the case review; runner_factory read late,
        # so a caller may replace it
        self.workers = SessionWorker(lambda: self.runner_factory())
        self.active_runs: list[RunHandle] = []  # started, neither finished nor cancelled yet

    def close(self) -> None:
        """Cancel the Runs still running (their folders go) and end the session's worker
        process (the module calls it when Slicer quits and from its widget's
        ``cleanup``, which Slicer runs when the module is unloaded)."""
        for handle in list(self.active_runs):
            self.cancel(handle)
        self.workers.close()

    def parameter_node(self) -> Any:
        """The module's singleton ``vtkMRMLScriptedModuleNode`` (created when missing).

        Found and made as Slicer's ScriptedLoadableModuleLogic.getParameterNode does
        (Base/Python/slicer/ScriptedLoadableModule.py, v5.12.3 lines 310-331): singleton
        tag and ``ModuleName`` attribute equal to the module name.
        """
        node = self.scene.GetSingletonNode(MODULE_NAME, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = self.scene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
            node.UnRegister(None)  # CreateNodeByClass hands over a reference
            node.SetSingletonTag(MODULE_NAME)
            node.SetName(MODULE_NAME)
            node.SetAttribute("ModuleName", MODULE_NAME)
            node = self.scene.AddNode(node)
        elif node.GetAttribute("ModuleName") != MODULE_NAME:
            node.SetAttribute("ModuleName", MODULE_NAME)  # restored after a scene close
        return node

    def volume_nodes(self) -> list[Any]:
        """Scalar volume nodes of the scene, in the order they were added."""
        nodes = self.scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
        return [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]

    def assign_slots(self, laterality: Laterality | str | None = None) -> SlotAssignment:
        """Guess which loaded volume fills which slot (see :mod:`.slots`)."""
        return assign_slots(self.volume_nodes(), laterality, self.dicom_database)

    def start(
        self,
        volumes: Mapping[str, Any],
        options: RunOptions | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> RunHandle:
        """Hand the volumes over and start predict (a request to the session's worker
        unless ``options.worker`` is False); returns at once (poll ``handle.job``)."""
        options = options or RunOptions()
        inputs = {slot: volumes.get(slot) for slot in SLOTS}
        laterality = options.laterality or self._laterality_of(inputs)
        root = self.work_root or Path(tempfile.gettempdir())
        root.mkdir(parents=True, exist_ok=True)
        work_dir = Path(tempfile.mkdtemp(prefix="VirtualBiopsy-", dir=root))
        input_dir, out_dir = work_dir / "input", work_dir / "results"
        try:
            prepared = prepare_inputs(
                self.scene, inputs, input_dir, laterality, self.dicom_database
            )
        except BaseException:
            shutil.rmtree(work_dir, ignore_errors=True)
            raise
        try:
            job = self._start_job(prepared.paths, out_dir, options, on_progress)
        except BaseException:
            shutil.rmtree(work_dir, ignore_errors=True)
            raise
        log.info(
            "VirtualBiopsy: predict started for slots %s (DICOM files: %s)",
            ", ".join(slot for slot, node in inputs.items() if node is not None),
            ", ".join(prepared.dicom) or "none",
        )
        handle = RunHandle(job, inputs, work_dir, input_dir, out_dir, prepared)
        self.active_runs.append(handle)
        return handle

    def prepare_worker(self, options: RunOptions | None = None) -> bool:
        """Start the session's worker for ``options`` now, so that the first Run finds
        the package loaded and the networks built (a one-shot run has nothing to prepare).
        True when a process was started; the worker a later Run with other model options
        needs replaces it then.
        """
        options = options or RunOptions()
        if not options.worker:
            return False
        return self.workers.get(options.worker_command(), _child_env()).start()

    def _start_job(
        self,
        paths: list[Path],
        out_dir: Path,
        options: RunOptions,
        on_progress: Callable[[Progress], None] | None,
    ) -> PredictJob | WorkerJob:
        if options.worker:
            worker = self.workers.get(options.worker_command(), _child_env())
            return worker.submit(paths, out_dir, on_progress=on_progress)
        args = options.predict_command(paths, out_dir)
        job = PredictJob(self.runner_factory(), args, on_progress, _child_env())
        job.start()
        return job

    def _laterality_of(self, inputs: Mapping[str, Any]) -> Laterality | None:
        nodes = [node for node in inputs.values() if node is not None]
        return assign_slots(nodes, database=self.dicom_database).laterality

    def finish(self, handle: RunHandle, keep_inputs: bool = False) -> list[CaseRun]:
        """Import a finished run's results as nodes and show them.

        The run's folder under the temporary path (exported copies of the patient's
        pixels and the result files) is removed once imported: the nodes hold the data.
        """
        try:
            if handle.job.error is not None:
                raise handle.job.error
            result_files = [Path(p) for p in handle.job.results] or sorted(
                handle.out_dir.glob("*/result.json")
            )
            if not result_files:
                raise CaseError(f"{handle.out_dir}: the predict command wrote no result")
            return [self._import(handle, Path(p)) for p in result_files]
        finally:
            self._forget(handle)
            if not keep_inputs:
                shutil.rmtree(handle.work_dir, ignore_errors=True)

    def cancel(self, handle: RunHandle) -> None:
        """Stop a Run and remove its folder; also for a Run stopped otherwise (its folder
        goes all the same). Only the Run's own request stops: a review's requests on the
        session's worker go on (:meth:`.process.PredictWorker.cancel`)."""
        handle.job.cancel()
        self._forget(handle)
        shutil.rmtree(handle.work_dir, ignore_errors=True)

    def _forget(self, handle: RunHandle) -> None:
        with contextlib.suppress(ValueError):
            self.active_runs.remove(handle)

    def _import(self, handle: RunHandle, result_json: Path) -> CaseRun:
        if not result_json.is_absolute():
            result_json = handle.out_dir.parent / result_json
        shown_inputs = dict(handle.prepared.display) if handle.prepared else dict(handle.inputs)
        loaded = bridge.load_result(self.scene, result_json, shown_inputs)
        if handle.prepared is not None:
            loaded.warnings[:0] = handle.prepared.notes
        reference = next((n for n in handle.inputs.values() if n is not None), None)
        bridge.place_in_study(self.scene, loaded.all_nodes(), reference, bridge.RESULTS_FOLDER_NAME)
        shown = bridge.setup_view_layers(
            bridge.slice_composite_nodes(self.scene),
            bridge.displayed_volumes(shown_inputs, loaded),
            loaded.saliency,
            fit=self.fit_view,
        )
        return CaseRun(result_json, loaded, shown)

    def run(
        self,
        volumes: Mapping[str, Any] | None = None,
        options: RunOptions | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        timeout: float | None = None,
    ) -> list[CaseRun]:
        """Blocking run for the console and tests; ``volumes`` default to the guessed slots."""
        options = options or RunOptions()
        if volumes is None:
            assignment = self.assign_slots(options.laterality)
            volumes = assignment.slots
            if options.laterality is None:
                options.laterality = assignment.laterality
        handle = self.start(volumes, options, on_progress)
        with contextlib.suppress(VirtualBiopsyError):  # finish() cleans up, then raises it
            handle.job.wait(timeout=timeout, clock=self.clock, sleep=self.sleep)
        return self.finish(handle, options.keep_inputs)
