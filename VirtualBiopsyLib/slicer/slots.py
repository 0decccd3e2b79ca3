"""Which loaded volume fills which slot (LE_CC, LE_MLO, DES_CC, DES_MLO) of a case.

Rules, first match wins: the ``VirtualBiopsy.Role`` node attribute set by the user or by
this module; then, for a volume loaded with Slicer's DICOM module, the tags of its files
classified by the library's own DICOM role rules (Image Type, View Position, Image
Laterality, …: :func:`VirtualBiopsyLib.images.readers.read_info`); then the node name,
which covers our slot file names (``LE_CC``), CDD-CESM names (``P12_L_DM_CC``) and series
descriptions (``3: L CC Recombined``). Slicer keeps almost no tags on a DICOM volume: it
names it "<SeriesNumber>: <SeriesDescription>" (Modules/Scripted/DICOMLib/DICOMPlugin.py,
``defaultSeriesNodeName``, v5.12.3 line 294) and stores the SOP Instance UIDs of its
slices, in slice order, in the ``DICOM.instanceUIDs`` attribute
(Modules/Scripted/DICOMPlugins/DICOMScalarVolumePlugin.py, v5.12.3 lines 503-509); the
files come from ``slicer.dicomDatabase.fileForInstance(uid)`` (CTK's ctkDICOMDatabase;
Docs/developer_guide/script_repository/dicom.md shows the same lookup). The database is
passed in as a :class:`DicomDatabase`, so slicer-core tests give an index of real files.
A series of several images (Slicer stacks them into one volume) fills one slot per file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from VirtualBiopsyLib.errors import ImageError
from VirtualBiopsyLib.images.mammogram import ImageInfo
from VirtualBiopsyLib.roles import SLOTS, Laterality, Modality, View, slot_name

ROLE_ATTRIBUTE = "VirtualBiopsy.Role"
LATERALITY_ATTRIBUTE = "VirtualBiopsy.Laterality"
SYNTHETIC_ATTRIBUTE = "VirtualBiopsy.Synthetic"
RESULT_ATTRIBUTE = "VirtualBiopsy.Result"
#: Set by Slicer's DICOMScalarVolumePlugin: SOP Instance UIDs of the slices, space-separated.
INSTANCE_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"


class DicomDatabase(Protocol):
    """The part of ``slicer.dicomDatabase`` (ctkDICOMDatabase) the module uses."""

    def fileForInstance(self, sopInstanceUID: str) -> str:  # noqa: N802, N803 - CTK's names
        """Path of the file holding this SOP instance; ``""`` when unknown."""


@dataclass(frozen=True)
class DicomFile:
    """One file behind a DICOM-loaded volume: its path and role, or why it is not usable."""

    uid: str
    path: Path | None
    info: ImageInfo | None = None
    problem: str | None = None

    @property
    def slot(self) -> str | None:
        return self.info.slot if self.info is not None else None

    def rule(self) -> str:
        """Which tags decided the role, e.g. ``ImageType[3]=LOW_ENERGY, ViewPosition``."""
        if self.info is None:
            return self.problem or "unknown"
        rules = self.info.rules
        return f"DICOM tags of {self.path.name}: {rules.get('modality')}, {rules.get('view')}"


def instance_uids(node: Any) -> list[str]:
    """SOP Instance UIDs of a DICOM-loaded volume, in slice order (none for other nodes)."""
    return (node.GetAttribute(INSTANCE_UIDS_ATTRIBUTE) or "").split()


def dicom_files(node: Any, database: DicomDatabase | None) -> list[DicomFile]:
    """The files behind a volume, each classified by the library's DICOM role rules."""
    from VirtualBiopsyLib.images.readers import read_info

    if database is None:
        return []
    files = []
    for uid in instance_uids(node):
        found = database.fileForInstance(uid) or ""
        if not found:
            files.append(DicomFile(uid, None, problem="not in the DICOM database"))
            continue
        path = Path(found)
        try:
            files.append(DicomFile(uid, path, read_info(path)))
        except ImageError as error:
            files.append(DicomFile(uid, path, problem=f"{path.name}: {error.reason}"))
    return files


