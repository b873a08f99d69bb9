"""Storage commitment, the service side (PS3.4 J): which of the instances a peer asks about are safely here.

Moved out of ``node.py`` (module size): ``Node.commitment`` delegates here; the engine's
N-ACTION/N-EVENT-REPORT exchange is ``dimse/commitment.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pacsnode.errors import StorageUnavailable
from pacsnode.model import Caller

if TYPE_CHECKING:
    from pacsnode.node import Node

COMMIT_PROCESSING_FAILURE = 0x0110  # Failure Reason (0008,1197), PS3.4 J.3.3.1.1
COMMIT_NO_SUCH_INSTANCE = 0x0112


def commitment(node: Node, refs: list[tuple[str, str]], caller: Caller) -> list[tuple[str, str, int]]:
    """Storage commitment (PS3.4 J): (SOP class, SOP instance, failure reason; 0 = committed).

    Committed only when the instance is indexed with that SOP class, was delivered by
    this caller's AE title, and its file still matches the recorded size and SHA-256
    (read now). Anything else is 0x0112 "no such object instance" (so that a study the
    caller may not see and one that is not here look the same), or 0x0110 "processing
    failure" when the file is damaged. Audited as one event.
    """
    rows = node.index.instance_files(sorted({uid for _cls, uid in refs}))
    results: list[tuple[str, str, int]] = []
    for sop_class, sop_instance in refs:
        row = rows.get(sop_instance)
        if row is None or row["sop_class_uid"] != sop_class or row["calling_ae"] != caller.aet:
            results.append((sop_class, sop_instance, COMMIT_NO_SUCH_INSTANCE))
            continue
        try:
            intact = (node.storage.size(row["path"]) == row["size"]
                      and node.storage.sha256(row["path"]) == row["sha256"])
        except (OSError, StorageUnavailable):
            intact = False
        results.append((sop_class, sop_instance, 0 if intact else COMMIT_PROCESSING_FAILURE))
    failed = [uid for _cls, uid, reason in results if reason]
    node.audit.record("commitment", "committed" if not failed else "partial", peer_aet=caller.aet,
                      peer_name=caller.peer.name if caller.peer else "",
                      detail={"requested": len(refs), "failed": failed[:20], "failed_count": len(failed)})
    return results
