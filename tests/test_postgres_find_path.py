"""The C-FIND read path on PostgreSQL (issue 16 target: exact Patient ID within 5 ms of the echo floor).

On a busy machine every round trip to PostgreSQL is a wake-up of its server process, so the
C-FIND path counts them: one pool connection per C-FIND for the match and its audit row
(``Index.pinned``), the audit row's transaction in one round trip (``Index.write_one``), and a
pool check that pings only a connection whose socket has something to say (a server that went
away). A real node (the listener in this process, so the pool's counters are readable) answers
DCMTK's findscu over loopback from a real PostgreSQL.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from pacsnode.config import IndexSettings, NodeConfig, QuerySettings, StoreSettings
from pacsnode.dimse.listener import Listener
from pacsnode.index.postgres import PostgresIndex
from pacsnode.model import DuplicatePolicy, InstanceFacts, Peer, StoredFile
from pacsnode.node import Node
from support import LOOPBACK, dcmtk, have_tool

pytestmark = [pytest.mark.postgres,
              pytest.mark.skipif(not have_tool("findscu"), reason="DCMTK is not installed")]

INSTITUTION = "PRV001"
ROOT = "1.2.826.0.1.3680043.10.1173.16"


def facts(i: int) -> InstanceFacts:
    return InstanceFacts(
        sop_instance_uid=f"{ROOT}.{i}.1.1", sop_class_uid=str(CTImageStorage), study_uid=f"{ROOT}.{i}",
        series_uid=f"{ROOT}.{i}.1", transfer_syntax=ExplicitVRLittleEndian, patient_id=f"PF{i // 2:04d}",
        patient_name=f"FIND^P{i // 2}", study_date="20260101", modality="CT", series_number=1, instance_number=1)


@pytest.fixture()
def served(tmp_path: Path, postgres_url: str) -> Iterator[tuple[Node, int]]:
    config = NodeConfig(home=tmp_path / "home", port=0, institution=INSTITUTION, store=StoreSettings(fsync=False),
                        query=QuerySettings(max_results=0), index=IndexSettings(url=postgres_url))
    node = Node(config)
    node.add_peer(Peer("findscu", "FINDSCU", LOOPBACK, 1, institution=INSTITUTION))
    for i in range(20):
        node.index.record_instance(facts(i), StoredFile(f"f/{i}.dcm", 1, "0" * 64), "TEST", DuplicatePolicy.KEEP_FIRST)
    listener = Listener(node, host=LOOPBACK, port=0)
    listener.start()
    try:
        yield node, listener.port
    finally:
        listener.stop(grace=1.0)
        node.close()


def findscu(port: int, patient_id: str, repeat: int) -> str:
    done = subprocess.run(
        [dcmtk("findscu"), "-v", "-S", "-aet", "FINDSCU", "-aec", "PACSNODE", "--repeat", str(repeat),
         "-k", "QueryRetrieveLevel=STUDY", "-k", f"PatientID={patient_id}", "-k", "StudyInstanceUID",
         "-k", "PatientName", LOOPBACK, str(port)],
        capture_output=True, timeout=60, env={**os.environ, "TCP_NODELAY": "1"})
    output = (done.stdout + done.stderr).decode("utf-8", "replace")
    assert done.returncode == 0, output
    return output


def pending(output: str) -> int:
    """The matches findscu received (``Find Response: N (Pending)``), every request counted."""
    return sum(1 for line in output.splitlines() if line.startswith("I: Find Response:") and "(Pending)" in line)


def borrowed(node: Node) -> int:
    """Connections lent by the node's pool so far, once the association's release is audited too."""
    index: Any = node.index
    assert isinstance(index, PostgresIndex)
    last, deadline = -1, time.monotonic() + 10
    while time.monotonic() < deadline:
        now = int(index._pool.get_stats().get("requests_num", 0))
        if now == last:
            return now
        last = now
        time.sleep(0.5)
    return last


def audited_finds(node: Node) -> int:
    return len(node.index.query("SELECT pk FROM audit WHERE action = 'find' AND outcome = 'answered'"))


def test_a_c_find_by_patient_id_borrows_one_pool_connection_for_its_match_and_audit(served: tuple[Node, int]) -> None:
    node, port = served
    findscu(port, "PF0003", 1)  # warm: the association's own reads (peer lookup, association audit)
    finds_before = audited_finds(node)  # (a borrow of its own, before the count starts)
    before = borrowed(node)
    findscu(port, "PF0003", 1)
    one = borrowed(node) - before
    before = borrowed(node)
    output = findscu(port, "PF0003", 6)
    six = borrowed(node) - before
    assert pending(output) == 6 * 2  # two studies each time: every match ran
    assert audited_finds(node) - finds_before == 7  # every C-FIND still audited
    assert six - one == 5, f"{six - one} pool borrows for 5 C-FINDs (one each expected)"


def test_an_audit_row_commits_whole_or_not_at_all_and_the_pinned_connection_stays_usable(
        served: tuple[Node, int]) -> None:
    node, _port = served
    index: Any = node.index
    hostile = "O'Brien\\'); DELETE FROM audit; -- 100% $$ ? %s \u738b"  # as a peer's keys may read
    with index.pinned():
        index.write_one("INSERT INTO audit (at, action, outcome, detail) VALUES (?,?,?,?)",
                        ("2026", "probe", "ok", hostile), durable=False)
        assert index.query("SELECT detail FROM audit WHERE action = 'probe'")[0][0] == hostile
        with pytest.raises(Exception):
            index.write_one("INSERT INTO audit (pk, at, action, outcome) VALUES (?,?,?,?)",
                            (int(index.query("SELECT MAX(pk) FROM audit")[0][0]), "2026", "probe", "duplicate"))
        assert [r[0] for r in index.query("SELECT outcome FROM audit WHERE action = 'probe'")] == ["ok"]
        with index.write() as conn:  # the same pinned connection, idle again, takes a whole transaction
            conn.execute("INSERT INTO audit (at, action, outcome) VALUES (?,?,?)", ("2026", "probe", "after"))
    assert sorted(r[0] for r in index.query("SELECT outcome FROM audit WHERE action = 'probe'")) == ["after", "ok"]


def test_a_c_find_after_postgresql_ended_every_pooled_connection_is_answered(
        served: tuple[Node, int], postgres_server: Any) -> None:
    """The pool no longer pings each borrowed connection; one whose backend is gone must still be caught."""
    import psycopg

    node, port = served
    findscu(port, "PF0001", 3)  # the pool holds used connections
    database = psycopg.conninfo.conninfo_to_dict(node.config.index.url)["dbname"]
    with psycopg.connect(postgres_server.url, autocommit=True) as admin:
        ended = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                              "WHERE datname = %s AND pid <> pg_backend_pid()", (database,)).fetchone()
    assert ended and ended[0] >= 1
    output = findscu(port, "PF0001", 2)
    assert pending(output) == 2 * 2, output



def test_c_finds_holding_every_pooled_connection_do_not_starve_a_store_commit(
        postgres_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pinned C-FINDs write their audit rows without the process write lock, so its holder gets a connection."""
    import threading

    import pacsnode.index.postgres as postgres

    monkeypatch.setattr(postgres, "POOL_MAX", 2)
    index = PostgresIndex(postgres_server.create_database())
    pinned, go, errors = threading.Barrier(3), threading.Event(), []

    def a_c_find() -> None:
        try:
            with index.pinned():
                pinned.wait(timeout=10)
                go.wait(timeout=10)  # the store commit below already holds the write lock
                index.write_one("INSERT INTO audit (at, action, outcome) VALUES (?,?,?)", ("2026", "find", "answered"),
                                durable=False)
        except BaseException as exc:  # noqa: BLE001 (reported by the assertion below)
            errors.append(exc)

    finds = [threading.Thread(target=a_c_find) for _ in range(2)]
    try:
        for thread in finds:
            thread.start()
        pinned.wait(timeout=10)  # both pool connections are pinned now
        committed = threading.Event()

        def a_store_commit() -> None:
            with index.write() as conn:  # takes the process write lock, then waits for a connection
                conn.execute("INSERT INTO audit (at, action, outcome) VALUES (?,?,?)", ("2026", "store", "stored"))
            committed.set()

        store = threading.Thread(target=a_store_commit)
        store.start()
        time.sleep(0.5)
        go.set()
        store.join(timeout=30)
        for thread in finds:
            thread.join(timeout=30)
        assert not errors, errors
        assert committed.is_set()
        assert sorted(r[0] for r in index.query("SELECT action FROM audit")) == ["find", "find", "store"]
    finally:
        go.set()
        index.close()


