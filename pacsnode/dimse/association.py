"""One association, one reader: the PDU loop every DICOM service runs on, plain TCP or TLS.

The listener has read the A-ASSOCIATE-RQ (``rq``) from ``sock`` (already wrapped in TLS
when the node speaks TLS). ``run`` answers it with ``policy.negotiate``, then loops: read
a PDU header, refuse a length beyond what we advertised before reading the body, read the
body into a reusable buffer under a per-PDU deadline, assemble DIMSE commands, hand each
request to the service registered for its command field (``services.SERVICES``) and feed
its dataset fragments to the sink the service returned (a C-STORE writes them straight to
disk from the receive buffer).

Services that talk back (C-GET sub-operations, storage commitment reports) use
``await_response``; C-FIND and C-MOVE poll ``cancelled`` between items. PDUs that arrive
meanwhile and are not what they wait for are held, in order, and processed afterwards.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Optional

from pacsnode.dimse import pdu, policy
from pacsnode.dimse.lean_find import CancelWatch, PeerAborted
from pacsnode.dimse.services import SERVICES, discard_sink
from pacsnode.dimse.session import Request, Sink
from pacsnode.dimse.wire_reader import WireReader, ack_now
from pacsnode.model import Caller
from pacsnode.node import Node

LOGGER = logging.getLogger(__name__)

PDU_MARGIN = 64 * 1024  # tolerated excess over our maximum length (some SCUs count the header)
INITIAL_BUFFER = 64 * 1024
MAX_COMMAND_SET = 64 * 1024  # a C-STORE-RQ is ~200 bytes; more is a broken or hostile peer
MAX_HELD = 4 << 20  # PDUs held while a service waits for a response; more is a protocol violation
LINGER_SECONDS = 5.0  # how long we wait for the peer to close after RJ / RELEASE-RP (ARTIM)
_PDU_TYPES = frozenset({pdu.ASSOCIATE_RQ, pdu.ASSOCIATE_AC, pdu.ASSOCIATE_RJ, pdu.P_DATA_TF, pdu.RELEASE_RQ,
                        pdu.RELEASE_RP, pdu.ABORT})


def identify(node: Node, calling_aet: str, host: str, peer_certificate: bytes | None) -> Caller:
    """``Node.identify`` with the TLS peer certificate (None over plain TCP)."""
    return node.identify(calling_aet, host, peer_certificate=peer_certificate)


class Association:
    """Serve one association whose A-ASSOCIATE-RQ (``rq``) has been read from ``sock``.

    ``run`` returns with the socket closed and no temporary file left behind; ``abort``
    may be called from another thread (server shutdown). ``caller``: who the listener found
    calling (it identifies every association before admitting it), so the peer is looked up
    once per association; without it the first service identifies.
    """

    def __init__(self, sock: socket.socket, address: tuple[str, int], node: Node, rq: pdu.AssociateRQ,
                 peer_certificate: bytes | None = None, caller: Caller | None = None) -> None:
        self.sock = sock
        self.address = address
        self.node = node
        self.rq = rq
        self.peer_certificate = peer_certificate
        self.peer_max_pdu = rq.user_information.maximum_length or 0
        self.stats = {"stored": 0, "failed": 0, "finds": 0, "retrieves": 0, "commitments": 0}
        self.outcome = "open"
        self.contexts: dict[int, tuple[str, str]] = {}
        self.combined_datetime: frozenset[str] = frozenset()
        self.scp_roles: frozenset[str] = frozenset()
        network = node.config.network
        self._idle_timeout = network.network_timeout
        self._pdu_timeout = min(network.pdu_timeout, network.network_timeout)
        self._limit = network.max_pdu + PDU_MARGIN if network.max_pdu else 0xFFFFFFFF
        self._caller: Caller | None = caller
        self._command = bytearray()
        self._command_context = -1
        self._sink: Sink | None = None
        self._sink_context = -1
        self._header = bytearray(pdu.HEADER_SIZE)
        sock.settimeout(self._pdu_timeout)  # sends wait at most this; reads bring their own (WireReader)
        self._reader = WireReader(sock)
        self._watch = CancelWatch(sock, self._read_whole_pdu)
        self._cancel_seen: set[int] = set()
        self._message_id = 0
        self._spare_temp: tuple[Path, int] | None = None  # path and descriptor open for writing
        self._send_lock = threading.Lock()
        self._closing = False
        self._label = f"{rq.calling_ae.strip()}@{address[0]} -> {rq.called_ae.strip()}"

    # -- the session, as services see it ---------------------------------------------------
    def caller(self) -> Caller:
        if self._caller is None:
            self._caller = identify(self.node, self.rq.calling_ae.strip(), self.address[0], self.peer_certificate)
        return self._caller

    def label(self) -> str:
        return self._label

    def temp_file(self) -> tuple[Path, int]:
        """A temporary file for the next C-STORE and its open descriptor, which the caller now owns:
        the spare one made off the critical path, or a new one."""
        spare, self._spare_temp = self._spare_temp, None
        return spare or self.node.open_temp_file()

    def prepare_temp_file(self) -> None:
        """Make the spare temporary file while the peer prepares its next C-STORE (after a response)."""
        if self._spare_temp is None:
            try:
                self._spare_temp = self.node.open_temp_file()
            except OSError:
                pass  # temp_file() tries again and the store reports the error

    def _drop_spare_temp(self) -> None:
        if self._spare_temp is not None:
            path, fd = self._spare_temp
            self._spare_temp = None
            os.close(fd)
            path.unlink(missing_ok=True)

    def send(self, data: bytes | bytearray | memoryview) -> None:
        with self._send_lock:
            self.sock.sendall(data)

    def respond(self, request: Request, field: int, status: int, comment: str = "",
                elements: Optional[dict[int, int | str]] = None, dataset: bytes | None = None) -> None:
        command: dict[int, int | str] = {
            pdu.AFFECTED_SOP_CLASS_UID: request.sop_class, pdu.COMMAND_FIELD: field,
            pdu.MESSAGE_ID_BEING_RESPONDED_TO: request.message_id,
            pdu.COMMAND_DATASET_TYPE: pdu.NO_DATASET if dataset is None else pdu.DATASET_PRESENT,
            pdu.STATUS: status,
        }
        command.update(elements or {})
        if comment and status != 0:
            command[pdu.ERROR_COMMENT] = pdu.error_comment(comment)
        self.send(pdu.encode_message(request.context_id, pdu.encode_command(command), dataset, self.peer_max_pdu))

    def cancelled(self, message_id: int) -> bool:
        return message_id in self._cancel_seen or self._watch(message_id)

    def next_message_id(self) -> int:
        self._message_id = self._message_id % 0xFFFF + 1
        return self._message_id

    def await_response(self, message_id: int, field: int, cancel_of: int = -1) -> pdu.Command | None:
        """See ``session.Session.await_response``: hold what is not ours, in order, for later."""
        deadline = time.monotonic() + self.node.config.network.dimse_timeout
        command, context = bytearray(), -1
        while time.monotonic() < deadline:
            received = self._read_whole_pdu(idle_deadline=deadline)
            if received is None:
                raise ConnectionResetError("peer closed while we waited for a response")
            pdu_type, body = received
            if pdu_type == pdu.ABORT:
                raise PeerAborted("peer aborted while we waited for a response")
            if pdu_type != pdu.P_DATA_TF:
                self._hold(pdu_type, body)
                if pdu_type == pdu.RELEASE_RQ:
                    return None  # the peer is done: no response will come
                continue
            pdvs = list(pdu.iter_pdvs(memoryview(body)))
            if not all(control & pdu.MCH_COMMAND for _c, control, _s, _e in pdvs):
                self._hold(pdu_type, body)  # a dataset of the peer's own next request
                continue
            for context_id, control, start, end in pdvs:
                command += body[start:end]
                context = context_id
                if not control & pdu.MCH_LAST:
                    continue
                decoded = pdu.decode_command(command)
                raw, command = bytes(command), bytearray()
                got = decoded.us(pdu.COMMAND_FIELD)
                responded = decoded.us(pdu.MESSAGE_ID_BEING_RESPONDED_TO)
                if got == field and responded == message_id:
                    return decoded
                if got == pdu.C_CANCEL_RQ and responded == cancel_of:
                    self._cancel_seen.add(cancel_of)
                else:
                    self._hold(pdu.P_DATA_TF, pdu.encode_fragments(context, raw, True, 0)[pdu.HEADER_SIZE:])
        LOGGER.warning("association %s: no response 0x%04x to message %d within the DIMSE timeout", self._label,
                       field, message_id)
        return None

    def _hold(self, pdu_type: int, body: bytes) -> None:
        held = self._watch.held
        if sum(len(b) for _t, b in held) + len(body) > MAX_HELD:
            raise pdu.PDUError("the peer sent more than the asynchronous operations window allows")
        held.append((pdu_type, bytes(body)))

    # -- lifecycle -------------------------------------------------------------------------
    def run(self) -> None:
        try:
            answer = policy.negotiate(self.rq, self.node.config)
            if isinstance(answer, pdu.AssociateRJ):
                self._rejected(answer)  # audited before the peer hears of it
                return
            self.send(answer.encode())
            self.contexts = {pc.context_id: (self._abstract(pc.context_id), pc.transfer_syntax)
                             for pc in answer.presentation_contexts if pc.result == pdu.PC_ACCEPTANCE}
            self.combined_datetime = frozenset(
                ext.sop_class_uid for ext in answer.user_information.extended_negotiations
                if policy.find.combined_datetime_in(ext.application_information))
            self.scp_roles = frozenset(role.sop_class_uid for role in answer.user_information.role_selections
                                       if role.scp_role)
            LOGGER.info("association %s accepted (%d of %d contexts%s)", self._label, len(self.contexts),
                        len(self.rq.presentation_contexts), ", TLS" if isinstance(self.sock, ssl.SSLSocket) else "")
            self.caller()
            self._audit("accepted", {"tls": isinstance(self.sock, ssl.SSLSocket),
                                     "user_identity": self.rq.user_information.user_identity is not None})
            self._serve()
        except pdu.PDUError as exc:
            LOGGER.warning("association %s: protocol error, aborting: %s", self._label, exc)
            self._abort(pdu.ABORT_INVALID_PARAMETER)
        except TimeoutError:
            LOGGER.warning("association %s: network timeout, aborting", self._label)
            self._abort(pdu.ABORT_NOT_SPECIFIED)
        except PeerAborted:
            self.outcome = "aborted by peer"
        except OSError as exc:
            self.outcome = self.outcome if self._closing else "connection lost"
            LOGGER.debug("association %s: %s", self._label, exc)
        except Exception:  # edge: one broken association must never take the listener down
            LOGGER.exception("association %s failed, aborting", self._label)
            self._abort(pdu.ABORT_NOT_SPECIFIED)
        finally:
            if self._sink is not None:
                self._sink.discard()
                self._sink = None
            self._drop_spare_temp()
            self._close()
            if self.outcome != "rejected":
                LOGGER.info("association %s %s: %s", self._label, self.outcome,
                            ", ".join(f"{v} {k}" for k, v in self.stats.items() if v))
                if self.outcome.startswith("aborted") or self.outcome == "connection lost":
                    self._audit("aborted", {"outcome": self.outcome})

    def _rejected(self, answer: pdu.AssociateRJ) -> None:
        self.outcome = "rejected"
        LOGGER.warning("association %r@%s rejected (result %d, source %d, reason %d)", self.rq.calling_ae,
                       self.address[0], answer.result, answer.source, answer.reason)
        detail: dict[str, object] = {"result": answer.result, "source": answer.source, "reason": answer.reason}
        if answer.reason == pdu.RJ_USER_CALLING_AE and answer.source == pdu.RJ_SOURCE_USER:
            detail["calling_raw"] = self.rq.calling_ae.encode("latin-1").hex()
            self.node.events.unusable_calling_ae(self.rq.calling_ae, self.address[0], self.rq.called_ae, detail)
        else:
            self._audit("rejected", detail)
        self.send(answer.encode())
        self._linger()

    def _audit(self, outcome: str, detail: dict[str, object]) -> None:
        """Every peer association is an audit event."""
        self.node.events.association(self.caller(), outcome, self.address[0], self.rq.called_ae, detail)

    def abort(self) -> None:
        """Abort from another thread: send A-ABORT and shut the socket (``run`` then cleans up)."""
        self.outcome = "aborted by server"
        self._abort(pdu.ABORT_NOT_SPECIFIED)

    def _abort(self, reason: int) -> None:
        if self.outcome == "open":
            self.outcome = "aborted"
        # A send blocked on a peer that does not read must not block the abort: then just shut.
        if self._send_lock.acquire(timeout=1.0):
            try:
                self.sock.sendall(pdu.Abort(pdu.ABORT_SOURCE_PROVIDER, reason).encode())
            except (OSError, ValueError):
                pass
            finally:
                self._send_lock.release()
        self._closing = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except (OSError, ValueError):
            pass

    def _close(self) -> None:
        self._closing = True
        try:
            self.sock.close()
        except OSError:
            pass

    def _linger(self) -> None:
        """Wait (ARTIM) for the peer to close after our RJ or RELEASE-RP, then close."""
        self._closing = True
        deadline = time.monotonic() + min(LINGER_SECONDS, self.node.config.network.acse_timeout)
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                self.sock.settimeout(remaining)
                if not self.sock.recv(4096):
                    return
        except (OSError, ValueError):
            return

    def _abstract(self, context_id: int) -> str:
        return next(pc.abstract_syntax for pc in self.rq.presentation_contexts if pc.context_id == context_id)

    # -- reading PDUs ----------------------------------------------------------------------
    def _serve(self) -> None:
        buffer = memoryview(bytearray(INITIAL_BUFFER))  # grows to the largest PDU seen, at most the limit
        while True:
            if self._watch.held:  # PDUs that arrived while a service ran, in order
                pdu_type, held = self._watch.held.popleft()
                body = memoryview(held)
            else:
                header = self._read_header(None)
                if header is None:
                    self._peer_closed()
                    return
                pdu_type, length, deadline = header
                if length > len(buffer):
                    buffer = memoryview(bytearray(length))
                body = buffer[:length]
                if not self._recv_exact(body, deadline):
                    self._peer_closed()
                    return
            if not self._dispatch(pdu_type, body):
                return

    def _read_header(self, idle_deadline: float | None) -> tuple[int, int, float] | None:
        """(type, length, deadline of the body) of the next PDU; None if the peer closed.

        Waiting for a PDU to start is idle time (``network_timeout``, or ``idle_deadline``);
        once its first byte is here the whole PDU must arrive within ``pdu_timeout``, so a
        peer trickling a byte at a time cannot hold the association. A length beyond what we
        advertised (+ margin) or an unknown type is a PDUError before any body is read.
        """
        view = memoryview(self._header)
        idle = self._idle_timeout if idle_deadline is None else max(0.001, idle_deadline - time.monotonic())
        count = self._reader.recv_into(view, idle)
        if not count:
            return None
        deadline = time.monotonic() + self._pdu_timeout
        if count < pdu.HEADER_SIZE and not self._recv_exact(view[count:], deadline):
            return None
        pdu_type, length = pdu.HEADER.unpack_from(self._header)
        if pdu_type not in _PDU_TYPES:
            raise pdu.PDUError(f"unknown PDU type 0x{pdu_type:02x}")
        if length > self._limit:
            raise pdu.PDUError(f"PDU type 0x{pdu_type:02x} of {length} bytes exceeds our maximum "
                               f"{self.node.config.network.max_pdu}")
        return pdu_type, length, deadline

    def _recv_exact(self, target: memoryview, deadline: float) -> bool:
        """Fill ``target`` before ``deadline``; False if the peer closed first."""
        got, size, recv_into, idle, acked = 0, len(target), self._reader.recv_into, self._idle_timeout, False
        while got < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("PDU not complete within the PDU deadline")
            count = recv_into(target[got:], min(remaining, idle))
            if not count:
                return False
            got += count
            if got < size and not acked:  # the rest may wait for our ACK of what came (see ack_now)
                ack_now(self.sock)
                acked = True
        return True

    def _read_whole_pdu(self, idle_deadline: float | None = None) -> tuple[int, bytes] | None:
        """One whole PDU in a buffer of its own (held for later, or awaited)."""
        header = self._read_header(idle_deadline)
        if header is None:
            return None
        pdu_type, length, deadline = header
        body = bytearray(length)
        return (pdu_type, bytes(body)) if self._recv_exact(memoryview(body), deadline) else None

    def _dispatch(self, pdu_type: int, body: memoryview) -> bool:
        """Act on one PDU; False once the association is over."""
        if pdu_type == pdu.P_DATA_TF:
            self._on_pdata(body)
            return True
        if pdu_type == pdu.RELEASE_RQ:
            self._drop_spare_temp()  # nothing of ours is left once the peer hears RELEASE-RP
            self.send(pdu.ReleaseRP().encode())
            self.outcome = "released"
            self._linger()
            return False
        if pdu_type == pdu.ABORT:
            self.outcome = "aborted by peer"
            return False
        LOGGER.warning("association %s: unexpected PDU type 0x%02x, aborting", self._label, pdu_type)
        self._abort(pdu.ABORT_UNEXPECTED_PDU)
        return False

    def _peer_closed(self) -> None:
        if not self._closing:
            self.outcome = "closed by peer"

    # -- assembling DIMSE messages ---------------------------------------------------------
    def _on_pdata(self, body: memoryview) -> None:
        for context_id, control, start, end in pdu.iter_pdvs(body):
            if context_id not in self.contexts:
                raise pdu.PDUError(f"PDV on presentation context {context_id}, which was not accepted")
            if control & pdu.MCH_COMMAND:
                if self._sink is not None:
                    raise pdu.PDUError("command fragment while a dataset is arriving")
                if self._command and context_id != self._command_context:
                    raise pdu.PDUError("command fragments on different presentation contexts")
                self._command_context = context_id
                self._command += body[start:end]
                if len(self._command) > MAX_COMMAND_SET:
                    raise pdu.PDUError(f"command set longer than {MAX_COMMAND_SET} bytes")
                if control & pdu.MCH_LAST:
                    command = pdu.decode_command(self._command)
                    self._command.clear()
                    self._on_command(context_id, command)
            else:
                sink = self._sink
                if sink is None or context_id != self._sink_context:
                    raise pdu.PDUError("dataset fragment without a request on its context")
                sink.write(body[start:end])
                if control & pdu.MCH_LAST:
                    self._sink = None
                    sink.finish()

    def _on_command(self, context_id: int, command: pdu.Command) -> None:
        field_ = command.us(pdu.COMMAND_FIELD)
        if field_ == pdu.C_CANCEL_RQ:
            LOGGER.debug("association %s: C-CANCEL with nothing running, ignored", self._label)
            return
        service = SERVICES.get(field_ or 0)
        if service is None:
            raise pdu.PDUError(f"DIMSE command 0x{field_:04x} is not served")
        abstract, transfer_syntax = self.contexts[context_id]
        has_dataset = command.us(pdu.COMMAND_DATASET_TYPE, pdu.NO_DATASET) != pdu.NO_DATASET
        request = Request(context_id, command.us(pdu.MESSAGE_ID, 0) or 0, command, abstract, transfer_syntax,
                          has_dataset)
        self._cancel_seen.clear()
        self._watch.reset()
        sink = service(self, request)
        if not has_dataset:
            if sink is not None:
                sink.finish()
            return
        self._sink, self._sink_context = sink or discard_sink(), context_id
