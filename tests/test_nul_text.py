"""An instance with NUL (0x00) in its text values: stored and indexed the same on SQLite and PostgreSQL.

PostgreSQL refuses NUL in ``text`` (psycopg raises before sending the row); SQLite kept it. The
index never records it (``pacsnode.dicom.nul``), so both backends answer the C-STORE with Success,
index the same values, and findscu finds the study with the same keys on both; the file is kept
as sent and ``check`` is clean. A served node per backend, DCMTK storescu and findscu.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from support import LOOPBACK, NodeProcess, a_ct_file, dataset_bytes, dcmtk, have_tool, write_instance
from web_helpers import create_token, get

pytestmark = [pytest.mark.postgres, pytest.mark.interop, pytest.mark.timeout(180),
              pytest.mark.skipif(not all(have_tool(t) for t in ("storescu", "findscu")), reason="DCMTK missing")]
INSTITUTION = "PRV001"
STUDY = "1.2.826.0.1.3680043.10.1078.88.1"


def _nul_instance(folder: Path) -> Path:
    other = Dataset()
    other.PatientID = "RES\x00123"
    other.IssuerOfPatientID = "RESIDENT"
    return write_instance(
        a_ct_file(), folder / "nul.dcm", study_uid=STUDY, series_uid=f"{STUDY}.1", sop_instance_uid=f"{STUDY}.1.1",
        PatientID="NUL\x00ID", PatientName="Nul^Pat\x00ient", StudyDescription="CHEST\x00 CT",
        SeriesDescription="AX\x00IAL", AccessionNumber="ACC88\x00", InstitutionName="Hospital\x00",
        ImageComments="not\x00indexed", OtherPatientIDsSequence=[other])


def _findscu(port: int, out: Path, *keys: str, query: Dataset | None = None) -> list[tuple[str, str, str]]:
    """findscu's matches; ``query``: a query file (a NUL cannot go through its command line)."""
    out.mkdir(parents=True)
    args = [dcmtk("findscu"), "-S", "-aet", "FINDSCU", "-aec", "PACSNODE", "-X", "-od", str(out)]
    for key in ("QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientName", "StudyDescription", *keys):
        args += ["-k", key]
    files = []
    if query is not None:
        query.save_as(out / "query.dcm", implicit_vr=False, little_endian=True)
        files = [str(out / "query.dcm")]
    done = subprocess.run([*args, LOOPBACK, str(port), *files], capture_output=True, timeout=60)
    assert done.returncode == 0, (done.stdout + done.stderr).decode("utf-8", "replace")
    return sorted((str(ds.StudyInstanceUID), str(ds.get("PatientName", "")), str(ds.get("StudyDescription", "")))
                  for ds in map(dcmread, sorted(out.glob("rsp*.dcm"))))


def _served(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    """Store the instance into a node on ``backend``; what the node then says about it."""
    init = ["--index-url", request.getfixturevalue("postgres_url")] if backend == "postgres" else []
    node = NodeProcess(tmp_path / backend, institution=INSTITUTION).init(*init)
    node.cli_in_process = True
    node.cli("peer", "add", "findscu", "--aet", "FINDSCU", "--host", LOOPBACK, "--port", "1",
             "--institution", INSTITUTION)
    node.enable_web()
    sent = _nul_instance(tmp_path / f"{backend}-in")
    found: dict[str, Any] = {}
    with node:
        stored = node.store([sent])
        assert stored.returncode == 0 and [r.status for r in stored.store_responses] == [0], stored.explain()
        for name, keys in (("all", ()), ("name", ("PatientName=Nul^Patient",)), ("id", ("PatientID=NULID",)),
                           ("description", ("StudyDescription=CHEST*",)), ("accession", ("AccessionNumber=ACC88",)),
                           ):
            found[name] = _findscu(node.port, tmp_path / f"{backend}-{name}", *keys)
        query = Dataset()
        query.PatientID = "NUL\x00ID"
        found["nul-key"] = _findscu(node.port, tmp_path / f"{backend}-nul-key", query=query)
        found["studies"] = [(s["patient_id"], s["patient_name"], s["study_description"], s["accession_number"],
                             s["institution_name"]) for s in node.studies()]
        metadata = get(node, f"/studies/{STUDY}/metadata", create_token(node, "viewer", INSTITUTION))
        assert metadata.status_code == 200, metadata.text
        found["comment"] = metadata.json()[0]["00204000"]["Value"]
    kept = list((node.home / "storage").rglob("*.dcm"))
    assert len(kept) == 1 and dataset_bytes(kept[0]) == dataset_bytes(sent)  # the file as sent
    checked = node.check()
    assert checked.returncode == 0, checked.explain()
    return found


def test_nul_in_text_values_is_stored_and_matched_identically_on_sqlite_and_postgresql(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    sqlite = _served("sqlite", tmp_path, request)
    assert sqlite["studies"] == [("NULID", "Nul^Patient", "CHEST CT", "ACC88", "Hospital")]
    for name in ("all", "name", "id", "description", "accession", "nul-key"):
        assert sqlite[name] == [(STUDY, "Nul^Patient", "CHEST CT")], name
    assert _served("postgres", tmp_path, request) == sqlite


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_number_no_index_column_can_hold_is_not_indexed_and_the_instance_is_stored(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """An Instance Number of 24 digits (IS allows 12): SQLite raised OverflowError, PostgreSQL
    'bigint out of range', both after the file was placed; now it is not indexed, like any bad number."""
    from pydicom import config as pydicom_config

    from pacsnode.config import parse_config
    from pacsnode.node import Node

    tables = {"index": {"url": request.getfixturevalue("postgres_url")}} if backend == "postgres" else {}
    node = Node(parse_config(tables, tmp_path / "home"))
    mode = pydicom_config.settings.writing_validation_mode
    pydicom_config.settings.writing_validation_mode = pydicom_config.WARN  # pydicom would refuse to write it
    try:
        sent = write_instance(a_ct_file(), tmp_path / "big.dcm", sop_instance_uid=f"{STUDY}.2.1",
                              InstanceNumber="123456789012345678901234", SeriesNumber="-99999999999999999999")
    finally:
        pydicom_config.settings.writing_validation_mode = mode
    try:
        report = node.import_paths([sent])
        assert (report.stored, report.rejected) == (1, [])
        row = node.index.instance_files([f"{STUDY}.2.1"])[f"{STUDY}.2.1"]
        assert node.storage.exists(row["path"]) and node.check().clean
        assert [s.instance_count for s in node.studies()] == [1]
    finally:
        node.close()
