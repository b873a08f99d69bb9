"""The sample region end to end: three ``pacsnode serve`` nodes on loopback, DCMTK as the peers.

provincial (PRV001, PRV_PACS), county (CTY001, CTY_PACS) and township (TWN001, TWN_PACS) each
import only their own institution's folder of ``sample_dicom`` and register the other two,
plus the private clinic's PVT_PACS (PVT001, in no alliance) at a port where nothing listens
unless a test runs ``movescu`` there. DCMTK ``findscu``/``movescu`` call *as* a peer's AE
title, so a node sees them as that peer.

Expectations are not copied from the product: they are computed here from
``config/recognition.toml`` (alliances, levels, scope, catalog windows) and from the study
dates relative to today (the sample's "today" is 2026-11-26), and then compared with what
the nodes answer on the wire and with ``recognition explain`` at the holding node.

The three nodes start once per module; tests that change state (reject, share) put it back.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from iocm_factory import rejection_note
from support import (LOOPBACK, REPO, SAMPLE_DIR, SAMPLE_MANIFEST, NodeProcess, Storescp, ToolResult, dcmtk, free_port,
                     have_tool, run_tool, write_instance)

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not (have_tool("findscu") and have_tool("movescu")), reason="DCMTK findscu/movescu missing"),
    pytest.mark.skipif(not SAMPLE_DIR.is_dir(), reason="sample_dicom/ is not generated"),
]

RULES = tomllib.loads((REPO / "config" / "recognition.toml").read_text(encoding="utf-8"))
MANIFEST = json.loads(SAMPLE_MANIFEST.read_text(encoding="utf-8"))
STUDIES = {s["study_instance_uid"]: s for s in MANIFEST["studies"]}
INSTITUTIONS = {i["code"]: i for i in RULES["institutions"]}

RESIDENT_ID = "520100199001010011"  # CHEN^JIANGUO: a study at each of the three nodes
OTHER_RESIDENT_ID = "520181199208150026"  # 李^华: two studies at the township only
RESIDENT_ISSUER = "CN-RESIDENT-ID"
UID_ROOT = "1.2.826.0.1.3680043.10.1078.1."
TWN_DX, CTY_CT, PRV_MR = (UID_ROOT + n for n in "123")

# name -> (institution, AE title)
NODES = {"provincial": ("PRV001", "PRV_PACS"), "county": ("CTY001", "CTY_PACS"), "township": ("TWN001", "TWN_PACS")}
AET = {inst: aet for inst, aet in NODES.values()} | {"PVT001": "PVT_PACS"}
PEER_NAME = {inst: name for name, (inst, _aet) in NODES.items()} | {"PVT001": "private"}
VIEWER_AET = "CTY_VIEW"  # a county workstation registered at the provincial node as a move destination
HIDDEN_EQUALS_ABSENT = "no study matches that this caller may retrieve"  # errors.NothingToRetrieve.MESSAGE
TIER = {"3A": 3, "3B": 3, "3": 3, "2A": 2, "2B": 2, "2": 2, "1": 1, "unrated": 0, "independent": 0}


# -- expectations, from the config and the calendar -------------------------------------------
def today() -> date:
    return datetime.now(timezone.utc).date()  # the rules run on the node's UTC clock


def alliances_of(*codes: str) -> list[dict[str, Any]]:
    return [a for a in RULES["alliances"] if all(code in a["members"] for code in codes)]


def may_see(viewer: str, producer: str) -> bool:
    """Access as the sample region sets it: own study, or a common alliance (no region sharing)."""
    assert RULES["region"]["share_within_region"] is False
    return viewer == producer or bool(alliances_of(viewer, producer))


def expected_advice(study_uid: str, viewer: str) -> tuple[str, set[str], str]:
    """(status, failed conditions, valid until YYYYMMDD) for the CHEN studies (items qualified, QC accepted)."""
    assert RULES["region"]["same_level_by"] == "tier" and not RULES["region"]["allow_higher_accepts_lower"]
    study = STUDIES[study_uid]
    item = next(i for i in RULES["catalog"] if study["procedure_code"] in i["procedure_codes"])
    studied = datetime.strptime(study["study_date"], "%Y%m%d").date()
    producer, seer = INSTITUTIONS[study["institution"]], INSTITUTIONS[viewer]
    failed = set()
    if (today() - studied).days > item["valid_days"]:
        failed.add("outside_window")
    if not within(seer["geo"], RULES["region"]["scope_geo"]):
        failed.add("out_of_scope")  # the viewer's region lies outside the mark's scope (issue 12.3)
    higher = TIER[seer["level"]] > TIER[producer["level"]]
    if viewer != producer["code"] and higher and not alliances_of(viewer, producer["code"]):
        failed.add("level_rule")  # higher accepts lower only inside an alliance
    until = (studied + timedelta(days=item["valid_days"])).strftime("%Y%m%d")
    return ("NOT_ELIGIBLE" if failed else "HR_ELIGIBLE"), failed, until


def within(code: str, scope: str) -> bool:
    """GB/T 2260 divisions: a county (520121) lies within its city (520100) and province (520000)."""
    significant = 2 if scope.endswith("0000") else 4 if scope.endswith("00") else 6
    return code[:significant] == scope[:significant]


def chen_studies_at(institution: str) -> set[str]:
    return {uid for uid, s in STUDIES.items() if s["institution"] == institution and s.get("resident_id") == RESIDENT_ID}


def instance_uids(study_uid: str) -> set[str]:
    return {str(dcmread(SAMPLE_DIR / f, stop_before_pixels=True).SOPInstanceUID)
            for series in STUDIES[study_uid]["series"] for f in series["files"]}


# -- DCMTK as a peer ----------------------------------------------------------------------------
@dataclass
class Answer:
    """What a findscu/movescu run got back: the final status, its Error Comment, the matches."""

    status: int
    comment: str
    responses: list[Dataset]
    result: ToolResult

    @property
    def study_uids(self) -> set[str]:
        return {str(r.StudyInstanceUID) for r in self.responses}

    def by_uid(self) -> dict[str, Dataset]:
        return {str(r.StudyInstanceUID): r for r in self.responses}


def _final(result: ToolResult, kind: str) -> tuple[int, str]:
    at = result.output.rfind(f"Received Final {kind} Response")
    assert at >= 0, f"no final {kind} response:\n{result.explain()}"
    tail = result.output[at:]
    status = re.search(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})", tail)
    assert status, result.explain()
    comment = re.search(r"\(0000,0902\) LO \[([^\]]*)\]", tail)
    return int(status.group(1), 16), comment.group(1) if comment else ""


def patient_keys(resident_id: str = RESIDENT_ID) -> list[str]:
    return [f"(0010,1002)[0].PatientID={resident_id}", f"(0010,1002)[0].IssuerOfPatientID={RESIDENT_ISSUER}"]


HR_KEYS = ["(0011,0010)=PACSNODE HR", "(0011,1001)", "(0011,1003)", "(0011,1004)"]


def findscu(node: NodeProcess, calling: str, keys: list[str], out: Path) -> Answer:
    out.mkdir(parents=True, exist_ok=True)
    args = [dcmtk("findscu"), "-d", "-S", "-to", "20", "-aet", calling, "-aec", node.aet, "-X", "-od", out,
            "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID", "-k", "StudyDate"]
    for key in keys:
        args += ["-k", key]
    result = run_tool([*args, LOOPBACK, str(node.port)], timeout=60)
    status, comment = _final(result, "Find")
    return Answer(status, comment, [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))], result)


def movescu(node: NodeProcess, calling: str, destination: str, listen_port: int, study_uid: str,
            out: Path) -> tuple[int, str, set[str]]:
    """C-MOVE a study to ``destination``, with movescu itself receiving on ``listen_port``."""
    out.mkdir(parents=True, exist_ok=True)
    result = run_tool([dcmtk("movescu"), "-d", "-S", "-to", "20", "-aet", calling, "-aec", node.aet, "-aem", destination,
                       "--port", str(listen_port), "-od", out, "-k", "QueryRetrieveLevel=STUDY",
                       "-k", f"StudyInstanceUID={study_uid}", LOOPBACK, str(node.port)], timeout=90)
    status, comment = _final(result, "Move")
    received = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in out.iterdir() if p.is_file()}
    return status, comment, received


def hr_block(ds: Dataset) -> dict[str, Any]:
    """The PACSNODE HR block of a response, decoded here (an Implicit VR response leaves it as bytes)."""
    block = next((e.tag.element for e in ds.group_dataset(0x0011)
                  if 0x10 <= e.tag.element <= 0xFF and _text(e.value) == "PACSNODE HR"), None)
    if block is None:
        return {}

    def value(offset: int) -> str:
        tag = 0x00110000 | (block << 8) | offset
        return _text(ds[tag].value) if tag in ds else ""

    return {"status": value(1), "failed": {f.lower() for f in value(3).split("\\") if f}, "valid_until": value(4)}


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    elif not isinstance(value, str) and value is not None:
        value = "\\".join(str(v) for v in value)
    return str(value or "").strip(" \x00")


# -- the region -----------------------------------------------------------------------------------
@dataclass
class Region:
    nodes: dict[str, NodeProcess]  # by institution code
    pvt_port: int  # PVT_PACS is registered here; nothing listens unless a test's movescu does
    viewer_port: int  # CTY_VIEW (move destination registered at the provincial node)

    def cli(self, institution: str, *args: str) -> ToolResult:
        return self.nodes[institution].cli(*args)

    def json(self, institution: str, *args: str) -> Any:
        result = self.cli(institution, *args)
        assert result.returncode == 0, result.explain()
        return json.loads(result.stdout)

    def explain(self, study_uid: str, viewer: str, holder: str = "") -> dict[str, Any]:
        holder = holder or STUDIES[study_uid]["institution"]
        return dict(self.json(holder, "recognition", "explain", study_uid, "--for", viewer, "--json"))


def _ok(result: ToolResult) -> ToolResult:
    assert result.returncode == 0, result.explain()
    return result


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Region]:
    base = tmp_path_factory.mktemp("region")
    nodes = {inst: NodeProcess(base / name, aet=aet, institution=inst) for name, (inst, aet) in NODES.items()}
    made = Region(nodes, pvt_port=free_port(), viewer_port=free_port())

    def prepare(inst: str) -> None:
        node = nodes[inst].init()
        node.configure("store", "accept_from", "any")  # the forged-producer and IOCM tests store as nobody
        _ok(node.cli("import", str(SAMPLE_DIR / inst)))
        node.start()

    def register(inst: str) -> None:
        node = nodes[inst]
        for other, peer in nodes.items():
            if other != inst:
                _ok(node.cli("peer", "add", PEER_NAME[other], "--aet", peer.aet, "--host", LOOPBACK,
                             "--port", str(peer.port), "--institution", other))
        _ok(node.cli("peer", "add", "private", "--aet", "PVT_PACS", "--host", LOOPBACK, "--port",
                     str(made.pvt_port), "--institution", "PVT001"))
        if inst == "PRV001":
            _ok(node.cli("peer", "add", "county-viewer", "--aet", VIEWER_AET, "--host", LOOPBACK, "--port",
                         str(made.viewer_port), "--institution", "CTY001", "--permissions", "echo,store"))

    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            list(pool.map(prepare, nodes))  # peers are added on running nodes: they know the real ports
            list(pool.map(register, nodes))
        yield made
    finally:
        for node in nodes.values():
            node.stop()


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
            _ok(provincial.cli("peer", "add", name, "--aet", aet, "--host", LOOPBACK, "--port",
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
    refusals = [e for e in _events(region, "PRV001", "--peer", "county")
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
    _ok(county.cli("qc", "reject", CTY_CT, "--reviewer", "Dr Li", "--note", "motion artefact"))
    try:
        for caller in ("PRV001", "TWN001"):
            answer = findscu(county, AET[caller], patient_keys() + HR_KEYS, tmp_path / f"rejected-{caller}")
            assert (answer.status, answer.study_uids) == (0x0000, set())
        assert "qc_not_accepted" in region.explain(CTY_CT, "TWN001")["failed"]
        uid_only = findscu(county, "TWN_PACS", [f"StudyInstanceUID={CTY_CT}"], tmp_path / "by-uid")
        assert uid_only.study_uids == set()  # naming the UID does not get past the rejection
    finally:
        restored = _ok(county.cli("qc", "restore", CTY_CT, "--reviewer", "Dr Li"))
    assert "pending" in restored.stdout
    answer = findscu(county, "TWN_PACS", patient_keys() + HR_KEYS, tmp_path / "restored")
    assert answer.study_uids == {CTY_CT}
    block = hr_block(answer.by_uid()[CTY_CT])
    assert block["status"] == "NOT_ELIGIBLE" and block["failed"] == {"qc_not_accepted"}  # pending is not accepted
    rerun = _ok(county.cli("qc", "run", CTY_CT))
    assert f"{CTY_CT}: accepted" in rerun.stdout
    answer = findscu(county, "TWN_PACS", patient_keys() + HR_KEYS, tmp_path / "accepted")
    status, failed, until = expected_advice(CTY_CT, "TWN001")
    assert hr_block(answer.by_uid()[CTY_CT]) == {"status": status, "failed": failed, "valid_until": until}


def test_consultation_share_lets_the_private_clinic_find_that_one_study(region: Region, tmp_path: Path) -> None:
    township = region.nodes["TWN001"]
    granted = _ok(township.cli("share", "grant", TWN_DX, "--to", "PVT001", "--days", "7", "--by", "Dr Zhang"))
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
        _ok(township.cli("share", "revoke", TWN_DX, "--to", "PVT001"))
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
    result = _ok(region.cli(institution, "recognition", "decide", study_uid, *args, "--physician", "Dr Wang"))
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


def _events(region: Region, institution: str, *args: str) -> list[dict[str, Any]]:
    events = region.json(institution, "audit", "--json", *args)
    for event in events:
        event["detail"] = json.loads(event["detail"]) if str(event["detail"]).startswith("{") else event["detail"]
    return list(events)


def test_audit_trail_has_queries_retrievals_refusals_and_decisions(region: Region) -> None:
    events = _events(region, "PRV001")
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
    by_peer = _events(region, "PRV001", "--peer", "private")
    assert by_peer and {e["peer_name"] for e in by_peer} == {"private"}

    county = {(e["action"], e["outcome"], e["study_uid"]) for e in _events(region, "CTY001")}
    assert {("qc", "rejected", CTY_CT), ("qc", "pending", CTY_CT), ("qc", "accepted", CTY_CT)} <= county
    township = [(e["action"], e["outcome"]) for e in _events(region, "TWN001", "--study", TWN_DX)]
    assert ("share-grant", "granted") in township and ("share-revoke", "revoked") in township
    assert ("move", "started") in township


# -- issues 12 and 10: recognition details, on the wire --------------------------------------------
# Studies made here (with make_sample_dicom's builders, not new files in sample_dicom/) for one
# test patient of the county, imported at the county node; the township (in the county's
# alliance, a lower level) asks for them with DCMTK findscu and with `pacsnode priors`.
MADE_RESIDENT_ID = "520121199505050099"
MADE = {  # study number -> (what it is, the failed conditions it must show the township)
    90: ("pdf-only report coded CT-CHEST-PLAIN", {"no_images"}),
    91: ("de-identified CT chest", {"incomplete"}),
    92: ("CT chest coded plain with a Contrast/Bolus Agent", {"item_mismatch"}),
    93: ("JPEG 2000 (.91) CT chest with Lossy Image Compression 00", {"lossy"}),
    94: ("MR brain from the county, which holds no MR qualification", {"producer_not_qualified"}),
    95: ("an unlisted PET study with no date and an unknown institution",
         {"item_not_listed", "item_mismatch", "no_images", "producer_unknown", "producer_not_qualified",
          "no_study_date", "outside_window", "level_rule"}),
}


def _builders() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_sample_dicom", REPO / "scripts" / "make_sample_dicom.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_sample_dicom", module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _write(path: Path, ds: Dataset, syntax: str) -> None:
    from pydicom.dataset import FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.filewriter import dcmwrite
    from pydicom.uid import UID

    if syntax != "1.2.840.10008.1.2.1":
        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(62)])  # the header decides; never decoded here
        ds["PixelData"].VR = "OB"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(syntax)
    ds.file_meta, ds.preamble = meta, b"\x00" * 128
    path.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(path, ds, enforce_file_format=True)


def make_studies(out: Path) -> dict[int, str]:
    """Write the MADE studies under ``out``; returns study number -> Study Instance UID."""
    sample = _builders()
    day = today().strftime("%Y%m%d")
    chest = {"region": "chest", "kernel": "B30f", "wc": "40", "ww": "400"}
    plans: dict[int, tuple[str, tuple[Any, ...], str]] = {
        90: ("CT-CHEST-PLAIN", (sample.SeriesSpec(100, "DOC", "report", 1, "CHEST",
                                                  {"source_ae": "CTY_PACS", "title": "CT Chest Report"}),), ""),
        91: ("CT-CHEST-PLAIN", (sample.SeriesSpec(1, "CT", "chest", 2, "CHEST", chest),), ""),
        92: ("CT-CHEST-PLAIN", (sample.SeriesSpec(1, "CT", "chest", 2, "CHEST", {**chest, "contrast": True}),), ""),
        93: ("CT-CHEST-PLAIN", (sample.SeriesSpec(1, "CT", "chest", 2, "CHEST", chest),), "1.2.840.10008.1.2.4.91"),
        94: ("MR-BRAIN-PLAIN", (sample.SeriesSpec(1, "MR", "brain", 2, "BRAIN", {"weighting": "T2"}),), ""),
        95: ("CT-CHEST-PLAIN", (sample.SeriesSpec(1, "CT", "pet", 2, "WHOLEBODY", chest),), ""),
    }
    uids = {}
    for sid, (procedure, series, syntax) in plans.items():
        study = sample.StudySpec(sid, "CTY001", "zhao", day, "090000", procedure, "rules", "CTY_CT", "AN^JING", series)
        for spec in series:
            device = sample.DEVICES[spec.options.get("source_ae", "CTY_CT")]
            for n in range(1, spec.count + 1):
                ds = sample.BUILDERS[spec.kind](study, spec, n, device)
                ds.PatientID, ds.PatientName = "T0099", "TEST^RULES"
                resident = Dataset()
                resident.PatientID, resident.IssuerOfPatientID = MADE_RESIDENT_ID, RESIDENT_ISSUER
                ds.OtherPatientIDsSequence = [resident]
                if sid == 91:
                    ds.PatientIdentityRemoved = "YES"
                    ds.DeidentificationMethod = "DICOM PS3.15 Basic Profile"
                if sid == 93:
                    ds.LossyImageCompression = "00"
                if sid == 95:
                    ds.Modality = "PT"
                    ds.InstitutionName = "Nowhere Imaging"
                    for keyword in ("StudyDate", "InstitutionCodeSequence", "ProcedureCodeSequence"):
                        delattr(ds, keyword)
                _write(out / f"{sid}" / f"{spec.number}-{n}.dcm", ds, syntax or "1.2.840.10008.1.2.1")
        uids[sid] = study.study_uid
    return uids


@pytest.fixture(scope="module")
def made(region: Region, tmp_path_factory: pytest.TempPathFactory) -> dict[int, str]:
    out = tmp_path_factory.mktemp("made")
    uids = make_studies(out)
    _ok(region.cli("CTY001", "import", str(out)))
    return uids


def made_keys() -> list[str]:
    return patient_keys(MADE_RESIDENT_ID)


def test_recognition_details_reach_a_peer_with_every_code_whole(region: Region, made: dict[int, str],
                                                                tmp_path: Path) -> None:
    """Issue 12.1, 12.2, 12.5 and both details of issue 10, as DCMTK findscu sees them."""
    answer = findscu(region.nodes["CTY001"], "TWN_PACS", made_keys() + HR_KEYS, tmp_path)
    assert answer.status == 0x0000 and answer.study_uids == set(made.values()), answer.result.explain()
    blocks = {uid: hr_block(r) for uid, r in answer.by_uid().items()}
    for sid, (what, expected) in MADE.items():
        block = blocks[made[sid]]
        assert block["status"] == "NOT_ELIGIBLE", what
        assert expected <= block["failed"], (what, block["failed"])
        explained = region.explain(made[sid], "TWN001", "CTY001")
        assert set(explained["failed"]) == block["failed"], what
    raw = b"".join(p.read_bytes() for p in sorted(tmp_path.glob("rsp*.dcm")))  # the bytes DCMTK received
    assert raw.count(b"PRODUCER_NOT_QUALIFIED") == 2  # studies 94 and 95: whole, not PRODUCER_NOT_QUA
    assert b"PRODUCER_NOT_QUA\\" not in raw and not raw.count(b"PRODUCER_NOT_QUA") - 2


def test_a_pdf_only_study_is_accepted_by_qc_on_arrival_but_never_eligible(region: Region,
                                                                         made: dict[int, str]) -> None:
    """Issue 12.1 with [qc] auto_accept on (the default): QC may accept a report; recognition needs images."""
    statuses = {row["study_uid"]: row["status"] for row in region.json("CTY001", "qc", "list", "--json")}
    assert statuses[made[90]] == "accepted"
    explained = region.explain(made[90], "TWN001", "CTY001")
    assert explained["failed"] == ["no_images"]
    why = {c["code"]: c for c in explained["conditions"]}["no_images"]
    assert "needs CT images" in why["explanation"] and "DOC" in why["explanation"]
    assert why["decline_reason"] == "X1"


def test_one_lossiness_answer_for_qc_and_recognition_on_a_node(region: Region, made: dict[int, str]) -> None:
    """Issue 12.5: the .91 study with Lossy Image Compression 00 is lossy to QC and to the rules."""
    shown = region.json("CTY001", "qc", "show", made[93], "--json")
    lossy = [o for o in shown["outcomes"] if o["code"] == "QC-LOSSY"]
    assert lossy and not any(o["passed"] for o in lossy)
    assert "lossy" in region.explain(made[93], "TWN001", "CTY001")["failed"]


def test_priors_across_nodes_read_every_code_back_whole(region: Region, made: dict[int, str]) -> None:
    """Issue 10: `pacsnode priors` at the township reads the county's codes as the county explains them."""
    result = region.json("TWN001", "priors", "--resident-id", MADE_RESIDENT_ID, "--json")
    found = {p["study_uid"]: p for p in result["priors"]}
    assert set(found) == set(made.values())
    seen: set[str] = set()
    for sid, (what, expected) in MADE.items():
        prior = found[made[sid]]
        assert prior["source"] == "county" and prior["status"] == "NOT_ELIGIBLE", what
        assert set(prior["failed"]) == set(region.explain(made[sid], "TWN001", "CTY001")["failed"]), what
        assert expected <= set(prior["failed"]), what
        seen |= set(prior["failed"])
    from pacsnode.recognition import CONDITION_CODES

    # every code a peer can be sent, whole: viewer_unknown alone never leaves a node (an unknown
    # institution is refused at the door before any advice is computed); producer_not_vouched goes
    # on the wire in test_a_producer_claim_is_trusted_only_when_the_deliverer_vouches_for_it
    assert set(CONDITION_CODES) - seen - {"out_of_scope", "qc_not_accepted", "producer_not_vouched"} == {
        "viewer_unknown"}


