"""The Slicer module's logic, usable from the Python console and from tests.

It joins the bridge (nodes ↔ files) and the process runner (the predict command in the
background): export the case's volumes, run ``predict``, import the results as nodes,
fill the results table and set up the 2×2 view. The runner and the clock are passed in
(a :class:`~VirtualBiopsyLib.slicer.process.ProcessRunner` factory), so tests use a
stand-in process and the GUI a timer-driven one.

Console example (in Slicer's Python console, with an exam loaded)::

    >>> from VirtualBiopsyLib.slicer.logic import VirtualBiopsyLogic, RunOptions
    >>> logic = VirtualBiopsyLogic(slicer.mrmlScene)                  # doctest: +SKIP
    >>> assignment = logic.assign_slots()                             # doctest: +SKIP
    >>> runs = logic.run(assignment.slots, RunOptions(laterality=assignment.laterality,
    ...                  python=shutil.which("PythonSlicer")),
    ...                  on_progress=lambda p: print(p.fraction, p.message))  # doctest: +SKIP
    >>> runs[0].nodes.result["probabilities"]["fused"]["mean"]        # doctest: +SKIP
    0.71
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import VirtualBiopsyLib
from VirtualBiopsyLib.errors import CaseError, VirtualBiopsyError
from VirtualBiopsyLib.roles import SLOTS, Laterality
from VirtualBiopsyLib.slicer import bridge
from VirtualBiopsyLib.slicer.process import (
    PredictJob,
    ProcessRunner,
    Progress,
    SubprocessRunner,
    predict_command,
)
from VirtualBiopsyLib.slicer.slots import SlotAssignment, assign_slots

log = logging.getLogger(__name__)


@dataclass
class RunOptions:
    """What the panel's controls choose; defaults are the command line's."""

    model_dir: Path | str | None = None  # None: the bundled demo model
    synthesis: bool = True
    saliency: bool = True
    device: str = "cpu"
    laterality: Laterality | str | None = None  # None: from names / attributes
    python: str | None = None  # PythonSlicer inside the app; this interpreter otherwise
    keep_inputs: bool = False  # keep the exported NRRD copies after the run


@dataclass
class RunHandle:
    """A started run: its job (poll ``job.step()``), its inputs and its folders."""

    job: PredictJob
    inputs: dict[str, Any]
    work_dir: Path
    input_dir: Path
    out_dir: Path


@dataclass
class CaseRun:
    """One imported case: the nodes made and the views that show them."""

    result_json: Path
    nodes: bridge.ResultNodes
    shown: dict[str, str] = field(default_factory=dict)


def library_path_entry() -> str:
    """The folder holding the ``VirtualBiopsyLib`` package, for the child's PYTHONPATH."""
    return str(Path(VirtualBiopsyLib.__file__).resolve().parent.parent)


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
    ) -> None:
        self.scene = scene
        self.runner_factory = runner_factory
        self.clock = clock
        self.sleep = sleep
        self.work_root = Path(work_root) if work_root is not None else None

    def volume_nodes(self) -> list[Any]:
        """Scalar volume nodes of the scene, in the order they were added."""
        nodes = self.scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
        return [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]

    def assign_slots(self, laterality: Laterality | str | None = None) -> SlotAssignment:
        """Guess which loaded volume fills which slot (see :mod:`.slots`)."""
        return assign_slots(self.volume_nodes(), laterality)

    def start(
        self,
        volumes: Mapping[str, Any],
        options: RunOptions | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> RunHandle:
        """Export the volumes and start predict; returns at once (poll ``handle.job``)."""
        options = options or RunOptions()
        inputs = {slot: volumes.get(slot) for slot in SLOTS}
        laterality = options.laterality or self._laterality_of(inputs)
        identity = bridge.case_identity(self.scene, inputs, laterality)
        root = self.work_root or Path(tempfile.gettempdir())
        root.mkdir(parents=True, exist_ok=True)
        work_dir = Path(tempfile.mkdtemp(prefix="VirtualBiopsy-", dir=root))
        input_dir, out_dir = work_dir / "input", work_dir / "results"
        bridge.export_case(inputs, input_dir, identity)
        args = predict_command(
            input_dir,
            out_dir,
            model_dir=options.model_dir,
            synthesis=options.synthesis,
            saliency=options.saliency,
            device=options.device,
            python=options.python,
        )
        path = os.pathsep.join(filter(None, [library_path_entry(), os.environ.get("PYTHONPATH")]))
        job = PredictJob(self.runner_factory(), args, on_progress, {"PYTHONPATH": path})
        job.start()
        log.info(
            "VirtualBiopsy: predict started for slots %s",
            ", ".join(slot for slot, node in inputs.items() if node is not None),
        )
        return RunHandle(job, inputs, work_dir, input_dir, out_dir)

    def _laterality_of(self, inputs: Mapping[str, Any]) -> Laterality | None:
        nodes = [node for node in inputs.values() if node is not None]
        return assign_slots(nodes).laterality

    def finish(self, handle: RunHandle, keep_inputs: bool = False) -> list[CaseRun]:
        """Import a finished run's results as nodes and show them; removes exported copies."""
        if handle.job.error is not None:
            if not keep_inputs:
                shutil.rmtree(handle.input_dir, ignore_errors=True)
            raise handle.job.error
        result_files = [Path(p) for p in handle.job.results] or sorted(
            handle.out_dir.glob("*/result.json")
        )
        if not result_files:
            raise CaseError(f"{handle.out_dir}: the predict command wrote no result")
        runs = [self._import(handle, Path(p)) for p in result_files]
        if not keep_inputs:
            shutil.rmtree(handle.input_dir, ignore_errors=True)
        return runs

    def cancel(self, handle: RunHandle) -> None:
        """Stop a running job (its whole process tree) and remove the exported copies."""
        handle.job.cancel()
        shutil.rmtree(handle.input_dir, ignore_errors=True)

    def _import(self, handle: RunHandle, result_json: Path) -> CaseRun:
        if not result_json.is_absolute():
            result_json = handle.out_dir.parent / result_json
        loaded = bridge.load_result(self.scene, result_json, handle.inputs)
        reference = next((n for n in handle.inputs.values() if n is not None), None)
        bridge.place_in_study(self.scene, loaded.all_nodes(), reference, bridge.RESULTS_FOLDER_NAME)
        shown = bridge.setup_view_layers(
            bridge.slice_composite_nodes(self.scene),
            bridge.displayed_volumes(handle.inputs, loaded),
            loaded.saliency,
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
