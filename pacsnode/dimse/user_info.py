"""The user information item of an A-ASSOCIATE PDU (PS3.8 9.3.2.3, PS3.7 D.3.3), and the item framing
every A-ASSOCIATE item shares.

Split out of ``pdu`` (module size): the sub-items (maximum length, implementation identity,
asynchronous operations window, role selection, extended negotiation, user identity) are
the part of the association codec that grows with every negotiation feature; the PDUs
themselves stay in ``pdu``, which re-exports every name here. Like ``pdu``: no sockets, no
state, :class:`PDUError` for every malformed input.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterator

from pacsnode.dimse.commands import PDUError

ITEM_USER_INFORMATION = 0x50  # PS3.8 9.3.2.3; sub-items below (PS3.7 D.3.3)
ITEM_MAXIMUM_LENGTH = 0x51
ITEM_IMPLEMENTATION_CLASS_UID = 0x52
ITEM_ASYNC_OPERATIONS_WINDOW = 0x53
ITEM_ROLE_SELECTION = 0x54
ITEM_IMPLEMENTATION_VERSION_NAME = 0x55
ITEM_SOP_CLASS_EXTENDED = 0x56
ITEM_SOP_CLASS_COMMON_EXTENDED = 0x57
ITEM_USER_IDENTITY_RQ = 0x58
ITEM_USER_IDENTITY_AC = 0x59

_ITEM = struct.Struct(">BxH")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">L")


# -- sub-items --------------------------------------------------------------------------
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


# -- item framing -----------------------------------------------------------------------
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


def _u16_prefixed(view: memoryview, offset: int) -> tuple[memoryview, int]:
    if offset + 2 > len(view):
        raise PDUError("truncated length-prefixed field")
    (length,) = _U16.unpack_from(view, offset)
    end = offset + 2 + length
    if end > len(view):
        raise PDUError("length-prefixed field overruns its item")
    return view[offset + 2:end], end


def _item(item_type: int, value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise PDUError(f"item 0x{item_type:02x} too long ({len(value)} bytes)")
    return _ITEM.pack(item_type, len(value)) + value


def _prefixed(value: bytes) -> bytes:
    return _U16.pack(len(value)) + value


# -- the user information item ----------------------------------------------------------
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
