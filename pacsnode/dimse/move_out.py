"""The C-MOVE sub-association: our engine as a storage SCU towards the move destination.

One association per move: connect (TLS with ``tls.client_context`` when the destination
peer is registered with TLS: fail closed, never fall back to clear text), propose the
contexts ``sending.proposed_contexts`` builds, then one C-STORE-RQ per instance streamed
from disk by ``sending.iter_store_pdus`` and its C-STORE-RSP read back, then release.

This is the minimum C-MOVE needs; ``outgoing`` (the CLI's send and the rest) is its
general sibling.
"""

from __future__ import annotations

import logging
import socket
import time

from pacsnode.dimse import pdu, policy, sending
from pacsnode.dimse.tls import client_context
from pacsnode.errors import PeerError
from pacsnode.model import InstanceLocation, Peer
from pacsnode.node import Node

LOGGER = logging.getLogger(__name__)

MAX_INCOMING_PDU = 1 << 20  # what we advertise; responses are small


class StoreAssociation:
    """An established association to a destination for C-STORE sub-operations."""

    def __init__(self, sock: socket.socket, peer: Peer, ac: pdu.AssociateAC, rq: pdu.AssociateRQ,
                 timeout: float) -> None:
        self.sock = sock
        self.peer = peer
        self.timeout = timeout
        self.peer_max_pdu = ac.user_information.maximum_length or 0
        proposed = {pc.context_id: pc.abstract_syntax for pc in rq.presentation_contexts}
        self.accepted = {pc.context_id: (proposed[pc.context_id], pc.transfer_syntax)
                         for pc in ac.presentation_contexts
                         if pc.result == pdu.PC_ACCEPTANCE and pc.context_id in proposed}
        self._message_id = 0
        self.broken = False

    def send_stored(self, location: InstanceLocation, move_originator: tuple[str, int] | None = None) -> str:
        """One C-STORE sub-operation: 'success', 'warning' or 'failure' (never raises for one instance)."""
        if self.broken:
            return "failure"
        chosen = sending.choose_context(location.sop_class_uid, location.transfer_syntax, self.accepted)
        if chosen is None:
            LOGGER.warning("C-MOVE to %s: no accepted context for %s", self.peer.aet, location.sop_class_uid)
            return "failure"
        self._message_id = self._message_id % 0xFFFF + 1
        started = False
        try:
            for chunk in sending.iter_store_pdus(location, chosen[0], chosen[1], self._message_id,
                                                 self.peer_max_pdu, move_originator):
                started = True
                self.sock.sendall(chunk)
            response = self._read_response()
        except (sending.TranscodeError, sending.UnreadableInstance) as exc:
            LOGGER.warning("C-MOVE sub-operation for %s failed: %s", location.sop_instance_uid, exc)
            self.broken = started  # half a dataset went out: the association cannot go on
            return "failure"
        except (OSError, pdu.PDUError) as exc:
            LOGGER.warning("C-MOVE to %s: association lost: %s", self.peer.aet, exc)
            self.broken = True
            return "failure"
        return sending.store_outcome(response.status)

    def _read_response(self) -> sending.StoreResponse:
        command = bytearray()
        deadline = time.monotonic() + self.timeout
        while True:
            pdu_type, body = self._read_pdu(deadline)
            if pdu_type != pdu.P_DATA_TF:
                raise pdu.PDUError(f"PDU type 0x{pdu_type:02x} while waiting for a C-STORE-RSP")
            for _context, control, start, end in pdu.iter_pdvs(memoryview(body)):
                if not control & pdu.MCH_COMMAND:
                    raise pdu.PDUError("dataset fragment in a C-STORE-RSP")
                command += body[start:end]
                if control & pdu.MCH_LAST:
                    response = sending.store_response(pdu.decode_command(command))
                    if response.message_id == self._message_id:
                        return response
                    command.clear()

    def _read_pdu(self, deadline: float) -> tuple[int, bytes]:
        header = _recv(self.sock, pdu.HEADER_SIZE, deadline)
        pdu_type, length = pdu.HEADER.unpack(header)
        if length > MAX_INCOMING_PDU + 65536:
            raise pdu.PDUError(f"PDU of {length} bytes exceeds our maximum")
        return pdu_type, _recv(self.sock, length, deadline)

    def close(self) -> None:
        """Release (A-ABORT when broken), then close."""
        try:
            if self.broken:
                self.sock.sendall(pdu.Abort(pdu.ABORT_SOURCE_USER, 0).encode())
            else:
                self.sock.sendall(pdu.ReleaseRQ().encode())
                self._read_pdu(time.monotonic() + min(self.timeout, 10.0))
        except (OSError, pdu.PDUError):
            pass
        finally:
            self.sock.close()


def _recv(sock: socket.socket, size: int, deadline: float) -> bytes:
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the move destination did not answer in time")
        sock.settimeout(remaining)
        count = sock.recv_into(view[got:], size - got)
        if not count:
            raise ConnectionError("the move destination closed the association")
        got += count
    return bytes(buffer)


def open_for_sending(node: Node, peer: Peer, locations: list[InstanceLocation]) -> StoreAssociation:
    """Associate with ``peer`` proposing contexts for ``locations``; PeerError/OSError when impossible."""
    network = node.config.network
    rq = pdu.AssociateRQ(peer.aet, node.config.aet, tuple(sending.proposed_contexts(locations)),
                         pdu.UserInformation(maximum_length=MAX_INCOMING_PDU,
                                             implementation_class_uid=policy.IMPLEMENTATION_CLASS_UID,
                                             implementation_version_name=policy.IMPLEMENTATION_VERSION_NAME))
    deadline = time.monotonic() + network.acse_timeout
    sock = socket.create_connection((peer.host, peer.port), timeout=network.acse_timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if peer.tls:  # fail closed: any error here is raised, nothing goes out in clear text
            context = client_context(node.config)
            sock = context.wrap_socket(sock, server_hostname=peer.host if context.check_hostname else None)
        sock.sendall(rq.encode())
        header = _recv(sock, pdu.HEADER_SIZE, deadline)
        pdu_type, length = pdu.HEADER.unpack(header)
        if length > 1 << 20:
            raise PeerError(f"{peer.aet} answered with a {length}-byte PDU")
        answer = pdu.decode(header + _recv(sock, length, deadline))
    except BaseException:
        sock.close()
        raise
    if not isinstance(answer, pdu.AssociateAC):
        sock.close()
        raise PeerError(f"{peer.aet}@{peer.host}:{peer.port} did not accept the association ({type(answer).__name__})")
    return StoreAssociation(sock, peer, answer, rq, network.dimse_timeout)
