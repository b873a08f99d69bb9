"""recognition_advice as a table: is study S recognised for viewer X now (DESIGN.md 5.2)?"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Any

import pytest

from pacsnode.recognition import (
    CONDITION_CODES,
    HR_ELIGIBLE,
    NOT_ELIGIBLE,
    Alliance,
    AllianceMember,
    ExamItem,
    Institution,
    Qualification,
    Region,
    StudyFacts,
    recognition_advice,
)

D = date
NOW = datetime(2026, 6, 15, 9, 30)
Y2026 = (D(2026, 1, 1), D(2026, 12, 31))


def _inst(code: str, level: str, in_scope: bool = True) -> Institution:
    return Institution(code=code, name=f"{code} hospital", level=level, in_scope=in_scope)


def _qual(inst: str, modality: str = "", item: str = "", passed: bool = True, span: tuple[date, date] = Y2026) -> Qualification:
    return Qualification(inst, span[0], span[1], item=item, modality=modality, passed=passed)


REGION = Region(
    label="黔HR",
    institutions=(
        _inst("PRV001", "3A"),
        _inst("PRV002", "3B"),
        _inst("CTY001", "2A"),
        _inst("CTY002", "2A"),  # left the county community at the end of 2025
        _inst("TWN001", "1"),
        _inst("TWN002", "1"),  # joins the county community on 2026-07-01
        _inst("PVT001", "unrated", in_scope=False),
    ),
    alliances=(
        Alliance("QZ-CMG", "city group", "city-medical-group", recognize_all_items=False,
                 members=tuple(AllianceMember(c, D(2024, 1, 1)) for c in ("PRV001", "CTY001", "TWN001"))),
        Alliance("AP-CMC", "county community", "county-medical-community", recognize_all_items=True,
                 members=(AllianceMember("CTY001", D(2024, 1, 1)), AllianceMember("TWN001", D(2024, 1, 1)),
                          AllianceMember("CTY002", D(2024, 1, 1), D(2025, 12, 31)),
                          AllianceMember("TWN002", D(2026, 7, 1)))),
    ),
    catalog=(
        ExamItem("CT-HEAD-PLAIN", "CT head", ("CT",), ("HEAD", "BRAIN"), "plain", ("CT-HEAD-PLAIN",), 30),
        ExamItem("CT-CHEST-PLAIN", "CT chest", ("CT",), ("CHEST",), "plain", ("CT-CHEST-PLAIN",), 30),
        ExamItem("CT-CHEST-CONTRAST", "CT chest enh", ("CT",), ("CHEST",), "contrast", ("CT-CHEST-CONTRAST",), 30),
        ExamItem("MR-BRAIN-PLAIN", "MR brain", ("MR",), ("BRAIN",), "plain", ("MR-BRAIN-PLAIN",), 30),
        ExamItem("DX-CHEST", "DR chest", ("DX", "CR"), ("CHEST",), "plain", ("DX-CHEST",), 30),
        ExamItem("DX-BONE", "DR bone", ("DX", "CR"), ("KNEE", "SPINE"), "plain", ("DX-BONE",), 90),
        ExamItem("US-ABDOMEN", "US abdomen", ("US",), ("ABDOMEN",), "plain", ("US-ABDOMEN",), 14),
        ExamItem("NM-BONE", "Bone scan", ("NM",), (), "any", ("NM-BONE",), 30, eligible=False),
    ),
    qualifications=(
        *(_qual("PRV001", m) for m in ("CT", "MR", "DX", "CR", "US", "NM")),
        _qual("PRV001", item="CT-HEAD-PLAIN", passed=False),  # item-level fail beats modality pass
        _qual("PRV002", item="CT-CHEST-PLAIN"),  # item-level pass only
        _qual("CTY001", "CT"), _qual("CTY001", "DX"),
        _qual("CTY001", "MR", span=(D(2025, 1, 1), D(2025, 12, 31))),  # expired
        _qual("CTY002", "CT"),
        _qual("TWN001", "DX"), _qual("TWN001", "US"), _qual("TWN001", "DX", span=(D(2025, 1, 1), D(2025, 12, 31))),
        _qual("TWN002", "DX"),
        _qual("PVT001", "CT", passed=False),
    ),
)


def _study(**changes: Any) -> StudyFacts:
    base = StudyFacts(study_uid="1.2.3", study_date=D(2026, 6, 1), modalities=("CT",), body_parts=("CHEST",),
                      procedure_codes=("CT-CHEST-PLAIN",), producer="PRV001", qc_status="accepted")
    return replace(base, **changes)


def _days_old(days: int, **changes: Any) -> StudyFacts:
    return _study(study_date=NOW.date() - timedelta(days=days), **changes)


DX_TWN = dict(modalities=("DX",), body_parts=("CHEST",), procedure_codes=("DX-CHEST",), producer="TWN001")
US_TWN = dict(modalities=("US",), body_parts=("ABDOMEN",), procedure_codes=("US-ABDOMEN",), producer="TWN001")
CT_CTY = dict(producer="CTY001")

CASES = [
    pytest.param(dict(), (), id="qualified-provincial-ct-seen-by-county-is-eligible"),
    # --- level rule ----------------------------------------------------------------------------
    pytest.param(dict(viewer="CTY002", study=_study(**CT_CTY)), (), id="same-level-recognises-same-level"),
    pytest.param(dict(viewer="TWN001"), (), id="lower-accepts-higher"),
    pytest.param(dict(viewer="PRV001", study=_study(**CT_CTY)), (),
                 id="higher-accepts-lower-inside-any-alliance"),
    pytest.param(dict(viewer="CTY001", study=_study(**DX_TWN)), (), id="higher-accepts-lower-in-recognise-all-alliance"),
    pytest.param(dict(viewer="CTY002", study=_study(**DX_TWN)), ("level_rule",), id="higher-does-not-accept-lower-after-leaving-alliance"),
    pytest.param(dict(viewer="CTY001", study=_study(**{**DX_TWN, "producer": "TWN002"}, study_date=D(2026, 6, 25)),
                      now=datetime(2026, 7, 10)), ("level_rule",), id="producer-not-yet-member-on-study-date"),
    pytest.param(dict(viewer="CTY001", study=_study(**{**DX_TWN, "producer": "TWN002"}, study_date=D(2026, 7, 1)),
                      now=datetime(2026, 7, 10)), (), id="producer-member-from-study-date-inclusive"),
    pytest.param(dict(viewer="PRV001", study=_study(**CT_CTY), region=replace(REGION, allow_higher_accepts_lower=True)),
                 (), id="region-may-allow-higher-to-accept-lower"),
    pytest.param(dict(viewer="PRV001", study=_study(producer="PRV002")), (), id="3A-and-3B-are-same-tier"),
    pytest.param(dict(viewer="PRV001", study=_study(producer="PRV002"), region=replace(REGION, same_level_by="grade")),
                 ("level_rule",), id="3A-above-3B-when-comparing-grades"),
    pytest.param(dict(viewer="PRV002", region=replace(REGION, same_level_by="grade")), (),
                 id="3B-accepts-3A-when-comparing-grades"),
    pytest.param(dict(viewer="TWN001", study=_study(**DX_TWN)), (), id="viewer-is-the-producer"),
    # --- validity window -----------------------------------------------------------------------
    pytest.param(dict(study=_days_old(30)), (), id="exactly-valid-days-old-still-valid"),
    pytest.param(dict(study=_days_old(31)), ("outside_window",), id="one-day-past-window-not-valid"),
    pytest.param(dict(study=_days_old(0)), (), id="same-day-study-valid"),
    pytest.param(dict(viewer="CTY001", study=_days_old(14, **US_TWN)), (), id="ultrasound-14-days-valid"),
    pytest.param(dict(viewer="TWN001", study=_days_old(15, **US_TWN)), ("outside_window",), id="ultrasound-15-days-not-valid"),
    pytest.param(dict(study=_days_old(90, modalities=("DX",), body_parts=("KNEE",), procedure_codes=())), (),
                 id="bone-radiograph-90-days-valid"),
    pytest.param(dict(study=_days_old(-1)), (), id="study-dated-tomorrow-tolerated"),
    pytest.param(dict(study=_days_old(-2)), ("outside_window",), id="study-dated-in-future-not-valid"),
    # --- producer qualification ----------------------------------------------------------------
    pytest.param(dict(study=_study(study_date=D(2025, 12, 31)), now=datetime(2026, 1, 10)), ("producer_not_qualified",),
                 id="qualification-not-yet-valid-on-study-date"),
    pytest.param(dict(study=_study(study_date=D(2026, 1, 1)), now=datetime(2026, 1, 10)), (), id="qualification-valid-from-first-day"),
    pytest.param(dict(study=_study(study_date=D(2026, 12, 31)), now=datetime(2027, 1, 5)), (),
                 id="qualification-on-study-date-counts-even-after-it-expires"),
    pytest.param(dict(viewer="CTY002", study=_study(modalities=("MR",), body_parts=("BRAIN",), procedure_codes=("MR-BRAIN-PLAIN",),
                                                    producer="CTY001")), ("producer_not_qualified",),
                 id="qualification-for-another-modality-does-not-count"),
    pytest.param(dict(viewer="CTY002", study=_study(modalities=("MR",), body_parts=("BRAIN",), producer="CTY001",
                                                    procedure_codes=(), study_date=D(2025, 12, 20)), now=datetime(2026, 1, 2)),
                 (), id="qualification-valid-on-study-date-in-previous-year"),
    pytest.param(dict(viewer="TWN001", study=_study(modalities=("CR",), body_parts=("CHEST",), procedure_codes=("DX-CHEST",),
                                                    producer="CTY001")), ("producer_not_qualified",),
                 id="dx-qualification-does-not-cover-cr-study"),
    pytest.param(dict(viewer="TWN001", study=_study(modalities=("CR",), body_parts=("CHEST",), procedure_codes=())), (),
                 id="cr-qualification-by-modality-covers-dr-chest-item"),
    pytest.param(dict(study=_study(body_parts=("HEAD",), procedure_codes=("CT-HEAD-PLAIN",))), ("producer_not_qualified",),
                 id="item-level-fail-overrides-modality-pass"),
    pytest.param(dict(viewer="PRV001", study=_study(producer="PRV002")), (), id="item-level-pass-without-modality-record"),
    pytest.param(dict(viewer="PRV001", study=_study(producer="PRV002", body_parts=("HEAD",), procedure_codes=())),
                 ("producer_not_qualified",), id="item-level-pass-covers-only-that-item"),
    pytest.param(dict(viewer="PRV001", study=_study(producer="PVT001")), ("producer_not_qualified", "level_rule"),
                 id="failed-evaluation-is-not-a-qualification"),
    # --- study QC and copy quality -------------------------------------------------------------
    pytest.param(dict(study=_study(qc_status="pending")), ("qc_not_accepted",), id="qc-pending-not-eligible"),
    pytest.param(dict(study=_study(qc_status="")), ("qc_not_accepted",), id="qc-unknown-not-eligible"),
    pytest.param(dict(study=_study(qc_status="needs-fix")), ("qc_not_accepted",), id="qc-needs-fix-not-eligible"),
    pytest.param(dict(study=_study(qc_status="rejected")), ("qc_not_accepted",), id="qc-rejected-not-eligible"),
    pytest.param(dict(study=_study(qc_status=""), region=replace(REGION, qc_required_status="any")), (),
                 id="qc-any-accepts-unknown-status"),
    pytest.param(dict(study=_study(qc_status="rejected"), region=replace(REGION, qc_required_status="any")),
                 ("qc_not_accepted",), id="qc-any-still-refuses-rejected"),
    pytest.param(dict(study=_study(lossy=True)), ("lossy",), id="lossy-copy-not-eligible"),
    # --- scope and missing data ----------------------------------------------------------------
    pytest.param(dict(viewer="PVT001"), ("out_of_scope",), id="viewer-outside-scope-of-mark"),
    pytest.param(dict(viewer="XYZ999"), ("viewer_unknown", "out_of_scope", "level_rule"), id="unknown-viewer"),
    pytest.param(dict(study=_study(producer="")), ("producer_unknown", "producer_not_qualified", "level_rule"),
                 id="unknown-producer"),
    pytest.param(dict(study=_study(study_date=None)), ("producer_not_qualified", "no_study_date", "outside_window"),
                 id="no-study-date"),
    pytest.param(dict(study=_study(modalities=("PT",), body_parts=("WHOLEBODY",), procedure_codes=())),
                 ("item_not_listed", "item_mismatch", "no_images", "producer_not_qualified", "outside_window"),
                 id="unlisted-item"),
    pytest.param(dict(study=_study(modalities=("NM",), body_parts=(), procedure_codes=("NM-BONE",))), ("item_not_listed",),
                 id="listed-but-ineligible-item"),
    pytest.param(dict(study=_days_old(31, lossy=True, qc_status="pending")), ("qc_not_accepted", "lossy", "outside_window"),
                 id="every-failure-is-listed"),
    # --- issue 12.1: the images are what is recognised -----------------------------------------
    pytest.param(dict(study=_study(modalities=("DOC",), image_modalities=())), ("no_images",),
                 id="pdf-report-only-study-is-not-eligible-for-the-imaging-item"),
    pytest.param(dict(study=_study(modalities=("CT", "SR"), image_modalities=())), ("no_images",),
                 id="sr-in-a-ct-series-is-not-a-ct-image"),
    pytest.param(dict(study=_study(modalities=("CT", "DOC"), image_modalities=("CT",))), (),
                 id="images-and-a-report-are-judged-on-the-images"),
    pytest.param(dict(study=_study(modalities=("MR", "DOC"), image_modalities=("MR",))),
                 ("no_images", "producer_not_qualified"), id="images-of-another-modality-than-the-item"),
    pytest.param(dict(study=_study(modalities=("DOC",), image_modalities=(), procedure_codes=())),
                 ("item_not_listed", "item_mismatch", "no_images", "producer_not_qualified", "outside_window"),
                 id="report-only-without-code-resolves-to-no-item"),
    pytest.param(dict(study=_study(body_parts=("CHEST", "HEAD"), image_body_parts=("CHEST",))), (),
                 id="body-part-of-a-report-series-does-not-count"),
    # --- issue 12.2: de-identified copies ------------------------------------------------------
    pytest.param(dict(study=_study(deidentified=True)), ("incomplete",), id="deidentified-copy-is-incomplete"),
    pytest.param(dict(study=_study(deidentified=True, lossy=True)), ("lossy", "incomplete"),
                 id="lossy-and-deidentified-both-listed"),
    # --- issue 10: the code and the dataset contradict each other -------------------------------
    pytest.param(dict(study=_study(contrast=True)), ("item_mismatch",), id="plain-code-with-contrast-agent-is-a-mismatch"),
    pytest.param(dict(study=_study(body_parts=("HEAD",))), ("item_mismatch",), id="chest-code-on-head-images-is-a-mismatch"),
    pytest.param(dict(study=_study(procedure_codes=("CT-CHEST-CONTRAST",))), (),
                 id="contrast-code-without-agent-is-no-contradiction-type-2-may-be-empty"),
    pytest.param(dict(study=_study(body_parts=())), (), id="no-body-part-is-no-contradiction"),
    # --- issue 12.6: alliance membership over time ---------------------------------------------
    pytest.param(dict(viewer="CTY002", study=_study(**{**DX_TWN, "study_date": D(2025, 12, 20)}),
                      now=datetime(2026, 1, 5)), (),
                 id="alliance-ended-between-study-date-and-now-level-rule-judged-on-study-date"),
    pytest.param(dict(viewer="CTY001", study=_study(**{**DX_TWN, "producer": "TWN002"}, study_date=D(2026, 6, 25)),
                      now=datetime(2026, 7, 10)), ("level_rule",),
                 id="alliance-began-between-study-date-and-now-does-not-reach-back"),
]


@pytest.mark.parametrize(("call", "failed"), CASES)
def test_recognition_advice(call: dict[str, Any], failed: tuple[str, ...]) -> None:
    advice = recognition_advice(call.get("region", REGION), call.get("study", _study()), call.get("viewer", "CTY001"),
                                call.get("now", NOW))
    assert advice.failed == failed
    assert advice.status == (NOT_ELIGIBLE if failed else HR_ELIGIBLE)
    assert [c.code for c in advice.conditions] == list(CONDITION_CODES)
    assert all(c.explanation for c in advice.conditions)


ITEM_CASES = [
    pytest.param(_study(), "CT-CHEST-PLAIN", id="by-procedure-code"),
    pytest.param(_study(procedure_codes=()), "CT-CHEST-PLAIN", id="by-modality-and-body-part"),
    pytest.param(_study(procedure_codes=(), contrast=True), "CT-CHEST-CONTRAST", id="contrast-picks-enhanced-item"),
    pytest.param(_study(procedure_codes=("CT-HEAD-PLAIN",)), "CT-HEAD-PLAIN", id="procedure-code-beats-body-part"),
    pytest.param(_study(procedure_codes=("LOCAL-123",)), "CT-CHEST-PLAIN", id="unknown-code-falls-back-to-body-part"),
    pytest.param(_study(modalities=("PT",), procedure_codes=()), "", id="no-item"),
]


def test_every_new_condition_has_plain_words_and_a_decline_reason() -> None:
    from pacsnode.recognition import REASON_CODES, SUGGESTED_REASON

    study = _study(modalities=("DOC",), image_modalities=(), deidentified=True, contrast=True)
    advice = recognition_advice(REGION, study, "CTY001", NOW)
    explained = {c.code: c.explanation for c in advice.conditions if not c.holds}
    assert set(explained) == {"no_images", "incomplete", "item_mismatch"}
    assert "CT images" in explained["no_images"] and "DOC" in explained["no_images"]
    assert "de-identified" in explained["incomplete"]
    assert "Contrast/Bolus Agent" in explained["item_mismatch"]
    assert {code: SUGGESTED_REASON[code] for code in explained} == {
        "no_images": "X1", "incomplete": "Q1", "item_mismatch": "B1"}
    assert set(SUGGESTED_REASON.values()) <= set(REASON_CODES)


def test_access_is_judged_now_while_the_level_rule_uses_the_study_date() -> None:
    """Issue 12.6, both boundaries, against the one access door: seeing is about now."""
    from pacsnode.recognition import QueryContext, decide_access

    ended = _study(**{**DX_TWN, "study_date": D(2025, 12, 20)}, patient_id="P1", issuer_of_patient_id="TWN001")
    context = QueryContext("P1", "TWN001")
    access = decide_access(REGION, "TWN001", "CTY002", True, ended, context, (), datetime(2026, 1, 5))
    assert (access.allowed, access.reason) == (False, "no_relationship")  # the alliance ended: not seen now
    begun = replace(ended, producer="TWN002", study_date=D(2026, 6, 25))
    access = decide_access(REGION, "TWN002", "CTY001", True, begun, QueryContext("P1", "TWN001"), (),
                           datetime(2026, 7, 10))
    assert (access.allowed, access.reason) == (True, "alliance")  # members now: seen, but not recognised
    assert recognition_advice(REGION, begun, "CTY001", datetime(2026, 7, 10)).failed == ("level_rule",)


@pytest.mark.parametrize(("study", "item_code"), ITEM_CASES)
def test_advice_names_the_item(study: StudyFacts, item_code: str) -> None:
    assert recognition_advice(REGION, study, "CTY001", NOW).item_code == item_code


@pytest.mark.parametrize(
    ("study", "valid_until"),
    [
        pytest.param(_study(), D(2026, 7, 1), id="ct-30-days"),
        pytest.param(_study(**US_TWN), D(2026, 6, 15), id="us-14-days"),
        pytest.param(_study(study_date=None), None, id="no-date-no-end"),
        pytest.param(_study(modalities=("PT",), procedure_codes=()), None, id="no-item-no-end"),
    ],
)
def test_valid_until_is_study_date_plus_window(study: StudyFacts, valid_until: date | None) -> None:
    assert recognition_advice(REGION, study, "CTY001", NOW).valid_until == valid_until


def test_scope_label_is_the_region_mark() -> None:
    assert recognition_advice(REGION, _study(), "CTY001", NOW).scope_label == "黔HR"
    assert recognition_advice(REGION, _study(producer=""), "PVT001", NOW).scope_label == "黔HR"