def test_a_c_finds_audit_row_does_not_wait_for_an_ingest_batch_in_flight(postgres_server: Any) -> None:
    """An ingest batch holds the writers' advisory lock shared until its COMMIT: the audit row of a
    C-FIND (an INSERT that reads nothing) must not queue behind it, as it did with the exclusive lock."""
    import threading

    import psycopg

    from pacsnode.index.postgres import WRITE_LOCK_KEY

    url = postgres_server.create_database()
    index = PostgresIndex(url)
    done = threading.Event()
    try:
        with psycopg.connect(url, autocommit=True) as batch:  # another node's ingest batch, mid-transaction
            batch.execute("BEGIN")
            batch.execute("SELECT pg_advisory_xact_lock_shared(%s)", (WRITE_LOCK_KEY,))

            def a_c_find() -> None:
                with index.pinned():
                    index.write_one("INSERT INTO audit (at, action, outcome) VALUES (?,?,?)",
                                    ("2026", "find", "answered"), durable=False)
                done.set()

            thread = threading.Thread(target=a_c_find, daemon=True)
            thread.start()
            answered = done.wait(timeout=10)
            batch.execute("ROLLBACK")  # lets an old-style (locked) audit row through, so the thread ends
            thread.join(timeout=10)
        assert answered, "the C-FIND's audit row waited for the ingest batch's lock"
        assert [r[0] for r in index.query("SELECT action FROM audit")] == ["find"]
    finally:
        index.close()


def test_rows_come_only_from_statements_that_return_rows(postgres_url: str) -> None:
    """``PgConnection`` tells a row-returning statement by its result's status (not psycopg's ``description``,
    which builds a Column object per column per statement)."""
    import psycopg

    from pacsnode.index import postgres

    assert postgres._TUPLES_OK == psycopg.pq.ExecStatus.TUPLES_OK
    index = PostgresIndex(postgres_url)
    try:
        conn = index.connection()
        assert conn.execute("SELECT 1 AS one WHERE 1 = 0").fetchall() == []
        assert dict(conn.execute("SELECT 1 AS one, 'x' AS two").fetchall()[0]) == {"one": 1, "two": "x"}
        assert conn.execute("SET application_name = 'pacsnode-test'").fetchall() == []
    finally:
        index.close()
