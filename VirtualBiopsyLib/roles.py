"""The roles an image plays in a CESM exam: modality, view, laterality and slot."""

from __future__ import annotations

from enum import Enum


class Modality(str, Enum):
    """LE: low-energy image (used as FFDM). DES: dual-energy subtracted image (CESM)."""

    LE = "LE"
    DES = "DES"


class View(str, Enum):
    CC = "CC"
    MLO = "MLO"


class Laterality(str, Enum):
    L = "L"
    R = "R"


class Source(str, Enum):
    """Where an input of a result came from."""

    REAL = "real"
    SYNTHETIC = "synthetic"
    MISSING = "missing"


MODALITIES: tuple[Modality, ...] = (Modality.LE, Modality.DES)
VIEWS: tuple[View, ...] = (View.CC, View.MLO)
SLOTS: tuple[str, ...] = ("LE_CC", "LE_MLO", "DES_CC", "DES_MLO")


def slot_name(modality: Modality | str, view: View | str) -> str:
    """Slot key of a modality-view pair, e.g. ``slot_name("LE", "CC") == "LE_CC"``."""
    return f"{Modality(modality).value}_{View(view).value}"


def parse_slot(slot: str) -> tuple[Modality, View]:
    """Inverse of :func:`slot_name`; raises ``ValueError`` for an unknown slot."""
    if slot not in SLOTS:
        raise ValueError(f"unknown slot {slot!r}; expected one of {', '.join(SLOTS)}")
    modality, view = slot.split("_")
    return Modality(modality), View(view)
