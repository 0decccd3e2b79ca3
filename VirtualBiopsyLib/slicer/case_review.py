"""GUI-based case review: every case of the loaded studies (or a folder) in one run.

The review finds the cases with the library's own readers and grouping (the same cases
``predict`` will find), sends one request per case to the session's persistent worker
(the one the Runs use, so the models load once per session and each case's row is
filled as soon as it is done; with ``RunOptions(worker=False)``, one ``predict``
process over all their files), and keeps each case's result until the review is
cleared. The panel shows :meth:`CaseReview.table` (label, fused probability and the
spread over folds per case), loads a case's images, synthetic DES and saliency maps into
the 2×2 view when its row is clicked (:meth:`CaseReview.show`) and exports the table as
CSV. Numbers of the demo model or of phantom cases say nothing about clinical performance.

Console example::

    >>> review = CaseReview(slicer.mrmlScene, dicom_database=slicer.dicomDatabase)  # doctest: +SKIP
    >>> review.find_in_scene()                                      # doctest: +SKIP
    >>> review.start(RunOptions(python=shutil.which("PythonSlicer"))).wait()  # doctest: +SKIP
    >>> review.finish(); review.export_csv("review.csv")            # doctest: +SKIP
    >>> review.workers.close()  # the review's own worker                 # doctest: +SKIP

In the module the review shares the logic's worker: ``CaseReview(…, workers=logic.workers)``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from VirtualBiopsyLib import RESEARCH_USE_NOTICE
from VirtualBiopsyLib.atomic_io import LOCK_PREFIX, LOCK_SUFFIX, clear_stale
from VirtualBiopsyLib.errors import CaseError
from VirtualBiopsyLib.images.cases import Case, group_cases
from VirtualBiopsyLib.roles import SLOTS
from VirtualBiopsyLib.slicer import bridge
from VirtualBiopsyLib.slicer.logic import RunOptions, child_python_path
from VirtualBiopsyLib.slicer.process import (
    JobState,
    PredictJob,
    ProcessRunner,
    Progress,
    SessionWorker,
    SubprocessRunner,
    WorkerJob,
    wait_for,
)
from VirtualBiopsyLib.slicer.slots import ROLE_ATTRIBUTE, DicomDatabase, dicom_files

TABLE_NAME = "VirtualBiopsy case review"
COLUMNS = ("Case", "Breast", "Images", "Label", "Fused probability", "Fold spread (SD)", "Status")


@dataclass
class ReviewCase:
    """One case of the review: its files by slot and, once run, its result."""

    key: str
    laterality: str
    files: dict[str, Path]
    result: dict[str, Any] | None = None
    result_json: Path | None = None
    status: str = "not run"
    job: WorkerJob | None = None  # this case's request to the worker

    @property
    def fused(self) -> float:
        if self.result is None:
            return math.nan
        return float(self.result["probabilities"]["fused"]["mean"])

    @property
    def spread(self) -> float:
        if self.result is None:
            return math.nan
        return float(self.result["probabilities"]["fused"].get("std", math.nan))

    def row(self) -> tuple[str, str, str, str, float, float, str]:
        label = str(self.result["label"]) if self.result is not None else ""
        images = " ".join(slot for slot in SLOTS if slot in self.files)
        return (self.key, self.laterality, images, label, self.fused, self.spread, self.status)


def _review_case(case: Case) -> ReviewCase:
    files = {slot: info.path for slot, info in case.slots.items() if info is not None}
    laterality = case.laterality.value if case.laterality is not None else "?"
    return ReviewCase(case.key, laterality, files)


@dataclass
class CaseReview:
    """Find cases, run them (one worker request each), keep and show their results.

    ``workers``: the session's worker (the logic's, so Runs and the review share one
    process); by default the review makes its own from ``runner_factory``.
    """

    scene: Any
    runner_factory: Callable[[], ProcessRunner] = SubprocessRunner
    work_root: Path | str | None = None
    dicom_database: DicomDatabase | None = None
    fit_view: Callable[[str], None] | None = None
    workers: SessionWorker | None = None
    cases: list[ReviewCase] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    job: PredictJob | ReviewJobs | None = None
    work_dir: Path | None = None
    _table: Any = None

    def __post_init__(self) -> None:
        if self.workers is None:
            self.workers = SessionWorker(lambda: self.runner_factory())

    # ------------------------------------------------------------------ finding cases

    def find_in_folder(self, folder: Path | str) -> list[ReviewCase]:
        """Every case in a folder (DICOM, CDD-CESM, slot NRRD), as ``predict`` finds them."""
        return self._find([Path(folder)])

    def find_in_scene(self) -> list[ReviewCase]:
        """Every case among the files behind the scene's DICOM-loaded volumes."""
        files: list[Path] = []
        nodes = self.scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
        for index in range(nodes.GetNumberOfItems()):
            for file in dicom_files(nodes.GetItemAsObject(index), self.dicom_database):
                if file.path is not None and file.path not in files:
                    files.append(file.path)
        if not files:
            raise CaseError(
                "no volume of the scene comes from Slicer's DICOM database: load the "
                "studies with the DICOM module, or choose a folder"
            )
        return self._find(files)

    def _find(self, paths: Iterable[Path]) -> list[ReviewCase]:
        from VirtualBiopsyLib.images.readers import scan

        entries = scan(paths)
        self.problems = [f"{e.path.name}: {e.reason}" for e in entries if e.status == "error"]
        infos = [e.info for e in entries if e.status == "ok" and e.info is not None]
        found = group_cases(infos)
        self.cases = [_review_case(case) for case in found]
        for case in found:
            self.problems += [f"{case.key}: {problem}" for problem in case.problems]
        self._update_table()
        return self.cases

    # ------------------------------------------------------------------ running

    def start(
        self,
        options: RunOptions | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> PredictJob | ReviewJobs:
        """Start the review: one request per case to the session's worker (or, with
        ``options.worker`` False, one ``predict`` process over every case's files);
        returns at once. Poll :meth:`step` (or the returned job's ``step``)."""
        if not self.cases:
            raise CaseError("no cases to review: find cases in the scene or a folder first")
        options = options or RunOptions()
        self.clear_results()
        root = Path(self.work_root) if self.work_root is not None else Path(tempfile.gettempdir())
        root.mkdir(parents=True, exist_ok=True)
        self.work_dir = Path(tempfile.mkdtemp(prefix="VirtualBiopsy-review-", dir=root))
        try:
            self._launch(options, self.work_dir / "results", on_progress)
        except BaseException:
            self.clear_results()  # what was sent is stopped; the folder goes
            raise
        for case in self.cases:
            case.status = "running"
        self._update_table()
        return self.job

    def _launch(
        self, options: RunOptions, out: Path, on_progress: Callable[[Progress], None] | None
    ) -> None:
        """Send the requests (or start the process); :attr:`job` holds what was sent."""
        env = {"PYTHONPATH": child_python_path()}
        if options.worker:
            assert self.workers is not None
            worker = self.workers.get(options.worker_command(), env)
            self.job = ReviewJobs([])
            for case in self.cases:
                case.job = worker.submit(list(case.files.values()), out, on_progress=on_progress)
                self.job.jobs.append(case.job)
        else:
            paths = [path for case in self.cases for path in case.files.values()]
            args = options.predict_command(paths, out)
            self.job = PredictJob(self.runner_factory(), args, on_progress, env)
            self.job.start()

    def step(self) -> JobState:
        """Poll the review (from the panel's timer): a case's row is filled as soon as
        its request is done. Returns the review job's state."""
        if self.job is None:
            return JobState.NOT_STARTED
        state = self.job.step()
        if self._settle_ended():
            self._update_table()
        return state

    def _settle_ended(self) -> bool:
        """Settle the cases whose request has ended since; True when there were some."""
        ended = [
            case
            for case in self.cases
            if case.job is not None
            and case.status == "running"
            and case.job.state is not JobState.RUNNING
        ]
        for case in ended:
            self._settle(case)
        return bool(ended)

    def _settle(self, case: ReviewCase) -> None:
        """A finished request's case: its result, or why it has none."""
        job = case.job
        assert job is not None
        if job.state is JobState.CANCELLED:
            case.status = "cancelled"
            return
        path = next((Path(p) for p in job.results if Path(p).parent.name == case.key), None)
        if job.state is JobState.DONE and path is not None:
            case.result = bridge.read_result(path)
            case.result_json = path
            case.status = "done"
        elif job.errors:
            case.status = f"not classified: {job.errors[-1]}"
        else:
            reason = str(job.error).splitlines()[0] if job.error is not None else "no result"
            case.status = f"no result: {reason}"

    def finish(self) -> list[ReviewCase]:
        """Read every case's result; cases without one say why (from the process output)."""
        if self.job is None or self.work_dir is None:
            raise CaseError("the review has not been started")
        if isinstance(self.job, ReviewJobs):
            self._settle_ended()
            self._update_table()
            return self.cases
        results: dict[str, Path] = {}
        for path in sorted((self.work_dir / "results").glob("*/result.json")):
            results[path.parent.name] = path
        tail = list(self.job.log_tail)
        for case in self.cases:
            path = results.get(case.key)
            if path is None:
                reason = next((line for line in reversed(tail) if case.key in line), None)
                case.status = f"not classified: {reason}" if reason else "no result"
                if self.job.error is not None and reason is None:
                    case.status = f"no result: {str(self.job.error).splitlines()[0]}"
                continue
            case.result = bridge.read_result(path)
            case.result_json = path
            case.status = "done"
        self._update_table()
        return self.cases

    def cancel(self) -> None:
        """Stop the review's own requests (a Run on the shared worker goes on). Cases
        that ended before keep their results; what the stopped ones half-wrote goes."""
        if self.job is None or self.work_dir is None:
            return
        self.job.cancel()
        self.finish()
        if isinstance(self.job, PredictJob) and self.job.state is JobState.CANCELLED:
            for case in self.cases:
                if case.result is None:
                    case.status = "cancelled"
            self._update_table()
        remove_partial_outputs(self.work_dir / "results")

    # ------------------------------------------------------------------ showing

    def case(self, key: str) -> ReviewCase:
        for case in self.cases:
            if case.key == key:
                return case
        raise CaseError(f"no case {key} in the review")

    def show(self, key: str) -> tuple[dict[str, Any], bridge.ResultNodes | None, dict[str, str]]:
        """Load a case's images (and, once run, its synthetic DES and maps) into the views.

        Returns (slot → image node, result nodes or None, view → slot shown).
        """
        from VirtualBiopsyLib.images.readers import read_image

        case = self.case(key)
        images: dict[str, Any] = {}
        for slot, path in case.files.items():
            image = read_image(path)
            name = f"{slot} {case.key}"
            node = bridge.add_picture_volume(self.scene, image.pixels, image.spacing, name, None)
            node.RemoveAttribute(bridge.RESULT_ATTRIBUTE)  # an input image
            node.SetAttribute(ROLE_ATTRIBUTE, slot)
            display = node.GetDisplayNode()
            if image.windowed:
                display.AutoWindowLevelOff()
                display.SetWindowLevelMinMax(0.0, 1.0)
            images[slot] = node
        loaded = None
        saliency: dict[str, Any] = {}
        shown_volumes = dict(images)
        if case.result_json is not None:
            loaded = bridge.load_result(self.scene, case.result_json, images)
            saliency = loaded.saliency
            shown_volumes = bridge.displayed_volumes(images, loaded)
        shown = bridge.setup_view_layers(
            bridge.slice_composite_nodes(self.scene), shown_volumes, saliency, fit=self.fit_view
        )
        return images, loaded, shown

    # ------------------------------------------------------------------ table and CSV

    def table(self) -> Any:
        """The review's ``vtkMRMLTableNode`` (one row per case), kept up to date."""
        if self._table is None or self.scene.GetNodeByID(self._table.GetID()) is None:
            self._table = self.scene.AddNewNodeByClass("vtkMRMLTableNode", TABLE_NAME)
            self._table.SetAttribute(bridge.RESULT_ATTRIBUTE, "true")
            self._table.SetAttribute(bridge.NOTICE_ATTRIBUTE, RESEARCH_USE_NOTICE)
            self._table.SetUseColumnTitleAsColumnHeader(True)
        self._update_table()
        return self._table

    def _update_table(self) -> None:
        if self._table is None:
            return
        import vtk

        table = self._table.GetTable()
        table.Initialize()
        arrays = []
        for name in COLUMNS:
            numeric = name in ("Fused probability", "Fold spread (SD)")
            array = vtk.vtkDoubleArray() if numeric else vtk.vtkStringArray()
            array.SetName(name)
            arrays.append(array)
        for case in self.cases:
            for array, value in zip(arrays, case.row(), strict=True):
                array.InsertNextValue(value)
        for array in arrays:
            table.AddColumn(array)
        self._table.Modified()

    def csv_text(self) -> str:
        """The table as CSV, with the research-use notice as a last comment line."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(COLUMNS)
        for case in self.cases:
            key, breast, images, label, fused, spread, status = case.row()
            writer.writerow([key, breast, images, label, _number(fused), _number(spread), status])
        buffer.write(f"# {RESEARCH_USE_NOTICE}\n")
        return buffer.getvalue()

    def export_csv(self, path: Path | str, overwrite: bool = False) -> Path:
        """Write the table as CSV atomically; an existing file is kept unless ``overwrite``."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise CaseError(f"{path}: exists; choose another name or allow replacing it")
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-")
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as stream:
                stream.write(self.csv_text())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path

    def results_json(self) -> str:
        """Every case's result, keyed by case (for the console)."""
        return json.dumps({c.key: c.result for c in self.cases if c.result is not None}, indent=2)

    # ------------------------------------------------------------------ cleaning up

    def clear_results(self) -> None:
        """Stop the review's requests, forget results and remove the review's folder under
        the temporary path (a new review, a closed scene): no request of it is left to
        run later and write into a folder that is gone."""
        if self.job is not None:
            self.job.cancel()
        self.job = None
        if self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        self.work_dir = None
        for case in self.cases:
            case.result, case.result_json, case.status = None, None, "not run"
            case.job = None
        self._update_table()


def remove_partial_outputs(folder: Path, settle: float = 2.0) -> None:
    """Remove the hidden partial folders that stopped runs left in ``folder``, never a
    finished case's folder. A killed process's claim (its lock) ends a moment after the
    kill, when the kernel has ended the process: wait up to ``settle`` s for that."""
    deadline = time.monotonic() + settle
    while folder.is_dir():
        clear_stale(folder)
        claims = any(folder.glob(f"{LOCK_PREFIX}*{LOCK_SUFFIX}"))
        if not claims or time.monotonic() > deadline:
            return
        time.sleep(0.02)


@dataclass
class ReviewJobs:
    """The review's requests as one job: running while any runs; cancel stops them all
    and no other request on the worker they share."""

    jobs: list[WorkerJob]
    error: Exception | None = None  # a cancel or a timeout: the whole review's

    @property
    def state(self) -> JobState:
        states = {job.state for job in self.jobs}
        if JobState.RUNNING in states:
            return JobState.RUNNING
        if JobState.CANCELLED in states:
            return JobState.CANCELLED
        return JobState.DONE  # each case says whether it was classified

    @property
    def results(self) -> tuple[Path, ...]:
        return tuple(path for job in self.jobs for path in job.results)

    @property
    def log_tail(self) -> list[str]:
        return [line for job in self.jobs for line in job.log_tail]

    def step(self) -> JobState:
        for job in self.jobs:
            job.step()
        return self.state

    def cancel(self) -> None:
        for job in self.jobs:
            job.cancel()
        cancelled = (job.error for job in self.jobs if job.state is JobState.CANCELLED)
        self.error = next(cancelled, None)

    def wait(self, timeout: float | None = None, poll_interval: float = 0.05) -> tuple[Path, ...]:
        """Block until every case's request has ended (console use)."""
        return wait_for(self, timeout, poll_interval)


def _number(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.4f}"
