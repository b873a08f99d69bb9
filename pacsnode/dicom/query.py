"""C-FIND/C-MOVE/C-GET identifier ⇄ :class:`~pacsnode.model.Query` (PS3.4 C.4, C.6).

``parse_identifier`` checks the hierarchical (baseline, non-relational) rules and decodes the
values with the identifier's Specific Character Set; ``build_response`` turns one match of
``pacsnode.index.matching.find`` into a C-FIND response identifier.

Decisions where PS3.4 leaves room (also in the conformance notes of the report):

* Keys of a level *below* the query level: PS3.4 C.4.1.2.1 says the SCU shall not send
  them. Sent empty they are harmless return keys (several viewers do that), so they are
  accepted and answered empty; sent with a value they would ask for a filter we cannot
  apply at this level, so the query is refused (``InvalidQuery`` → 0xA900 "Identifier does
  not match SOP Class", the status PS3.4 C.4.1.1.4 gives for an identifier that breaks the
  information model; DCMTK's own SCP answers the same).
* Non-unique keys of the levels *above* (PatientName at a Patient Root STUDY query) are
  accepted as matching and return keys: the upper entity is fixed by its unique key anyway.
* The unique key of the query level is optional in a C-FIND request, but every response
  carries it (a response without the UID cannot be retrieved).
* A retrieve identifier keeps only the unique keys at and above its level (and
  IssuerOfPatientID, which qualifies PatientID); other keys are ignored, not refused.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag, Tag

from pacsnode.dicom.charset import (
    charset_values,
    choose_response_charset,
    decode_ir58,
    encode_ir58,
    is_ir58_only,
    strip_escapes,
)
from pacsnode.errors import InvalidQuery
from pacsnode.model import InformationModel, Level, Query, QueryKey

UNIQUE_KEYS: dict[Level, str] = {
    Level.PATIENT: "PatientID",
    Level.STUDY: "StudyInstanceUID",
    Level.SERIES: "SeriesInstanceUID",
    Level.IMAGE: "SOPInstanceUID",
}

# Level of each attribute in the Patient Root model (PS3.4 C.6.1.1); in Study Root the
# patient attributes belong to the STUDY level (C.6.2.1).
_LEVEL_KEYWORDS: dict[Level, tuple[str, ...]] = {
    Level.PATIENT: (
        "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientBirthTime", "PatientSex",
        "OtherPatientIDsSequence", "OtherPatientNames", "EthnicGroup", "PatientComments",
        "IssuerOfPatientIDQualifiersSequence", "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries",
        "NumberOfPatientRelatedInstances",
    ),
    Level.STUDY: (
        "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "StudyDescription",
        "ReferringPhysicianName", "InstitutionName", "ModalitiesInStudy", "SOPClassesInStudy",
        "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "ProcedureCodeSequence",
        "InstitutionCodeSequence", "IssuerOfAccessionNumberSequence", "PatientAge", "PatientSize",
        "PatientWeight", "AdmittingDiagnosesDescription", "NameOfPhysiciansReadingStudy", "OtherStudyNumbers",
        "AnatomicRegionsInStudyCodeSequence",
    ),
    Level.SERIES: (
        "SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription", "SeriesDate", "SeriesTime",
        "BodyPartExamined", "StationName", "DeviceSerialNumber", "NumberOfSeriesRelatedInstances",
        "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime", "RequestAttributesSequence",
        "Laterality", "ProtocolName", "Manufacturer",
    ),
    Level.IMAGE: (
        "SOPInstanceUID", "SOPClassUID", "InstanceNumber", "NumberOfFrames", "ContentDate", "ContentTime",
        "AcquisitionDate", "AcquisitionTime", "ImageType", "Rows", "Columns",
    ),
}
ATTRIBUTE_LEVELS: dict[str, Level] = {kw: level for level, kws in _LEVEL_KEYWORDS.items() for kw in kws}

# Attributes of the identifier that are not keys: never matched, handled by build_response.
_NOT_KEYS = frozenset({"QueryRetrieveLevel", "RetrieveAETitle", "TimezoneOffsetFromUTC", "QueryRetrieveView"})
_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UC", "UT", "PN"})
_SINGLE_VALUED_VRS = frozenset({"ST", "LT", "UT", "UR"})
_NUMERIC_VRS = frozenset({"US", "UL", "SS", "SL", "FL", "FD", "UV", "SV"})

_SOP_CLASS_MODELS: dict[str, InformationModel] = {
    "1.2.840.10008.5.1.4.1.2.1.1": InformationModel.PATIENT_ROOT,  # FIND
    "1.2.840.10008.5.1.4.1.2.1.2": InformationModel.PATIENT_ROOT,  # MOVE
    "1.2.840.10008.5.1.4.1.2.1.3": InformationModel.PATIENT_ROOT,  # GET
    "1.2.840.10008.5.1.4.1.2.2.1": InformationModel.STUDY_ROOT,
    "1.2.840.10008.5.1.4.1.2.2.2": InformationModel.STUDY_ROOT,
    "1.2.840.10008.5.1.4.1.2.2.3": InformationModel.STUDY_ROOT,
}


def model_for_sop_class(sop_class_uid: str) -> InformationModel:
    """Patient Root or Study Root, from the C-FIND/C-MOVE/C-GET Affected SOP Class UID."""
    try:
        return _SOP_CLASS_MODELS[str(sop_class_uid).strip()]
    except KeyError:
        raise InvalidQuery(f"SOP Class {sop_class_uid} is not a Patient/Study Root Q/R model") from None


def model_levels(model: InformationModel) -> list[Level]:
    """The levels of ``model``, top first (Study Root has no PATIENT level)."""
    levels = list(Level)
    return levels[1:] if model is InformationModel.STUDY_ROOT else levels


def attribute_level(keyword: str, model: InformationModel) -> Level | None:
    """The level ``keyword`` belongs to in ``model``; None for attributes we do not place."""
    level = ATTRIBUTE_LEVELS.get(keyword)
    if level is Level.PATIENT and model is InformationModel.STUDY_ROOT:
        return Level.STUDY
    return level


def key_name(tag: BaseTag) -> str:
    """The keyword of ``tag``, or its hex form ``ggggeeee`` (private and unknown tags)."""
    return keyword_for_tag(tag) or f"{int(tag):08X}"


# -- parsing ---------------------------------------------------------------------------------
def parse_identifier(identifier: Dataset, model: InformationModel, *, retrieve: bool = False,
                     combined_datetime: bool = False, case_insensitive_pn: bool = False) -> Query:
    """Validate a request identifier against PS3.4 C.4 and turn it into a :class:`Query`.

    ``retrieve`` selects the C-MOVE/C-GET rules (unique keys at and above the level, a list
    of UIDs allowed at the level). SpecificCharacterSet stays in ``Query.keys`` (never
    matched) so that the response can answer in the caller's character set.
    Raises :class:`InvalidQuery` with a message fit for an Error Comment.
    """
    level = _level_of(identifier, model)
    charsets = charset_values(identifier.get("SpecificCharacterSet"))
    keys = tuple(_keys_of(identifier, charsets))
    _check_upper_unique_keys(keys, level, model)
    if retrieve:
        keys = _retrieve_keys(keys, level, model)
    else:
        _check_lower_keys(keys, level, model)
    return Query(level=level, model=model, keys=keys, combined_datetime=combined_datetime,
                 case_insensitive_pn=case_insensitive_pn)


def _level_of(identifier: Dataset, model: InformationModel) -> Level:
    raw = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if not raw:
        raise InvalidQuery("QueryRetrieveLevel (0008,0052) is missing")
    try:
        level = Level(raw)
    except ValueError:
        raise InvalidQuery(f"QueryRetrieveLevel {raw[:16]!r} is not PATIENT, STUDY, SERIES or IMAGE") from None
    if level not in model_levels(model):
        raise InvalidQuery(f"{level.value} level is not part of the {model.value} root model")
    return level


def _keys_of(dataset: Dataset, charsets: Sequence[str]) -> Iterable[QueryKey]:
    for tag in sorted(dataset.keys()):
        name = key_name(tag)
        if name in _NOT_KEYS or tag.group in (0x0000, 0x0002):
            continue
        yield _key_of(dataset, tag, name, charsets)


def _key_of(dataset: Dataset, tag: BaseTag, name: str, charsets: Sequence[str]) -> QueryKey:
    raw = dataset.get_item(tag)  # before conversion: the undecoded bytes, when still raw
    element = dataset[tag]  # pydicom resolves the VR (implicit VR, private creators)
    vr = _vr_of(element, tag)
    if vr == "SQ":
        items = list(element.value or [])
        if len(items) > 1:
            raise InvalidQuery(f"{name} has {len(items)} items; a sequence key holds one item (PS3.4 C.2.2.2.6)")
        item_keys = tuple(_keys_of(items[0], charsets)) if items else ()
        return QueryKey(keyword=name, vr="SQ", value=None, items=item_keys)
    if isinstance(raw, RawDataElement) and vr in _TEXT_VRS and is_ir58_only(charsets) and raw.value:
        return QueryKey(keyword=name, vr=vr, value=decode_ir58(raw.value).strip(" \x00"))
    return QueryKey(keyword=name, vr=vr, value=_text(element.value, vr))


def _vr_of(element: DataElement | RawDataElement | None, tag: BaseTag) -> str:
    vr = getattr(element, "VR", None)
    if vr:
        return str(vr)
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


def _text(value: Any, vr: str) -> str | None:
    """Element value → the matching text (list values joined with backslash)."""
    if value is None or value == "":
        return None
    if vr in ("OB", "OW", "OF", "OD", "OL", "OV", "UN") or isinstance(value, (bytes, bytearray)):
        return None  # binary values are never matched
    if isinstance(value, (list, tuple, MultiValue)):
        parts = [strip_escapes(str(v)).strip() for v in value]
        text = "\\".join(parts)
    else:
        text = strip_escapes(str(value)).strip()
    return text or None


def _is_single_value(value: str | None) -> bool:
    return bool(value) and not any(ch in value for ch in "*?\\")  # type: ignore[operator]


def _check_upper_unique_keys(keys: Sequence[QueryKey], level: Level, model: InformationModel) -> None:
    by_name = {key.keyword: key for key in keys}
    for upper in model_levels(model):
        if upper.depth >= level.depth:
            break
        unique = UNIQUE_KEYS[upper]
        key = by_name.get(unique)
        if key is None or not key.value:
            raise InvalidQuery(f"a {level.value} query needs {unique}, the unique key of the {upper.value} level")
        if not _is_single_value(key.value):
            raise InvalidQuery(f"{unique} above the {level.value} level must be one value, no wildcard or list")


def _has_value(key: QueryKey) -> bool:
    if key.vr == "SQ":
        return any(_has_value(item) for item in key.items)
    return bool(key.value) and key.value != "*"


def _check_lower_keys(keys: Sequence[QueryKey], level: Level, model: InformationModel) -> None:
    for key in keys:
        key_level = attribute_level(key.keyword, model)
        if key_level is not None and key_level.depth > level.depth and _has_value(key):
            raise InvalidQuery(f"{key.keyword} is a {key_level.value} key; it cannot match at {level.value} level")


def _retrieve_keys(keys: Sequence[QueryKey], level: Level, model: InformationModel) -> tuple[QueryKey, ...]:
    by_name = {key.keyword: key for key in keys}
    unique = UNIQUE_KEYS[level]
    key = by_name.get(unique)
    if key is None or not key.value or key.value == "*":
        raise InvalidQuery(f"a {level.value} retrieve needs {unique} (one value or a list of UIDs)")
    if any(ch in key.value for ch in "*?") or (level is Level.PATIENT and "\\" in key.value):
        raise InvalidQuery(f"{unique} in a retrieve must be {'one value' if level is Level.PATIENT else 'UIDs'}")
    wanted = {UNIQUE_KEYS[upper] for upper in model_levels(model) if upper.depth <= level.depth}
    wanted.add("SpecificCharacterSet")
    if "PatientID" in wanted:
        wanted.add("IssuerOfPatientID")  # qualifies the Patient ID: two issuers may share an ID
    return tuple(k for k in keys if k.keyword in wanted and (k.value or k.keyword in UNIQUE_KEYS.values()))


# -- responses -------------------------------------------------------------------------------
def build_response(query: Query, match: Mapping[str, Any], retrieve_aet: str) -> Dataset:
    """One C-FIND response identifier for ``match`` (a dict from ``matching.find``).

    Holds every requested key (empty when the value is unknown), the unique key of the
    query level, QueryRetrieveLevel and RetrieveAETitle. Specific Character Set is omitted
    when every value is ASCII, else the query's own set if it holds every value, else
    ISO_IR 192. Private creator elements are echoed so a private block stays readable.
    """
    elements: list[DataElement] = []
    for key in query.keys:
        if key.keyword != "SpecificCharacterSet":
            elements.append(_element(key, match.get(key.keyword)))
    unique = UNIQUE_KEYS[query.level]
    if query.key(unique) is None:
        elements.append(_element(QueryKey(unique, "UI" if query.level is not Level.PATIENT else "LO"),
                                 match.get(unique)))
    charsets = choose_response_charset(_texts(elements), charset_values(query.value("SpecificCharacterSet")))
    if is_ir58_only(charsets):
        _encode_ir58_values(elements)
    response = Dataset()
    if charsets:
        response.SpecificCharacterSet = charsets if len(charsets) > 1 else charsets[0]
    response.QueryRetrieveLevel = query.level.value
    response.RetrieveAETitle = retrieve_aet
    for element in elements:
        response.add(element)
    return response


def _tag_of(keyword: str) -> BaseTag:
    tag = tag_for_keyword(keyword)
    return Tag(tag) if tag is not None else Tag(int(keyword, 16))


def response_tag_vr(key: QueryKey) -> tuple[BaseTag, str]:
    """The tag and VR a response element for ``key`` is written with (the dictionary's, when unsure)."""
    tag = _tag_of(key.keyword)
    vr = key.vr
    if vr in ("", "UN") or " or " in vr:
        try:
            vr = str(dictionary_VR(tag))
        except KeyError:
            vr = "UN"
    if " or " in vr:
        vr = vr.split(" or ")[0]
    return tag, vr


def response_value(key: QueryKey, tag: BaseTag, vr: str, value: Any) -> Any:
    """The value a response element for ``key`` holds (not SQ): None when empty, a list when multi-valued.

    A private creator the index knows nothing of echoes the request's value, so that a
    private block stays readable.
    """
    if value is None and _is_private_creator(tag):
        value = key.value
    return _value(value, vr)


def _element(key: QueryKey, value: Any) -> DataElement:
    tag, vr = response_tag_vr(key)
    if vr == "SQ":
        return DataElement(tag, "SQ", DicomSequence(_items(key, value)))
    return DataElement(tag, vr, response_value(key, tag, vr, value))


def _is_private_creator(tag: BaseTag) -> bool:
    return tag.group % 2 == 1 and 0x0010 <= tag.element <= 0x00FF


def _items(key: QueryKey, value: Any) -> list[Dataset]:
    if not isinstance(value, list):
        return []
    asked = [item.keyword for item in key.items]
    datasets = []
    for item in value:
        ds = Dataset()
        names = asked or list(item)
        for name in names:
            sub = next((k for k in key.items if k.keyword == name), QueryKey(name, ""))
            ds.add(_element(sub, item.get(name)))
        datasets.append(ds)
    return datasets


def _value(value: Any, vr: str) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        value = int(value)
    if vr in _NUMERIC_VRS:
        return value if isinstance(value, (int, float)) else None
    text = str(value)
    if vr == "UN":  # an unknown private attribute: the bytes of its text
        return text.encode("utf-8")
    if "\\" in text and vr not in _SINGLE_VALUED_VRS:
        return text.split("\\")
    return text


def _texts(elements: Iterable[DataElement]) -> list[str]:
    texts: list[str] = []
    for element in elements:
        if element.VR == "SQ":
            for item in element.value:
                texts.extend(_texts(item))
        elif isinstance(element.value, (list, MultiValue)):
            texts.extend(str(v) for v in element.value)
        elif element.value is not None:
            texts.append(str(element.value))
    return texts


def _encode_ir58_values(elements: Iterable[DataElement]) -> None:
    """pydicom writes GB2312 without its designation escape; write those values ourselves."""
    for element in elements:
        if element.VR == "SQ":
            for item in element.value:
                _encode_ir58_values(list(item))
        elif element.VR in _TEXT_VRS and element.value is not None:
            values = element.value if isinstance(element.value, (list, MultiValue)) else [element.value]
            texts = [str(v) for v in values]
            if not all(t.isascii() for t in texts):
                element.value = b"\\".join(encode_ir58(t) for t in texts)