def test_out_of_scope_comes_from_geography_on_the_wire(region: Region, tmp_path: Path) -> None:
    """Issue 12.3: PVT001 (geo 530102, Yunnan) is outside 黔HR (520000) with no in_scope flag in the file."""
    assert all("in_scope" not in inst for inst in RULES["institutions"])
    explained = region.explain(TWN_DX, "PVT001")
    why = {c["code"]: c for c in explained["conditions"]}["out_of_scope"]
    assert not why["holds"] and "530102" in why["explanation"] and "520000" in why["explanation"]
    assert {c["code"]: c for c in region.explain(TWN_DX, "CTY001")["conditions"]}["out_of_scope"]["holds"]


# -- provenance over claims (issue 10 item 8); these run last: they add studies and moves -----------
def _copy_with_new_uids(study_uid: str, folder: Path) -> tuple[str, list[Path]]:
    """The sample study's files with new study, series and instance UIDs (the headers still claim PRV001)."""
    new_study = f"2.25.{int.from_bytes(folder.name.encode()[:12].ljust(12, b'0'), 'big')}{len(folder.parts)}"
    paths = []
    for n, series in enumerate(STUDIES[study_uid]["series"]):
        new_series = f"{new_study}.{n + 1}"
        for m, name in enumerate(series["files"]):
            paths.append(write_instance(SAMPLE_DIR / name, folder / f"{n}-{m}.dcm", study_uid=new_study,
                                        series_uid=new_series, sop_instance_uid=f"{new_series}.{m + 1}"))
    return new_study, paths