_MODALITY_WORDS: dict[str, Modality] = {
    "LE": Modality.LE,
    "DM": Modality.LE,  # CDD-CESM: low energy ("digital mammography")
    "LOWENERGY": Modality.LE,
    "FFDM": Modality.LE,
    "DES": Modality.DES,
    "CM": Modality.DES,  # CDD-CESM: subtracted ("contrast mammography")
    "RECOMBINED": Modality.DES,
    "SUBTRACTED": Modality.DES,
    "SUBTRACTION": Modality.DES,
}
_VIEW_WORDS: dict[str, View] = {"CC": View.CC, "MLO": View.MLO}
_LATERALITY_WORDS: dict[str, Laterality] = {
    "L": Laterality.L,
    "LEFT": Laterality.L,
    "R": Laterality.R,
    "RIGHT": Laterality.R,
}
_JOINED_WORDS = {("LOW", "ENERGY"): "LOWENERGY"}
_NEVER_INPUT_WORDS = {"SYNTHETIC", "SALIENCY", "HIGHENERGY", "HE"}


@dataclass(frozen=True)
class RoleGuess:
    """The role read from a name or attribute, and the rule that decided it."""

    modality: Modality | None = None
    view: View | None = None
    laterality: Laterality | None = None
    rule: str = "none"

    @property
    def slot(self) -> str | None:
        if self.modality is None or self.view is None:
            return None
        return slot_name(self.modality, self.view)


def _words(text: str) -> list[str]:
    """Upper-case words of a name; "LOW ENERGY" and "HIGH ENERGY" become one word each."""
    raw = [w for w in re.split(r"[^A-Z0-9]+", text.upper()) if w]
    words: list[str] = []
    for word in raw:
        if words and (words[-1], word) in _JOINED_WORDS:
            words[-1] = _JOINED_WORDS[(words[-1], word)]
        elif words and words[-1] == "HIGH" and word == "ENERGY":
            words[-1] = "HIGHENERGY"
        else:
            words.append(word)
    return words


def _split_view_word(word: str) -> tuple[Laterality, View] | None:
    """GE-style clinical view strings such as ``LCC`` or ``RMLO``."""
    match = re.fullmatch(r"([LR])(CC|MLO)", word)
    if match is None:
        return None
    return Laterality(match.group(1)), View(match.group(2))


def _only(values: set[Any]) -> Any | None:
    return next(iter(values)) if len(values) == 1 else None


def guess_role(name: str) -> RoleGuess:
    """Role of an image from its name; ambiguous or conflicting words give ``None`` parts.

    >>> guess_role("LE_CC").slot, guess_role("P3_R_CM_MLO").laterality.value
    ('LE_CC', 'R')
    >>> guess_role("4: LCC Recombined").slot
    'DES_CC'
    """
    from VirtualBiopsyLib.images.raster_reader import parse_cdd_cesm_name

    cdd_cesm = parse_cdd_cesm_name(name)
    if cdd_cesm is not None:
        return RoleGuess(cdd_cesm.modality, cdd_cesm.view, cdd_cesm.laterality, "CDD-CESM name")
    words = _words(name)
    if _NEVER_INPUT_WORDS.intersection(words):
        return RoleGuess(rule="name says it is not an input image")
    modalities, views, lateralities = set(), set(), set()
    for word in words:
        if word in _MODALITY_WORDS:
            modalities.add(_MODALITY_WORDS[word])
        elif word in _VIEW_WORDS:
            views.add(_VIEW_WORDS[word])
        elif word in _LATERALITY_WORDS:
            lateralities.add(_LATERALITY_WORDS[word])
        elif (split := _split_view_word(word)) is not None:
            lateralities.add(split[0])
            views.add(split[1])
    return RoleGuess(_only(modalities), _only(views), _only(lateralities), rule="node name")


def parse_role_attribute(value: str) -> RoleGuess:
    """Read a ``VirtualBiopsy.Role`` attribute: a slot such as ``DES_MLO``."""
    text = value.strip().upper()
    if text not in SLOTS:
        return RoleGuess(rule=f"{ROLE_ATTRIBUTE}={value!r} is not a slot")
    modality, view = text.split("_")
    return RoleGuess(Modality(modality), View(view), None, rule=f"attribute {ROLE_ATTRIBUTE}")


def node_role(node: Any) -> RoleGuess:
    """Role of a volume node: its ``VirtualBiopsy.Role`` attribute, else its name.

    Nodes this module created (synthetic images, saliency maps) are never inputs.
    """
    if node.GetAttribute(SYNTHETIC_ATTRIBUTE) or node.GetAttribute(RESULT_ATTRIBUTE):
        return RoleGuess(rule="created by VirtualBiopsy")
    by_name = guess_role(node.GetName() or "")
    attribute = node.GetAttribute(ROLE_ATTRIBUTE)
    guess = parse_role_attribute(attribute) if attribute else by_name
    laterality = node_laterality(node) or by_name.laterality
    return RoleGuess(guess.modality, guess.view, laterality, guess.rule)


