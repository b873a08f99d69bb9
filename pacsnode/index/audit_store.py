"""The ``audit`` table's SQL: append a row, read the newest detail, read rows by filter.

``pacsnode.audit.AuditLog`` is the API; this module is where its SQL lives (SQL stays in
``pacsnode/index/``). Rows are only ever inserted: nothing here updates or deletes them.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from pacsnode.index.schema import utc_now
from pacsnode.index.base import Index


def insert_event(index: Index, action: str, outcome: str, peer_aet: str, peer_name: str,
                 study_uid: str, detail: str, node: str = "") -> None:
    """Append one audit row, stamped now (UTC) with the serving ``node``'s name, in its own write transaction.

    Without an fsync of its own (``durable=False``): the row survives a crash of the process,
    and the next durable commit (an instance, a decision) takes it to the disk.
    """
    index.write_one("INSERT INTO audit (at, action, outcome, peer_aet, peer_name, study_uid, detail, node) "
                    "VALUES (?,?,?,?,?,?,?,?)",
                    (utc_now(), action, outcome, peer_aet, peer_name, study_uid, detail, node), durable=False)


def last_detail(index: Index, action: str) -> str | None:
    """The detail of the newest row of ``action`` (None when there is none)."""
    rows = index.query("SELECT detail FROM audit WHERE action = ? ORDER BY pk DESC LIMIT 1", (action,))
    return str(rows[0]["detail"]) if rows else None


def event_rows(index: Index, *, study_uid: str | None = None, peer: str | None = None,
               since: str | None = None, limit: int = 10_000, node: str | None = None) -> list[sqlite3.Row]:
    """Audit rows, oldest first, filtered by study, peer (name or AE title), time (ISO, inclusive)
    and the node that served."""
    where: list[str] = []
    params: list[Any] = []
    if node:
        where.append("node = ?")
        params.append(node)
    if study_uid:
        where.append("study_uid = ?")
        params.append(study_uid)
    if peer:
        where.append("(peer_name = ? OR peer_aet = ?)")
        params.extend([peer, peer])
    if since:
        where.append("at >= ?")
        params.append(since)
    sql = "SELECT * FROM audit" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY pk LIMIT ?"
    params.append(limit)
    return index.query(sql, params)


def event_page(index: Index, *, since: str = "", until: str = "", actor: str = "", action: str = "",
               outcome: str = "", study_uid: str = "", upto_pk: int = 0, offset: int = 0,
               limit: int = 50) -> list[sqlite3.Row]:
    """One page of audit rows, newest first, for the admin's audit page.

    ``since``/``until`` are ISO UTC bounds (inclusive/exclusive); ``actor`` matches the peer
    name (``user:dr-wang``, ``token:ohif``, a peer's name) or AE title exactly; ``action``,
    ``outcome`` and ``study_uid`` match exactly. ``upto_pk`` (from ``last_pk`` when page 1 was
    read) keeps later pages still while new rows arrive. Plain ``?`` SQL (backend-neutral).
    """
    where: list[str] = []
    params: list[Any] = []
    for column, value in (("at >= ?", since), ("at < ?", until), ("action = ?", action),
                          ("outcome = ?", outcome), ("study_uid = ?", study_uid)):
        if value:
            where.append(column)
            params.append(value)
    if actor:
        where.append("(peer_name = ? OR peer_aet = ?)")
        params.extend([actor, actor])
    if upto_pk:
        where.append("pk <= ?")
        params.append(upto_pk)
    sql = ("SELECT * FROM audit" + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY pk DESC LIMIT ? OFFSET ?")
    params.extend([limit, offset])
    return index.query(sql, params)


def recent_with_outcomes(index: Index, outcomes: tuple[str, ...], limit: int = 10) -> list[sqlite3.Row]:
    """The newest rows whose outcome is one of ``outcomes`` (what went wrong lately), newest first."""
    if not outcomes:
        return []
    marks = ",".join("?" * len(outcomes))
    return index.query(f"SELECT * FROM audit WHERE outcome IN ({marks}) ORDER BY pk DESC LIMIT ?",
                       [*outcomes, limit])


def last_pk(index: Index) -> int:
    """The newest audit row's key (0 when there is none): where a paged reading starts."""
    rows = index.query("SELECT MAX(pk) AS pk FROM audit")
    return int(rows[0]["pk"] or 0) if rows else 0
