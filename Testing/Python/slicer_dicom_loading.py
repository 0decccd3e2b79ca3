"""Volumes as Slicer's DICOM module loads them, built under slicer-core from real files.

Slicer's DICOMScalarVolumePlugin reads the files of a series into one volume of modality
values (Rescale Slope/Intercept applied, no VOI LUT, no MONOCHROME1 inversion), names it
"<SeriesNumber>: <SeriesDescription>" (Modules/Scripted/DICOMLib/DICOMPlugin.py,
``defaultSeriesNodeName``, v5.12.3 lines 281-295), writes the SOP Instance UIDs of its
slices in slice order into ``DICOM.instanceUIDs`` (DICOMScalarVolumePlugin.py, v5.12.3
lines 503-509) and puts it under patient and study items of the subject hierarchy.
:class:`FileIndex` answers ``fileForInstance`` as ``slicer.dicomDatabase`` does, from an
index of real files (it is our :class:`DicomDatabase` implementation, not a fake Slicer).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pydicom
import slicer
import slicer.util


class FileIndex:
    """SOP Instance UID → file, the lookup ``slicer.dicomDatabase.fileForInstance`` does."""

    def __init__(self, files: Iterable[Path]) -> None:
        self.files: dict[str, str] = {}
        for path in files:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            self.files[str(ds.SOPInstanceUID)] = str(path)

    def fileForInstance(self, sopInstanceUID: str) -> str:  # noqa: N802, N803 - CTK's names
        return self.files.get(sopInstanceUID, "")


def series_of(files: Iterable[Path]) -> list[list[Path]]:
    """Files grouped by Series Instance UID, in series-number then file order."""
    groups: dict[str, list[Path]] = defaultdict(list)
    numbers: dict[str, int] = {}
    for path in sorted(files):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        groups[str(ds.SeriesInstanceUID)].append(path)
        numbers[str(ds.SeriesInstanceUID)] = int(ds.get("SeriesNumber", 0) or 0)
    return [groups[uid] for uid in sorted(groups, key=lambda uid: numbers[uid])]


def load_series_like_slicer(scene, files: list[Path]):
    """One scalar volume of the series' files, as DICOMScalarVolumePlugin leaves it."""
    datasets = [pydicom.dcmread(path) for path in files]
    first = datasets[0]
    slices = []
    for ds in datasets:
        values = ds.pixel_array.astype(np.float64)
        values = values * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
        slices.append(values)
    stack = np.stack(slices).astype(np.float32)
    spacing = [float(v) for v in first.get("PixelSpacing") or first.get("ImagerPixelSpacing")]
    ijk_to_ras = np.diag([-spacing[1], -spacing[0], 1.0, 1.0])  # ITK's LPS identity in RAS
    description = str(first.get("SeriesDescription", "")) or "Unnamed Series"
    number = str(first.get("SeriesNumber", ""))
    name = f"{number}: {description}" if number else description
    slicer.mrmlScene = scene
    node = slicer.util.addVolumeFromArray(stack, ijkToRAS=ijk_to_ras, name=name)
    node.SetAttribute("DICOM.instanceUIDs", " ".join(str(ds.SOPInstanceUID) for ds in datasets))
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient = _child(hierarchy, hierarchy.GetSceneItemID(), "Patient", str(first.PatientID))
    hierarchy.SetItemAttribute(patient, "DICOM.PatientID", str(first.PatientID))
    study = _child(hierarchy, patient, "Study", str(first.StudyInstanceUID))
    hierarchy.SetItemAttribute(study, "DICOM.StudyInstanceUID", str(first.StudyInstanceUID))
    hierarchy.CreateItem(study, node)
    return node


def _child(hierarchy, parent: int, level: str, uid: str) -> int:
    import vtk

    children = vtk.vtkIdList()
    hierarchy.GetItemChildren(parent, children)
    for index in range(children.GetNumberOfIds()):
        item = children.GetId(index)
        if hierarchy.GetItemUID(item, "DICOM") == uid:
            return item
    if level == "Patient":
        item = hierarchy.CreateSubjectItem(parent, "Anonymous")
    else:
        item = hierarchy.CreateStudyItem(parent, "Study")
    hierarchy.SetItemUID(item, "DICOM", uid)
    return item


def load_exam_like_slicer(scene, files: Iterable[Path]) -> list:
    """Every series of an exam, each as one volume."""
    return [load_series_like_slicer(scene, series) for series in series_of(files)]
