"""The audit events of the DICOM network itself: connections, associations, commitment reports.

The engine (``dimse/``) tells the node what happened on the wire; this desk, owned by ``Node``
(``node.events``), decides what goes into the audit trail and in which shape, so that no
adapter writes audit records of its own (issue 13 item 7). Like every audit write on these
paths, a failure to record is logged and never takes the accept loop or an association down.
"""

from __future__ import annotations

import logging
from typing import Any

from pacsnode.audit import AuditLog
from pacsnode.model import Caller, Peer

LOGGER = logging.getLogger(__name__)


class EngineEvents:
    """Audit records of connection and association events, written in one place."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    def _record(self, action: str, outcome: str, **fields: Any) -> None:
        try:
            self.audit.record(action, outcome, **fields)
        except Exception:  # auditing must never take the engine down
            LOGGER.exception("audit of %s %s failed", action, outcome)

    def connection_refused(self, host: str, why: str) -> None:
        """A connection closed before any association (admission limits, bad RQ, failed TLS)."""
        self._record("connection", "refused", detail={"host": host, "why": why})

    def association_busy(self, calling_ae: str, host: str, why: str) -> None:
        """An A-ASSOCIATE-RQ rejected because the node is full or stopping (before identification)."""
        self._record("association", "rejected", peer_aet=calling_ae.strip()[:16], detail={"host": host, "why": why})

    def unusable_calling_ae(self, calling_ae: str, host: str, called_ae: str, detail: dict[str, object]) -> None:
        """An A-ASSOCIATE-RQ rejected for a blank or unprintable calling AE title (shown escaped)."""
        self._record("association", "rejected", peer_aet=repr(calling_ae)[1:-1][:64],
                     detail={"host": host, "called": called_ae.strip(),
                             "why": "calling AE title blank or not printable", **detail})

    def association(self, caller: Caller, outcome: str, host: str, called_ae: str,
                    detail: dict[str, object]) -> None:
        """Every peer association: accepted, rejected, released, aborted (with the identity refusal, if any)."""
        if caller.refused:  # an AE title that did not match its address or certificate
            detail = {**detail, "identity_refused": caller.refused}
        self._record("association", outcome, peer_aet=caller.aet, peer_name=caller.peer.name if caller.peer else "",
                     detail={"host": host, "called": called_ae.strip(), **detail})

    def commitment_refused(self, caller: Caller, why: str) -> None:
        """A storage commitment request refused unread (malformed, too long, no or a bad UID)."""
        self._record("commitment", "refused", peer_aet=caller.aet, peer_name=caller.peer.name if caller.peer else "",
                     detail={"why": why[:200]})

    def commitment_report(self, caller: Caller, peer: Peer | None, transaction: str, delivered: bool,
                          why: str = "", new_association: bool = True) -> None:
        """A storage commitment report sent (``reported``) or not (``undelivered``, with why)."""
        detail: dict[str, object] = {"transaction": transaction}
        if why:
            detail["why"] = why[:200]
        elif new_association:
            detail["new_association"] = True
        self._record("commitment", "reported" if delivered else "undelivered",
                     peer_aet=peer.aet if peer else caller.aet, peer_name=peer.name if peer else "", detail=detail)
