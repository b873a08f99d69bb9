"""Storage Commitment Push Model messages on our own associations (PS3.4 J, PS3.7 10.1.4/10.1.1).

Two uses:

* the requester (``pacsnode send PEER ... --commit``): after the C-STOREs, N-ACTION-RQ
  (Request Storage Commitment) on the same association, then wait, with a deadline, for the
  peer's N-EVENT-REPORT-RQ and answer it;
* the SCP's report on a *new* association, when the requester released the one it asked
  on: :func:`send_report` opens it with SCP/SCU role selection (we are the Storage
  Commitment SCP, so we propose SCU role off and SCP role on, PS3.4 J.3.3) and sends the
  N-EVENT-REPORT-RQ.

Both datasets are small; they are built and read with pydicom.
"""

from __future__ import annotations

import time
from typing import BinaryIO, cast
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.uid import generate_uid

from pacsnode.config import NodeConfig
from pacsnode.dimse import outgoing, pdu, sending
from pacsnode.dimse.policy import STORAGE_COMMITMENT_INSTANCE, STORAGE_COMMITMENT_PUSH
from pacsnode.errors import PeerError
from pacsnode.model import Peer

ACTION_REQUEST_COMMITMENT = 1
EVENT_ALL_COMMITTED = 1
EVENT_SOME_FAILED = 2
FAILURE_REASONS = {  # PS3.4 J.3.2.1.2 (Failure Reason 0008,1197)
    0x0110: "processing failure", 0x0112: "no such object instance", 0x0119: "class/instance conflict",
    0x0122: "referenced SOP class not supported", 0x0131: "duplicate transaction UID",
    0x0213: "resource limitation",
}


class CommitmentTimeout(PeerError):
    """The peer accepted the request but sent no report on this association in time."""


@dataclass
class CommitmentResult:
    """What the peer reported for one transaction."""

    transaction_uid: str
    committed: list[tuple[str, str]] = field(default_factory=list)  # (SOP class, SOP instance)
    failed: list[tuple[str, str, int]] = field(default_factory=list)  # (class, instance, reason)


def commitment_context(context_id: int = 1) -> pdu.PresentationContextRQ:
    return pdu.PresentationContextRQ(context_id, STORAGE_COMMITMENT_PUSH,
                                     (sending.EXPLICIT_VR_LITTLE_ENDIAN, sending.IMPLICIT_VR_LITTLE_ENDIAN))


def _decode(data: bytes, syntax: str) -> Dataset:
    try:
        return read_dataset(cast(BinaryIO, DicomBytesIO(data)), syntax == sending.IMPLICIT_VR_LITTLE_ENDIAN, True)
    except Exception as exc:  # pydicom raises many kinds on malformed bytes
        raise PeerError(f"unreadable storage commitment dataset: {exc}") from None


def _refs(sequence: object, with_reason: bool = False) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for item in sequence or []:  # type: ignore[attr-defined]
        ref = (str(item.get("ReferencedSOPClassUID", "") or ""), str(item.get("ReferencedSOPInstanceUID", "") or ""))
        reason = int(item.get("FailureReason", 0x0110) or 0x0110)
        out.append((*ref, reason) if with_reason else ref)  # type: ignore[arg-type]
    return out


