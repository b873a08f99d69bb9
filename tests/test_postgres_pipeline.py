"""Deferred writes of an ingest batch on PostgreSQL (``index/pg_pipeline.py``): fewer round trips, same outcome.

Inside a batch, writes whose answer nobody reads go out with the next statement that is answered
(a SELECT, an INSERT ... RETURNING, a savepoint's RELEASE, the COMMIT). A deferred write that
fails must still fail its own instance only, and in a batch of one fail the batch: never Success
for an instance whose rows did not commit. A trigger makes one instance's deferred UPDATE (who
delivered it) fail on a real PostgreSQL.
"""

from __future__ import annotations

from typing import Iterator

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from pacsnode.index import pg_ingest
from pacsnode.index.postgres import PostgresIndex
from pacsnode.index.sqlite import _Pending
from pacsnode.model import DeliveryKind, DuplicatePolicy, InstanceFacts, Provenance, StoredFile, StoreResult

pytestmark = pytest.mark.postgres

ROOT = "1.2.826.0.1.3680043.10.1173.17"


@pytest.fixture(params=["function", "statements"])
def index(postgres_url: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[PostgresIndex]:
    """Each test on both ways a batch is indexed: the server-side function (pg_store) and the shared SQL."""
    monkeypatch.setattr(pg_ingest, "FUNCTION", request.param == "function")
    index = PostgresIndex(postgres_url)
    index.query("SELECT 1")
    with index.write() as conn:  # the instance row (its INSERT or delivery UPDATE) of one delivered by BOOM fails
        conn.execute("CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                     "IF NEW.delivered_peer = 'BOOM' THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END $$")
        conn.execute("CREATE TRIGGER boom BEFORE INSERT OR UPDATE ON instances FOR EACH ROW EXECUTE FUNCTION boom()")
    try:
        yield index
    finally:
        index.close()


def pending(i: int, peer: str) -> _Pending:
    facts = InstanceFacts(sop_instance_uid=f"{ROOT}.1.1.{i}", sop_class_uid=str(CTImageStorage),
                          study_uid=f"{ROOT}.1", series_uid=f"{ROOT}.1.1", transfer_syntax=ExplicitVRLittleEndian,
                          patient_id="PIPE1", patient_name="PIPE^LINE", modality="CT", instance_number=i)
    provenance = Provenance(DeliveryKind.PEER, aet=peer, peer=peer)
    return _Pending((facts, StoredFile(f"p/{i}.dcm", 100, "0" * 64), peer, DuplicatePolicy.KEEP_FIRST,
                     provenance, None))


def counts(index: PostgresIndex) -> tuple[int, list[tuple[int, int]]]:
    instances = int(index.query("SELECT COUNT(*) FROM instances")[0][0])
    return instances, [(int(r[0]), int(r[1])) for r in index.query("SELECT instance_count, size_bytes FROM studies")]


def test_a_deferred_write_that_fails_fails_its_own_instance_and_the_batch_goes_on(index: PostgresIndex) -> None:
    batch = [pending(1, "OK"), pending(2, "BOOM"), pending(3, "OK")]
    pg_ingest.commit_batch(index, batch)
    assert [item.done for item in batch] == [True, True, True]
    assert batch[0].result == (StoreResult.STORED, None) and batch[2].result == (StoreResult.STORED, None)
    assert batch[1].result is None and "boom" in str(batch[1].error)
    assert counts(index) == (2, [(2, 200)])  # the failed instance is neither a row nor in the counts
    again = [pending(4, "OK")]  # the connection went back to the pool clean: the next batch commits
    pg_ingest.commit_batch(index, again)
    assert again[0].error is None and counts(index) == (3, [(3, 300)])


def test_a_batch_of_one_whose_deferred_write_fails_commits_nothing(index: PostgresIndex) -> None:
    batch = [pending(1, "BOOM")]
    pg_ingest.commit_batch(index, batch)
    assert batch[0].result is None and "boom" in str(batch[0].error)
    assert counts(index) == (0, [])  # no patient, study or series row left behind either
    assert index.query("SELECT COUNT(*) FROM patients")[0][0] == 0


def test_an_instance_into_a_known_series_costs_one_round_trip(index: PostgresIndex, tmp_path: object) -> None:
    """Counted in libpq's own protocol trace: one Sync (or simple Query) per wait for the server.

    The function: BEGIN, the lock, the call and COMMIT in one pipeline. The shared SQL: BEGIN with
    the lock; the instance's four reads (already there? patient, study, series) in one pipeline; its
    INSERT (RETURNING pk); then its writes (study flags, delivery, rejection flag, counts) ride with
    the COMMIT. Thirteen before the writes were deferred and the reads sent together.
    """
    from pathlib import Path

    pg_ingest.commit_batch(index, [pending(1, "OK")])  # patient, study and series exist now
    trace = Path(str(tmp_path)) / "libpq.trace"
    conn = index._pool.getconn()  # the pool's one idle connection: the batch below runs on it
    index._pool.putconn(conn)
    with trace.open("w") as out:
        conn.pgconn.trace(out.fileno())
        batch = [pending(2, "OK")]
        pg_ingest.commit_batch(index, batch)
        conn.pgconn.untrace()
    assert batch[0].result == (StoreResult.STORED, None)
    sent = [line.split("\t") for line in trace.read_text().splitlines()]
    waits = sum(1 for fields in sent if len(fields) > 2 and fields[1] == "F" and fields[3].split(" ")[0] in
                ("Sync", "Query"))
    assert waits == (1 if pg_ingest.FUNCTION else 4), trace.read_text()


def test_reads_sent_ahead_are_never_served_stale_within_a_batch(index: PostgresIndex) -> None:
    """A second copy of an instance in the same batch sees the first (the read is asked again, after
    the first's rows), and instances creating their patient, study and series count right."""
    batch = [pending(1, "OK"), pending(1, "OK"), pending(2, "OK")]
    pg_ingest.commit_batch(index, batch)
    assert [item.error for item in batch] == [None, None, None]
    assert [item.result[0] if item.result else None for item in batch] == \
        [StoreResult.STORED, StoreResult.DUPLICATE, StoreResult.STORED]
    assert counts(index) == (2, [(2, 200)])
    assert index.query("SELECT COUNT(*) FROM patients")[0][0] == 1
    assert index.query("SELECT series_count FROM studies")[0][0] == 1
