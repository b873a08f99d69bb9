"""C-FIND matching on the SQLite index (pacsnode.index.matching), table-driven.

A small archive is indexed once per module from hand-made facts (no files, no network);
each case is a query and the set of entities it must return.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode, encode

from pacsnode.dicom.extract import normalise_time
from pacsnode.dicom.query import parse_identifier
from pacsnode.errors import InvalidQuery, TooManyResults
from pacsnode.index import matching
from pacsnode.index.sqlite import SqliteIndex
from pacsnode.model import (
    CodedEntry,
    DuplicatePolicy,
    InformationModel,
    InstanceFacts,
    Level,
    OtherPatientId,
    Query,
    QueryKey,
    StoredFile,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
SR = "1.2.840.10008.5.1.4.1.1.88.11"
DX = "1.2.840.10008.5.1.4.1.1.1.1"
ROOT = "1.2.826.0.1.3680043.10.1078.99"
RESIDENT = "CN-RESIDENT-ID"

PATIENTS: dict[str, dict[str, Any]] = {
    "P001": dict(issuer_of_patient_id="HOSP_A", patient_name="Zhang^San", patient_birth_date="19800101",
                 patient_sex="M", other_patient_ids=(OtherPatientId("110101198001010011", RESIDENT, "TEXT"),)),
    "P002": dict(issuer_of_patient_id="HOSP_A", patient_name="zhang^si", patient_birth_date="19900202",
                 patient_sex="F", other_patient_ids=(OtherPatientId("220202199002020022", RESIDENT, "TEXT"),)),
    "P003": dict(issuer_of_patient_id="HOSP_B", patient_name="王^小明", patient_birth_date="20000303",
                 patient_sex="M", other_patient_ids=(OtherPatientId("110101198001010011", "OTHER-ISSUER"),)),
    "P004": dict(issuer_of_patient_id="HOSP_B", patient_name="Wang^XiaoHong=王^小红", patient_sex="F"),
    "P%5": dict(patient_name="Li_Si"),
    "P006": dict(patient_name="O'Brien^[Test]"),
    "P007": dict(patient_name="LiXSi"),
}
# label: (patient, date, time, accession, description, referring, [(modality, sop class, instances)])
STUDIES: dict[str, tuple[str, str, str, str, str, str, list[tuple[str, str, int]]]] = {
    "S1": ("P001", "20240101", "0800", "ACC1", "CT CHEST", "Li^Wei", [("CT", CT, 5), ("CT", CT, 5)]),
    "S2": ("P001", "20240102", "053000", "ACC2", "MR HEAD", "li^wei", [("MR", MR, 2)]),
    "S3": ("P002", "20240101", "230000", "ACC%4", "CT ABDOMEN", "", [("CT", CT, 1), ("SR", SR, 1)]),
    "S4": ("P003", "20240115", "", "ACC_4", "DR CHEST", "", [("DX", DX, 1)]),
    "S5": ("P004", "20231231", "120030.5", "ACC5", "US", "", [("US", CT, 1)]),
    "S6": ("P%5", "", "", "ACC6", "", "", [("OT", CT, 1)]),
    "S7": ("P006", "20240201", "100000", "ACC7", "", "", [("CT", CT, 1)]),
    "S8": ("P007", "20240301", "090000", "ACC8", "", "", [("CT", CT, 1)]),
}
ALL = set(STUDIES)


def uid(label: str) -> str:
    return f"{ROOT}.{label[1:]}"


def label_of(study_uid: str) -> str:
    return "S" + study_uid.rsplit(".", 1)[1]


def _facts(label: str, series_no: int, modality: str, sop_class: str, inst: int) -> InstanceFacts:
    patient, date, time, accession, description, referring, _ = STUDIES[label]
    codes = {"S1": (CodedEntry("CT001", "CN-ITEM", "CT chest plain"), CodedEntry("CT009", "CN-ITEM", "CT other"))}
    institutions = {"S1": (CodedEntry("PRV001", "CN-INST", "Provincial"),),
                    "S2": (CodedEntry("PRV001", "CN-INST", "Provincial"),),
                    "S4": (CodedEntry("TWN001", "CN-INST", "Township"),)}
    return InstanceFacts(
        sop_instance_uid=f"{uid(label)}.{series_no}.{inst}", sop_class_uid=sop_class, study_uid=uid(label),
        series_uid=f"{uid(label)}.{series_no}", transfer_syntax="1.2.840.10008.1.2.1", patient_id=patient,
        study_date=date, study_time=normalise_time(time), accession_number=accession,
        study_description=description, referring_physician=referring,
        institution_name="Qianzhong Provincial People's Hospital" if label in ("S1", "S2") else "County",
        institution_codes=institutions.get(label, ()), procedure_codes=codes.get(label, ()), modality=modality,
        series_number=series_no, series_description=f"{modality} series {series_no}", instance_number=inst,
        body_part="CHEST", **PATIENTS[patient])


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, index_factory: Any) -> SqliteIndex:
    idx = index_factory.index(tmp_path_factory.mktemp("index"), synchronous="OFF")
    for label, (*_, series) in STUDIES.items():
        for series_no, (modality, sop_class, count) in enumerate(series, start=1):
            for inst in range(1, count + 1):
                facts = _facts(label, series_no, modality, sop_class, inst)
                stored = StoredFile(f"{label}/{series_no}/{inst}.dcm", 1000, "0" * 64)
                idx.record_instance(facts, stored, "TEST", DuplicatePolicy.KEEP_FIRST)
    return idx


def key(keyword: str, value: Any) -> QueryKey:
    if isinstance(value, list):  # a sequence: zero or one item given as a dict
        items = tuple(QueryKey(k, "", v) for item in value for k, v in item.items())
        return QueryKey(keyword, "SQ", None, items)
    return QueryKey(keyword, "", value)


def make_query(level: Level, keys: dict[str, Any], model: InformationModel = InformationModel.STUDY_ROOT,
               ci: bool = False, combined: bool = False) -> Query:
    return Query(level, model, tuple(key(k, v) for k, v in keys.items()), combined_datetime=combined,
                 case_insensitive_pn=ci)


def studies(index: SqliteIndex, keys: dict[str, Any], **options: Any) -> set[str]:
    keys = {"StudyInstanceUID": "", **keys}
    return {label_of(m["StudyInstanceUID"]) for m in matching.find(index, make_query(Level.STUDY, keys, **options))}


# -- the table -------------------------------------------------------------------------------
STUDY_CASES: list[tuple[str, dict[str, Any], dict[str, Any], set[str]]] = [
    # universal
    ("empty-value-is-universal", {"PatientName": ""}, {}, ALL),
    ("star-alone-is-universal-pn", {"PatientName": "*"}, {}, ALL),
    ("star-alone-is-universal-even-for-da", {"StudyDate": "*"}, {}, ALL),
    ("star-alone-in-list-is-universal", {"ModalitiesInStudy": "MR\\*"}, {}, ALL),
    # person names
    ("pn-single-value-case-sensitive", {"PatientName": "Zhang^San"}, {}, {"S1", "S2"}),
    ("pn-other-case-no-match-when-case-sensitive", {"PatientName": "zhang^san"}, {}, set()),
    ("pn-other-case-matches-when-insensitive", {"PatientName": "zhang^san"}, {"ci": True}, {"S1", "S2"}),
    ("pn-wildcard-case-sensitive", {"PatientName": "Zhang*"}, {}, {"S1", "S2"}),
    ("pn-wildcard-case-insensitive", {"PatientName": "ZHANG*"}, {"ci": True}, {"S1", "S2", "S3"}),
    ("pn-question-mark-is-one-char", {"PatientName": "Zhang^Sa?"}, {}, {"S1", "S2"}),
    ("pn-question-mark-is-not-zero-chars", {"PatientName": "Zhang^San?"}, {}, set()),
    ("pn-question-mark-is-not-two-chars", {"PatientName": "Zhang^S?"}, {}, set()),
    ("pn-chinese-single-value", {"PatientName": "王^小明"}, {}, {"S4"}),
    ("pn-chinese-wildcard-finds-any-group", {"PatientName": "王*"}, {}, {"S4", "S5"}),
    ("pn-trailing-star-prefix-of-first-group", {"PatientName": "Wang^XiaoH*"}, {}, {"S5"}),  # "P*" covers "P*=*"
    ("pn-trailing-star-prefix-of-later-group", {"PatientName": "王^小*"}, {}, {"S4", "S5"}),  # "*=P*" covers "*=P*=*"
    ("pn-chinese-question-mark-one-ideograph", {"PatientName": "王^小?"}, {}, {"S4", "S5"}),
    ("pn-chinese-case-insensitive", {"PatientName": "王^小明"}, {"ci": True}, {"S4"}),
    ("pn-ideographic-group-single-value", {"PatientName": "王^小红"}, {}, {"S5"}),
    ("pn-alphabetic-group-single-value", {"PatientName": "Wang^XiaoHong"}, {}, {"S5"}),
    ("pn-alphabetic-group-case-insensitive", {"PatientName": "wang^xiaohong"}, {"ci": True}, {"S5"}),
    ("pn-whole-multi-group-value", {"PatientName": "Wang^XiaoHong=王^小红"}, {}, {"S5"}),
    ("pn-underscore-is-literal", {"PatientName": "Li_Si"}, {}, {"S6"}),
    ("pn-underscore-literal-with-star", {"PatientName": "Li_*"}, {}, {"S6"}),
    ("pn-percent-is-literal", {"PatientName": "Li%"}, {}, set()),
    ("pn-bracket-is-literal", {"PatientName": "O'Brien^[T*"}, {}, {"S7"}),
    ("pn-referring-physician-case-sensitive", {"ReferringPhysicianName": "Li^Wei"}, {}, {"S1"}),
    ("pn-referring-physician-case-insensitive", {"ReferringPhysicianName": "LI^WEI"}, {"ci": True}, {"S1", "S2"}),
    # LO / SH / CS text
    ("lo-percent-single-value", {"PatientID": "P%5"}, {}, {"S6"}),
    ("lo-percent-not-a-wildcard", {"PatientID": "P%*"}, {}, {"S6"}),
    ("lo-list-of-values", {"PatientID": "P001\\P003"}, {}, {"S1", "S2", "S4"}),
    ("lo-issuer-single-value", {"IssuerOfPatientID": "HOSP_B"}, {}, {"S4", "S5"}),
    ("sh-accession-single-value", {"AccessionNumber": "ACC1"}, {}, {"S1"}),
    ("sh-accession-question-marks", {"AccessionNumber": "ACC?"}, {}, {"S1", "S2", "S5", "S6", "S7", "S8"}),
    ("sh-underscore-literal-not-like", {"AccessionNumber": "ACC_4"}, {}, {"S4"}),
    ("sh-percent-literal-not-like", {"AccessionNumber": "ACC%4"}, {}, {"S3"}),
    ("lo-wildcard-is-case-sensitive", {"StudyDescription": "ct*"}, {}, set()),
    ("lo-wildcard-prefix", {"StudyDescription": "CT*"}, {}, {"S1", "S3"}),
    ("lo-wildcard-infix", {"StudyDescription": "*CHEST"}, {}, {"S1", "S4"}),
    ("lo-institution-name-wildcard", {"InstitutionName": "*Provincial*"}, {}, {"S1", "S2"}),
    ("cs-sex-single-value", {"PatientSex": "F"}, {}, {"S3", "S5"}),
    # dates
    ("da-single-date", {"StudyDate": "20240101"}, {}, {"S1", "S3"}),
    ("da-single-date-as-range", {"StudyDate": "20240101-20240101"}, {}, {"S1", "S3"}),
    ("da-closed-range", {"StudyDate": "20240101-20240102"}, {}, {"S1", "S2", "S3"}),
    ("da-open-lower-bound", {"StudyDate": "20240115-"}, {}, {"S4", "S7", "S8"}),
    ("da-open-upper-bound", {"StudyDate": "-20231231"}, {}, {"S5"}),
    ("da-range-never-matches-empty-date", {"StudyDate": "-20991231"}, {}, ALL - {"S6"}),
    ("da-wildcard-is-not-allowed", {"StudyDate": "2024*"}, {}, set()),
    ("da-garbage-matches-nothing", {"StudyDate": "yesterday"}, {}, set()),
    ("da-birth-date-range", {"PatientBirthDate": "19850101-20001231"}, {}, {"S3", "S4"}),
    ("da-list-of-dates", {"StudyDate": "20231231\\20240201"}, {}, {"S5", "S7"}),
    # times
    ("tm-single-hhmm-is-its-minute", {"StudyTime": "0800"}, {}, {"S1"}),
    ("tm-colons-accepted", {"StudyTime": "08:00"}, {}, {"S1"}),
    ("tm-closed-range", {"StudyTime": "0500-0900"}, {}, {"S1", "S2", "S8"}),
    ("tm-upper-bound-includes-whole-minute", {"StudyTime": "-1200"}, {}, {"S1", "S2", "S5", "S7", "S8"}),
    ("tm-upper-bound-seconds-includes-fraction", {"StudyTime": "-120030"}, {}, {"S1", "S2", "S5", "S7", "S8"}),
    ("tm-upper-bound-before-value", {"StudyTime": "-120029"}, {}, {"S1", "S2", "S7", "S8"}),
    ("tm-open-lower-bound", {"StudyTime": "2200-"}, {}, {"S3"}),
    ("tm-range-never-matches-empty-time", {"StudyTime": "-2359"}, {}, ALL - {"S4", "S6"}),
    ("tm-fraction-single-value", {"StudyTime": "120030.5"}, {}, {"S5"}),
    ("tm-other-fraction-no-match", {"StudyTime": "120030.6"}, {}, set()),
    ("tm-hour-only-lower-bound", {"StudyTime": "10-"}, {}, {"S3", "S5", "S7"}),
    # date + time
    ("dt-independent-without-negotiation", {"StudyDate": "20240101-20240102", "StudyTime": "2200-0600"}, {},
     set()),
    ("dt-combined-across-midnight", {"StudyDate": "20240101-20240102", "StudyTime": "2200-0600"},
     {"combined": True}, {"S2", "S3"}),
    ("dt-combined-open-lower", {"StudyDate": "20240102-", "StudyTime": "0500-"}, {"combined": True},
     {"S2", "S7", "S8"}),
    ("dt-combined-open-upper", {"StudyDate": "-20240101", "StudyTime": "-0900"}, {"combined": True},
     {"S1", "S5"}),
    ("dt-combined-mixed-forms-match-independently", {"StudyDate": "20240101-20240102", "StudyTime": "0700-"},
     {"combined": True}, {"S1", "S3"}),
    ("dt-combined-single-date-stays-independent", {"StudyDate": "20240101", "StudyTime": "0700-0900"},
     {"combined": True}, {"S1"}),
    # UIDs
    ("ui-single-value", {"StudyInstanceUID": uid("S1")}, {}, {"S1"}),
    ("ui-list-of-uids", {"StudyInstanceUID": f"{uid('S1')}\\{uid('S3')}"}, {}, {"S1", "S3"}),
    ("ui-wildcard-is-not-allowed", {"StudyInstanceUID": f"{ROOT}.*"}, {}, set()),
    # sequences
    ("seq-other-id-with-right-issuer",
     {"OtherPatientIDsSequence": [{"PatientID": "110101198001010011", "IssuerOfPatientID": RESIDENT}]}, {},
     {"S1", "S2"}),
    ("seq-other-id-with-wrong-issuer",
     {"OtherPatientIDsSequence": [{"PatientID": "110101198001010011", "IssuerOfPatientID": "NOPE"}]}, {}, set()),
    ("seq-other-id-universal-issuer",
     {"OtherPatientIDsSequence": [{"PatientID": "110101198001010011", "IssuerOfPatientID": ""}]}, {},
     {"S1", "S2", "S4"}),
    ("seq-other-id-universal-id", {"OtherPatientIDsSequence": [{"PatientID": "", "IssuerOfPatientID": "OTHER-ISSUER"}]},
     {}, {"S4"}),
    ("seq-other-id-wildcard", {"OtherPatientIDsSequence": [{"PatientID": "2202*"}]}, {}, {"S3"}),
    ("seq-empty-item-is-universal", {"OtherPatientIDsSequence": [{}]}, {}, ALL),
    ("seq-no-item-is-universal", {"OtherPatientIDsSequence": []}, {}, ALL),
    ("seq-procedure-code", {"ProcedureCodeSequence": [{"CodeValue": "CT001", "CodingSchemeDesignator": "CN-ITEM"}]},
     {}, {"S1"}),
    ("seq-procedure-code-wrong-scheme",
     {"ProcedureCodeSequence": [{"CodeValue": "CT001", "CodingSchemeDesignator": "LOCAL"}]}, {}, set()),
    ("seq-procedure-code-meaning-ignored-when-empty", {"ProcedureCodeSequence": [{"CodeValue": "CT001",
                                                                                  "CodeMeaning": ""}]},
     {}, {"S1"}),
    ("seq-institution-code", {"InstitutionCodeSequence": [{"CodeValue": "PRV001"}]}, {}, {"S1", "S2"}),
    ("seq-institution-code-not-a-procedure-code", {"ProcedureCodeSequence": [{"CodeValue": "PRV001"}]}, {}, set()),
    # study-level computed keys
    ("modalities-single", {"ModalitiesInStudy": "MR"}, {}, {"S2"}),
    ("modalities-any-of-list", {"ModalitiesInStudy": "MR\\DX"}, {}, {"S2", "S4"}),
    ("modalities-one-of-several-in-study", {"ModalitiesInStudy": "SR"}, {}, {"S3"}),
    ("modalities-wildcard", {"ModalitiesInStudy": "C?"}, {}, {"S1", "S3", "S7", "S8"}),
    ("sop-classes-in-study", {"SOPClassesInStudy": SR}, {}, {"S3"}),
    ("counts-are-return-only", {"NumberOfStudyRelatedInstances": "10"}, {}, ALL),
    ("unknown-key-is-not-matched", {"PatientAge": "042Y"}, {}, ALL),
    # several keys AND-ed
    ("keys-are-and-ed", {"PatientName": "Zhang*", "ModalitiesInStudy": "CT"}, {}, {"S1"}),
]


@pytest.mark.parametrize("keys, options, expected", [c[1:] for c in STUDY_CASES], ids=[c[0] for c in STUDY_CASES])
def test_study_level_matching(index: SqliteIndex, keys: dict[str, Any], options: dict[str, Any],
                              expected: set[str]) -> None:
    assert studies(index, keys, **options) == expected


LOWER_CASES: list[tuple[str, Level, dict[str, Any], int]] = [
    ("series-of-a-study", Level.SERIES, {"StudyInstanceUID": uid("S1")}, 2),
    ("series-modality", Level.SERIES, {"StudyInstanceUID": uid("S3"), "Modality": "SR"}, 1),
    ("series-number-single-value", Level.SERIES, {"StudyInstanceUID": uid("S1"), "SeriesNumber": "2"}, 1),
    ("series-number-not-a-number", Level.SERIES, {"StudyInstanceUID": uid("S1"), "SeriesNumber": "2*"}, 0),
    ("series-description-wildcard", Level.SERIES, {"StudyInstanceUID": uid("S1"), "SeriesDescription": "*2"}, 1),
    ("series-uid-list", Level.SERIES, {"StudyInstanceUID": uid("S1"),
                                       "SeriesInstanceUID": f"{uid('S1')}.1\\{uid('S1')}.2"}, 2),
    ("series-upper-key-patient-name", Level.SERIES, {"StudyInstanceUID": uid("S1"), "PatientName": "Nobody"}, 0),
    ("images-of-a-series", Level.IMAGE, {"StudyInstanceUID": uid("S1"), "SeriesInstanceUID": f"{uid('S1')}.1"}, 5),
    ("image-instance-number", Level.IMAGE, {"StudyInstanceUID": uid("S1"), "SeriesInstanceUID": f"{uid('S1')}.1",
                                            "InstanceNumber": "3"}, 1),
    ("image-sop-class", Level.IMAGE, {"StudyInstanceUID": uid("S3"), "SeriesInstanceUID": f"{uid('S3')}.2",
                                      "SOPClassUID": SR}, 1),
    ("image-sop-instance-uid-list", Level.IMAGE, {"StudyInstanceUID": uid("S1"), "SeriesInstanceUID": f"{uid('S1')}.1",
                                                  "SOPInstanceUID": f"{uid('S1')}.1.1\\{uid('S1')}.1.4"}, 2),
]


@pytest.mark.parametrize("level, keys, count", [c[1:] for c in LOWER_CASES], ids=[c[0] for c in LOWER_CASES])
def test_series_and_image_level_matching(index: SqliteIndex, level: Level, keys: dict[str, Any], count: int) -> None:
    assert len(list(matching.find(index, make_query(level, keys)))) == count


PATIENT_CASES: list[tuple[str, dict[str, Any], set[str]]] = [
    ("patient-id-single", {"PatientID": "P001"}, {"P001"}),
    ("patient-name-wildcard", {"PatientName": "Zhang*"}, {"P001"}),
    ("patient-other-id", {"OtherPatientIDsSequence": [{"PatientID": "110101198001010011"}]}, {"P001", "P003"}),
    ("patient-universal", {"PatientID": ""}, {"P001", "P002", "P003", "P004", "P%5", "P006", "P007"}),
    ("patient-birth-date-open", {"PatientBirthDate": "19950101-"}, {"P003"}),
]


@pytest.mark.parametrize("keys, expected", [c[1:] for c in PATIENT_CASES], ids=[c[0] for c in PATIENT_CASES])
def test_patient_level_matching(index: SqliteIndex, keys: dict[str, Any], expected: set[str]) -> None:
    query = make_query(Level.PATIENT, {"PatientID": "", **keys}, model=InformationModel.PATIENT_ROOT)
    assert {m["PatientID"] for m in matching.find(index, query)} == expected


# -- behaviour -------------------------------------------------------------------------------
def test_one_response_per_study_however_many_instances(index: SqliteIndex) -> None:
    query = make_query(Level.STUDY, {"StudyInstanceUID": uid("S1"), "NumberOfStudyRelatedInstances": "",
                                     "NumberOfStudyRelatedSeries": "", "ModalitiesInStudy": ""})
    [match] = list(matching.find(index, query))
    assert (match["NumberOfStudyRelatedInstances"], match["NumberOfStudyRelatedSeries"]) == (10, 2)
    assert match["ModalitiesInStudy"] == "CT"
    assert match["_study_uid"] == uid("S1") and match["_patient_id"] == "P001" and match["_issuer"] == "HOSP_A"


def test_upper_level_attributes_and_computed_keys_at_study_level(index: SqliteIndex) -> None:
    query = make_query(Level.STUDY, {"StudyInstanceUID": uid("S3"), "PatientName": "", "ModalitiesInStudy": "",
                                     "SOPClassesInStudy": "", "NumberOfPatientRelatedStudies": ""})
    [match] = list(matching.find(index, query))
    assert match["PatientName"] == "zhang^si"
    assert match["ModalitiesInStudy"] == "CT\\SR"
    assert match["SOPClassesInStudy"] == f"{CT}\\{SR}"
    assert match["NumberOfPatientRelatedStudies"] == 1


def test_patient_level_counts(index: SqliteIndex) -> None:
    query = make_query(Level.PATIENT, {"PatientID": "P001", "NumberOfPatientRelatedStudies": "",
                                       "NumberOfPatientRelatedSeries": "", "NumberOfPatientRelatedInstances": ""},
                       model=InformationModel.PATIENT_ROOT)
    [match] = list(matching.find(index, query))
    counts = [match[f"NumberOfPatientRelated{k}"] for k in ("Studies", "Series", "Instances")]
    assert counts == [2, 3, 12]
    assert "_study_uid" not in match


def test_allowed_study_uids_hide_studies_patients_and_counts(index: SqliteIndex) -> None:
    allowed = {uid("S1"), uid("S4")}
    query = make_query(Level.PATIENT, {"PatientID": "", "NumberOfPatientRelatedStudies": "",
                                       "NumberOfPatientRelatedInstances": ""}, model=InformationModel.PATIENT_ROOT)
    patients = {m["PatientID"]: m for m in matching.find(index, query, allowed_study_uids=allowed)}
    assert set(patients) == {"P001", "P003"}
    assert (patients["P001"]["NumberOfPatientRelatedStudies"], patients["P001"]["NumberOfPatientRelatedInstances"]) \
        == (1, 10)
    found = matching.find(index, make_query(Level.STUDY, {"PatientID": "P001", "NumberOfPatientRelatedStudies": ""}),
                          allowed_study_uids=allowed)
    assert [(label_of(m["StudyInstanceUID"]), m["NumberOfPatientRelatedStudies"]) for m in found] == [("S1", 1)]
    series = matching.find(index, make_query(Level.SERIES, {"StudyInstanceUID": uid("S2")}), allowed_study_uids=allowed)
    assert list(series) == []


def test_no_allowed_study_means_no_match(index: SqliteIndex) -> None:
    assert list(matching.find(index, make_query(Level.STUDY, {}), allowed_study_uids=set())) == []


def test_limit_refuses_more_matches_than_allowed(index: SqliteIndex) -> None:
    with pytest.raises(TooManyResults):
        matching.find(index, make_query(Level.STUDY, {}), limit=len(STUDIES) - 1)
    assert len(list(matching.find(index, make_query(Level.STUDY, {}), limit=len(STUDIES)))) == len(STUDIES)


def test_sequence_items_returned_are_the_matching_ones(index: SqliteIndex) -> None:
    query = make_query(Level.STUDY, {"StudyInstanceUID": uid("S1"),
                                     "ProcedureCodeSequence": [{"CodeValue": "CT009", "CodeMeaning": ""}],
                                     "OtherPatientIDsSequence": []})
    [match] = list(matching.find(index, query))
    assert match["ProcedureCodeSequence"] == [{"CodeValue": "CT009", "CodingSchemeDesignator": "CN-ITEM",
                                               "CodeMeaning": "CT other"}]
    assert match["OtherPatientIDsSequence"] == [{"PatientID": "110101198001010011", "IssuerOfPatientID": RESIDENT,
                                                 "TypeOfPatientID": "TEXT"}]


def test_non_empty_key_below_level_is_refused(index: SqliteIndex) -> None:
    with pytest.raises(InvalidQuery):
        matching.find(index, make_query(Level.STUDY, {"Modality": "CT"}))


@pytest.mark.parametrize("charset, name, expected", [
    ("GB18030", "王*", {"S4", "S5"}),
    ("GBK", "王^小明", {"S4"}),
    ("ISO_IR 192", "王^小?", {"S4", "S5"}),
], ids=["gb18030-wildcard", "gbk-single-value", "utf8-question-mark"])
def test_encoded_identifier_values_match_stored_unicode(index: SqliteIndex, charset: str, name: str,
                                                        expected: set[str]) -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientName = name
    ds.StudyInstanceUID = ""
    wire = decode(io.BytesIO(encode(ds, True, True)), True, True)  # as it arrives: raw bytes
    query = parse_identifier(wire, InformationModel.STUDY_ROOT)
    assert {label_of(m["StudyInstanceUID"]) for m in matching.find(index, query)} == expected


def test_iso_2022_ir_58_identifier_matches_stored_unicode(index: SqliteIndex) -> None:
    value = b"\x1b$)A\xcd\xf5^\x1b$)A\xd0\xa1\xc3\xf7"  # 王^小明, designated as PS3.5 K.2 shows
    wire = b"".join(_element(g, e, v) for g, e, v in [
        (0x0008, 0x0005, b"\\ISO 2022 IR 58"), (0x0008, 0x0052, b"STUDY"), (0x0010, 0x0010, value)])
    query = parse_identifier(decode(io.BytesIO(wire), True, True), InformationModel.STUDY_ROOT)
    assert query.value("PatientName") == "王^小明"
    assert {label_of(m["StudyInstanceUID"]) for m in matching.find(index, query)} == {"S4"}


def _element(group: int, elem: int, value: bytes) -> bytes:
    value += b" " * (len(value) % 2)
    return group.to_bytes(2, "little") + elem.to_bytes(2, "little") + len(value).to_bytes(4, "little") + value


# -- retrieve --------------------------------------------------------------------------------
@pytest.mark.parametrize("level, keys, count", [
    (Level.PATIENT, {"PatientID": "P001"}, 12),
    (Level.STUDY, {"StudyInstanceUID": uid("S1")}, 10),
    (Level.STUDY, {"StudyInstanceUID": f"{uid('S1')}\\{uid('S2')}"}, 12),
    (Level.SERIES, {"StudyInstanceUID": uid("S1"), "SeriesInstanceUID": f"{uid('S1')}.2"}, 5),
    (Level.IMAGE, {"StudyInstanceUID": uid("S1"), "SeriesInstanceUID": f"{uid('S1')}.2",
                   "SOPInstanceUID": f"{uid('S1')}.2.1\\{uid('S1')}.2.2"}, 2),
], ids=["patient-all-studies", "study", "study-list", "series", "image-list"])
def test_match_instances(index: SqliteIndex, tmp_path: Path, level: Level, keys: dict[str, Any], count: int) -> None:
    model = InformationModel.PATIENT_ROOT if level is Level.PATIENT else InformationModel.STUDY_ROOT
    found = matching.match_instances(index, make_query(level, keys, model=model), tmp_path)
    assert len(found) == count
    assert all(Path(loc.path).is_absolute() and loc.path.startswith(str(tmp_path)) for loc in found)


def test_match_instances_respects_allowed_and_refuses_universal(index: SqliteIndex, tmp_path: Path) -> None:
    query = make_query(Level.PATIENT, {"PatientID": "P001"}, model=InformationModel.PATIENT_ROOT)
    found = matching.match_instances(index, query, tmp_path, allowed_study_uids={uid("S2")})
    assert {loc.study_uid for loc in found} == {uid("S2")}
    with pytest.raises(InvalidQuery):
        matching.match_instances(index, make_query(Level.STUDY, {"StudyInstanceUID": ""}), tmp_path)
