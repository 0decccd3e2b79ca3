"""MRML nodes ↔ the files the predict command reads and writes.

Export: the selected volume nodes become ``LE_CC.nrrd`` … plus ``case.json`` in a folder
(the hand-over format of ``docs/interfaces.md``), written as the pictures the user sees.
Import: a result folder becomes volume nodes (synthetic DES marked SYNTHETIC in name,
attribute and description), saliency maps with an inferno color table, a table node with
the probabilities and the research-use notice, placed in the input's study and shown
in a 2×2 slice layout.

>>> import slicer
>>> scene = slicer.vtkMRMLScene()
>>> inferno_color_node(scene).GetNumberOfColors()
256
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from VirtualBiopsyLib import RESEARCH_USE_NOTICE, SYNTHETIC_NOTICE
from VirtualBiopsyLib.atomic_io import write_atomically
from VirtualBiopsyLib.errors import (
    CaseError,
    ImageError,
    ImageReadError,
    ResultFileError,
    VirtualBiopsyError,
)
from VirtualBiopsyLib.images.identity import derived_uid
from VirtualBiopsyLib.inference.result import DEMO_MODEL_WARNING, read_result_json
from VirtualBiopsyLib.roles import SLOTS, Laterality, parse_slot
from VirtualBiopsyLib.slicer.geometry import (
    picture_from_node,
    picture_orientation,
    set_picture_geometry,
)
from VirtualBiopsyLib.slicer.slots import RESULT_ATTRIBUTE, SYNTHETIC_ATTRIBUTE

TOOL_SUFFIX = "(VirtualBiopsy)"
SOURCE_ATTRIBUTE = "VirtualBiopsy.Source"
GENERATED_FROM_ATTRIBUTE = "VirtualBiopsy.GeneratedFrom"
NOTICE_ATTRIBUTE = "VirtualBiopsy.Notice"
INFERNO_NAME = "VirtualBiopsy Inferno"
#: Slicer's own Inferno table: vtkMRMLColorLogic loads Base/Logic/Resources/ColorFiles/
#: Inferno.txt with the ID "vtkMRMLColorTableNode" + "File" + file name
#: (Libs/MRML/Logic/vtkMRMLColorLogic.cxx, GetFileColorNodeID, v5.12.3 lines 298-310).
SLICER_INFERNO_ID = "vtkMRMLColorTableNodeFileInferno.txt"
RESULTS_FOLDER_NAME = "VirtualBiopsy results"
#: Slice views of Slicer's 2×2 layout and their slots. In SlicerLayoutTwoOverTwoView the
#: top row is Red | Slice4 and the bottom row Green | Yellow (Libs/MRML/Logic/
#: vtkMRMLLayoutLogic.cxx, ``twoOverTwoView``, v5.12.3 lines 558-597), so LE CC | LE MLO
#: sit on top and DES CC | DES MLO below, as the README and the screenshot show.
VIEW_SLOTS: dict[str, str] = {
    "Red": "LE_CC",
    "Slice4": "LE_MLO",
    "Green": "DES_CC",
    "Yellow": "DES_MLO",
}
#: Where each view sits in the 2×2 layout: (row, column).
VIEW_POSITIONS: dict[str, tuple[int, int]] = {
    "Red": (0, 0),
    "Slice4": (0, 1),
    "Green": (1, 0),
    "Yellow": (1, 1),
}
SALIENCY_OPACITY = 0.4
_SYNTHETIC_FILE = re.compile(r"synthetic_(DES_CC|DES_MLO)\.nrrd")
_SALIENCY_FILE = re.compile(r"saliency_(LE_CC|LE_MLO|DES_CC|DES_MLO)\.nrrd")


class ResultFormatError(VirtualBiopsyError):
    """A result folder or ``result.json`` the bridge cannot read (names the file)."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


# --------------------------------------------------------------------------- export


