"""Query/Retrieve and storage between pacsnode and Orthanc, both directions.

Orthanc (1.10, the Debian package) runs once per module with its own JSON configuration on
free loopback ports (HTTP and DICOM, remote access off). Orthanc acts as the SCU through its
REST API (``/modalities/pacsnode/query``, ``/queries/{id}/retrieve``,
``/modalities/pacsnode/move``, ``/modalities/pacsnode/store``); pacsnode acts as the SCU
through its CLI (``pacsnode find/move/get``, with ``ORTHANC@127.0.0.1:PORT``). Orthanc is a
registered local peer of pacsnode (same institution, PRV001), and pacsnode is in Orthanc's
``DicomModalities`` so Orthanc can send C-MOVE sub-operations to it. Outcomes are read from
Orthanc's REST answers and from pacsnode's index (``pacsnode studies --json``, ``study
show``). Orthanc 1.10 is a C-GET SCP but not a C-GET SCU, so C-GET is tested one way only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from support import LOOPBACK, SAMPLE_DIR, NodeProcess, free_port, port_accepts

ORTHANC = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if os.path.exists("/usr/sbin/Orthanc") else None)
pytestmark = [pytest.mark.interop, pytest.mark.cluster,
              pytest.mark.skipif(ORTHANC is None, reason="Orthanc is not installed (/usr/sbin/Orthanc absent)")]

INSTITUTION = "PRV001"
UID = "1.2.826.0.1.3680043.10.1078"
STUDY_CT_CHEST = f"{UID}.1.2"     # CT x5, CT x5, Encapsulated PDF x1 (CTY001)
STUDY_CONTRAST = f"{UID}.1.8"     # 王^小明, P0002 @ PRV001: two CT series of 5
SERIES_CONTRAST_1 = f"{UID}.2.8.1"
ORTHANC_AET = "ORTHANC"
# Orthanc is built on DCMTK, which leaves Nagle on unless told (as in bench/common.py).
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


# -- Orthanc ------------------------------------------------------------------------------------
class Orthanc:
    """An Orthanc process with its own configuration and storage; ``stop`` always ends it."""

    def __init__(self, folder: Path, extra: dict[str, Any] | None = None) -> None:
        self.folder = folder
        self.extra = extra or {}  # more configuration (plugins, DicomWeb servers: test_orthanc_dicomweb)
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        # A direct opener: no http_proxy from the environment for loopback calls.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def start(self) -> "Orthanc":
        assert ORTHANC is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "pacsnode-tests", "StorageDirectory": str(self.folder / "db"),
            "IndexDirectory": str(self.folder / "db"), "DicomAet": ORTHANC_AET, "DicomPort": self.dicom_port,
            "HttpPort": self.http_port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "Plugins": [], "DicomModalities": {}, "DicomCheckCalledAet": False,
            "DicomAlwaysAllowFind": True, "DicomAlwaysAllowMove": True, "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowStore": True, "DicomAssociationCloseDelay": 0, "StableAge": 3600,
            # Orthanc's default (Latin1) turns 王^小明 into "^" in its answers and "王*" into "*".
            "DefaultEncoding": "Utf8", "HttpTimeout": 60, "DicomScuTimeout": 30,
        }
        config.update(self.extra)
        (self.folder / "orthanc.json").write_text(json.dumps(config), encoding="utf-8")
        log = open(self.folder / "orthanc.log", "wb")
        self.proc = subprocess.Popen([ORTHANC, str(self.folder / "orthanc.json")], stdout=log,
                                     stderr=subprocess.STDOUT, env=DCMTK_ENV, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"Orthanc exited with {self.proc.returncode}:\n{self.log()}")
            if port_accepts(self.http_port) and port_accepts(self.dicom_port):
                try:
                    self.get("/system")
                    return self
                except (OSError, urllib.error.URLError):
                    pass
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"Orthanc did not start within 60 s:\n{self.log()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def log(self) -> str:
        try:
            return (self.folder / "orthanc.log").read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    # -- REST ---------------------------------------------------------------------------------
    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://{LOOPBACK}:{self.http_port}{path}", data=data, method=method)
        try:
            with self._opener.open(request, timeout=90) as answer:
                raw = answer.read()
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"Orthanc {method} {path}: HTTP {exc.code} {exc.read()[:2000]!r}") from None
        return json.loads(raw) if raw.strip() else None

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def post(self, path: str, body: Any) -> Any:
        return self.call("POST", path, body)

    def upload(self, paths: list[Path]) -> None:
        for path in paths:
            self.post("/instances", path.read_bytes())

    def study_id(self, study_uid: str) -> str | None:
        found = [r for r in self.post("/tools/lookup", study_uid.encode()) if r["Type"] == "Study"]
        return found[0]["ID"] if found else None

    def instance_uids(self, study_uid: str) -> set[str]:
        study = self.study_id(study_uid)
        if study is None:
            return set()
        return {i["MainDicomTags"]["SOPInstanceUID"] for i in self.get(f"/studies/{study}/instances")}

    def query(self, level: str, keys: dict[str, str]) -> tuple[str, list[dict[str, Any]]]:
        """C-FIND on pacsnode through Orthanc; returns (query id, simplified answers)."""
        made = self.post("/modalities/pacsnode/query", {"Level": level, "Query": keys})
        answers = self.get(f"/queries/{made['ID']}/answers?expand&simplify")
        return made["ID"], answers


@dataclass
class Pair:
    node: NodeProcess
    orthanc: Orthanc
    base: Path

    def instances(self, study_uid: str, series_uid: str | None = None) -> set[str]:
        result = self.node.cli("study", "show", study_uid, "--json")
        if result.returncode != 0:
            return set()
        study = json.loads(result.stdout)
        return {i["sop_instance_uid"] for s in study["series"] if series_uid in (None, s["series_uid"])
                for i in s["instances"]}

    @property
    def orthanc_spec(self) -> str:
        return f"{ORTHANC_AET}@{LOOPBACK}:{self.orthanc.dicom_port}"


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    base = tmp_path_factory.mktemp("orthanc")
    node = NodeProcess(base / "home", institution=INSTITUTION).init()
    # pynetdicom holds a bare TCP connect (the readiness probe) for the ACSE timeout; keep it short.
    node.configure("network", "acse_timeout", 3)
    result = node.cli("import", str(SAMPLE_DIR), timeout=120)
    assert result.returncode == 0, result.explain()
    orthanc = Orthanc(base / "orthanc")
    try:
        orthanc.start()
        node.start()
        result = node.cli("peer", "add", "orthanc", "--aet", ORTHANC_AET, "--host", LOOPBACK, "--port",
                          str(orthanc.dicom_port), "--institution", INSTITUTION)
        assert result.returncode == 0, result.explain()
        orthanc.call("PUT", "/modalities/pacsnode", {"AET": node.aet, "Host": LOOPBACK, "Port": node.port})
        yield Pair(node, orthanc, base)
    finally:
        node.stop()
        orthanc.stop()


def make_study(folder: Path, study_uid: str, count: int, patient_id: str, series: int = 1) -> list[Path]:
    """A small synthetic CT study (``series`` series of ``count`` 8x8 images) that nobody holds yet."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(1, series + 1):
        for n in range(1, count + 1):
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = CTImageStorage
            meta.MediaStorageSOPInstanceUID = f"{study_uid}.{s}.{n}"
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
            ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, f"{study_uid}.{s}"
            ds.PatientID, ds.IssuerOfPatientID, ds.PatientName = patient_id, INSTITUTION, f"{patient_id}^TEST"
            ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.Modality = "20261120", "101010", patient_id, "CT"
            ds.SeriesNumber, ds.InstanceNumber = s, n
            ds.Rows = ds.Columns = 8
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.PixelData = np.full((8, 8), n, dtype=np.uint16).tobytes()
            path = folder / f"{s}_{n:03d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths


