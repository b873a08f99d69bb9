"""The registry of DIMSE services: command field -> ``service(session, request) -> Sink | None``.

Each service is engine-neutral: it reads the request, asks ``Node`` (which decides access
and audits), and answers through the session (``session.Session``). None of them touches
a socket. C-STORE streams its dataset to disk (``receive``); C-FIND, C-MOVE, C-GET and
N-ACTION keep their small dataset in memory (``BufferSink``) and answer when it is complete.
"""

from __future__ import annotations

import logging
from typing import Callable

from pacsnode.dimse import commitment, lean_find, pdu, policy, receive, retrieve, statuses
from pacsnode.dimse.session import BufferSink, Request, Service, Session, Sink
from pacsnode.errors import PacsnodeError

LOGGER = logging.getLogger(__name__)


class _Discard:
    """The sink of a dataset nobody wants (its request was already answered)."""

    def write(self, fragment: memoryview) -> None:
        pass

    def finish(self) -> None:
        pass

    def discard(self) -> None:
        pass


def discard_sink() -> Sink:
    return _Discard()


def echo(session: Session, request: Request) -> Sink | None:
    """C-ECHO: anyone may echo unless a registered peer lacks the permission."""
    status, comment = statuses.SUCCESS, ""
    try:
        session.node.require_permission(session.caller(), "echo")
    except PacsnodeError as exc:
        status, comment = statuses.REFUSED_NOT_AUTHORIZED, str(exc)
    sop_class = request.command.text(pdu.AFFECTED_SOP_CLASS_UID) or policy.VERIFICATION
    session.respond(request, pdu.C_ECHO_RSP, status, comment, {pdu.AFFECTED_SOP_CLASS_UID: sop_class})
    return None


def find(session: Session, request: Request) -> Sink | None:
    """C-FIND (Patient/Study Root): the identifier is buffered, then ``lean_find`` answers it."""
    if request.abstract_syntax not in policy.FIND_SOP_CLASSES:
        raise pdu.PDUError(f"C-FIND-RQ on presentation context {request.context_id} ({request.abstract_syntax})")

    def answer(identifier: bytes | None) -> None:
        session.stats["finds"] += 1
        find_request = lean_find.FindRequest(request.context_id, request.message_id, request.sop_class)
        if identifier is None:
            find_request.too_large = True
        else:
            find_request.identifier += identifier
        finder = lean_find.FindService(session.node, session.send, session.cancelled, session.peer_max_pdu)
        finder.answer(find_request, session.caller(), request.transfer_syntax,
                      request.sop_class in session.combined_datetime)

    return BufferSink(lean_find.MAX_IDENTIFIER, answer)


def _context_check(allowed: frozenset[str], name: str) -> Callable[[Service], Service]:
    """Wrap a service so that it only runs on presentation contexts of its SOP classes."""
    def decorate(service: Service) -> Service:
        def checked(session: Session, request: Request) -> Sink | None:
            if request.abstract_syntax not in allowed:
                raise pdu.PDUError(f"{name} on presentation context {request.context_id} ({request.abstract_syntax})")
            return service(session, request)
        checked.__doc__ = service.__doc__
        return checked
    return decorate


COMMITMENT = frozenset({policy.STORAGE_COMMITMENT_PUSH})
SERVICES: dict[int, Service] = {
    pdu.C_ECHO_RQ: echo,
    pdu.C_STORE_RQ: receive.store,
    pdu.C_FIND_RQ: find,
    pdu.C_MOVE_RQ: _context_check(policy.MOVE_SOP_CLASSES, "C-MOVE-RQ")(retrieve.move),
    pdu.C_GET_RQ: _context_check(policy.GET_SOP_CLASSES, "C-GET-RQ")(retrieve.get),
    pdu.N_ACTION_RQ: _context_check(COMMITMENT, "N-ACTION-RQ")(commitment.request_commitment),
}
