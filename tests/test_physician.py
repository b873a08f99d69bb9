"""PhysicianDesk: explain, decide (validation, append-only, advice snapshots), shares, reports.

A county node (CTY001) in ``tmp_path`` with the shipped rules and the county's sample studies.
On the sample's "today", 2026-11-26 (``explain --at``):

* study 2, CT chest plain, 16 days: HR_ELIGIBLE (own study, qualified for CT, inside 30 days)
* study 13, DX chest, 3 days: HR_ELIGIBLE
* study 4, CR chest coded DX-CHEST: HR_ELIGIBLE (CTY001 holds DX and CR qualifications)
* study 5, CT head, 256 days: NOT_ELIGIBLE, outside_window

Decisions are taken against the advice *now*, so the tests that need a known advice decide
on peer studies whose advice they record as shown (what ``priors`` does), not on local ones
whose status moves with the calendar.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from pydicom.dataset import Dataset

from pacsnode.config import parse_config
from pacsnode.dicom.query import parse_identifier
from pacsnode.errors import NotFound, PacsnodeError, RecognitionError
from pacsnode.model import InformationModel, Peer
from pacsnode.node import Node
from pacsnode.physician import report_csv
from pacsnode.recognition import DecisionInput
from support import REPO, SAMPLE_DIR

pytestmark = pytest.mark.skipif(not (SAMPLE_DIR / "CTY001").is_dir(), reason="sample_dicom/ is not generated")

UID_ROOT = "1.2.826.0.1.3680043.10.1078.1."
CT_CHEST, CR_CHEST, CT_HEAD, DX_CHEST = (UID_ROOT + n for n in ("2", "4", "5", "13"))
REMOTE_DX = UID_ROOT + "1"  # CHEN^JIANGUO's DX chest at the township: not in this node
REMOTE_MR = UID_ROOT + "3"  # and his MR brain at the provincial hospital
SAMPLE_TODAY = date(2026, 11, 26)
PRIVATE = Peer("private", "PVT_PACS", "127.0.0.1", 11114, "PVT001")


# -- fixtures (may move to conftest.py) -----------------------------------------------------------
@pytest.fixture(scope="module")
def county_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A county node home with the sample studies imported once; tests work on copies."""
    home = tmp_path_factory.mktemp("county") / "home"
    home.mkdir()
    for name in ("recognition.toml", "qc_rules.toml"):
        shutil.copyfile(REPO / "config" / name, home / name)
    node = Node(parse_config({"node": {"aet": "CTY_PACS", "institution": "CTY001"}}, home))
    try:
        report = node.import_paths([SAMPLE_DIR / "CTY001"])
        assert set(report.qc.values()) == {"accepted"}
    finally:
        node.close()
    return home


@pytest.fixture
def county(county_template: Path, tmp_path: Path) -> Iterator[Node]:
    home = tmp_path / "county"
    shutil.copytree(county_template, home)
    node = Node(parse_config({"node": {"aet": "CTY_PACS", "institution": "CTY001"}}, home))
    yield node
    node.close()


def decision(kind: str, *reasons: str, consent: str = "", informed: str = "", note: str = "",
             physician: str = "Dr Wang") -> DecisionInput:
    return DecisionInput(kind, physician, tuple(reasons), consent, informed, note)


DECLINE_N1 = decision("decline", "condition-changed", consent="given", informed="patient")


def decisions(node: Node) -> list[dict[str, Any]]:
    return node.regional_store.decisions()


def show_remote(node: Node, status: str, failed: str = "", study_uid: str = REMOTE_DX) -> None:
    """What ``priors`` records when it shows a peer's study (its advice as the peer sent it)."""
    producer, modality, item = ("TWN001", "DX", "DX-CHEST") if study_uid == REMOTE_DX else \
        ("PRV001", "MR\\SR", "MR-BRAIN-PLAIN")
    node.regional_store.record_advice_shown([{
        "study_uid": study_uid, "viewer_institution": "CTY001", "producer": producer, "modality": modality,
        "item_code": item, "status": status, "failed": failed}])


@pytest.fixture
def shown(county: Node) -> Node:
    """The county node after ``priors`` showed REMOTE_DX eligible and REMOTE_MR outside its window."""
    show_remote(county, "HR_ELIGIBLE")
    show_remote(county, "NOT_ELIGIBLE", "outside_window", REMOTE_MR)
    return county


