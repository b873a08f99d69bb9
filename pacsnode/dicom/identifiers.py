"""Build C-FIND/C-MOVE/C-GET identifiers for the SCU side, and read responses back as rows.

The CLI speaks ``-k KEY=VALUE`` (a keyword or a ``gggg,eeee`` tag, as DCMTK's findscu does);
this module turns that into a Dataset with the right VRs and character set.
"""

from __future__ import annotations

from typing import Any, Iterable

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from pacsnode.errors import InvalidQuery

DEFAULT_RETURN_KEYS: dict[str, list[str]] = {
    "PATIENT": ["PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "PatientSex",
                "NumberOfPatientRelatedStudies"],
    "STUDY": ["PatientID", "IssuerOfPatientID", "PatientName", "StudyInstanceUID", "StudyDate", "StudyTime",
              "AccessionNumber", "StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
              "NumberOfStudyRelatedInstances", "InstitutionName"],
    "SERIES": ["StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription",
               "BodyPartExamined", "NumberOfSeriesRelatedInstances"],
    "IMAGE": ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "InstanceNumber"],
}


def resolve_key(key: str) -> tuple[int, str]:
    """``PatientID`` or ``0010,0020`` → (tag, keyword)."""
    text = key.strip()
    if "," in text or (len(text) == 8 and all(c in "0123456789abcdefABCDEF" for c in text)):
        try:
            tag = Tag(*(int(part, 16) for part in text.split(","))) if "," in text else Tag(int(text, 16))
        except ValueError:
            raise InvalidQuery(f"{key!r} is not a tag like 0010,0020") from None
        keyword = keyword_for_tag(tag)
        if not keyword:
            raise InvalidQuery(f"tag {key} is not in the DICOM dictionary")
        return int(tag), keyword
    tag_value = tag_for_keyword(text)
    if tag_value is None:
        raise InvalidQuery(f"{key!r} is not a DICOM keyword (e.g. PatientID) or tag (e.g. 0010,0020)")
    return int(tag_value), text


def build_identifier(level: str, keys: Iterable[str], with_defaults: bool = True) -> Dataset:
    """A query identifier from ``KEY=VALUE`` strings (``KEY`` alone or ``KEY=`` asks for it back)."""
    ds = Dataset()
    ds.QueryRetrieveLevel = level.upper()
    if with_defaults:
        for keyword in DEFAULT_RETURN_KEYS.get(level.upper(), []):
            setattr(ds, keyword, "" if dictionary_VR(keyword) != "SQ" else [])
    needs_unicode = False
    for item in keys:
        key, _, value = item.partition("=")
        tag, keyword = resolve_key(key)
        vr = dictionary_VR(tag)
        if vr == "SQ":
            raise InvalidQuery(f"{keyword} is a sequence; use its item keys with the Node API instead")
        if keyword == "QueryRetrieveLevel":
            continue
        if keyword == "SpecificCharacterSet":
            ds.SpecificCharacterSet = value
            continue
        needs_unicode |= not value.isascii()
        setattr(ds, keyword, value)
    if needs_unicode and "SpecificCharacterSet" not in ds:
        ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


def row_of(response: Dataset) -> dict[str, Any]:
    """A response identifier as a plain dict (keyword → text or list), for tables and JSON."""
    row: dict[str, Any] = {}
    for element in response:
        if element.keyword in ("SpecificCharacterSet", "QueryRetrieveLevel") or not element.keyword:
            continue
        if element.VR == "SQ":
            row[element.keyword] = [row_of(item) for item in element.value]
        elif element.VM > 1:
            row[element.keyword] = [str(v) for v in element.value]
        else:
            row[element.keyword] = "" if element.value is None else str(element.value)
    return row
