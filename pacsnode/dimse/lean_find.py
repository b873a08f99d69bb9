"""C-FIND on the wire (Patient Root and Study Root): identifier codec, streamed responses, cancel.

``association`` reads the C-FIND-RQ and ``services.find`` buffers its identifier; this
module decodes the identifier in the context's transfer syntax, asks ``find.answer_find``
(query parsing, ``Node.find`` with its access filter and audit, the PACSNODE HR block)
and streams the responses:

* every pending C-FIND-RSP has the same command set, so its PDV is encoded once per
  request; each match costs one dataset encoding and goes out with that command in one
  P-DATA-TF (PS3.8 9.3.5: one or more PDVs) when the peer's maximum PDU length allows:
  findscu then makes half the read calls (2456 instead of 4766 for 1155 matches);
* responses are coalesced into ``sendall`` calls of about ``BATCH_BYTES``: the first two go
  out at once, so the peer sees a match at once, and small batches let the peer parse while
  we build the next ones (64 KB batches made findscu 30% slower end to end than 8 KB); the
  last batch carries the final response, so an answer of up to two matches (an exact Patient
  ID) is one write, and one wake-up of the peer, instead of two;
* each response is written straight from its index row (``dicom.response_bytes``, no
  Dataset, byte-identical to the pydicom path); what that does not write is built as a
  Dataset, whose common form (ASCII text and numbers) ``encode_flat`` writes 8x faster than
  pydicom's ``write_dataset``, anything else going to pydicom;
* between matches the association polls its socket without blocking for a C-CANCEL-RQ
  (``cancelled``); a cancel ends the find with 0xFE00.

Statuses and Error Comments come from ``find.find_failure``; SOP Class Extended
Negotiation (combined date-time matching) is answered by ``find.sop_extended_answers``.
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import zlib
from collections import deque
from dataclasses import dataclass
from io import BytesIO
from typing import Callable, Iterator

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import IS, DSdecimal, DSfloat, PersonName

from pacsnode.dimse import find, pdu, statuses
from pacsnode.model import Caller
from pacsnode.node import Node

LOGGER = logging.getLogger(__name__)

FIND_SOP_CLASSES = find.FIND_SOP_CLASSES
IMPLICIT_LITTLE = "1.2.840.10008.1.2"
EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_LITTLE = "1.2.840.10008.1.2.1.99"
EXPLICIT_BIG = "1.2.840.10008.1.2.2"
# The syntaxes accepted for Q/R and commitment contexts (``policy.QUERY_TRANSFER_SYNTAXES``).
FIND_TRANSFER_SYNTAXES = frozenset({IMPLICIT_LITTLE, EXPLICIT_LITTLE, DEFLATED_EXPLICIT_LITTLE, EXPLICIT_BIG})
MAX_IDENTIFIER = 1 << 20  # a real identifier is well under 4 KB
BATCH_BYTES = 8 * 1024  # measured with findscu: 1-16 KB alike, 64 KB 30% slower, 0 (no coalescing) 10%
_PDATA_HEADER, _PDV_HEADER = struct.Struct(">BxL"), struct.Struct(">LBB")
MAX_HELD = 4 << 20  # PDUs read (and held) while polling for a cancel; beyond this, TCP waits for us


@dataclass(frozen=True)
class DatasetCodec:
    """Encode and decode identifiers in one presentation context's transfer syntax."""

    implicit_vr: bool
    little_endian: bool
    deflated: bool

    @classmethod
    def of(cls, transfer_syntax: str) -> DatasetCodec:
        if transfer_syntax not in FIND_TRANSFER_SYNTAXES:
            raise ValueError(f"transfer syntax {transfer_syntax} is not offered for C-FIND")
        return cls(transfer_syntax == IMPLICIT_LITTLE, transfer_syntax != EXPLICIT_BIG,
                   transfer_syntax == DEFLATED_EXPLICIT_LITTLE)

    def decode(self, data: bytes) -> Dataset:
        if self.deflated:
            data = zlib.decompress(data, -zlib.MAX_WBITS)
        return read_dataset(BytesIO(data), self.implicit_vr, self.little_endian)

    def encode(self, dataset: Dataset) -> bytes:
        return self.deflate(self.write(dataset))

    def write(self, dataset: Dataset) -> bytes:
        """The dataset's bytes in this syntax, before any deflate."""
        data = encode_flat(dataset, self.implicit_vr) if self.little_endian else None
        if data is None:
            buffer = DicomBytesIO()
            buffer.is_implicit_VR = self.implicit_vr
            buffer.is_little_endian = self.little_endian
            write_dataset(buffer, dataset)
            data = buffer.getvalue()
        return data

    def deflate(self, data: bytes) -> bytes:
        """``data`` as sent: deflated in the Deflated Explicit VR Little Endian syntax, else as is."""
        if self.deflated:
            compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
            data = compressor.compress(data) + compressor.flush()
        return data


