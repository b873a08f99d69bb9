"""The lean path: one blocking thread runs one C-STORE/C-ECHO/C-FIND association.

pynetdicom moves every PDU through two polling reactor loops, queues and PDU objects; for
the association that matters most to a PACS (a modality pushing a study) that costs more
than the disk, and for a C-FIND more than the query. This module serves the associations
that only propose Verification, storage and the two C-FIND SOP classes (``lean_can_serve``)
with the PS3.8 upper layer and PS3.7 DIMSE subset they need, in a plain loop: read a PDU
header, read its body into a reusable buffer, write dataset fragments straight from that
buffer into the temporary file, and answer after ``Node.store_file`` (which fsyncs, places
and indexes). C-FIND is ``lean_find``'s. Everything else stays on pynetdicom (see
``pacsnode.dimse.listener``).

Wire outcome is the same as ``handlers.handle_store``/``handle_echo``/``find.handle_find``:
Success only after the commit, ``statuses.store_status`` for domain errors, 0x0110 for
anything unexpected, and an association that survives a refused instance or query.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import struct
import threading
import time
from pathlib import Path
from typing import BinaryIO

from pynetdicom import ALL_TRANSFER_SYNTAXES
from pynetdicom.presentation import StoragePresentationContexts

from pacsnode.config import NodeConfig
from pacsnode.dicom.extract import is_valid_uid
from pacsnode.dimse import pdu, statuses
from pacsnode.dimse.find import combined_datetime_in
from pacsnode.dimse.lean_find import (
    FIND_SOP_CLASSES,
    FIND_TRANSFER_SYNTAXES,
    CancelWatch,
    FindRequest,
    FindService,
    PeerAborted,
    extended_negotiations,
)
from pacsnode.errors import PacsnodeError
from pacsnode.model import Caller, ReceivedFile
from pacsnode.node import Node

LOGGER = logging.getLogger(__name__)

IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.10.1078.100"
IMPLEMENTATION_VERSION_NAME = "PACSNODE_01"
VERIFICATION = "1.2.840.10008.1.1"
STORAGE_SOP_CLASSES = frozenset(str(cx.abstract_syntax) for cx in StoragePresentationContexts)
LEAN_ABSTRACT_SYNTAXES = STORAGE_SOP_CLASSES | FIND_SOP_CLASSES | {VERIFICATION}
KNOWN_TRANSFER_SYNTAXES = frozenset(str(ts) for ts in ALL_TRANSFER_SYNTAXES)
PDU_MARGIN = 64 * 1024  # tolerated excess over our maximum length (some SCUs count the header)
INITIAL_BUFFER = 64 * 1024
MAX_COMMAND_SET = 64 * 1024  # a C-STORE-RQ is ~200 bytes; more is a broken or hostile peer
LINGER_SECONDS = 5.0  # how long we wait for the peer to close after RJ / RELEASE-RP (ARTIM)
_PDU_TYPES = frozenset({pdu.ASSOCIATE_RQ, pdu.ASSOCIATE_AC, pdu.ASSOCIATE_RJ, pdu.P_DATA_TF, pdu.RELEASE_RQ,
                        pdu.RELEASE_RP, pdu.ABORT})


def lean_can_serve(rq: pdu.AssociateRQ) -> bool:
    """True when every proposed context is Verification, storage or C-FIND and no role is negotiated."""
    return not rq.user_information.role_selections and all(
        pc.abstract_syntax in LEAN_ABSTRACT_SYNTAXES for pc in rq.presentation_contexts)


EXPLICIT_BIG_ENDIAN = "1.2.840.10008.1.2.2"


def choose_transfer_syntax(proposed: tuple[str, ...] | list[str],
                           acceptable: frozenset[str] = KNOWN_TRANSFER_SYNTAXES) -> str | None:
    """The requestor's first acceptable syntax, but never retired Explicit VR Big Endian when a
    little-endian one is also proposed: storescu offers [Explicit BE, Implicit LE] as its
    second context, and taking BE there would make it convert Implicit VR files instead of
    sending them as they are (we store what is received, byte for byte)."""
    known = [ts for ts in proposed if ts in acceptable]
    preferred = [ts for ts in known if ts != EXPLICIT_BIG_ENDIAN]
    candidates = preferred or known
    return candidates[0] if candidates else None


def negotiate(rq: pdu.AssociateRQ, config: NodeConfig,
              supported: frozenset[str] = LEAN_ABSTRACT_SYNTAXES) -> pdu.AssociateAC | pdu.AssociateRJ:
    """The acceptor's answer to an A-ASSOCIATE-RQ (PS3.8 7.1.1, 9.3.3).

    C-FIND contexts take the syntaxes pynetdicom takes for them (``FIND_TRANSFER_SYNTAXES``),
    and their SOP Class Extended Negotiation is answered as ``find.handle_sop_extended``
    answers it. Other extended negotiation and user identity are not answered: omitting them
    means "not supported" / "identity not confirmed" (PS3.7 D.3.3.5-7), and the default
    asynchronous operations window (1, 1) applies.
    """
    if not rq.protocol_version & 1:
        return pdu.AssociateRJ(pdu.RJ_PERMANENT, pdu.RJ_SOURCE_ACSE, pdu.RJ_ACSE_PROTOCOL_VERSION)
    if config.network.strict_called_aet and rq.called_ae.strip() != config.aet:
        return pdu.AssociateRJ(pdu.RJ_PERMANENT, pdu.RJ_SOURCE_USER, pdu.RJ_USER_CALLED_AE)
    if rq.application_context != pdu.APPLICATION_CONTEXT:
        return pdu.AssociateRJ(pdu.RJ_PERMANENT, pdu.RJ_SOURCE_USER, pdu.RJ_USER_APPLICATION_CONTEXT)
    answers = []
    for pc in rq.presentation_contexts:
        finding = pc.abstract_syntax in FIND_SOP_CLASSES
        chosen = choose_transfer_syntax(pc.transfer_syntaxes,
                                        FIND_TRANSFER_SYNTAXES if finding else KNOWN_TRANSFER_SYNTAXES)
        if pc.abstract_syntax not in supported:
            result = pdu.PC_ABSTRACT_SYNTAX_NOT_SUPPORTED
        elif chosen is None:
            result = pdu.PC_TRANSFER_SYNTAXES_NOT_SUPPORTED
        else:
            result = pdu.PC_ACCEPTANCE
        answers.append(pdu.PresentationContextAC(pc.context_id, result, chosen or pc.transfer_syntaxes[0]))
    accepted = {pc.abstract_syntax for pc, ac in zip(rq.presentation_contexts, answers)
                if ac.result == pdu.PC_ACCEPTANCE}
    user = pdu.UserInformation(maximum_length=config.network.max_pdu,
                               implementation_class_uid=IMPLEMENTATION_CLASS_UID,
                               implementation_version_name=IMPLEMENTATION_VERSION_NAME,
                               extended_negotiations=extended_negotiations(rq, accepted))
    return pdu.AssociateAC(rq.called_ae, rq.calling_ae, tuple(answers), user)


# -- Part 10 file meta (PS3.10 7.1), Explicit VR Little Endian -------------------------
def _meta_element(element: int, vr: bytes, value: bytes, pad: bytes) -> bytes:
    if len(value) % 2:
        value += pad
    if vr == b"OB":
        return struct.pack("<HH2s2xL", 2, element, vr, len(value)) + value
    return struct.pack("<HH2sH", 2, element, vr, len(value)) + value


def file_meta(sop_class: str, sop_instance: str, transfer_syntax: str, source_aet: str) -> bytes:
    """Preamble, ``DICM`` and a complete File Meta Information group for a received dataset."""
    elements = [
        _meta_element(0x0001, b"OB", b"\x00\x01", b"\0"),
        _meta_element(0x0002, b"UI", sop_class.encode("ascii"), b"\0"),
        _meta_element(0x0003, b"UI", sop_instance.encode("ascii"), b"\0"),
        _meta_element(0x0010, b"UI", transfer_syntax.encode("ascii"), b"\0"),
        _meta_element(0x0012, b"UI", IMPLEMENTATION_CLASS_UID.encode("ascii"), b"\0"),
        _meta_element(0x0013, b"SH", IMPLEMENTATION_VERSION_NAME.encode("ascii"), b" "),
    ]
    if source_aet.strip():
        elements.append(_meta_element(0x0016, b"AE", source_aet.strip().encode("ascii", "replace"), b" "))
    body = b"".join(elements)
    return b"\0" * 128 + b"DICM" + _meta_element(0x0000, b"UL", struct.pack("<L", len(body)), b"") + body


class _IncomingStore:
    """One C-STORE whose dataset is arriving: its temporary file, or the failure to report."""

    def __init__(self, context_id: int, message_id: int, sop_class: str, sop_instance: str) -> None:
        self.context_id = context_id
        self.message_id = message_id
        self.sop_class = sop_class
        self.sop_instance = sop_instance
        self.path: Path | None = None
        self.handle: BinaryIO | None = None
        self.failure: tuple[int, str] | None = None  # set: sink the dataset, then answer this
        self.digest = hashlib.sha256()  # hashed as it arrives: the storage area need not read it back
        self.size = 0
        self.synced = False

    def open(self, path: Path, header: bytes) -> None:
        self.path = path
        self.handle = open(path, "wb", buffering=0)  # noqa: SIM115 (closed in close/discard)
        self.write(header)

    def write(self, data: bytes | memoryview) -> None:
        if self.handle is None:
            return
        try:
            view, written = memoryview(data), 0
            self.digest.update(view)
            self.size += len(view)
            while written < len(view):
                written += self.handle.write(view[written:]) or 0
        except OSError as exc:
            LOGGER.error("cannot write the received dataset: %s", exc)
            self.discard()
            self.failure = (statuses.STORE_OUT_OF_RESOURCES, f"cannot write the dataset: {exc.strerror or exc}")

    def close(self, sync: bool = False) -> None:
        """Close the file; with ``sync``, fsync it first on the open descriptor (saves a reopen)."""
        if self.handle is not None:
            if sync:
                try:
                    os.fsync(self.handle.fileno())
                    self.synced = True
                except OSError:
                    self.synced = False
            self.handle.close()
            self.handle = None

    def discard(self) -> None:
        self.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None


class LeanAssociation:
    """Serve one association whose A-ASSOCIATE-RQ (``rq``) has been read from ``sock``.

    ``run`` answers the RQ, then loops over PDUs until release, abort, timeout or a protocol
    error, and returns with the socket closed and no temporary file left behind.
    ``abort`` may be called from another thread (server shutdown).
    """

    def __init__(self, sock: socket.socket, address: tuple[str, int], node: Node, rq: pdu.AssociateRQ) -> None:
        self.sock = sock
        self.address = address
        self.node = node
        self.rq = rq
        self.peer_max_pdu = rq.user_information.maximum_length or 0
        self.stored = 0
        self.failed = 0
        self.finds = 0
        self.outcome = "open"
        self._contexts: dict[int, tuple[str, str]] = {}  # accepted id → (abstract, transfer syntax)
        self._caller: Caller | None = None
        self._command = bytearray()
        self._command_context = -1
        self._store: _IncomingStore | None = None
        self._find: FindRequest | None = None
        self._combined: frozenset[str] = frozenset()  # FIND SOP classes with combined date-time agreed
        self._limit = node.config.network.max_pdu + PDU_MARGIN
        self._header = bytearray(pdu.HEADER_SIZE)
        self._watch = CancelWatch(sock, self._read_held_pdu)
        self._finder = FindService(node, self._send, self._watch, self.peer_max_pdu)
        self._spare_temp: Path | None = None  # made while the peer prepares its next C-STORE
        self._send_lock = threading.Lock()
        self._closing = False
        self._label = f"{rq.calling_ae.strip()}@{address[0]} -> {rq.called_ae.strip()}"

    # -- lifecycle -------------------------------------------------------------------------
    def run(self) -> None:
        try:
            answer = negotiate(self.rq, self.node.config)
            self._send(answer.encode())
            if isinstance(answer, pdu.AssociateRJ):
                self.outcome = "rejected"
                LOGGER.info("association %s rejected (result %d, source %d, reason %d)", self._label,
                            answer.result, answer.source, answer.reason)
                self._audit("rejected", {"result": answer.result, "reason": answer.reason})
                self._linger()
                return
            self._contexts = {pc.context_id: (self._abstract(pc.context_id), pc.transfer_syntax)
                              for pc in answer.presentation_contexts if pc.result == pdu.PC_ACCEPTANCE}
            self._combined = frozenset(ext.sop_class_uid for ext in answer.user_information.extended_negotiations
                                       if combined_datetime_in(ext.application_information))
            LOGGER.info("association %s accepted (%d of %d contexts)", self._label, len(self._contexts),
                        len(self.rq.presentation_contexts))
            self._caller = self.node.identify(self.rq.calling_ae.strip(), self.address[0])
            self._audit("accepted", {})
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
            if self._store is not None:
                self._store.discard()
                self._store = None
            if self._spare_temp is not None:
                self._spare_temp.unlink(missing_ok=True)
            self._close()
            if self.outcome != "rejected":
                LOGGER.info("association %s %s: %d stored, %d failed, %d find(s)", self._label, self.outcome,
                            self.stored, self.failed, self.finds)

    def _audit(self, outcome: str, detail: dict[str, object]) -> None:
        """Every peer association is an audit event, on this path as on pynetdicom's."""
        caller = self._caller or self.node.identify(self.rq.calling_ae.strip(), self.address[0])
        self.node.audit.record("association", outcome, peer_aet=caller.aet,
                               peer_name=caller.peer.name if caller.peer else "",
                               detail={"host": self.address[0], "called": self.rq.called_ae.strip(), **detail})

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
            except OSError:
                pass
            finally:
                self._send_lock.release()
        self._closing = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
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
        except OSError:
            return

    def _send(self, data: bytes) -> None:
        with self._send_lock:
            self.sock.sendall(data)

    def _abstract(self, context_id: int) -> str:
        return next(pc.abstract_syntax for pc in self.rq.presentation_contexts if pc.context_id == context_id)

    # -- the PDU loop ----------------------------------------------------------------------
    def _serve(self) -> None:
        self.sock.settimeout(self.node.config.network.network_timeout)
        buffer = memoryview(bytearray(INITIAL_BUFFER))  # grows to the largest PDU seen, at most the limit
        while True:
            if self._watch.held:  # PDUs that arrived while a C-FIND was answered, in order
                pdu_type, held = self._watch.held.popleft()
                body = memoryview(held)
            else:
                header = self._read_header()
                if header is None:
                    self._peer_closed()
                    return
                pdu_type, length = header
                if pdu_type not in _PDU_TYPES:
                    length = 0  # _dispatch aborts on it: its body does not matter
                if length > len(buffer):
                    buffer = memoryview(bytearray(length))
                body = buffer[:length]
                if not self._recv_exact(body):
                    self._peer_closed()
                    return
            if not self._dispatch(pdu_type, body):
                return

    def _read_header(self) -> tuple[int, int] | None:
        """(type, length) of the next PDU; None if the peer closed; PDUError if it is too long."""
        if not self._recv_exact(memoryview(self._header)):
            return None
        pdu_type, length = pdu.HEADER.unpack_from(self._header)
        if pdu_type in _PDU_TYPES and length > self._limit:
            raise pdu.PDUError(f"PDU type 0x{pdu_type:02x} of {length} bytes exceeds our maximum "
                               f"{self.node.config.network.max_pdu}")
        return pdu_type, length

    def _read_held_pdu(self) -> tuple[int, bytes] | None:
        """One whole PDU in a buffer of its own (the cancel watch keeps it for later)."""
        header = self._read_header()
        if header is None:
            return None
        pdu_type, length = header
        if pdu_type not in _PDU_TYPES:
            raise pdu.PDUError(f"unknown PDU type 0x{pdu_type:02x} during a C-FIND")
        body = bytearray(length)
        return (pdu_type, bytes(body)) if self._recv_exact(memoryview(body)) else None

    def _dispatch(self, pdu_type: int, body: memoryview) -> bool:
        """Act on one PDU; False once the association is over."""
        if pdu_type == pdu.P_DATA_TF:
            self._on_pdata(body)
            return True
        if pdu_type not in _PDU_TYPES:
            LOGGER.warning("association %s: unknown PDU type 0x%02x, aborting", self._label, pdu_type)
            self._abort(pdu.ABORT_UNRECOGNIZED_PDU)
            return False
        if pdu_type == pdu.RELEASE_RQ:
            self._send(pdu.ReleaseRP().encode())
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

    def _recv_exact(self, target: memoryview) -> bool:
        """Fill ``target`` from the socket; False if the peer closed first."""
        got, size, recv_into = 0, len(target), self.sock.recv_into
        while got < size:
            count = recv_into(target[got:], size - got)
            if not count:
                return False
            got += count
        return True

    def _on_pdata(self, body: memoryview) -> None:
        for context_id, control, start, end in pdu.iter_pdvs(body):
            if context_id not in self._contexts:
                raise pdu.PDUError(f"PDV on presentation context {context_id}, which was not accepted")
            if control & pdu.MCH_COMMAND:
                if self._store is not None or self._find is not None:
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
            elif self._find is not None and context_id == self._find.context_id:
                self._find.write(body[start:end])
                if control & pdu.MCH_LAST:
                    request, self._find = self._find, None
                    self._finish_find(request)
            else:
                store = self._store
                if store is None or context_id != store.context_id:
                    raise pdu.PDUError("dataset fragment without a C-STORE request on its context")
                store.write(body[start:end])
                if control & pdu.MCH_LAST:
                    self._store = None
                    self._finish_store(store)

    # -- DIMSE -----------------------------------------------------------------------------
    def _on_command(self, context_id: int, command: pdu.Command) -> None:
        field_ = command.us(pdu.COMMAND_FIELD)
        message_id = command.us(pdu.MESSAGE_ID, 0) or 0
        has_dataset = command.us(pdu.COMMAND_DATASET_TYPE, pdu.NO_DATASET) != pdu.NO_DATASET
        if field_ == pdu.C_ECHO_RQ:
            self._on_echo(context_id, message_id, command.text(pdu.AFFECTED_SOP_CLASS_UID))
        elif field_ == pdu.C_STORE_RQ:
            self._on_store(context_id, message_id, command, has_dataset)
        elif field_ == pdu.C_FIND_RQ:
            self._on_find(context_id, message_id, command, has_dataset)
        elif field_ == pdu.C_CANCEL_RQ:
            LOGGER.debug("association %s: C-CANCEL ignored (nothing to cancel)", self._label)
        else:
            raise pdu.PDUError(f"DIMSE command 0x{field_:04x} is not served on this association")

    def _on_echo(self, context_id: int, message_id: int, sop_class: str) -> None:
        status, comment = statuses.SUCCESS, ""
        try:
            self.node.require_permission(self._require_caller(), "echo")
        except PacsnodeError as exc:
            status, comment = statuses.REFUSED_NOT_AUTHORIZED, str(exc)
        self._respond(context_id, pdu.C_ECHO_RSP, message_id, sop_class or VERIFICATION, "", status, comment)

    def _on_store(self, context_id: int, message_id: int, command: pdu.Command, has_dataset: bool) -> None:
        abstract, transfer_syntax = self._contexts[context_id]
        sop_class = command.text(pdu.AFFECTED_SOP_CLASS_UID) or abstract
        sop_instance = command.text(pdu.AFFECTED_SOP_INSTANCE_UID)
        store = _IncomingStore(context_id, message_id, sop_class, sop_instance)
        if not is_valid_uid(sop_instance) or not is_valid_uid(sop_class):
            store.failure = (statuses.STORE_CANNOT_UNDERSTAND, "C-STORE request without valid Affected SOP UIDs")
        if not has_dataset:
            self._answer_store(store, *(store.failure or (statuses.STORE_CANNOT_UNDERSTAND,
                                                          "C-STORE request without a dataset")))
            return
        if store.failure is None:
            try:
                temp, self._spare_temp = self._spare_temp or self.node.new_temp_file(), None
                store.open(temp, file_meta(sop_class, sop_instance, transfer_syntax, self.rq.calling_ae))
            except OSError as exc:
                LOGGER.error("cannot create a temporary file: %s", exc)
                store.discard()
                store.failure = (statuses.STORE_OUT_OF_RESOURCES, f"cannot store: {exc.strerror or exc}")
        self._store = store

    def _finish_store(self, store: _IncomingStore) -> None:
        """The last fragment arrived: let the node place and index the file, then answer."""
        if store.failure is not None or store.path is None:
            store.discard()
            status, comment = store.failure or (statuses.PROCESSING_FAILURE, "dataset not received")
            self._answer_store(store, status, comment)
            return
        store.close(sync=self.node.config.store.fsync)
        status, comment = statuses.SUCCESS, ""
        try:
            outcome = self.node.store_file(store.path, self._require_caller(),
                                           expected_sop_class=self._contexts[store.context_id][0],
                                           expected_sop_instance=store.sop_instance,
                                           received=ReceivedFile(store.digest.hexdigest(), store.size, store.synced))
            LOGGER.debug("C-STORE %s: %s", outcome.result.value, outcome.sop_instance_uid)
        except PacsnodeError as exc:
            LOGGER.warning("C-STORE refused: %s", exc)
            status, comment = statuses.store_status(exc), str(exc)
        except Exception as exc:  # edge: keep the association alive, say why
            LOGGER.exception("C-STORE failed")
            status, comment = statuses.PROCESSING_FAILURE, f"internal error: {exc.__class__.__name__}"
        finally:
            store.path = None  # store_file consumed it
        self._answer_store(store, status, comment)

    def _answer_store(self, store: _IncomingStore, status: int, comment: str) -> None:
        if status == statuses.SUCCESS:
            self.stored += 1
        else:
            self.failed += 1
        self._respond(store.context_id, pdu.C_STORE_RSP, store.message_id, store.sop_class, store.sop_instance,
                      status, comment)
        if self._spare_temp is None:  # off the critical path: the peer is reading its next file now
            try:
                self._spare_temp = self.node.new_temp_file()
            except OSError:
                pass  # _on_store tries again and reports the error

    def _respond(self, context_id: int, field_: int, message_id: int, sop_class: str, sop_instance: str,
                 status: int, comment: str) -> None:
        elements: dict[int, int | str] = {
            pdu.AFFECTED_SOP_CLASS_UID: sop_class, pdu.COMMAND_FIELD: field_,
            pdu.MESSAGE_ID_BEING_RESPONDED_TO: message_id, pdu.COMMAND_DATASET_TYPE: pdu.NO_DATASET,
            pdu.STATUS: status,
        }
        if sop_instance:
            elements[pdu.AFFECTED_SOP_INSTANCE_UID] = sop_instance
        if comment and status != statuses.SUCCESS:
            elements[pdu.ERROR_COMMENT] = pdu.error_comment(comment)
        self._send(pdu.encode_message(context_id, pdu.encode_command(elements), None, self.peer_max_pdu))

    def _on_find(self, context_id: int, message_id: int, command: pdu.Command, has_dataset: bool) -> None:
        abstract = self._contexts[context_id][0]
        if abstract not in FIND_SOP_CLASSES:
            raise pdu.PDUError(f"C-FIND-RQ on presentation context {context_id} ({abstract})")
        request = FindRequest(context_id, message_id, command.text(pdu.AFFECTED_SOP_CLASS_UID) or abstract)
        if has_dataset:
            self._find = request  # the identifier follows
        else:
            self._finish_find(request)  # no identifier: answered as an empty (invalid) one

    def _finish_find(self, request: FindRequest) -> None:
        """The identifier is complete: answer the C-FIND, polling for a C-CANCEL between matches."""
        self.finds += 1
        self._watch.reset()
        self._finder.answer(request, self._require_caller(), self._contexts[request.context_id][1],
                            request.sop_class in self._combined)

    def _require_caller(self) -> Caller:
        if self._caller is None:
            self._caller = self.node.identify(self.rq.calling_ae.strip(), self.address[0])
        return self._caller