@dataclass(frozen=True)
class CaseIdentity:
    """What ``case.json`` says about the exam; IDs stay in the file, never in logs."""

    patient_id: str
    study_uid: str
    laterality: Laterality

    def to_dict(self) -> dict[str, str]:
        return {
            "patient_id": self.patient_id,
            "study_uid": self.study_uid,
            "laterality": self.laterality.value,
        }


def _study_attribute(scene: Any, node: Any, attribute: str) -> str | None:
    """A DICOM attribute (``DICOM.PatientID`` …) from the node's subject-hierarchy parents."""
    import slicer

    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if hierarchy is None:
        return None
    item = hierarchy.GetItemByDataNode(node)
    if not item:
        return None
    value = hierarchy.GetAttributeFromItemAncestor(item, attribute)
    return value or None


def case_identity(
    scene: Any, slots: Mapping[str, Any], laterality: Laterality | str | None
) -> CaseIdentity:
    """Patient, study and breast of the exported case.

    DICOM-loaded volumes carry patient and study in their subject hierarchy; other
    volumes get a stable per-scene stand-in so the case key stays pseudonymous.
    """
    if laterality is None:
        names = ", ".join(node.GetName() for node in slots.values() if node is not None)
        raise CaseError(
            f"laterality unknown for {names}: name the volumes with L/R (e.g. 'L_LE_CC'), "
            "set the VirtualBiopsy.Laterality attribute, or choose it in the panel"
        )
    present = [node for node in slots.values() if node is not None]
    if not present:
        raise CaseError("no input volume selected: choose at least one LE or DES image")
    first = present[0]
    patient = _study_attribute(scene, first, "DICOM.PatientID")
    study = _study_attribute(scene, first, "DICOM.StudyInstanceUID")
    return CaseIdentity(
        patient_id=patient or f"slicer-scene-{id(scene):x}",
        # a DICOM UID derived from scene and node, stable for this scene (readers check UIDs)
        study_uid=study or derived_uid("VirtualBiopsy scene", f"{id(scene):x}", first.GetID()),
        laterality=Laterality(laterality),
    )


def _write_atomically(path: Path, write: Any, suffix: str) -> None:
    """Write through a temp file in the same folder, then rename (no half-written files).

    The library's one atomic writer; its temporary name keeps ``path``'s suffix.
    """
    write_atomically(Path(path), lambda temporary: write(str(temporary)))


def write_picture_nrrd(picture: np.ndarray, spacing_rc: tuple[float, float], path: Path) -> None:
    """Write a 2-D picture as NRRD with identity LPS directions (how ITK reads pictures)."""
    import SimpleITK

    image = SimpleITK.GetImageFromArray(picture)
    image.SetSpacing((float(spacing_rc[1]), float(spacing_rc[0])))
    _write_atomically(path, lambda name: SimpleITK.WriteImage(image, name, True), ".nrrd")


def export_case(
    slots: Mapping[str, Any], folder: Path | str, identity: CaseIdentity
) -> dict[str, Path]:
    """Write each filled slot as ``<slot>.nrrd`` and ``case.json`` into an empty folder.

    >>> import numpy, slicer, tempfile
    >>> scene = slicer.vtkMRMLScene()
    >>> le_cc = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "LE_CC")
    >>> slicer.util.updateVolumeFromArray(le_cc, numpy.ones((1, 4, 3), numpy.float32))
    >>> identity = CaseIdentity("anon", "1.2.3", Laterality.L)
    >>> sorted(export_case({"LE_CC": le_cc}, tempfile.mkdtemp() + "/in", identity))
    ['LE_CC', 'case.json']
    """
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise CaseError(f"{folder}: export folder is not empty; refusing to overwrite")
    unknown = set(slots) - set(SLOTS)
    if unknown:
        raise CaseError(f"unknown slot(s) {sorted(unknown)}; expected {', '.join(SLOTS)}")
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for slot, node in slots.items():
        if node is None:
            continue
        picture, spacing = picture_from_node(node)
        written[slot] = folder / f"{slot}.nrrd"
        write_picture_nrrd(picture, spacing, written[slot])
    if not written:
        raise CaseError("no input volume selected: choose at least one LE or DES image")
    case_json = folder / "case.json"
    text = json.dumps(identity.to_dict(), indent=2)
    _write_atomically(case_json, lambda name: Path(name).write_text(text, "utf-8"), ".json")
    written["case.json"] = case_json
    return written