def node_laterality(node: Any) -> Laterality | None:
    """Laterality from the ``VirtualBiopsy.Laterality`` attribute, if set and valid."""
    value = (node.GetAttribute(LATERALITY_ATTRIBUTE) or "").strip().upper()[:1]
    return Laterality(value) if value in ("L", "R") else None


@dataclass
class SlotAssignment:
    """Volume nodes per slot (``None`` when missing), the rule behind each, and problems.

    ``files`` holds, for slots filled from a DICOM-loaded volume, the file whose tags put
    it there (the run hands exactly that file to ``predict``).
    """

    slots: dict[str, Any] = field(default_factory=lambda: dict.fromkeys(SLOTS))
    laterality: Laterality | None = None
    rules: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def present(self) -> list[str]:
        return [slot for slot in SLOTS if self.slots.get(slot) is not None]

    def summary(self) -> list[str]:
        """One line per filled slot saying which rule decided it (shown in the panel)."""
        return [
            f"{slot}: {self.slots[slot].GetName()} ({self.rules.get(slot, '?')})"
            for slot in self.present
        ]


def node_candidates(
    node: Any, database: DicomDatabase | None = None
) -> tuple[list[tuple[RoleGuess, Path | None]], list[str]]:
    """Roles a node can fill: one per usable DICOM file, else one from attribute or name."""
    if node.GetAttribute(SYNTHETIC_ATTRIBUTE) or node.GetAttribute(RESULT_ATTRIBUTE):
        return [], []
    name = node.GetName()
    attribute = node.GetAttribute(ROLE_ATTRIBUTE)
    files = [] if attribute else dicom_files(node, database)
    problems = [f"{name}: {f.problem}" for f in files if f.info is None]
    usable = [f for f in files if f.info is not None and f.slot is not None]
    problems += [
        f"{name}: {f.path.name}: role undetermined ({f.info.rules.get('modality')}; "
        f"{f.info.rules.get('view')})"
        for f in files
        if f.info is not None and f.slot is None
    ]
    if usable:
        guesses = []
        for f in usable:
            laterality = node_laterality(node) or f.info.laterality
            rule = f.rule()
            guesses.append((RoleGuess(f.info.modality, f.info.view, laterality, rule), f.path))
        return guesses, problems
    role = node_role(node)
    return ([(role, None)] if role.slot is not None else []), problems


def assign_slots(
    nodes: Iterable[Any],
    laterality: Laterality | str | None = None,
    database: DicomDatabase | None = None,
) -> SlotAssignment:
    """Fill the four slots from loaded volume nodes; the first node per slot wins.

    ``laterality`` keeps only nodes of that breast; without it the breast of the first
    recognised node is used and nodes of the other breast are reported, not mixed in.
    ``database`` (``slicer.dicomDatabase`` in the app) lets DICOM-loaded volumes be
    classified by their files' tags.

    >>> import slicer, numpy
    >>> scene = slicer.vtkMRMLScene()
    >>> node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "P1_L_DM_CC")
    >>> assign_slots([node]).slots["LE_CC"] is node
    True
    """
    chosen = Laterality(laterality) if laterality is not None else None
    assignment = SlotAssignment(laterality=chosen)
    for node in nodes:
        candidates, problems = node_candidates(node, database)
        assignment.problems += problems
        name = node.GetName()
        for role, path in candidates:
            label = f"{name} ({path.name})" if path is not None else name
            if role.laterality is not None:
                if assignment.laterality is None:
                    assignment.laterality = role.laterality
                elif role.laterality != assignment.laterality:
                    assignment.problems.append(
                        f"{label}: {role.laterality.value} breast, case is "
                        f"{assignment.laterality.value}; not used"
                    )
                    continue
            if assignment.slots[role.slot] is not None:
                kept = assignment.slots[role.slot].GetName()
                assignment.problems.append(
                    f"{label}: {role.slot} already filled by {kept}; not used"
                )
                continue
            assignment.slots[role.slot] = node
            assignment.rules[role.slot] = role.rule
            if path is not None:
                assignment.files[role.slot] = path
    return assignment
