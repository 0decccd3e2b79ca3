"""VirtualBiopsy: the 3D Slicer module (a thin GUI over VirtualBiopsyLib).

Every behaviour lives in ``VirtualBiopsyLib.slicer`` (slot assignment, export, the
background process, result import, dependency logic) where it is tested without the
application. Nothing heavy is imported here at file scope: no torch, no pip.

Console use, without the panel::

    >>> from VirtualBiopsyLib.slicer.logic import VirtualBiopsyLogic, RunOptions
    >>> logic = VirtualBiopsyLogic(slicer.mrmlScene)                 # doctest: +SKIP
    >>> runs = logic.run(options=RunOptions(python=shutil.which("PythonSlicer")))  # doctest: +SKIP
"""

import logging
import pathlib
import shutil
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
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

import VirtualBiopsyLib

POLL_INTERVAL_MS = 200


class VirtualBiopsy(ScriptedLoadableModule):
    """Module description shown in Slicer's module list and help panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Virtual Biopsy")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        self.parent.dependencies = []
        self.parent.contributors = ["VirtualBiopsy contributors"]
        self.parent.helpText = (
            _(
                "Multimodal virtual biopsy of a breast lesion from a CESM exam: LE and DES images "
                "in CC and MLO views are classified by per-image CNNs and fused with MCC weights; "
                "a missing DES image can be synthesized from LE (marked SYNTHETIC). "
                "See <a href='https://github.com/virtual-biopsy/VirtualBiopsy'>the README</a>."
            )
            + "<br><br>"
            + VirtualBiopsyLib.RESEARCH_USE_NOTICE
        )
        self.parent.acknowledgementText = (
            _("Built on 3D Slicer, PyTorch, MONAI, pydicom and SimpleITK.")
            + " "
            + VirtualBiopsyLib.RESEARCH_USE_NOTICE
        )


@parameterNodeWrapper
class VirtualBiopsyParameterNode:
    """Panel state, saved with the scene."""

    leCC: vtkMRMLScalarVolumeNode
    leMLO: vtkMRMLScalarVolumeNode
    desCC: vtkMRMLScalarVolumeNode
    desMLO: vtkMRMLScalarVolumeNode
    laterality: Annotated[str, Choice(["auto", "L", "R"])] = "auto"
    modelFolder: pathlib.Path
    synthesizeMissingDES: bool = True
    saliency: bool = True
    device: Annotated[str, Choice(["cpu", "cuda"])] = "cpu"


SLOT_PARAMETERS = {"LE_CC": "leCC", "LE_MLO": "leMLO", "DES_CC": "desCC", "DES_MLO": "desMLO"}


class VirtualBiopsyWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: inputs, options, Run / Cancel, progress, results table and notice."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._handle = None
        self._timer = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/VirtualBiopsy.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.noticeLabel.text = VirtualBiopsyLib.RESEARCH_USE_NOTICE
        self.logic = VirtualBiopsyLogic()
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.timeout.connect(self.onPoll)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.runButton.connect("clicked(bool)", self.onRun)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.autoAssignButton.connect("clicked(bool)", self.onAutoAssign)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.onCancel()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.onCancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not any(getattr(self._parameterNode, name) for name in SLOT_PARAMETERS.values()):
            self.onAutoAssign()

    def setParameterNode(self, parameterNode: VirtualBiopsyParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(
                self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons
            )
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self.updateButtons()

    def updateButtons(self, caller=None, event=None) -> None:
        running = self._handle is not None
        hasInput = bool(self._parameterNode) and any(
            getattr(self._parameterNode, name) for name in SLOT_PARAMETERS.values()
        )
        self.ui.runButton.enabled = hasInput and not running
        self.ui.cancelButton.enabled = running

    def onAutoAssign(self) -> None:
        """Fill the slots from the loaded volumes (names, DICOM, VirtualBiopsy.Role)."""
        if not self._parameterNode:
            return
        assignment = self.logic.core().assign_slots()
        for slot, name in SLOT_PARAMETERS.items():
            setattr(self._parameterNode, name, assignment.slots[slot])
        if assignment.laterality is not None:
            self._parameterNode.laterality = assignment.laterality.value
        self.ui.statusLabel.text = "\n".join(assignment.problems)

    def onRun(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Virtual biopsy could not start."), waitCursor=True):
            if not self.logic.ensureDependencies():
                self.ui.statusLabel.text = _("Missing Python packages: nothing was run.")
                return
            slicer.app.layoutManager().setLayout(
                slicer.vtkMRMLLayoutNode.SlicerLayoutTwoOverTwoView
            )
            self.ui.progressBar.value = 0
            self._handle = self.logic.core().start(
                self.logic.volumes(self._parameterNode),
                self.logic.runOptions(self._parameterNode),
                self.onProgress,
            )
            self._timer.start()
        self.updateButtons()

    def onProgress(self, progress) -> None:
        self.ui.progressBar.value = int(round(progress.fraction * 100))
        self.ui.statusLabel.text = progress.message

    def onPoll(self) -> None:
        """Timer tick: read the process output; import the results when it has finished."""
        from VirtualBiopsyLib.slicer.process import JobState

        if self._handle is None or self._handle.job.step() is JobState.RUNNING:
            return
        self._timer.stop()
        handle, self._handle = self._handle, None
        self.updateButtons()
        with slicer.util.tryWithErrorDisplay(_("Virtual biopsy failed."), waitCursor=True):
            if handle.job.state is JobState.CANCELLED:
                return
            runs = self.logic.core().finish(handle)
            self.showResults(runs)

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
        self._timer.stop()
        self.logic.core().cancel(self._handle)
        self._handle = None
        self.ui.statusLabel.text = _("Cancelled.")
        self.updateButtons()


def launchWithStartupEnvironment(args, envUpdates):
    """Start the predict process as Slicer starts console processes (clean environment)."""
    return slicer.util.launchConsoleProcess(
        args, useStartupEnvironment=True, updateEnvironment=envUpdates
    )


class VirtualBiopsyLogic(ScriptedLoadableModuleLogic):
    """Module logic: the parameter node, dependencies, and the library's core logic."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return VirtualBiopsyParameterNode(super().getParameterNode())

    def core(self):
        """The library logic over the current scene, running predict via PythonSlicer."""
        from VirtualBiopsyLib.slicer.logic import VirtualBiopsyLogic as CoreLogic
        from VirtualBiopsyLib.slicer.process import SubprocessRunner

        return CoreLogic(
            slicer.mrmlScene,
            runner_factory=lambda: SubprocessRunner(launchWithStartupEnvironment),
            work_root=slicer.app.temporaryPath,
        )

    @staticmethod
    def volumes(parameterNode) -> dict:
        return {slot: getattr(parameterNode, name) for slot, name in SLOT_PARAMETERS.items()}

    @staticmethod
    def runOptions(parameterNode):
        from VirtualBiopsyLib.slicer.logic import RunOptions

        folder = str(parameterNode.modelFolder or "")
        return RunOptions(
            model_dir=folder if folder not in ("", ".") else None,
            synthesis=parameterNode.synthesizeMissingDES,
            saliency=parameterNode.saliency,
            device=parameterNode.device,
            laterality=None if parameterNode.laterality == "auto" else parameterNode.laterality,
            python=shutil.which("PythonSlicer"),
        )

    def ensureDependencies(self) -> bool:
        """Ask once, then install PyTorch (PyTorch extension) and the other packages (pip)."""
        from VirtualBiopsyLib.slicer.dependencies import ensure_dependencies, install_plan

        plan = install_plan()
        if plan.nothing_to_do:
            return True
        return ensure_dependencies(
            plan,
            confirm=lambda text: slicer.util.confirmOkCancelDisplay(text, _("Install packages")),
            torch_installer=self.torchInstaller(),
            pip_install=self.pipInstall,
        )

    @staticmethod
    def torchInstaller():
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
        if hasattr(slicer, "packaging"):
            slicer.packaging.pip_ensure(
                requirements, prompt_install=False, requester="VirtualBiopsy"
            )
        else:  # Slicer before 5.12
            slicer.util.pip_install(requirements)


