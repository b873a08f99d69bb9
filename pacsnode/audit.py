"""Append-only audit trail: every peer association, query, retrieval, refusal and decision.

Rows are only ever inserted; nothing in pacsnode updates or deletes them.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pacsnode.index.schema import utc_now
from pacsnode.index.sqlite import SqliteIndex
from pacsnode.model import AuditEvent

LOGGER = logging.getLogger(__name__)


class AuditLog:
    """Writes and reads the ``audit`` table."""

    def __init__(self, index: SqliteIndex) -> None:
        self.index = index

    def record(self, action: str, outcome: str, *, peer_aet: str = "", peer_name: str = "",
               study_uid: str = "", detail: str | dict[str, Any] = "") -> None:
        text = detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=False, sort_keys=True)
        with self.index.write() as conn:
            conn.execute(
                "INSERT INTO audit (at, action, outcome, peer_aet, peer_name, study_uid, detail) "
                "VALUES (?,?,?,?,?,?,?)", (utc_now(), action, outcome, peer_aet, peer_name, study_uid, text))

    def last_detail(self, action: str) -> str | None:
        """The detail of the newest event of ``action`` (None when there is none)."""
        rows = self.index.query("SELECT detail FROM audit WHERE action = ? ORDER BY pk DESC LIMIT 1", (action,))
        return str(rows[0]["detail"]) if rows else None

    def events(self, *, study_uid: str | None = None, peer: str | None = None, since: str | None = None,
               limit: int = 10_000) -> list[AuditEvent]:
        where: list[str] = []
        params: list[Any] = []
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
        from datetime import datetime

        return [AuditEvent(action=r["action"], outcome=r["outcome"], peer_aet=r["peer_aet"],
                           peer_name=r["peer_name"], study_uid=r["study_uid"], detail=r["detail"],
                           at=datetime.fromisoformat(r["at"])) for r in self.index.query(sql, params)]
