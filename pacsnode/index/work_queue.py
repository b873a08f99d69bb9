"""Background work shared by the nodes of one archive, each item claimed by exactly one node.

Several ``pacsnode serve`` processes (on one machine or several) may share one index (issue 16):
each of them runs the stable-study pass, yet every study that went quiet must be checked by one
node only (two nodes checking it would write its QC row and audit it twice, and double the cost).
The ``work_items`` table is that hand-off:

1. every node *queues* what it sees due (:func:`queue_quiet_studies`: one row per study and kind;
   queuing again is idempotent, and a study that changed since its last run is queued anew);
2. a node *claims* ready rows (:func:`claim`): the rows are selected and marked ``running`` with
   the node's name and a lease in one write transaction. On SQLite the transaction holds the
   database's one writer lock (``BEGIN IMMEDIATE``), so two claims never overlap; on PostgreSQL
   the rows are selected ``FOR UPDATE SKIP LOCKED``: a concurrent claim skips the rows this one
   holds, and re-checks the state of a row it waited for (``running`` now: not selected);
3. the node *finishes* the item (:func:`finish`), only while it still holds it.

A node that dies while holding an item leaves it ``running``; once its lease has passed, another
node claims it again (so an item runs once while nodes live, and again only after a crash).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from pacsnode.index.schema import utc_now

QC_STABLE = "qc-stable"  # a study that went quiet: run the QC checks
DEFAULT_LEASE_SECONDS = 600.0  # far longer than the QC of one study; after it a dead node's claim is taken over
MAX_ATTEMPTS = 5  # an item claimed this often without finishing (it kills its node?) is left alone

READY, RUNNING, DONE = "ready", "running", "done"


def _is_postgres(index: Any) -> bool:
    """Whether ``index`` is the PostgreSQL backend (its SQL may lock rows ``SKIP LOCKED``)."""
    return str(getattr(index, "dialect", "sqlite")).startswith("postg")


def _lease_until(lease_seconds: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=lease_seconds)).isoformat(timespec="microseconds")


def queue_quiet_studies(index: Any, before: str) -> int:
    """Queue (kind ``qc-stable``) every study whose last instance arrived before ``before`` and whose
    QC has not run since; the study's ``updated_at`` is the item's generation.

    A row already done for an older generation (an instance arrived after its check) is made ready
    again; one done for this generation is left alone (its check ran, or failed for good: it is not
    retried every pass); a running row is left to its node. Returns how many rows became ready.
    """
    now = utc_now()
    with index.write() as conn:
        cursor = conn.execute(
            "INSERT INTO work_items (kind, item, generation, state, queued_at) "
            "SELECT ?, s.study_uid, s.updated_at, ?, ? FROM studies s "
            "LEFT JOIN study_qc q ON q.study_uid = s.study_uid "
            "WHERE s.updated_at < ? AND (q.checked_at IS NULL OR q.checked_at = '' OR q.checked_at < s.updated_at) "
            "ON CONFLICT (kind, item) DO UPDATE SET generation = excluded.generation, state = excluded.state, "
            "node = '', lease_until = '', attempts = 0, queued_at = excluded.queued_at, done_at = '' "
            "WHERE work_items.state = ? AND work_items.generation < excluded.generation",
            (QC_STABLE, READY, now, before, DONE))
        return max(int(cursor.rowcount or 0), 0)


def queue(index: Any, kind: str, keys: list[str], generation: str = "") -> int:
    """Queue ``keys`` of ``kind`` (idempotent: a key already queued, running or done for this
    generation or a newer one is left alone). Returns how many rows became ready."""
    now = utc_now()
    count = 0
    with index.write() as conn:
        for key in keys:
            cursor = conn.execute(
                "INSERT INTO work_items (kind, item, generation, state, queued_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (kind, item) DO UPDATE SET generation = excluded.generation, state = excluded.state, "
                "node = '', lease_until = '', attempts = 0, queued_at = excluded.queued_at, done_at = '' "
                "WHERE work_items.state = ? AND work_items.generation < excluded.generation",
                (kind, key, generation, READY, now, DONE))
            count += max(int(cursor.rowcount or 0), 0)
    return count


def claim(index: Any, kind: str, node: str, limit: int = 20,
          lease_seconds: float = DEFAULT_LEASE_SECONDS) -> list[str]:
    """Claim up to ``limit`` ready items of ``kind`` (or running ones whose lease passed) for ``node``.

    The items returned are this node's alone until it finishes them or its lease passes.
    """
    now = utc_now()
    lock = " FOR UPDATE SKIP LOCKED" if _is_postgres(index) else ""
    with index.write() as conn:
        rows = conn.execute(
            "SELECT item FROM work_items WHERE kind = ? AND attempts < ? "
            "AND (state = ? OR (state = ? AND lease_until < ?)) "
            f"ORDER BY queued_at, item LIMIT ?{lock}",
            (kind, MAX_ATTEMPTS, READY, RUNNING, now, limit)).fetchall()
        items = [str(r[0]) for r in rows]
        until = _lease_until(lease_seconds)
        for item in items:
            conn.execute("UPDATE work_items SET state = ?, node = ?, lease_until = ?, attempts = attempts + 1 "
                         "WHERE kind = ? AND item = ?", (RUNNING, node, until, kind, item))
    return items


def finish(index: Any, kind: str, item: str, node: str) -> bool:
    """Mark ``item`` done; False when ``node`` no longer holds it (its lease passed and another took it)."""
    with index.write() as conn:
        cursor = conn.execute(
            "UPDATE work_items SET state = ?, done_at = ?, lease_until = '' "
            "WHERE kind = ? AND item = ? AND node = ? AND state = ?", (DONE, utc_now(), kind, item, node, RUNNING))
        return int(cursor.rowcount or 0) == 1


def items(index: Any, kind: str) -> list[dict[str, Any]]:
    """Every row of ``kind`` (state, node, attempts...): for ``pacsnode`` status output and tests."""
    rows = index.query("SELECT kind, item, generation, state, node, lease_until, attempts, queued_at, done_at "
                       "FROM work_items WHERE kind = ? ORDER BY queued_at, item", (kind,))
    return [dict(r) for r in rows]
