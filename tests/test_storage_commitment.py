"""Storage commitment's answer (``Node.commitment``), in process: who is committed to, and at what cost.

The wire side (pynetdicom and our own requester against ``pacsnode serve``) is in
``test_send_commit.py`` and ``test_engine_services.py``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from pydicom import dcmread

from pacsnode.model import Caller, Peer
from pacsnode.node import Node
from pacsnode.storage_commitment import COMMIT_NO_SUCH_INSTANCE
from support import write_instance


def _stored_by(node: Node, caller: Caller, source: Path) -> tuple[str, str]:
    temp = node.new_temp_file()
    shutil.copyfile(source, temp)
    node.store_file(temp, caller)
    ds = dcmread(source, stop_before_pixels=True)
    return str(ds.SOPClassUID), str(ds.SOPInstanceUID)


def test_a_reference_repeated_100000_times_reads_its_file_once(node: Node, tmp_path: Path, ct_template: Path) -> None:
    """A request may name 100 000 references: the same instance named each time must not make the
    node read and hash its file 100 000 times (one N-ACTION, unbounded disk reads)."""
    node.add_peer(Peer("modality", "MODALITY", "127.0.0.1", 104))
    caller = Caller.registered(node.peers.get("modality"), "127.0.0.1")
    ref = _stored_by(node, caller, write_instance(ct_template, tmp_path / "one.dcm"))
    storage: Any = node.storage
    reads: list[str] = []
    real_sha256 = storage.sha256

    def counted(path: str) -> str:
        reads.append(path)
        return str(real_sha256(path))

    storage.sha256 = counted  # the real digest, counted
    results = node.commitment([ref] * 100_000, caller)
    assert [reason for _c, _i, reason in results] == [0] * 100_000
    assert len(reads) == 1


def test_nobody_is_committed_to_even_under_the_delivering_ae_title(node: Node, tmp_path: Path,
                                                                   ct_template: Path) -> None:
    """An unregistered caller (or a registered AE title from another host) is nobody: it learns
    nothing of what is here, even of what arrived under the title it claims."""
    ref = _stored_by(node, Caller.nobody("CT_SCANNER", "127.0.0.1"), write_instance(ct_template, tmp_path / "a.dcm"))
    results = node.commitment([ref], Caller.nobody("CT_SCANNER", "10.9.9.9"))
    assert results == [(*ref, COMMIT_NO_SUCH_INSTANCE)]
    event = [e for e in node.audit.events() if e.action == "commitment"][-1]
    assert event.outcome == "refused" and "not a registered peer" in event.detail


def test_a_peer_named_like_an_unregistered_ae_title_is_not_committed_its_instances(node: Node, tmp_path: Path,
                                                                                    ct_template: Path) -> None:
    """The provenance of an unregistered AE's (or an import's) instance names no peer: its
    delivered_peer holds the AE title it claimed. A registered peer whose *name* is that title
    (another host, another AE title) delivered nothing, and is committed nothing."""
    ref = _stored_by(node, Caller.nobody("ct1", "10.9.9.9"), write_instance(ct_template, tmp_path / "u.dcm"))
    node.add_peer(Peer("ct1", "WORKSTATION", "127.0.0.1", 104))  # a peer *named* like that AE title
    caller = Caller.registered(node.peers.get("ct1"), "127.0.0.1")
    assert node.commitment([ref], caller) == [(*ref, COMMIT_NO_SUCH_INSTANCE)]
    own = _stored_by(node, caller, write_instance(ct_template, tmp_path / "p.dcm"))
    assert node.commitment([own], caller) == [(*own, 0)]  # what it delivered itself still is
