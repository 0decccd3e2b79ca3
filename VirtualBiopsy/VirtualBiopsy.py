"""VirtualBiopsy: the 3D Slicer module (a thin GUI over VirtualBiopsyLib).

Every behaviour lives in ``VirtualBiopsyLib.slicer`` (slot assignment from DICOM tags,
the hand-over of original DICOM files, the background process, result import, the case
review, sample data, dependency logic) where it is tested without the application; its
``VirtualBiopsyLogic`` is the module's logic. Nothing heavy is imported here at file
scope: no torch, no pip, not even the library, so that an older Slicer (older Python)
loads this file and says which Slicer it needs instead of failing.

Console use, without the panel::

    >>> from VirtualBiopsyLib.slicer.logic import VirtualBiopsyLogic, RunOptions
    >>> logic = VirtualBiopsyLogic(slicer.mrmlScene, dicom_database=slicer.dicomDatabase)
    >>> runs = logic.run(options=RunOptions(python=shutil.which("PythonSlicer")))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import pathlib
import shutil
import sys
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

POLL_INTERVAL_MS = 200
MINIMUM_SLICER = (5, 12)
REPOSITORY_URL = "https://github.com/virtual-biopsy/SlicerVirtualBiopsy"


def slicerVersionProblem():
    """Why this Slicer cannot run the module (None when it can)."""
    version = (int(slicer.app.majorVersion), int(slicer.app.minorVersion))
    if version < MINIMUM_SLICER or sys.version_info < (3, 10):
        return _(
            "VirtualBiopsy needs Slicer {minimum} or later (this is Slicer {version}, "
            "Python {python}). Please install a current Slicer from download.slicer.org."
        ).format(
            minimum=".".join(map(str, MINIMUM_SLICER)),
            version=".".join(map(str, version)),
            python=".".join(map(str, sys.version_info[:2])),
        )
    return None


class VirtualBiopsy(ScriptedLoadableModule):
    """Module description shown in Slicer's module list and help panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Virtual Biopsy")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        self.parent.dependencies = []
        self.parent.contributors = ["VirtualBiopsy contributors"]
        problem = slicerVersionProblem()
        if problem:  # say so instead of failing on the library's newer Python
            self.parent.helpText = problem
            return
        import VirtualBiopsyLib

        self.parent.helpText = (
            _(
                "Multimodal virtual biopsy of a breast lesion from a CESM exam: LE and DES images "
                "in CC and MLO views are classified by per-image CNNs and fused with MCC weights; "
                "a missing DES image can be synthesized from LE (marked SYNTHETIC). "
                "Needs Slicer 5.12 or later and the PyTorch extension. Load the exam with the "
                "DICOM module: the images' own DICOM files are used. See "
                "<a href='{url}'>the README</a>."
            ).format(url=REPOSITORY_URL)
            + "<br><br>"
            + VirtualBiopsyLib.RESEARCH_USE_NOTICE
        )
        self.parent.acknowledgementText = (
            _("Built on 3D Slicer, PyTorch, pydicom, highdicom and SimpleITK.")
            + " "
            + VirtualBiopsyLib.RESEARCH_USE_NOTICE
        )
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Offer a phantom CESM exam in Sample Data (generated locally, nothing downloaded)."""
    if slicerVersionProblem():
        return
    import SampleData

    from VirtualBiopsyLib.slicer.sample_data import sample_data_source_arguments

    def loadPhantom(source):
        from VirtualBiopsyLib.slicer.sample_data import load_sample_exam

        folder = pathlib.Path(slicer.app.temporaryPath) / "VirtualBiopsy-sample"
        with slicer.util.tryWithErrorDisplay(
            _("Could not make the phantom exam."), waitCursor=True
        ):
            return list(load_sample_exam(slicer.mrmlScene, folder).values())

    icon = pathlib.Path(__file__).parent / "Resources" / "Icons" / "VirtualBiopsy.png"
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        **sample_data_source_arguments(loadPhantom, icon)
    )


@parameterNodeWrapper
class VirtualBiopsyParameterNode:
    """Panel state, saved with the scene."""

    leCC: vtkMRMLScalarVolumeNode
    leMLO: vtkMRMLScalarVolumeNode
    desCC: vtkMRMLScalarVolumeNode
    desMLO: vtkMRMLScalarVolumeNode
    laterality: Annotated[str, Choice(["auto", "L", "R"])] = "auto"
    modelFolder: str = ""
    synthesizeMissingDES: bool = True
    saliency: bool = True
    device: Annotated[str, Choice(["cpu", "cuda"])] = "cpu"


SLOT_PARAMETERS = {"LE_CC": "leCC", "LE_MLO": "leMLO", "DES_CC": "desCC", "DES_MLO": "desMLO"}


def fitView(viewName):
    """Fit one slice view of the layout to its images (setting layers does not)."""
    widget = slicer.app.layoutManager().sliceWidget(viewName)
    if widget is not None:
        widget.sliceLogic().FitSliceToAll()


def makeLogic():
    """The library's logic with the application's collaborators."""
    from VirtualBiopsyLib.slicer.logic import VirtualBiopsyLogic
    from VirtualBiopsyLib.slicer.process import SubprocessRunner, session_launcher

    environment = slicer.util.startupEnvironment()
    return VirtualBiopsyLogic(
        slicer.mrmlScene,
        runner_factory=lambda: SubprocessRunner(session_launcher(environment)),
        work_root=slicer.app.temporaryPath,
        dicom_database=getattr(slicer, "dicomDatabase", None),
        fit_view=fitView,
    )


class VirtualBiopsyWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: inputs, options, Run / Cancel, progress, results, case review, notice."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.review = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._handle = None
        self._timer = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        problem = slicerVersionProblem()
        if problem:
            label = qt.QLabel(problem)
            label.wordWrap = True
            self.layout.addWidget(label)
            return
        import VirtualBiopsyLib

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/VirtualBiopsy.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.noticeLabel.text = VirtualBiopsyLib.RESEARCH_USE_NOTICE
        self.logic = makeLogic()
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.timeout.connect(self.onPoll)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.runButton.connect("clicked(bool)", self.onRun)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.autoAssignButton.connect("clicked(bool)", self.onAutoAssign)
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.onModelFolderChanged)
        self.ui.findInSceneButton.connect("clicked(bool)", self.onFindCasesInScene)
        self.ui.reviewFolderButton.connect("directoryChanged(QString)", self.onFindCasesInFolder)
        self.ui.runReviewButton.connect("clicked(bool)", self.onRunReview)
        self.ui.cancelReviewButton.connect("clicked(bool)", self.onCancelReview)
        self.ui.exportCsvButton.connect("clicked(bool)", self.onExportCsv)
        self.ui.reviewTableView.connect("clicked(QModelIndex)", self.onReviewRowClicked)
        self.initializeParameterNode()
        # end the session when Slicer quits (QCoreApplication::aboutToQuit); the worker
        # also ends on its own when Slicer is gone: end of its input, parent process gone
        slicer.app.connect("aboutToQuit()", self.endSession)

    def cleanup(self) -> None:
        # Slicer calls cleanup on qSlicerModuleManager::moduleAboutToBeUnloaded (a reload,
        # for one): Base/Python/slicer/ScriptedLoadableModule.py, ScriptedLoadableModuleWidget
        self.endSession()
        self.removeObservers()

    def endSession(self) -> None:
        """Stop the Run and the review, remove their folders, end the worker."""
        self.onCancel()
        self.closeReview()
        if self.logic is not None:
            self.logic.close()

    def closeReview(self) -> None:
        """Stop the review's requests and remove its folder (its results go with it)."""
        if self.review is not None:
            self.review.clear_results()
            self.review = None

    def enter(self) -> None:
        if self.logic is not None:
            self.initializeParameterNode()
            self.prepareWorker()

    def exit(self) -> None:
        if self.logic is not None:
            self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.onCancel()
        self.closeReview()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(VirtualBiopsyParameterNode(self.logic.parameter_node()))
        if not any(getattr(self._parameterNode, name) for name in SLOT_PARAMETERS.values()):
            self.onAutoAssign()

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)
        self.updateGUI()

    def updateGUI(self, caller=None, event=None) -> None:
        from VirtualBiopsyLib.slicer.logic import model_folder_text

        running = self._handle is not None
        hasInput = bool(self._parameterNode) and any(
            getattr(self._parameterNode, name) for name in SLOT_PARAMETERS.values()
        )
        reviewRunning = self.reviewRunning()
        self.ui.runButton.enabled = hasInput and not running and not reviewRunning
        self.ui.cancelButton.enabled = running
        if self._parameterNode:
            text = model_folder_text(self._parameterNode.modelFolder)
            if self.ui.modelPathLineEdit.currentPath != text:
                self.ui.modelPathLineEdit.currentPath = text
        hasCases = self.review is not None and bool(self.review.cases)
        self.ui.runReviewButton.enabled = hasCases and not reviewRunning and not running
        self.ui.cancelReviewButton.enabled = reviewRunning
        self.ui.exportCsvButton.enabled = hasCases

    def onModelFolderChanged(self, path) -> None:
        from VirtualBiopsyLib.slicer.logic import model_folder_text

        if self._parameterNode:
            self._parameterNode.modelFolder = model_folder_text(path)
            from VirtualBiopsyLib.models.package import MANIFEST_NAME

            # a path being typed changes with every key: start a worker for a package only
            if not path or (pathlib.Path(path) / MANIFEST_NAME).is_file():
                self.prepareWorker()

    def onAutoAssign(self) -> None:
        """Fill the slots from the loaded volumes; say which rule decided each."""
        if not self._parameterNode:
            return
        assignment = self.logic.assign_slots()
        for slot, name in SLOT_PARAMETERS.items():
            setattr(self._parameterNode, name, assignment.slots[slot])
        if assignment.laterality is not None:
            self._parameterNode.laterality = assignment.laterality.value
        self.ui.statusLabel.text = "\n".join(assignment.summary() + assignment.problems)
        self.prepareWorker()

    def prepareWorker(self) -> None:
        """Once an exam is assigned, start the session's worker, so that Run finds the
        networks built instead of waiting for the worker's start-up (imports, checksums,
        every network). Only when every package is installed: Run asks about those."""
        from VirtualBiopsyLib.slicer.dependencies import install_plan

        if not self._parameterNode or self._handle is not None or self.reviewRunning():
            return
        if not any(getattr(self._parameterNode, name) for name in SLOT_PARAMETERS.values()):
            return
        try:
            if install_plan().nothing_to_do:
                self.logic.prepare_worker(self.runOptions())
        except Exception:  # noqa: BLE001 - a head start only; Run reports what fails
            logging.warning("VirtualBiopsy: the worker could not be started ahead", exc_info=True)

    def onRun(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Virtual biopsy could not start."), waitCursor=True):
            if not self.ensureDependencies():
                self.ui.statusLabel.text = _("Missing Python packages: nothing was run.")
                return
            self.showTwoOverTwo()
            self.ui.progressBar.value = 0
            self._handle = self.logic.start(self.volumes(), self.runOptions(), self.onProgress)
            self._timer.start()
        self.updateGUI()

    def showTwoOverTwo(self) -> None:
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutTwoOverTwoView)

    def onProgress(self, progress) -> None:
        self.ui.progressBar.value = int(round(progress.fraction * 100))
        self.ui.statusLabel.text = progress.message

    def onPoll(self) -> None:
        """Timer tick: read the worker's output; import the results when it has finished."""
        from VirtualBiopsyLib.slicer.process import JobState

        if self.reviewRunning() and self.review.step() is not JobState.RUNNING:
            with slicer.util.tryWithErrorDisplay(_("Case review failed."), waitCursor=True):
                self.review.finish()
            self.ui.reviewStatusLabel.text = _("Review finished.")
        if self._handle is not None and self._handle.job.step() is not JobState.RUNNING:
            handle, self._handle = self._handle, None
            with slicer.util.tryWithErrorDisplay(_("Virtual biopsy failed."), waitCursor=True):
                if handle.job.state is JobState.CANCELLED:
                    self.logic.cancel(handle)  # stopped elsewhere: its folder goes
                else:
                    self.showResults(self.logic.finish(handle))
        if self._handle is None and not self.reviewRunning():
            self._timer.stop()
        self.updateGUI()

    def reviewRunning(self) -> bool:
        return (
            self.review is not None
            and self.review.job is not None
            and any(case.status == "running" for case in self.review.cases)
        )

    def showResults(self, runs) -> None:
        run = runs[0]
        self.ui.resultsTableView.setMRMLTableNode(run.nodes.table)
        result = run.nodes.result
        fused = result["probabilities"]["fused"]["mean"]
        lines = [
            _("{label}: fused probability {fused:.2f}").format(label=result["label"], fused=fused)
        ]
        lines += run.nodes.warnings
        self.ui.statusLabel.text = "\n".join(lines)
        notice = [run.nodes.table.GetAttribute("VirtualBiopsy.Notice")]
        if run.nodes.table.GetAttribute("VirtualBiopsy.IsDemoModel") == "true":
            notice.insert(0, _("DEMO MODEL (synthetic training data): the numbers mean nothing."))
        self.ui.noticeLabel.text = "\n".join(notice)

    def onCancel(self) -> None:
        if self._handle is None:
            return
        self.logic.cancel(self._handle)
        self._handle = None
        self.ui.statusLabel.text = _("Cancelled.")
        self.updateGUI()

    def volumes(self) -> dict:
        return {slot: getattr(self._parameterNode, name) for slot, name in SLOT_PARAMETERS.items()}

    def runOptions(self):
        from VirtualBiopsyLib.slicer.logic import RunOptions, model_dir_option

        parameters = self._parameterNode
        return RunOptions(
            model_dir=model_dir_option(parameters.modelFolder),
            synthesis=parameters.synthesizeMissingDES,
            saliency=parameters.saliency,
            device=parameters.device,
            laterality=None if parameters.laterality == "auto" else parameters.laterality,
            python=shutil.which("PythonSlicer"),
        )

    # ------------------------------------------------------------------ case review

    def newReview(self):
        from VirtualBiopsyLib.slicer.case_review import CaseReview

        self.closeReview()
        self.review = CaseReview(
            slicer.mrmlScene,
            runner_factory=self.logic.runner_factory,
            workers=self.logic.workers,  # one worker process for Runs and the review
            work_root=slicer.app.temporaryPath,
            dicom_database=self.logic.dicom_database,
            fit_view=fitView,
        )
        self.ui.reviewTableView.setMRMLTableNode(self.review.table())
        return self.review

    def onFindCasesInScene(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("No cases found."), waitCursor=True):
            review = self.newReview()
            review.find_in_scene()
            self.ui.reviewStatusLabel.text = "\n".join(
                [_("{n} cases").format(n=len(review.cases)), *review.problems[:10]]
            )
        self.updateGUI()

    def onFindCasesInFolder(self, folder) -> None:
        with slicer.util.tryWithErrorDisplay(_("No cases found."), waitCursor=True):
            review = self.newReview()
            review.find_in_folder(folder)
            self.ui.reviewStatusLabel.text = "\n".join(
                [_("{n} cases").format(n=len(review.cases)), *review.problems[:10]]
            )
        self.updateGUI()

    def onRunReview(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Case review could not start."), waitCursor=True):
            if not self.ensureDependencies():
                return
            self.review.start(self.runOptions(), self.onReviewProgress)
            self._timer.start()
        self.updateGUI()

    def onReviewProgress(self, progress) -> None:
        self.ui.reviewStatusLabel.text = progress.message

    def onCancelReview(self) -> None:
        if self.reviewRunning():
            self.review.cancel()
            self.ui.reviewStatusLabel.text = _("Cancelled.")
            self.updateGUI()

    def onReviewRowClicked(self, index) -> None:
        if self.review is None or not 0 <= index.row() < len(self.review.cases):
            return
        with slicer.util.tryWithErrorDisplay(_("Could not show the case."), waitCursor=True):
            self.showTwoOverTwo()
            _images, loaded, _shown = self.review.show(self.review.cases[index.row()].key)
            if loaded is not None:
                self.ui.resultsTableView.setMRMLTableNode(loaded.table)

    def onExportCsv(self) -> None:
        path = qt.QFileDialog.getSaveFileName(
            None, _("Export case review"), "VirtualBiopsy-review.csv", "CSV (*.csv)"
        )
        if path:
            with slicer.util.tryWithErrorDisplay(_("Could not write the CSV file.")):
                self.review.export_csv(path, overwrite=True)  # the dialog asked already

    # ------------------------------------------------------------------ dependencies

    def ensureDependencies(self) -> bool:
        """Ask once, then install PyTorch (PyTorch extension) and the other packages (pip)."""
        from VirtualBiopsyLib.slicer.dependencies import (
            blocked_message,
            ensure_dependencies,
            install_plan,
        )

        plan = install_plan()
        if plan.nothing_to_do:
            return True
        if plan.blocked:
            slicer.util.errorDisplay(blocked_message(plan))
            return False
        return ensure_dependencies(
            plan,
            confirm=lambda text: slicer.util.confirmOkCancelDisplay(text, _("Install packages")),
            torch_installer=self.torchInstaller,
            pip_install=self.pipInstall,
        )

    @staticmethod
    def torchInstaller():
        """The PyTorch extension's installer (made only when torch is missing)."""
        try:
            import PyTorchUtils
        except ModuleNotFoundError:
            slicer.util.errorDisplay(
                _(
                    "VirtualBiopsy needs the PyTorch extension: install it "
                    "from the Extensions Manager and restart Slicer."
                )
            )
            return None
        return PyTorchUtils.PyTorchUtilsLogic()

    @staticmethod
    def pipInstall(requirements) -> None:
        """pip with every installed package held at its version (Slicer's own included)."""
        import slicer.packaging  # a submodule that ``import slicer`` does not load

        from VirtualBiopsyLib.slicer.dependencies import write_constraints

        constraints = write_constraints(
            pathlib.Path(slicer.app.temporaryPath) / "VirtualBiopsy-constraints.txt", requirements
        )
        slicer.packaging.pip_ensure(
            list(requirements),
            constraints=str(constraints),
            prompt_install=False,
            requester="VirtualBiopsy",
        )


class VirtualBiopsyTest(ScriptedLoadableModuleTest):
    """In-app smoke test; the library's behaviour is tested with pytest under slicer-core."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SampleExamFillsTheSlots()

    def test_SampleExamFillsTheSlots(self):
        import tempfile

        from VirtualBiopsyLib.slicer.sample_data import load_sample_exam

        self.delayDisplay("Loading the phantom exam")
        with tempfile.TemporaryDirectory() as folder:
            nodes = load_sample_exam(slicer.mrmlScene, pathlib.Path(folder) / "sample")
            assignment = makeLogic().assign_slots()
            self.assertEqual(assignment.slots, nodes)
            self.assertIsNotNone(assignment.laterality)
        logging.info("VirtualBiopsy module test passed")
        self.delayDisplay("Test passed")