# --------------------------------------------------------------------------- import


@dataclass
class ResultNodes:
    """Nodes made from one case's result folder."""

    result: dict[str, Any]
    folder: Path
    synthetic: dict[str, Any] = field(default_factory=dict)  # slot → synthetic DES node
    saliency: dict[str, Any] = field(default_factory=dict)  # slot → saliency map node
    table: Any = None
    warnings: list[str] = field(default_factory=list)

    def all_nodes(self) -> list[Any]:
        return [*self.synthetic.values(), *self.saliency.values(), self.table]


def read_result(result_json: Path | str) -> dict[str, Any]:
    """Load ``result.json`` and check it against its schema (the library's one reader);
    errors name the file and the missing part."""
    try:
        return read_result_json(Path(result_json))
    except ResultFileError as error:
        raise ResultFormatError(error.path, error.reason) from error


def _inside(folder: Path, relative: str) -> Path:
    """Resolve an output path and refuse anything outside the result folder."""
    path = (folder / relative).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise ResultFormatError(
            folder / "result.json", f"output {relative!r} is outside the folder"
        )
    return path


def _output_files(folder: Path, result: Mapping[str, Any]) -> list[Path]:
    """Image files the result names in ``outputs``, or found in the folder if none listed."""
    outputs = result.get("outputs") or {}
    if outputs:
        return [_inside(folder, str(relative)) for relative in outputs.values()]
    return sorted(folder.glob("*.nrrd"))


def read_picture_nrrd(path: Path) -> tuple[np.ndarray, tuple[float, float]]:
    """A 2-D NRRD written by the pipeline → (picture rows × columns, (row, column) spacing)."""
    import SimpleITK

    try:
        image = SimpleITK.ReadImage(str(path))
    except RuntimeError as error:
        raise ImageReadError(path, f"cannot read NRRD: {str(error).strip()[:200]}") from error
    array = SimpleITK.GetArrayFromImage(image)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ImageReadError(path, f"expected a 2-D image, got shape {tuple(array.shape)}")
    spacing = image.GetSpacing()
    return array, (float(spacing[1]), float(spacing[0]))


def add_picture_volume(
    scene: Any, picture: np.ndarray, spacing_rc: tuple[float, float], name: str, reference: Any
) -> Any:
    """New scalar volume showing ``picture``; on the reference node's grid when it fits.

    Maps computed on an exported picture thus overlay their input exactly, even when the
    input node's array is stored transposed or mirrored.
    """
    import slicer.util
    import vtk

    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    fits = reference is not None and reference.GetImageData() is not None
    if fits:
        try:
            reference_picture, _ = picture_from_node(reference)
        except ImageError:  # a stacked series or a rotated plane: use the picture's grid
            reference_picture = None
        fits = reference_picture is not None and reference_picture.shape == picture.shape
    if fits:
        array = picture_orientation(reference).from_picture(picture)
        slicer.util.updateVolumeFromArray(node, array[np.newaxis])
        matrix = vtk.vtkMatrix4x4()
        reference.GetIJKToRASMatrix(matrix)
        node.SetIJKToRASMatrix(matrix)
    else:
        slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(picture)[np.newaxis])
        set_picture_geometry(node, spacing_rc)
    node.CreateDefaultDisplayNodes()
    node.SetAttribute(RESULT_ATTRIBUTE, "true")
    return node


def synthetic_name(slot: str) -> str:
    """``"SYNTHETIC DES CC (VirtualBiopsy)"``: nobody can take it for an acquired image."""
    modality, view = parse_slot(slot)
    return f"SYNTHETIC {modality.value} {view.value} {TOOL_SUFFIX}"


