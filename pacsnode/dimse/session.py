"""What a service sees of an association: the request, a sink for its dataset, a session.

Services (``dimse.services``) are functions ``service(session, request) -> Sink | None``
registered by DIMSE command field. They know nothing about sockets or PDUs: the session
(``dimse.association.Association``) reads the wire, assembles commands, feeds dataset
fragments to the sink the service returned, and offers the few operations a service needs
(respond, send a request and wait for its response, poll for a cancel).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Protocol

from pacsnode.dimse import pdu
from pacsnode.model import Caller
from pacsnode.node import Node


@dataclass(frozen=True)
class Request:
    """One DIMSE request as received: its context, command set and whether a dataset follows."""

    context_id: int
    message_id: int
    command: pdu.Command
    abstract_syntax: str  # of the presentation context it arrived on
    transfer_syntax: str  # accepted on that context
    has_dataset: bool

    @property
    def sop_class(self) -> str:
        return self.command.text(pdu.AFFECTED_SOP_CLASS_UID) or self.abstract_syntax


class Sink(Protocol):
    """Receives the dataset of one request, fragment by fragment."""

    def write(self, fragment: memoryview) -> None: ...

    def finish(self) -> None:
        """The last fragment arrived (or there was no dataset): do the work, answer."""

    def discard(self) -> None:
        """The association ended before the dataset was complete: leave nothing behind."""


class Session(Protocol):
    """The association as services use it (implemented by ``association.Association``)."""

    node: Node
    address: tuple[str, int]
    rq: pdu.AssociateRQ
    peer_max_pdu: int
    contexts: dict[int, tuple[str, str]]  # accepted context id -> (abstract syntax, transfer syntax)
    combined_datetime: frozenset[str]  # FIND SOP classes with combined date-time matching agreed
    scp_roles: frozenset[str]  # SOP classes the requester may act as SCP for (C-GET)
    stats: dict[str, int]

    def caller(self) -> Caller: ...

    def send(self, data: bytes | bytearray | memoryview) -> None: ...

    def respond(self, request: Request, field: int, status: int, comment: str = "",
                elements: Optional[dict[int, int | str]] = None, dataset: bytes | None = None) -> None: ...

    def cancelled(self, message_id: int) -> bool:
        """Without blocking: has the peer sent a C-CANCEL-RQ for ``message_id``?"""

    def await_response(self, message_id: int, field: int, cancel_of: int = -1) -> pdu.Command | None:
        """Block until the response ``field`` to our request ``message_id`` arrives (None: the
        peer released or the DIMSE timeout passed); a C-CANCEL-RQ for ``cancel_of`` meanwhile
        is remembered (``cancelled`` then says True)."""

    def next_message_id(self) -> int: ...

    def temp_file(self) -> tuple[Path, int]:
        """A new temporary file on the storage filesystem for a received dataset, and its descriptor
        open for writing (the caller closes it)."""

    def prepare_temp_file(self) -> None:
        """Make the next temporary file now, off the critical path (after a response went out)."""

    def label(self) -> str: ...


Service = Callable[[Session, Request], Optional[Sink]]


class BufferSink:
    """Keeps a small dataset (identifier, commitment request) in memory, up to ``limit`` bytes.

    Past the limit the rest is dropped and ``too_large`` is set: the handler answers a
    failure, the association goes on.
    """

    def __init__(self, limit: int, done: Callable[[bytes | None], None]) -> None:
        self.limit = limit
        self.done = done
        self.data = bytearray()
        self.too_large = False

    def write(self, fragment: memoryview) -> None:
        if self.too_large or len(self.data) + len(fragment) > self.limit:
            self.too_large = True
            self.data.clear()
            return
        self.data += fragment

    def finish(self) -> None:
        self.done(None if self.too_large else bytes(self.data))

    def discard(self) -> None:
        self.data.clear()
