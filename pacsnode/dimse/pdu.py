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
ITEM_USER_INFORMATION = 0x50
ITEM_MAXIMUM_LENGTH = 0x51
ITEM_IMPLEMENTATION_CLASS_UID = 0x52
ITEM_ASYNC_OPERATIONS_WINDOW = 0x53
ITEM_ROLE_SELECTION = 0x54
ITEM_IMPLEMENTATION_VERSION_NAME = 0x55
ITEM_SOP_CLASS_EXTENDED = 0x56
ITEM_SOP_CLASS_COMMON_EXTENDED = 0x57
ITEM_USER_IDENTITY_RQ = 0x58
ITEM_USER_IDENTITY_AC = 0x59

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

_ITEM = struct.Struct(">BxH")
_PDV = struct.Struct(">LBB")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">L")


from pacsnode.dimse.commands import PDUError  # noqa: E402  (one exception for both halves of the codec)


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


@dataclass(frozen=True)
class RoleSelection:
    sop_class_uid: str
    scu_role: bool
    scp_role: bool


@dataclass(frozen=True)
class ExtendedNegotiation:
    sop_class_uid: str
    application_information: bytes


@dataclass(frozen=True)
class CommonExtendedNegotiation:
    sop_class_uid: str
    service_class_uid: str
    related_general_sop_classes: tuple[str, ...] = ()


@dataclass(frozen=True)
class UserIdentity:
    """User Identity Negotiation RQ (PS3.7 D.3.3.7): type 1 username, 2 +passcode, 3 Kerberos, 4 SAML, 5 JWT."""

    identity_type: int
    positive_response_requested: bool
    primary_field: bytes
    secondary_field: bytes = b""


@dataclass(frozen=True)
class UserInformation:
    """The user information item; unknown sub-items are kept raw (type, value)."""

    maximum_length: int | None = None
    implementation_class_uid: str = ""
    implementation_version_name: str = ""
    async_operations_window: tuple[int, int] | None = None
    role_selections: tuple[RoleSelection, ...] = ()
    extended_negotiations: tuple[ExtendedNegotiation, ...] = ()
    common_extended_negotiations: tuple[CommonExtendedNegotiation, ...] = ()
    user_identity: UserIdentity | None = None
    user_identity_response: bytes | None = None  # AC only
    other_items: tuple[tuple[int, bytes], ...] = ()


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


def _items(view: memoryview) -> Iterator[tuple[int, memoryview]]:
    """(item type, value) of consecutive ``type, reserved, 2-byte length`` items."""
    offset, size = 0, len(view)
    while offset < size:
        if size - offset < 4:
            raise PDUError("truncated item header")
        item_type, length = _ITEM.unpack_from(view, offset)
        end = offset + 4 + length
        if end > size:
            raise PDUError(f"item 0x{item_type:02x} of length {length} overruns its container")
        yield item_type, view[offset + 4:end]
        offset = end


def _text(view: memoryview) -> str:
    """A UID or name from an item: ASCII, trailing NUL/space padding removed."""
    try:
        return bytes(view).decode("ascii").rstrip("\0 ")
    except UnicodeDecodeError:
        raise PDUError("non-ASCII text in an item") from None


def _title(view: memoryview) -> str:
    """An AE title field, every byte kept (latin-1) so that the acceptance policy, not the
    decoder, judges a non-ASCII or control character (A-ASSOCIATE-RJ rather than A-ABORT)."""
    return bytes(view).decode("latin-1").rstrip("\0 ")


def _u16_prefixed(view: memoryview, offset: int) -> tuple[memoryview, int]:
    if offset + 2 > len(view):
        raise PDUError("truncated length-prefixed field")
    (length,) = _U16.unpack_from(view, offset)
    end = offset + 2 + length
    if end > len(view):
        raise PDUError("length-prefixed field overruns its item")
    return view[offset + 2:end], end


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