def study_row(node: NodeProcess, study_uid: str) -> dict[str, Any] | None:
    return next((row for row in node.studies() if row["study_uid"] == study_uid), None)


# -- Orthanc as the SCU -------------------------------------------------------------------------
def test_orthanc_echoes_and_queries_pacsnode(pair: Pair) -> None:
    assert pair.orthanc.post("/modalities/pacsnode/echo", {}) == {}
    _, answers = pair.orthanc.query("Study", {"PatientID": "P0001", "StudyDate": "", "ModalitiesInStudy": ""})
    assert {a["StudyInstanceUID"] for a in answers} == {f"{UID}.1.{n}" for n in (4, 5, 6, 7)}
    assert all(a["RetrieveAETitle"] == pair.node.aet for a in answers)
    _, answers = pair.orthanc.query("Series", {"StudyInstanceUID": STUDY_CT_CHEST, "Modality": ""})
    assert sorted(a["Modality"] for a in answers) == ["CT", "CT", "DOC"]


def test_orthanc_query_in_utf8_gets_chinese_names(pair: Pair) -> None:
    _, answers = pair.orthanc.query("Study", {"PatientName": "王*"})
    assert [(a["StudyInstanceUID"], a["PatientName"]) for a in answers] == [(STUDY_CONTRAST, "王^小明")]


def test_orthanc_query_then_retrieve_lands_the_study_in_orthanc(pair: Pair) -> None:
    query_id, answers = pair.orthanc.query("Study", {"StudyInstanceUID": STUDY_CT_CHEST})
    assert len(answers) == 1
    job = pair.orthanc.post(f"/queries/{query_id}/retrieve", {"TargetAet": ORTHANC_AET, "Synchronous": True})
    assert job is not None
    assert pair.orthanc.instance_uids(STUDY_CT_CHEST) == pair.instances(STUDY_CT_CHEST)


