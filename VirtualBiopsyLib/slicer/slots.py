"""Which loaded volume fills which slot (LE_CC, LE_MLO, DES_CC, DES_MLO) of a case.

Rules, first match wins: the ``VirtualBiopsy.Role`` node attribute set by the user or by
this module; then the node name, which covers our slot file names (``LE_CC``), CDD-CESM
names (``P12_L_DM_CC``) and the "<series number>: <series description>" names Slicer
gives DICOM series (``3: L CC Recombined``, ``RMLO LOW ENERGY``). Laterality comes from
the ``VirtualBiopsy.Laterality`` attribute, the name, or the subject hierarchy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from VirtualBiopsyLib.roles import SLOTS, Laterality, Modality, View, slot_name

ROLE_ATTRIBUTE = "VirtualBiopsy.Role"
LATERALITY_ATTRIBUTE = "VirtualBiopsy.Laterality"
SYNTHETIC_ATTRIBUTE = "VirtualBiopsy.Synthetic"
RESULT_ATTRIBUTE = "VirtualBiopsy.Result"

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
    """Volume nodes per slot (``None`` when missing) and what went wrong on the way."""

    slots: dict[str, Any] = field(default_factory=lambda: dict.fromkeys(SLOTS))
    laterality: Laterality | None = None
    rules: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def present(self) -> list[str]:
        return [slot for slot in SLOTS if self.slots.get(slot) is not None]


def assign_slots(
    nodes: Iterable[Any], laterality: Laterality | str | None = None
) -> SlotAssignment:
    """Fill the four slots from loaded volume nodes; the first node per slot wins.

    ``laterality`` keeps only nodes of that breast; without it the breast of the first
    recognised node is used and nodes of the other breast are reported, not mixed in.

    >>> import slicer, numpy
    >>> scene = slicer.vtkMRMLScene()
    >>> node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "P1_L_DM_CC")
    >>> assign_slots([node]).slots["LE_CC"] is node
    True
    """
    chosen = Laterality(laterality) if laterality is not None else None
    assignment = SlotAssignment(laterality=chosen)
    for node in nodes:
        role = node_role(node)
        if role.slot is None:
            continue
        name = node.GetName()
        if role.laterality is not None:
            if assignment.laterality is None:
                assignment.laterality = role.laterality
            elif role.laterality != assignment.laterality:
                assignment.problems.append(
                    f"{name}: {role.laterality.value} breast, case is "
                    f"{assignment.laterality.value}; not used"
                )
                continue
        if assignment.slots[role.slot] is not None:
            kept = assignment.slots[role.slot].GetName()
            assignment.problems.append(f"{name}: {role.slot} already filled by {kept}; not used")
            continue
        assignment.slots[role.slot] = node
        assignment.rules[role.slot] = role.rule
    return assignment
