"""The node's side of IOCM rejection notes: apply a note, audit it, send its studies back to QC.

``pacsnode.dicom.iocm`` reads a note; ``pacsnode.index.rejections`` keeps its rows and hides
what it rejects in one transaction (and applies kept notes when the instances arrive). This
module decides nothing about the wire: peers stop seeing hidden instances because every
query and retrieve asks the index for the normal view (``Node.find``/``Node.retrieve``).
"""

from __future__ import annotations

import logging
from typing import Any

from pacsnode.audit import AuditLog
from pacsnode.dicom.iocm import RejectionNote
from pacsnode.index.regional_store import RegionalStore
from pacsnode.index.rejections import RejectedRef
from pacsnode.model import Caller, DeliveryKind, Provenance
from pacsnode.qc_service import QcDesk

LOGGER = logging.getLogger(__name__)


class RejectionDesk:
    """Applies rejection notes for one node."""

    def __init__(self, store: RegionalStore, audit: AuditLog, qc: QcDesk) -> None:
        self.store = store
        self.audit = audit
        self.qc = qc

    def apply(self, note: RejectionNote, provenance: Provenance, caller: Caller) -> dict[str, Any]:
        """Keep the note, hide what its sender may reject, audit, and put changed studies back to QC.

        The audit outcome says what happened: ``applied`` (something was hidden now), ``kept``
        (nothing held yet: applied on arrival), ``refused`` (the sender may not reject what it
        names, e.g. an unregistered AE).
        """
        sender = {"kind": provenance.kind.value, "aet": provenance.aet, "peer": provenance.peer,
                  "institution": provenance.institution}
        refs = [RejectedRef(r.sop_instance_uid, r.study_uid, r.series_uid) for r in note.rejected]
        result = self.store.record_rejection(note.sop_instance_uid, refs, (note.reason_code, note.reason_meaning),
                                             sender)
        if result["hidden"]:
            outcome = "applied"
        elif provenance.kind is DeliveryKind.UNREGISTERED or result["refused"]:
            outcome = "refused"
        else:
            outcome = "kept"
        self.audit.record(
            "iocm-reject", outcome, peer_aet=caller.aet, peer_name=caller.peer.name if caller.peer else "",
            study_uid=note.rejected[0].study_uid,
            detail={"note": note.sop_instance_uid, "reason": f"{note.reason_code} {note.reason_meaning}",
                    "sender": sender, "hidden": len(result["hidden"]), "pending": len(result["pending"]),
                    "refused": len(result["refused"])})
        for study_uid in result["studies"]:
            try:
                self.qc.instance_arrived(study_uid)  # an accepted study is checked again without them
            except Exception:  # QC bookkeeping must not undo an applied rejection
                LOGGER.exception("QC update after a rejection of %s failed", study_uid)
        return result
