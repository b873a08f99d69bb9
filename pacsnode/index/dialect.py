"""The SQL dialects of the index: SQL is written once, in SQLite's dialect, and translated for PostgreSQL.

Every module of ``pacsnode/index/`` writes its statements with ``?`` placeholders, as SQLite
runs them. :func:`pg_statement` turns one statement into PostgreSQL's, and :func:`pg_params`
its parameters; both are deterministic text rewrites kept in this one module, so a reader can
see every dialect difference in one place:

* placeholders ``?`` → ``%s`` (a literal ``%`` → ``%%``), outside quoted text;
* ``INSERT OR IGNORE`` → ``ON CONFLICT DO NOTHING``; ``INSERT OR REPLACE`` → ``ON CONFLICT (key)
  DO UPDATE`` of every other listed column (the key is the table's TEXT PRIMARY KEY);
* an INSERT into a table with an integer ``pk`` gets ``RETURNING pk`` (SQLite's ``lastrowid``);
* ``GLOB ?`` → ``LIKE ?``: the parameter is a :class:`GlobPattern` and becomes a LIKE pattern
  (``*`` → ``%``, ``?`` → ``_``, ``%``/``_``/``\\`` escaped), both case-sensitive;
* ``IN (SELECT value FROM json_each(?))`` → ``= ANY(?)``: the parameter is a :class:`JsonList`
  and is bound as an array;
* two-argument ``MAX(a, b)`` → ``GREATEST(a, b)``;
* ASC ordering on the nullable integer columns gets ``NULLS FIRST`` (SQLite sorts NULL first);
* booleans are bound as 0/1, as SQLite stores them.

DDL (:func:`pg_ddl`): ``INTEGER PRIMARY KEY`` → an identity ``BIGINT`` key, ``INTEGER`` →
``BIGINT``, ``TEXT`` → ``TEXT COLLATE "C"`` (SQLite compares text bytewise: ranges on dates,
ORDER BY and LIKE prefixes then behave the same, and plain b-tree indexes serve ``LIKE 'abc%'``),
and a table without a primary key gets the ``rowid`` column SQLite gives it implicitly.
``BEGIN IMMEDIATE`` (take the writer lock now) becomes ``BEGIN`` plus a transaction-scoped
advisory lock, and ``PRAGMA synchronous=NORMAL`` (a commit without its own fsync) becomes
``SET LOCAL synchronous_commit = off``, in :mod:`pacsnode.index.postgres`; other PRAGMAs are no-ops.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any, Iterable, Sequence

from pacsnode.index import pg_store_sql

#: Nullable integer columns: SQLite orders NULL before any value, PostgreSQL after (ascending).
NULLABLE_ORDER_COLUMNS = ("series_number", "instance_number", "number_of_frames")


class GlobPattern(str):
    """A GLOB pattern bound as a parameter (``*``, ``?``; ``[[]`` is a literal ``[``)."""

    def to_like(self) -> str:
        out: list[str] = []
        text = str(self).replace("[[]", "\x00")
        for ch in text:
            out.append({"*": "%", "?": "_", "%": "\\%", "_": "\\_", "\\": "\\\\", "\x00": "["}.get(ch, ch))
        return "".join(out)


class JsonList(str):
    """A list bound as one JSON text parameter (SQLite ``json_each``); PostgreSQL binds it as an array."""

    @classmethod
    def of(cls, values: Iterable[Any]) -> "JsonList":
        return cls(json.dumps(list(values)))

    def values(self) -> list[Any]:
        return list(json.loads(self))


_TABLE_PK = re.compile(r"CREATE TABLE (\w+) \(\s*pk INTEGER PRIMARY KEY", re.S)
_TEXT_KEY = re.compile(r"CREATE TABLE (\w+) \(\s*(\w+) TEXT PRIMARY KEY", re.S)


def _schema_facts() -> tuple[frozenset[str], dict[str, str]]:
    from pacsnode.index.schema import MIGRATIONS

    text = "\n".join(sql for _name, sql in MIGRATIONS)
    return frozenset(_TABLE_PK.findall(text)), dict(_TEXT_KEY.findall(text))


def _placeholders(sql: str) -> str:
    """``?`` → ``%s`` and ``%`` → ``%%`` outside single-quoted literals and double-quoted names."""
    out: list[str] = []
    quote = ""
    for ch in sql:
        if quote:
            if ch == quote:
                quote = ""
            out.append("%%" if ch == "%" else ch)
            continue
        if ch in "'\"":
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return "".join(out)


_INSERT = re.compile(r"^\s*INSERT\s+(?:OR\s+(IGNORE|REPLACE)\s+)?INTO\s+(\w+)\s*\(([^)]*)\)", re.I | re.S)
_MAX2 = re.compile(r"\bMAX\(([\w.]+),\s*\?\)")
_JSON_IN = re.compile(r"\bIN \(SELECT value FROM json_each\(\?\)\)")
_ORDER_NULLABLE = re.compile(r"\b((?:\w+\.)?(?:%s))\b(?!\s+(?:DESC|ASC|NULLS))" % "|".join(NULLABLE_ORDER_COLUMNS))


def _order_nulls_first(sql: str) -> str:
    head, sep, tail = sql.rpartition(" ORDER BY ")
    if not sep:
        return sql
    order, limit_sep, rest = tail.partition(" LIMIT ")
    return head + sep + _ORDER_NULLABLE.sub(r"\1 NULLS FIRST", order) + limit_sep + rest


@lru_cache(maxsize=4096)
def pg_statement(sql: str) -> str:
    """One SQLite-dialect statement in PostgreSQL's dialect (see the module docstring)."""
    pk_tables, text_keys = _schema_facts()
    out = sql.replace(" GLOB ?", " LIKE ?")
    out = _JSON_IN.sub("= ANY(?)", out)
    out = _MAX2.sub(r"GREATEST(\1, ?)", out)
    insert = _INSERT.match(out)
    if insert:
        mode, table, columns = (insert.group(1) or "").upper(), insert.group(2), insert.group(3)
        out = re.sub(r"^\s*INSERT\s+OR\s+\w+\s+INTO", "INSERT INTO", out, count=1, flags=re.I)
        if mode == "IGNORE":
            out += " ON CONFLICT DO NOTHING"
        elif mode == "REPLACE":
            key = text_keys[table]
            names = [c.strip() for c in columns.split(",") if c.strip() and c.strip() != key]
            out += f" ON CONFLICT ({key}) DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in names)
        if table in pk_tables and mode != "IGNORE":
            out += " RETURNING pk"
    elif " ORDER BY " in out:
        out = _order_nulls_first(out)
    return _placeholders(out)


def pg_params(params: Sequence[Any] | None) -> list[Any]:
    """Parameters as PostgreSQL needs them (glob → LIKE pattern, JSON list → array, bool → 0/1)."""
    out: list[Any] = []
    for value in params or ():
        if isinstance(value, GlobPattern):
            value = value.to_like()
        elif isinstance(value, JsonList):
            value = value.values()
        elif isinstance(value, bool):
            value = int(value)
        out.append(value)
    return out


_CREATE_TABLE = re.compile(r"^\s*CREATE TABLE (?:IF NOT EXISTS )?(\w+) \(", re.I)


def pg_ddl(sql: str) -> str:
    """A migration statement (CREATE/ALTER TABLE, CREATE INDEX) in PostgreSQL's dialect."""
    out = re.sub(r"\bINTEGER PRIMARY KEY\b", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", sql)
    out = re.sub(r"\bINTEGER\b", "BIGINT", out)
    out = re.sub(r"\bTEXT\b", 'TEXT COLLATE "C"', out)
    if _CREATE_TABLE.match(out) and "PRIMARY KEY" not in out:
        out = _CREATE_TABLE.sub(lambda m: m.group(0) + "\n rowid BIGINT GENERATED ALWAYS AS IDENTITY,", out, count=1)
    return out


#: Statements one dialect adds to a named migration (run in its transaction, after the shared SQL).
DIALECT_MIGRATIONS: dict[str, dict[str, list[str]]] = {
    "postgresql": {
        # EXPLAIN at 200k patients: "PatientName=WANGa1*" is an OR of four LIKEs (whole name, first
        # group, any later group); without these a parallel seq scan of patients (190-300 ms), with
        # them a BitmapOr of the b-tree (prefix branches, COLLATE "C") and the trigram index (23-69 ms).
        # pg_trgm is a trusted extension: the database owner may create it.
        "0014_name_search": [
            "CREATE EXTENSION IF NOT EXISTS pg_trgm",
            "CREATE INDEX patients_name_trgm ON patients USING gin (patient_name gin_trgm_ops)",
            "CREATE INDEX patients_name_folded_trgm ON patients USING gin (patient_name_folded gin_trgm_ops)",
            "CREATE INDEX studies_referring_folded_trgm ON studies USING gin (referring_physician_folded gin_trgm_ops)",
        ],
        # One call records one instance, so that an ingest batch is one round trip (pg_store_sql).
        "0019_pg_store_function": pg_store_sql.MIGRATION,
    },
}


def migration_statements(name: str, sql: str, dialect: str) -> list[str]:
    """The statements of migration ``name`` on ``dialect``: the shared ones, then the dialect's own."""
    return [s for s in sql.split(";") if s.strip()] + DIALECT_MIGRATIONS.get(dialect, {}).get(name, [])


def is_ddl(sql: str) -> bool:
    return bool(re.match(r"^\s*(CREATE|ALTER|DROP)\s", sql, re.I))
