"""The roles an image plays in a CESM exam: modality, view, laterality and slot."""

from __future__ import annotations

from enum import Enum


class Modality(str, Enum):
    """LE: low-energy image (used as FFDM). DES: dual-energy subtracted image (CESM)."""

    LE = "LE"
    DES = "DES"

    def __str__(self) -> str:
        return self.value


class View(str, Enum):
    CC = "CC"
    MLO = "MLO"

    def __str__(self) -> str:
        return self.value

    @property
    def other(self) -> View:
        """The breast's other view (training on both views of a lesion).

        >>> View.CC.other
        <View.MLO: 'MLO'>
        """
        return View.MLO if self is View.CC else View.CC


class Laterality(str, Enum):
    L = "L"
    R = "R"


class Source(str, Enum):
    """Where an input of a result came from."""

    REAL = "real"
    SYNTHETIC = "synthetic"
    MISSING = "missing"


class Slot(str, Enum):
    """One of the four images of a breast's exam: a modality-view pair.

    A ``str`` enum, so a slot is also its name (``Slot.LE_CC == "LE_CC"``, a valid dict
    key and JSON string) while code asks it for its parts instead of parsing the name.

    >>> Slot.of("LE", "CC") is Slot.LE_CC, Slot.DES_MLO.modality, Slot("LE_MLO").view
    (True, <Modality.DES: 'DES'>, <View.MLO: 'MLO'>)
    >>> Slot.LE_CC.partner  # the other modality of the same view; shown as its name
    'DES_CC'
    """

    LE_CC = "LE_CC"
    LE_MLO = "LE_MLO"
    DES_CC = "DES_CC"
    DES_MLO = "DES_MLO"

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:  # messages and tuples show the name, as before slots had a type
        return repr(self.value)

    @classmethod
    def of(cls, modality: Modality | str, view: View | str) -> Slot:
        """The slot of a modality-view pair."""
        return cls(f"{Modality(modality).value}_{View(view).value}")

    @property
    def modality(self) -> Modality:
        return Modality(self.value.split("_", 1)[0])

    @property
    def view(self) -> View:
        return View(self.value.split("_", 1)[1])

    @property
    def partner(self) -> Slot:
        """The same view in the other modality (LE_CC ↔ DES_CC)."""
        other = Modality.DES if self.modality is Modality.LE else Modality.LE
        return Slot.of(other, self.view)


MODALITIES: tuple[Modality, ...] = (Modality.LE, Modality.DES)
VIEWS: tuple[View, ...] = (View.CC, View.MLO)
SLOTS: tuple[Slot, ...] = (Slot.LE_CC, Slot.LE_MLO, Slot.DES_CC, Slot.DES_MLO)


def slot_name(modality: Modality | str, view: View | str) -> Slot:
    """Slot of a modality-view pair, e.g. ``slot_name("LE", "CC") == "LE_CC"``."""
    return Slot.of(modality, view)


def parse_slot(slot: str) -> tuple[Modality, View]:
    """Inverse of :func:`slot_name`; raises ``ValueError`` for an unknown slot."""
    try:
        member = Slot(slot)
    except ValueError:
        raise ValueError(f"unknown slot {slot!r}; expected one of {', '.join(SLOTS)}") from None
    return member.modality, member.view