# -- explain --------------------------------------------------------------------------------------
def test_the_county_studies_advice(county: Node) -> None:
    assert {uid: (a.status, a.failed) for uid in (CT_CHEST, DX_CHEST, CR_CHEST, CT_HEAD)
            for a in [county.desk.explain(uid, at=SAMPLE_TODAY)]} == {
        CT_CHEST: ("HR_ELIGIBLE", ()), DX_CHEST: ("HR_ELIGIBLE", ()),
        CR_CHEST: ("HR_ELIGIBLE", ()), CT_HEAD: ("NOT_ELIGIBLE", ("outside_window",))}
    assert county.desk.explain(CT_CHEST, "TWN001", SAMPLE_TODAY).failed == ()  # lower accepts higher
    assert county.desk.explain(CT_CHEST, "PRV001", SAMPLE_TODAY).failed == ()  # higher accepts lower in the city group
    assert county.desk.explain(CT_CHEST, "PVT001", SAMPLE_TODAY).failed == ("out_of_scope",)
    last = county.desk.explain(CT_CHEST, at=date(2026, 12, 10))
    assert last.failed == () and last.valid_until == date(2026, 12, 10)  # exactly 30 days old: still valid
    assert county.desk.explain(CT_CHEST, at=date(2026, 12, 11)).failed == ("outside_window",)


def test_explain_an_unknown_study_is_a_clear_error(county: Node) -> None:
    with pytest.raises(NotFound, match=f"no study {UID_ROOT}999"):
        county.desk.explain(UID_ROOT + "999")


# -- decide: validation --------------------------------------------------------------------------
INVALID = [
    (REMOTE_DX, decision("decline", consent="given", informed="patient"), "at least one reason"),
    (REMOTE_DX, decision("decline", "N1", informed="patient"), "consent"),
    (REMOTE_DX, decision("decline", "N1", consent="given"), "informed party"),
    (REMOTE_DX, decision("decline", "N1", consent="not-obtainable", informed="family"), "emergency"),
    (REMOTE_DX, decision("decline", "Z9", consent="given", informed="patient"), "not a reason code"),
    (REMOTE_MR, decision("accept"), "needs a note"),
    (REMOTE_DX, decision("accept", "N1"), "decline only"),
    (REMOTE_DX, decision("accept", consent="given"), "decline"),
    (REMOTE_DX, decision("accept", note="x" * 201), "200"),
    (REMOTE_DX, decision("accept", physician=" "), "physician"),
    (REMOTE_DX, decision("maybe"), "accept or decline"),
    (CT_HEAD, decision("accept"), "needs a note"),  # a local study: advice computed now (256 days old)
]


@pytest.mark.parametrize("study_uid, entry, message", INVALID, ids=[
    "decline-without-reason", "decline-without-consent", "decline-without-informed-party",
    "not-obtainable-without-emergency", "unknown-reason", "accept-not-eligible-without-note",
    "accept-with-reasons", "accept-with-consent", "note-too-long", "no-physician", "neither",
    "accept-local-not-eligible-without-note"])
def test_invalid_decisions_are_refused_and_not_recorded(shown: Node, study_uid: str, entry: DecisionInput,
                                                       message: str) -> None:
    with pytest.raises(RecognitionError, match=message):
        shown.desk.decide(study_uid, entry)
    assert decisions(shown) == []
    assert not [e for e in shown.audit.events() if e.action == "recognition-decision"]


def test_accepting_against_the_advice_with_a_note_and_emergency_without_consent(shown: Node) -> None:
    shown.desk.decide(REMOTE_MR, decision("accept", note="stable chronic finding, no need to repeat"))
    shown.desk.decide(REMOTE_DX, decision("decline", "emergency", consent="not_obtainable", informed="family"))
    assert [(r["decision"], r["advice_status"], r["note"], r["reasons"], r["consent"]) for r in decisions(shown)] == [
        ("accept", "NOT_ELIGIBLE", "stable chronic finding, no need to repeat", "", ""),
        ("decline", "HR_ELIGIBLE", "", "N4", "not-obtainable")]


