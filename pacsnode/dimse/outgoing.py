"""Our own requestor-side association (no pynetdicom): C-MOVE sub-operations, ``send``, and
the storage commitment report on a new association.

One object per association, one thread using it. It connects to a registered ``Peer``
(TCP_NODELAY), wraps the socket in TLS when the peer is registered with ``--tls`` (server
certificate verified against ``[tls].ca_certificates``, our certificate presented) and fails
closed: a peer that needs TLS never gets clear text, whatever goes wrong. It proposes the
same Implementation Class UID and version name as the server side, so a peer sees one
implementation.

Every read has a deadline; a PDU longer than the maximum we announced is an A-ABORT before
its body is read (THREATS: a peer must not make us buffer what it declares).
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from pacsnode.config import NodeConfig
from pacsnode.dimse import pdu, sending
from pacsnode.dimse.lookahead import StagedStore
from pacsnode.dimse.tls import client_context
from pacsnode.dimse.wire_reader import ack_now
from pacsnode.errors import ConfigError, PeerError
from pacsnode.model import InstanceLocation, Peer

# The server's identity (dimse/policy.py); imported, not copied, so the two cannot drift.
from pacsnode.dimse.policy import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

OUR_MAX_PDU = 1_048_576  # what we announce; larger incoming PDUs abort the association
MAX_RESPONSE_DATASET = 64 * 1024 * 1024  # an N-EVENT-REPORT for a huge commitment; more is hostile
MAX_COMMAND = 64 * 1024
MIN_PEER_PDU = 1024  # a smaller announced maximum is broken or hostile (DCMTK's minimum is 4096)
DEFAULT_TIMEOUT = 30.0


class AssociationRejected(PeerError):
    """The peer answered A-ASSOCIATE-RJ."""


class AssociationAborted(PeerError):
    """The peer aborted, closed the connection or broke the protocol; the association is gone."""


class PeerTimeout(PeerError):
    """The peer sent nothing within the deadline (the association is aborted)."""


class TLSFailure(PeerError):
    """TLS could not be set up with a peer registered with TLS (nothing was sent in clear text)."""


@dataclass
class Message:
    """One received DIMSE message: the context it came on, its command, its dataset bytes."""

    context_id: int
    command: pdu.Command
    dataset: bytes | None = None


@dataclass
class Association:
    """An established association we requested. Use :func:`open_association` to make one."""

    peer: Peer
    sock: socket.socket
    accepted: dict[int, tuple[str, str]]  # context id -> (abstract syntax, transfer syntax)
    peer_max_pdu: int
    roles: tuple[pdu.RoleSelection, ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    _next_message_id: int = 1
    _open: bool = True
    _pending: list[Message] = field(default_factory=list)
    _buffer: bytearray = field(default_factory=lambda: bytearray(sending.WIRE_BATCH))  # reused by send_stored

    # -- life cycle ------------------------------------------------------------------------
    def __enter__(self) -> "Association":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self._open:
            return
        if exc_type is None:
            self.release()
        else:
            self.abort()

    @property
    def is_open(self) -> bool:
        return self._open

    def release(self) -> None:
        """A-RELEASE-RQ and wait for the RP (bounded); close the socket whatever the peer does."""
        if not self._open:
            return
        try:
            self.sock.sendall(pdu.ReleaseRQ().encode())
            deadline = time.monotonic() + self.timeout
            while True:
                pdu_type, _body = _read_pdu(self.sock, deadline, OUR_MAX_PDU)
                if pdu_type in (pdu.RELEASE_RP, pdu.ABORT):
                    break
                if pdu_type == pdu.RELEASE_RQ:  # release collision (PS3.8 7.2.2): we are the requestor
                    continue
        except (OSError, PeerError):
            pass
        finally:
            self._close()

    def abort(self) -> None:
        """A-ABORT (service user) and close; never raises."""
        if not self._open:
            return
        try:
            self.sock.sendall(pdu.Abort(pdu.ABORT_SOURCE_USER, pdu.ABORT_NOT_SPECIFIED).encode())
        except OSError:
            pass
        self._close()

    def _close(self) -> None:
        self._open = False
        try:
            self.sock.close()
        except OSError:
            pass

    # -- messages --------------------------------------------------------------------------
    def next_message_id(self) -> int:
        message_id = self._next_message_id
        self._next_message_id = message_id % 0xFFFF + 1
        return message_id

    def context_for(self, abstract_syntax: str) -> tuple[int, str] | None:
        """The first accepted context for an abstract syntax: (id, transfer syntax)."""
        for cid, (abstract, syntax) in sorted(self.accepted.items()):
            if abstract == abstract_syntax:
                return cid, syntax
        return None

    def send_pdus(self, pdus: Iterable[bytes | bytearray | memoryview]) -> None:
        """Write PDUs; a broken connection aborts the association and raises."""
        self._require_open()
        try:
            for raw in pdus:
                self.sock.sendall(raw)
        except OSError as exc:
            self._close()
            raise AssociationAborted(f"{self._who()}: connection lost while sending ({exc})") from None

    def send_message(self, context_id: int, command: bytes, dataset: bytes | None = None) -> None:
        limit = sending.pdv_limit(self.peer_max_pdu)
        pdus = list(sending.fragments(context_id, command, True, limit))
        if dataset is not None:
            pdus.extend(sending.fragments(context_id, dataset, False, limit))
        self.send_pdus(pdus)

    def receive_message(self, timeout: float | None = None) -> Message:
        """The next whole DIMSE message from the peer; raises AssociationAborted when it ends."""
        if self._pending:
            return self._pending.pop(0)
        return self._receive_from_peer(timeout)

    def _receive_from_peer(self, timeout: float | None = None) -> Message:
        """The next whole DIMSE message read off the socket (the kept ones are not looked at)."""
        self._require_open()
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        command, dataset = bytearray(), bytearray()
        command_done, context_id, parsed = False, 0, None
        while True:
            pdu_type, body = self._read(deadline)
            if pdu_type != pdu.P_DATA_TF:
                self._unexpected(pdu_type)
            try:
                pdvs = list(pdu.iter_pdvs(memoryview(body)))
            except pdu.PDUError as exc:  # a PeerError like every other broken answer (C-MOVE counts on it)
                self._protocol_error(f"malformed P-DATA-TF ({exc})")
                raise  # unreachable
            for cid, control, start, end in pdvs:
                if control & pdu.MCH_COMMAND:
                    if command_done:
                        self._protocol_error("a command fragment after the command was complete")
                    context_id = cid
                    command += body[start:end]
                    if len(command) > MAX_COMMAND:
                        self._protocol_error("command set too long")
                    if control & pdu.MCH_LAST:
                        command_done = True
                        parsed = self._decode_command(bytes(command))
                        if parsed.us(pdu.COMMAND_DATASET_TYPE, pdu.NO_DATASET) == pdu.NO_DATASET:
                            return Message(context_id, parsed)
                else:
                    if not command_done or cid != context_id:
                        self._protocol_error("a dataset fragment without its command")
                    dataset += body[start:end]
                    if len(dataset) > MAX_RESPONSE_DATASET:
                        self._protocol_error("response dataset too long")
                    if control & pdu.MCH_LAST:
                        assert parsed is not None
                        return Message(context_id, parsed, bytes(dataset))

    def send_stored(self, location: InstanceLocation,
                    move_originator: tuple[str, int] | None = None) -> sending.StoreResponse:
        """C-STORE one stored instance and wait for its response (:meth:`stage`, then
        :meth:`send_staged`).

        Raises :class:`sending.CannotSend` (no accepted context, impossible transcoding,
        unreadable file) before anything is sent, with the association still usable: the
        caller counts one failed sub-operation and goes on. Raises :class:`PeerError` when the
        association is lost: the remaining sub-operations fail too.
        """
        return self.send_staged(self.stage(location, self._buffer, move_originator))

    def stage(self, location: InstanceLocation, buffer: bytearray,
              move_originator: tuple[str, int] | None = None) -> StagedStore:
        """The C-STORE-RQ for ``location`` on the best accepted context, its first batch laid out in
        ``buffer`` (a :class:`lookahead.Lookahead` stage); :class:`sending.CannotSend` as above."""
        self._require_open()
        chosen = sending.choose_context(location.sop_class_uid, location.transfer_syntax, self.accepted)
        if chosen is None:
            raise sending.NoAcceptedContext(f"{self._who()} accepted no context for SOP class "
                                            f"{location.sop_class_uid}")
        context_id, syntax = chosen
        message_id = self.next_message_id()
        # opening and transcoding happen here: CannotSend leaves the association usable
        prepared = sending.prepare_store(location, context_id, syntax, message_id, self.peer_max_pdu,
                                         move_originator)
        return StagedStore(prepared, buffer, message_id, location)

    def send_staged(self, staged: StagedStore,
                    while_waiting: Callable[[], None] | None = None) -> sending.StoreResponse:
        """Write a staged C-STORE-RQ (and close it), call ``while_waiting`` (the next instance's
        staging), then read its C-STORE-RSP."""
        with staged:
            try:
                self.send_pdus(staged.batches())
            except sending.CannotSend as exc:  # the file changed under us mid-dataset: the message is broken
                self.abort()
                raise AssociationAborted(f"{self._who()}: aborted mid C-STORE of "
                                         f"{staged.location.sop_instance_uid}: "
                                         f"{exc}") from None
        if while_waiting is not None:
            while_waiting()
        while True:  # off the wire: a kept message taken back out would be kept again, for ever
            message = self._receive_from_peer()
            if message.command.us(pdu.COMMAND_FIELD) == pdu.C_STORE_RSP:
                try:
                    response = sending.store_response(message.command)
                except pdu.PDUError as exc:  # the destination broke the protocol: our association with it ends
                    self._protocol_error(f"malformed C-STORE-RSP ({exc})")
                    raise  # unreachable
                if response.message_id != staged.message_id:
                    self._protocol_error(f"C-STORE-RSP for message {response.message_id}, "
                                         f"expected {staged.message_id}")
                return response
            self._pending.append(message)  # e.g. an N-EVENT-REPORT: kept for whoever waits for it
            if len(self._pending) > 16:
                self._protocol_error("too many unsolicited messages")

    def echo(self) -> int:
        """C-ECHO on the Verification context; the status."""
        chosen = self.context_for(VERIFICATION)
        if chosen is None:
            raise PeerError(f"{self._who()} did not accept Verification")
        message_id = self.next_message_id()
        self.send_message(chosen[0], pdu.encode_command({
            pdu.AFFECTED_SOP_CLASS_UID: VERIFICATION, pdu.COMMAND_FIELD: pdu.C_ECHO_RQ,
            pdu.MESSAGE_ID: message_id, pdu.COMMAND_DATASET_TYPE: pdu.NO_DATASET}))
        reply = self.receive_message()
        if reply.command.us(pdu.COMMAND_FIELD) != pdu.C_ECHO_RSP:
            self._protocol_error("expected a C-ECHO-RSP")
        return reply.command.us(pdu.STATUS, 0xFFFF) or 0

    # -- internals -------------------------------------------------------------------------
    def _who(self) -> str:
        return f"{self.peer.aet}@{self.peer.host}:{self.peer.port}"

    def _require_open(self) -> None:
        if not self._open:
            raise AssociationAborted(f"the association with {self._who()} is closed")

    def _read(self, deadline: float) -> tuple[int, bytes]:
        try:
            return _read_pdu(self.sock, deadline, OUR_MAX_PDU)
        except PeerError:
            self.abort()
            raise
        except OSError as exc:
            self._close()
            raise AssociationAborted(f"{self._who()}: connection lost ({exc})") from None

    def _decode_command(self, raw: bytes) -> pdu.Command:
        try:
            return pdu.decode_command(raw)
        except pdu.PDUError as exc:
            self._protocol_error(f"malformed command set: {exc}")
            raise  # unreachable

    def _unexpected(self, pdu_type: int) -> None:
        if pdu_type == pdu.ABORT:
            self._close()
            raise AssociationAborted(f"{self._who()} aborted the association")
        if pdu_type == pdu.RELEASE_RQ:
            try:
                self.sock.sendall(pdu.ReleaseRP().encode())
            except OSError:
                pass
            self._close()
            raise AssociationAborted(f"{self._who()} released the association before answering")
        self._protocol_error(f"unexpected PDU type 0x{pdu_type:02x}")

    def _protocol_error(self, what: str) -> None:
        self.abort()
        raise AssociationAborted(f"{self._who()}: {what}; association aborted")


VERIFICATION = "1.2.840.10008.1.1"


def _recv_exact(sock: socket.socket, size: int, deadline: float) -> bytes:
    buffer = bytearray(size)
    view, got, acked = memoryview(buffer), 0, False
    while got < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PeerTimeout("timed out waiting for the peer")
        sock.settimeout(remaining)
        try:
            n = sock.recv_into(view[got:], size - got)
        except socket.timeout:
            raise PeerTimeout("timed out waiting for the peer") from None
        if n == 0:
            raise AssociationAborted("the peer closed the connection")
        got += n
        if got < size and not acked:  # the rest may wait for our ACK of what came (a peer with Nagle on)
            ack_now(sock)
            acked = True
    return bytes(buffer)


def _read_pdu(sock: socket.socket, deadline: float, limit: int) -> tuple[int, bytes]:
    """One PDU: (type, body). A declared length over ``limit`` (+ header slack) is refused unread."""
    pdu_type, length = pdu.HEADER.unpack(_recv_exact(sock, pdu.HEADER_SIZE, deadline))
    if length > limit + 64 * 1024:
        raise PeerError(f"the peer sent a PDU of {length} bytes, more than the {limit} we announced")
    return pdu_type, _recv_exact(sock, length, deadline)


# -- opening ---------------------------------------------------------------------------------
def _connect(peer: Peer, config: NodeConfig | None, timeout: float) -> socket.socket:
    """A connected socket, TLS-wrapped when the peer is registered with TLS; fails closed."""
    context = None
    if peer.tls:  # settle TLS before any connection: a missing setting must not become clear text
        if config is None:
            raise TLSFailure(f"peer {peer.name or peer.aet} is registered with TLS but no [tls] settings were given")
        try:
            context = client_context(config)
        except ConfigError as exc:
            raise TLSFailure(f"TLS to {peer.name or peer.aet} cannot be set up: {exc}") from None
    try:
        sock = socket.create_connection((peer.host, peer.port), timeout=timeout)
    except OSError as exc:
        raise PeerError(f"cannot connect to {peer.aet}@{peer.host}:{peer.port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if context is None:
            return sock
        hostname = peer.host if config is not None and config.tls.verify_peer_hostname else None
        return context.wrap_socket(sock, server_hostname=hostname)  # handshake happens here
    except (ssl.SSLError, ssl.CertificateError, OSError) as exc:
        sock.close()
        raise TLSFailure(f"TLS handshake with {peer.aet}@{peer.host}:{peer.port} failed "
                         f"({getattr(exc, 'reason', None) or exc}); nothing was sent") from None


def open_association(peer: Peer, calling_aet: str, contexts: list[pdu.PresentationContextRQ],
                     config: NodeConfig | None = None, roles: tuple[pdu.RoleSelection, ...] = (),
                     timeout: float = DEFAULT_TIMEOUT) -> Association:
    """Connect, negotiate and return an established association (or raise PeerError).

    ``config`` supplies the ``[tls]`` settings; it is required for a peer registered with TLS.
    """
    if not contexts:
        raise ValueError("an association needs at least one presentation context")
    sock = _connect(peer, config, timeout)
    user = pdu.UserInformation(maximum_length=OUR_MAX_PDU, implementation_class_uid=IMPLEMENTATION_CLASS_UID,
                               implementation_version_name=IMPLEMENTATION_VERSION_NAME, role_selections=roles)
    request = pdu.AssociateRQ(peer.aet, calling_aet, tuple(contexts), user)
    who = f"{peer.aet}@{peer.host}:{peer.port}"
    deadline = time.monotonic() + timeout
    try:
        sock.sendall(request.encode())
        pdu_type, body = _read_pdu(sock, deadline, OUR_MAX_PDU)
        answer = pdu.decode_body(pdu_type, body)
    except (OSError, PeerError, pdu.PDUError) as exc:
        _abort_quietly(sock)
        raise AssociationAborted(f"association with {who} failed: {exc}") from None
    if isinstance(answer, pdu.AssociateRJ):
        sock.close()
        raise AssociationRejected(f"{who} rejected the association ({_rejection(answer)})")
    if not isinstance(answer, pdu.AssociateAC):
        _abort_quietly(sock)
        raise AssociationAborted(f"{who} answered the association request with {type(answer).__name__}")
    peer_max = answer.user_information.maximum_length or 0
    if 0 < peer_max < MIN_PEER_PDU:  # cannot carry a PDV (or one worth sending): refuse, do not crawl
        _abort_quietly(sock)
        raise AssociationAborted(f"{who} announced a maximum PDU length of {peer_max} bytes; association aborted")
    proposed = {pc.context_id: pc for pc in contexts}
    accepted = {}
    for ac in answer.presentation_contexts:
        pc = proposed.get(ac.context_id)
        if ac.result == pdu.PC_ACCEPTANCE and pc is not None and ac.transfer_syntax in pc.transfer_syntaxes:
            accepted[ac.context_id] = (pc.abstract_syntax, ac.transfer_syntax)
    association = Association(peer, sock, accepted, peer_max,
                              answer.user_information.role_selections, timeout)
    if not accepted:
        association.release()
        raise AssociationRejected(f"{who} accepted none of the {len(contexts)} proposed presentation contexts")
    return association


def _abort_quietly(sock: socket.socket) -> None:
    try:
        sock.sendall(pdu.Abort(pdu.ABORT_SOURCE_USER, pdu.ABORT_NOT_SPECIFIED).encode())
    except OSError:
        pass
    sock.close()


_RJ_REASONS = {
    (pdu.RJ_SOURCE_USER, pdu.RJ_USER_NO_REASON): "no reason given",
    (pdu.RJ_SOURCE_USER, pdu.RJ_USER_APPLICATION_CONTEXT): "application context not supported",
    (pdu.RJ_SOURCE_USER, pdu.RJ_USER_CALLING_AE): "calling AE title not recognised",
    (pdu.RJ_SOURCE_USER, pdu.RJ_USER_CALLED_AE): "called AE title not recognised",
    (pdu.RJ_SOURCE_ACSE, pdu.RJ_ACSE_PROTOCOL_VERSION): "protocol version not supported",
    (pdu.RJ_SOURCE_PRESENTATION, pdu.RJ_PRESENTATION_CONGESTION): "temporary congestion",
    (pdu.RJ_SOURCE_PRESENTATION, pdu.RJ_PRESENTATION_LIMIT): "local limit exceeded",
}


def _rejection(rj: pdu.AssociateRJ) -> str:
    kind = "permanent" if rj.result == pdu.RJ_PERMANENT else "transient"
    return f"{kind}: {_RJ_REASONS.get((rj.source, rj.reason), f'source {rj.source}, reason {rj.reason}')}"


def open_for_sending(peer: Peer, calling_aet: str, locations: list[InstanceLocation],
                     config: NodeConfig | None = None, timeout: float = DEFAULT_TIMEOUT) -> Association:
    """An association proposing what ``locations`` need (C-MOVE sub-operations, ``send``)."""
    return open_association(peer, calling_aet, sending.proposed_contexts(locations), config, timeout=timeout)
