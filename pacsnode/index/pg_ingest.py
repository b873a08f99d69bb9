"""Group commit on PostgreSQL: the ingest batches of several nodes run side by side.

On SQLite one writer holds the file; :class:`~pacsnode.index.postgres.PgConnection` copies that
with one advisory lock that every write transaction takes. For ingest that made two nodes on
one database no faster than one: each node's batch waited for the other's whole transaction
(~15 round trips per instance, then the commit). Here an ingest batch takes that lock *shared*:
batches of all nodes run at the same time, while every other writer (repair, rejection notes,
QC, peers, audit) still takes it exclusively and so never meets a half-done ingest, as before.

What keeps two concurrent batches right is PostgreSQL itself:

* **rows created by both at once** (the same patient, study, series or SOP Instance UID arriving
  through two nodes): the UNIQUE constraints let one insert win; the other instance's savepoint
  is rolled back and the instance is recorded again, and its reads (READ COMMITTED: a new snapshot
  per statement) now see the winner's rows. No duplicate row, no failed store.
* **counts** (series and study instance counts, sizes): added per batch just before COMMIT,
  in study then series order, instead of per instance: the hot study row is locked only for
  the end of a transaction, so the batches of two nodes storing into one study overlap up to
  their commits, and every batch locks rows in the same order.
* **a deadlock** (two batches creating each other's series at once) is detected by PostgreSQL
  after ``deadlock_timeout``; the whole batch is rolled back and run again.

Round trips are what an instance costs here (each a wait for the server): a batch of one
instance has no savepoint (its transaction is its savepoint: a lost race runs the batch again),
BEGIN goes with the lock in one message, and the writes whose answer nobody reads wait for the
next statement that is answered and go out with it in one pipeline, as do an instance's four
reads (already there? patient, study, series; :mod:`pacsnode.index.pg_pipeline`): 4 round trips
for an instance into a known series, 13 before.

Success still means committed (``synchronous_commit`` stays on for instance rows): the caller
is answered only after this batch's COMMIT returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pacsnode.index.schema import utc_now

if TYPE_CHECKING:  # pragma: no cover
    from pacsnode.index.postgres import PostgresIndex
    from pacsnode.index.sqlite import _Pending

#: Tries of one instance that lost a race for a new row, and of a batch chosen as a deadlock victim.
TRIES = 3
#: Batches go through the server-side function (pg_store); False: the shared SQL alone (tests compare both).
FUNCTION = True


@dataclass
class _Counts:
    """What a batch adds to one study's counts (and to its series')."""

    instances: int = 0
    new_series: int = 0
    size: int = 0
    series: dict[int, int] = field(default_factory=dict)

    def copy(self) -> "_Counts":
        return _Counts(self.instances, self.new_series, self.size, dict(self.series))


def _pending(index: "PostgresIndex") -> dict[int, _Counts] | None:
    return getattr(index._local, "pending_counts", None)


def defer_counts(index: "PostgresIndex", series_pk: int, study_pk: int, new_series: bool, size: int) -> bool:
    """Keep one stored instance's counts for the end of this thread's batch; False outside a batch."""
    pending = _pending(index)
    if pending is None:
        return False
    counts = pending.setdefault(study_pk, _Counts())
    counts.instances += 1
    counts.new_series += int(new_series)
    counts.size += size
    counts.series[series_pk] = counts.series.get(series_pk, 0) + 1
    return True


def forget_counts(index: "PostgresIndex", study_pks: set[int]) -> None:
    """A recount of these studies (replace, removal) already includes this batch's instances."""
    pending = _pending(index)
    for study_pk in study_pks if pending else ():
        pending.pop(study_pk, None)  # type: ignore[union-attr]


def _flush(conn: Any, pending: dict[int, _Counts], now: str) -> None:
    for study_pk in sorted(pending):
        counts = pending[study_pk]
        for series_pk in sorted(counts.series):
            conn.execute("UPDATE series SET instance_count = instance_count + ? WHERE pk = ?",
                         (counts.series[series_pk], series_pk))
        conn.execute(
            "UPDATE studies SET instance_count = instance_count + ?, series_count = series_count + ?, "
            "size_bytes = size_bytes + ?, updated_at = ? WHERE pk = ?",
            (counts.instances, counts.new_series, counts.size, now, study_pk))


