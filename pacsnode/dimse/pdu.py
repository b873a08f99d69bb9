"""DICOM Upper Layer PDUs (PS3.8 9.3), as plain bytes (DIMSE command sets: ``commands``).

The engine (``association``, ``outgoing``) speaks the wire itself instead of going through
pynetdicom's reactor threads and PDU objects. This module is its codec and nothing else:
no sockets, no state. Every decoder raises :class:`PDUError` on malformed input, so a
caller has exactly one exception to turn into an A-ABORT.

P-DATA-TF is the hot path: :func:`iter_pdvs` walks the PDVs of a received PDU body in place
and yields offsets, so dataset fragments are written to disk straight from the receive
buffer without a copy. The other PDUs are small and decode into frozen dataclasses.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Iterator, Union

# -- PDU types (PS3.8 9.3.1) -------------------------------------------------------------
ASSOCIATE_RQ = 0x01
ASSOCIATE_AC = 0x02
ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
RELEASE_RQ = 0x05
RELEASE_RP = 0x06
ABORT = 0x07

HEADER = struct.Struct(">BxL")  # PDU type, reserved, length of the rest
HEADER_SIZE = HEADER.size
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"

# -- item types (PS3.8 9.3.2, 9.3.3; PS3.7 D.3.3) ----------------------------------------
ITEM_APPLICATION_CONTEXT = 0x10
ITEM_PRESENTATION_CONTEXT_RQ = 0x20
ITEM_PRESENTATION_CONTEXT_AC = 0x21
ITEM_ABSTRACT_SYNTAX = 0x30
ITEM_TRANSFER_SYNTAX = 0x40

# -- A-ASSOCIATE-RJ result / source / reason (PS3.8 9.3.4) -------------------------------
RJ_PERMANENT = 1
RJ_TRANSIENT = 2
RJ_SOURCE_USER = 1
RJ_SOURCE_ACSE = 2
RJ_SOURCE_PRESENTATION = 3
RJ_USER_NO_REASON = 1
RJ_USER_APPLICATION_CONTEXT = 2
RJ_USER_CALLING_AE = 3
RJ_USER_CALLED_AE = 7
RJ_ACSE_PROTOCOL_VERSION = 2
RJ_PRESENTATION_CONGESTION = 1
RJ_PRESENTATION_LIMIT = 2

# -- A-ABORT source / reason (PS3.8 9.3.8) -----------------------------------------------
ABORT_SOURCE_USER = 0
ABORT_SOURCE_PROVIDER = 2
ABORT_NOT_SPECIFIED = 0
ABORT_UNRECOGNIZED_PDU = 1
ABORT_UNEXPECTED_PDU = 2
ABORT_UNRECOGNIZED_PARAMETER = 4
ABORT_UNEXPECTED_PARAMETER = 5
ABORT_INVALID_PARAMETER = 6

# -- presentation context results (PS3.8 9.3.3.2) ----------------------------------------
PC_ACCEPTANCE = 0
PC_USER_REJECTION = 1
PC_NO_REASON = 2
PC_ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
PC_TRANSFER_SYNTAXES_NOT_SUPPORTED = 4

# -- message control header bits of a PDV (PS3.8 E.2) ------------------------------------
MCH_COMMAND = 0x01
MCH_LAST = 0x02

_PDV = struct.Struct(">LBB")


from pacsnode.dimse.commands import PDUError  # noqa: E402  (one exception for both halves of the codec)
# The user information item and the item framing live in ``user_info``; their names stay reachable as ``pdu.X``.
from pacsnode.dimse.user_info import (  # noqa: E402,F401
    ITEM_ASYNC_OPERATIONS_WINDOW, ITEM_IMPLEMENTATION_CLASS_UID, ITEM_IMPLEMENTATION_VERSION_NAME, ITEM_MAXIMUM_LENGTH,
    ITEM_ROLE_SELECTION, ITEM_SOP_CLASS_COMMON_EXTENDED, ITEM_SOP_CLASS_EXTENDED, ITEM_USER_IDENTITY_AC,
    ITEM_USER_IDENTITY_RQ, ITEM_USER_INFORMATION, _U16, CommonExtendedNegotiation, ExtendedNegotiation, RoleSelection,
    UserIdentity, UserInformation, _decode_user_information, _encode_user_information, _item, _items, _text)


# -- items ------------------------------------------------------------------------------
@dataclass(frozen=True)
class PresentationContextRQ:
    """One proposed presentation context: an abstract syntax and the transfer syntaxes offered."""

    context_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass(frozen=True)
class PresentationContextAC:
    """The answer to one proposed context; ``transfer_syntax`` is only significant on acceptance."""

    context_id: int
    result: int
    transfer_syntax: str


# -- PDUs --------------------------------------------------------------------------------
@dataclass(frozen=True)
class AssociateRQ:
    called_ae: str
    calling_ae: str
    presentation_contexts: tuple[PresentationContextRQ, ...]
    user_information: UserInformation = field(default_factory=UserInformation)
    application_context: str = APPLICATION_CONTEXT
    protocol_version: int = 1

    def encode(self) -> bytes:
        items = b"".join(_encode_context_rq(pc) for pc in self.presentation_contexts)
        return _encode_associate(ASSOCIATE_RQ, self, items)


@dataclass(frozen=True)
class AssociateAC:
    called_ae: str
    calling_ae: str
    presentation_contexts: tuple[PresentationContextAC, ...]
    user_information: UserInformation = field(default_factory=UserInformation)
    application_context: str = APPLICATION_CONTEXT
    protocol_version: int = 1

    def encode(self) -> bytes:
        items = b"".join(_encode_context_ac(pc) for pc in self.presentation_contexts)
        return _encode_associate(ASSOCIATE_AC, self, items)


@dataclass(frozen=True)
class AssociateRJ:
    result: int
    source: int
    reason: int

    def encode(self) -> bytes:
        return HEADER.pack(ASSOCIATE_RJ, 4) + bytes((0, self.result, self.source, self.reason))


@dataclass(frozen=True)
class PDV:
    """One presentation data value: a fragment of a command or dataset."""

    context_id: int
    is_command: bool
    is_last: bool
    data: bytes


@dataclass(frozen=True)
class PDataTF:
    pdvs: tuple[PDV, ...]

    def encode(self) -> bytes:
        parts = []
        for pdv in self.pdvs:
            control = (MCH_COMMAND if pdv.is_command else 0) | (MCH_LAST if pdv.is_last else 0)
            parts.append(_PDV.pack(len(pdv.data) + 2, pdv.context_id, control))
            parts.append(pdv.data)
        body = b"".join(parts)
        return HEADER.pack(P_DATA_TF, len(body)) + body


@dataclass(frozen=True)
class ReleaseRQ:
    def encode(self) -> bytes:
        return HEADER.pack(RELEASE_RQ, 4) + b"\0\0\0\0"


@dataclass(frozen=True)
class ReleaseRP:
    def encode(self) -> bytes:
        return HEADER.pack(RELEASE_RP, 4) + b"\0\0\0\0"


@dataclass(frozen=True)
class Abort:
    source: int = ABORT_SOURCE_PROVIDER
    reason: int = ABORT_NOT_SPECIFIED

    def encode(self) -> bytes:
        return HEADER.pack(ABORT, 4) + bytes((0, 0, self.source, self.reason))


PDU = Union[AssociateRQ, AssociateAC, AssociateRJ, PDataTF, ReleaseRQ, ReleaseRP, Abort]


# -- decoding ----------------------------------------------------------------------------
def decode(data: bytes | bytearray | memoryview) -> PDU:
    """Decode one whole PDU (header included); the length must match exactly."""
    view = memoryview(data)
    if len(view) < HEADER_SIZE:
        raise PDUError(f"PDU shorter than its header ({len(view)} bytes)")
    pdu_type, length = HEADER.unpack_from(view)
    if len(view) != HEADER_SIZE + length:
        raise PDUError(f"PDU length field says {length} bytes, {len(view) - HEADER_SIZE} present")
    return decode_body(pdu_type, view[HEADER_SIZE:])


def decode_associate_rq(data: bytes | bytearray | memoryview) -> AssociateRQ:
    """Decode a whole PDU that must be an A-ASSOCIATE-RQ."""
    message = decode(data)
    if not isinstance(message, AssociateRQ):
        raise PDUError(f"expected an A-ASSOCIATE-RQ, got {type(message).__name__}")
    return message


def decode_body(pdu_type: int, body: bytes | bytearray | memoryview) -> PDU:
    """Decode the part of a PDU after its 6-byte header."""
    view = memoryview(body)
    if pdu_type in (ASSOCIATE_RQ, ASSOCIATE_AC):
        return _decode_associate(pdu_type, view)
    if pdu_type == P_DATA_TF:
        pdvs = tuple(PDV(ctx, bool(mch & MCH_COMMAND), bool(mch & MCH_LAST), bytes(view[start:end]))
                     for ctx, mch, start, end in iter_pdvs(view))
        return PDataTF(pdvs)
    if pdu_type in (ASSOCIATE_RJ, RELEASE_RQ, RELEASE_RP, ABORT):
        if len(view) != 4:
            raise PDUError(f"PDU type 0x{pdu_type:02x} must have length 4, not {len(view)}")
        if pdu_type == ASSOCIATE_RJ:
            return AssociateRJ(view[1], view[2], view[3])
        if pdu_type == ABORT:
            return Abort(view[2], view[3])
        return ReleaseRQ() if pdu_type == RELEASE_RQ else ReleaseRP()
    raise PDUError(f"unknown PDU type 0x{pdu_type:02x}")


def iter_pdvs(body: memoryview) -> Iterator[tuple[int, int, int, int]]:
    """(context id, message control header, start, end) of each PDV in a P-DATA-TF body.

    ``body[start:end]`` is the fragment; nothing is copied.
    """
    offset, size = 0, len(body)
    if size == 0:
        raise PDUError("P-DATA-TF without any PDV")
    while offset < size:
        if size - offset < 6:
            raise PDUError("truncated PDV header")
        length, context_id, control = _PDV.unpack_from(body, offset)
        end = offset + 4 + length
        if length < 2 or end > size:
            raise PDUError(f"PDV length {length} does not fit the P-DATA-TF")
        yield context_id, control, offset + 6, end
        offset = end


def _title(view: memoryview) -> str:
    """An AE title field, every byte kept (latin-1) so that the acceptance policy, not the
    decoder, judges a non-ASCII or control character (A-ASSOCIATE-RJ rather than A-ABORT)."""
    return bytes(view).decode("latin-1").rstrip("\0 ")


def _decode_associate(pdu_type: int, view: memoryview) -> AssociateRQ | AssociateAC:
    if len(view) < 68:
        raise PDUError(f"A-ASSOCIATE PDU of {len(view)} bytes is shorter than its fixed fields")
    (version,) = _U16.unpack_from(view, 0)
    called, calling = _title(view[4:20]), _title(view[20:36])
    application_context = ""
    rq_contexts: list[PresentationContextRQ] = []
    ac_contexts: list[PresentationContextAC] = []
    user = UserInformation()
    for item_type, value in _items(view[68:]):
        if item_type == ITEM_APPLICATION_CONTEXT:
            application_context = _text(value)
        elif item_type == ITEM_PRESENTATION_CONTEXT_RQ and pdu_type == ASSOCIATE_RQ:
            rq_contexts.append(_decode_context_rq(value))
        elif item_type == ITEM_PRESENTATION_CONTEXT_AC and pdu_type == ASSOCIATE_AC:
            ac_contexts.append(_decode_context_ac(value))
        elif item_type == ITEM_USER_INFORMATION:
            user = _decode_user_information(value)
        else:
            raise PDUError(f"unexpected item 0x{item_type:02x} in an A-ASSOCIATE PDU")
    if not application_context:
        raise PDUError("A-ASSOCIATE PDU without an application context item")
    if pdu_type == ASSOCIATE_RQ:
        if not rq_contexts:
            raise PDUError("A-ASSOCIATE-RQ without a presentation context")
        return AssociateRQ(called, calling, tuple(rq_contexts), user, application_context, version)
    return AssociateAC(called, calling, tuple(ac_contexts), user, application_context, version)


def _decode_context_rq(value: memoryview) -> PresentationContextRQ:
    if len(value) < 4:
        raise PDUError("presentation context item too short")
    abstract, syntaxes = "", []
    for sub_type, sub in _items(value[4:]):
        if sub_type == ITEM_ABSTRACT_SYNTAX:
            if abstract:
                raise PDUError("presentation context with two abstract syntaxes")
            abstract = _text(sub)
        elif sub_type == ITEM_TRANSFER_SYNTAX:
            syntaxes.append(_text(sub))
        else:
            raise PDUError(f"unexpected sub-item 0x{sub_type:02x} in a presentation context")
    if not abstract or not syntaxes:
        raise PDUError(f"presentation context {value[0]} lacks an abstract or transfer syntax")
    return PresentationContextRQ(value[0], abstract, tuple(syntaxes))


def _decode_context_ac(value: memoryview) -> PresentationContextAC:
    if len(value) < 4:
        raise PDUError("presentation context item too short")
    syntax = ""
    for sub_type, sub in _items(value[4:]):
        if sub_type == ITEM_TRANSFER_SYNTAX:
            syntax = _text(sub)
    return PresentationContextAC(value[0], value[2], syntax)


# -- encoding ----------------------------------------------------------------------------
def _ae(title: str) -> bytes:
    return title.encode("ascii", "replace")[:16].ljust(16, b" ")


def _encode_associate(pdu_type: int, pdu: AssociateRQ | AssociateAC, contexts: bytes) -> bytes:
    body = b"".join((
        _U16.pack(pdu.protocol_version), b"\0\0", _ae(pdu.called_ae), _ae(pdu.calling_ae), b"\0" * 32,
        _item(ITEM_APPLICATION_CONTEXT, pdu.application_context.encode("ascii")),
        contexts,
        _encode_user_information(pdu.user_information),
    ))
    return HEADER.pack(pdu_type, len(body)) + body


def _encode_context_rq(pc: PresentationContextRQ) -> bytes:
    subs = _item(ITEM_ABSTRACT_SYNTAX, pc.abstract_syntax.encode("ascii"))
    subs += b"".join(_item(ITEM_TRANSFER_SYNTAX, ts.encode("ascii")) for ts in pc.transfer_syntaxes)
    return _item(ITEM_PRESENTATION_CONTEXT_RQ, bytes((pc.context_id, 0, 0, 0)) + subs)


def _encode_context_ac(pc: PresentationContextAC) -> bytes:
    sub = _item(ITEM_TRANSFER_SYNTAX, pc.transfer_syntax.encode("ascii"))
    return _item(ITEM_PRESENTATION_CONTEXT_AC, bytes((pc.context_id, 0, pc.result, 0)) + sub)


# The DIMSE command codec and message framing live in ``commands``; their names stay reachable as ``pdu.X``.
from pacsnode.dimse.commands import *  # noqa: E402,F401,F403
from pacsnode.dimse.commands import (  # noqa: E402,F401
    Command, decode_command, encode_command, encode_fragments, encode_message, error_comment)
