"""The PostgreSQL index: the same SQL as the SQLite one, through a connection that speaks PostgreSQL.

:class:`PostgresIndex` is :class:`~pacsnode.index.sqlite.SqliteIndex` with another connection:
every statement of ``pacsnode/index/`` runs through :class:`PgConnection`, which translates it
(:mod:`pacsnode.index.dialect`) and borrows a connection from a psycopg-pool pool:

* outside a transaction each statement borrows a connection (autocommit), reads every row and
  gives the connection back, so a thousand association threads do not hold a thousand
  PostgreSQL backends;
* ``BEGIN IMMEDIATE`` (SQLite: take the writer lock now) keeps one connection until COMMIT or
  ROLLBACK and takes a transaction-scoped advisory lock, so writers are serialised across every
  process and machine on this database exactly as SQLite serialises them on one file. Ingest
  batches (group commit) take it *shared*: they run side by side on every node, made race-free
  by UNIQUE constraints and row locks (:mod:`pacsnode.index.pg_ingest`), while every other
  writer still has the database to itself.

Rows behave like ``sqlite3.Row`` (by index, by name, ``keys()``, ``dict(row)``). The URL's
password is never logged: :func:`redact` is what error messages show.
"""

from __future__ import annotations

import re
import select
import threading
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

from pacsnode.errors import IndexError_
from pacsnode.index import pg_pipeline
from pacsnode.index.dialect import is_ddl, pg_ddl, pg_params, pg_statement
from pacsnode.index.sqlite import SqliteIndex

#: The advisory lock key every writer takes (``pacsnode`` in ASCII): one writer at a time.
WRITE_LOCK_KEY = 0x7061_6373_6E6F_6465 & 0x7FFF_FFFF_FFFF_FFFF
POOL_MAX = 16
CONNECT_TIMEOUT_S = 10.0
#: Tries of a read or a BEGIN on pooled connections found dead (each try drops one; a pool holds POOL_MAX).
ATTEMPTS = POOL_MAX + 1


