"""Cell values → manifest values: ACR density, and label or phase by an explicit mapping.

Labels are never guessed: a mapping names every accepted sheet value
(``"B=benign,M=malignant"``); with none given only the manifest's own words are accepted
(``malignant``, ``benign``, ``normal``; case ignored). A value outside the mapping stops
the import with the list of unmapped values, so a typo cannot turn into a label.

>>> labels = ValueMapping.parse("B=benign, M=malignant, 0=benign", LABEL_VALUES, "label")
>>> labels.map("m"), labels.map(0.0), labels.map("")
('malignant', 'benign', None)
>>> parse_density(2.0), parse_density("C"), parse_density(" 4 "), parse_density(None)
('b', 'c', 'd', '')
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from Training.importers.sheets import ImportInputError, cell_text
from VirtualBiopsyLib.training_manifest import PHASES

LABEL_VALUES: tuple[str, ...] = ("malignant", "benign", "normal")
PHASE_VALUES: tuple[str, ...] = PHASES
_DENSITY = re.compile(r"(?:acr\s*)?([a-d]|[1-4])", re.IGNORECASE)


def parse_density(value: object) -> str:
    """ACR density ``a``–``d`` from 1–4, 2.0, ``"2.0"``, ``"C"`` or ``"ACR c"``; ``""`` if empty.

    Raises ``ValueError`` for anything else.
    """
    text = cell_text(value)
    if not text:
        return ""
    match = _DENSITY.fullmatch(text.replace(".0", "", 1) if text.endswith(".0") else text)
    if match is None:
        raise ValueError(f"ACR density {text!r} is not 1–4 or a–d")
    found = match.group(1).lower()
    return "abcd"["1234".index(found)] if found.isdigit() else found


def breast_label(labels: Iterable[str]) -> str | None:
    """One label for a breast from its images' labels; ``None`` when they conflict.

    An image labelled ``normal`` shows no finding; it does not contradict a finding seen on
    the breast's other images, so ``normal`` + ``benign`` is ``benign``. Only ``benign``
    together with ``malignant`` is a conflict.

    >>> breast_label(["normal", "benign"]), breast_label(["normal"])
    ('benign', 'normal')
    >>> breast_label(["benign", "malignant"]) is None
    True
    """
    found = set(labels)
    findings = found - {"normal"}
    if len(findings) > 1:
        return None
    return next(iter(findings)) if findings else ("normal" if found else None)


def _key(value: object) -> str:
    return cell_text(value).casefold()


@dataclass(frozen=True)
class ValueMapping:
    """Sheet values (case-folded text) → one of ``targets``; says how it was set."""

    table: Mapping[str, str]
    targets: tuple[str, ...]
    what: str  # "label" or "phase", for messages
    source: str  # "identity" or "option"

    @classmethod
    def identity(cls, targets: tuple[str, ...], what: str) -> ValueMapping:
        return cls({target: target for target in targets}, targets, what, "identity")

    @classmethod
    def parse(cls, text: str, targets: tuple[str, ...], what: str) -> ValueMapping:
        """``"B=benign,M=malignant"`` → a mapping; raises :class:`ImportInputError`."""
        pairs: dict[str, str] = {}
        for item in text.split(","):
            if not item.strip():
                continue
            value, sep, target = item.rpartition("=")
            if not sep:
                raise ImportInputError(f"{what} mapping {item.strip()!r} is not VALUE=TARGET")
            pairs[value] = target
        return cls.from_pairs(pairs, targets, what)

    @classmethod
    def from_pairs(
        cls, pairs: Mapping[str, object], targets: tuple[str, ...], what: str
    ) -> ValueMapping:
        table: dict[str, str] = {}
        for value, target in pairs.items():
            target_text = cell_text(target).lower()
            if target_text not in targets:
                raise ImportInputError(
                    f"{what} mapping {cell_text(value)!r}={cell_text(target)!r}: target must be "
                    f"one of {', '.join(targets)}"
                )
            table[_key(value)] = target_text
        if not table:
            raise ImportInputError(f"empty {what} mapping")
        return cls(table, targets, what, "option")

    def map(self, value: object) -> str | None:
        """The target of a cell; ``None`` for an empty cell; ``KeyError`` if unmapped."""
        key = _key(value)
        if not key:
            return None
        return self.table[key]

    def check(self, values: Iterable[object], where: str, option: str) -> None:
        """Raise one error listing every non-empty value the mapping does not cover."""
        unmapped = sorted({cell_text(v) for v in values if _key(v) and _key(v) not in self.table})
        if unmapped:
            accepted = ", ".join(f"{k}={v}" for k, v in sorted(self.table.items()))
            raise ImportInputError(
                f"{where}: {self.what} values {', '.join(map(repr, unmapped))} are not mapped "
                f"(accepted: {accepted}); map every value explicitly with {option} "
                f'"VALUE={self.what.upper()},..." ({self.what.upper()}: '
                f"{', '.join(self.targets)})"
            )

    def describe(self) -> dict[str, str]:
        return dict(sorted(self.table.items()))
