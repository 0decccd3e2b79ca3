"""Group images into cases: one breast of one study, with four slots.

A case is (patient, study, laterality) with slots LE_CC, LE_MLO, DES_CC, DES_MLO. Problems
are reported in words rather than raised, so ``inspect`` can show a whole folder at once:
missing slots, duplicates (early and late phase, repeats: the earliest acquisition is kept),
images whose view, modality or laterality is unknown, and images of the same breast that
sit in another study. ``Case.key`` is pseudonymous: it never contains the patient ID.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from VirtualBiopsyLib.images.mammogram import ImageInfo
from VirtualBiopsyLib.roles import SLOTS, Laterality, Modality


@dataclass
class Case:
    """One breast of one study and the image chosen for each slot (``None`` when missing)."""

    patient_id: str | None
    study_uid: str | None
    laterality: Laterality | None
    slots: dict[str, ImageInfo | None] = field(default_factory=lambda: dict.fromkeys(SLOTS))
    problems: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        """Pseudonymous folder name, e.g. ``case-3f2a9c01b7-L`` (hash of patient and study)."""
        return case_key(self.patient_id, self.study_uid, self.laterality)

    @property
    def missing_slots(self) -> list[str]:
        return [slot for slot in SLOTS if self.slots.get(slot) is None]

    def has_modality(self, modality: Modality) -> bool:
        return any(info is not None and info.modality == modality for info in self.slots.values())


def case_key(patient_id: str | None, study_uid: str | None, laterality: Laterality | None) -> str:
    """``"case-" + first 10 hex of sha256(patient_id|study_uid) + "-" + laterality``.

    >>> case_key("P2", "1.2.3", Laterality.L)
    'case-8e244b6dc9-L'
    """
    digest = hashlib.sha256(f"{patient_id or ''}|{study_uid or ''}".encode()).hexdigest()
    side = laterality.value if laterality is not None else "U"
    return f"case-{digest[:10]}-{side}"


def _acquisition_order(info: ImageInfo) -> tuple[int, str, str]:
    """Earliest acquisition first; images without a time after those with one; then by name."""
    return (info.acquisition is None, info.acquisition or "", str(info.path))


def _fill_slots(case: Case, infos: list[ImageInfo]) -> None:
    by_slot: dict[str, list[ImageInfo]] = defaultdict(list)
    for info in infos:
        if info.slot is None:
            unknown = "modality" if info.modality is None else "view"
            case.problems.append(f"unknown {unknown}: {info.path.name} not used")
        else:
            by_slot[info.slot].append(info)
    for slot in SLOTS:
        candidates = sorted(by_slot.get(slot, []), key=_acquisition_order)
        if not candidates:
            continue
        why = "earliest acquisition"
        if len(candidates) > 1 and candidates[0].acquisition == candidates[1].acquisition:
            candidates, why = _prefer_readable(candidates)
        case.slots[slot] = candidates[0]
        if len(candidates) > 1:
            kept, *others = _shown(candidates)
            ignored = ", ".join(others)
            case.problems.append(f"duplicate {slot}: kept {kept} ({why}), ignored {ignored}")


def _shown(infos: list[ImageInfo]) -> list[str]:
    """File names, or whole paths where the names alone are ambiguous (IM0001 in two
    series folders would read "kept IM0001, ignored IM0001")."""
    names = [info.path.name for info in infos]
    return names if len(set(names)) == len(names) else [str(info.path) for info in infos]


def _prefer_readable(candidates: list[ImageInfo]) -> tuple[list[ImageInfo], str]:
    """Among images acquired at the same (earliest) time, put a decodable one first.

    The name order alone would keep a damaged file over a good twin; only tied images are
    decoded, so the usual case (distinct times) costs nothing.
    """
    from VirtualBiopsyLib.errors import ImageError
    from VirtualBiopsyLib.images.readers import read_image  # readers import this module

    tied = [info for info in candidates if info.acquisition == candidates[0].acquisition]
    failures = []
    for info in tied:
        try:
            read_image(info)
        except ImageError as error:
            failures.append(f"{info.path.name}: {error.reason}")
            continue
        rest = [other for other in candidates if other is not info]
        if not failures:
            return [info, *rest], "earliest acquisition"
        return [info, *rest], "same acquisition time; the other cannot be read: " + "; ".join(
            failures
        )
    return candidates, "earliest acquisition; none of the tied images can be read"


def _report_other_studies(cases: list[Case]) -> None:
    """Say when one breast's LE and DES ended up in different studies (not combined)."""
    by_breast: dict[tuple[str | None, Laterality | None], list[Case]] = defaultdict(list)
    for case in cases:
        by_breast[(case.patient_id, case.laterality)].append(case)
    for siblings in by_breast.values():
        if len(siblings) < 2:
            continue
        for case in siblings:
            for other in siblings:
                if other is case:
                    continue
                for modality in Modality:
                    if not case.has_modality(modality) and other.has_modality(modality):
                        case.problems.append(
                            f"{modality.value} images of this breast are in another study "
                            f"({other.key}); not combined"
                        )


def _attach_unknown_laterality(cases: dict[tuple, Case], orphans: list[ImageInfo]) -> None:
    """Images without laterality join no breast; tell every case of their study."""
    for info in orphans:
        targets = [
            case
            for (patient, study, _), case in cases.items()
            if (patient, study) == (info.patient_id, info.study_uid) and case.laterality is not None
        ]
        if not targets:
            key = (info.patient_id, info.study_uid, None)
            cases.setdefault(key, Case(info.patient_id, info.study_uid, None))
            targets = [cases[key]]
        for case in targets:
            case.problems.append(f"unknown laterality: {info.path.name} not used")


def _identity_order(case: Case) -> tuple[str, str, str]:
    side = case.laterality.value if case.laterality is not None else "~"
    return (case.patient_id or "", case.study_uid or "", side)


def group_cases(infos: Iterable[ImageInfo]) -> list[Case]:
    """Group image infos into cases by patient, study and laterality.

    >>> from pathlib import Path
    >>> from VirtualBiopsyLib.roles import Modality, View
    >>> le_cc = ImageInfo(Path("le_cc.dcm"), "dicom", Modality.LE, View.CC, Laterality.L,
    ...                   patient_id="P1", study_uid="1.2")
    >>> [case] = group_cases([le_cc])
    >>> case.slots["LE_CC"] is le_cc, case.problems
    (True, ['missing LE_MLO, DES_CC, DES_MLO'])
    """
    members: dict[tuple, list[ImageInfo]] = defaultdict(list)
    orphans: list[ImageInfo] = []
    for info in infos:
        if info.laterality is None:
            orphans.append(info)
        else:
            members[(info.patient_id, info.study_uid, info.laterality)].append(info)
    cases: dict[tuple, Case] = {}
    for key, images in members.items():
        case = Case(*key)
        _fill_slots(case, images)
        cases[key] = case
    _attach_unknown_laterality(cases, orphans)
    ordered = sorted(cases.values(), key=_identity_order)
    for case in ordered:
        if case.laterality is not None and case.missing_slots:
            case.problems.insert(0, f"missing {', '.join(case.missing_slots)}")
    _report_other_studies(ordered)
    return ordered
