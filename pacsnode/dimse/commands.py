"""DIMSE command sets (PS3.7 E: group 0000, always Implicit VR Little Endian), as plain bytes.

The command half of the wire codec (``pdu`` is the upper-layer half and re-exports these
names): tags, command fields, a decoded :class:`Command` with typed accessors, and the
encoder every service uses for its responses and requests. No sockets, no state.
"""

from __future__ import annotations

import struct



class PDUError(ValueError):
    """A PDU, item or command set is malformed: the association must be aborted."""

COMMAND_GROUP_LENGTH = 0x00000000
AFFECTED_SOP_CLASS_UID = 0x00000002
COMMAND_FIELD = 0x00000100
MESSAGE_ID = 0x00000110
MESSAGE_ID_BEING_RESPONDED_TO = 0x00000120
MOVE_DESTINATION = 0x00000600
PRIORITY = 0x00000700
COMMAND_DATASET_TYPE = 0x00000800
STATUS = 0x00000900
ERROR_COMMENT = 0x00000902
AFFECTED_SOP_INSTANCE_UID = 0x00001000
MOVE_ORIGINATOR_AET = 0x00001030
MOVE_ORIGINATOR_MESSAGE_ID = 0x00001031
REQUESTED_SOP_CLASS_UID = 0x00000003
EVENT_TYPE_ID = 0x00001002
REQUESTED_SOP_INSTANCE_UID = 0x00001001
ACTION_TYPE_ID = 0x00001008
NUMBER_OF_REMAINING = 0x00001020
NUMBER_OF_COMPLETED = 0x00001021
NUMBER_OF_FAILED = 0x00001022
NUMBER_OF_WARNING = 0x00001023

C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
C_FIND_RQ = 0x0020
C_FIND_RSP = 0x8020
C_ECHO_RQ = 0x0030
C_ECHO_RSP = 0x8030
C_GET_RQ = 0x0010
C_GET_RSP = 0x8010
C_MOVE_RQ = 0x0021
C_MOVE_RSP = 0x8021
C_CANCEL_RQ = 0x0FFF
N_EVENT_REPORT_RQ = 0x0100
N_EVENT_REPORT_RSP = 0x8100
N_ACTION_RQ = 0x0130
N_ACTION_RSP = 0x8130
NO_DATASET = 0x0101
DATASET_PRESENT = 0x0001  # any value but 0x0101 says "a dataset follows" (PS3.7 E.2)

_ELEMENT = struct.Struct("<HHL")
_VR_OF = {  # the command elements we write, by tag
    COMMAND_GROUP_LENGTH: "UL", AFFECTED_SOP_CLASS_UID: "UI", COMMAND_FIELD: "US", MESSAGE_ID: "US",
    MESSAGE_ID_BEING_RESPONDED_TO: "US", MOVE_DESTINATION: "AE", PRIORITY: "US", COMMAND_DATASET_TYPE: "US",
    STATUS: "US", ERROR_COMMENT: "LO", AFFECTED_SOP_INSTANCE_UID: "UI", MOVE_ORIGINATOR_AET: "AE",
    MOVE_ORIGINATOR_MESSAGE_ID: "US", REQUESTED_SOP_CLASS_UID: "UI", REQUESTED_SOP_INSTANCE_UID: "UI",
    EVENT_TYPE_ID: "US", ACTION_TYPE_ID: "US", NUMBER_OF_REMAINING: "US", NUMBER_OF_COMPLETED: "US",
    NUMBER_OF_FAILED: "US", NUMBER_OF_WARNING: "US",
}


class Command(dict[int, bytes]):
    """A decoded command set: tag → raw value bytes, with typed accessors."""

    def us(self, tag: int, default: int | None = None) -> int | None:
        value = self.get(tag)
        if value is None:
            return default
        if len(value) != 2:
            raise PDUError(f"command element ({tag >> 16:04x},{tag & 0xFFFF:04x}) is not a US")
        return int.from_bytes(value, "little")

    def text(self, tag: int) -> str:
        try:
            return self.get(tag, b"").decode("ascii").rstrip("\0 ").strip()
        except UnicodeDecodeError:
            raise PDUError("non-ASCII text in a command set") from None