DELIVERERS = [("unregistered-ae", "FORGER", False), ("peer-of-another-institution", "CTY_PACS", False),
              ("peer-of-the-producer", "PRV_PACS", True)]


@pytest.mark.parametrize("case, aet, vouches", DELIVERERS, ids=[d[0] for d in DELIVERERS])
def test_a_producer_claim_is_trusted_only_when_the_deliverer_vouches_for_it(
        region: Region, tmp_path: Path, case: str, aet: str, vouches: bool) -> None:
    """A copy of the provincial MR study with new UIDs is stored at the township by ``aet``."""
    township = region.nodes["TWN001"]
    study_uid, paths = _copy_with_new_uids(PRV_MR, tmp_path / case)
    stored = township.store(paths, aet=aet)
    assert stored.returncode == 0 and {r.status for r in stored.store_responses} == {0}, stored.explain()
    assert f"{study_uid}: accepted" in _ok(township.cli("qc", "run", study_uid)).stdout
    _status, expected_failed, _until = expected_advice(PRV_MR, "CTY001")
    explained = region.json("TWN001", "recognition", "explain", study_uid, "--for", "CTY001", "--json")
    condition = next(c for c in explained["conditions"] if c["code"] == "producer_not_vouched")
    if vouches:
        assert set(explained["failed"]) == expected_failed and condition["holds"]
        return
    assert explained["status"] == "NOT_ELIGIBLE"
    assert set(explained["failed"]) == expected_failed | {"producer_not_vouched"}
    assert aet in condition["explanation"] and "PRV001" in condition["explanation"]
    answer = findscu(township, "CTY_PACS", patient_keys() + HR_KEYS, tmp_path / "on-the-wire")
    assert hr_block(answer.by_uid()[study_uid])["failed"] == expected_failed | {"producer_not_vouched"}
    assert b"PRODUCER_NOT_VOUCHED" in b"".join(p.read_bytes() for p in (tmp_path / "on-the-wire").glob("rsp*"))
    finding = region.json("TWN001", "qc", "show", study_uid, "--json")
    assert [o["passed"] for o in finding["outcomes"] if o["code"] == "QC-PROVENANCE"] == [False]

    _ok(township.cli("recognition", "vouch", study_uid, "--producer", "PRV001", "--note", "phoned PRV001 radiology",
                     "--by", "Dr Zhang"))
    vouched = region.json("TWN001", "recognition", "explain", study_uid, "--for", "CTY001", "--json")
    assert set(vouched["failed"]) == expected_failed
    events = _events(region, "TWN001", "--study", study_uid)
    assert [(e["outcome"], e["detail"]["producer"], e["detail"]["by"]) for e in events
            if e["action"] == "recognition-vouch"] == [("vouched", "PRV001", "Dr Zhang")]


