"""Checks on the identity values a case carries into its outputs (result.json, DICOM).

A patient ID or study UID read from a file ends up in exported DICOM, where a value that
breaks its Value Representation (a Patient ID over 64 characters, a control character,
a study UID with letters) makes the file invalid (dciodvfy rejects it). The readers
refuse such values when they read them, naming the file; the DICOM export passes every
copied value through :func:`dicom_value_problem` as a second line of defence.
"""

from __future__ import annotations

import re
import uuid

from pydicom import config
from pydicom.valuerep import validate_value

_CONTROL = re.compile(r"[\x00-\x1a\x1c-\x1f\x7f]")  # ESC (0x1b) starts character-set escapes
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_IDENTITY_VRS = {
    "PatientID": "LO",
    "PatientName": "PN",
    "PatientBirthDate": "DA",
    "PatientSex": "CS",
    "StudyInstanceUID": "UI",
    "StudyDate": "DA",
    "StudyTime": "TM",
    "StudyID": "SH",
    "AccessionNumber": "SH",
    "ReferringPhysicianName": "PN",
}


def patient_id_problem(value: str) -> str | None:
    """Why ``value`` cannot be a DICOM Patient ID (LO), or ``None`` when it can.

    >>> patient_id_problem("anon-7") is None
    True
    >>> patient_id_problem("x" * 65)
    'Patient ID has 65 characters (DICOM allows 64)'
    """
    if len(value) > 64:
        return f"Patient ID has {len(value)} characters (DICOM allows 64)"
    if _CONTROL.search(value):
        return "Patient ID contains control characters"
    if "\\" in value:
        return "Patient ID contains a backslash (the DICOM value separator)"
    return None


def uid_problem(value: str) -> str | None:
    """Why ``value`` cannot be a DICOM UID, or ``None`` when it can.

    >>> uid_problem("1.2.840.10008") is None
    True
    >>> uid_problem("1.2.abc")
    'study UID is not a DICOM UID (digits and dots without leading zeros, at most 64 characters)'
    """
    if len(value) > 64 or _UID.fullmatch(value) is None:  # the value itself is not shown
        return (
            "study UID is not a DICOM UID (digits and dots without leading zeros, "
            "at most 64 characters)"
        )
    return None


def dicom_value_problem(keyword: str, value: str) -> str | None:
    """Why ``value`` does not fit the VR of identity attribute ``keyword`` (or ``None``)."""
    if _CONTROL.search(value):
        return f"{keyword} contains control characters"
    vr = _IDENTITY_VRS.get(keyword)
    if vr is None:
        return None
    try:
        validate_value(vr, value, config.RAISE)
    except (ValueError, TypeError) as error:
        return f"{keyword}: {error}"
    return None


_UID_NAMESPACE = uuid.UUID("6f1c1d5e-6a39-4e0a-9a53-3c1f43b0b1a7")  # VirtualBiopsy's own


def derived_uid(*parts: str) -> str:
    """A deterministic ``2.25.<UUID>`` UID (PS3.5 B.2) from name-based UUID v5 of ``parts``.

    Used where a source has no study UID (CDD-CESM, NRRD without ``case.json``).

    >>> derived_uid("CDD-CESM", "P2") == derived_uid("CDD-CESM", "P2")
    True
    """
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, chr(31).join(parts)).int}"