def decode_command(data: bytes | bytearray | memoryview) -> Command:
    """Parse a command set (every element must be in group 0000)."""
    view = memoryview(data)
    command, offset, size = Command(), 0, len(view)
    while offset < size:
        if size - offset < 8:
            raise PDUError("truncated command element")
        group, element, length = _ELEMENT.unpack_from(view, offset)
        end = offset + 8 + length
        if group != 0 or end > size:
            raise PDUError(f"bad command element ({group:04x},{element:04x}) length {length}")
        command[element] = bytes(view[offset + 8:end])
        offset = end
    if COMMAND_FIELD not in command:
        raise PDUError("command set without a Command Field")
    return command


def encode_command(elements: dict[int, int | str]) -> bytes:
    """Encode a command set from tag → value (US/UL ints, UI/AE/LO strings), group length first."""
    parts = []
    for tag in sorted(elements):
        if tag == COMMAND_GROUP_LENGTH:
            continue
        value, vr = elements[tag], _VR_OF[tag]
        if vr == "US":
            raw = int(value).to_bytes(2, "little")
        elif vr == "UL":
            raw = int(value).to_bytes(4, "little")
        else:
            raw = str(value).encode("ascii", "replace")
            if len(raw) % 2:
                raw += b"\0" if vr == "UI" else b" "
        parts.append(_ELEMENT.pack(0, tag & 0xFFFF, len(raw)) + raw)
    body = b"".join(parts)
    return _ELEMENT.pack(0, 0, 4) + len(body).to_bytes(4, "little") + body


def error_comment(text: str) -> str:
    """An Error Comment (0000,0902) value: LO, ASCII, at most 64 characters, no backslash."""
    return text.replace("\\", "/").encode("ascii", "replace").decode()[:64]


# -- a DIMSE message as P-DATA-TF PDUs (PS3.8 9.3.5, E.2) -------------------------------
_P_DATA_TF = 0x04  # the same numbers as in ``pdu`` (which imports this module, not the reverse)
_MCH_COMMAND, _MCH_LAST = 0x01, 0x02
_PDATA_HEADER = struct.Struct(">BxL")
_PDV_HEADER = struct.Struct(">LBB")


def encode_message(context_id: int, command: bytes, dataset: bytes | None, peer_max_pdu: int) -> bytes:
    """The P-DATA-TF PDUs carrying one DIMSE message, none longer than the peer's maximum.

    ``peer_max_pdu`` is the maximum length the peer announced (0: unlimited); it bounds the
    variable part of each P-DATA-TF, PDV headers included (PS3.8 D.1).
    """
    message = encode_fragments(context_id, command, True, peer_max_pdu)
    if dataset is None:
        return message
    return message + encode_fragments(context_id, dataset, False, peer_max_pdu)


def encode_fragments(context_id: int, payload: bytes, is_command: bool, peer_max_pdu: int) -> bytes:
    """One command set or dataset as P-DATA-TF PDUs of one PDV each, the last one flagged.

    Lets a sender encode the constant part of a message (a C-FIND-RSP Pending command) once.
    """
    limit = peer_max_pdu - 6 if peer_max_pdu else 0
    if peer_max_pdu and limit < 1:
        raise PDUError(f"peer maximum PDU length {peer_max_pdu} cannot carry a PDV")
    base = _MCH_COMMAND if is_command else 0
    size = len(payload)
    step = limit or max(size, 1)
    out: list[bytes] = []
    for offset in range(0, max(size, 1), step):
        chunk = payload[offset:offset + step]
        last = _MCH_LAST if offset + step >= size else 0
        out.append(_PDATA_HEADER.pack(_P_DATA_TF, len(chunk) + 6)
                   + _PDV_HEADER.pack(len(chunk) + 2, context_id, base | last)
                   + chunk)
    return b"".join(out)
