"""Grouping images into cases: slots, missing images, duplicates and conflicts."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from VirtualBiopsyLib.images.cases import Case, group_cases
from VirtualBiopsyLib.images.identity import derived_uid
from VirtualBiopsyLib.images.mammogram import ImageInfo
from VirtualBiopsyLib.images.readers import read_info
from VirtualBiopsyLib.roles import SLOTS, Laterality, Modality, View

STUDY = "1.2.3.4"


def image(
    name: str,
    slot: str | None,
    laterality: str | None = "L",
    patient: str = "PAT1",
    study: str = STUDY,
    acquisition: str | None = None,
) -> ImageInfo:
    """A header-level image with the given slot (``None`` parts for unknown roles)."""
    modality, view = slot.split("_") if slot else (None, None)
    return ImageInfo(
        path=Path("/exam") / name,
        format="dicom",
        modality=Modality(modality) if modality else None,
        view=View(view) if view else None,
        laterality=Laterality(laterality) if laterality else None,
        patient_id=patient,
        study_uid=study,
        acquisition=acquisition,
    )


def full_breast(laterality: str = "L", **identity: str) -> list[ImageInfo]:
    return [image(f"{laterality}_{slot}.dcm", slot, laterality, **identity) for slot in SLOTS]


def test_complete_case_fills_four_slots_without_problems():
    infos = full_breast()
    [case] = group_cases(infos)
    assert [case.slots[slot] for slot in SLOTS] == infos
    assert case.problems == []
    assert (case.patient_id, case.study_uid, case.laterality) == ("PAT1", STUDY, Laterality.L)


def test_case_key_is_a_pseudonym_of_patient_and_study():
    [case] = group_cases(full_breast(patient="PAT1"))
    digest = hashlib.sha256(f"PAT1|{STUDY}".encode()).hexdigest()[:10]
    assert case.key == f"case-{digest}-L"
    assert "PAT1" not in case.key
    assert re.fullmatch(r"case-[0-9a-f]{10}-[LR]", case.key)


def test_each_breast_and_each_patient_is_its_own_case():
    infos = full_breast("L") + full_breast("R") + full_breast("L", patient="PAT2")
    cases = group_cases(infos)
    identities = {(case.patient_id, case.laterality) for case in cases}
    assert identities == {("PAT1", Laterality.L), ("PAT1", Laterality.R), ("PAT2", Laterality.L)}
    assert len({case.key for case in cases}) == 3
    assert all(case.problems == [] for case in cases)


def test_missing_slots_are_listed():
    [case] = group_cases([image("a.dcm", "LE_CC"), image("b.dcm", "LE_MLO")])
    assert case.slots["DES_CC"] is None and case.slots["DES_MLO"] is None
    assert case.missing_slots == ["DES_CC", "DES_MLO"]
    assert case.problems == ["missing DES_CC, DES_MLO"]


def test_duplicates_keep_the_earliest_acquisition():
    late = image("late.dcm", "DES_CC", acquisition="20240102103000.000000")
    early = image("early.dcm", "DES_CC", acquisition="20240102101500.000000")
    undated = image("undated.dcm", "DES_CC")
    [case] = group_cases([late, undated, early, *full_breast()[:2]])
    assert case.slots["DES_CC"] is early
    [duplicate] = [p for p in case.problems if p.startswith("duplicate")]
    assert "kept early.dcm" in duplicate and "earliest" in duplicate
    assert "late.dcm" in duplicate and "undated.dcm" in duplicate


def test_duplicates_with_one_file_name_are_named_by_path():
    """IM0001 in two series folders: "kept IM0001, ignored IM0001" would say nothing."""
    early = image("series1/IM0001", "DES_CC", acquisition="20240102101500.000000")
    late = image("series2/IM0001", "DES_CC", acquisition="20240102103000.000000")
    [case] = group_cases([late, early, *full_breast()[:2]])
    [duplicate] = [p for p in case.problems if p.startswith("duplicate")]
    assert duplicate.startswith("duplicate DES_CC: kept /exam/series1/IM0001 (earliest")
    assert duplicate.endswith("ignored /exam/series2/IM0001")


def test_image_with_unknown_view_is_a_conflict_not_a_slot():
    unknown_view = image("lateral.dcm", None)
    unknown_view.modality = Modality.LE
    [case] = group_cases([*full_breast(), unknown_view])
    assert unknown_view not in case.slots.values()
    assert case.problems == ["unknown view: lateral.dcm not used"]


def test_image_with_unknown_laterality_is_reported_on_its_study():
    stray = image("stray.dcm", "LE_CC", laterality=None)
    cases = group_cases([*full_breast("L"), *full_breast("R"), stray])
    assert len(cases) == 2
    for case in cases:
        assert case.problems == ["unknown laterality: stray.dcm not used"]
        assert stray not in case.slots.values()


def test_image_with_unknown_laterality_alone_makes_a_case_that_says_so():
    [case] = group_cases([image("stray.dcm", "LE_CC", laterality=None)])
    assert case.laterality is None and case.key.endswith("-U")
    assert case.problems == ["unknown laterality: stray.dcm not used"]


def test_des_in_another_study_is_reported_on_both_cases():
    le_study = [image("le_cc.dcm", "LE_CC"), image("le_mlo.dcm", "LE_MLO")]
    des_study = [image("des_cc.dcm", "DES_CC", study="9.9.9")]
    cases = group_cases(le_study + des_study)
    assert len(cases) == 2
    by_study: dict[str | None, Case] = {case.study_uid: case for case in cases}
    le_case, des_case = by_study[STUDY], by_study["9.9.9"]
    assert f"DES images of this breast are in another study ({des_case.key}); not combined" in (
        le_case.problems
    )
    assert any(
        p.startswith("LE images of this breast are in another study") for p in des_case.problems
    )


def test_derived_uid_is_deterministic_and_valid():
    uid = derived_uid("CDD-CESM", "P2")
    assert uid == derived_uid("CDD-CESM", "P2") != derived_uid("CDD-CESM", "P3")
    assert re.fullmatch(r"2\.25\.[1-9][0-9]*", uid) and len(uid) <= 64


def test_early_and_late_phase_dicoms_group_into_one_case(make_mammo_dicom, tmp_path):
    slots = {
        "le_cc": dict(ImageType=["ORIGINAL", "PRIMARY", "", "LOW_ENERGY"], ViewPosition="CC"),
        "le_mlo": dict(ImageType=["ORIGINAL", "PRIMARY", "", "LOW_ENERGY"], ViewPosition="MLO"),
        "des_cc": dict(ImageType=["DERIVED", "PRIMARY", "", "RECOMBINED"], ViewPosition="CC"),
        "des_mlo": dict(ImageType=["DERIVED", "PRIMARY", "", "RECOMBINED"], ViewPosition="MLO"),
    }
    paths = [make_mammo_dicom(tmp_path / f"{name}.dcm", **tags) for name, tags in slots.items()]
    late = make_mammo_dicom(
        tmp_path / "des_cc_late.dcm",
        AcquisitionDateTime="20240102102000",
        **slots["des_cc"],
    )
    [case] = group_cases(read_info(path) for path in [late, *paths])
    assert [case.slots[slot].path for slot in SLOTS] == paths
    assert len(case.problems) == 1 and "ignored des_cc_late.dcm" in case.problems[0]
