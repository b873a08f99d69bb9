"""The length and format limits of the values the index reads (PS3.5 6.2), enforced at ingest.

A 100,000-character Patient ID used to be indexed as an empty one: the header scan skips
large values, so the instance was stored under no patient at all. An identifying value that
breaks its VR is refused instead (C-STORE 0xC000 "Cannot understand" with the attribute in
the Error Comment; ``import`` names it), and nothing is stored. 0xC000 rather than 0xA900:
the attributes the SOP Class asks for are there, their encoding is what cannot be understood.

Identifying attributes (who the patient is, which study, when) get the VR's own maximum.
Descriptive ones (descriptions, institution, station) are only displayed, and real devices
overrun LO now and then, so they are refused only beyond ``DESCRIPTIVE_MAX`` characters.
"""

from __future__ import annotations

import re

from pacsnode.errors import InvalidInstance

#: maximum characters of one value, per VR (PS3.5 Table 6.2-1); PN: per component group.
VR_MAX = {"AE": 16, "AS": 4, "CS": 16, "DA": 8, "DS": 16, "IS": 12, "LO": 64, "PN": 64, "SH": 16, "TM": 14,
          "UI": 64}
IDENTIFYING = frozenset({
    "PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber",
    "StudyID", "StudyDate", "StudyTime", "SeriesDate", "SeriesTime", "Modality", "BodyPartExamined",
    "SeriesNumber", "InstanceNumber", "NumberOfFrames", "SpecificCharacterSet", "LossyImageCompression",
})
DESCRIPTIVE_MAX = 1024
DATE = re.compile(r"^\d{8}$")
TIME = re.compile(r"^\d{2}(:?\d{2}(:?\d{2}(\.\d{1,6})?)?)?$")  # HHMMSS.FFFFFF, ACR-NEMA colons tolerated


class ValueTooLong(InvalidInstance):
    """An indexed attribute's value breaks its VR's length or format."""


def check_declared_length(keyword: str, vr: str, length: int) -> None:
    """Refuse a value whose encoded length alone shows it is too long (before decoding it).

    4 bytes per character is the most a supported character set needs (plus room for ISO 2022
    escapes), so a longer encoding cannot fit. Descriptive values: beyond 4 * DESCRIPTIVE_MAX
    bytes (the header scan does not even load such a value, see ``header.DEFER_BYTES``).
    """
    if keyword in IDENTIFYING:
        limit = 3 * 64 + 2 if vr == "PN" else VR_MAX.get(vr, 0)
        if limit and length > limit * 4 + 64:
            raise ValueTooLong(f"{keyword} is {length} bytes; VR {vr} allows {VR_MAX.get(vr)} characters")
    elif length > 4 * DESCRIPTIVE_MAX:
        raise ValueTooLong(f"{keyword} is {length} bytes, more than {DESCRIPTIVE_MAX} characters")


def check_value(keyword: str, vr: str, text: str) -> str:
    """Return ``text`` if it fits ``vr`` for this attribute, else raise ValueTooLong naming it."""
    if not text:
        return text
    if keyword not in IDENTIFYING:
        if len(text) > DESCRIPTIVE_MAX:
            raise ValueTooLong(f"{keyword}: {len(text)} characters, more than {DESCRIPTIVE_MAX}")
        return text
    limit = VR_MAX.get(vr)
    values = text.split("\\") if vr not in ("PN",) else [text]
    for value in values:
        parts = value.split("=") if vr == "PN" else [value]
        for part in parts:
            if limit is not None and len(part) > limit:
                raise ValueTooLong(f"{keyword}: {len(part)} characters, VR {vr} allows {limit}")
        stripped = value.strip()
        if vr == "DA" and stripped and not DATE.match(stripped):
            raise ValueTooLong(f"{keyword} {stripped[:20]!r} is not a DA value (YYYYMMDD)")
        if vr == "TM" and stripped and not TIME.match(stripped):
            raise ValueTooLong(f"{keyword} {stripped[:20]!r} is not a TM value (HHMMSS.FFFFFF)")
    return text
