"""C-FIND/C-MOVE identifiers → Query (PS3.4 C.4 hierarchical rules) and Query + match → response."""

from __future__ import annotations

import io
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode, encode

from pacsnode.dicom.charset import can_encode, choose_response_charset, decode_ir58, encode_ir58
from pacsnode.dicom.query import build_response, model_for_sop_class, parse_identifier
from pacsnode.errors import InvalidQuery
from pacsnode.model import InformationModel, Level

# The identifiers below carry query syntax (wild cards, ranges) that pydicom flags as invalid VR values.
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR")

PATIENT_ROOT = InformationModel.PATIENT_ROOT
STUDY_ROOT = InformationModel.STUDY_ROOT
UID1 = "1.2.826.0.1.3680043.10.1078.1.1"
UID2 = "1.2.826.0.1.3680043.10.1078.1.2"


def identifier(**keys: Any) -> Dataset:
    ds = Dataset()
    for keyword, value in keys.items():
        if isinstance(value, list) and (not value or isinstance(value[0], dict)):
            items = []
            for item in value:
                item_ds = Dataset()
                for k, v in item.items():
                    setattr(item_ds, k, v)
                items.append(item_ds)
            setattr(ds, keyword, items)
        else:
            setattr(ds, keyword, value)
    return ds


def on_the_wire(ds: Dataset) -> Dataset:
    """The identifier as pynetdicom hands it to a handler: decoded from Implicit VR bytes."""
    return decode(io.BytesIO(encode(ds, True, True)), True, True)