# -- IOCM rejection notes (issue 12 item 4) ---------------------------------------------------------
def _find_at(node: NodeProcess, calling: str, level: str, keys: list[str], out: Path) -> list[Dataset]:
    out.mkdir(parents=True, exist_ok=True)
    args = ["findscu", "-S", "-to", "20", "-aet", calling, "-aec", node.aet, "-X", "-od", out,
            "-k", f"QueryRetrieveLevel={level}"]
    for key in keys:
        args += ["-k", key]
    result = run_tool([*args, LOOPBACK, str(node.port)], timeout=60)
    assert result.returncode == 0, result.explain()
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def test_a_rejection_note_hides_images_from_peers_but_not_from_the_local_admin(region: Region, tmp_path: Path) -> None:
    provincial = region.nodes["PRV001"]
    _ok(provincial.cli("peer", "add", "prv-mr", "--aet", "PRV_MR1", "--host", LOOPBACK, "--port", "104",
                       "--institution", "PRV001", "--permissions", "echo,store,find"))  # the provincial MR modality
    files = [SAMPLE_DIR / name for series in STUDIES[PRV_MR]["series"] for name in series["files"]]
    headers = {str(h.SOPInstanceUID): h for h in (dcmread(f, stop_before_pixels=True) for f in files)}
    images = [h for h in headers.values() if h.Modality == "MR"]
    series_uid = str(images[0].SeriesInstanceUID)
    in_series = {str(h.SOPInstanceUID) for h in headers.values() if str(h.SeriesInstanceUID) == series_uid}
    two = sorted(in_series)[:2]
    late_uid = f"{series_uid}.9999"
    template = next(f for f in files if str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) == two[0])
    late = write_instance(template, tmp_path / "late.dcm", sop_instance_uid=late_uid, series_uid=series_uid,
                          InstanceNumber=99)
    refs = [(series_uid, str(headers[uid].SOPClassUID), uid) for uid in two]
    refs.append((series_uid, str(headers[two[0]].SOPClassUID), late_uid))  # not held yet: kept, applied on arrival
    keys = [f"StudyInstanceUID={PRV_MR}", f"SeriesInstanceUID={series_uid}", "SOPInstanceUID"]

    forged = rejection_note(template, refs[:1], tmp_path / "forged.dcm")
    assert provincial.store([forged], aet="NOBODY").returncode == 0
    seen = {str(r.SOPInstanceUID) for r in _find_at(provincial, "CTY_PACS", "IMAGE", keys, tmp_path / "f0")}
    assert two[0] in seen  # an unregistered AE's note rejects nothing

    note = rejection_note(template, refs, tmp_path / "kos.dcm")
    sent = provincial.store([note, late], aet="PRV_MR1")
    assert {r.status for r in sent.store_responses} == {0} and len(sent.store_responses) == 2, sent.explain()

    seen = {str(r.SOPInstanceUID) for r in _find_at(provincial, "CTY_PACS", "IMAGE", keys, tmp_path / "f1")}
    assert seen == in_series - set(two)
    series = _find_at(provincial, "CTY_PACS", "SERIES", [f"StudyInstanceUID={PRV_MR}", "SeriesInstanceUID",
                                                         "NumberOfSeriesRelatedInstances"], tmp_path / "f2")
    counts = {str(r.SeriesInstanceUID): int(r.NumberOfSeriesRelatedInstances) for r in series}
    assert counts == {  # recounted without the two images; the notes' own series are hidden too
        uid: len([h for h in headers.values() if str(h.SeriesInstanceUID) == uid]) - (2 if uid == series_uid else 0)
        for uid in {str(h.SeriesInstanceUID) for h in headers.values()}}
    study = _find_at(provincial, "CTY_PACS", "STUDY", [f"StudyInstanceUID={PRV_MR}", "NumberOfStudyRelatedInstances",
                                                       "NumberOfStudyRelatedSeries"], tmp_path / "f3")
    assert [(int(r.NumberOfStudyRelatedInstances), int(r.NumberOfStudyRelatedSeries)) for r in study] == [
        (len(headers) - 2, len(counts))]

    status, comment, received = movescu(provincial, "CTY_PACS", VIEWER_AET, region.viewer_port, PRV_MR,
                                        tmp_path / "moved")
    assert (status, comment) == (0x0000, "")
    assert received == set(headers) - set(two)

    shown = _ok(provincial.cli("study", "show", PRV_MR)).stdout
    for uid in (*two, late_uid):
        line = next(line for line in shown.splitlines() if uid in line)
        assert "REJECTED 113001 Rejected for Quality Reasons (sent by prv-mr)" in line
    data = region.json("PRV001", "study", "show", PRV_MR, "--json")
    flagged = {i["sop_instance_uid"]: i["rejected"].get("hidden") for s in data["series"] for i in s["instances"]
               if i["rejected"]}
    assert flagged == {two[0]: "rejected", two[1]: "rejected", late_uid: "rejected",
                       str(dcmread(note).SOPInstanceUID): "rejection-note",
                       str(dcmread(forged).SOPInstanceUID): "rejection-note"}
    outcomes = {(e["outcome"], e["peer_aet"]) for e in _events(region, "PRV001", "--study", PRV_MR)
                if e["action"] == "iocm-reject"}
    assert {("refused", "NOBODY"), ("applied", "PRV_MR1")} <= outcomes
    local = _find_at(provincial, "PRV_MR1", "IMAGE", [*keys, "InstanceAvailability"], tmp_path / "local")
    availability = {str(r.SOPInstanceUID): str(r.InstanceAvailability) for r in local}
    assert availability == {uid: ("UNAVAILABLE" if uid in (*two, late_uid) else "ONLINE")
                            for uid in in_series | {late_uid}}  # this hospital still sees them, flagged

    qc = region.json("PRV001", "qc", "show", PRV_MR, "--json")
    assert qc["status"] == "pending"  # the accepted study goes back to QC without the rejected images
    rerun = _ok(provincial.cli("qc", "run", PRV_MR)).stdout
    checked = region.json("PRV001", "qc", "show", PRV_MR, "--json")
    assert f"{PRV_MR}: {checked['status']}" in rerun
    assert checked["status"] == "accepted", checked  # judged on what peers see
    status, failed, _until = expected_advice(PRV_MR, "CTY001")
    explained = region.explain(PRV_MR, "CTY001")
    assert (explained["status"], set(explained["failed"])) == (status, failed)