def saliency_name(slot: str, synthetic: bool) -> str:
    modality, view = parse_slot(slot)
    prefix = "SYNTHETIC " if synthetic else ""
    return f"Saliency {prefix}{modality.value} {view.value} {TOOL_SUFFIX}"


def _mark_synthetic(node: Any, slot: str, generated_from: str | None) -> None:
    node.SetAttribute(SYNTHETIC_ATTRIBUTE, "true")
    node.SetAttribute(SOURCE_ATTRIBUTE, "synthetic")
    node.SetAttribute(GENERATED_FROM_ATTRIBUTE, generated_from or "")
    node.SetDescription(f"{slot} generated from {generated_from or 'LE'}. {SYNTHETIC_NOTICE}")


def inferno_color_node(scene: Any) -> Any:
    """Slicer's built-in Inferno table when the scene has it, else one built from matplotlib.

    slicer-core has no file-based color tables, so tests and the command line get the
    matplotlib copy (same colormap, 256 entries), shared per scene.
    """
    builtin = scene.GetNodeByID(SLICER_INFERNO_ID)
    if builtin is not None and builtin.IsA("vtkMRMLColorTableNode"):
        return builtin
    existing = scene.GetFirstNodeByName(INFERNO_NAME)
    if existing is not None and existing.IsA("vtkMRMLColorTableNode"):
        return existing
    from matplotlib import colormaps

    colors = colormaps["inferno"](np.linspace(0.0, 1.0, 256))
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", INFERNO_NAME)
    node.SetTypeToUser()
    node.SetNumberOfColors(256)
    for index, (red, green, blue, alpha) in enumerate(colors):
        node.SetColor(index, f"inferno {index}", red, green, blue, alpha)
    node.SetAttribute("Category", "VirtualBiopsy")
    return node


def _style_synthetic(node: Any) -> None:
    """Grey over the generator's whole output range [0, 1] (it is clamped to it).

    Slicer's automatic window fits the histogram of each image, so a synthetic DES whose
    values stay below 0.4 was stretched until its brightest tissue turned white; a fixed
    window shows it on the scale it was made on, as the preprocessed inputs are.
    """
    display = node.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, 1.0)


def _style_saliency(node: Any, color_node: Any) -> None:
    """Inferno over [0, 1], low values transparent so the mammogram shows through."""
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(color_node.GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, 1.0)
    display.SetApplyThreshold(True)
    display.SetLowerThreshold(0.1)
    display.SetUpperThreshold(1.0)


def _view_of(slot: str) -> str:
    return parse_slot(slot)[1].value


def load_result(
    scene: Any, result_json: Path | str, inputs: Mapping[str, Any] | None = None
) -> ResultNodes:
    """Make nodes from one case's ``result.json`` and the images beside it.

    ``inputs`` (slot → input node) gives each map the grid of the image it explains; a
    synthetic DES takes the grid of the LE image of its view.
    """
    path = Path(result_json)
    result = read_result(path)
    folder = path.parent
    inputs = dict(inputs or {})
    loaded = ResultNodes(result=result, folder=folder, warnings=list(result.get("warnings", [])))
    input_info = result.get("inputs") or {}
    color_node = inferno_color_node(scene)
    for file in _output_files(folder, result):
        if match := _SYNTHETIC_FILE.fullmatch(file.name):
            slot = match.group(1)
            reference = inputs.get(f"LE_{_view_of(slot)}")
            picture, spacing = read_picture_nrrd(file)
            node = add_picture_volume(scene, picture, spacing, synthetic_name(slot), reference)
            generated_from = (input_info.get(slot) or {}).get("generated_from")
            _mark_synthetic(node, slot, generated_from or f"LE_{_view_of(slot)}")
            _style_synthetic(node)
            loaded.synthetic[slot] = node
    for file in _output_files(folder, result):
        if match := _SALIENCY_FILE.fullmatch(file.name):
            slot = match.group(1)
            synthetic = slot in loaded.synthetic
            reference = loaded.synthetic.get(slot) or inputs.get(slot)
            picture, spacing = read_picture_nrrd(file)
            name = saliency_name(slot, synthetic)
            node = add_picture_volume(scene, picture.astype(np.float32), spacing, name, reference)
            node.SetAttribute(SOURCE_ATTRIBUTE, "saliency")
            _style_saliency(node, color_node)
            loaded.saliency[slot] = node
    loaded.table = results_table(scene, result)
    return loaded


