"""The sample region for the end-to-end tests: three ``pacsnode serve`` nodes on loopback, DCMTK as the peers.

provincial (PRV001, PRV_PACS), county (CTY001, CTY_PACS) and township (TWN001, TWN_PACS) each
import only their own institution's folder of ``sample_dicom`` and register the other two,
plus the private clinic's PVT_PACS (PVT001, in no alliance) at a port where nothing listens
unless a test runs ``movescu`` there. DCMTK ``findscu``/``movescu`` call *as* a peer's AE
title, so a node sees them as that peer.

Expectations are not copied from the product: they are computed here from
``config/recognition.toml`` (alliances, levels, scope, catalog windows) and from the study
dates relative to today (the sample's "today" is 2026-11-26), and then compared with what
the nodes answer on the wire and with ``recognition explain`` at the holding node.

Two modules use it, each with its own region (:func:`serve_region` in a module fixture):
``test_regional_e2e.py`` (the demo: access, moves, QC, shares, priors, decisions, the audit
trail) and ``test_regional_details.py`` (recognition codes on the wire, provenance, IOCM).
Separate regions let pytest-xdist's ``--dist loadscope`` run the two on different workers;
neither module's tests see the other's studies, moves or audit rows.
"""

from __future__ import annotations

import json
import re
import tomllib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from support import (LOOPBACK, REPO, SAMPLE_DIR, SAMPLE_MANIFEST, NodeProcess, ToolResult, dcmtk, free_port, have_tool,
                     run_tool)

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


def ok(result: ToolResult) -> ToolResult:
    """The result of a command that must succeed (its output is in the failure message)."""
    assert result.returncode == 0, result.explain()
    return result


@contextmanager
def serve_region(base: Path) -> Iterator[Region]:
    """Start the three nodes under ``base``, register every peer, and stop them all on the way out."""
    nodes = {inst: NodeProcess(base / name, aet=aet, institution=inst) for name, (inst, aet) in NODES.items()}
    for node in nodes.values():
        node.cli_in_process = True  # the CLI sets up and reads the region here; test_cli*.py test the CLI
    made = Region(nodes, pvt_port=free_port(), viewer_port=free_port())

    def prepare(inst: str) -> None:  # in process, one command at a time (CliRunner): no gain from threads
        node = nodes[inst].init()
        node.configure("store", "accept_from", "any")  # the forged-producer and IOCM tests store as nobody
        ok(node.cli("import", str(SAMPLE_DIR / inst)))

    def register(inst: str) -> None:
        node = nodes[inst]
        for other, peer in nodes.items():
            if other != inst:
                ok(node.cli("peer", "add", PEER_NAME[other], "--aet", peer.aet, "--host", LOOPBACK,
                             "--port", str(peer.port), "--institution", other))
        ok(node.cli("peer", "add", "private", "--aet", "PVT_PACS", "--host", LOOPBACK, "--port",
                     str(made.pvt_port), "--institution", "PVT001"))
        if inst == "PRV001":
            ok(node.cli("peer", "add", "county-viewer", "--aet", VIEWER_AET, "--host", LOOPBACK, "--port",
                         str(made.viewer_port), "--institution", "CTY001", "--permissions", "echo,store"))

    try:
        for inst in nodes:
            prepare(inst)
        with ThreadPoolExecutor(max_workers=3) as pool:  # the three start-ups overlap
            list(pool.map(lambda node: node.start(), nodes.values()))
        for inst in nodes:  # peers are added on running nodes: they know the real ports
            register(inst)
        yield made
    finally:
        for node in nodes.values():
            node.stop()


def audit_events(region: Region, institution: str, *args: str) -> list[dict[str, Any]]:
    """``pacsnode audit --json`` at one node, each event's detail decoded."""
    rows = region.json(institution, "audit", "--json", *args)
    for event in rows:
        event["detail"] = json.loads(event["detail"]) if str(event["detail"]).startswith("{") else event["detail"]
    return list(rows)


# The marks of both regional modules (their ``region`` fixture is in conftest.py: one region per module).
MARKS = [
    pytest.mark.interop,
    pytest.mark.skipif(not (have_tool("findscu") and have_tool("movescu")), reason="DCMTK findscu/movescu missing"),
    pytest.mark.skipif(not SAMPLE_DIR.is_dir(), reason="sample_dicom/ is not generated"),
]
