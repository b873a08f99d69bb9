"""``pacsnode send PEER ... --commit`` and the storage commitment messages on our own associations.

Against a real ``pacsnode serve`` (the engine's Storage Commitment SCP), and against pynetdicom
playing the requester that receives a report on a new association, or an SCP that never reports.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

from pacsnode.dimse import commit_scu, outgoing, sending
from pacsnode.model import InstanceLocation, Peer
from support import LOOPBACK, NodeProcess, free_port, sample_files

pytestmark = [pytest.mark.interop, pytest.mark.cluster]


def _location(path: Path) -> InstanceLocation:
    ds = dcmread(path, stop_before_pixels=True)
    return InstanceLocation(str(ds.SOPInstanceUID), str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID),
                            str(path))


@pytest.fixture
def archive(node_process: Callable[..., NodeProcess]) -> NodeProcess:
    target = node_process(name="archive", aet="ARCHIVE")
    target.cli("peer", "add", "sender", "--aet", "SENDER", "--host", LOOPBACK, "--port", "1")
    return target.start()


def test_send_commit_prints_every_instance_committed_by_pacsnode(
        archive: NodeProcess, node_process: Callable[..., NodeProcess]) -> None:
    sender = node_process(name="sender", aet="SENDER")
    sender.cli("peer", "add", "archive", "--aet", "ARCHIVE", "--host", LOOPBACK, "--port", str(archive.port))
    files = [str(p) for p in sample_files()[:4]]
    sent = sender.cli("send", "archive", *files, "--commit", "--commit-timeout", "30")
    assert sent.returncode == 0, sent.explain()
    assert "sent 4, warning 0, failed 0" in sent.stdout
    assert "committed 4, failed 0" in sent.stdout
    assert len(archive.index_rows("SELECT 1 FROM instances")) == 4


def test_commitment_failures_come_back_with_their_reason(archive: NodeProcess) -> None:
    stored = _location(sample_files()[0])
    contexts = sending.proposed_contexts([stored]) + [commit_scu.commitment_context(5)]
    peer = Peer("archive", "ARCHIVE", LOOPBACK, archive.port)
    with outgoing.open_association(peer, "SENDER", contexts) as assoc:
        assert assoc.send_stored(stored).status == 0
        result = commit_scu.request_commitment(assoc, [(stored.sop_class_uid, stored.sop_instance_uid),
                                                       (stored.sop_class_uid, "1.2.3.4.5.6.7.404")], timeout=30)
    assert result.committed == [(stored.sop_class_uid, stored.sop_instance_uid)]
    assert result.failed == [(stored.sop_class_uid, "1.2.3.4.5.6.7.404", 0x0112)]


class _PynetdicomSCP:
    """A pynetdicom Storage + Storage Commitment SCP that answers N-ACTION and never reports."""

    def __init__(self) -> None:
        self.port = free_port()
        self.ae = AE(ae_title="SILENT")
        self.ae.add_supported_context(StorageCommitmentPushModel)
        for uid in {_location(p).sop_class_uid for p in sample_files()[:2]}:
            self.ae.add_supported_context(uid, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
        handlers = [(evt.EVT_C_STORE, lambda event: 0x0000),
                    (evt.EVT_N_ACTION, lambda event: (0x0000, None))]
        self.server = self.ae.start_server((LOOPBACK, self.port), block=False, evt_handlers=handlers)

    def stop(self) -> None:
        self.server.shutdown()


def test_send_commit_gives_up_after_its_timeout_when_no_report_comes(
        node_process: Callable[..., NodeProcess]) -> None:
    scp = _PynetdicomSCP()
    try:
        sender = node_process(name="sender", aet="SENDER")
        sender.cli("peer", "add", "silent", "--aet", "SILENT", "--host", LOOPBACK, "--port", str(scp.port))
        started = time.monotonic()
        sent = sender.cli("send", "silent", *map(str, sample_files()[:2]), "--commit", "--commit-timeout", "2")
        elapsed = time.monotonic() - started
    finally:
        scp.stop()
    assert sent.returncode == 1, sent.explain()
    assert "sent 2" in sent.stdout and "storage commitment: no report" in sent.stdout
    assert "within 2 s" in sent.stdout
    assert elapsed < 20


def test_send_report_delivers_the_report_on_a_new_association_with_role_selection() -> None:
    received: list[dict[str, Any]] = []
    done = threading.Event()

    def on_report(event: Any) -> tuple[int, Dataset | None]:
        received.append({"event_type": event.event_type, "dataset": event.event_information,
                         "roles": [(cx.as_scu, cx.as_scp) for cx in event.assoc.accepted_contexts
                                   if cx.abstract_syntax == StorageCommitmentPushModel]})
        done.set()
        return 0x0000, None

    ae = AE(ae_title="REQUESTER")
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    port = free_port()
    server = ae.start_server((LOOPBACK, port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    try:
        status = commit_scu.send_report(Peer("requester", "REQUESTER", LOOPBACK, port), "PACSNODE", "1.2.3.99",
                                        [("1.2.840.10008.5.1.4.1.1.2", "1.2.3.1")],
                                        [("1.2.840.10008.5.1.4.1.1.2", "1.2.3.2", 0x0112)])
        assert done.wait(5)
    finally:
        server.shutdown()
    assert status == 0
    assert received[0]["event_type"] == commit_scu.EVENT_SOME_FAILED
    # role selection took: on the association we requested, the requester acts only as SCU
    assert received[0]["roles"] == [(True, False)]
    report = received[0]["dataset"]
    assert report.TransactionUID == "1.2.3.99"
    assert [(i.ReferencedSOPInstanceUID, i.FailureReason) for i in report.FailedSOPSequence] == [("1.2.3.2", 0x0112)]
    assert [i.ReferencedSOPInstanceUID for i in report.ReferencedSOPSequence] == ["1.2.3.1"]


def test_the_report_dataset_round_trips() -> None:
    ds = commit_scu.report_dataset("1.2.3", [("1.2", "1.2.3.1")], [("1.2", "1.2.3.2", 0x0110)])
    raw = sending.encode_dataset(ds, sending.IMPLICIT_VR_LITTLE_ENDIAN)
    back = commit_scu._decode(raw, sending.IMPLICIT_VR_LITTLE_ENDIAN)
    assert back.TransactionUID == "1.2.3"
    assert back.FailedSOPSequence[0].FailureReason == 0x0110


def test_send_commit_names_what_the_peer_did_not_commit_and_exits_non_zero(
        archive: NodeProcess, node_process: Callable[..., NodeProcess]) -> None:
    first, second = sample_files()[:2]
    held = archive.cli("import", str(first))  # already there, delivered by someone else: not ours to commit
    assert held.returncode == 0, held.explain()
    sender = node_process(name="sender", aet="SENDER")
    sender.cli("peer", "add", "archive", "--aet", "ARCHIVE", "--host", LOOPBACK, "--port", str(archive.port))
    sent = sender.cli("send", "archive", str(first), str(second), "--commit", "--commit-timeout", "30")
    uid = _location(first).sop_instance_uid
    assert sent.returncode == 1, sent.explain()
    assert "sent 2, warning 0, failed 0" in sent.stdout, sent.explain()  # the duplicate was answered Success
    assert "committed 1, failed 1" in sent.stdout, sent.explain()
    assert f"not committed: {uid} (0x0112 no such object instance)" in sent.stdout, sent.explain()


def _commit_as(port: int, calling_aet: str, source: str, refs: list[tuple[str, str]]) -> Dataset:
    """Ask for storage commitment with pynetdicom from ``source`` (a loopback address) claiming
    ``calling_aet``; the N-EVENT-REPORT's dataset, which comes on the same association."""
    reports: list[Dataset] = []
    done = threading.Event()

    def on_report(event: Any) -> tuple[int, Dataset | None]:
        reports.append(event.event_information)
        done.set()
        return 0x0000, None

    ae = AE(ae_title=calling_aet)
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate(LOOPBACK, port, ae_title="ARCHIVE", bind_address=(source, 0),
                         evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    assert assoc.is_established
    try:
        request = Dataset()
        request.TransactionUID = "1.2.826.0.1.3680043.10.1078.77.1"
        request.ReferencedSOPSequence = []
        for sop_class, sop_instance in refs:
            item = Dataset()
            item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_instance
            request.ReferencedSOPSequence.append(item)
        status, _reply = assoc.send_n_action(request, 1, StorageCommitmentPushModel, "1.2.840.10008.1.20.1.1")
        assert status.Status == 0x0000
        assert done.wait(30), "no N-EVENT-REPORT on the association"
    finally:
        assoc.release()
    return reports[0]


@pytest.mark.one_node("the cluster run's router connects from 127.0.0.1 whatever the client's address")
def test_an_ae_title_claimed_from_another_host_learns_nothing_from_commitment(archive: NodeProcess) -> None:
    """Identity is AE title + host: SENDER registered at 127.0.0.1, claimed from 127.0.0.2, is nobody.
    Commitment used to compare the claimed title with the row's calling AE and confirmed the real
    sender's instances to anybody who typed its name (an existence oracle for SOP Instance UIDs)."""
    stored = _location(sample_files()[0])
    peer = Peer("archive", "ARCHIVE", LOOPBACK, archive.port)
    with outgoing.open_association(peer, "SENDER", sending.proposed_contexts([stored])) as assoc:
        assert assoc.send_stored(stored).status == 0
    ref = (stored.sop_class_uid, stored.sop_instance_uid)
    genuine = _commit_as(archive.port, "SENDER", LOOPBACK, [ref])
    assert [i.ReferencedSOPInstanceUID for i in genuine.ReferencedSOPSequence] == [stored.sop_instance_uid]
    forged = _commit_as(archive.port, "SENDER", "127.0.0.2", [ref, ref])
    assert "ReferencedSOPSequence" not in forged
    assert [(i.ReferencedSOPInstanceUID, i.FailureReason) for i in forged.FailedSOPSequence] == [
        (stored.sop_instance_uid, 0x0112)] * 2
    audited = archive.cli("audit", "--json")
    refused = [e for e in json.loads(audited.stdout) if e["action"] == "commitment" and e["outcome"] == "refused"]
    assert refused and "not a registered peer" in refused[-1]["detail"]


def test_a_commitment_request_with_a_uid_that_is_not_one_is_refused_unread_and_audited(archive: NodeProcess) -> None:
    """Anybody may open an association: a 60 000-character "UID" (or a path) must not reach the
    index, the report or the audit trail (it went into the audit row's failed list as sent)."""
    ae = AE(ae_title="STRANGER")
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate(LOOPBACK, archive.port, ae_title="ARCHIVE")
    assert assoc.is_established
    huge = "1." + "2" * 60_000
    try:
        for transaction, uid in (("1.2.3.4", huge), ("1.2.3.5", "../../etc/passwd"), (huge, "1.2.3.6")):
            request = Dataset()
            request.TransactionUID = transaction
            item = Dataset()
            item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", uid
            request.ReferencedSOPSequence = [item]
            status, _reply = assoc.send_n_action(request, 1, StorageCommitmentPushModel, "1.2.840.10008.1.20.1.1")
            assert status.Status == 0x0115, uid[:20]  # invalid argument value
    finally:
        assoc.release()
    rows = archive.index_rows("SELECT outcome, length(detail) FROM audit WHERE action = 'commitment'")
    assert [outcome for outcome, _length in rows] == ["refused"] * 3
    assert max(length for _outcome, length in rows) < 1000
