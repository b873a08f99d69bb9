"""An ingest batch on PostgreSQL in one round trip: BEGIN, one function call per instance, COMMIT.

The shared SQL (``SqliteIndex._record`` through :mod:`pacsnode.index.pg_pipeline`) cost an
instance four round trips inside its batch (BEGIN with the lock, its reads, its INSERT ...
RETURNING, the COMMIT), each a wake-up of a server process and of the node's thread, and a
dozen statements of Python (translation, parameters, rows). Here the batch is one pipeline with
one Sync: ``BEGIN``, the shared advisory lock (:mod:`pacsnode.index.pg_ingest`), one
``pacsnode_store_instance(...)`` per instance (:mod:`pacsnode.index.pg_store_sql`, installed by a
migration) and ``COMMIT``.

What stays as it was:

* **Success only after the commit**: results are read after the pipeline's Sync, and only when
  the COMMIT in it succeeded; any error before it skips the rest of the pipeline (the server
  ignores everything up to the Sync), so the COMMIT never runs behind a failed statement.
* **an instance fails alone**: the function is a subtransaction; an error in it undoes that
  instance only and comes back as its ``failed`` row (the others commit).
* **a lost race** for a new row with another node is tried again inside the function; a deadlock
  rolls the batch back and it runs again (``TRIES``), as before.
* **what the function does not do** goes through the shared SQL afterwards, in its own
  transaction (``pg_ingest``): replacing an instance already held (``existing``), an instance
  whose text holds a NUL (PostgreSQL text cannot: the shared path's parameters decide what that
  becomes) or an integer beyond bigint, and a batch whose pipeline failed for any reason but a lost
  server (never the function's own errors: it catches those), so one instance still fails alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pacsnode.index.pg_store_sql import ARGUMENTS
from pacsnode.model import DuplicatePolicy, StoreResult

if TYPE_CHECKING:  # pragma: no cover
    from pacsnode.index.postgres import PostgresIndex
    from pacsnode.index.sqlite import _Pending

#: Tries of a batch chosen as a deadlock victim.
TRIES = 3

CALL = "SELECT result, existing_path, error FROM pacsnode_store_instance(" + \
    ", ".join(f"%s::{kind}" for _, kind in ARGUMENTS) + ")"


class RecordFailed(RuntimeError):
    """PostgreSQL refused one instance's rows (its error, as the function caught it)."""


def _params(item: "_Pending", now: str) -> list[Any] | None:
    """The function's arguments for one instance; None when it must take the shared path."""
    from pacsnode.index.sqlite import fold

    facts, stored, calling_ae, policy, provenance, web = item.args
    codes = [("procedure", c) for c in facts.procedure_codes] + [("institution", c) for c in facts.institution_codes]
    others = facts.other_patient_ids
    params: list[Any] = [
        now, policy is DuplicatePolicy.KEEP_FIRST, calling_ae,
        facts.sop_instance_uid, facts.sop_class_uid, facts.instance_number, facts.transfer_syntax,
        stored.relative_path, stored.size, stored.sha256, facts.number_of_frames, int(facts.lossy),
        facts.specific_character_set, int(facts.deidentified),
        provenance.kind.value if provenance else "", (provenance.peer or provenance.aet) if provenance else "",
        provenance.institution if provenance else "",
        facts.patient_id, facts.issuer_of_patient_id, facts.patient_name, fold(facts.patient_name),
        facts.patient_birth_date, facts.patient_sex,
        [text for o in others for text in (o.patient_id, o.issuer, o.type_of_id)],
        facts.study_uid, facts.study_date, facts.study_time, facts.accession_number, facts.study_id,
        facts.study_description, facts.referring_physician, fold(facts.referring_physician),
        facts.institution_name, facts.institution_codes[0].value if facts.institution_codes else "",
        facts.body_part, int(bool(facts.contrast_agent)),
        [text for kind, c in codes for text in (kind, c.value, c.scheme, c.meaning)],
        facts.series_uid, facts.modality, facts.series_number, facts.series_description, facts.series_date,
        facts.series_time, facts.station_name, facts.device_serial,
        web[0] if web is not None else None, web[1] if web is not None else None,
    ]
    if not _sendable(params):
        return None
    return params