def commit_batch(index: "PostgresIndex", batch: list["_Pending"]) -> None:
    """Index ``batch`` sharing the write lock: one function call per instance (:mod:`pacsnode.index.pg_store`),
    then what the function leaves (a replace, text with a NUL) by the shared SQL, each in one transaction."""
    from pacsnode.index import pg_store

    now = utc_now()
    ordered = sorted(batch, key=lambda item: (item.args[0].study_uid, item.args[0].series_uid))
    try:
        rest = pg_store.commit_batch(index, ordered, now) if FUNCTION else ordered
        if rest:
            commit_statements(index, rest, now)
    finally:
        for item in batch:
            item.done = True


def commit_statements(index: "PostgresIndex", batch: list["_Pending"], now: str) -> None:
    """Index ``batch`` by the shared SQL in one transaction (each instance in its own savepoint)."""
    from psycopg.errors import DeadlockDetected, UniqueViolation

    again: tuple[type[BaseException], ...] = (DeadlockDetected, UniqueViolation) if len(batch) == 1 \
        else (DeadlockDetected,)
    for attempt in range(1, TRIES + 1):
        try:
            _run(index, batch, now)
            return
        except Exception as exc:  # the commit failed: nothing of the batch is indexed
            if isinstance(_cause(exc), again) and attempt < TRIES:
                continue
            for item in batch:
                item.error, item.result = item.error or exc, None
            return


def _cause(exc: BaseException) -> BaseException:
    return exc.__cause__ if exc.__cause__ is not None else exc


def _run(index: "PostgresIndex", batch: list["_Pending"], now: str) -> None:
    conn = index.connection()
    pending: dict[int, _Counts] = {}
    for item in batch:
        item.error, item.result = None, None
    conn.shared_lock, conn.defer_writes, index._local.pending_counts = True, True, pending
    try:
        with index.write() as tx:
            conn.shared_lock = False
            if len(batch) == 1:  # alone: no savepoint (two round trips); its failure rolls back the batch
                _read_ahead(conn, batch[0])
                batch[0].result = index._record(tx, *batch[0].args, now)
            for item in batch if len(batch) > 1 else ():
                _record_one(index, tx, item, now, pending)
            _flush(tx, pending, now)
    finally:
        conn.shared_lock, conn.defer_writes, index._local.pending_counts = False, False, None


#: The reads of SqliteIndex._record_rows and its _upsert_* for one instance, word for word (a kept
#: read is served only to the same statement with the same parameters; test_postgres_pipeline
#: counts the round trips, so a statement changed there shows up as one more round trip here).
_EXISTING = ("SELECT i.pk, i.path, i.size, s.study_pk FROM instances i JOIN series s ON s.pk = i.series_pk "
             "WHERE i.sop_instance_uid = ?")
_PATIENT = "SELECT pk, patient_name, birth_date, sex FROM patients WHERE patient_id=? AND issuer=?"
_STUDY = "SELECT pk FROM studies WHERE study_uid=?"
_SERIES = "SELECT pk FROM series WHERE series_uid=?"


def _read_ahead(conn: Any, item: "_Pending") -> None:
    """Ask whether the instance, its patient, study and series exist in one round trip (pg_pipeline)."""
    facts = item.args[0]
    conn.read_ahead([(_EXISTING, (facts.sop_instance_uid,)),
                     (_PATIENT, (facts.patient_id, facts.issuer_of_patient_id)),
                     (_STUDY, (facts.study_uid,)), (_SERIES, (facts.series_uid,))])


def _record_one(index: "PostgresIndex", conn: Any, item: "_Pending", now: str, pending: dict[int, _Counts]) -> None:
    """One instance in its savepoint: it fails alone, and runs again when it lost a race for a new row."""
    from psycopg.errors import DeadlockDetected, UniqueViolation

    for attempt in range(1, TRIES + 1):
        saved = {pk: counts.copy() for pk, counts in pending.items()}
        conn.execute("SAVEPOINT instance")
        try:
            _read_ahead(conn, item)
            item.result = index._record(conn, *item.args, now)
            conn.execute("RELEASE instance")
            return
        except DeadlockDetected:
            raise  # this batch's earlier rows hold the locks: only a new transaction helps
        except Exception as exc:
            conn.execute("ROLLBACK TO instance")
            conn.execute("RELEASE instance")
            pending.clear()
            pending.update(saved)
            if isinstance(exc, UniqueViolation) and attempt < TRIES:
                continue  # another node created the same row a moment ago: its row is committed now
            item.result, item.error = None, exc
            return