# --------------------------------------------------------------------------- table

_TABLE_COLUMNS = (
    ("Level", "string"),
    ("Input", "string"),
    ("Source", "string"),
    ("Probability", "double"),
    ("Std", "double"),
    ("Folds", "int"),
    ("Note", "string"),
)


def _rows(result: Mapping[str, Any]) -> list[tuple[str, str, str, float, float, int, str]]:
    """Table rows: one per image, per modality, the fused value, the decision, notices."""
    probabilities = result["probabilities"]
    inputs = result.get("inputs") or {}
    rows = []

    def row(level: str, key: str, entry: Mapping[str, Any] | None, source: str = "") -> None:
        entry = entry or {}
        folds = entry.get("folds") or []
        mean = entry.get("mean")
        rows.append(
            (
                level,
                key,
                source,
                float(mean) if mean is not None else math.nan,
                float(entry.get("std", math.nan)),
                len(folds),
                "",
            )
        )

    for slot in SLOTS:
        source = (inputs.get(slot) or {}).get("source", "")
        if slot in (probabilities.get("images") or {}):
            row("image", slot, probabilities["images"][slot], source)
    for modality in ("LE", "DES"):
        if modality in (probabilities.get("modalities") or {}):
            row("modality", modality, probabilities["modalities"][modality])
    row("fused", "case", probabilities["fused"])
    threshold = float(result["threshold"])
    fused = float(probabilities["fused"].get("mean", math.nan))
    label = str(result["label"])
    rows.append(("decision", "label", "", fused, math.nan, 0, f"{label} (threshold {threshold:g})"))
    rows.append(("decision", "threshold", "", threshold, math.nan, 0, ""))
    if any(source == "synthetic" for source in (v.get("source") for v in inputs.values() if v)):
        rows.append(("notice", "synthetic", "", math.nan, math.nan, 0, SYNTHETIC_NOTICE))
    if (result.get("model") or {}).get("is_demo"):
        rows.append(("notice", "demo model", "", math.nan, math.nan, 0, DEMO_MODEL_WARNING))
    rows.append(("notice", "research use", "", math.nan, math.nan, 0, RESEARCH_USE_NOTICE))
    return rows


_ARRAY_CLASSES = {"string": "vtkStringArray", "double": "vtkDoubleArray", "int": "vtkIntArray"}


def results_table(scene: Any, result: Mapping[str, Any]) -> Any:
    """A ``vtkMRMLTableNode`` of the case's probabilities, label, threshold and notices."""
    import vtk

    key = (result.get("case") or {}).get("key", "case")
    table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", f"VirtualBiopsy results {key}")
    arrays = []
    for name, kind in _TABLE_COLUMNS:
        array = getattr(vtk, _ARRAY_CLASSES[kind])()
        array.SetName(name)
        arrays.append(array)
    for values in _rows(result):
        for array, value in zip(arrays, values, strict=True):
            array.InsertNextValue(value)
    table = table_node.GetTable()
    for array in arrays:
        table.AddColumn(array)
    table_node.SetAttribute(RESULT_ATTRIBUTE, "true")
    table_node.SetAttribute(NOTICE_ATTRIBUTE, str(result.get("notice") or RESEARCH_USE_NOTICE))
    table_node.SetAttribute("VirtualBiopsy.Label", str(result["label"]))
    table_node.SetAttribute("VirtualBiopsy.Threshold", str(result["threshold"]))
    is_demo = bool((result.get("model") or {}).get("is_demo"))
    table_node.SetAttribute("VirtualBiopsy.IsDemoModel", str(is_demo).lower())
    table_node.SetUseColumnTitleAsColumnHeader(True)
    table_node.Modified()
    return table_node


