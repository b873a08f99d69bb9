"""SQLite's group commit of stored instances, and the few statements of the common instance.

Most instances arrive in a series this index already holds, under the study and patient it
already names. For those, one read asks everything the generic statements of
:meth:`SqliteIndex._record_rows` ask one by one (is the UID held, the series, its study and
patient, what of them an instance may fill in), and the new row is written with who delivered
it and whether a kept rejection note hides it in the INSERT itself: BEGIN, one read, one INSERT,
the two counts, COMMIT. Anything else (the first instance of a series, a replaced copy, a series
under another study, a study under another patient) takes the generic statements, which decide
exactly as before. PostgreSQL keeps the generic statements (``pg_ingest`` pipelines them).

A batch of one instance needs no savepoint: its failure rolls back the transaction, which held
nothing else. Each failure is still the instance's own (``_Pending.error``).
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from pacsnode.index import rejections
from pacsnode.index.schema import utc_now
from pacsnode.model import DuplicatePolicy, InstanceFacts, Provenance, StoredFile, StoreResult

if TYPE_CHECKING:
    from pacsnode.index.sqlite import SqliteIndex, _Pending

#: The UID's row if held (ex_*), and the series with its study and patient when they are the
#: instance's own (a series under another study UID, or a study under another patient, reads NULL).
_LOOKUP = (
    "SELECT ex.pk AS ex_pk, ex.path AS ex_path, se.pk AS series_pk, st.pk AS study_pk, p.pk AS patient_pk, "
    "p.patient_name, p.birth_date, p.sex, st.institution_name, st.institution_code, st.contrast, st.lossy, "
    "st.deidentified FROM (SELECT 1) LEFT JOIN instances ex ON ex.sop_instance_uid = ? "
    "LEFT JOIN series se ON se.series_uid = ? LEFT JOIN studies st ON st.pk = se.study_pk AND st.study_uid = ? "
    "LEFT JOIN patients p ON p.pk = st.patient_pk AND p.patient_id = ? AND p.issuer = ?")

_INSERT = (
    "INSERT INTO instances (sop_instance_uid, series_pk, sop_class_uid, instance_number, transfer_syntax, path, size, "
    "sha256, number_of_frames, lossy, specific_character_set, calling_ae, received_at, deidentified, delivered_by, "
    f"delivered_peer, delivered_institution, hidden) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,"
    f"{rejections.HIDDEN_ON_ARRIVAL})")


def commit_batch(index: "SqliteIndex", batch: list["_Pending"]) -> None:
    """Commit ``batch`` in one transaction, each instance failing alone (SqliteIndex.record_instance)."""
    now = utc_now()
    try:
        with index.write(durable=not index.relaxed_instance_commits) as conn:
            if len(batch) == 1:
                batch[0].result = record(index, conn, *batch[0].args, now)
            for item in batch if len(batch) > 1 else ():
                conn.execute("SAVEPOINT instance")
                try:
                    item.result = record(index, conn, *item.args, now)
                    conn.execute("RELEASE instance")
                except Exception as exc:  # this instance fails alone; the batch goes on
                    if not conn.in_transaction:  # SQLite undid the whole transaction (disk full, I/O)
                        raise
                    conn.execute("ROLLBACK TO instance")
                    conn.execute("RELEASE instance")
                    item.error = exc
    except Exception as exc:  # the commit itself failed: nothing of the batch is indexed
        for item in batch:
            item.error = item.error or exc
            item.result = None
    finally:
        for item in batch:
            item.done = True


def record(index: "SqliteIndex", conn: sqlite3.Connection, facts: InstanceFacts, stored: StoredFile,
           calling_ae: str, policy: DuplicatePolicy, provenance: Provenance | None,
           web_metadata: tuple[str, str] | None, now: str) -> tuple[StoreResult, str | None]:
    """One instance inside the caller's transaction: the few statements when they suffice, else the generic ones."""
    row = conn.execute(_LOOKUP, (facts.sop_instance_uid, facts.series_uid, facts.study_uid, facts.patient_id,
                                 facts.issuer_of_patient_id)).fetchone()
    if row["ex_pk"] is not None and policy is DuplicatePolicy.KEEP_FIRST:
        result: tuple[StoreResult, str | None] = (
            StoreResult.DUPLICATE, None if row["ex_path"] == stored.relative_path else stored.relative_path)
    elif row["ex_pk"] is None and row["patient_pk"] is not None:
        result = _add_to_series(index, conn, row, facts, stored, calling_ae, provenance, now)
    else:
        return index._record(conn, facts, stored, calling_ae, policy, provenance, web_metadata, now)
    if web_metadata is not None and result[0] is not StoreResult.DUPLICATE:
        conn.execute("INSERT OR REPLACE INTO instance_metadata (sop_instance_uid, metadata, frames) VALUES (?,?,?)",
                     (facts.sop_instance_uid, *web_metadata))
    return result


def _add_to_series(index: "SqliteIndex", conn: sqlite3.Connection, row: sqlite3.Row, facts: InstanceFacts,
                   stored: StoredFile, calling_ae: str, provenance: Provenance | None,
                   now: str) -> tuple[StoreResult, str | None]:
    """A new instance of a held series (its study and patient its own): what _record_rows writes for it."""
    patient_pk, study_pk, series_pk = int(row["patient_pk"]), int(row["study_pk"]), int(row["series_pk"])
    # _upsert_patient's and _upsert_study's updates, sent only when their own conditions hold
    if (not row["patient_name"] and facts.patient_name) or (not row["birth_date"] and facts.patient_birth_date) \
            or (not row["sex"] and facts.patient_sex):
        index._fill_patient(conn, facts, patient_pk)
    index._add_other_ids(conn, facts, patient_pk)
    institution_code = facts.institution_codes[0].value if facts.institution_codes else ""
    if (row["institution_name"] == "" and facts.institution_name != "") \
            or (row["institution_code"] == "" and institution_code != "") \
            or row["contrast"] < int(bool(facts.contrast_agent)) or row["lossy"] < int(facts.lossy) \
            or row["deidentified"] < int(facts.deidentified):
        index._fill_study(conn, facts, study_pk, institution_code)
    index._add_study_codes(conn, facts, study_pk)
    delivered = ("", "", "") if provenance is None else \
        (provenance.kind.value, provenance.peer or provenance.aet, provenance.institution)
    conn.execute(_INSERT, (
        facts.sop_instance_uid, series_pk, facts.sop_class_uid, facts.instance_number, facts.transfer_syntax,
        stored.relative_path, stored.size, stored.sha256, facts.number_of_frames, int(facts.lossy),
        facts.specific_character_set, calling_ae, now, int(facts.deidentified), *delivered,
        facts.sop_instance_uid, delivered[2]))
    index._count_stored(conn, series_pk, study_pk, False, stored.size, now)
    return StoreResult.STORED, None


def checkpoint(index: "SqliteIndex") -> None:
    """Copy the WAL into the database file on this thread's connection (PASSIVE: never waits for a
    writer); ``durability.RowSyncer`` runs it so that no store's commit does (see there)."""
    index.connection().execute("PRAGMA wal_checkpoint(PASSIVE)")
