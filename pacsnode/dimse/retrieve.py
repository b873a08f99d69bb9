"""C-MOVE and C-GET SCP: sub-operations that stream stored files as they are on disk.

Both decode the identifier, ask ``Node.retrieve`` (access for the caller, and for a move
the destination too), then run one C-STORE sub-operation per instance:

* C-GET on this very association, on a storage context for which the requester took the
  SCP role (role selection), each C-STORE-RSP awaited before the next;
* C-MOVE on one outgoing association to the destination (``outgoing``), honouring its TLS
  setting and failing closed.

Each instance goes out as the bytes on disk when the accepted syntax is the stored one,
else transcoded with pydicom, else counted as a failed sub-operation (``sending``): never
a hang. A Pending response with the counts follows the first sub-operation, then at most
one every ``PENDING_EVERY`` seconds; a C-CANCEL-RQ ends the run with 0xFE00; the final
response carries the exact counts and the Failed SOP Instance UID List.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from pydicom.dataset import Dataset

from pacsnode.dicom.query import parse_identifier
from pacsnode.dimse import lean_find, outgoing, pdu, sending, statuses
from pacsnode.dimse.lookahead import Lookahead, StagedStore
from pacsnode.dimse.session import BufferSink, Request, Session, Sink
from pacsnode.errors import PacsnodeError
from pacsnode.model import InformationModel, InstanceLocation, Peer

LOGGER = logging.getLogger(__name__)

SendOne = Callable[[InstanceLocation], str]  # 'success' | 'warning' | 'failure'
PENDING_EVERY = 0.25  # seconds between two Pending responses of one retrieve (after the first)


def model_of(sop_class_uid: str) -> InformationModel:
    """Patient Root SOP classes are ...1.2.1.x; everything else we accept is Study Root."""
    return InformationModel.PATIENT_ROOT if ".5.1.4.1.2.1." in sop_class_uid else InformationModel.STUDY_ROOT


@dataclass
class Counts:
    """Sub-operation counts and the instances that failed (PS3.4 C.4.2.1.4/C.4.3.1.3)."""

    total: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return self.total - self.completed - self.failed - self.warning

    def elements(self, with_remaining: bool) -> dict[int, int | str]:
        counts: dict[int, int | str] = {pdu.NUMBER_OF_COMPLETED: self.completed, pdu.NUMBER_OF_FAILED: self.failed,
                                        pdu.NUMBER_OF_WARNING: self.warning}
        if with_remaining:
            counts[pdu.NUMBER_OF_REMAINING] = self.remaining
        return counts

    def final_status(self) -> int:
        if self.failed == 0 and self.warning == 0:
            return statuses.SUCCESS
        if self.completed == 0 and self.warning == 0:
            return statuses.QR_FAILED_SUBOPS_ALL
        return statuses.WARNING_SUBOPS


def _retrieve(session: Session, request: Request, identifier: bytes | None, action: str,
              destination: Peer | None) -> list[InstanceLocation]:
    """Decode the identifier and ask the node; PacsnodeError/_Failure become the final status."""
    if identifier is None:
        raise _Failure(statuses.QR_UNABLE_TO_PROCESS, f"identifier longer than {lean_find.MAX_IDENTIFIER} bytes")
    try:
        dataset = lean_find.DatasetCodec.of(request.transfer_syntax).decode(identifier)
        for _element in dataset.iterall():  # malformed values raise here, not mid-run
            pass
    except Exception as exc:  # pydicom raises many kinds on malformed bytes
        raise _Failure(statuses.QR_UNABLE_TO_PROCESS, f"cannot decode the identifier: {exc}") from exc
    query = parse_identifier(dataset, model_of(request.sop_class), retrieve=True)
    node = session.node
    return node.retrieve(query, session.caller(), action, destination=destination)


class _Failure(Exception):
    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status, self.comment = status, comment


def _final(session: Session, request: Request, field_: int, status: int, counts: Counts, comment: str = "",
           with_remaining: bool = False) -> None:
    dataset = None
    if counts.failed_uids:
        failed = Dataset()
        failed.FailedSOPInstanceUIDList = counts.failed_uids
        dataset = lean_find.DatasetCodec.of(request.transfer_syntax).encode(failed)
    session.respond(request, field_, status, comment, counts.elements(with_remaining), dataset)


def _run(session: Session, request: Request, field_: int, locations: list[InstanceLocation],
         send_one: SendOne) -> None:
    """The sub-operations, cancel between them, then the final response.

    Pending responses are optional (PS3.4 C.4.2.3.1, C.4.3.3.1): one after the first
    sub-operation, so that the caller knows the run started (and may cancel), then at most one
    per ``PENDING_EVERY`` seconds, none when no sub-operation remains (the final response
    follows at once). One per sub-operation made the caller print and the node encode a
    response per instance, on the cores the transfer itself needs.
    """
    counts = Counts(len(locations))
    last_pending: float | None = None
    for location in locations:
        if session.cancelled(request.message_id):
            LOGGER.info("%s cancelled by the peer after %d sub-operation(s)", session.label(),
                        counts.completed + counts.failed + counts.warning)
            _final(session, request, field_, statuses.CANCEL, counts, with_remaining=True)
            return
        outcome = send_one(location)
        if outcome == "success":
            counts.completed += 1
        elif outcome == "warning":
            counts.warning += 1
        else:
            counts.failed += 1
            counts.failed_uids.append(location.sop_instance_uid)
        now = time.monotonic()
        if counts.remaining and (last_pending is None or now - last_pending >= PENDING_EVERY):
            session.respond(request, field_, statuses.PENDING, "", counts.elements(True))
            last_pending = now
    _final(session, request, field_, counts.final_status(), counts)


def get(session: Session, request: Request) -> Sink:
    """C-GET-RQ: the identifier is buffered, then the instances come back on this association."""
    def answer(identifier: bytes | None) -> None:
        session.stats["retrieves"] += 1
        try:
            locations = _retrieve(session, request, identifier, "get", None)
        except (PacsnodeError, _Failure) as exc:
            status = exc.status if isinstance(exc, _Failure) else statuses.query_status(exc)
            _final(session, request, pdu.C_GET_RSP, status, Counts(0), str(exc))
            return
        sendable = {cid: ctx for cid, ctx in session.contexts.items() if ctx[0] in session.scp_roles}
        ahead = Lookahead(locations, lambda location, buffer: _stage_here(session, sendable, location, buffer))
        try:
            _run(session, request, pdu.C_GET_RSP, locations,
                 lambda location: _store_here(session, request, location, ahead))
        finally:
            ahead.close()

    return BufferSink(lean_find.MAX_IDENTIFIER, answer)


def _stage_here(session: Session, sendable: dict[int, tuple[str, str]], location: InstanceLocation,
                buffer: bytearray) -> StagedStore:
    """A C-GET sub-operation's C-STORE-RQ on a context for which the requester took the SCP role."""
    chosen = sending.choose_context(location.sop_class_uid, location.transfer_syntax, sendable)
    if chosen is None:
        raise sending.NoAcceptedContext(f"no context with the SCP role for {location.sop_class_uid}")
    context_id, syntax = chosen
    message_id = session.next_message_id()
    prepared = sending.prepare_store(location, context_id, syntax, message_id, session.peer_max_pdu)
    return StagedStore(prepared, buffer, message_id, location)


