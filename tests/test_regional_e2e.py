"""The sample region end to end, in the order a demo would run it: three ``pacsnode serve`` nodes on
loopback, DCMTK as the peers (the region, the peers and the expectations: ``tests/regional_support.py``).

Access and advice on the wire, moves, QC rejection, consultation shares, priors, decisions and the
audit trail they leave. The three nodes start once per module; tests that change state (reject, share)
put it back, and the last test reads the audit rows the others left. The recognition details, provenance
and IOCM tests run on their own region in ``test_regional_details.py``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from regional_support import (MARKS, AET, CTY_CT, HIDDEN_EQUALS_ABSENT, HR_KEYS, INSTITUTIONS, OTHER_RESIDENT_ID, PRV_MR,
                              RESIDENT_ID, RULES, STUDIES, TWN_DX, UID_ROOT, VIEWER_AET, Region, audit_events,
                              chen_studies_at, expected_advice, findscu, hr_block, instance_uids, may_see, movescu,
                              ok, patient_keys)
from support import LOOPBACK, NodeProcess, Storescp, ToolResult, free_port

pytestmark = MARKS

# -- the tests, in the order a demo would run them ------------------------------------------------
def test_each_node_holds_only_its_own_studies_all_accepted_by_qc(region: Region) -> None:
    for inst, node in region.nodes.items():
        held = {s["study_uid"] for s in node.studies()}
        assert held == {uid for uid, s in STUDIES.items() if s["institution"] == inst}
        statuses = {row["study_uid"]: row["status"] for row in region.json(inst, "qc", "list", "--json")}
        assert set(statuses.values()) == {"accepted"}, statuses


CALLS = [(holder, caller) for holder in ("PRV001", "CTY001", "TWN001")
         for caller in ("PRV001", "CTY001", "TWN001", "PVT001") if caller != holder]


@pytest.mark.parametrize("holder, caller", CALLS, ids=[f"{AET[c]}-asks-{AET[h]}" for h, c in CALLS])
def test_resident_id_query_returns_what_the_peer_may_see_with_its_advice(
        region: Region, tmp_path: Path, holder: str, caller: str) -> None:
    answer = findscu(region.nodes[holder], AET[caller], patient_keys() + HR_KEYS, tmp_path)
    assert answer.status == 0x0000, answer.result.explain()
    expected = chen_studies_at(holder) if may_see(caller, holder) else set()
    assert answer.study_uids == expected
    for uid, response in answer.by_uid().items():
        status, failed, until = expected_advice(uid, caller)
        block = hr_block(response)
        assert block == {"status": status, "failed": failed, "valid_until": until}
        explained = region.explain(uid, caller)
        assert (explained["status"], set(explained["failed"]), explained["valid_until"].replace("-", "")) == (
            block["status"], block["failed"], block["valid_until"])


NO_CONTEXT = [
    ("PRV001", "CTY001", []),
    ("TWN001", "PRV001", []),
    ("CTY001", "PVT001", []),
    ("CTY001", "TWN001", ["PatientID=P0815"]),  # a local ID without its issuer names nobody
    ("PRV001", "CTY001", ["PatientID=*", "IssuerOfPatientID=PRV001"]),  # a wildcard is browsing
]


@pytest.mark.parametrize("holder, caller, keys", NO_CONTEXT,
                         ids=["county-bare", "provincial-bare", "private-bare", "id-without-issuer", "wildcard-id"])
def test_query_without_patient_context_is_refused(region: Region, tmp_path: Path, holder: str, caller: str,
                                                  keys: list[str]) -> None:
    answer = findscu(region.nodes[holder], AET[caller], keys, tmp_path)
    assert answer.responses == []
    assert answer.status == 0x0124  # Refused: Not Authorized
    assert "patient" in answer.comment.lower()


def test_local_patient_id_with_issuer_is_patient_context(region: Region, tmp_path: Path) -> None:
    answer = findscu(region.nodes["CTY001"], "PRV_PACS", ["PatientID=P0815", "IssuerOfPatientID=CTY001"], tmp_path)
    assert (answer.status, answer.study_uids) == (0x0000, {CTY_CT})


def test_private_clinic_cannot_move_a_study(region: Region, tmp_path: Path) -> None:
    status, comment, received = movescu(region.nodes["PRV001"], "PVT_PACS", "PVT_PACS", region.pvt_port, PRV_MR,
                                        tmp_path)
    assert status not in (0x0000, 0xFF00, 0xB000)
    assert status == 0x0124
    assert comment == HIDDEN_EQUALS_ABSENT  # the wire does not say the study exists; the audit trail does
    assert received == set()


def test_alliance_peer_retrieves_a_study(region: Region, tmp_path: Path) -> None:
    status, comment, received = movescu(region.nodes["PRV001"], "CTY_PACS", VIEWER_AET, region.viewer_port, PRV_MR,
                                        tmp_path)
    assert (status, comment) == (0x0000, "")
    assert received == instance_uids(PRV_MR)


def _register_raw_peer(node: NodeProcess, name: str, aet: str, port: int, institution: str) -> None:
    """A peer row written straight into the index, as an old registration (or a region file that
    dropped its institution) leaves it: ``peer add`` may refuse to create it today."""
    import sqlite3

    conn = sqlite3.connect(str(node.home / "index.sqlite"), timeout=30)
    try:
        with conn:
            conn.execute("INSERT INTO peers (name, aet, host, port, institution) VALUES (?,?,?,?,?)",
                         (name, aet, LOOPBACK, port, institution))
    finally:
        conn.close()


DESTINATIONS = [("another-institution", "PVT_DEST", "PVT001"), ("no-institution", "NOINST_DEST", ""),
                ("outside-the-region", "FAR_DEST", "SHA001")]


@pytest.mark.parametrize("case, aet, institution", DESTINATIONS, ids=[d[0] for d in DESTINATIONS])
def test_move_to_a_destination_that_may_not_see_the_study_sends_nothing(
        region: Region, tmp_path: Path, case: str, aet: str, institution: str) -> None:
    """CTY_PACS may have PRV_MR (alliance); the destination it names is decided as if it had asked."""
    provincial = region.nodes["PRV001"]
    destination = Storescp(tmp_path / "storescp", aet).start()
    name = f"dest-{case}"
    try:
        if institution in INSTITUTIONS:
            ok(provincial.cli("peer", "add", name, "--aet", aet, "--host", LOOPBACK, "--port",
                               str(destination.port), "--institution", institution, "--permissions", "echo"))
        else:
            _register_raw_peer(provincial, name, aet, destination.port, institution)
        status, comment, received = movescu(provincial, "CTY_PACS", aet, free_port(), PRV_MR, tmp_path / "movescu")
        assert status == 0x0124, comment
        assert aet in comment
        assert received == set() and destination.received() == {}
    finally:
        destination.stop()
        provincial.cli("peer", "remove", name)
    refusals = [e for e in audit_events(region, "PRV001", "--peer", "county")
                if (e["action"], e["outcome"]) == ("move", "refused") and e["detail"].get("destination") == aet]
    assert refusals, "the refused move is audited"
    event = refusals[-1]
    assert (event["peer_aet"], event["study_uid"]) == ("CTY_PACS", PRV_MR)
    expected = "no_relationship" if institution == "PVT001" else "unknown_peer"
    assert event["detail"]["destination_refused"] == {PRV_MR: expected}


def test_hidden_and_missing_studies_answer_the_same_across_nodes(region: Region, tmp_path: Path) -> None:
    """PVT_PACS asks the provincial node for its MR study (outside access) and for a study nobody has."""
    provincial = region.nodes["PRV001"]
    hidden = movescu(provincial, "PVT_PACS", "PVT_PACS", region.pvt_port, PRV_MR, tmp_path / "hidden")
    missing = movescu(provincial, "PVT_PACS", "PVT_PACS", region.pvt_port, UID_ROOT + "404", tmp_path / "missing")
    assert hidden == missing == (0x0124, HIDDEN_EQUALS_ABSENT, set())


def test_rejected_study_is_invisible_to_peers_until_restored(region: Region, tmp_path: Path) -> None:
    county = region.nodes["CTY001"]
    ok(county.cli("qc", "reject", CTY_CT, "--reviewer", "Dr Li", "--note", "motion artefact"))
    try:
        for caller in ("PRV001", "TWN001"):
            answer = findscu(county, AET[caller], patient_keys() + HR_KEYS, tmp_path / f"rejected-{caller}")
            assert (answer.status, answer.study_uids) == (0x0000, set())
        assert "qc_not_accepted" in region.explain(CTY_CT, "TWN001")["failed"]
        uid_only = findscu(county, "TWN_PACS", [f"StudyInstanceUID={CTY_CT}"], tmp_path / "by-uid")
        assert uid_only.study_uids == set()  # naming the UID does not get past the rejection
    finally:
        restored = ok(county.cli("qc", "restore", CTY_CT, "--reviewer", "Dr Li"))
    assert "pending" in restored.stdout
    answer = findscu(county, "TWN_PACS", patient_keys() + HR_KEYS, tmp_path / "restored")
    assert answer.study_uids == {CTY_CT}
    block = hr_block(answer.by_uid()[CTY_CT])
    assert block["status"] == "NOT_ELIGIBLE" and block["failed"] == {"qc_not_accepted"}  # pending is not accepted
    rerun = ok(county.cli("qc", "run", CTY_CT))
    assert f"{CTY_CT}: accepted" in rerun.stdout
    answer = findscu(county, "TWN_PACS", patient_keys() + HR_KEYS, tmp_path / "accepted")
    status, failed, until = expected_advice(CTY_CT, "TWN001")
    assert hr_block(answer.by_uid()[CTY_CT]) == {"status": status, "failed": failed, "valid_until": until}


def test_consultation_share_lets_the_private_clinic_find_that_one_study(region: Region, tmp_path: Path) -> None:
    township = region.nodes["TWN001"]
    granted = ok(township.cli("share", "grant", TWN_DX, "--to", "PVT001", "--days", "7", "--by", "Dr Zhang"))
    assert "PVT001" in granted.stdout
    try:
        answer = findscu(township, "PVT_PACS", patient_keys() + HR_KEYS, tmp_path / "shared")
        assert (answer.status, answer.study_uids) == (0x0000, {TWN_DX})
        status, failed, until = expected_advice(TWN_DX, "PVT001")
        assert "out_of_scope" in failed  # shared for consultation, not recognised outside the mark's scope
        assert hr_block(answer.responses[0]) == {"status": status, "failed": failed, "valid_until": until}
        other = findscu(township, "PVT_PACS", patient_keys(OTHER_RESIDENT_ID), tmp_path / "other-patient")
        assert (other.status, other.study_uids) == (0x0000, set())
        bare = findscu(township, "PVT_PACS", [], tmp_path / "bare")
        assert bare.status == 0x0124 and bare.responses == []
        for holder in ("PRV001", "CTY001"):
            elsewhere = findscu(region.nodes[holder], "PVT_PACS", patient_keys(), tmp_path / f"at-{holder}")
            assert elsewhere.study_uids == set()
        status, _comment, received = movescu(township, "PVT_PACS", "PVT_PACS", region.pvt_port, TWN_DX,
                                             tmp_path / "move-shared")
        assert (status, received) == (0x0000, instance_uids(TWN_DX))
        status, comment, received = movescu(township, "PVT_PACS", "PVT_PACS", region.pvt_port, UID_ROOT + "9",
                                            tmp_path / "move-unshared")
        assert (status, received, comment) == (0x0124, set(), HIDDEN_EQUALS_ABSENT)
        shares = region.json("TWN001", "share", "list", "--json")
        assert [(s["study_uid"], s["institution"], s["revoked_at"]) for s in shares] == [(TWN_DX, "PVT001", "")]
    finally:
        ok(township.cli("share", "revoke", TWN_DX, "--to", "PVT001"))
    after = findscu(township, "PVT_PACS", patient_keys(), tmp_path / "revoked")
    assert (after.status, after.study_uids) == (0x0000, set())


def priors(region: Region, institution: str) -> dict[str, Any]:
    return dict(region.json(institution, "priors", "--resident-id", RESIDENT_ID, "--json"))


def test_priors_at_the_provincial_node_merge_local_and_peer_answers(region: Region) -> None:
    result = priors(region, "PRV001")
    assert set(result) == {"priors", "errors"}
    assert set(result["errors"]) == {"private"}  # PVT_PACS does not listen: reported, not fatal
    found = {p["study_uid"]: p for p in result["priors"]}
    assert set(found) == {TWN_DX, CTY_CT, PRV_MR}
    assert [p["study_uid"] for p in result["priors"]] == [TWN_DX, CTY_CT, PRV_MR]  # newest first
    sources = {TWN_DX: "township", CTY_CT: "county", PRV_MR: "local"}
    for uid, prior in found.items():
        status, failed, until = expected_advice(uid, "PRV001")
        explained = region.explain(uid, "PRV001")  # at the holding node
        assert (prior["status"], set(prior["failed"]), prior["valid_until"]) == (status, failed, until)
        assert (explained["status"], set(explained["failed"])) == (status, failed)
        assert prior["source"] == sources[uid] and prior["also_at"] == []
        assert prior["institution_code"] == STUDIES[uid]["institution"]
        assert prior["item_code"] == explained["item_code"] == STUDIES[uid]["procedure_code"]
        assert prior["scope_label"] == RULES["region"]["label"]
        assert (prior["patient_id"], prior["issuer_of_patient_id"]) == (
            STUDIES[uid]["patient_id"], STUDIES[uid]["issuer_of_patient_id"])


def report_rows(region: Region, institution: str) -> dict[str, dict[str, Any]]:
    return {row["institution"]: row for row in region.json(institution, "report", "recognition", "--json")}


def decide(region: Region, institution: str, study_uid: str, *args: str) -> ToolResult:
    result = ok(region.cli(institution, "recognition", "decide", study_uid, *args, "--physician", "Dr Wang"))
    assert re.match(rf"decision \d+ recorded: \w+ {re.escape(study_uid)}", result.stdout), result.stdout
    return result


DECLINE = ("--decline", "--reason", "condition-changed", "--consent", "given", "--informed", "patient")


def test_a_decline_is_recorded_and_counted(region: Region) -> None:
    before = report_rows(region, "PRV001").get("CTY001", {})
    priors(region, "PRV001")  # the advice is shown (and snapshotted) before the physician decides
    decide(region, "PRV001", CTY_CT, *DECLINE)
    row = report_rows(region, "PRV001")["CTY001"]
    assert row["shown"] == before.get("shown", 0) + 1
    eligible = expected_advice(CTY_CT, "PRV001")[0] == "HR_ELIGIBLE"  # the city group: higher accepts lower
    assert row["eligible_shown"] == before.get("eligible_shown", 0) + int(eligible)
    assert (row["declined"], row["accepted"], row["declined_by_reason"]) == (1, 0, {"N1": 1})
    assert row["recognition_rate"] == (0.0 if eligible else None)  # declined on an eligible prior
    assert row["rate_all"] == 0.0


def test_recognition_rate_over_eligible_priors_at_the_county(region: Region) -> None:
    shown = {p["study_uid"]: p["status"] for p in priors(region, "CTY001")["priors"]}
    assert shown == {uid: expected_advice(uid, "CTY001")[0] for uid in (TWN_DX, CTY_CT, PRV_MR)}
    assert shown[TWN_DX] == shown[CTY_CT] == "HR_ELIGIBLE"  # AP-CMC recognises all items; own study
    decide(region, "CTY001", TWN_DX, *DECLINE)
    decide(region, "CTY001", CTY_CT, "--accept")
    rows = report_rows(region, "CTY001")
    assert rows["TWN001"]["eligible_shown"] >= 1 and rows["TWN001"]["declined_by_reason"] == {"N1": 1}
    assert (rows["TWN001"]["recognition_rate"], rows["CTY001"]["recognition_rate"]) == (0.0, 1.0)
    by_modality = {r["modality"]: r for r in region.json("CTY001", "report", "recognition", "--by", "modality",
                                                         "--json")}
    assert by_modality["DX"]["declined"] == 1 and by_modality["CT\\DOC"]["accepted"] == 1



def test_audit_trail_has_queries_retrievals_refusals_and_decisions(region: Region) -> None:
    events = audit_events(region, "PRV001")
    peer_events = {(e["action"], e["outcome"], e["peer_name"]) for e in events}
    assert {("find", "answered", "county"), ("find", "refused", "county"), ("find", "answered", "private"),
            ("move", "refused", "private"), ("move", "started", "county")} <= peer_events
    refused = [e for e in events if e["outcome"] == "refused"]
    assert all(e["detail"]["reason"] for e in refused)
    assert any("patient" in e["detail"]["reason"] for e in refused if e["action"] == "find")
    assert any(e["detail"]["reason"].startswith("no_relationship") and e["study_uid"] == PRV_MR
               for e in refused if e["action"] == "move")
    moved = [e for e in events if (e["action"], e["outcome"]) == ("move", "started")]
    assert [(e["study_uid"], e["detail"]["destination"], e["detail"]["instances"]) for e in moved] == [
        (PRV_MR, VIEWER_AET, len(instance_uids(PRV_MR)))]
    decisions = [e for e in events if e["action"] == "recognition-decision"]
    assert [(e["outcome"], e["study_uid"], e["detail"]["reasons"], e["detail"]["consent"], e["detail"]["physician"])
            for e in decisions] == [("decline", CTY_CT, ["N1"], "given", "Dr Wang")]
    assert any(e["action"] == "priors" for e in events)
    by_peer = audit_events(region, "PRV001", "--peer", "private")
    assert by_peer and {e["peer_name"] for e in by_peer} == {"private"}

    county = {(e["action"], e["outcome"], e["study_uid"]) for e in audit_events(region, "CTY001")}
    assert {("qc", "rejected", CTY_CT), ("qc", "pending", CTY_CT), ("qc", "accepted", CTY_CT)} <= county
    township = [(e["action"], e["outcome"]) for e in audit_events(region, "TWN001", "--study", TWN_DX)]
    assert ("share-grant", "granted") in township and ("share-revoke", "revoked") in township
    assert ("move", "started") in township
