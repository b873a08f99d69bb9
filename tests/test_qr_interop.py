"""Query/Retrieve proven against DCMTK: movescu, getscu and storescp around a served pacsnode.

One node per module (home initialised ``--institution PRV001``, ``sample_dicom`` and a
generated 50-instance study imported, ``pacsnode serve`` on a free port). Its peers are
registered as workstations of the same hospital (institution PRV001: local, they see
everything) so the access rules do not get in the way, except ``CTY_PACS`` (the county
hospital, CTY001), which shows a refusal. Destinations are real DCMTK ``storescp``
processes; ``-d`` makes DCMTK print every DIMSE response it decoded from the wire, and the
tests read statuses and counts from those dumps and data from the received files, never our
own log text. Every process started here is stopped in teardown.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove

from cluster_node import cluster_mode
from support import LOOPBACK, NodeProcess, SAMPLE_DIR, Storescp, have_tool, open_files
from support import dcmtk as dcmtk_path

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.interop,
    pytest.mark.skipif(not all(have_tool(t) for t in ("movescu", "getscu", "storescp")),
                       reason="DCMTK (movescu, getscu, storescp) is not installed"),
]

INSTITUTION = "PRV001"
UID = "1.2.826.0.1.3680043.10.1078"
STUDY_CT_CHEST = f"{UID}.1.2"       # CTY001, CHEN^JIANGUO: CT x5, CT x5, Encapsulated PDF x1
STUDY_MR_BRAIN = f"{UID}.1.3"       # PRV001, CHEN^JIANGUO: MR x4, MR x4, Basic Text SR x1
STUDY_CONTRAST = f"{UID}.1.8"       # PRV001, 王^小明 P0002: two CT series of 5
STUDY_PRIVATE = f"{UID}.1.12"       # PVT001 (no alliance): the county may not have it
SERIES_CONTRAST_2 = f"{UID}.2.8.2"
STUDY_BIG = f"{UID}.77.50"          # generated here: 50 small CT instances, one series
BIG_COUNT = 50
# DCMTK leaves Nagle's algorithm on unless told: without this a C-GET of 50 small instances
# takes 2.5 s instead of 0.4 s (delayed ACKs), on the DCMTK side of the connection.
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


# -- DCMTK output: the DIMSE responses it decoded ------------------------------------------------
_BLOCK = re.compile(r"=+ INCOMING DIMSE MESSAGE =+(.*?)=+ END DIMSE MESSAGE =+", re.S)
_FIELD = re.compile(r"^D:\s*([A-Za-z ]+?)\s*:\s*(.*)$", re.M)
_ERROR_COMMENT = re.compile(r"\(0000,0902\) LO \[(.*?)\]")


@dataclass
class Response:
    """One C-MOVE-RSP / C-GET-RSP as DCMTK decoded it."""

    status: int
    remaining: int | None
    completed: int | None
    failed: int | None
    warning: int | None


def _count(text: str | None) -> int | None:
    return int(text) if text and text.strip().isdigit() else None


def responses(output: str, kind: str) -> list[Response]:
    """Every ``kind`` ("C-MOVE RSP", "C-GET RSP") response in a ``-d`` run, in order."""
    found = []
    for block in _BLOCK.findall(output):
        fields = dict(_FIELD.findall(block))
        if fields.get("Message Type", "").strip() != kind:
            continue
        status = re.match(r"0x([0-9a-fA-F]{4})", fields.get("DIMSE Status", ""))
        assert status, f"no DIMSE status in:\n{block}"
        found.append(Response(int(status.group(1), 16), _count(fields.get("Remaining Suboperations")),
                              _count(fields.get("Completed Suboperations")),
                              _count(fields.get("Failed Suboperations")),
                              _count(fields.get("Warning Suboperations"))))
    return found


def dcmtk(args: list[str], timeout: float = 90.0) -> str:
    """Run a DCMTK tool with TCP_NODELAY; its whole output (``-d`` dumps the decoded responses)."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, errors="replace", env=DCMTK_ENV,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(args)} did not finish within {timeout} s\n{exc.stdout or ''}{exc.stderr or ''}")
    return done.stdout + done.stderr


