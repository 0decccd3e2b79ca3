"""The Slicer bridge under slicer-core: real MRML scenes, real NRRD files, real slice views."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK
import slicer
import slicer.util
import vtk
from slicer_scene import fresh_scene

from VirtualBiopsyLib import RESEARCH_USE_NOTICE, SYNTHETIC_NOTICE
from VirtualBiopsyLib.errors import CaseError, ImageError
from VirtualBiopsyLib.inference.result import DEMO_MODEL_WARNING
from VirtualBiopsyLib.roles import Laterality
from VirtualBiopsyLib.slicer import bridge
from VirtualBiopsyLib.slicer.geometry import picture_from_node
from VirtualBiopsyLib.slicer.slots import (
    ROLE_ATTRIBUTE,
    assign_slots,
    guess_role,
)

PICTURE_DIRECTIONS = np.diag([-1.0, -1.0, 1.0, 1.0])


@pytest.fixture
def scene():
    with fresh_scene() as scene:
        yield scene


def marked_picture(rows: int = 40, columns: int = 60) -> np.ndarray:
    """A dark picture with a bright square in its top-left corner."""
    picture = np.full((rows, columns), 10, dtype=np.uint16)
    picture[2:8, 3:9] = 1000
    return picture


def add_volume(
    picture: np.ndarray,
    name: str,
    ijk_to_ras: np.ndarray = PICTURE_DIRECTIONS,
    spacing: tuple[float, float] = (0.1, 0.1),
):
    ras = np.array(ijk_to_ras, dtype=float)
    ras[:3, 0] *= spacing[1]
    ras[:3, 1] *= spacing[0]
    return slicer.util.addVolumeFromArray(picture[np.newaxis], ijkToRAS=ras, name=name)


def render_red_view(scene, background, foreground=None, size=(60, 40)) -> np.ndarray:
    """Render the axial Red slice view to a PNG (no OpenGL) and read it back as RGBA."""
    app_logic = slicer.vtkMRMLApplicationLogic()
    app_logic.SetMRMLScene(scene)
    slice_logic = slicer.vtkMRMLSliceLogic()
    slice_logic.SetMRMLScene(scene)
    slice_node = slice_logic.AddSliceNode("Red")
    slice_node.SetOrientationToAxial()
    slice_node.SetDimensions(size[0], size[1], 1)
    composite = slice_logic.GetSliceCompositeNode()
    composite.SetBackgroundVolumeID(background.GetID())
    if foreground is not None:
        composite.SetForegroundVolumeID(foreground.GetID())
        composite.SetForegroundOpacity(1.0)
    display = background.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0, float(slicer.util.arrayFromVolume(background).max()))
    slice_logic.FitSliceToAll()
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        png = Path(folder) / "red.png"
        writer = vtk.vtkPNGWriter()
        writer.SetInputConnection(slice_logic.GetImageDataConnection())
        writer.SetFileName(str(png))
        writer.Write()
        reader = vtk.vtkPNGReader()
        reader.SetFileName(str(png))
        reader.Update()
        image = reader.GetOutput()
        from vtk.util.numpy_support import vtk_to_numpy

        columns, rows, _ = image.GetDimensions()
        pixels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(rows, columns, -1)
    slice_logic.SetMRMLScene(None)
    app_logic.SetMRMLScene(None)
    scene.RemoveNode(composite)
    scene.RemoveNode(slice_node)
    return pixels[::-1]  # VTK rows run bottom-up; PNG/screen rows top-down


def bright_box(rgba: np.ndarray) -> tuple[int, int, int, int]:
    rows, columns = np.nonzero(rgba[..., 0] > 128)
    return rows.min(), rows.max(), columns.min(), columns.max()


# ----------------------------------------------------------------------------- slots


@pytest.mark.parametrize(
    ("name", "slot", "laterality", "rule"),
    [
        ("LE_CC", "LE_CC", None, "node name"),
        ("P12_L_DM_CC", "LE_CC", "L", "CDD-CESM name"),
        ("P2_R_CM_MLO ", "DES_MLO", "R", "CDD-CESM name"),
        ("3: L CC Recombined", "DES_CC", "L", "node name"),
        ("RMLO LOW ENERGY", "LE_MLO", "R", "node name"),
        ("Subtracted right MLO", "DES_MLO", "R", "node name"),
    ],
)
def test_roles_from_names(name, slot, laterality, rule):
    guess = guess_role(name)
    assert guess.slot == slot
    assert (guess.laterality.value if guess.laterality else None) == laterality
    assert guess.rule == rule


@pytest.mark.parametrize(
    "name", ["SYNTHETIC DES CC (VirtualBiopsy)", "L CC HIGH ENERGY", "LE DES CC", "Volume"]
)
def test_names_that_are_no_input(name):
    assert guess_role(name).slot is None


def test_slots_assigned_from_names_and_attribute(scene):
    picture = marked_picture()
    le_cc = add_volume(picture, "P7_L_DM_CC")
    le_mlo = add_volume(picture, "2: LMLO low energy")
    des_cc = add_volume(picture, "Series 5")
    des_cc.SetAttribute(ROLE_ATTRIBUTE, "DES_CC")
    other_breast = add_volume(picture, "P7_R_CM_MLO")
    duplicate = add_volume(picture, "LE_CC copy")
    add_volume(picture, "SYNTHETIC DES MLO (VirtualBiopsy)")

    nodes = slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
    assignment = assign_slots(nodes)

    assert assignment.slots == {"LE_CC": le_cc, "LE_MLO": le_mlo, "DES_CC": des_cc, "DES_MLO": None}
    assert assignment.laterality == Laterality.L
    assert assignment.rules["DES_CC"] == f"attribute {ROLE_ATTRIBUTE}"
    assert any(other_breast.GetName() in p for p in assignment.problems)
    assert any(duplicate.GetName() in p and "already filled" in p for p in assignment.problems)


# ----------------------------------------------------------------------------- export


def test_export_writes_values_spacing_and_identity(scene, tmp_path):
    picture = marked_picture()
    le_cc = add_volume(picture, "LE_CC", spacing=(0.07, 0.1))
    identity = bridge.CaseIdentity("anon-1", "1.2.3.4", Laterality.R)

    written = bridge.export_case({"LE_CC": le_cc, "DES_CC": None}, tmp_path / "in", identity)

    assert sorted(written) == ["LE_CC", "case.json"]
    image = SimpleITK.ReadImage(str(written["LE_CC"]))
    assert image.GetDimension() == 2
    np.testing.assert_array_equal(SimpleITK.GetArrayFromImage(image), picture)
    assert image.GetSpacing() == pytest.approx((0.1, 0.07))  # ITK order: column, row
    assert image.GetDirection() == pytest.approx((1, 0, 0, 1))
    case = json.loads(written["case.json"].read_text())
    assert case == {"patient_id": "anon-1", "study_uid": "1.2.3.4", "laterality": "R"}
    assert [p.name for p in (tmp_path / "in").iterdir() if p.name.startswith(".")] == []


def test_export_unmirrors_a_node_made_with_identity_matrix(scene, tmp_path):
    """An identity IJK-to-RAS node is shown turned; the file holds what the view shows."""
    picture = marked_picture()
    mirrored_node = add_volume(picture, "LE_CC", ijk_to_ras=np.eye(4))
    shown_box = np.array(bright_box(render_red_view(scene, mirrored_node)))
    assert shown_box[3] > 40  # the marker is on the right of the view

    written = bridge.export_case(
        {"LE_CC": mirrored_node}, tmp_path / "in", bridge.CaseIdentity("a", "1", Laterality.L)
    )
    exported = SimpleITK.GetArrayFromImage(SimpleITK.ReadImage(str(written["LE_CC"])))
    np.testing.assert_array_equal(exported, picture[::-1, ::-1])
    exported_box = np.array(bright_box(np.stack([exported > 100] * 3, -1) * 255))
    assert np.abs(exported_box - shown_box).max() <= 1


def test_picture_directions_show_marker_top_left(scene, tmp_path):
    """A file we export and load back shows its top-left marker top-left in the Red view."""
    picture = marked_picture()
    node = add_volume(picture, "LE_CC")
    written = bridge.export_case(
        {"LE_CC": node}, tmp_path / "in", bridge.CaseIdentity("a", "1", Laterality.L)
    )
    loaded_picture, spacing = bridge.read_picture_nrrd(written["LE_CC"])
    loaded = bridge.add_picture_volume(scene, loaded_picture, spacing, "reloaded", None)

    top, bottom, left, right = bright_box(render_red_view(scene, loaded))
    assert top < 10 and left < 10
    assert bottom < 20 and right < 20


def test_export_refuses_bad_input(scene, tmp_path):
    identity = bridge.CaseIdentity("a", "1", Laterality.L)
    stack = slicer.util.addVolumeFromArray(np.zeros((3, 4, 5), np.float32), name="LE_CC")
    with pytest.raises(ImageError, match="LE_CC.*1 slice"):
        bridge.export_case({"LE_CC": stack}, tmp_path / "a", identity)
    with pytest.raises(CaseError, match="no input volume"):
        bridge.export_case({"LE_CC": None}, tmp_path / "b", identity)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "user.txt").write_text("keep me")
    with pytest.raises(CaseError, match="not empty"):
        bridge.export_case({"LE_CC": add_volume(marked_picture(), "x")}, tmp_path / "c", identity)
    assert (tmp_path / "c" / "user.txt").read_text() == "keep me"


def test_case_identity_needs_laterality(scene):
    node = add_volume(marked_picture(), "LE_CC")
    with pytest.raises(CaseError, match="laterality unknown"):
        bridge.case_identity(scene, {"LE_CC": node}, None)
    identity = bridge.case_identity(scene, {"LE_CC": node}, "L")
    assert identity.laterality == Laterality.L
    from VirtualBiopsyLib.images.identity import uid_problem

    assert uid_problem(identity.study_uid) is None  # the readers accept the stand-in UID
    assert bridge.case_identity(scene, {"LE_CC": node}, "L") == identity  # stable


def test_case_identity_reads_dicom_study(scene):
    node = add_volume(marked_picture(), "LE_CC")
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Patient")
    hierarchy.SetItemAttribute(patient, "DICOM.PatientID", "PID-42")
    study = hierarchy.CreateStudyItem(patient, "Study")
    hierarchy.SetItemAttribute(study, "DICOM.StudyInstanceUID", "1.2.840.99")
    hierarchy.CreateItem(study, node)  # the app's subject-hierarchy plugins do this

    identity = bridge.case_identity(scene, {"LE_CC": node}, "R")
    assert (identity.patient_id, identity.study_uid) == ("PID-42", "1.2.840.99")


# ----------------------------------------------------------------------------- import


def write_result_folder(folder: Path, shape=(40, 60), is_demo=True) -> Path:
    """A result folder as the predict command writes it (LE CC/MLO real, DES CC synthetic)."""
    folder.mkdir(parents=True)
    synthetic = np.zeros(shape, np.float32)
    synthetic[2:8, 3:9] = 0.9
    saliency = np.zeros(shape, np.float32)
    saliency[30:36, 50:56] = 1.0
    for name, array in (
        ("synthetic_DES_CC.nrrd", synthetic),
        ("saliency_LE_CC.nrrd", saliency),
        ("saliency_DES_CC.nrrd", saliency),
    ):
        image = SimpleITK.GetImageFromArray(array)
        image.SetSpacing((0.1, 0.1))
        SimpleITK.WriteImage(image, str(folder / name))
    folds = [0.7, 0.8, 0.9]
    result = {
        "format_version": 1,
        "notice": RESEARCH_USE_NOTICE,
        "case": {"key": "case-ab12-L", "patient_id": "anon", "study_uid": "1.2", "laterality": "L"},
        "model": {
            "name": "demo",
            "version": "0.1",
            "architecture": "demo",
            "sha256": "0" * 64,
            "is_demo": is_demo,
        },
        "inputs": {
            "LE_CC": {"source": "real", "path": "in/LE_CC.nrrd", "generated_from": None},
            "LE_MLO": {"source": "real", "path": "in/LE_MLO.nrrd", "generated_from": None},
            "DES_CC": {
                "source": "synthetic",
                "path": "synthetic_DES_CC.nrrd",
                "generated_from": "LE_CC",
            },
            "DES_MLO": {"source": "missing", "path": None, "generated_from": None},
        },
        "probabilities": {
            "images": {
                "LE_CC": {"mean": 0.8, "std": 0.08, "folds": folds},
                "LE_MLO": {"mean": 0.6, "std": 0.1, "folds": folds},
                "DES_CC": {"mean": 0.7, "std": 0.05, "folds": folds},
            },
            "modalities": {
                "LE": {"mean": 0.72, "std": 0.05, "folds": folds},
                "DES": {"mean": 0.7, "std": 0.05, "folds": folds},
            },
            "fused": {"mean": 0.71, "std": 0.04, "sem": 0.02, "folds": folds},
        },
        "label": "malignant",
        "threshold": 0.5,
        "outputs": {
            "synthetic_DES_CC": "synthetic_DES_CC.nrrd",
            "saliency_LE_CC": "saliency_LE_CC.nrrd",
            "saliency_DES_CC": "saliency_DES_CC.nrrd",
            "report": "report.png",
        },
        "warnings": ["DES_MLO missing"],
    }
    (folder / "result.json").write_text(json.dumps(result))
    return folder / "result.json"


def test_import_creates_marked_nodes_and_table(scene, tmp_path):
    le_cc = add_volume(marked_picture(), "P1_L_DM_CC")
    result_json = write_result_folder(tmp_path / "case")

    loaded = bridge.load_result(scene, result_json, {"LE_CC": le_cc})

    synthetic = loaded.synthetic["DES_CC"]
    assert synthetic.GetName() == "SYNTHETIC DES CC (VirtualBiopsy)"
    assert synthetic.GetAttribute("VirtualBiopsy.Synthetic") == "true"
    assert synthetic.GetAttribute("VirtualBiopsy.GeneratedFrom") == "LE_CC"
    assert SYNTHETIC_NOTICE in synthetic.GetDescription()
    assert guess_role(synthetic.GetName()).slot is None  # never picked as an input later
    assert assign_slots([synthetic]).present == []
    # the synthetic image lies on the LE CC grid: same geometry, same picture
    np.testing.assert_allclose(picture_from_node(synthetic)[0][2:8, 3:9], 0.9)
    assert synthetic.GetSpacing() == le_cc.GetSpacing()
    # shown on the generator's [0, 1] scale, not stretched by Slicer's automatic window
    display = synthetic.GetDisplayNode()
    assert not display.GetAutoWindowLevel()
    assert (display.GetWindow(), display.GetLevel()) == (1.0, 0.5)

    saliency = loaded.saliency["DES_CC"]
    assert saliency.GetName() == "Saliency SYNTHETIC DES CC (VirtualBiopsy)"
    assert loaded.saliency["LE_CC"].GetName() == "Saliency LE CC (VirtualBiopsy)"
    color = scene.GetNodeByID(saliency.GetDisplayNode().GetColorNodeID())
    assert color.GetName() == bridge.INFERNO_NAME
    rgba = [0.0] * 4
    color.GetColor(255, rgba)
    assert rgba[0] > 0.9 and rgba[2] < 0.7  # inferno ends in pale yellow
    color.GetColor(0, rgba)
    assert max(rgba[:3]) < 0.05  # and starts in black

    rows = {(r["Level"], r["Input"]): r for r in bridge.table_rows(loaded.table)}
    assert rows[("image", "LE_CC")]["Probability"] == pytest.approx(0.8)
    assert rows[("image", "DES_CC")]["Source"] == "synthetic"
    assert rows[("modality", "LE")]["Probability"] == pytest.approx(0.72)
    assert rows[("fused", "case")]["Std"] == pytest.approx(0.04)
    assert rows[("fused", "case")]["Folds"] == 3
    assert rows[("decision", "label")]["Note"] == "malignant (threshold 0.5)"
    assert rows[("decision", "threshold")]["Probability"] == pytest.approx(0.5)
    assert rows[("notice", "research use")]["Note"] == RESEARCH_USE_NOTICE
    assert rows[("notice", "synthetic")]["Note"] == SYNTHETIC_NOTICE
    assert rows[("notice", "demo model")]["Note"] == DEMO_MODEL_WARNING
    assert loaded.table.GetAttribute("VirtualBiopsy.Label") == "malignant"
    assert loaded.warnings == ["DES_MLO missing"]


def test_saliency_overlays_its_mammogram(scene, tmp_path):
    """The saliency map of a transposed input node lands on the same screen pixels."""
    picture = marked_picture()
    transposed = np.array([[0, 1, 0, 0], [-1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], float)
    # i runs down the screen (−A), j runs right (−R): the node array is the picture transposed
    le_cc = slicer.util.addVolumeFromArray(
        np.ascontiguousarray(picture.T)[np.newaxis],
        ijkToRAS=transposed * [[-1], [1], [1], [1]],
        name="LE_CC",
    )
    np.testing.assert_array_equal(picture_from_node(le_cc)[0], picture)
    saliency_picture = (picture > 100).astype(np.float32)
    folder = tmp_path / "case"
    write_result_folder(folder)
    image = SimpleITK.GetImageFromArray(saliency_picture)
    SimpleITK.WriteImage(image, str(folder / "saliency_LE_CC.nrrd"))

    loaded = bridge.load_result(scene, folder / "result.json", {"LE_CC": le_cc})

    overlay = loaded.saliency["LE_CC"]
    np.testing.assert_array_equal(picture_from_node(overlay)[0], saliency_picture)
    overlay_box = np.array(bright_box(render_red_view(scene, overlay)))
    marker_box = np.array(bright_box(render_red_view(scene, le_cc)))
    assert marker_box[0] < 10 and marker_box[2] < 10  # top-left, as in the picture
    assert np.abs(overlay_box - marker_box).max() <= 1  # interpolation blurs one pixel


def test_bad_result_json_names_file(scene, tmp_path):
    (tmp_path / "result.json").write_text('{"format_version": 1}')
    with pytest.raises(bridge.ResultFormatError, match="result.json lacks notice"):
        bridge.load_result(scene, tmp_path / "result.json")
    result_json = write_result_folder(tmp_path / "evil")
    result = json.loads(result_json.read_text())
    result["outputs"] = {"saliency_LE_CC": "../../etc/saliency_LE_CC.nrrd"}
    result_json.write_text(json.dumps(result))
    with pytest.raises(bridge.ResultFormatError, match="outside the folder"):
        bridge.load_result(scene, result_json)


def test_view_layers_and_study_placement(scene, tmp_path):
    picture = marked_picture()
    inputs = {"LE_CC": add_volume(picture, "LE_CC"), "LE_MLO": add_volume(picture, "LE_MLO")}
    loaded = bridge.load_result(scene, write_result_folder(tmp_path / "case"), inputs)
    composites = {}
    for view in bridge.VIEW_SLOTS:
        node = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
        node.SetLayoutName(view)
        composites[view] = node
    assert bridge.slice_composite_nodes(scene) == composites

    shown = bridge.setup_view_layers(
        composites, bridge.displayed_volumes(inputs, loaded), loaded.saliency
    )

    assert shown == {"Red": "LE_CC", "Slice4": "LE_MLO", "Green": "DES_CC"}
    red, slice4, green = composites["Red"], composites["Slice4"], composites["Green"]
    assert red.GetBackgroundVolumeID() == inputs["LE_CC"].GetID()
    assert red.GetForegroundVolumeID() == loaded.saliency["LE_CC"].GetID()
    assert red.GetForegroundOpacity() == pytest.approx(bridge.SALIENCY_OPACITY)
    assert slice4.GetForegroundVolumeID() is None and slice4.GetForegroundOpacity() == 0
    assert green.GetBackgroundVolumeID() == loaded.synthetic["DES_CC"].GetID()
    assert composites["Yellow"].GetBackgroundVolumeID() is None

    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    study = hierarchy.CreateStudyItem(hierarchy.GetSceneItemID(), "Study")
    hierarchy.CreateItem(study, inputs["LE_CC"])
    folder = bridge.place_in_study(scene, loaded.all_nodes(), inputs["LE_CC"], "Results")
    assert hierarchy.GetItemParent(folder) == study
    for node in loaded.all_nodes():
        assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == folder
