"""Append-only audit trail: every peer association, query, retrieval, refusal and decision.

Rows are only ever inserted; nothing in pacsnode updates or deletes them.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

from pacsnode.index import audit_store
from pacsnode.index.base import Index
from pacsnode.model import AuditEvent, Query

LOGGER = logging.getLogger(__name__)


class AuditLog:
    """Writes and reads the ``audit`` table."""

    def __init__(self, index: Index, node: str = "") -> None:
        self.index = index
        self.node = node  # the serving node's name, on every row (several nodes may share one audit)

    def record(self, action: str, outcome: str, *, peer_aet: str = "", peer_name: str = "",
               study_uid: str = "", detail: str | dict[str, Any] = "") -> None:
        text = detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=False, sort_keys=True)
        audit_store.insert_event(self.index, action, outcome, peer_aet, peer_name, study_uid, text, self.node)

    def last_detail(self, action: str) -> str | None:
        """The detail of the newest event of ``action`` (None when there is none)."""
        return audit_store.last_detail(self.index, action)

    def page(self, *, since: str = "", until: str = "", actor: str = "", action: str = "", outcome: str = "",
             study_uid: str = "", upto: int = 0, offset: int = 0, limit: int = 50) -> list[AuditEvent]:
        """One page of events, newest first, filtered as the admin's audit page asks; ``upto``
        (``last_pk()`` when the first page was read) keeps the pages still as events arrive."""
        rows = audit_store.event_page(self.index, since=since, until=until, actor=actor, action=action,
                                      outcome=outcome, study_uid=study_uid, upto_pk=upto, offset=offset, limit=limit)
        return [_event(r) for r in rows]

    def last_pk(self) -> int:
        return audit_store.last_pk(self.index)

    def events(self, *, study_uid: str | None = None, peer: str | None = None, since: str | None = None,
               limit: int = 10_000, node: str | None = None) -> list[AuditEvent]:
        rows = audit_store.event_rows(self.index, study_uid=study_uid, peer=peer, since=since, limit=limit, node=node)
        return [_event(r) for r in rows]


def _event(r: Any) -> AuditEvent:
    return AuditEvent(action=r["action"], outcome=r["outcome"], peer_aet=r["peer_aet"], peer_name=r["peer_name"],
                      study_uid=r["study_uid"], detail=r["detail"], at=datetime.fromisoformat(r["at"]),
                      node=r["node"])


def query_keys(query: Query) -> dict[str, Any]:
    """The matching keys of a query, for the audit trail (return-only keys left out).

    Sequence keys (e.g. a resident ID in Other Patient IDs) show their item's matching keys.
    """
    keys: dict[str, Any] = {}
    for key in query.keys:
        if key.items:
            item = {k.keyword: k.value for k in key.items if k.value}
            if item:
                keys[key.keyword] = item
        elif key.value:
            keys[key.keyword] = key.value
    return keys