def redact(url: str) -> str:
    """The URL without its password (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[-1]}"))


class Row(tuple):
    """A result row that reads like ``sqlite3.Row``: ``row[0]``, ``row["name"]``, ``dict(row)``."""

    _names: dict[str, int]

    def __new__(cls, values: Sequence[Any], names: dict[str, int]) -> "Row":
        row = super().__new__(cls, [int(v) if type(v) is Decimal and v == v.to_integral_value() else v
                                    for v in values])
        row._names = names
        return row

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._names)


def _row_factory(cursor: Any) -> Any:
    """Rows that read like sqlite3.Row; column names straight from the result (``description`` builds
    a Column object per column per statement: ~6 % of the node's CPU for a C-FIND of 18 columns)."""
    result = cursor.pgresult
    names: dict[str, int] = {}
    if result is not None:
        encoding = cursor.connection.info.encoding
        for i in range(result.nfields - 1, -1, -1):  # the first of two equal names wins, as in sqlite3
            names[(result.fname(i) or b"").decode(encoding)] = i
    return lambda values: Row(values, names)


class PgCursor:
    """The rows of one executed statement, already read (``fetchone``/``fetchall``/iteration)."""

    def __init__(self, rows: list[Row], rowcount: int, lastrowid: int | None) -> None:
        self._rows, self.rowcount, self.lastrowid = rows, rowcount, lastrowid

    def fetchone(self) -> Row | None:
        return self._rows.pop(0) if self._rows else None

    def fetchall(self) -> list[Row]:
        rows, self._rows = self._rows, []
        return rows

    def __iter__(self) -> Iterator[Row]:
        return iter(self.fetchall())


class PgConnection:
    """One thread's handle on the pool, with the sqlite3.Connection methods the index uses."""

    dialect = "postgresql"

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._held: Any = None  # the connection of the open transaction
        self._pinned: Any = None  # the connection one request keeps for all its statements (pinned())
        self._relaxed = False  # PRAGMA synchronous=NORMAL: commits need not wait for the WAL flush
        self.shared_lock = False  # the next BEGINs take the write lock shared (ingest batches: pg_ingest)
        self.defer_writes = False  # an ingest batch: writes go out with the next read (pg_pipeline)
        self._queue: pg_pipeline.Queued = []  # the deferred writes of the open transaction
        self._kept: dict[tuple[str, tuple[Any, ...]], list[Row]] = {}  # rows read ahead (read_ahead)

    @property
    def in_transaction(self) -> bool:
        return self._held is not None

    @contextmanager
    def pinned(self) -> Iterator[None]:
        """Keep one pool connection for every statement of the block (one request: a C-FIND).

        Outside a pin each statement borrows a connection (and the audit row's transaction another);
        a C-FIND by Patient ID paid eight round trips (a ping per borrow then; BEGIN, lock, SET
        LOCAL, INSERT, COMMIT). Inside, the statements and the write transactions of this thread
        (an audit row) run on the pinned connection; nesting is a no-op.
        """
        if self._pinned is not None or self._held is not None:
            yield
            return
        conn = self._live_connection()
        self._pinned = conn
        try:
            yield
        finally:
            self._pinned = None
            if self._held is conn:
                self._held = None
            self._give_back(conn)

    def _live_connection(self) -> Any:
        """A live pool connection: one whose backend went away (PostgreSQL restarted) is dropped."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                conn = self._pool.getconn(timeout=CONNECT_TIMEOUT_S)
            except Exception as exc:
                _raise_unreachable(exc)
                raise
            try:
                _check_connection(conn)
                return conn
            except Exception as exc:
                self._give_back(conn)  # the pool drops a closed connection
                if attempt == ATTEMPTS:
                    _raise_unreachable(exc)
                    raise
        raise AssertionError("unreachable")

    def _begin_pinned(self) -> PgCursor:
        """BEGIN (and the advisory lock) on the pinned connection, in one round trip."""
        try:
            self._pinned.execute(_begin_sql(self._relaxed, self.shared_lock))
        except Exception as exc:
            self._idle(self._pinned)
            raise IndexError_(f"index busy or unreachable: {exc}") from exc
        self._held = self._pinned
        return PgCursor([], -1, None)

    def execute(self, sql: str, params: Sequence[Any] | None = ()) -> PgCursor:
        word = sql.strip().upper()
        if word.startswith("PRAGMA"):
            return self._pragma(word)
        if word == "BEGIN IMMEDIATE":
            return self._begin()
        if word in ("COMMIT", "ROLLBACK"):
            return self._end(word)
        text = pg_ddl(sql) if is_ddl(sql) else pg_statement(sql)
        if self._held is not None and self.defer_writes:
            return self._run_deferring(self._held, text, params)
        if self._held is not None or self._pinned is not None:
            return self._run(self._held if self._held is not None else self._pinned, text, params)
        try:
            return self._run_pooled(text, params)
        except Exception as exc:
            _raise_unreachable(exc)
            raise

    def _run_pooled(self, text: str, params: Sequence[Any] | None) -> PgCursor:
        """One autocommit statement on a pooled connection; a read found on a dead connection runs again.

        The pool does not ping a connection at each checkout (that doubled the round trips of every
        statement outside a transaction: ~15 % of an ingest's time on two nodes). A connection that
        died since its last use (PostgreSQL restarted) fails at its next statement instead: the pool
        drops it, and a read is simply asked again on the next one. A write is not repeated: it may
        have committed before the connection broke; its caller sees the failure.
        """
        from psycopg import OperationalError

        for attempt in range(1, ATTEMPTS + 1):
            with self._pool.connection(timeout=CONNECT_TIMEOUT_S) as conn:
                try:
                    return self._run(conn, text, params)
                except OperationalError:
                    if attempt == ATTEMPTS or not conn.closed or not _is_read(text):
                        raise
        raise AssertionError("unreachable")

    def executemany(self, sql: str, seq: Sequence[Sequence[Any]]) -> PgCursor:
        count = 0
        for params in seq:
            count += self.execute(sql, params).rowcount
        return PgCursor([], count, None)

    @staticmethod
    def _run(conn: Any, text: str, params: Sequence[Any] | None) -> PgCursor:
        with conn.cursor(row_factory=_row_factory) as cur:
            cur.execute(text, pg_params(params) if params else None)
            result = cur.pgresult  # not ``description``: it builds a Column per column (~40 us for a C-FIND's 18)
            rows = cur.fetchall() if result is not None and result.status == _TUPLES_OK else []
            return _cursor(rows, cur.rowcount, text)

    def read_ahead(self, reads: pg_pipeline.Queued) -> None:
        """Inside an ingest batch: send these reads (SQLite dialect) with the queued writes in one
        pipeline and keep their rows for the same statements asked later (see pg_pipeline)."""
        if self._held is None or not self.defer_writes:
            return
        texts = [(pg_statement(sql), params) for sql, params in reads]
        queue, self._queue = self._queue, []
        self._kept = {}  # an earlier instance's reads are never served to this one
        rows = pg_pipeline.run_reads(self._held, queue, texts, pg_params, _row_factory)
        for (text, params), found in zip(texts, rows):
            key = pg_pipeline.cache_key(text, params)
            if key is not None:
                self._kept[key] = found

    def _run_deferring(self, conn: Any, text: str, params: Sequence[Any] | None) -> PgCursor:
        """Inside an ingest batch: queue a write, or send the queue with a statement that is answered."""
        if self._kept:
            table = pg_pipeline.written_table(text)
            if table:  # this transaction's own write: a kept read of that table is stale
                self._kept = {key: rows for key, rows in self._kept.items() if not _mentions(key[0], table)}
            elif pg_pipeline.is_rollback_to(text) or text.lstrip()[:7].upper() == "RELEASE":
                self._kept = {}  # the instance is over (or undone): its reads go
            else:
                key = pg_pipeline.cache_key(text, params)
                kept = self._kept.pop(key, None) if key is not None else None
                if kept is not None:
                    return _cursor(list(kept), len(kept), text)
        if pg_pipeline.deferrable(text):
            self._queue.append((text, params))
            return PgCursor([], -1, None)
        queue, self._queue = self._queue, []
        if pg_pipeline.is_rollback_to(text):
            queue = pg_pipeline.before_rollback_to(queue, text)
        if not queue:
            return self._run(conn, text, params)
        rows, count = pg_pipeline.run_pipelined(conn, queue, text, params, pg_params, _row_factory)
        return _cursor(rows, count, text)

    def write_one(self, sql: str, params: Sequence[Any], relaxed: bool) -> None:
        """One statement in its own transaction, sent as one message in one round trip (an audit row).

        BEGIN, ``synchronous_commit = off`` when ``relaxed``, the statement and COMMIT go out as
        one simple-protocol query with the parameters bound client-side (psycopg's ClientCursor
        quotes them): an audit row per C-FIND cost five round trips, each a wake-up of the server
        process on a busy machine, and as a pipeline of five statements a third of the node's CPU
        per C-FIND. It takes no advisory lock: an appended row reads nothing, so no other writer
        can be half-done under it, and the exclusive lock made every C-FIND's audit row wait for
        every ingest batch in flight on any node (they hold it shared until their COMMIT's flush).
        A failing statement skips the rest and leaves the transaction aborted: it is rolled back
        before the connection is used again.
        """
        from psycopg import ClientCursor

        if self._held is not None:
            raise IndexError_("a write transaction is already open on this thread")
        conn = self._pinned
        try:
            if conn is None:
                conn = self._live_connection()
            with ClientCursor(conn) as cur:
                cur.execute(f"BEGIN; {_RELAXED if relaxed else ''}{pg_statement(sql)}; COMMIT", pg_params(params))
        except Exception as exc:
            _raise_unreachable(exc)
            raise
        finally:
            if conn is not None and conn is not self._pinned:
                self._give_back(conn)
            elif conn is not None:
                self._idle(conn)

    def _idle(self, conn: Any) -> None:
        """Roll back whatever a failure left open on the pinned connection (it stays in use)."""
        try:
            if not conn.closed and conn.info.transaction_status != 0:
                conn.execute("ROLLBACK")
        except Exception:
            pass

    def _pragma(self, word: str) -> PgCursor:
        """SQLite's PRAGMAs: ``synchronous`` NORMAL/OFF (a write nobody was promised, e.g. an audit
        row) becomes ``synchronous_commit = off`` for the next transactions; the rest mean nothing here."""
        setting = word.replace(" ", "")
        if setting.startswith("PRAGMASYNCHRONOUS="):
            self._relaxed = setting.split("=", 1)[1] in ("NORMAL", "OFF", "0", "1")
        return PgCursor([], -1, None)

    def _begin(self) -> PgCursor:
        if self._held is not None:
            raise IndexError_("a write transaction is already open on this thread")
        if self._pinned is not None:  # a pinned request (a C-FIND's audit row) writes on its connection
            return self._begin_pinned()
        for attempt in range(1, ATTEMPTS + 1):
            try:
                conn = self._pool.getconn(timeout=CONNECT_TIMEOUT_S)
            except Exception as exc:
                raise IndexError_(f"index unreachable: {exc}") from exc
            lock = "pg_advisory_xact_lock_shared" if self.shared_lock else "pg_advisory_xact_lock"
            try:  # one round trip: no parameters, so both statements go as one simple query
                conn.execute(f"BEGIN; SELECT {lock}({WRITE_LOCK_KEY:d})")
            except Exception as exc:  # a connection that died since its last use: once more on a fresh one
                self._give_back(conn)
                if attempt == ATTEMPTS or not conn.closed:
                    raise IndexError_(f"index busy or unreachable: {exc}") from exc
                continue
            try:
                if self._relaxed:
                    conn.execute("SET LOCAL synchronous_commit = off")
            except Exception as exc:
                self._give_back(conn)
                raise IndexError_(f"index busy or unreachable: {exc}") from exc
            self._held = conn
            return PgCursor([], -1, None)
        raise AssertionError("unreachable")

    def _end(self, word: str) -> PgCursor:
        conn, self._held = self._held, None
        queue, self._queue, self._kept = self._queue, [], {}
        if conn is None:
            return PgCursor([], -1, None)
        try:
            if queue and word == "COMMIT":  # the deferred writes and COMMIT in one round trip
                pg_pipeline.run_pipelined(conn, queue, word, None, pg_params, _row_factory)
            else:  # ROLLBACK: the queued writes are simply not sent
                conn.execute(word)
        finally:
            if conn is not self._pinned:
                self._give_back(conn)
            else:  # a failed COMMIT: the pinned connection goes on idle, never inside a transaction
                self._idle(conn)
        return PgCursor([], -1, None)

    def _give_back(self, conn: Any) -> None:
        try:
            if not conn.closed and conn.info.transaction_status != 0:  # not idle: never pool a dirty one
                conn.execute("ROLLBACK")
        except Exception:
            pass
        self._pool.putconn(conn)

    def close(self) -> None:
        if self._held is not None:
            self._end("ROLLBACK")


def _mentions(text: str, table: str) -> bool:
    return re.search(rf"\b{re.escape(table)}\b", text, re.IGNORECASE) is not None


def _cursor(rows: list[Row], rowcount: int, text: str) -> PgCursor:
    return PgCursor(rows, rowcount, int(rows[0][0]) if rows and text.endswith("RETURNING pk") else None)


def _is_read(text: str) -> bool:
    return text.lstrip()[:6].upper() == "SELECT"


def _begin_sql(relaxed: bool, shared: bool = False) -> str:
    """BEGIN, the writers' advisory lock and (``relaxed``) no WAL flush at commit, in one round trip.

    No parameters: psycopg sends it with the simple query protocol, which runs the statements in
    order in one message (three round trips before; each one a wake-up of the server process).
    """
    text = f"BEGIN; SELECT {'pg_advisory_xact_lock_shared' if shared else 'pg_advisory_xact_lock'}({WRITE_LOCK_KEY:d})"
    return text + "; SET LOCAL synchronous_commit = off" if relaxed else text


_RELAXED = "SET LOCAL synchronous_commit = off; "
_TUPLES_OK = 2  # psycopg.pq.ExecStatus.TUPLES_OK: the statement returned rows (maybe none)


def _check_connection(conn: Any) -> None:
    """Check a connection before a pinned request uses it, without a round trip when nothing arrived.

    A healthy idle connection has nothing to read; a server that restarted, crashed or ended the
    backend has closed the socket or sent its farewell, so it is readable: only then the full
    check (a round trip, raising on a dead connection). A pinned C-FIND cannot simply ask a failed
    read again on another connection (its statements share one), so it checks first.
    """
    from psycopg_pool import ConnectionPool

    if conn.closed or select.select([conn.fileno()], [], [], 0)[0]:
        ConnectionPool.check_connection(conn)


def _raise_unreachable(exc: Exception) -> None:
    from psycopg import OperationalError
    from psycopg_pool import PoolTimeout

    if isinstance(exc, (PoolTimeout, OperationalError)):
        raise IndexError_(f"index unreachable: {exc}") from exc


class PostgresIndex(SqliteIndex):
    """The index in a PostgreSQL database (``[index] url``): same statements, PostgreSQL's engine."""

    def __init__(self, url: str) -> None:
        from psycopg_pool import ConnectionPool

        self.url = url
        self._pool = ConnectionPool(url, min_size=1, max_size=POOL_MAX, open=False, name="pacsnode-index",
                                    kwargs={"autocommit": True, "application_name": "pacsnode"})
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except Exception as exc:
            self._pool.close()
            raise IndexError_(f"cannot reach the PostgreSQL index at {redact(url)}: {exc}") from exc
        # SqliteIndex sets up the write lock and the group-commit queue, then migrates through
        # self.connection(), which is this class's pooled PgConnection: no file is opened.
        super().__init__(Path(redact(url)))

    @property
    def backend(self) -> str:
        return "postgresql"

    def _commit_batch(self, batch: list[Any]) -> None:
        """Group commit on PostgreSQL: see :mod:`pacsnode.index.pg_ingest`."""
        from pacsnode.index import pg_ingest

        pg_ingest.commit_batch(self, batch)

    def _count_stored(self, conn: Any, series_pk: int, study_pk: int, new_series: bool, size: int,
                      now: str) -> None:
        from pacsnode.index import pg_ingest

        if not pg_ingest.defer_counts(self, series_pk, study_pk, new_series, size):
            super()._count_stored(conn, series_pk, study_pk, new_series, size, now)
        elif new_series:
            self._refresh_modalities(conn, study_pk)

    def _refresh_counts(self, conn: Any, study_pks: set[int]) -> None:
        from pacsnode.index import pg_ingest

        pg_ingest.forget_counts(self, study_pks)  # the recount includes this batch's instances
        super()._refresh_counts(conn, study_pks)

    def connection(self) -> PgConnection:  # type: ignore[override]
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = PgConnection(self._pool)
        return conn

    def write_one(self, sql: str, params: Sequence[Any], durable: bool = True) -> None:
        """One statement (an appended audit row) in its own transaction, in one round trip (PgConnection.write_one).

        Not under the process's write lock nor the writers' advisory lock: an INSERT that reads
        nothing needs neither, and a C-FIND calls this holding its pinned connection; waiting for
        the process lock there could starve the lock's holder (a store commit) of a pool connection.
        """
        self.connection().write_one(sql, params, relaxed=not durable)

    def pinned(self) -> Any:
        """One pool connection for this thread's statements in the block (see PgConnection.pinned)."""
        return self.connection().pinned()

    def close(self) -> None:
        self._local = threading.local()
        self._pool.close()

    def backup_to(self, path: Any) -> Any:
        from pacsnode.errors import PacsnodeError

        raise PacsnodeError("backup copies a SQLite index; this node's index is PostgreSQL: back it up with "
                            "pg_dump (and the storage folder with pacsnode backup's file copy is not enough "
                            "alone); see docs/postgresql.md")
