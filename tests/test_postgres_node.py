"""A whole node on PostgreSQL (issue 16.1): ``[index] url`` set, everything else as on SQLite.

One real PostgreSQL for the session (tests/engines.py), a database per test, a real
``pacsnode serve``, DCMTK's storescu/findscu/movescu/storescp over loopback. The node's home
holds no ``index.sqlite``: what findscu finds came out of PostgreSQL.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydicom import dcmread

from pacsnode.cli import main
from support import LOOPBACK, NodeProcess, Storescp, dcmtk, expected_studies, have_tool, sample_files

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.interop,
    pytest.mark.skipif(not all(have_tool(t) for t in ("storescu", "findscu", "movescu", "storescp")),
                       reason="DCMTK is not installed"),
]

INSTITUTION = "PRV001"


def findscu(port: int, out: Path, *keys: str) -> list[dict[str, str]]:
    out.mkdir(parents=True, exist_ok=True)
    args = [dcmtk("findscu"), "-S", "-aet", "FINDSCU", "-aec", "PACSNODE", "-X", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    done = subprocess.run([*args, LOOPBACK, str(port)], capture_output=True, timeout=60)
    assert done.returncode == 0, (done.stdout + done.stderr).decode("utf-8", "replace")
    return [{"study": str(ds.get("StudyInstanceUID", "")), "patient": str(ds.get("PatientID", "")),
             "name": str(ds.get("PatientName", ""))} for ds in map(dcmread, sorted(out.glob("rsp*.dcm")))]


def test_a_node_on_postgresql_stores_finds_moves_audits_and_checks_clean(tmp_path: Path, postgres_url: str) -> None:
    files = sample_files()
    studies = expected_studies(files)
    node = NodeProcess(tmp_path / "home", institution=INSTITUTION).init("--index-url", postgres_url)
    workstation = Storescp(tmp_path / "ws", "WS").start()
    try:
        for args in (["findscu", "--aet", "FINDSCU", "--port", "1"], ["ws", "--aet", "WS", "--port", str(workstation.port)]):
            added = node.cli("peer", "add", args[0], *args[1:], "--host", LOOPBACK, "--institution", INSTITUTION)
            assert added.returncode == 0, added.explain()
        with node:
            stored = node.store(files)
            assert stored.returncode == 0, stored.explain()
            assert not (node.home / "index.sqlite").exists()  # the rows are in PostgreSQL
            assert {s["study_uid"] for s in node.studies()} == set(studies)

            target = next(s for s in studies.values() if s.patient_id and s.patient_name)
            exact = findscu(node.port, tmp_path / "exact", "QueryRetrieveLevel=STUDY", f"PatientID={target.patient_id}",
                            "StudyInstanceUID", "PatientName")
            assert {m["study"] for m in exact} == {s.study_uid for s in studies.values()
                                                    if s.patient_id == target.patient_id}
            prefix = target.patient_name[:3]
            by_name = findscu(node.port, tmp_path / "prefix", "QueryRetrieveLevel=STUDY", f"PatientName={prefix}*",
                              "StudyInstanceUID")
            assert {m["study"] for m in by_name} == {s.study_uid for s in studies.values()
                                                      if s.patient_name.startswith(prefix)}

            moved = subprocess.run([dcmtk("movescu"), "-S", "-aet", "FINDSCU", "-aec", "PACSNODE", "-aem", "WS",
                                    "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={target.study_uid}",
                                    LOOPBACK, str(node.port)], capture_output=True, timeout=120,
                                   env={**os.environ, "TCP_NODELAY": "1"})
            assert moved.returncode == 0, (moved.stdout + moved.stderr).decode("utf-8", "replace")
            received = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in workstation.folder.iterdir()
                        if p.is_file()}
            assert received == target.instances

            audit = node.cli("audit", "--json")
            assert audit.returncode == 0 and '"move"' in audit.stdout and "FINDSCU" in audit.stdout, audit.explain()
            token = node.cli("token", "create", "viewer", "--institution", INSTITUTION)
            assert token.returncode == 0, token.explain()
            assert "viewer" in node.cli("token", "list").stdout
        checked = node.check()
        assert checked.returncode == 0, checked.explain()
    finally:
        workstation.stop()


def test_backup_of_a_postgresql_node_is_refused_naming_pg_dump(tmp_path: Path, postgres_url: str) -> None:
    node = NodeProcess(tmp_path / "home").init("--index-url", postgres_url)
    refused = node.cli("backup", str(tmp_path / "backup"))
    assert refused.returncode != 0
    assert "pg_dump" in refused.stdout + refused.stderr
    assert not (tmp_path / "backup").exists() or not any((tmp_path / "backup").iterdir())


def test_an_unreachable_index_names_the_url_without_its_password(tmp_path: Path, postgres_server: object) -> None:
    port = getattr(postgres_server, "port")
    url = f"postgresql://pacsnode:s3cret-pw@127.0.0.1:{port}/no_such_database"
    result = CliRunner().invoke(main, ["--home", str(tmp_path / "home"), "init", "--index-url", url])
    assert result.exit_code != 0
    assert "s3cret-pw" not in result.output and "pacsnode:***@" in result.output, result.output


def test_a_store_while_postgresql_is_down_is_never_answered_success(tmp_path: Path) -> None:
    from engines import start_postgres

    server = start_postgres()
    try:
        node = NodeProcess(tmp_path / "home").init("--index-url", server.create_database("down"))
        first, second = sample_files()[:2]
        with node:
            before = node.store([first], extra=["-d"])
            assert [r.status for r in before.store_responses] == [0x0000], before.explain()
            server.stop()  # the index is gone while the node keeps its association port open
            during = node.store([second], extra=["-d"])
            # The association is rejected as transient (the calling AE's peer lookup needs the index:
            # test_cluster_outage.py); a failure status would do too. Success must never come back.
            assert 0x0000 not in [r.status for r in during.store_responses], during.explain()
            assert during.store_responses or "Association Rejected" in during.output, during.explain()
    finally:
        server.stop()
