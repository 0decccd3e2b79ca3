"""DICOM exams as Slicer's DICOM module loads them: slots from the files' tags, the original
files handed to predict, multi-image series, and the same probabilities as the command line.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import slicer
import slicer.util
from slicer_dicom_loading import FileIndex, load_exam_like_slicer, load_series_like_slicer
from slicer_scene import fresh_scene

from VirtualBiopsyLib.errors import CaseError
from VirtualBiopsyLib.roles import Laterality
from VirtualBiopsyLib.slicer import bridge
from VirtualBiopsyLib.slicer.geometry import picture_from_node
from VirtualBiopsyLib.slicer.inputs import prepare_inputs
from VirtualBiopsyLib.slicer.logic import RunOptions, VirtualBiopsyLogic
from VirtualBiopsyLib.slicer.slots import assign_slots

LE = ["ORIGINAL", "PRIMARY", "", "LOW_ENERGY"]
DES = ["DERIVED", "PRIMARY", "", "RECOMBINED"]
HE = ["ORIGINAL", "PRIMARY", "", "HIGH_ENERGY"]


@pytest.fixture
def scene():
    with fresh_scene(slice_views=True) as scene:
        yield scene


@pytest.fixture
def vendor_exam(tmp_path, make_mammo_dicom) -> list[Path]:
    """One image per series; series descriptions say nothing about energy or view."""
    specs = [
        ("IM1", LE, "CC", 1),
        ("IM2", LE, "MLO", 2),
        ("IM3", DES, "CC", 3),
        ("IM4", DES, "MLO", 4),
        ("IM5", HE, "CC", 5),
    ]
    return [
        make_mammo_dicom(
            tmp_path / "exam" / f"{name}.dcm",
            ImageType=image_type,
            ViewPosition=view,
            ImageLaterality="R",
            SeriesNumber=number,
            SeriesDescription="Mammo",
        )
        for name, image_type, view, number in specs
    ]


def test_dicom_volumes_are_assigned_by_their_files_tags(scene, vendor_exam):
    nodes = load_exam_like_slicer(scene, vendor_exam)
    assert [n.GetName() for n in nodes] == [f"{i}: Mammo" for i in range(1, 6)]
    without_database = assign_slots(nodes)
    assert without_database.present == []  # the names say nothing

    assignment = assign_slots(nodes, database=FileIndex(vendor_exam))

    assert assignment.slots == {
        "LE_CC": nodes[0],
        "LE_MLO": nodes[1],
        "DES_CC": nodes[2],
        "DES_MLO": nodes[3],
    }
    assert assignment.laterality is Laterality.R
    assert assignment.files["DES_MLO"] == vendor_exam[3]
    rules = assignment.rules
    assert rules["LE_CC"] == "DICOM tags of IM1.dcm: ImageType[3]=LOW_ENERGY, ViewPosition"
    assert rules["DES_CC"] == "DICOM tags of IM3.dcm: ImageType[3]=RECOMBINED, ViewPosition"
    assert any("5: Mammo" in p and "high-energy" in p for p in assignment.problems)
    assert assignment.summary()[0] == (
        "LE_CC: 1: Mammo (DICOM tags of IM1.dcm: ImageType[3]=LOW_ENERGY, ViewPosition)"
    )


def test_role_attribute_still_overrides_the_tags(scene, vendor_exam):
    nodes = load_exam_like_slicer(scene, vendor_exam[:1])
    nodes[0].SetAttribute("VirtualBiopsy.Role", "LE_MLO")
    assignment = assign_slots(nodes, "R", FileIndex(vendor_exam))
    assert assignment.slots["LE_MLO"] is nodes[0]
    assert assignment.rules["LE_MLO"] == "attribute VirtualBiopsy.Role"


def test_original_files_are_handed_to_predict(scene, vendor_exam, tmp_path):
    nodes = load_exam_like_slicer(scene, vendor_exam[:4])
    database = FileIndex(vendor_exam)
    slots = assign_slots(nodes, database=database).slots
    nrrd_volume = bridge.add_picture_volume(
        scene, np.ones((16, 12), np.float32), (0.1, 0.1), "x", None
    )
    slots["DES_MLO"] = nrrd_volume  # a volume from elsewhere: exported, same case identity

    prepared = prepare_inputs(scene, slots, tmp_path / "in", None, database)

    assert prepared.dicom == {
        "LE_CC": vendor_exam[0],
        "LE_MLO": vendor_exam[1],
        "DES_CC": vendor_exam[2],
    }
    assert sorted(prepared.exported) == ["DES_MLO"]
    assert prepared.paths == [*vendor_exam[:3], tmp_path / "in"]
    identity = prepared.identity
    assert (identity.patient_id, identity.laterality) == ("TESTPAT001", Laterality.R)
    assert prepared.display["LE_CC"] is nodes[0]


def test_file_of_another_breast_is_a_case_error(scene, vendor_exam, tmp_path):
    nodes = load_exam_like_slicer(scene, vendor_exam[:1])
    with pytest.raises(CaseError, match="R breast, not L"):
        prepare_inputs(scene, {"LE_CC": nodes[0]}, tmp_path / "in", "L", FileIndex(vendor_exam))


@pytest.fixture(scope="module")
def phantom_exam(tmp_path_factory) -> list[Path]:
    """A one-patient small phantom in DICOM: LE, HE, DES series of two images (CC, MLO)."""
    from VirtualBiopsyLib.phantom import generate_cohort

    manifest = generate_cohort(tmp_path_factory.mktemp("phantom") / "cohort", 1, seed=11)
    return sorted(manifest.parent.rglob("*.dcm"))


def test_multi_image_series_fills_one_slot_per_file(scene, phantom_exam, tmp_path):
    nodes = load_exam_like_slicer(scene, phantom_exam)
    stacked = [n for n in nodes if n.GetImageData().GetDimensions()[2] == 2]
    assert len(stacked) == 3  # LE, HE, DES: two images each, stacked by Slicer
    database = FileIndex(phantom_exam)

    assignment = assign_slots(nodes, database=database)

    assert assignment.present == ["LE_CC", "LE_MLO", "DES_CC", "DES_MLO"]
    assert assignment.slots["LE_CC"] is assignment.slots["LE_MLO"]  # one series, two files
    assert assignment.files["LE_CC"] != assignment.files["LE_MLO"]
    prepared = prepare_inputs(scene, assignment.slots, tmp_path / "in", None, database)
    assert prepared.exported == {}
    assert sorted(prepared.dicom.values()) == sorted(assignment.files.values())
    split = prepared.display["LE_MLO"]
    assert split.GetImageData().GetDimensions()[2] == 1  # shown through a one-image volume
    assert (
        split.GetAttribute("DICOM.instanceUIDs")
        in assignment.slots["LE_MLO"].GetAttribute("DICOM.instanceUIDs").split()
    )
    picture, _ = picture_from_node(split)
    assert picture.shape == (356, 299) and picture.min() >= 0.0 and picture.max() <= 1.0


def test_stacked_series_without_a_file_for_the_slot_is_refused(scene, phantom_exam, tmp_path):
    nodes = load_exam_like_slicer(scene, phantom_exam)
    le_series = next(n for n in nodes if n.GetName().startswith("1:"))
    with pytest.raises(CaseError, match="holds 2 images and none of them is DES_CC"):
        prepare_inputs(scene, {"DES_CC": le_series}, tmp_path / "in", None, FileIndex(phantom_exam))


def _probabilities(result: dict) -> dict[str, float]:
    probabilities = result["probabilities"]
    found = {f"image {k}": v["mean"] for k, v in probabilities["images"].items()}
    found |= {f"modality {k}": v["mean"] for k, v in probabilities["modalities"].items()}
    found["fused"] = probabilities["fused"]["mean"]
    return found


@pytest.mark.slow
def test_slicer_path_and_command_line_give_the_same_probabilities(scene, phantom_exam, tmp_path):
    """One exam, the committed demo model: Slicer's DICOM-loaded volumes vs the CLI's files."""
    import json

    from VirtualBiopsyLib.inference.runner import predict_paths

    usable = [p for p in phantom_exam if not p.name.endswith(("2.dcm", "5.dcm"))]  # no HE
    cli = predict_paths(usable, tmp_path / "cli")
    (cli_result_file,) = cli.result_files
    cli_result = json.loads(Path(cli_result_file).read_text())

    nodes = load_exam_like_slicer(scene, phantom_exam)
    logic = VirtualBiopsyLogic(
        scene, work_root=tmp_path / "work", dicom_database=FileIndex(phantom_exam)
    )
    assignment = logic.assign_slots()
    (run,) = logic.run(
        assignment.slots,
        RunOptions(laterality=assignment.laterality, python=sys.executable),
        timeout=300,
    )

    assert run.nodes.result["case"]["key"] == cli_result["case"]["key"]
    slicer_probabilities = _probabilities(run.nodes.result)
    assert slicer_probabilities.keys() == _probabilities(cli_result).keys()
    for name, value in _probabilities(cli_result).items():
        assert slicer_probabilities[name] == pytest.approx(value, abs=1e-6), name
    assert run.nodes.result["label"] == cli_result["label"]
    assert run.shown == {"Red": "LE_CC", "Slice4": "LE_MLO", "Green": "DES_CC", "Yellow": "DES_MLO"}
    assert len(nodes) == 3  # LE, HE and DES series, two images each
    assert list((tmp_path / "work").iterdir()) == []  # the run's folder is removed


def test_single_image_series_is_one_slice_and_used_directly(scene, vendor_exam, tmp_path):
    node = load_series_like_slicer(scene, vendor_exam[:1])
    assert slicer.util.arrayFromVolume(node).shape == (1, 16, 12)
    prepared = prepare_inputs(scene, {"LE_CC": node}, tmp_path / "in", None, FileIndex(vendor_exam))
    assert prepared.paths == [vendor_exam[0]] and prepared.display["LE_CC"] is node
