"""Storage Commitment Push Model, SCP (PS3.4 J): N-ACTION answered at once, N-EVENT-REPORT after.

The requester sends N-ACTION-RQ (Action Type 1, Request Storage Commitment) with a
Transaction UID and the Referenced SOP Sequence. We answer N-ACTION-RSP Success as soon
as the request is readable, then ask ``Node.commitment`` which instances are safely here
(indexed, delivered by this caller, file matching its recorded digest) and send the
N-EVENT-REPORT-RQ (Event Type 1 all committed, 2 some failed, with the Failed SOP Sequence
and reasons 0x0110/0x0112) on the same association, awaiting its N-EVENT-REPORT-RSP.

A request we cannot read gets a failure status on the N-ACTION-RSP and no report. When the
requester releases before answering the report, it is sent again on a new association to
the requester's registered address (``outgoing``, its TLS setting, our SCP role proposed by
role selection), from a thread of its own so that the release is answered at once; a
requester that is not a registered peer cannot be called back (logged and audited).
"""

from __future__ import annotations

import logging
import threading

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from pacsnode.dicom.extract import is_valid_uid
from pacsnode.dimse import lean_find, outgoing, pdu, policy, statuses
from pacsnode.dimse.session import BufferSink, Request, Session, Sink
from pacsnode.errors import PacsnodeError
from pacsnode.model import Caller
from pacsnode.node import Node

LOGGER = logging.getLogger(__name__)

MAX_REQUEST = 16 << 20  # a commitment request for ~100k instances; more is refused
MAX_REFERENCES = 100_000
ACTION_REQUEST_COMMITMENT = 1
EVENT_ALL_COMMITTED = 1
EVENT_SOME_FAILED = 2
NO_SUCH_ACTION_TYPE = 0x0123
INVALID_ARGUMENT = 0x0115  # PS3.7 C.4.2: invalid argument value
MISSING_ATTRIBUTE = 0x0120


def _uid(value: object, name: str) -> str:
    """A UID of the request, or ValueError: what is not digits and dots (at most 64) is refused
    before it reaches the index, the audit trail or the report (a 16 MB "UID" from anybody)."""
    text = str(value or "").strip().rstrip("\x00")
    if not is_valid_uid(text):
        raise ValueError(f"{name} {text[:64]!r}{'…' if len(text) > 64 else ''} is not a UID "
                         "(digits and dots, at most 64 characters)")
    return text


def _references(dataset: Dataset) -> list[tuple[str, str]]:
    refs = []
    for item in dataset.get("ReferencedSOPSequence", []) or []:
        sop_class = str(item.get("ReferencedSOPClassUID", "") or "").strip()
        sop_instance = str(item.get("ReferencedSOPInstanceUID", "") or "").strip()
        if not sop_class or not sop_instance:
            raise ValueError("a Referenced SOP Sequence item lacks its SOP class or instance UID")
        refs.append((_uid(sop_class, "Referenced SOP Class UID"), _uid(sop_instance, "Referenced SOP Instance UID")))
    return refs


def request_commitment(session: Session, request: Request) -> Sink:
    """N-ACTION-RQ on the Storage Commitment Push Model context."""
    def answer(data: bytes | None) -> None:
        session.stats["commitments"] += 1
        elements: dict[int, int | str] = {pdu.AFFECTED_SOP_INSTANCE_UID: policy.STORAGE_COMMITMENT_INSTANCE}
        action = request.command.us(pdu.ACTION_TYPE_ID, 0)
        elements[pdu.ACTION_TYPE_ID] = action or 0
        if action != ACTION_REQUEST_COMMITMENT:
            session.respond(request, pdu.N_ACTION_RSP, NO_SUCH_ACTION_TYPE, f"action type {action}", elements)
            return
        try:
            if data is None:
                raise ValueError(f"request longer than {MAX_REQUEST} bytes")
            dataset = lean_find.DatasetCodec.of(request.transfer_syntax).decode(data)
            transaction = str(dataset.get("TransactionUID", "") or "").strip()
            if not transaction:
                raise ValueError("no Transaction UID")
            transaction = _uid(transaction, "Transaction UID")
            refs = _references(dataset)
            if not refs or len(refs) > MAX_REFERENCES:
                raise ValueError(f"{len(refs)} referenced instances (1 to {MAX_REFERENCES} allowed)")
        except Exception as exc:  # pydicom raises many kinds on malformed bytes; edge -> a status
            LOGGER.warning("storage commitment request refused: %s", exc)
            session.node.events.commitment_refused(session.caller(), str(exc))
            session.respond(request, pdu.N_ACTION_RSP, INVALID_ARGUMENT, str(exc), elements)
            return
        session.respond(request, pdu.N_ACTION_RSP, statuses.SUCCESS, "", elements)
        results = session.node.commitment(refs, session.caller())
        _report(session, request, transaction, results)

    if not request.has_dataset:
        return BufferSink(0, answer)  # finish() at once: answered as too large / missing
    return BufferSink(MAX_REQUEST, answer)