def test_local_studies_are_decided_on_the_advice_computed_now(county: Node) -> None:
    ids = [county.desk.decide(uid, DECLINE_N1) for uid in (CT_CHEST, CT_HEAD, CR_CHEST)]
    assert ids == sorted(ids) and len(set(ids)) == 3
    rows = {r["pk"]: r for r in decisions(county)}
    for decision_id, uid in zip(ids, (CT_CHEST, CT_HEAD, CR_CHEST)):
        advice = county.desk.explain(uid)
        row = rows[decision_id]
        assert (row["study_uid"], row["advice_status"], row["advice_failed"], row["item_code"]) == (
            uid, advice.status, ",".join(advice.failed), advice.item_code)
        assert (row["decision"], row["reasons"], row["consent"], row["informed"], row["physician"]) == (
            "decline", "N1", "given", "patient", "Dr Wang")
        assert (row["deciding_institution"], row["producer"]) == ("CTY001", "CTY001")
    assert rows[ids[1]]["advice_failed"] == "outside_window"  # 256 days old, whatever the date
    audited = [e for e in county.audit.events() if e.action == "recognition-decision"]
    assert [(e.outcome, e.study_uid) for e in audited] == [("decline", uid) for uid in (CT_CHEST, CT_HEAD, CR_CHEST)]
    assert json.loads(audited[0].detail)["reasons"] == ["N1"]


def test_decisions_are_append_only(shown: Node) -> None:
    county = shown
    first = county.desk.decide(REMOTE_DX, decision("accept"))
    before = decisions(county)
    second = county.desk.decide(REMOTE_DX, decision("decline", "P1", consent="given", informed="patient"))
    after = decisions(county)
    assert second > first and len(after) == 2
    assert after[0] == before[0]  # the first record is untouched
    assert [r["decision"] for r in after] == ["accept", "decline"]


# -- decide: remote studies and their snapshot -------------------------------------------------------
def test_an_unknown_study_is_a_clear_error(county: Node) -> None:
    with pytest.raises(NotFound, match="priors"):
        county.desk.decide(REMOTE_DX, DECLINE_N1)
    assert decisions(county) == []


def test_a_remote_study_is_decided_on_the_advice_shown(county: Node) -> None:
    show_remote(county, "HR_ELIGIBLE")
    county.desk.decide(REMOTE_DX, decision("accept"))  # eligible as shown: no note needed
    show_remote(county, "NOT_ELIGIBLE", "outside_window")  # shown again later: the last showing counts
    with pytest.raises(RecognitionError, match="needs a note"):
        county.desk.decide(REMOTE_DX, decision("accept"))
    county.desk.decide(REMOTE_DX, decision("decline", "outdated", consent="given", informed="patient"))
    rows = decisions(county)
    assert [(r["decision"], r["advice_status"], r["advice_failed"], r["producer"], r["item_code"], r["modality"])
            for r in rows] == [("accept", "HR_ELIGIBLE", "", "TWN001", "DX-CHEST", "DX"),
                               ("decline", "NOT_ELIGIBLE", "outside_window", "TWN001", "DX-CHEST", "DX")]
    assert rows[1]["reasons"] == "T1"


# -- shares -----------------------------------------------------------------------------------------
def _private_sees(node: Node) -> set[str]:
    ds = Dataset()
    ds.QueryRetrieveLevel, ds.StudyInstanceUID = "STUDY", ""
    ds.PatientID, ds.IssuerOfPatientID = "P0815", "CTY001"
    query = parse_identifier(ds, InformationModel.STUDY_ROOT)
    caller = node.identify("PVT_PACS", "127.0.0.1")
    return {str(m.get("StudyInstanceUID") or m.get("_study_uid")) for m in node.find(query, caller)}


def test_share_grant_and_revoke(county: Node) -> None:
    county.add_peer(PRIVATE)
    assert _private_sees(county) == set()
    expires = county.desk.grant_share(CT_CHEST, "PVT001", 7, granted_by="Dr Wang")
    assert timedelta(days=7) - timedelta(minutes=1) < expires - datetime.now(timezone.utc) <= timedelta(days=7)
    [share] = county.regional_store.shares()
    assert (share["study_uid"], share["institution"], share["granted_by"], share["revoked_at"]) == (
        CT_CHEST, "PVT001", "Dr Wang", "")
    assert _private_sees(county) == {CT_CHEST}
    county.desk.revoke_share(CT_CHEST, "PVT001")
    assert county.regional_store.shares()[0]["revoked_at"]
    assert _private_sees(county) == set()
    with pytest.raises(NotFound, match="no active share"):
        county.desk.revoke_share(CT_CHEST, "PVT001")
    assert [(e.action, e.outcome) for e in county.audit.events(study_uid=CT_CHEST) if e.action.startswith("share")] \
        == [("share-grant", "granted"), ("share-revoke", "revoked")]