_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR",
                       "UT"})
_LONG_VRS = frozenset({"UC", "UR", "UT"})  # of the VRs encode_flat writes, those with a 4-byte length
_INTEGERS = {"US": struct.Struct("<H"), "UL": struct.Struct("<L")}
_EXPLICIT_SHORT = struct.Struct("<HH2sH")
_EXPLICIT_LONG = struct.Struct("<HH2s2xL")
_IMPLICIT = struct.Struct("<HHL")


def encode_flat(dataset: Dataset, implicit_vr: bool) -> bytes | None:
    """Little-endian bytes of a response identifier, or None to leave it to pydicom.

    pydicom's ``write_dataset`` costs ~130 us for a ten-element response; this writes the
    common case (ASCII text, IS/DS, US/UL, empty values; no sequence) byte for byte as
    pydicom would, in ~16 us. Anything else (non-ASCII text, whose bytes depend on the
    character set; sequences; pre-encoded bytes) returns None.
    """
    parts = []
    for element in dataset:
        vr, value = element.VR, element.value
        if value is None or value == "":
            raw = b""
        elif vr in _TEXT_VRS:
            text = _text(value)
            if text is None or not text.isascii():
                return None
            raw = text.encode("ascii")
            if len(raw) % 2:
                raw += b"\0" if vr == "UI" else b" "
        elif vr in _INTEGERS:
            values = value if isinstance(value, (list, MultiValue)) else (value,)
            if not all(isinstance(v, int) for v in values):
                return None
            raw = b"".join(_INTEGERS[vr].pack(v) for v in values)
        else:
            return None
        group, elem = element.tag >> 16, element.tag & 0xFFFF
        if implicit_vr:
            parts.append(_IMPLICIT.pack(group, elem, len(raw)))
        elif vr in _LONG_VRS:
            parts.append(_EXPLICIT_LONG.pack(group, elem, vr.encode(), len(raw)))
        elif len(raw) <= 0xFFFF:
            parts.append(_EXPLICIT_SHORT.pack(group, elem, vr.encode(), len(raw)))
        else:
            return None
        parts.append(raw)
    return b"".join(parts)


