"""Deferred writes of an ingest batch: sent with the next statement that needs an answer, one round trip.

An instance's rows cost ~12 statements on PostgreSQL, each a round trip (a wake-up of the server
process, then of the node's thread: on a busy machine each one waits for a core). Half of them are
writes whose answer nobody reads (UPDATE the counts, the delivery columns, the rejection flag;
INSERT ... ON CONFLICT DO NOTHING; SAVEPOINT). Inside an ingest batch
(:func:`pacsnode.index.pg_ingest.commit_batch` sets ``PgConnection.defer_writes``) such a
statement is queued, and the queue goes out in one pipeline (psycopg 3 ``conn.pipeline()``, one
Sync) together with the next statement whose result is read: a SELECT, an INSERT ... RETURNING,
a ``RELEASE`` or the ``COMMIT``.

Where an error is reported is what keeps this right:

* a ``RELEASE`` of a savepoint and the ``COMMIT`` are points where the queue is sent and waited
  for, so a failing deferred write fails inside its own instance's savepoint (that instance alone
  fails or runs again) or fails the COMMIT (the batch fails: nobody is answered Success);
* ``ROLLBACK TO`` drops the queued writes it would undo anyway (a queued ``SAVEPOINT`` is sent
  first, so that it exists to roll back to); ``ROLLBACK`` drops the queue;
* in a pipeline the server skips everything after a failed statement up to the Sync, so a COMMIT
  behind a failed write is never run: the transaction is left aborted and rolled back when its
  connection goes back to the pool.

An instance's reads go out together too (``PgConnection.read_ahead``): whether the instance, its
patient, study and series exist are four SELECTs by keys the batch already knows, each answered
before the next was asked. They are sent in one pipeline at the start of the instance and their
rows kept; the shared code's same statement with the same parameters gets them instead of a round
trip. A write of this transaction to a table a kept read mentions drops that read (it asks the
server again), and the end of the transaction or a ROLLBACK TO drops them all. A kept read is the
read made a few statements earlier under READ COMMITTED: what another node commits meanwhile is
met by the UNIQUE constraints and the savepoint retry, as it is between any two statements.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

Queued = list[tuple[str, Sequence[Any] | None]]


def deferrable(text: str) -> bool:
    """A statement whose answer the ingest path never reads (no rows, no rowcount)."""
    head = text.lstrip()[:10].upper()
    if head.startswith("SAVEPOINT"):
        return True
    return head.startswith(("UPDATE", "INSERT", "DELETE")) and "RETURNING" not in text.upper()


def is_rollback_to(text: str) -> bool:
    return text.lstrip()[:11].upper() == "ROLLBACK TO"


def savepoint_name(text: str) -> str:
    return text.split()[-1].lower()


def before_rollback_to(queue: Queued, text: str) -> Queued:
    """What of ``queue`` must still be sent before ``text`` (ROLLBACK TO x): only a queued SAVEPOINT x.

    Everything queued since the savepoint is undone by the rollback, so it is not sent at all.
    """
    name = savepoint_name(text)
    for position in range(len(queue) - 1, -1, -1):
        queued = queue[position][0].split()
        if queued[0].upper() == "SAVEPOINT" and queued[-1].lower() == name:
            return queue[position:position + 1]
    return []


def written_table(text: str) -> str:
    """The table an UPDATE / INSERT INTO / DELETE FROM writes ("" for anything else)."""
    words = text.split(None, 3)
    if not words:
        return ""
    head = words[0].upper()
    if head == "UPDATE" and len(words) > 1:
        return words[1].lower()
    if head in ("INSERT", "DELETE") and len(words) > 2:
        return words[2].lower()
    return ""


def cache_key(text: str, params: Sequence[Any] | None) -> tuple[str, tuple[Any, ...]] | None:
    try:
        key = (text, tuple(params or ()))
        hash(key)
    except TypeError:
        return None
    return key


def run_reads(conn: Any, queue: Queued, reads: Queued, convert: Callable[[Sequence[Any] | None], Any],
              row_factory: Any) -> list[list[Any]]:
    """Send ``queue`` then every statement of ``reads`` in one pipeline; return each read's rows."""
    cursors = [conn.cursor(row_factory=row_factory) for _ in reads]
    try:
        with conn.pipeline():
            for queued, queued_params in queue:
                conn.execute(queued, convert(queued_params) if queued_params else None)
            for cursor, (text, params) in zip(cursors, reads):
                cursor.execute(text, convert(params) if params else None)
        return [cursor.fetchall() if cursor.description is not None else [] for cursor in cursors]
    finally:
        for cursor in cursors:
            cursor.close()


def run_pipelined(conn: Any, queue: Queued, text: str | None, params: Sequence[Any] | None,
                  convert: Callable[[Sequence[Any] | None], Any], row_factory: Any) -> tuple[list[Any], int]:
    """Send ``queue`` then ``text`` in one pipeline; return ``text``'s rows and rowcount.

    The first failing statement raises here (psycopg raises it when the pipeline syncs).
    """
    cursor = conn.cursor(row_factory=row_factory)
    try:
        with conn.pipeline():
            for queued, queued_params in queue:
                conn.execute(queued, convert(queued_params) if queued_params else None)
            if text is not None:
                cursor.execute(text, convert(params) if params else None)
        if text is None:
            return [], -1
        rows = cursor.fetchall() if cursor.description is not None else []
        return rows, cursor.rowcount
    finally:
        cursor.close()