def table_rows(table_node: Any) -> list[dict[str, Any]]:
    """Rows of a results table as dicts (for tests and console users)."""
    table = table_node.GetTable()
    columns = [table.GetColumn(c) for c in range(table.GetNumberOfColumns())]
    return [
        {column.GetName(): column.GetValue(row) for column in columns}
        for row in range(table.GetNumberOfRows())
    ]


# --------------------------------------------------------------------------- views


def slice_composite_nodes(scene: Any) -> dict[str, Any]:
    """Slice composite nodes of the scene by view name (``Red``, ``Yellow`` …)."""
    nodes = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    found = {}
    for index in range(nodes.GetNumberOfItems()):
        node = nodes.GetItemAsObject(index)
        found[node.GetLayoutName()] = node
    return found


def setup_view_layers(
    composite_nodes: Mapping[str, Any],
    volumes: Mapping[str, Any],
    saliency: Mapping[str, Any] | None = None,
    opacity: float = SALIENCY_OPACITY,
    fit: Callable[[str], None] | None = None,
) -> dict[str, str]:
    """Show each slot in its view of the 2×2 layout, saliency map as foreground.

    Returns view name → slot for the views that got an image. ``volumes`` holds the real
    input or, for a missing DES, the synthetic one. Setting layers does not fit a view to
    its image, so ``fit(view)`` is called for every view shown (the module passes one that
    calls the view's slice logic ``FitSliceToAll``).
    """
    saliency = saliency or {}
    shown = {}
    for view, slot in VIEW_SLOTS.items():
        composite = composite_nodes.get(view)
        background = volumes.get(slot)
        if composite is None or background is None:
            continue
        overlay = saliency.get(slot)
        composite.SetBackgroundVolumeID(background.GetID())
        composite.SetForegroundVolumeID(overlay.GetID() if overlay is not None else None)
        composite.SetForegroundOpacity(opacity if overlay is not None else 0.0)
        composite.SetLabelVolumeID(None)
        shown[view] = slot
    if fit is not None:
        for view in shown:
            fit(view)
    return shown


def slice_logic_fitter(slice_logics: Mapping[str, Any]) -> Callable[[str], None]:
    """A ``fit`` for :func:`setup_view_layers` over slice logics by view name."""

    def fit(view: str) -> None:
        logic = slice_logics.get(view)
        if logic is not None:
            logic.FitSliceToAll()

    return fit


def displayed_volumes(inputs: Mapping[str, Any], loaded: ResultNodes) -> dict[str, Any]:
    """Slot → node to show: the input, or the synthetic image where the input is missing."""
    return {slot: inputs.get(slot) or loaded.synthetic.get(slot) for slot in SLOTS}


# --------------------------------------------------------------------------- hierarchy


def place_beside(scene: Any, node: Any, reference: Any) -> None:
    """Put ``node`` under the same subject-hierarchy parent as ``reference``."""
    import slicer

    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    reference_item = hierarchy.GetItemByDataNode(reference)
    if not reference_item:
        return
    parent = hierarchy.GetItemParent(reference_item)
    item = hierarchy.GetItemByDataNode(node) or hierarchy.CreateItem(parent, node)
    hierarchy.SetItemParent(item, parent)


def place_in_study(scene: Any, nodes: list[Any], reference: Any | None, folder_name: str) -> int:
    """Put result nodes in a folder under the reference node's study (or the scene).

    Returns the folder's subject-hierarchy item ID.
    """
    import slicer

    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    parent = hierarchy.GetSceneItemID()
    if reference is not None:
        item = hierarchy.GetItemByDataNode(reference)
        study = hierarchy.GetItemAncestorAtLevel(item, "Study") if item else 0
        if study:
            parent = study
    folder = hierarchy.CreateFolderItem(parent, folder_name)
    for node in nodes:
        if node is None:
            continue
        item = hierarchy.GetItemByDataNode(node)
        if not item:
            item = hierarchy.CreateItem(folder, node)
        hierarchy.SetItemParent(item, folder)
    return folder
