"""The 2×2 view as Slicer lays it out: slot per view, fitting, Slicer's Inferno table.

The layout description comes from slicer-core's own vtkMRMLLayoutLogic (the C++ that the
application uses), so the mapping is checked against Slicer, not against our notes.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
import slicer
import slicer.util
from slicer_scene import fresh_scene
from test_slicer_bridge import add_volume, marked_picture

from VirtualBiopsyLib.errors import ImageError
from VirtualBiopsyLib.roles import Laterality
from VirtualBiopsyLib.slicer import bridge


@pytest.fixture
def scene():
    with fresh_scene() as scene:
        yield scene


def two_over_two_rows(scene) -> list[list[str]]:
    """View names row by row of Slicer's SlicerLayoutTwoOverTwoView, from vtkMRMLLayoutLogic."""
    layout_logic = slicer.vtkMRMLLayoutLogic()
    layout_logic.SetMRMLScene(scene)
    layout_node = layout_logic.GetLayoutNode()
    layout_node.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutTwoOverTwoView)
    root = ElementTree.fromstring(layout_node.GetCurrentLayoutDescription())
    assert root.get("type") == "vertical"
    rows = []
    for row in root.findall("./item/layout"):
        assert row.get("type") == "horizontal"
        rows.append([view.get("singletontag") for view in row.findall("./item/view")])
    layout_logic.SetMRMLScene(None)
    return rows


def test_slots_sit_where_slicer_puts_their_views(scene):
    rows = two_over_two_rows(scene)
    assert rows == [["Red", "Slice4"], ["Green", "Yellow"]]  # as vtkMRMLLayoutLogic.cxx says
    slots = [[bridge.VIEW_SLOTS[view] for view in row] for row in rows]
    assert slots == [["LE_CC", "LE_MLO"], ["DES_CC", "DES_MLO"]]
    for row_index, row in enumerate(rows):
        for column_index, view in enumerate(row):
            assert bridge.VIEW_POSITIONS[view] == (row_index, column_index)


def test_every_view_is_fitted_after_its_layers_are_set(scene):
    """Setting layers leaves the field of view alone; the fitter shows the whole image."""
    application_logic = slicer.vtkMRMLApplicationLogic()
    application_logic.SetMRMLScene(scene)
    logics = {}
    for view in bridge.VIEW_SLOTS:
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLScene(scene)
        node = logic.AddSliceNode(view)
        node.SetOrientationToAxial()
        node.SetDimensions(200, 200, 1)
        logics[view] = logic
    big = add_volume(marked_picture(400, 300), "LE_CC", spacing=(1.0, 1.0))
    small = add_volume(marked_picture(40, 30), "LE_MLO", spacing=(0.1, 0.1))
    before = {v: logics[v].GetSliceNode().GetFieldOfView()[1] for v in logics}

    shown = bridge.setup_view_layers(
        bridge.slice_composite_nodes(scene),
        {"LE_CC": big, "LE_MLO": small},
        fit=bridge.slice_logic_fitter(logics),
    )

    assert shown == {"Red": "LE_CC", "Slice4": "LE_MLO"}
    red_height = logics["Red"].GetSliceNode().GetFieldOfView()[1]
    slice4_height = logics["Slice4"].GetSliceNode().GetFieldOfView()[1]
    assert red_height == pytest.approx(400.0, rel=0.05)  # 400 rows of 1 mm
    assert slice4_height == pytest.approx(4.0, rel=0.05)  # 40 rows of 0.1 mm
    assert logics["Green"].GetSliceNode().GetFieldOfView()[1] == before["Green"]  # not shown
    for logic in logics.values():
        logic.SetMRMLScene(None)
    application_logic.SetMRMLScene(None)


def test_slicers_own_inferno_table_is_used_when_present(scene):
    assert bridge.inferno_color_node(scene).GetName() == bridge.INFERNO_NAME  # slicer-core
    builtin = slicer.vtkMRMLColorTableNode()
    builtin.SetSingletonTag("FileInferno.txt")  # how vtkMRMLColorLogic adds file tables
    builtin.SetName("Inferno")
    builtin.SetTypeToUser()
    builtin.SetNumberOfColors(256)
    scene.AddNode(builtin)
    assert builtin.GetID() == bridge.SLICER_INFERNO_ID
    assert bridge.inferno_color_node(scene) is builtin


def test_a_stacked_volume_is_refused_with_a_clear_message(scene, tmp_path):
    stack = slicer.util.addVolumeFromArray(np.zeros((2, 8, 6), np.uint16), name="1: LE series")
    identity = bridge.CaseIdentity("a", "1", Laterality.L)
    with pytest.raises(ImageError, match="stacked volume; load it from Slicer's DICOM database"):
        bridge.export_case({"LE_CC": stack}, tmp_path / "in", identity)