# -- validation ------------------------------------------------------------------------------
INVALID: list[tuple[str, InformationModel, dict[str, Any], bool]] = [
    ("missing-level", STUDY_ROOT, {"PatientName": "A*"}, False),
    ("empty-level", STUDY_ROOT, {"QueryRetrieveLevel": ""}, False),
    ("unknown-level", STUDY_ROOT, {"QueryRetrieveLevel": "FRAME"}, False),
    ("patient-level-in-study-root", STUDY_ROOT, {"QueryRetrieveLevel": "PATIENT"}, False),
    ("study-root-series-without-study-uid", STUDY_ROOT, {"QueryRetrieveLevel": "SERIES"}, False),
    ("study-root-series-empty-study-uid", STUDY_ROOT, {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": ""}, False),
    ("study-root-series-study-uid-wildcard", STUDY_ROOT,
     {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": "1.2.*"}, False),
    ("study-root-series-study-uid-list", STUDY_ROOT,
     {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": [UID1, UID2]}, False),
    ("study-root-image-without-series-uid", STUDY_ROOT, {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": UID1},
     False),
    ("patient-root-study-without-patient-id", PATIENT_ROOT, {"QueryRetrieveLevel": "STUDY"}, False),
    ("patient-root-study-patient-id-wildcard", PATIENT_ROOT,
     {"QueryRetrieveLevel": "STUDY", "PatientID": "P00?"}, False),
    ("patient-root-image-without-patient-id", PATIENT_ROOT,
     {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": UID1, "SeriesInstanceUID": UID2}, False),
    ("series-key-with-value-at-study-level", STUDY_ROOT, {"QueryRetrieveLevel": "STUDY", "Modality": "CT"}, False),
    ("study-key-with-value-at-patient-level", PATIENT_ROOT, {"QueryRetrieveLevel": "PATIENT", "StudyDate": "2024"},
     False),
    ("image-key-with-value-at-series-level", STUDY_ROOT,
     {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": UID1, "SOPInstanceUID": UID2}, False),
    ("sequence-key-with-two-items", STUDY_ROOT,
     {"QueryRetrieveLevel": "STUDY", "ProcedureCodeSequence": [{"CodeValue": "A"}, {"CodeValue": "B"}]}, False),
    ("retrieve-study-without-uid", STUDY_ROOT, {"QueryRetrieveLevel": "STUDY", "PatientID": "P1"}, True),
    ("retrieve-study-uid-wildcard", STUDY_ROOT, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "*"}, True),
    ("retrieve-patient-id-list", PATIENT_ROOT, {"QueryRetrieveLevel": "PATIENT", "PatientID": ["A", "B"]}, True),
    ("retrieve-series-without-study-uid", STUDY_ROOT,
     {"QueryRetrieveLevel": "SERIES", "SeriesInstanceUID": UID2}, True),
]


@pytest.mark.parametrize("model, keys, retrieve", [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_identifiers_are_refused(model: InformationModel, keys: dict[str, Any], retrieve: bool) -> None:
    with pytest.raises(InvalidQuery):
        parse_identifier(on_the_wire(identifier(**keys)), model, retrieve=retrieve)


VALID: list[tuple[str, InformationModel, dict[str, Any], Level]] = [
    ("study-root-study-nothing-above", STUDY_ROOT, {"QueryRetrieveLevel": "STUDY", "PatientName": "A*"}, Level.STUDY),
    ("level-is-case-insensitive-and-trimmed", STUDY_ROOT, {"QueryRetrieveLevel": "study"}, Level.STUDY),
    ("empty-key-below-level-is-a-return-key", STUDY_ROOT,
     {"QueryRetrieveLevel": "STUDY", "Modality": "", "SOPInstanceUID": ""}, Level.STUDY),
    ("uid-list-at-query-level", STUDY_ROOT, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": [UID1, UID2]},
     Level.STUDY),
    ("study-root-series", STUDY_ROOT, {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": UID1}, Level.SERIES),
    ("study-root-image", STUDY_ROOT,
     {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": UID1, "SeriesInstanceUID": UID2}, Level.IMAGE),
    ("patient-root-patient-wildcards", PATIENT_ROOT, {"QueryRetrieveLevel": "PATIENT", "PatientID": "P*"},
     Level.PATIENT),
    ("patient-root-study-with-upper-non-unique-key", PATIENT_ROOT,
     {"QueryRetrieveLevel": "STUDY", "PatientID": "P1", "PatientName": "A*"}, Level.STUDY),
    ("study-root-patient-attributes-are-study-level", STUDY_ROOT,
     {"QueryRetrieveLevel": "STUDY", "NumberOfPatientRelatedStudies": ""}, Level.STUDY),
]


@pytest.mark.parametrize("model, keys, level", [c[1:] for c in VALID], ids=[c[0] for c in VALID])
def test_valid_identifiers_parse(model: InformationModel, keys: dict[str, Any], level: Level) -> None:
    query = parse_identifier(on_the_wire(identifier(**keys)), model)
    assert query.level is level and query.model is model


def test_values_lists_and_sequences_are_parsed() -> None:
    ds = identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID=[UID1, UID2], PatientName="Zhang*",
                    ModalitiesInStudy=["CT", "MR"], StudyDate="20240101-",
                    OtherPatientIDsSequence=[{"PatientID": "110", "IssuerOfPatientID": ""}],
                    ProcedureCodeSequence=[])
    query = parse_identifier(on_the_wire(ds), STUDY_ROOT, combined_datetime=True, case_insensitive_pn=True)
    assert query.value("StudyInstanceUID") == f"{UID1}\\{UID2}"
    assert query.value("ModalitiesInStudy") == "CT\\MR"
    assert query.value("StudyDate") == "20240101-"
    assert query.value("PatientName") == "Zhang*"
    other = query.key("OtherPatientIDsSequence")
    assert other is not None and other.vr == "SQ"
    assert [(k.keyword, k.value) for k in other.items] == [("PatientID", "110"), ("IssuerOfPatientID", None)]
    assert query.key("ProcedureCodeSequence").items == ()  # type: ignore[union-attr]
    assert query.combined_datetime and query.case_insensitive_pn
    assert query.key("QueryRetrieveLevel") is None


def test_retrieve_keeps_unique_keys_and_issuer_only() -> None:
    ds = identifier(QueryRetrieveLevel="STUDY", PatientID="P1", IssuerOfPatientID="HOSP_A",
                    StudyInstanceUID=[UID1, UID2], PatientName="Zhang*", StudyDate="20240101")
    query = parse_identifier(on_the_wire(ds), PATIENT_ROOT, retrieve=True)
    assert {k.keyword for k in query.keys} == {"PatientID", "IssuerOfPatientID", "StudyInstanceUID"}


@pytest.mark.parametrize("uid, model", [
    ("1.2.840.10008.5.1.4.1.2.1.1", PATIENT_ROOT), ("1.2.840.10008.5.1.4.1.2.2.1", STUDY_ROOT),
    ("1.2.840.10008.5.1.4.1.2.1.2", PATIENT_ROOT), ("1.2.840.10008.5.1.4.1.2.2.3", STUDY_ROOT),
])
def test_model_from_sop_class(uid: str, model: InformationModel) -> None:
    assert model_for_sop_class(uid) is model


def test_unknown_sop_class_is_refused() -> None:
    with pytest.raises(InvalidQuery):
        model_for_sop_class("1.2.840.10008.5.1.4.31")  # Modality Worklist


# -- responses -------------------------------------------------------------------------------
def study_query(**keys: Any) -> Any:
    return parse_identifier(on_the_wire(identifier(QueryRetrieveLevel="STUDY", **keys)), STUDY_ROOT)


def test_response_holds_exactly_the_requested_keys() -> None:
    query = study_query(PatientName="", PatientAge="", StudyDate="2024*", NumberOfStudyRelatedInstances="",
                        ModalitiesInStudy="")
    match = {"PatientName": "Zhang^San", "StudyDate": "20240101", "NumberOfStudyRelatedInstances": 10,
             "ModalitiesInStudy": "CT\\MR", "StudyInstanceUID": UID1, "AccessionNumber": "NOT ASKED"}
    rsp = on_the_wire(build_response(query, match, "PACSNODE"))
    assert rsp.QueryRetrieveLevel == "STUDY" and rsp.RetrieveAETitle == "PACSNODE"
    assert rsp.PatientName == "Zhang^San" and rsp.StudyDate == "20240101"
    assert "PatientAge" in rsp and rsp.PatientAge in ("", None)
    assert rsp.NumberOfStudyRelatedInstances == 10
    assert list(rsp.ModalitiesInStudy) == ["CT", "MR"]
    assert rsp.StudyInstanceUID == UID1  # the level's unique key, even when not asked
    assert "AccessionNumber" not in rsp and "SpecificCharacterSet" not in rsp


def test_unknown_values_come_back_empty() -> None:
    query = study_query(PatientName="", StudyDescription="", OtherPatientIDsSequence=[])
    rsp = on_the_wire(build_response(query, {"StudyInstanceUID": UID1}, "PACSNODE"))
    assert rsp.PatientName in ("", None) and rsp.StudyDescription in ("", None)
    assert len(rsp.OtherPatientIDsSequence) == 0


def test_sequences_come_back_as_sequences_with_the_asked_item_keys() -> None:
    query = study_query(ProcedureCodeSequence=[{"CodeValue": "", "CodingSchemeDesignator": ""}],
                        OtherPatientIDsSequence=[])
    match = {"ProcedureCodeSequence": [{"CodeValue": "CT001", "CodingSchemeDesignator": "CN-ITEM",
                                        "CodeMeaning": "CT chest"}],
             "OtherPatientIDsSequence": [{"PatientID": "110", "IssuerOfPatientID": "CN-RESIDENT-ID",
                                          "TypeOfPatientID": "TEXT"}]}
    rsp = on_the_wire(build_response(query, match, "PACSNODE"))
    [code] = rsp.ProcedureCodeSequence
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("CT001", "CN-ITEM") and "CodeMeaning" not in code
    [other] = rsp.OtherPatientIDsSequence  # zero-length item asked: the whole item comes back
    assert (other.PatientID, other.IssuerOfPatientID, other.TypeOfPatientID) == ("110", "CN-RESIDENT-ID", "TEXT")


def test_private_creator_is_echoed() -> None:
    ds = identifier(QueryRetrieveLevel="STUDY")
    ds.add_new(0x00110010, "LO", "PACSNODE HR")
    ds.add_new(0x00111001, "CS", "")
    explicit = decode(io.BytesIO(encode(ds, False, True)), False, True)  # the SCU's VRs travel
    query = parse_identifier(explicit, STUDY_ROOT)
    rsp = build_response(query, {"00111001": "HR_ELIGIBLE"}, "PACSNODE")
    assert rsp[0x00110010].value == "PACSNODE HR" and rsp[0x00111001].value == "HR_ELIGIBLE"


@pytest.mark.parametrize("query_charset, expected", [
    (None, "ISO_IR 192"),
    ("ISO_IR 100", "ISO_IR 192"),
    ("ISO_IR 192", "ISO_IR 192"),
    ("GB18030", "GB18030"),
    ("GBK", "GBK"),
], ids=["no-charset-falls-back-to-utf8", "latin1-cannot-hold-chinese", "utf8-kept", "gb18030-kept", "gbk-kept"])
def test_response_charset_for_chinese_values(query_charset: str | None, expected: str) -> None:
    keys: dict[str, Any] = {"PatientName": ""}
    if query_charset:
        keys["SpecificCharacterSet"] = query_charset
    rsp = build_response(study_query(**keys), {"PatientName": "王^小明"}, "PACSNODE")
    assert rsp.SpecificCharacterSet == expected
    assert str(on_the_wire(rsp).PatientName) == "王^小明"


def test_ascii_response_has_no_charset_even_if_query_had_one() -> None:
    rsp = build_response(study_query(SpecificCharacterSet="GB18030", PatientName=""), {"PatientName": "Wang"}, "AE")
    assert "SpecificCharacterSet" not in rsp


def test_latin1_query_keeps_latin1_when_it_holds_the_values() -> None:
    rsp = build_response(study_query(SpecificCharacterSet="ISO_IR 100", PatientName=""), {"PatientName": "Müller"},
                         "AE")
    assert rsp.SpecificCharacterSet == "ISO_IR 100"
    assert on_the_wire(rsp).PatientName == "Müller"


def test_iso_2022_ir_58_response_designates_gb2312_per_component_group() -> None:
    query = study_query(SpecificCharacterSet=["", "ISO 2022 IR 58"], PatientName="")
    rsp = build_response(query, {"PatientName": "Wang^XiaoDong=王^小东="}, "PACSNODE")
    assert list(rsp.SpecificCharacterSet) == ["", "ISO 2022 IR 58"]
    raw = encode(rsp, True, True)
    assert b"Wang^XiaoDong=\x1b$)A\xcd\xf5^\x1b$)A\xd0\xa1\xb6\xab" in raw  # PS3.5 K.2 example
    assert parse_identifier(decode(io.BytesIO(raw), True, True), STUDY_ROOT).value("PatientName") \
        == "Wang^XiaoDong=王^小东"


def test_charset_helpers() -> None:
    assert decode_ir58(encode_ir58("王^小明")) == "王^小明"
    assert decode_ir58(b"\xcd\xf5") == "王"  # a sender that forgot the designation
    assert can_encode("王", ["", "ISO 2022 IR 58"]) and not can_encode("王", ["ISO_IR 100"])
    assert choose_response_charset(["abc"], ["GB18030"]) == []
    assert choose_response_charset(["Müller", "王"], ["ISO_IR 100"]) == ["ISO_IR 192"]


def test_response_encodes_in_both_little_endian_syntaxes() -> None:
    query = study_query(PatientName="", NumberOfStudyRelatedSeries="", StudyTime="")
    rsp = build_response(query, {"PatientName": "王^小明", "NumberOfStudyRelatedSeries": 2,
                                 "StudyTime": "120030.500000", "StudyInstanceUID": UID1}, "PACSNODE")
    for implicit in (True, False):
        back = decode(io.BytesIO(encode(rsp, implicit, True)), implicit, True)
        assert back.NumberOfStudyRelatedSeries == 2 and back.StudyTime == "120030.500000"
