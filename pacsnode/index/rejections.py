"""SQL for IOCM rejection notes: record them, hide what they reject, list what is hidden.

A rejection note names instances; one row per (note, instance) is kept whether or not the
instance is here, and ``instances.hidden`` is set in the same transaction as the row that
makes it true: when the note arrives (instances already held) or when the instance arrives
(``apply_on_arrival``, called from the store transaction). So nothing rejected is ever
visible to a peer between two transactions.

Who may reject what (a rejection hides data from every peer, so it is an act of authority):
the local admin (``import``) and this node's own institution (``own``) may reject anything it
holds; a peer of another institution may reject only instances its own institution delivered.
An unregistered AE's note is stored, audited, and rejects nothing.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any, Iterable

REJECTED = "rejected"
REJECTION_NOTE = "rejection-note"



def _honoured(instances: str = "instances", institution: str = "") -> str:
    """The rows of ``rejections`` (alias r) that may hide the instance row ``instances`` (whose
    delivered institution is ``institution`` when that SQL expression is given)."""
    institution = institution or f"{instances}.delivered_institution"
    return f"(r.sender_kind IN ('import', 'own') OR (r.sender_institution <> '' AND r.sender_institution = {institution}))"


_HONOURED = _honoured()

#: ``instances.hidden`` of a row being inserted, parameters (SOP Instance UID, delivered institution):
#: what :func:`apply_on_arrival` sets right after the INSERT, in the INSERT itself (SQLite's ingest).
HIDDEN_ON_ARRIVAL = (f"CASE WHEN EXISTS (SELECT 1 FROM rejections r WHERE r.sop_instance_uid = ? AND "
                     f"{_honoured(institution='?')}) THEN '{REJECTED}' ELSE '' END")


@dataclass(frozen=True)
class RejectedRef:
    """One instance a note rejects, with the study and series the note places it in."""

    sop_instance_uid: str
    study_uid: str = ""
    series_uid: str = ""


def apply_on_arrival(conn: sqlite3.Connection, instance_pk: int) -> None:
    """Hide a just-indexed instance that a kept rejection note names (inside the store transaction)."""
    conn.execute(
        f"UPDATE instances SET hidden = '{REJECTED}' WHERE pk = ? AND hidden = '' AND EXISTS "
        f"(SELECT 1 FROM rejections r WHERE r.sop_instance_uid = instances.sop_instance_uid AND {_HONOURED})",
        (instance_pk,))


def record_note(conn: sqlite3.Connection, note_uid: str, refs: Iterable[RejectedRef], reason: tuple[str, str],
                sender: dict[str, str], now: str) -> dict[str, Any]:
    """Keep a note's rows, hide the note and the instances it may reject; say what happened.

    Returns ``hidden`` (instances hidden now), ``pending`` (not held yet), ``refused``
    (held, but the sender may not reject them) and ``studies`` (studies whose view changed).
    Idempotent: a note sent twice adds nothing.
    """
    wanted = list({ref.sop_instance_uid: ref for ref in refs}.values())
    for ref in wanted:
        conn.execute(
            "INSERT OR IGNORE INTO rejections (note_uid, sop_instance_uid, study_uid, series_uid, reason_code, "
            "reason_meaning, sender_kind, sender_aet, sender_peer, sender_institution, received_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (note_uid, ref.sop_instance_uid, ref.study_uid, ref.series_uid, reason[0], reason[1],
             sender.get("kind", ""), sender.get("aet", ""), sender.get("peer", ""), sender.get("institution", ""),
             now))
    conn.execute(f"UPDATE instances SET hidden = '{REJECTION_NOTE}' WHERE sop_instance_uid = ?", (note_uid,))
    conn.execute(
        f"UPDATE instances SET hidden = '{REJECTED}' WHERE hidden = '' AND EXISTS (SELECT 1 FROM rejections r "
        f"WHERE r.note_uid = ? AND r.sop_instance_uid = instances.sop_instance_uid AND {_HONOURED})", (note_uid,))
    uids = [ref.sop_instance_uid for ref in wanted]
    held: dict[str, tuple[str, str]] = {}
    for start in range(0, len(uids), 500):
        chunk = uids[start:start + 500]
        for row in conn.execute(
                "SELECT i.sop_instance_uid, i.hidden, s.study_uid FROM instances i JOIN series se ON se.pk = "
                f"i.series_pk JOIN studies s ON s.pk = se.study_pk WHERE i.sop_instance_uid IN "
                f"({','.join('?' * len(chunk))})", chunk):
            held[row[0]] = (row[1], row[2])
    hidden = sorted(uid for uid, (state, _study) in held.items() if state == REJECTED)
    return {"hidden": hidden, "pending": sorted(set(uids) - set(held)),
            "refused": sorted(uid for uid, (state, _study) in held.items() if state != REJECTED),
            "studies": sorted({study for state, study in held.values() if state == REJECTED})}


def hidden_instances(conn: sqlite3.Connection, study_uid: str) -> dict[str, dict[str, str]]:
    """SOP Instance UID → why it is hidden from peers (state, reason code and meaning, who sent the note)."""
    rows = conn.execute(
        "SELECT i.sop_instance_uid, i.hidden, r.reason_code, r.reason_meaning, r.sender_aet, r.sender_peer, "
        "r.note_uid FROM instances i JOIN series se ON se.pk = i.series_pk JOIN studies s ON s.pk = se.study_pk "
        f"LEFT JOIN rejections r ON r.sop_instance_uid = i.sop_instance_uid AND {_honoured('i')} "
        "WHERE s.study_uid = ? AND i.hidden <> '' ORDER BY r.pk", (study_uid,)).fetchall()
    out: dict[str, dict[str, str]] = {}
    for row in rows:
        out.setdefault(row[0], {"hidden": row[1], "reason_code": row[2] or "", "reason_meaning": row[3] or "",
                                "sent_by": row[5] or row[4] or "", "note_uid": row[6] or ""})
    return out