@pytest.mark.parametrize("study_uid, institution, days, error, message", [
    (UID_ROOT + "999", "PVT001", 7, NotFound, "no study"),
    (CT_CHEST, "NOWHERE", 7, RecognitionError, "not in"),
    (CT_CHEST, "PVT001", 0, RecognitionError, "at least 1"),
], ids=["unknown-study", "unknown-institution", "zero-days"])
def test_share_errors(county: Node, study_uid: str, institution: str, days: int, error: type[PacsnodeError],
                      message: str) -> None:
    with pytest.raises(error, match=message):
        county.desk.grant_share(study_uid, institution, days)
    assert county.regional_store.shares() == []


# -- reports -------------------------------------------------------------------------------------------
R1, R2, R3 = (UID_ROOT + n for n in ("901", "902", "903"))  # PRV001 studies seen only through priors


def _decide_a_month(county: Node) -> None:
    """Shown: 2 eligible and 1 not eligible from PRV001, 1 eligible from TWN001. Decided: 5."""
    county.regional_store.record_advice_shown([
        {"study_uid": R1, "producer": "PRV001", "modality": "CT\\DOC", "item_code": "CT-CHEST-PLAIN",
         "status": "HR_ELIGIBLE"},
        {"study_uid": R2, "producer": "PRV001", "modality": "DX", "item_code": "DX-CHEST",
         "status": "HR_ELIGIBLE"},
        {"study_uid": R3, "producer": "PRV001", "modality": "CT", "item_code": "CT-HEAD-PLAIN",
         "status": "NOT_ELIGIBLE", "failed": "outside_window"}])
    show_remote(county, "HR_ELIGIBLE")
    county.desk.decide(R1, decision("accept"))
    county.desk.decide(R2, decision("decline", "N1", "P1", consent="given", informed="patient"))
    county.desk.decide(R3, decision("decline", "T1", consent="given", informed="patient"))
    county.desk.decide(R3, decision("accept", note="stable chronic finding"))  # a second decision
    county.desk.decide(REMOTE_DX, decision("accept"))


def test_report_counts_and_rate_over_eligible_priors(county: Node) -> None:
    _decide_a_month(county)
    rows = {r["institution"]: r for r in county.desk.report()}
    assert rows["PRV001"] == {
        "institution": "PRV001", "shown": 3, "eligible_shown": 2, "accepted": 2, "declined": 2,
        "declined_by_reason": {"N1": 1, "P1": 1, "T1": 1},
        "recognition_rate": 0.5,  # eligible only: accepted R1 / (accepted R1 + declined R2)
        "rate_all": 0.5}
    assert rows["TWN001"] == {
        "institution": "TWN001", "shown": 1, "eligible_shown": 1, "accepted": 1, "declined": 0,
        "declined_by_reason": {}, "recognition_rate": 1.0, "rate_all": 1.0}
    by_item = {r["item"]: r for r in county.desk.report(by="item")}
    assert by_item["DX-CHEST"]["recognition_rate"] == 0.5 and by_item["CT-HEAD-PLAIN"]["recognition_rate"] is None
    by_modality = {r["modality"]: r for r in county.desk.report(by="modality")}
    assert by_modality["CT"]["declined_by_reason"] == {"T1": 1} and by_modality["CT"]["rate_all"] == 0.5
    assert county.desk.report(since="2999-01-01") == []
    assert county.desk.report(until="2000-01-01") == []
    with pytest.raises(RecognitionError, match="--by"):
        county.desk.report(by="physician")


def test_report_csv(county: Node) -> None:
    _decide_a_month(county)
    text = report_csv(county.desk.report())
    table = list(csv.DictReader(io.StringIO(text)))
    assert list(table[0]) == ["institution", "shown", "eligible_shown", "accepted", "declined",
                              "declined_by_reason", "recognition_rate", "rate_all"]
    first = {r["institution"]: r for r in table}["PRV001"]
    assert (first["declined_by_reason"], first["recognition_rate"], first["shown"]) == ("N1=1;P1=1;T1=1", "0.5", "3")
    assert {r["institution"]: r for r in table}["TWN001"]["declined_by_reason"] == ""
    assert report_csv([]) == ""
