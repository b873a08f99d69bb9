"""The SQLite index: the one place that speaks SQL about patients, studies, series, instances.

One connection per thread (pynetdicom runs each association in its own thread), WAL so that
readers never wait for the writer, and every write serialised twice: a process-wide lock
(no two threads race for SQLite's writer lock) and ``BEGIN IMMEDIATE`` with a busy timeout
(other processes, e.g. ``pacsnode import`` next to ``serve``). That is what keeps "database
is locked" away under many concurrent associations.
"""

from __future__ import annotations

import sqlite3
import threading
import unicodedata
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from pacsnode.errors import IndexError_, StorageFull
from pacsnode.index import delivery, repair_rows, sqlite_ingest
from pacsnode.index.schema import migrate, utc_now
from pacsnode.index.summaries import study_summary
from pacsnode.model import (
    DuplicatePolicy,
    InstanceFacts,
    InstanceLocation,
    Provenance,
    StoredFile,
    StoreResult,
    StudySummary,
)

BUSY_TIMEOUT_S = 60.0


def fold(text: str) -> str:
    """Casefold for case-insensitive person-name matching (full Unicode, unlike SQLite's lower)."""
    return unicodedata.normalize("NFC", text).casefold()


@dataclass
class _Pending:
    """One instance waiting to be indexed by whichever thread commits next."""

    args: tuple[InstanceFacts, StoredFile, str, DuplicatePolicy, Provenance | None, tuple[str, str] | None]
    done: bool = False
    result: tuple[StoreResult, str | None] | None = None
    error: BaseException | None = None


