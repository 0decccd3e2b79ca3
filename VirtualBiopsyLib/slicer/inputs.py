"""What the predict process reads for the chosen volumes: original DICOM files first.

A volume that came from Slicer's DICOM module is handed over as its original file, so the
Slicer path and the command line see identical pixels (modality LUT, VOI LUT window,
MONOCHROME1 inversion, all applied by the library's reader). Slicer's DICOM volume holds
raw modality values with none of that, so exporting it would make the percentile
stretch run instead of the DICOM window and the same exam give other probabilities.
Only volumes without a usable file (drag-and-dropped NRRD, PNG, edited volumes) are
exported as ``<slot>.nrrd`` with a ``case.json`` that carries the DICOM files' patient,
study and breast, so ``predict`` groups everything into one case.

A series of several images (one stacked volume in Slicer) gives each slot the file whose
tags name that slot; it is shown through a one-image volume read from that file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from VirtualBiopsyLib.errors import CaseError
from VirtualBiopsyLib.roles import SLOTS, Laterality
from VirtualBiopsyLib.slicer import bridge
from VirtualBiopsyLib.slicer.slots import (
    INSTANCE_UIDS_ATTRIBUTE,
    RESULT_ATTRIBUTE,
    ROLE_ATTRIBUTE,
    DicomDatabase,
    DicomFile,
    dicom_files,
)


@dataclass
class PreparedInputs:
    """The hand-over to ``predict`` and the nodes that show each slot."""

    paths: list[Path]  # predict's PATH arguments: DICOM files, then the export folder
    identity: bridge.CaseIdentity
    dicom: dict[str, Path] = field(default_factory=dict)  # slot → original DICOM file
    exported: dict[str, Path] = field(default_factory=dict)  # slot → exported NRRD
    display: dict[str, Any] = field(default_factory=dict)  # slot → node shown in its view
    notes: list[str] = field(default_factory=list)


def _number_of_slices(node: Any) -> int:
    image = node.GetImageData()
    return image.GetDimensions()[2] if image is not None else 0


def _split_volume(scene: Any, node: Any, slot: str, file: DicomFile) -> Any:
    """A one-image volume of ``file`` (as the reader sees it), for a stacked series."""
    from VirtualBiopsyLib.images.readers import read_image

    image = read_image(file.info)
    name = f"{slot} of {node.GetName()}"
    split = bridge.add_picture_volume(scene, image.pixels, image.spacing, name, None)
    split.RemoveAttribute(RESULT_ATTRIBUTE)  # an input image, not a result
    split.SetAttribute(ROLE_ATTRIBUTE, slot)
    split.SetAttribute(INSTANCE_UIDS_ATTRIBUTE, file.uid)
    display = split.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, 1.0)  # the reader's pixels are windowed to [0, 1]
    bridge.place_beside(scene, split, node)
    return split


def _file_for(slot: str, node: Any, files: list[DicomFile]) -> DicomFile | None:
    """The file of ``node`` whose tags say it is ``slot``; CaseError when a stack has none."""
    matching = [f for f in files if f.slot == slot]
    if matching:
        return matching[0]
    if _number_of_slices(node) > 1:
        roles = ", ".join(
            f"{f.path.name if f.path else f.uid}: {f.slot or f.rule()}" for f in files
        )
        raise CaseError(
            f"{node.GetName()}: this series holds {_number_of_slices(node)} images and "
            f"none of them is {slot} by its DICOM tags ({roles}); choose another volume"
        )
    return None


def prepare_inputs(
    scene: Any,
    volumes: Mapping[str, Any],
    folder: Path | str,
    laterality: Laterality | str | None,
    database: DicomDatabase | None = None,
) -> PreparedInputs:
    """Choose, per slot, the original DICOM file or an NRRD export; write the exports.

    Raises :class:`CaseError` (naming the volume) for what cannot be used: a stacked
    series without a file for the slot, DICOM files of another breast or patient.
    """
    folder = Path(folder)
    chosen: dict[str, DicomFile] = {}
    to_export: dict[str, Any] = {}
    display: dict[str, Any] = {}
    notes: list[str] = []
    for slot in SLOTS:
        node = volumes.get(slot)
        if node is None:
            continue
        files = dicom_files(node, database)
        file = _file_for(slot, node, files) if files else None
        if file is not None:
            chosen[slot] = file
            stacked = _number_of_slices(node) > 1
            display[slot] = _split_volume(scene, node, slot, file) if stacked else node
            continue
        if files:
            said = files[0].slot or files[0].rule()
            notes.append(
                f"{slot}: {node.GetName()}'s DICOM tags say {said}; its voxels are exported "
                "instead (contrast from percentiles, not the DICOM window)"
            )
        to_export[slot] = node
        display[slot] = node
    if not chosen and not to_export:
        raise CaseError("no input volume selected: choose at least one LE or DES image")
    identity = _identity(scene, chosen, to_export, laterality)
    exported: dict[str, Path] = {}
    if to_export:
        written = bridge.export_case(to_export, folder, identity)
        exported = {slot: path for slot, path in written.items() if slot in SLOTS}
    paths = [file.path for file in chosen.values()]
    if exported:
        paths.append(folder)
    return PreparedInputs(
        paths=paths,
        identity=identity,
        dicom={slot: file.path for slot, file in chosen.items()},
        exported=exported,
        display=display,
        notes=notes,
    )


def _identity(
    scene: Any,
    chosen: Mapping[str, DicomFile],
    to_export: Mapping[str, Any],
    laterality: Laterality | str | None,
) -> bridge.CaseIdentity:
    """Patient, study and breast: from the DICOM files when there are any."""
    infos = [file.info for file in chosen.values()]
    if not infos:
        return bridge.case_identity(scene, to_export, laterality)
    first = infos[0]
    for slot, file in chosen.items():
        info = file.info
        if (info.patient_id, info.study_uid) != (first.patient_id, first.study_uid):
            raise CaseError(f"{slot}: {file.path.name} belongs to another patient or study")
    lateralities = {info.laterality for info in infos if info.laterality is not None}
    wanted = Laterality(laterality) if laterality is not None else None
    if wanted is not None and lateralities - {wanted}:
        other = sorted(lat.value for lat in lateralities - {wanted})
        raise CaseError(f"the DICOM files are of the {', '.join(other)} breast, not {wanted.value}")
    side = wanted or (next(iter(lateralities)) if len(lateralities) == 1 else None)
    if side is None:
        raise CaseError(
            "laterality unknown or mixed in the DICOM files: choose L or R in the panel"
        )
    return bridge.CaseIdentity(
        patient_id=first.patient_id or "unknown",
        study_uid=first.study_uid or "unknown",
        laterality=side,
    )