def _sendable(params: list[Any]) -> bool:
    """Whether the values bind as the arguments as they are: no NUL and no lone surrogate in text, an
    integer within bigint. Anything else would fail the call itself, outside the function's
    subtransaction, and with it the whole pipeline: such an instance goes the shared way, alone."""
    texts: list[str] = []
    for value in params:
        if type(value) is str:
            texts.append(value)
        elif type(value) is list:
            texts += value
        elif type(value) is int and not -(2 ** 63) <= value < 2 ** 63:
            return False
    joined = "\n".join(texts)
    if "\x00" in joined:
        return False
    try:
        joined.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def commit_batch(index: "PostgresIndex", batch: list["_Pending"], now: str) -> list["_Pending"]:
    """Index what the function can of ``batch`` in one transaction; return the items left to the shared SQL.

    Each handled item gets its ``result`` or its ``error``; ``done`` is the caller's to set.
    """
    from psycopg import OperationalError
    from psycopg.errors import DeadlockDetected

    from pacsnode.errors import IndexError_

    calls: list[tuple["_Pending", list[Any]]] = []
    rest: list["_Pending"] = []
    for item in batch:
        params = _params(item, now)
        if params is None:
            rest.append(item)
        else:
            calls.append((item, params))
    if not calls:
        return rest
    for attempt in range(1, TRIES + 1):
        try:
            rows = _run(index, [params for _, params in calls])
            break
        except Exception as exc:  # nothing of the batch committed
            if isinstance(exc, DeadlockDetected) and attempt < TRIES:
                continue
            if not isinstance(exc, (OperationalError, IndexError_)):  # not a lost server, not the function's
                return rest + [item for item, _ in calls]  # (it catches its own): each in its savepoint
            for item, _ in calls:
                item.result, item.error = None, _unreachable(exc)
            return rest
    for (item, _), (result, existing_path, error) in zip(calls, rows):
        item.result, item.error = None, None
        if result == "stored":
            item.result = (StoreResult.STORED, None)
        elif result == "duplicate":
            path = item.args[1].relative_path
            item.result = (StoreResult.DUPLICATE, None if existing_path == path else path)
        elif result == "existing":
            rest.append(item)
        else:
            item.error = RecordFailed(f"the index refused the instance: {error or result}")
    return rest


def _run(index: "PostgresIndex", calls: list[list[Any]]) -> list[tuple[Any, Any, Any]]:
    """BEGIN, the shared lock, the calls and COMMIT in one pipeline; each call's row once committed."""
    from pacsnode.index.postgres import WRITE_LOCK_KEY

    handle = index.connection()
    conn = handle._live_connection()
    cursors = [conn.cursor() for _ in calls]
    try:
        with conn.pipeline():
            conn.execute("BEGIN")
            conn.execute(f"SELECT pg_advisory_xact_lock_shared({WRITE_LOCK_KEY:d})")
            for cursor, params in zip(cursors, calls):
                cursor.execute(CALL, params)
            conn.execute("COMMIT")
        return [cursor.fetchone() for cursor in cursors]
    finally:
        for cursor in cursors:
            cursor.close()
        handle._give_back(conn)  # rolls back a transaction a failure left open


def _unreachable(exc: Exception) -> Exception:
    """A lost or unreachable server is the index's (Out of Resources: the sender retries later)."""
    from psycopg import OperationalError
    from psycopg.errors import DeadlockDetected

    from pacsnode.errors import IndexError_

    if isinstance(exc, OperationalError) and not isinstance(exc, DeadlockDetected):
        return IndexError_(f"index unreachable: {exc}")
    return exc
