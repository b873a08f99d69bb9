"""The ``PACSNODE HR`` private block: recognition advice carried in C-FIND responses.

No standard attribute means "recognised" (RECOGNITION.md), so a node tells a peer through a
private block in group 0011, returned only when the query asks for it, and never written
into stored instances:

| tag | VR | meaning |
|---|---|---|
| (0011,0010) | LO | private creator ``PACSNODE HR`` |
| (0011,xx01) | CS | ``HR_ELIGIBLE`` or ``NOT_ELIGIBLE`` |
| (0011,xx02) | LO | the mark's scope label, e.g. ``黔HR`` |
| (0011,xx03) | LO | failed conditions (multi-valued, upper-cased codes, whole) |
| (0011,xx04) | DA | valid until |
| (0011,xx05) | LO | exam item code (ours) |
| (0011,xx06) | LO | producing institution code (ours) |

``xx`` is the block byte the creator was given in (0011,00xx); the requester picks it.

(0011,xx03) is LO, not CS: CS values are at most 16 characters and condition codes are
longer (``producer_not_qualified``), so a CS cut them into codes nobody documents (issue 10).
LO holds 64 characters per value; a code is never cut, and one that would not fit is
refused here rather than sent mangled. A reader takes either VR (older nodes sent CS).
"""

from __future__ import annotations

from typing import Any

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.dataset import Dataset

HR_CREATOR = "PACSNODE HR"
GROUP = 0x0011
ELEMENTS: dict[int, tuple[str, str]] = {
    0x01: ("CS", "status"),
    0x02: ("LO", "scope"),
    0x03: ("LO", "failed"),
    0x04: ("DA", "valid_until"),
    0x05: ("LO", "item"),
    0x06: ("LO", "producer"),
}


def hr_block_byte(identifier: Dataset) -> int | None:
    """The block byte (0x10-0xFF) under which the identifier asks for our block, if it does."""
    for element in identifier.group_dataset(GROUP):
        offset = element.tag.element
        if 0x10 <= offset <= 0xFF and str(element.value or "").strip() == HR_CREATOR:
            return offset
    return None


def request_hr_block(ds: Dataset, block: int = 0x10) -> None:
    """Ask for the block in a query identifier (empty values = return keys)."""
    ds.add_new((GROUP << 16) | block, "LO", HR_CREATOR)
    for offset, (vr, _name) in ELEMENTS.items():
        ds.add_new((GROUP << 16) | (block << 8) | offset, vr, "")


def write_hr_block(ds: Dataset, block: int, values: dict[str, Any]) -> None:
    """Fill the block in a response; upper-case CS values (codes are snake_case in the rules).

    The scope label is usually not ASCII (``黔HR``): a response whose character set cannot
    carry it is switched to UTF-8 (ISO_IR 192), which every other value can also use.
    """
    texts = [str(v) for v in values.values() if isinstance(v, str)]
    current = ds.get("SpecificCharacterSet", "")
    current = [current] if isinstance(current, str) else list(current)
    if any(not t.isascii() for t in texts) and not set(current) & {"ISO_IR 192", "GB18030", "GBK"}:
        ds.SpecificCharacterSet = "ISO_IR 192"
    ds.add_new((GROUP << 16) | block, "LO", HR_CREATOR)
    for offset, (vr, name) in ELEMENTS.items():
        value = values.get(name, "")
        if name == "failed":
            value = [_code(v) for v in (value if isinstance(value, (list, tuple)) else [value]) if str(v)]
        elif vr == "CS":
            value = str(value).upper()
        ds.add_new((GROUP << 16) | (block << 8) | offset, vr, value)


MAX_LO = 64


def _code(value: object) -> str:
    """A failed-condition code as sent: upper-cased, whole; never cut into another code."""
    code = str(value).upper()
    if len(code) > MAX_LO or "\\" in code or not code.isprintable():
        raise ValueError(f"condition code {code[:80]!r} does not fit one LO value")
    return code


def read_hr_block(ds: Dataset) -> dict[str, Any]:
    """The block's values from a response (codes lower-cased back), or {} when absent.

    A response in Implicit VR carries our private elements with no VR the reader knows (UN):
    their values arrive as raw bytes, decoded here with the response's character set.
    """
    block = hr_block_byte(ds)
    if block is None:
        return {}
    out: dict[str, Any] = {}
    for offset, (_vr, name) in ELEMENTS.items():
        tag = (GROUP << 16) | (block << 8) | offset
        if tag not in ds:
            continue
        values = _texts(ds, ds[tag].value)
        if name == "failed":
            out[name] = [v.lower() for v in values if v]
        else:
            out[name] = "\\".join(values)
    return out


def _texts(ds: Dataset, value: Any) -> list[str]:
    """An element value as trimmed strings (one per value of a multi-valued element)."""
    if isinstance(value, bytes):
        charset = ds.get("SpecificCharacterSet", "") or "ISO_IR 6"
        text = decode_bytes(value, convert_encodings(charset), set())
        return [part.strip(" \x00") for part in text.split("\\")]
    items = [value] if isinstance(value, str) or value is None else list(value)
    return [str(v or "").strip(" \x00") for v in items]