def report_dataset(transaction_uid: str, committed: list[tuple[str, str]],
                   failed: list[tuple[str, str, int]]) -> Dataset:
    """The N-EVENT-REPORT-RQ dataset: Transaction UID, Referenced and Failed SOP Sequences."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    if committed:
        ds.ReferencedSOPSequence = [_item(cls, uid) for cls, uid in committed]
    if failed:
        ds.FailedSOPSequence = [_item(cls, uid, reason) for cls, uid, reason in failed]
    return ds


def _item(sop_class: str, sop_instance: str, reason: int | None = None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    if reason is not None:
        item.FailureReason = reason
    return item


# -- requester side --------------------------------------------------------------------------
def request_commitment(assoc: outgoing.Association, references: list[tuple[str, str]], timeout: float,
                       transaction_uid: str | None = None) -> CommitmentResult:
    """N-ACTION-RQ for ``references`` (SOP class, SOP instance), then the peer's report.

    Raises PeerError when the peer did not accept Storage Commitment or refused the request,
    :class:`CommitmentTimeout` when no report came within ``timeout`` seconds, and
    ``outgoing.AssociationAborted`` when the peer released or aborted before reporting (it
    may then report on a new association, which only a running node can receive).
    """
    chosen = assoc.context_for(STORAGE_COMMITMENT_PUSH)
    if chosen is None:
        raise PeerError(f"{assoc.peer.aet} did not accept Storage Commitment Push Model")
    context_id, syntax = chosen
    transaction_uid = transaction_uid or generate_uid()
    request = Dataset()
    request.TransactionUID = transaction_uid
    request.ReferencedSOPSequence = [_item(cls, uid) for cls, uid in references]
    message_id = assoc.next_message_id()
    assoc.send_message(context_id, pdu.encode_command({
        pdu.REQUESTED_SOP_CLASS_UID: STORAGE_COMMITMENT_PUSH, pdu.COMMAND_FIELD: pdu.N_ACTION_RQ,
        pdu.MESSAGE_ID: message_id, pdu.COMMAND_DATASET_TYPE: pdu.DATASET_PRESENT,
        pdu.REQUESTED_SOP_INSTANCE_UID: STORAGE_COMMITMENT_INSTANCE, pdu.ACTION_TYPE_ID: ACTION_REQUEST_COMMITMENT,
    }), sending.encode_dataset(request, syntax, "storage commitment request"))
    deadline = time.monotonic() + timeout
    answered = False
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CommitmentTimeout(f"{assoc.peer.aet} sent no storage commitment report within {timeout:g} s "
                                    f"(transaction {transaction_uid})")
        try:
            message = assoc.receive_message(timeout=remaining)
        except outgoing.PeerTimeout:
            raise CommitmentTimeout(f"{assoc.peer.aet} sent no storage commitment report within {timeout:g} s "
                                    f"(transaction {transaction_uid})") from None
        field_ = message.command.us(pdu.COMMAND_FIELD)
        if field_ == pdu.N_ACTION_RSP and not answered:
            status = message.command.us(pdu.STATUS, 0xFFFF) or 0
            if status != 0:
                comment = message.command.text(pdu.ERROR_COMMENT)
                raise PeerError(f"{assoc.peer.aet} refused storage commitment with 0x{status:04X}"
                                + (f": {comment}" if comment else ""))
            answered = True
        elif field_ == pdu.N_EVENT_REPORT_RQ and message.dataset is not None:
            result = _read_report(assoc, message, syntax)
            if result.transaction_uid == transaction_uid:
                return result
        else:
            raise PeerError(f"{assoc.peer.aet} sent command 0x{field_ or 0:04X} during storage commitment")


def _read_report(assoc: outgoing.Association, message: outgoing.Message, syntax: str) -> CommitmentResult:
    """Decode an N-EVENT-REPORT-RQ and answer it with N-EVENT-REPORT-RSP Success."""
    report = _decode(message.dataset or b"", assoc.accepted.get(message.context_id, ("", syntax))[1])
    event = message.command.us(pdu.EVENT_TYPE_ID, 0) or 0
    assoc.send_message(message.context_id, pdu.encode_command({
        pdu.AFFECTED_SOP_CLASS_UID: STORAGE_COMMITMENT_PUSH, pdu.COMMAND_FIELD: pdu.N_EVENT_REPORT_RSP,
        pdu.MESSAGE_ID_BEING_RESPONDED_TO: message.command.us(pdu.MESSAGE_ID, 0) or 0,
        pdu.COMMAND_DATASET_TYPE: pdu.NO_DATASET, pdu.STATUS: 0,
        pdu.AFFECTED_SOP_INSTANCE_UID: STORAGE_COMMITMENT_INSTANCE, pdu.EVENT_TYPE_ID: event,
    }))
    return CommitmentResult(str(report.get("TransactionUID", "") or ""),
                            [tuple(r) for r in _refs(report.get("ReferencedSOPSequence"))],  # type: ignore[misc]
                            [tuple(r) for r in _refs(report.get("FailedSOPSequence"), True)])  # type: ignore[misc]


# -- SCP side: the report on a new association -------------------------------------------------
def send_report(peer: Peer, calling_aet: str, transaction_uid: str, committed: list[tuple[str, str]],
                failed: list[tuple[str, str, int]], config: NodeConfig | None = None,
                timeout: float = outgoing.DEFAULT_TIMEOUT) -> int:
    """Open an association to the requester (TLS per its registration), send the N-EVENT-REPORT-RQ
    with SCP/SCU role selection for Storage Commitment, return the N-EVENT-REPORT-RSP status.

    PeerError when the requester cannot be reached, refuses, or does not take the SCU role.
    """
    role = pdu.RoleSelection(STORAGE_COMMITMENT_PUSH, scu_role=False, scp_role=True)
    with outgoing.open_association(peer, calling_aet, [commitment_context()], config, roles=(role,),
                                   timeout=timeout) as assoc:
        offered = [r for r in assoc.roles if r.sop_class_uid == STORAGE_COMMITMENT_PUSH]
        if offered and not offered[0].scp_role:  # absent = the default roles, which some SCUs answer
            raise PeerError(f"{peer.aet} refused to receive storage commitment reports (role selection)")
        context_id, syntax = assoc.context_for(STORAGE_COMMITMENT_PUSH) or (0, "")
        message_id = assoc.next_message_id()
        event = EVENT_SOME_FAILED if failed else EVENT_ALL_COMMITTED
        assoc.send_message(context_id, pdu.encode_command({
            pdu.AFFECTED_SOP_CLASS_UID: STORAGE_COMMITMENT_PUSH, pdu.COMMAND_FIELD: pdu.N_EVENT_REPORT_RQ,
            pdu.MESSAGE_ID: message_id, pdu.COMMAND_DATASET_TYPE: pdu.DATASET_PRESENT,
            pdu.AFFECTED_SOP_INSTANCE_UID: STORAGE_COMMITMENT_INSTANCE, pdu.EVENT_TYPE_ID: event,
        }), sending.encode_dataset(report_dataset(transaction_uid, committed, failed), syntax, "commitment report"))
        reply = assoc.receive_message()
        if reply.command.us(pdu.COMMAND_FIELD) != pdu.N_EVENT_REPORT_RSP:
            field_ = reply.command.us(pdu.COMMAND_FIELD) or 0
            raise PeerError(f"{peer.aet} answered the report with command 0x{field_:04X}")
        return reply.command.us(pdu.STATUS, 0xFFFF) or 0
