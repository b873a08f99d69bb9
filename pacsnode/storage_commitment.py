"""Storage commitment, the service side (PS3.4 J): which of the instances a peer asks about are safely here.

Moved out of ``node.py`` (module size): ``Node.commitment`` delegates here; the engine's
N-ACTION/N-EVENT-REPORT exchange is ``dimse/commitment.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pacsnode.errors import StorageUnavailable
from pacsnode.model import Caller, DeliveryKind

if TYPE_CHECKING:
    from pacsnode.node import Node

COMMIT_PROCESSING_FAILURE = 0x0110  # Failure Reason (0008,1197), PS3.4 J.3.3.1.1
COMMIT_NO_SUCH_INSTANCE = 0x0112


def commitment(node: Node, refs: list[tuple[str, str]], caller: Caller) -> list[tuple[str, str, int]]:
    """Storage commitment (PS3.4 J): (SOP class, SOP instance, failure reason; 0 = committed).

    Committed only when the caller is a registered peer (AE title, host and certificate
    checked), the instance is indexed with that SOP class, was delivered by that peer
    (the row's provenance; for rows older than provenance, its AE title), and its file
    still matches the recorded size and SHA-256 (read now, once per instance however often
    the request repeats it). Anything else is 0x0112 "no such object instance" (so that a
    study the caller may not see and one that is not here look the same; an AE title
    claimed from the wrong host, or by an unregistered caller, is nobody and learns
    nothing), or 0x0110 "processing failure" when the file is damaged. Audited as one event.
    """
    peer = caller.peer
    rows = node.index.instance_files(sorted({uid for _cls, uid in refs})) if peer is not None else {}
    intact: dict[str, bool] = {}
    results: list[tuple[str, str, int]] = []
    for sop_class, sop_instance in refs:
        row = rows.get(sop_instance)
        if peer is None or row is None or row["sop_class_uid"] != sop_class or not _delivered_by(row, caller):
            results.append((sop_class, sop_instance, COMMIT_NO_SUCH_INSTANCE))
            continue
        if sop_instance not in intact:
            try:
                intact[sop_instance] = (node.storage.size(row["path"]) == row["size"]
                                        and node.storage.sha256(row["path"]) == row["sha256"])
            except (OSError, StorageUnavailable):
                intact[sop_instance] = False
        results.append((sop_class, sop_instance, 0 if intact[sop_instance] else COMMIT_PROCESSING_FAILURE))
    failed = [uid for _cls, uid, reason in results if reason]
    detail = {"requested": len(refs), "failed": failed[:20], "failed_count": len(failed)}
    if peer is None:
        detail["refused"] = f"not a registered peer{': ' + caller.refused if caller.refused else ''}"
    node.audit.record("commitment", "committed" if not failed else "partial" if peer is not None else "refused",
                      peer_aet=caller.aet, peer_name=peer.name if peer else "", detail=detail)
    return results


def _delivered_by(row: Any, caller: Caller) -> bool:
    """Whether the instance of ``row`` was delivered by ``caller``'s peer: its provenance, or for
    a row stored before provenance was kept (``delivered_by`` blank), the calling AE title.

    Only a registered peer's delivery names a peer: an unregistered AE's or an import's
    ``delivered_peer`` holds the AE title it claimed, which a peer's name must not match."""
    assert caller.peer is not None
    kind = row["delivered_by"]
    if kind in _BY_PEER:
        return bool(row["delivered_peer"] == caller.peer.name)
    if kind in ("", DeliveryKind.UNKNOWN.value):
        return bool(row["calling_ae"] == caller.aet)
    return False  # unregistered, import: delivered by no peer


#: The deliveries whose ``delivered_peer`` is a registered peer's name (``ProvenanceDesk.of``).
_BY_PEER = frozenset(kind.value for kind in (DeliveryKind.PEER, DeliveryKind.OWN, DeliveryKind.RETRIEVED))