class VirtualBiopsyTest(ScriptedLoadableModuleTest):
    """In-app smoke test; the library's behaviour is tested with pytest under slicer-core."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SlotsAndExport()

    def test_SlotsAndExport(self):
        import tempfile

        import numpy as np

        from VirtualBiopsyLib.slicer import bridge
        from VirtualBiopsyLib.slicer.logic import VirtualBiopsyLogic as CoreLogic

        self.delayDisplay("Assigning slots from volume names")
        picture = np.zeros((1, 40, 30), dtype=np.uint16)
        picture[0, 2:6, 2:6] = 1000
        directions = np.diag([-0.1, -0.1, 1.0, 1.0])
        leCC = slicer.util.addVolumeFromArray(picture, ijkToRAS=directions, name="P1_L_DM_CC")
        desMLO = slicer.util.addVolumeFromArray(picture, ijkToRAS=directions, name="P1_L_CM_MLO")
        assignment = CoreLogic(slicer.mrmlScene).assign_slots()
        self.assertEqual(assignment.slots["LE_CC"], leCC)
        self.assertEqual(assignment.slots["DES_MLO"], desMLO)
        self.assertEqual(assignment.laterality.value, "L")

        self.delayDisplay("Exporting the case")
        identity = bridge.case_identity(slicer.mrmlScene, assignment.slots, assignment.laterality)
        with tempfile.TemporaryDirectory() as folder:
            written = bridge.export_case(assignment.slots, pathlib.Path(folder) / "in", identity)
            self.assertEqual(sorted(written), ["DES_MLO", "LE_CC", "case.json"])
        logging.info("VirtualBiopsy module test passed")
        self.delayDisplay("Test passed")
