"""The phantom exam offered through Slicer's Sample Data module (generated, never downloaded)."""

from __future__ import annotations

import slicer

from VirtualBiopsyLib.roles import Laterality
from VirtualBiopsyLib.slicer import sample_data
from VirtualBiopsyLib.slicer.geometry import picture_from_node
from VirtualBiopsyLib.slicer.slots import assign_slots

#: Parameters of SampleDataLogic.registerCustomSampleDataSource in Slicer v5.12.3
#: (Modules/Scripted/SampleData/SampleData.py lines 553-558).
REGISTER_PARAMETERS = {
    "category",
    "sampleName",
    "uris",
    "fileNames",
    "nodeNames",
    "customDownloader",
    "thumbnailFileName",
    "loadFileTypes",
    "loadFiles",
    "loadFileProperties",
    "checksums",
    "loadFileType",
}


def test_registration_arguments_fit_slicers_sample_data_api():
    arguments = sample_data.sample_data_source_arguments(print, "icon.png")
    assert set(arguments) <= REGISTER_PARAMETERS
    # SampleDataSource requires equally long lists; none means "no download"
    lists = ("uris", "fileNames", "nodeNames")
    assert [len(arguments[name]) for name in lists] == [0, 0, 0]
    assert arguments["customDownloader"] is print


def test_sample_exam_loads_four_marked_slots(tmp_path):
    scene = slicer.vtkMRMLScene()
    color_logic = slicer.vtkMRMLColorLogic()
    color_logic.SetMRMLScene(scene)
    nodes = sample_data.load_sample_exam(scene, tmp_path / "sample")
    assert sorted(nodes) == ["DES_CC", "DES_MLO", "LE_CC", "LE_MLO"]
    for slot, node in nodes.items():
        assert node.GetName().startswith("SYNTHETIC PHANTOM")
        assert node.GetName().endswith(slot.replace("_", " "))
        picture, _ = picture_from_node(node)
        assert float(picture.min()) >= 0.0 and float(picture.max()) <= 1.0
    assignment = assign_slots(list(nodes.values()))
    assert assignment.slots == nodes
    assert assignment.laterality in (Laterality.L, Laterality.R)
    manifest = (tmp_path / "sample" / "manifest.csv").read_text()
    assert "synthetic" in manifest.splitlines()[0]
    # a second click reuses the files
    modified = (tmp_path / "sample" / "manifest.csv").stat().st_mtime_ns
    again = sample_data.write_sample_exam(tmp_path / "sample")
    assert len(again) == 4  # the high-energy images are left out
    assert (tmp_path / "sample" / "manifest.csv").stat().st_mtime_ns == modified
    color_logic.SetMRMLScene(None)