def _text(value: object) -> str | None:
    """The text pydicom would write for a text value, or None for a value it encodes otherwise."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, MultiValue)):
        texts = [_text(v) for v in value]
        return None if None in texts else "\\".join(texts)  # type: ignore[arg-type]
    if isinstance(value, PersonName):
        return str(value)
    if isinstance(value, (IS, DSfloat, DSdecimal)):  # as written when read: the original string
        return str(getattr(value, "original_string", value))
    return None


class FindRequest:
    """A C-FIND-RQ whose identifier is arriving: its fragments, kept in memory up to ``MAX_IDENTIFIER``."""

    def __init__(self, context_id: int, message_id: int, sop_class: str) -> None:
        self.context_id = context_id
        self.message_id = message_id
        self.sop_class = sop_class
        self.identifier = bytearray()
        self.too_large = False  # the rest is dropped; the answer is a failure

    def write(self, fragment: memoryview) -> None:
        if self.too_large or len(self.identifier) + len(fragment) > MAX_IDENTIFIER:
            self.too_large = True
            self.identifier.clear()
            return
        self.identifier += fragment


class FindService:
    """Answer C-FIND requests for one association.

    ``send`` writes bytes to the peer; ``cancelled(message_id)`` says, without blocking,
    whether the peer has sent a C-CANCEL-RQ for that request. ``peer_max_pdu`` bounds every
    P-DATA-TF we send (0: unlimited).
    """

    def __init__(self, node: Node, send: Callable[[bytes], None], cancelled: Callable[[int], bool],
                 peer_max_pdu: int) -> None:
        self.node = node
        self.send = send
        self.cancelled = cancelled
        self.peer_max_pdu = peer_max_pdu

    def answer(self, request: FindRequest, caller: Caller, transfer_syntax: str, combined_datetime: bool) -> int:
        """Stream the matches of ``request``, then its final status (returned, for statistics).

        Only the node's and the codec's work is inside the edge catch (it becomes a status);
        an error of ``send`` or ``cancelled`` (socket, protocol) ends the association instead.
        """
        pending = self._command(request, statuses.PENDING)
        pending_pdv = pending[6:]  # its one PDV (a peer maximum below ~100 bytes takes the other branch)
        batch, count, status, comment = bytearray(), 0, statuses.SUCCESS, ""
        codec = DatasetCodec.of(transfer_syntax)  # negotiate() accepts only FIND_TRANSFER_SYNTAXES
        try:
            identifier = _decode(codec, request)
            responses = find.answer_find_encoded(self.node, identifier, request.sop_class, caller, combined_datetime,
                                                 codec.implicit_vr, codec.little_endian, codec.write)
        except Exception as exc:  # edge: every failure becomes a status, the association goes on
            responses, (status, comment) = iter(()), _failure(exc)
        upcoming: bytes | None = None  # the next match, encoded: one ahead, so the last batch can take the final
        if status == statuses.SUCCESS:
            upcoming, status, comment = _pull(responses, codec)
        while upcoming is not None:
            data = upcoming
            if self.cancelled(request.message_id):
                LOGGER.info("C-FIND cancelled by the peer after %d match(es)", count)
                status = statuses.CANCEL
                break
            if self.peer_max_pdu and len(pending_pdv) + len(data) + 6 > self.peer_max_pdu:
                batch += pending
                batch += pdu.encode_fragments(request.context_id, data, False, self.peer_max_pdu)
            else:  # the command and its dataset in one P-DATA-TF (PS3.8 9.3.5: one or more PDVs)
                batch += _PDATA_HEADER.pack(pdu.P_DATA_TF, len(pending_pdv) + len(data) + 6)
                batch += pending_pdv
                batch += _PDV_HEADER.pack(len(data) + 2, request.context_id, pdu.MCH_LAST)
                batch += data
            count += 1
            upcoming, status, comment = _pull(responses, codec)
            if upcoming is not None and (count == 2 or len(batch) >= BATCH_BYTES):
                self.send(bytes(batch))
                batch.clear()
        batch += self._command(request, status, comment)
        self.send(bytes(batch))
        return status

    def _command(self, request: FindRequest, status: int, comment: str = "") -> bytes:
        elements: dict[int, int | str] = {
            pdu.AFFECTED_SOP_CLASS_UID: request.sop_class, pdu.COMMAND_FIELD: pdu.C_FIND_RSP,
            pdu.MESSAGE_ID_BEING_RESPONDED_TO: request.message_id, pdu.STATUS: status,
            pdu.COMMAND_DATASET_TYPE: pdu.DATASET_PRESENT if status == statuses.PENDING else pdu.NO_DATASET,
        }
        if comment:
            elements[pdu.ERROR_COMMENT] = pdu.error_comment(comment)
        return pdu.encode_fragments(request.context_id, pdu.encode_command(elements), True, self.peer_max_pdu)


def _pull(responses: Iterator[bytes], codec: DatasetCodec) -> tuple[bytes | None, int, str]:
    """The next encoded match (None at the end or on a failure) and the status so far.

    Only the node's and the codec's work is inside this edge catch (a failure becomes a status)."""
    try:
        return codec.deflate(next(responses)), statuses.SUCCESS, ""
    except StopIteration:
        return None, statuses.SUCCESS, ""
    except Exception as exc:  # edge: every failure becomes a status, the association goes on
        status, comment = _failure(exc)
        return None, status, comment


class PeerAborted(ConnectionAbortedError):
    """The peer sent A-ABORT while we were answering a C-FIND."""


class CancelWatch:
    """Between two C-FIND responses: has the peer sent a C-CANCEL-RQ for the running request?

    Polls the socket without blocking. Every whole PDU that arrived meanwhile is read with
    ``read_pdu`` (type, body; None when the peer closed) and held in ``held``, in order, for
    the association to process after the find (a cancel there is a harmless no-op); an
    A-ABORT ends the find at once (``PeerAborted``).
    """

    def __init__(self, sock: socket.socket, read_pdu: Callable[[], tuple[int, bytes] | None]) -> None:
        self.read_pdu = read_pdu
        self.held: deque[tuple[int, bytes]] = deque()
        self._held_bytes = 0
        self._command = bytearray()
        self._sock = sock
        self._poller = select.poll()  # not select.select: it fails on descriptors >= 1024
        self._poller.register(sock, select.POLLIN)

    def __call__(self, message_id: int) -> bool:
        if not self.held:
            self._held_bytes = 0
        cancelled = False
        while not cancelled and self._held_bytes < MAX_HELD and self._readable():
            received = self.read_pdu()
            if received is None:
                raise ConnectionResetError("peer closed during a C-FIND")
            pdu_type, body = received
            if pdu_type == pdu.ABORT:
                raise PeerAborted("peer aborted during a C-FIND")
            self.held.append(received)
            self._held_bytes += len(body)
            if pdu_type == pdu.P_DATA_TF:
                cancelled = self._cancels(memoryview(body), message_id)
        return cancelled

    def _readable(self) -> bool:
        """Bytes wait: in the kernel, or already decrypted inside the TLS layer (poll cannot see those)."""
        pending = getattr(self._sock, "pending", None)
        return bool(pending is not None and pending()) or bool(self._poller.poll(0))

    def _cancels(self, body: memoryview, message_id: int) -> bool:
        """Whether the command fragments in ``body`` complete a C-CANCEL-RQ for ``message_id``.

        Malformed input is not judged here: the association finds it when it processes
        the held PDU, and aborts then.
        """
        try:
            for _context, control, start, end in pdu.iter_pdvs(body):
                if not control & pdu.MCH_COMMAND:
                    continue
                self._command += body[start:end]
                if control & pdu.MCH_LAST:
                    command = pdu.decode_command(self._command)
                    self._command.clear()
                    if (command.us(pdu.COMMAND_FIELD) == pdu.C_CANCEL_RQ
                            and command.us(pdu.MESSAGE_ID_BEING_RESPONDED_TO) == message_id):
                        return True
        except pdu.PDUError:
            self._command.clear()
        return False

    def reset(self) -> None:
        """A new find starts: forget half a command seen during the last one."""
        self._command.clear()


class _Refused(Exception):
    """A request we answer with a failure before asking the node (not a domain error)."""

    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status, self.comment = status, comment


def _failure(exc: BaseException) -> tuple[int, str]:
    if isinstance(exc, _Refused):
        LOGGER.warning("C-FIND refused: %s", exc.comment)
        return exc.status, exc.comment
    return find.find_failure(exc)


def _decode(codec: DatasetCodec, request: FindRequest) -> Dataset:
    """The identifier, with every element parsed now: a malformed one fails here, not mid-answer."""
    if request.too_large:
        raise _Refused(statuses.QR_UNABLE_TO_PROCESS, f"identifier longer than {MAX_IDENTIFIER} bytes")
    try:
        identifier = codec.decode(bytes(request.identifier))
        for _element in identifier.iterall():  # converts raw elements: bad values raise here
            pass
    except Exception as exc:  # pydicom raises many kinds (OSError too) on malformed bytes
        raise _Refused(statuses.QR_UNABLE_TO_PROCESS, f"cannot decode the identifier: {exc}") from exc
    return identifier