def final(output: str, kind: str) -> Response:
    found = responses(output, kind)
    assert found, f"no {kind} decoded in:\n{output[-3000:]}"
    return found[-1]


# -- the generated 50-instance study ------------------------------------------------------------
def write_big_study(folder: Path) -> list[Path]:
    """``BIG_COUNT`` 16x16 CT images of one series (deterministic UIDs), for cancel and counting."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(1, BIG_COUNT + 1):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = f"{STUDY_BIG}.1.{n}"
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY_BIG, f"{STUDY_BIG}.1"
        ds.PatientID, ds.IssuerOfPatientID, ds.PatientName = "BIG50", INSTITUTION, "BIG^FIFTY"
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.Modality = "20261120", "101010", "BIG50", "CT"
        ds.InstitutionName = "Qianzhong Provincial People's Hospital"
        ds.SeriesNumber, ds.InstanceNumber = 1, n
        ds.Rows = ds.Columns = 16
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.PixelData = np.full((16, 16), n, dtype=np.uint16).tobytes()
        path = folder / f"{n:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@dataclass
class Site:
    """The served node and its destinations."""

    node: NodeProcess
    dest: Storescp          # DEST: default storescp
    implicit: Storescp      # IMPLICIT: storescp +xi (accepts Implicit VR Little Endian only)
    slow: Storescp          # SLOW: storescp that sleeps after each instance (for C-CANCEL)
    base: Path

    def instances(self, study_uid: str, series_uid: str | None = None) -> dict[str, dict[str, Any]]:
        """SOP Instance UID → instance row, from ``pacsnode study show --json``."""
        result = self.node.cli("study", "show", study_uid, "--json", in_process=True)  # a read, not the test
        assert result.returncode == 0, result.explain()
        study = json.loads(result.stdout)
        return {i["sop_instance_uid"]: i for s in study["series"] if series_uid in (None, s["series_uid"])
                for i in s["instances"]}

    def stored_dataset(self, sop_instance_uid: str) -> Dataset:
        stored = self.node.stored_bytes(sop_instance_uid)  # through the storage seam (a folder or S3)
        assert stored is not None
        return dcmread(io.BytesIO(stored))


def new_node(home: Path, aet: str = "PACSNODE", institution: str = INSTITUTION) -> NodeProcess:
    """An initialised (not started) node home.

    ``acse_timeout`` is short because pynetdicom keeps the association thread of a bare TCP
    connect (the readiness probe of ``NodeProcess.start``) waiting for an A-ASSOCIATE-RQ for
    the whole ACSE timeout, and ``serve`` waits for it on SIGTERM: 30 s would make every stop
    hit the kill timeout.
    """
    return (NodeProcess(home, aet=aet, institution=institution).init()
            .configure("network", "acse_timeout", 3).configure("network", "dimse_timeout", 20))


def add_peer(node: NodeProcess, name: str, aet: str, port: int, institution: str = INSTITUTION) -> None:
    """Register a peer through the CLI, in process (takes effect on the running node: peers live in the index)."""
    result = node.cli("peer", "add", name, "--aet", aet, "--host", LOOPBACK, "--port", str(port),
                      "--institution", institution, "--replace", in_process=True)
    assert result.returncode == 0, result.explain()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("qr")
    node = new_node(base / "home")
    write_big_study(base / "big50")
    result = node.cli("import", str(SAMPLE_DIR), str(base / "big50"), timeout=120, in_process=True)
    assert result.returncode == 0, result.explain()
    dest = Storescp(base / "dest", "DEST")
    implicit = Storescp(base / "implicit", "IMPLICIT", "+xi")
    # Each instance is followed by a synchronous 50 ms pause: a 50-instance move lasts > 2.5 s.
    slow = Storescp(base / "slow", "SLOW", "--exec-on-reception", "sleep 0.05", "--exec-sync")
    try:
        for scp in (dest, implicit, slow):
            scp.start()
        node.start()
        add_peer(node, "dest", "DEST", dest.port)
        add_peer(node, "implicit", "IMPLICIT", implicit.port)
        add_peer(node, "slow", "SLOW", slow.port)
        for aet in ("MOVESCU", "GETSCU", "PYSCU"):
            add_peer(node, aet.lower(), aet, 1)  # a workstation of this hospital (it only calls us)
        add_peer(node, "county", "CTY_PACS", 1, institution="CTY001")  # another hospital: access rules apply
        yield Site(node, dest, implicit, slow, base)
    finally:
        node.stop()
        for scp in (dest, implicit, slow):
            scp.stop()


@pytest.fixture
def dest(site: Site) -> Storescp:
    site.dest.clear()
    return site.dest


def movescu(site: Site, model: str, destination: str, *keys: str, aet: str = "MOVESCU") -> str:
    args = [dcmtk_path("movescu"), "-d", "-to", "20", "-ta", "20", "-td", "60", model, "-aet", aet, "-aec", site.node.aet,
            "-aem", destination]
    for key in keys:
        args += ["-k", key]
    return dcmtk([*args, LOOPBACK, str(site.node.port)])


def getscu(site: Site, folder: Path, model: str, *keys: str, aet: str = "GETSCU") -> str:
    folder.mkdir(parents=True, exist_ok=True)
    args = [dcmtk_path("getscu"), "-d", "-to", "20", "-ta", "20", "-td", "60", model, "-aet", aet, "-aec", site.node.aet,
            "-od", str(folder)]
    for key in keys:
        args += ["-k", key]
    return dcmtk([*args, LOOPBACK, str(site.node.port)])


# -- C-MOVE to storescp -----------------------------------------------------------------------------
MOVE_CASES = [
    ("study-root-study", "-S", ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={STUDY_CT_CHEST}"],
     STUDY_CT_CHEST, None),
    ("study-root-series", "-S", ["QueryRetrieveLevel=SERIES", f"StudyInstanceUID={STUDY_CONTRAST}",
                                 f"SeriesInstanceUID={SERIES_CONTRAST_2}"], STUDY_CONTRAST, SERIES_CONTRAST_2),
    ("patient-root-study", "-P", ["QueryRetrieveLevel=STUDY", "PatientID=P0107",
                                  f"StudyInstanceUID={STUDY_MR_BRAIN}"], STUDY_MR_BRAIN, None),
    ("patient-root-series", "-P", ["QueryRetrieveLevel=SERIES", "PatientID=P0002",
                                   f"StudyInstanceUID={STUDY_CONTRAST}", f"SeriesInstanceUID={SERIES_CONTRAST_2}"],
     STUDY_CONTRAST, SERIES_CONTRAST_2),
]


@pytest.mark.parametrize("model, keys, study_uid, series_uid", [c[1:] for c in MOVE_CASES],
                         ids=[c[0] for c in MOVE_CASES])
def test_move_to_storescp_delivers_every_instance(site: Site, dest: Storescp, model: str, keys: list[str],
                                                 study_uid: str, series_uid: str | None) -> None:
    expected = site.instances(study_uid, series_uid)
    output = movescu(site, model, "DEST", *keys)
    last = final(output, "C-MOVE RSP")
    assert (last.status, last.completed, last.failed, last.warning) == (0x0000, len(expected), 0, 0), output[-3000:]
    pending = [r for r in responses(output, "C-MOVE RSP") if r.status == 0xFF00]
    assert_pending_progress(pending, len(expected))
    received = dest.received()
    assert set(received) == set(expected)
    for uid, ds in received.items():  # the same instance, not just the same UID
        assert ds.SOPClassUID == expected[uid]["sop_class_uid"]
        assert ds.StudyInstanceUID == study_uid


def test_move_to_unknown_destination_is_a801_and_sends_nothing(site: Site, dest: Storescp) -> None:
    output = movescu(site, "-S", "NOBODY", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={STUDY_CONTRAST}")
    assert final(output, "C-MOVE RSP").status == 0xA801
    assert dest.received() == {}


HIDDEN_EQUALS_ABSENT = "no study matches that this caller may retrieve"  # errors.NothingToRetrieve.MESSAGE
MISSING_STUDY = f"{UID}.999.999"


def test_move_of_nothing_is_refused_like_a_hidden_study(site: Site, dest: Storescp) -> None:
    output = movescu(site, "-S", "DEST", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={MISSING_STUDY}")
    last = final(output, "C-MOVE RSP")
    assert (last.status, last.completed) == (0x0124, 0)
    assert _ERROR_COMMENT.findall(output)[-1] == HIDDEN_EQUALS_ABSENT
    assert dest.received() == {}


def _answer(output: str, kind: str) -> tuple[int, int | None, str]:
    last = final(output, kind)
    comments = _ERROR_COMMENT.findall(output)
    return last.status, last.completed, comments[-1] if comments else ""


def test_a_hidden_study_and_a_missing_one_look_the_same_to_a_peer(site: Site, dest: Storescp, tmp_path: Path) -> None:
    """The county may not have the private clinic's study: C-MOVE and C-GET answer exactly as for no study.

    Choice: both are 0x0124 Refused with one generic Error Comment (never Success with zero
    sub-operations, which a viewer shows as a completed transfer); the audit trail keeps the cause.
    """
    hidden = movescu(site, "-S", "DEST", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={STUDY_PRIVATE}",
                     aet="CTY_PACS")
    missing = movescu(site, "-S", "DEST", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={MISSING_STUDY}",
                      aet="CTY_PACS")
    assert _answer(hidden, "C-MOVE RSP") == _answer(missing, "C-MOVE RSP") == (0x0124, 0, HIDDEN_EQUALS_ABSENT)
    assert dest.received() == {}
    got_hidden = getscu(site, tmp_path / "hidden", "-S", "QueryRetrieveLevel=STUDY",
                        f"StudyInstanceUID={STUDY_PRIVATE}", aet="CTY_PACS")
    got_missing = getscu(site, tmp_path / "missing", "-S", "QueryRetrieveLevel=STUDY",
                         f"StudyInstanceUID={MISSING_STUDY}", aet="CTY_PACS")
    assert _answer(got_hidden, "C-GET RSP") == _answer(got_missing, "C-GET RSP") == (0x0124, 0, HIDDEN_EQUALS_ABSENT)
    assert list((tmp_path / "hidden").iterdir()) == list((tmp_path / "missing").iterdir()) == []
    audit = json.loads(site.node.cli("audit", "--json", "--peer", "county").stdout)
    reasons = {e["study_uid"]: json.loads(e["detail"])["reason"] for e in audit if e["outcome"] == "refused"}
    assert reasons[STUDY_PRIVATE].startswith("no_relationship") and reasons[MISSING_STUDY].startswith("no_match")
    # the same peer may have a study it has a relationship with (PRV001 → CTY001, same alliance)
    output = movescu(site, "-S", "DEST", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={STUDY_CONTRAST}",
                     aet="CTY_PACS")
    assert final(output, "C-MOVE RSP").status == 0x0000
    assert set(dest.received()) == set(site.instances(STUDY_CONTRAST))


def test_move_to_implicit_only_destination_transcodes(site: Site) -> None:
    """Stored Explicit VR Little Endian, destination accepts Implicit VR only: same data arrives."""
    site.implicit.clear()
    expected = site.instances(STUDY_CONTRAST)
    assert {i["transfer_syntax"] for i in expected.values()} == {ExplicitVRLittleEndian}
    output = movescu(site, "-S", "IMPLICIT", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={STUDY_CONTRAST}")
    last = final(output, "C-MOVE RSP")
    assert (last.status, last.completed, last.failed) == (0x0000, len(expected), 0)
    received = site.implicit.received()
    assert set(received) == set(expected)
    for uid, ds in received.items():
        assert ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
        original = site.stored_dataset(uid)
        assert ds.PixelData == original.PixelData
        assert (ds.PatientName, ds.PatientID, ds.SeriesInstanceUID) == (
            original.PatientName, original.PatientID, original.SeriesInstanceUID)


# -- C-GET with getscu ---------------------------------------------------------------------------
GET_CASES = [
    ("study-root-study", "-S", ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={STUDY_MR_BRAIN}"],
     STUDY_MR_BRAIN, None),
    ("study-root-series", "-S", ["QueryRetrieveLevel=SERIES", f"StudyInstanceUID={STUDY_CONTRAST}",
                                 f"SeriesInstanceUID={SERIES_CONTRAST_2}"], STUDY_CONTRAST, SERIES_CONTRAST_2),
    ("patient-root-study", "-P", ["QueryRetrieveLevel=STUDY", "PatientID=P0815",
                                  f"StudyInstanceUID={STUDY_CT_CHEST}"], STUDY_CT_CHEST, None),
    ("study-root-study-50", "-S", ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={STUDY_BIG}"], STUDY_BIG, None),
]


@pytest.mark.parametrize("model, keys, study_uid, series_uid", [c[1:] for c in GET_CASES],
                         ids=[c[0] for c in GET_CASES])
def test_get_with_getscu(site: Site, tmp_path: Path, model: str, keys: list[str], study_uid: str,
                         series_uid: str | None) -> None:
    expected = site.instances(study_uid, series_uid)
    output = getscu(site, tmp_path, model, *keys)
    last = final(output, "C-GET RSP")
    assert (last.status, last.completed, last.failed, last.warning) == (0x0000, len(expected), 0, 0), output[-3000:]
    received = {str(dcmread(p).SOPInstanceUID) for p in tmp_path.iterdir()}
    assert received == set(expected)


# -- C-CANCEL -------------------------------------------------------------------------------------
def test_cancel_move_stops_sub_operations(site: Site) -> None:
    """pynetdicom as the SCU sends C-CANCEL after the first pending response: 0xFE00, fewer than all sent."""
    site.slow.clear()
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate(LOOPBACK, site.node.port, ae_title=site.node.aet)
    assert assoc.is_established
    try:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = STUDY_BIG
        context_id = next(cx.context_id for cx in assoc.accepted_contexts
                          if cx.abstract_syntax == StudyRootQueryRetrieveInformationModelMove)
        statuses: list[Dataset] = []
        for status, _identifier in assoc.send_c_move(identifier, "SLOW", StudyRootQueryRetrieveInformationModelMove,
                                                      msg_id=7):
            assert status is not None and "Status" in status
            statuses.append(status)
            if len(statuses) == 1:
                assert status.Status == 0xFF00
                assoc.send_c_cancel(7, context_id)
    finally:
        assoc.release()
    last = statuses[-1]
    assert last.Status == 0xFE00
    completed = int(last.NumberOfCompletedSuboperations)
    assert 1 <= completed < BIG_COUNT
    assert int(last.NumberOfRemainingSuboperations) == BIG_COUNT - completed - int(last.NumberOfFailedSuboperations)
    received = site.slow.received()
    assert len(received) == completed
    assert set(received) <= set(site.instances(STUDY_BIG))
    if not cluster_mode():  # one process holding a folder of files: the one staged after the cancel was closed
        storage = str(site.node.home / "storage")
        deadline = time.monotonic() + 3
        while open_files(site.node.pid, storage) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert open_files(site.node.pid, storage) == []


# -- the pacsnode CLI as the SCU ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def county(site: Site) -> Iterator[NodeProcess]:
    """A second pacsnode (NODEB, same hospital) that calls the first; served, so it can be a move destination."""
    other = new_node(site.base / "nodeb", aet="NODEB")
    try:
        other.start()
        add_peer(site.node, "nodeb", "NODEB", other.port)
        add_peer(other, "archive", site.node.aet, site.node.port)
        add_peer(other, "dest", "DEST", site.dest.port)
        add_peer(other, "implicit", "IMPLICIT", site.implicit.port)
        yield other
    finally:
        other.stop()


def study_rows(node: NodeProcess) -> dict[str, dict[str, Any]]:
    return {row["study_uid"]: row for row in node.studies()}


def test_cli_find_study_and_patient_level(county: NodeProcess) -> None:
    result = county.cli("find", "archive", "-k", "PatientID=P0001", "-k", "IssuerOfPatientID=PRV001", "--json")
    assert result.returncode == 0, result.explain()
    rows = json.loads(result.stdout)
    assert {r["StudyInstanceUID"] for r in rows} == {f"{UID}.1.6", f"{UID}.1.7"}
    assert {r["NumberOfStudyRelatedInstances"] for r in rows} in ({"4", "5"}, {4, 5})
    result = county.cli("find", "archive", "--model", "patient", "--level", "PATIENT", "-k", "PatientID=P0001",
                        "--json")
    assert result.returncode == 0, result.explain()
    assert sorted(r["IssuerOfPatientID"] for r in json.loads(result.stdout)) == ["CTY001", "PRV001"]


def test_cli_move_into_the_calling_node(site: Site, county: NodeProcess) -> None:
    result = county.cli("move", "archive", "--study", STUDY_MR_BRAIN)
    assert result.returncode == 0, result.explain()
    row = study_rows(county).get(STUDY_MR_BRAIN)
    assert row is not None and row["instance_count"] == len(site.instances(STUDY_MR_BRAIN))


def test_cli_move_to_another_destination_and_unknown(site: Site, county: NodeProcess, dest: Storescp) -> None:
    result = county.cli("move", "archive", "--study", STUDY_CONTRAST, "--series", SERIES_CONTRAST_2,
                        "--dest", "DEST")
    assert result.returncode == 0, result.explain()
    assert set(dest.received()) == set(site.instances(STUDY_CONTRAST, SERIES_CONTRAST_2))
    dest.clear()
    result = county.cli("move", "archive", "--study", STUDY_CONTRAST, "--dest", "NOBODY")
    assert result.returncode == 1, result.explain()
    assert dest.received() == {}


def test_cli_get_into_the_calling_node(site: Site, county: NodeProcess) -> None:
    result = county.cli("get", "archive", "--study", STUDY_CT_CHEST)
    assert result.returncode == 0, result.explain()
    row = study_rows(county).get(STUDY_CT_CHEST)
    assert row is not None and row["instance_count"] == len(site.instances(STUDY_CT_CHEST))
    assert set(row["modalities"]) == {"CT", "DOC"}


def test_cli_get_patient_root_series(site: Site, county: NodeProcess) -> None:
    result = county.cli("get", "archive", "--model", "patient", "--patient-id", "P0002", "--study", STUDY_CONTRAST,
                        "--series", SERIES_CONTRAST_2)
    assert result.returncode == 0, result.explain()
    row = study_rows(county).get(STUDY_CONTRAST)
    assert row is not None and row["instance_count"] == len(site.instances(STUDY_CONTRAST, SERIES_CONTRAST_2))


def test_cli_send_study_and_files_to_storescp(site: Site, county: NodeProcess, dest: Storescp) -> None:
    result = site.node.cli("peer", "add", "dest", "--aet", "DEST", "--host", LOOPBACK, "--port",
                           str(dest.port), "--institution", INSTITUTION, "--replace")  # AE titles are unique: re-register
    assert result.returncode == 0, result.explain()
    result = site.node.cli("send", "dest", "--study", STUDY_MR_BRAIN)
    assert result.returncode == 0, result.explain()
    assert set(dest.received()) == set(site.instances(STUDY_MR_BRAIN))
    dest.clear()
    folder = SAMPLE_DIR / "PVT001" / "RPI-2026-0012"  # the Implicit VR study, as files
    result = county.cli("send", f"DEST@{LOOPBACK}:{dest.port}", str(folder))
    assert result.returncode == 0, result.explain()
    assert set(dest.received()) == {str(dcmread(p).SOPInstanceUID) for p in folder.rglob("*.dcm")}


def test_cli_send_to_implicit_only_storescp(site: Site, county: NodeProcess) -> None:
    site.implicit.clear()
    result = site.node.cli("send", f"IMPLICIT@{LOOPBACK}:{site.implicit.port}", "--study", STUDY_CONTRAST)
    assert result.returncode == 0, result.explain()
    received = site.implicit.received()
    assert set(received) == set(site.instances(STUDY_CONTRAST))
    assert {str(ds.file_meta.TransferSyntaxUID) for ds in received.values()} == {ImplicitVRLittleEndian}


def test_cli_move_refused_exits_non_zero(site: Site, dest: Storescp) -> None:
    """``pacsnode move`` as CTY_PACS (another hospital) for a study it may not have: exit 1, nothing sent."""
    county_home = new_node(site.base / "cty", aet="CTY_PACS", institution="CTY001")
    add_peer(county_home, "archive", site.node.aet, site.node.port)
    result = county_home.cli("move", "archive", "--study", STUDY_PRIVATE, "--dest", "DEST")
    assert result.returncode == 1, result.explain()
    assert dest.received() == {}


# -- pynetdicom's reactor pause race (pacsnode.dimse.scu.wait_for_reactor) ------------------------
class _FakeAssociation:
    def __init__(self, paused: bool, has_flag: bool = True) -> None:
        if has_flag:
            self._is_paused = paused
        self.is_established = True


def test_wait_for_reactor_returns_once_the_reactor_runs_again() -> None:
    import threading

    from pacsnode.dimse.scu import wait_for_reactor

    assoc = _FakeAssociation(paused=True)
    threading.Timer(0.05, lambda: setattr(assoc, "_is_paused", False)).start()
    began = time.monotonic()
    wait_for_reactor(assoc)  # type: ignore[arg-type]
    assert 0.04 <= time.monotonic() - began < 0.4
    began = time.monotonic()
    wait_for_reactor(_FakeAssociation(paused=False, has_flag=False))  # type: ignore[arg-type]
    assert time.monotonic() - began < 0.05  # a pynetdicom without the flag: no wait


def test_repeated_moves_lose_no_sub_operation(site: Site, dest: Storescp) -> None:
    """Before the fix, ~1 in 2000 sub-operations had its C-STORE-RSP eaten by pynetdicom's reactor.
    Pending responses are throttled (retrieve.PENDING_EVERY): 50 small instances take well under
    a second, so far fewer than one Pending per sub-operation."""
    expected = set(site.instances(STUDY_BIG))
    for _ in range(4):
        dest.clear()
        output = movescu(site, "-S", "DEST", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={STUDY_BIG}")
        last = final(output, "C-MOVE RSP")
        assert (last.status, last.completed, last.failed) == (0x0000, BIG_COUNT, 0)
        assert set(dest.received()) == expected
        pending = [r for r in responses(output, "C-MOVE RSP") if r.status == 0xFF00]
        assert_pending_progress(pending, BIG_COUNT)
        assert len(pending) < BIG_COUNT // 2


def assert_pending_progress(pending: list[Response], total: int) -> None:
    """The Pending responses of one retrieve: the first after one sub-operation, counts that add
    up to ``total`` and only move forward, none with nothing remaining."""
    if total > 1:
        assert pending and pending[0].remaining == total - 1
    left = [r.remaining or 0 for r in pending]
    for response in pending:
        counts = [response.remaining, response.completed, response.failed, response.warning]
        assert None not in counts and sum(c or 0 for c in counts) == total
    assert 0 not in left and left == sorted(set(left), reverse=True)
