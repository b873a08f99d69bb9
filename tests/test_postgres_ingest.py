"""Two nodes ingesting into one PostgreSQL index at once (issue 16 ingest target, ``index/pg_ingest.py``).

Ingest batches of several nodes run side by side on PostgreSQL (the write lock is taken shared
by them): what keeps the index right is PostgreSQL's UNIQUE constraints, a savepoint per
instance that runs again when it lost a race for a new row, and counts added at the end of each
batch. Proven here with two real ``pacsnode serve`` processes and eight DCMTK ``storescu`` that
send every instance of new studies of one new patient through both nodes at the same moment.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from support import NodeProcess, a_ct_file, have_tool, make_series

pytestmark = [pytest.mark.postgres,
              pytest.mark.skipif(not have_tool("storescu"), reason="DCMTK storescu is not installed")]


def _rows(url: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    import psycopg

    with psycopg.connect(url) as conn:
        return list(conn.execute(sql, params).fetchall())


def test_two_nodes_storing_the_same_new_studies_at_once_make_each_row_once_with_right_counts(
        tmp_path: Path, postgres_server: object) -> None:
    url = postgres_server.create_database()  # type: ignore[attr-defined]
    nodes = []
    for n in range(2):
        node = NodeProcess(tmp_path / f"node{n}", institution="PRV001").init()
        node.configure("node", "name", f"node-{n}").configure("index", "url", url)
        node.configure("node", "storage_dir", str(tmp_path / "storage")).configure("qc", "watch_stable", False)
        nodes.append(node)
    files: list[Path] = []
    for s in range(4):  # one new patient, 4 new studies of 2 new series of 3 instances
        study = generate_uid()
        for k in range(2):
            files += make_series(a_ct_file(), tmp_path / f"study{s}-{k}", 3, study_uid=study,
                                 PatientID="RACE-1", PatientName="RACE^ONE")
    sizes = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f.stat().st_size for f in files}
    # Sender i sends files[i::4] through each node: every instance arrives twice, once per node, at once.
    jobs = [(node, files[i::4]) for i in range(4) for node in nodes]
    try:
        for node in nodes:
            node.start()
        with ThreadPoolExecutor(len(jobs)) as pool:
            results = list(pool.map(lambda job: job[0].store(job[1], extra=["-d"], timeout=120), jobs))
    finally:
        for node in nodes:
            node.stop()
    for result in results:
        statuses = [r.status for r in result.store_responses]
        assert len(statuses) == 6 and set(statuses) == {0x0000}, result.explain()

    assert _rows(url, "SELECT COUNT(*) FROM patients WHERE patient_id = 'RACE-1'") == [(1,)]
    instances = _rows(url, "SELECT i.sop_instance_uid, i.size FROM instances i JOIN series se ON se.pk = i.series_pk "
                           "JOIN studies s ON s.pk = se.study_pk JOIN patients p ON p.pk = s.patient_pk "
                           "WHERE p.patient_id = 'RACE-1'")
    assert sorted(uid for uid, _size in instances) == sorted(sizes)  # each instance once
    studies = _rows(url, "SELECT s.pk, s.instance_count, s.series_count, s.size_bytes FROM studies s "
                         "JOIN patients p ON p.pk = s.patient_pk WHERE p.patient_id = 'RACE-1'")
    assert len(studies) == 4
    for pk, instance_count, series_count, size_bytes in studies:
        series = _rows(url, "SELECT se.instance_count, (SELECT COUNT(*) FROM instances i WHERE i.series_pk = se.pk), "
                            "(SELECT COALESCE(SUM(i.size), 0) FROM instances i WHERE i.series_pk = se.pk) "
                            "FROM series se WHERE se.study_pk = %s", (pk,))
        assert [(counted, real) for counted, real, _ in series] == [(3, 3), (3, 3)]
        assert (instance_count, series_count, size_bytes) == (6, 2, sum(int(s) for _, _, s in series))


def test_after_postgresql_restarts_the_first_read_and_write_succeed_on_fresh_connections() -> None:
    """The pool no longer pings a connection at each checkout (a round trip per statement): a
    connection that died with the server is dropped at its first use, and the read or the
    transaction runs on a fresh one instead of failing."""
    from engines import EngineMissing, start_postgres

    from pacsnode.index.postgres import PostgresIndex

    try:
        server = start_postgres()
    except EngineMissing as exc:
        pytest.skip(str(exc))
    try:
        index = PostgresIndex(server.create_database("restart"))
        try:
            assert not index.has_instance("1.2.3")  # the pool now holds a connection to this server
            server.restart()  # SIGKILL and start again: that connection is dead
            assert not index.has_instance("1.2.3")
            server.restart()  # and again before a write transaction
            with index.write() as conn:
                conn.execute("INSERT INTO audit (at, action, outcome) VALUES (?, ?, ?)", ("t", "test", "ok"))
            assert index.query("SELECT COUNT(*) FROM audit WHERE action = 'test'")[0][0] == 1
        finally:
            index.close()
    finally:
        server.stop()
