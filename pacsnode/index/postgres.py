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

import threading
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

from pacsnode.errors import IndexError_
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
    names = {d.name: i for i, d in reversed(list(enumerate(cursor.description or [])))}
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
        self._relaxed = False  # PRAGMA synchronous=NORMAL: commits need not wait for the WAL flush
        self.shared_lock = False  # the next BEGINs take the write lock shared (ingest batches: pg_ingest)

    @property
    def in_transaction(self) -> bool:
        return self._held is not None

    def execute(self, sql: str, params: Sequence[Any] | None = ()) -> PgCursor:
        word = sql.strip().upper()
        if word.startswith("PRAGMA"):
            return self._pragma(word)
        if word == "BEGIN IMMEDIATE":
            return self._begin()
        if word in ("COMMIT", "ROLLBACK"):
            return self._end(word)
        text = pg_ddl(sql) if is_ddl(sql) else pg_statement(sql)
        if self._held is not None:
            return self._run(self._held, text, params)
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
            rows = cur.fetchall() if cur.description is not None else []
            lastrowid = int(rows[0][0]) if rows and text.endswith("RETURNING pk") else None
            return PgCursor(rows, cur.rowcount, lastrowid)

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
        if conn is None:
            return PgCursor([], -1, None)
        try:
            conn.execute(word)
        finally:
            self._give_back(conn)
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


def _is_read(text: str) -> bool:
    return text.lstrip()[:6].upper() == "SELECT"


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

    def close(self) -> None:
        self._local = threading.local()
        self._pool.close()

    def backup_to(self, path: Any) -> Any:
        from pacsnode.errors import PacsnodeError

        raise PacsnodeError("backup copies a SQLite index; this node's index is PostgreSQL: back it up with "
                            "pg_dump (and the storage folder with pacsnode backup's file copy is not enough "
                            "alone); see docs/postgresql.md")