class SqliteIndex:
    """Patient/study/series/instance index in one SQLite file."""

    def __init__(self, path: Path, synchronous: str = "FULL") -> None:
        self.path = path
        self.synchronous = synchronous
        self._local = threading.local()
        self._write_lock = threading.RLock()
        self.relaxed_instance_commits = False  # durability.RowSyncer: instance rows skip the WAL fsync
        self.autocheckpoint_pages = 1000  # SQLite's default; RowSyncer raises it and checkpoints in its thread
        self._queue_lock = threading.Lock()
        self._queue: list[_Pending] = []
        # Every open connection by the thread that owns it. pynetdicom runs each association in
        # a new thread: the connections of threads that ended are closed when the next one is
        # opened, or a long-running server would keep two file descriptors and a page cache
        # per association it ever served.
        self._all_connections: dict[threading.Thread, sqlite3.Connection] = {}
        self._connections_lock = threading.Lock()
        migrate(self.connection())

    # -- connections ---------------------------------------------------------------------
    def connection(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute(f"PRAGMA wal_autocheckpoint={self.autocheckpoint_pages}")
            self._local.conn, self._local.synchronous = conn, self.synchronous
            with self._connections_lock:
                for thread in [t for t in self._all_connections if not t.is_alive()]:
                    self._close_quietly(self._all_connections.pop(thread))
                self._all_connections[threading.current_thread()] = conn
        return conn

    @staticmethod
    def _close_quietly(conn: sqlite3.Connection) -> None:
        try:
            conn.close()
        except sqlite3.Error:
            pass

    def close(self) -> None:
        with self._connections_lock:
            for conn in self._all_connections.values():
                self._close_quietly(conn)
            self._all_connections.clear()
        self._local = threading.local()

    @contextmanager
    def write(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One serialised write transaction.

        ``durable=False`` is for rows that nobody was promised (audit records of reads): in WAL
        mode the commit then skips its fsync. The row still survives a crash of the process (it is
        in the WAL file); only a power loss before the next durable commit can lose it. An fsync
        per audit record cost ~12 ms here, more than the whole WADO frame request it recorded.
        The connection keeps the setting of its last write: a write that needs the other one sets
        it before its BEGIN (two PRAGMAs per relaxed instance commit were a quarter of its statements).
        """
        conn = self.connection()
        wanted = "NORMAL" if not durable and self.synchronous not in ("OFF", "NORMAL") else self.synchronous
        if getattr(self._local, "synchronous", self.synchronous) != wanted:  # the connection keeps the last one set
            conn.execute(f"PRAGMA synchronous={wanted}")
            self._local.synchronous = wanted
        with self._write_transaction(conn) as yielded:
            yield yielded

    @contextmanager
    def _write_transaction(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        with self._write_lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise IndexError_(f"index busy: {exc}") from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                # SQLite itself rolls back after some errors (SQLITE_FULL, I/O errors): a second
                # ROLLBACK would raise and hide the cause. A failed COMMIT is rolled back too, so
                # this thread's connection is never left inside a transaction.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError) and \
                        getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                    raise StorageFull(f"the index cannot grow: {exc}") from exc
                raise

    def write_one(self, sql: str, params: Sequence[Any], durable: bool = True) -> None:
        """One statement in its own write transaction (an audit row): ``write`` with one execute.

        PostgreSQL sends the whole transaction in one round trip (PostgresIndex.write_one).
        """
        with self.write(durable=durable) as conn:
            conn.execute(sql, params)

    def pinned(self) -> AbstractContextManager[None]:
        """The statements of one request on one connection: each thread has its own already."""
        return nullcontext()

    def query(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[sqlite3.Row]:
        return self.connection().execute(sql, params).fetchall()

    # -- instances -----------------------------------------------------------------------
    def has_instance(self, sop_instance_uid: str) -> bool:
        return bool(self.query("SELECT 1 FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,)))

    def used_bytes(self) -> int:
        return int(self.query("SELECT COALESCE(SUM(size), 0) FROM instances")[0][0])

    def study_count(self) -> int:
        """How many studies the index holds (the ``pacsnode_studies`` metric)."""
        return int(self.query("SELECT COUNT(*) FROM studies")[0][0])

    def check_readable(self) -> None:
        """Raise (sqlite3.Error) unless the index answers a read of its migrations (readiness probe)."""
        self.query("SELECT 1 FROM migrations LIMIT 1")

    def record_instance(self, facts: InstanceFacts, stored: StoredFile, calling_ae: str,
                        policy: DuplicatePolicy, provenance: Provenance | None = None, *,
                        web_metadata: tuple[str, str] | None = None) -> tuple[StoreResult, str | None]:
        """Index one placed file; returns only once the transaction holding it has committed.

        Returns the result and, when the policy replaced an older copy (or dropped this one),
        the relative path of the file that no row points to any more, for the caller to
        remove after the commit.

        Group commit: while one thread commits (an fsync of the WAL), instances arriving on
        other associations queue up, and the next thread to get the write lock commits all
        of them in one transaction, each inside its own savepoint so that one failing
        instance fails alone. One association sees no difference; many share the fsync.

        ``provenance`` (who delivered it) is recorded with the row; a rejection note kept for
        this SOP Instance UID hides it in the same transaction.

        ``web_metadata`` (DICOM JSON, frame offsets JSON) is DICOMweb's view of the instance,
        written in the same transaction so that an indexed instance always has it.
        """
        pending = _Pending((facts, stored, calling_ae, policy, provenance, web_metadata))
        with self._queue_lock:
            self._queue.append(pending)
        with self._write_lock:
            if not pending.done:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._commit_batch(batch)
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    def _commit_batch(self, batch: list["_Pending"]) -> None:
        """One transaction for ``batch``, each instance failing alone (see :mod:`.sqlite_ingest`)."""
        sqlite_ingest.commit_batch(self, batch)

    def _record(self, conn: sqlite3.Connection, facts: InstanceFacts, stored: StoredFile, calling_ae: str,
                policy: DuplicatePolicy, provenance: Provenance | None, web_metadata: tuple[str, str] | None,
                now: str) -> tuple[StoreResult, str | None]:
        """The statements for one instance, inside the caller's transaction."""
        result = self._record_rows(conn, facts, stored, calling_ae, policy, provenance, now)
        if web_metadata is not None and result[0] is not StoreResult.DUPLICATE:
            conn.execute("INSERT OR REPLACE INTO instance_metadata (sop_instance_uid, metadata, frames) VALUES (?,?,?)",
                         (facts.sop_instance_uid, *web_metadata))
        return result

    def _record_rows(self, conn: sqlite3.Connection, facts: InstanceFacts, stored: StoredFile, calling_ae: str,
                     policy: DuplicatePolicy, provenance: Provenance | None, now: str) -> tuple[StoreResult, str | None]:
        existing = conn.execute(
            "SELECT i.pk, i.path, i.size, s.study_pk FROM instances i JOIN series s ON s.pk = i.series_pk "
            "WHERE i.sop_instance_uid = ?", (facts.sop_instance_uid,)).fetchone()
        if existing is not None and policy is DuplicatePolicy.KEEP_FIRST:
            return StoreResult.DUPLICATE, (None if existing["path"] == stored.relative_path else stored.relative_path)
        patient_pk = self._upsert_patient(conn, facts)
        study_pk = self._upsert_study(conn, facts, patient_pk, calling_ae, now)
        series_pk, new_series = self._upsert_series(conn, facts, study_pk)
        if existing is not None:
            conn.execute(
                "UPDATE instances SET series_pk=?, sop_class_uid=?, instance_number=?, transfer_syntax=?, "
                "path=?, size=?, sha256=?, number_of_frames=?, lossy=?, specific_character_set=?, "
                "calling_ae=?, received_at=?, deidentified=? WHERE pk=?",
                (series_pk, facts.sop_class_uid, facts.instance_number, facts.transfer_syntax,
                 stored.relative_path, stored.size, stored.sha256, facts.number_of_frames, int(facts.lossy),
                 facts.specific_character_set, calling_ae, now, int(facts.deidentified), existing["pk"]))
            delivery.record_delivery(conn, int(existing["pk"]), provenance)
            self._refresh_counts(conn, {existing["study_pk"], study_pk})
            old = existing["path"] if existing["path"] != stored.relative_path else None
            return StoreResult.REPLACED, old
        cursor = conn.execute(
            "INSERT INTO instances (sop_instance_uid, series_pk, sop_class_uid, instance_number, "
            "transfer_syntax, path, size, sha256, number_of_frames, lossy, specific_character_set, "
            "calling_ae, received_at, deidentified) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (facts.sop_instance_uid, series_pk, facts.sop_class_uid, facts.instance_number,
             facts.transfer_syntax, stored.relative_path, stored.size, stored.sha256, facts.number_of_frames,
             int(facts.lossy), facts.specific_character_set, calling_ae, now, int(facts.deidentified)))
        delivery.record_delivery(conn, int(cursor.lastrowid or 0), provenance)
        self._count_stored(conn, series_pk, study_pk, new_series, stored.size, now)
        return StoreResult.STORED, None

    def _count_stored(self, conn: sqlite3.Connection, series_pk: int, study_pk: int, new_series: bool, size: int,
                      now: str) -> None:
        """Add one stored instance to its series' and study's counts (PostgreSQL defers these to the
        end of its batch: :mod:`pacsnode.index.pg_ingest`)."""
        conn.execute("UPDATE series SET instance_count = instance_count + 1 WHERE pk = ?", (series_pk,))
        conn.execute(
            "UPDATE studies SET instance_count = instance_count + 1, series_count = series_count + ?, "
            "size_bytes = size_bytes + ?, updated_at = ? WHERE pk = ?",
            (int(new_series), size, now, study_pk))
        if new_series:
            self._refresh_modalities(conn, study_pk)

    def _upsert_patient(self, conn: sqlite3.Connection, facts: InstanceFacts) -> int:
        row = conn.execute("SELECT pk, patient_name, birth_date, sex FROM patients WHERE patient_id=? AND issuer=?",
                           (facts.patient_id, facts.issuer_of_patient_id)).fetchone()
        if row is None:
            cursor = conn.execute(
                "INSERT INTO patients (patient_id, issuer, patient_name, patient_name_folded, birth_date, sex) "
                "VALUES (?,?,?,?,?,?)",
                (facts.patient_id, facts.issuer_of_patient_id, facts.patient_name, fold(facts.patient_name),
                 facts.patient_birth_date, facts.patient_sex))
            pk = int(cursor.lastrowid or 0)
        else:
            pk = int(row["pk"])
            if (not row["patient_name"] and facts.patient_name) or (not row["birth_date"] and facts.patient_birth_date) \
                    or (not row["sex"] and facts.patient_sex):
                self._fill_patient(conn, facts, pk)
        self._add_other_ids(conn, facts, pk)
        return pk

    @staticmethod
    def _fill_patient(conn: sqlite3.Connection, facts: InstanceFacts, pk: int) -> None:
        conn.execute(
            "UPDATE patients SET patient_name = CASE WHEN patient_name='' THEN ? ELSE patient_name END, "
            "patient_name_folded = CASE WHEN patient_name='' THEN ? ELSE patient_name_folded END, "
            "birth_date = CASE WHEN birth_date='' THEN ? ELSE birth_date END, "
            "sex = CASE WHEN sex='' THEN ? ELSE sex END WHERE pk=?",
            (facts.patient_name, fold(facts.patient_name), facts.patient_birth_date, facts.patient_sex, pk))

    @staticmethod
    def _add_other_ids(conn: sqlite3.Connection, facts: InstanceFacts, pk: int) -> None:
        for other in facts.other_patient_ids:
            conn.execute("INSERT OR IGNORE INTO patient_other_ids (patient_pk, other_id, other_issuer, type_of_id) "
                         "VALUES (?,?,?,?)", (pk, other.patient_id, other.issuer, other.type_of_id))

    def _upsert_study(self, conn: sqlite3.Connection, facts: InstanceFacts, patient_pk: int, calling_ae: str,
                      now: str) -> int:
        row = conn.execute("SELECT pk FROM studies WHERE study_uid=?", (facts.study_uid,)).fetchone()
        institution_code = facts.institution_codes[0].value if facts.institution_codes else ""
        if row is None:
            cursor = conn.execute(
                "INSERT INTO studies (study_uid, patient_pk, study_date, study_time, accession_number, study_id, "
                "study_description, referring_physician, referring_physician_folded, institution_name, "
                "institution_code, body_parts, contrast, lossy, calling_ae, received_at, updated_at, "
                "specific_character_set, deidentified) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (facts.study_uid, patient_pk, facts.study_date, facts.study_time, facts.accession_number,
                 facts.study_id, facts.study_description, facts.referring_physician,
                 fold(facts.referring_physician), facts.institution_name, institution_code, facts.body_part,
                 int(bool(facts.contrast_agent)), int(facts.lossy), calling_ae, now, now,
                 facts.specific_character_set, int(facts.deidentified)))
            pk = int(cursor.lastrowid or 0)
        else:
            pk = int(row["pk"])
            self._fill_study(conn, facts, pk, institution_code)
        self._add_study_codes(conn, facts, pk)
        return pk

    @staticmethod
    def _fill_study(conn: sqlite3.Connection, facts: InstanceFacts, pk: int, institution_code: str) -> None:
        # Only when something changes: an UPDATE that matches locks the study row until the commit
        # (on PostgreSQL, two nodes storing into one study would otherwise queue at every instance).
        contrast, lossy, deidentified = int(bool(facts.contrast_agent)), int(facts.lossy), int(facts.deidentified)
        conn.execute(
            "UPDATE studies SET institution_name = CASE WHEN institution_name='' THEN ? ELSE institution_name END,"
            " institution_code = CASE WHEN institution_code='' THEN ? ELSE institution_code END,"
            " contrast = MAX(contrast, ?), lossy = MAX(lossy, ?), deidentified = MAX(deidentified, ?) WHERE pk=?"
            " AND ((institution_name='' AND ?<>'') OR (institution_code='' AND ?<>'') OR contrast < ?"
            " OR lossy < ? OR deidentified < ?)",
            (facts.institution_name, institution_code, contrast, lossy, deidentified, pk,
             facts.institution_name, institution_code, contrast, lossy, deidentified))

    @staticmethod
    def _add_study_codes(conn: sqlite3.Connection, facts: InstanceFacts, pk: int) -> None:
        for kind, codes in (("procedure", facts.procedure_codes), ("institution", facts.institution_codes)):
            for code in codes:
                conn.execute("INSERT OR IGNORE INTO study_codes (study_pk, kind, code_value, scheme, meaning) "
                             "VALUES (?,?,?,?,?)", (pk, kind, code.value, code.scheme, code.meaning))

    def _upsert_series(self, conn: sqlite3.Connection, facts: InstanceFacts, study_pk: int) -> tuple[int, bool]:
        row = conn.execute("SELECT pk FROM series WHERE series_uid=?", (facts.series_uid,)).fetchone()
        if row is not None:
            return int(row["pk"]), False
        cursor = conn.execute(
            "INSERT INTO series (series_uid, study_pk, modality, body_part, series_number, series_description, "
            "series_date, series_time, institution_name, station_name, device_serial) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (facts.series_uid, study_pk, facts.modality, facts.body_part, facts.series_number,
             facts.series_description, facts.series_date, facts.series_time, facts.institution_name,
             facts.station_name, facts.device_serial))
        return int(cursor.lastrowid or 0), True

    def _refresh_modalities(self, conn: sqlite3.Connection, study_pk: int) -> None:
        rows = conn.execute("SELECT DISTINCT modality, body_part FROM series WHERE study_pk=?", (study_pk,)).fetchall()
        modalities = sorted({r["modality"] for r in rows if r["modality"]})
        body_parts = sorted({r["body_part"] for r in rows if r["body_part"]})
        conn.execute("UPDATE studies SET modalities=?, body_parts=? WHERE pk=?",
                     ("\\".join(modalities), "\\".join(body_parts), study_pk))

    def _refresh_counts(self, conn: sqlite3.Connection, study_pks: set[int]) -> None:
        """Recount after a replace or a removal (the instance may have moved series or study).

        Series and studies left without instances are dropped, so that neither a stale
        modality nor an empty study is listed.
        """
        for study_pk in study_pks:
            conn.execute("UPDATE series SET instance_count = (SELECT COUNT(*) FROM instances i "
                         "WHERE i.series_pk = series.pk) WHERE study_pk=?", (study_pk,))
            conn.execute("DELETE FROM series WHERE study_pk=? AND instance_count = 0", (study_pk,))
            conn.execute(
                "UPDATE studies SET series_count = (SELECT COUNT(*) FROM series WHERE study_pk=studies.pk "
                "AND instance_count > 0), instance_count = (SELECT COALESCE(SUM(instance_count),0) FROM series "
                "WHERE study_pk=studies.pk), size_bytes = (SELECT COALESCE(SUM(i.size),0) FROM instances i "
                "JOIN series se ON se.pk=i.series_pk WHERE se.study_pk=studies.pk), updated_at=? WHERE pk=?",
                (utc_now(), study_pk))
            self._refresh_modalities(conn, study_pk)
            conn.execute("DELETE FROM studies WHERE pk=? AND instance_count = 0", (study_pk,))

    # -- listings ------------------------------------------------------------------------
    def studies(self, patient_id: str | None = None, study_uids: list[str] | None = None) -> list[StudySummary]:
        sql = ("SELECT s.*, p.patient_id, p.issuer, p.patient_name, p.birth_date, p.sex FROM studies s "
               "JOIN patients p ON p.pk = s.patient_pk")
        where: list[str] = []
        params: list[Any] = []
        if patient_id is not None:
            where.append("p.patient_id = ?")
            params.append(patient_id)
        if study_uids is not None:
            where.append(f"s.study_uid IN ({','.join('?' * len(study_uids))})")
            params.extend(study_uids)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY s.study_date DESC, s.study_time DESC, s.study_uid"
        return [study_summary(row) for row in self.query(sql, params)]

    def study_series(self, study_uid: str) -> list[dict[str, Any]]:
        """Series of a study with their instances (for ``study show``)."""
        series = self.query(
            "SELECT se.* FROM series se JOIN studies s ON s.pk = se.study_pk WHERE s.study_uid=? "
            "ORDER BY se.series_number, se.series_uid", (study_uid,))
        out = []
        for se in series:
            instances = self.query(
                "SELECT sop_instance_uid, sop_class_uid, instance_number, transfer_syntax, size, sha256, path, "
                "calling_ae, received_at, delivered_by, delivered_institution, hidden FROM instances "
                "WHERE series_pk=? ORDER BY instance_number, sop_instance_uid",
                (se["pk"],))
            item = {k: se[k] for k in se.keys() if k not in ("pk", "study_pk")}
            item["instances"] = [dict(i) for i in instances]
            out.append(item)
        return out

    def study_codes(self, study_uid: str, kind: str) -> list[tuple[str, str, str]]:
        rows = self.query("SELECT c.code_value, c.scheme, c.meaning FROM study_codes c JOIN studies s "
                          "ON s.pk=c.study_pk WHERE s.study_uid=? AND c.kind=?", (study_uid, kind))
        return [(r[0], r[1], r[2]) for r in rows]

    def patient_other_ids(self, patient_id: str, issuer: str) -> list[tuple[str, str]]:
        rows = self.query("SELECT o.other_id, o.other_issuer FROM patient_other_ids o JOIN patients p "
                          "ON p.pk=o.patient_pk WHERE p.patient_id=? AND p.issuer=?", (patient_id, issuer))
        return [(r[0], r[1]) for r in rows]

    def locations(self, study_uid: str, series_uid: str | None = None,
                  sop_instance_uids: list[str] | None = None, visible_only: bool = False) -> list[InstanceLocation]:
        """Instance files of a study (or one series, or listed instances), for retrieval.

        ``visible_only`` leaves out what peers never see (rejected instances, rejection notes).
        """
        sql = ("SELECT i.sop_instance_uid, i.sop_class_uid, i.transfer_syntax, i.path, s.study_uid, se.series_uid, "
               "i.size FROM instances i JOIN series se ON se.pk=i.series_pk JOIN studies s ON s.pk=se.study_pk "
               "WHERE s.study_uid=?")
        params: list[Any] = [study_uid]
        if series_uid:
            sql += " AND se.series_uid=?"
            params.append(series_uid)
        if sop_instance_uids:
            sql += f" AND i.sop_instance_uid IN ({','.join('?' * len(sop_instance_uids))})"
            params.extend(sop_instance_uids)
        if visible_only:
            sql += " AND i.hidden = ''"
        sql += " ORDER BY se.series_number, i.instance_number"
        return [InstanceLocation(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in self.query(sql, params)]

    def instance_files(self, sop_instance_uids: list[str]) -> dict[str, sqlite3.Row]:
        """Stored-file rows of the listed instances (storage commitment), by SOP Instance UID."""
        rows: dict[str, sqlite3.Row] = {}
        for start in range(0, len(sop_instance_uids), 500):  # SQLite's host-parameter limit
            chunk = sop_instance_uids[start:start + 500]
            for row in self.query(
                    "SELECT sop_instance_uid, sop_class_uid, path, size, sha256, calling_ae, delivered_by, delivered_peer"
                    f" FROM instances WHERE sop_instance_uid IN ({','.join('?' * len(chunk))})", chunk):
                rows[row["sop_instance_uid"]] = row
        return rows

    def all_instance_files(self) -> list[sqlite3.Row]:
        return self.query("SELECT pk, sop_instance_uid, path, size, sha256 FROM instances")

    def indexed_paths(self, paths: list[str]) -> set[str]:
        """Which of ``paths`` an instance row points to now (``check`` re-asks before deleting)."""
        found: set[str] = set()
        for start in range(0, len(paths), 500):
            chunk = paths[start:start + 500]
            found.update(str(r[0]) for r in self.query(
                f"SELECT path FROM instances WHERE path IN ({','.join('?' * len(chunk))})", tuple(chunk)))
        return found

    def delete_rows_whose_file_is_gone(self, candidates: list[tuple[int, str]],
                                       is_missing: Callable[[str], bool]) -> list[str]:
        """See :func:`pacsnode.index.repair_rows.delete_rows_whose_file_is_gone`."""
        return repair_rows.delete_rows_whose_file_is_gone(self, candidates, is_missing)

    def delete_instance_rows(self, pks: list[int]) -> None:
        """Drop rows whose file is gone (``check --repair``), keeping aggregates right."""
        if pks:
            with self.write() as conn:
                repair_rows.delete_rows(self, conn, pks)

    # -- backup (the SQL is in ``index/snapshot.py``) ---------------------------------------
    @staticmethod
    def forget_files_in_copy(path: Path, relative_paths: list[str]) -> dict[str, int]:
        """See :func:`pacsnode.index.snapshot.forget_files_in_copy`."""
        from pacsnode.index import snapshot

        return snapshot.forget_files_in_copy(path, relative_paths)

    def backup_to(self, path: Path) -> tuple[list[tuple[str, int, str]], dict[str, int]]:
        """See :func:`pacsnode.index.snapshot.backup_to`."""
        from pacsnode.index import snapshot

        return snapshot.backup_to(self, path)