def _store_here(session: Session, request: Request, location: InstanceLocation, ahead: Lookahead) -> str:
    """One C-GET sub-operation: C-STORE-RQ on this association, the next one staged, then its C-STORE-RSP."""
    try:
        staged = ahead.take(location)
    except sending.CannotSend as exc:
        LOGGER.warning("C-GET sub-operation for %s failed: %s", location.sop_instance_uid, exc)
        return "failure"
    with staged:
        try:
            for batch in staged.batches():
                session.send(batch)
        except sending.CannotSend as exc:  # part of the dataset is on the wire: the association cannot go on
            raise pdu.PDUError(f"C-GET sub-operation broke off: {exc}") from exc
    ahead.prefetch()
    response = session.await_response(staged.message_id, pdu.C_STORE_RSP, cancel_of=request.message_id)
    if response is None:
        return "failure"
    return sending.store_outcome(response.us(pdu.STATUS, 0xFFFF) or 0)


def move(session: Session, request: Request) -> Sink:
    """C-MOVE-RQ: the identifier is buffered, then one outgoing association sends the instances."""
    def answer(identifier: bytes | None) -> None:
        session.stats["retrieves"] += 1
        node, caller = session.node, session.caller()
        try:
            destination = node.move_destination(request.command.text(pdu.MOVE_DESTINATION), caller)  # audited
        except PacsnodeError as exc:
            LOGGER.warning("C-MOVE refused: %s", exc)
            _final(session, request, pdu.C_MOVE_RSP, statuses.query_status(exc), Counts(0), str(exc))
            return
        try:
            locations = _retrieve(session, request, identifier, "move", destination)
        except (PacsnodeError, _Failure) as exc:
            status = exc.status if isinstance(exc, _Failure) else statuses.query_status(exc)
            _final(session, request, pdu.C_MOVE_RSP, status, Counts(0), str(exc))
            return
        if not locations:
            _final(session, request, pdu.C_MOVE_RSP, statuses.SUCCESS, Counts(0))
            return
        _move_to(session, request, destination, locations)

    return BufferSink(lean_find.MAX_IDENTIFIER, answer)


def _move_to(session: Session, request: Request, destination: Peer, locations: list[InstanceLocation]) -> None:
    """Open the association to the destination, run the sub-operations on it, release it."""
    node = session.node
    originator = (session.rq.calling_ae.strip(), request.message_id)
    try:
        association = outgoing.open_for_sending(destination, node.config.aet, locations, node.config,
                                                timeout=node.config.network.dimse_timeout)
    except (PacsnodeError, OSError) as exc:
        LOGGER.warning("C-MOVE to %s: cannot open the association: %s", destination.aet, exc)
        counts = Counts(len(locations), failed=len(locations),
                        failed_uids=[loc.sop_instance_uid for loc in locations])
        _final(session, request, pdu.C_MOVE_RSP, statuses.QR_FAILED_SUBOPS_ALL, counts,
               f"cannot reach {destination.aet}: {exc}")
        return

    ahead = Lookahead(locations, lambda location, buffer: association.stage(location, buffer, originator))

    def send_one(location: InstanceLocation) -> str:
        try:
            staged = ahead.take(location)
            return sending.store_outcome(association.send_staged(staged, ahead.prefetch).status)
        except sending.CannotSend as exc:  # this instance only: the association goes on
            LOGGER.warning("C-MOVE sub-operation for %s failed: %s", location.sop_instance_uid, exc)
        except PacsnodeError as exc:  # the association is lost: every remaining sub-operation fails
            LOGGER.warning("C-MOVE to %s: %s", destination.aet, exc)
        return "failure"

    try:
        _run(session, request, pdu.C_MOVE_RSP, locations, send_one)
    finally:
        ahead.close()
        association.release()