def _decode_user_information(view: memoryview) -> UserInformation:
    fields: dict[str, object] = {}
    roles, extended, common, other = [], [], [], []
    for sub_type, value in _items(view):
        if sub_type == ITEM_MAXIMUM_LENGTH:
            if len(value) != 4:
                raise PDUError("maximum length sub-item must hold 4 bytes")
            fields["maximum_length"] = _U32.unpack_from(value)[0]
        elif sub_type == ITEM_IMPLEMENTATION_CLASS_UID:
            fields["implementation_class_uid"] = _text(value)
        elif sub_type == ITEM_IMPLEMENTATION_VERSION_NAME:
            fields["implementation_version_name"] = _text(value)
        elif sub_type == ITEM_ASYNC_OPERATIONS_WINDOW:
            if len(value) != 4:
                raise PDUError("asynchronous operations window sub-item must hold 4 bytes")
            fields["async_operations_window"] = (_U16.unpack_from(value)[0], _U16.unpack_from(value, 2)[0])
        elif sub_type == ITEM_ROLE_SELECTION:
            uid, end = _u16_prefixed(value, 0)
            if end + 2 != len(value):
                raise PDUError("role selection sub-item has a bad length")
            roles.append(RoleSelection(_text(uid), bool(value[end]), bool(value[end + 1])))
        elif sub_type == ITEM_SOP_CLASS_EXTENDED:
            uid, end = _u16_prefixed(value, 0)
            extended.append(ExtendedNegotiation(_text(uid), bytes(value[end:])))
        elif sub_type == ITEM_SOP_CLASS_COMMON_EXTENDED:
            common.append(_decode_common_extended(value))
        elif sub_type == ITEM_USER_IDENTITY_RQ:
            if len(value) < 2:
                raise PDUError("user identity sub-item too short")
            primary, end = _u16_prefixed(value, 2)
            secondary, end = _u16_prefixed(value, end) if end < len(value) else (memoryview(b""), end)
            fields["user_identity"] = UserIdentity(value[0], bool(value[1]), bytes(primary), bytes(secondary))
        elif sub_type == ITEM_USER_IDENTITY_AC:
            response, _end = _u16_prefixed(value, 0)
            fields["user_identity_response"] = bytes(response)
        else:
            other.append((sub_type, bytes(value)))
    return UserInformation(role_selections=tuple(roles), extended_negotiations=tuple(extended),
                           common_extended_negotiations=tuple(common), other_items=tuple(other),
                           **fields)  # type: ignore[arg-type]


def _decode_common_extended(value: memoryview) -> CommonExtendedNegotiation:
    sop_class, end = _u16_prefixed(value, 0)
    service_class, end = _u16_prefixed(value, end)
    related_block, end = _u16_prefixed(value, end)
    related, offset = [], 0
    while offset < len(related_block):
        uid, offset = _u16_prefixed(related_block, offset)
        related.append(_text(uid))
    return CommonExtendedNegotiation(_text(sop_class), _text(service_class), tuple(related))


# -- encoding ----------------------------------------------------------------------------
def _item(item_type: int, value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise PDUError(f"item 0x{item_type:02x} too long ({len(value)} bytes)")
    return _ITEM.pack(item_type, len(value)) + value


def _prefixed(value: bytes) -> bytes:
    return _U16.pack(len(value)) + value


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


def _encode_user_information(user: UserInformation) -> bytes:
    subs: list[bytes] = []
    if user.maximum_length is not None:
        subs.append(_item(ITEM_MAXIMUM_LENGTH, _U32.pack(user.maximum_length)))
    if user.implementation_class_uid:
        subs.append(_item(ITEM_IMPLEMENTATION_CLASS_UID, user.implementation_class_uid.encode("ascii")))
    if user.async_operations_window is not None:
        invoked, performed = user.async_operations_window
        subs.append(_item(ITEM_ASYNC_OPERATIONS_WINDOW, _U16.pack(invoked) + _U16.pack(performed)))
    for role in user.role_selections:
        subs.append(_item(ITEM_ROLE_SELECTION, _prefixed(role.sop_class_uid.encode("ascii"))
                          + bytes((int(role.scu_role), int(role.scp_role)))))
    if user.implementation_version_name:
        subs.append(_item(ITEM_IMPLEMENTATION_VERSION_NAME, user.implementation_version_name.encode("ascii")))
    for ext in user.extended_negotiations:
        subs.append(_item(ITEM_SOP_CLASS_EXTENDED,
                          _prefixed(ext.sop_class_uid.encode("ascii")) + ext.application_information))
    for common in user.common_extended_negotiations:
        related = b"".join(_prefixed(uid.encode("ascii")) for uid in common.related_general_sop_classes)
        value = (_prefixed(common.sop_class_uid.encode("ascii"))
                 + _prefixed(common.service_class_uid.encode("ascii")) + _prefixed(related))
        subs.append(_item(ITEM_SOP_CLASS_COMMON_EXTENDED, value))
    if user.user_identity is not None:
        ident = user.user_identity
        subs.append(_item(ITEM_USER_IDENTITY_RQ, bytes((ident.identity_type, int(ident.positive_response_requested)))
                          + _prefixed(ident.primary_field) + _prefixed(ident.secondary_field)))
    if user.user_identity_response is not None:
        subs.append(_item(ITEM_USER_IDENTITY_AC, _prefixed(user.user_identity_response)))
    subs.extend(_item(item_type, value) for item_type, value in user.other_items)
    return _item(ITEM_USER_INFORMATION, b"".join(subs))


# The DIMSE command codec and message framing live in ``commands``; their names stay reachable as ``pdu.X``.
from pacsnode.dimse.commands import *  # noqa: E402,F401,F403
from pacsnode.dimse.commands import (  # noqa: E402,F401
    Command, decode_command, encode_command, encode_fragments, encode_message, error_comment)