def test_orthanc_moves_one_series_from_pacsnode(pair: Pair) -> None:
    pair.orthanc.post("/modalities/pacsnode/move", {
        "Level": "Series", "TargetAet": ORTHANC_AET, "Synchronous": True,
        "Resources": [{"StudyInstanceUID": STUDY_CONTRAST, "SeriesInstanceUID": SERIES_CONTRAST_1}]})
    assert pair.orthanc.instance_uids(STUDY_CONTRAST) == pair.instances(STUDY_CONTRAST, SERIES_CONTRAST_1)


def test_orthanc_stores_to_pacsnode(pair: Pair) -> None:
    study_uid = f"{UID}.88.1"
    files = make_study(pair.base / "to_pacsnode", study_uid, 4, "FROM_ORTHANC", series=2)
    pair.orthanc.upload(files)
    orthanc_id = pair.orthanc.study_id(study_uid)
    job = pair.orthanc.post("/modalities/pacsnode/store", {"Resources": [orthanc_id], "Synchronous": True})
    assert (job["InstancesCount"], job["FailedInstancesCount"]) == (8, 0)
    row = study_row(pair.node, study_uid)
    assert row is not None and (row["instance_count"], row["series_count"]) == (8, 2)
    assert pair.instances(study_uid) == {str(dcmread(p).SOPInstanceUID) for p in files}


# -- pacsnode as the SCU ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def in_orthanc(pair: Pair) -> dict[str, list[Path]]:
    """Three studies only Orthanc holds: one to find, one to move, one to get."""
    made = {name: make_study(pair.base / name, f"{UID}.88.{n}", 3, f"ORTH_{name.upper()}", series=2)
            for n, name in ((2, "find"), (3, "move"), (4, "get"))}
    for files in made.values():
        pair.orthanc.upload(files)
    return made


def test_pacsnode_finds_on_orthanc(pair: Pair, in_orthanc: dict[str, list[Path]]) -> None:
    result = pair.node.cli("find", pair.orthanc_spec, "-k", "PatientID=ORTH_*", "--json")
    assert result.returncode == 0, result.explain()
    rows = json.loads(result.stdout)
    assert {r["StudyInstanceUID"] for r in rows} == {f"{UID}.88.{n}" for n in (2, 3, 4)}
    assert {str(r["NumberOfStudyRelatedInstances"]) for r in rows} == {"6"}
    result = pair.node.cli("find", pair.orthanc_spec, "--level", "SERIES", "-k", f"StudyInstanceUID={UID}.88.2",
                           "--json")
    assert result.returncode == 0, result.explain()
    assert {r["SeriesInstanceUID"] for r in json.loads(result.stdout)} == {f"{UID}.88.2.1", f"{UID}.88.2.2"}
    result = pair.node.cli("find", pair.orthanc_spec, "--model", "patient", "--level", "PATIENT", "-k",
                           "PatientID=ORTH_FIND", "--json")
    assert result.returncode == 0, result.explain()
    assert [r["PatientID"] for r in json.loads(result.stdout)] == ["ORTH_FIND"]


def test_pacsnode_moves_from_orthanc_into_itself(pair: Pair, in_orthanc: dict[str, list[Path]]) -> None:
    study_uid = f"{UID}.88.3"
    assert study_row(pair.node, study_uid) is None
    result = pair.node.cli("move", pair.orthanc_spec, "--study", study_uid)
    assert result.returncode == 0, result.explain()
    assert pair.instances(study_uid) == {str(dcmread(p).SOPInstanceUID) for p in in_orthanc["move"]}


def test_pacsnode_gets_from_orthanc(pair: Pair, in_orthanc: dict[str, list[Path]]) -> None:
    study_uid = f"{UID}.88.4"
    assert study_row(pair.node, study_uid) is None
    result = pair.node.cli("get", pair.orthanc_spec, "--study", study_uid, "--series", f"{study_uid}.2")
    assert result.returncode == 0, result.explain()
    assert pair.instances(study_uid) == {f"{study_uid}.2.{n}" for n in (1, 2, 3)}
    result = pair.node.cli("get", pair.orthanc_spec, "--study", study_uid)
    assert result.returncode == 0, result.explain()
    row = study_row(pair.node, study_uid)
    assert row is not None and (row["instance_count"], row["series_count"]) == (6, 2)


def test_pacsnode_sends_to_orthanc(pair: Pair) -> None:
    study_uid = f"{UID}.1.14"  # the Implicit VR Little Endian study
    result = pair.node.cli("send", pair.orthanc_spec, "--study", study_uid)
    assert result.returncode == 0, result.explain()
    assert pair.orthanc.instance_uids(study_uid) == pair.instances(study_uid)