def report_dataset(transaction: str, results: list[tuple[str, str, int]]) -> Dataset:
    """The N-EVENT-REPORT dataset: Transaction UID, Referenced SOP and Failed SOP sequences."""
    dataset = Dataset()
    dataset.TransactionUID = transaction
    committed, failed = Sequence(), Sequence()
    for sop_class, sop_instance, reason in results:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        if reason:
            item.FailureReason = reason
            failed.append(item)
        else:
            committed.append(item)
    if committed:
        dataset.ReferencedSOPSequence = committed
    if failed:
        dataset.FailedSOPSequence = failed
    return dataset


def _event_command(message_id: int, failed: bool) -> bytes:
    return pdu.encode_command({
        pdu.AFFECTED_SOP_CLASS_UID: policy.STORAGE_COMMITMENT_PUSH, pdu.COMMAND_FIELD: pdu.N_EVENT_REPORT_RQ,
        pdu.MESSAGE_ID: message_id, pdu.COMMAND_DATASET_TYPE: pdu.DATASET_PRESENT,
        pdu.AFFECTED_SOP_INSTANCE_UID: policy.STORAGE_COMMITMENT_INSTANCE,
        pdu.EVENT_TYPE_ID: EVENT_SOME_FAILED if failed else EVENT_ALL_COMMITTED,
    })


def _report(session: Session, request: Request, transaction: str, results: list[tuple[str, str, int]]) -> None:
    """Send the N-EVENT-REPORT-RQ on this association and wait for its response (else a new association)."""
    failed = any(reason for _c, _i, reason in results)
    message_id = session.next_message_id()
    report = report_dataset(transaction, results)
    dataset = lean_find.DatasetCodec.of(request.transfer_syntax).encode(report)
    session.send(pdu.encode_message(request.context_id, _event_command(message_id, failed), dataset,
                                    session.peer_max_pdu))
    response = session.await_response(message_id, pdu.N_EVENT_REPORT_RSP)
    if response is not None:
        LOGGER.info("%s: storage commitment %s reported (%d instance(s), status 0x%04x)", session.label(),
                    transaction, len(results), response.us(pdu.STATUS, 0) or 0)
        return
    LOGGER.info("%s: no N-EVENT-REPORT-RSP for transaction %s; reporting on a new association", session.label(),
                transaction)
    threading.Thread(target=report_on_new_association, args=(session.node, session.caller(), report, failed),
                     name="pacsnode-commitment-report", daemon=True).start()


def report_on_new_association(node: Node, caller: Caller, report: Dataset, failed: bool) -> bool:
    """Deliver a commitment report to the requester's registered address; True once answered."""
    peer = caller.peer
    transaction = str(report.TransactionUID)
    if peer is None:
        LOGGER.warning("storage commitment %s: %s is not a registered peer, the report cannot be delivered",
                       transaction, caller.aet)
        node.events.commitment_report(caller, None, transaction, False, why="requester is not a registered peer")
        return False
    contexts = [pdu.PresentationContextRQ(1, policy.STORAGE_COMMITMENT_PUSH,
                                          (policy.EXPLICIT_LITTLE, policy.IMPLICIT_LITTLE))]
    roles = (pdu.RoleSelection(policy.STORAGE_COMMITMENT_PUSH, False, True),)  # we are the SCP, sending the report
    try:
        association = outgoing.open_association(peer, node.config.aet, contexts, node.config, roles=roles,
                                                timeout=node.config.network.dimse_timeout)
    except (PacsnodeError, OSError) as exc:
        LOGGER.warning("storage commitment %s: cannot reach %s: %s", transaction, peer.aet, exc)
        node.events.commitment_report(caller, peer, transaction, False, why=str(exc))
        return False
    try:
        context_id, (_abstract, syntax) = next(iter(sorted(association.accepted.items())))
        message_id = association.next_message_id()
        association.send_message(context_id, _event_command(message_id, failed),
                                 lean_find.DatasetCodec.of(syntax).encode(report))
        answer = association.receive_message()
        delivered = answer.command.us(pdu.COMMAND_FIELD) == pdu.N_EVENT_REPORT_RSP
    except (PacsnodeError, OSError, pdu.PDUError) as exc:
        LOGGER.warning("storage commitment %s: report to %s failed: %s", transaction, peer.aet, exc)
        delivered = False
    finally:
        association.release()
    node.events.commitment_report(caller, peer, transaction, delivered)
    return delivered
