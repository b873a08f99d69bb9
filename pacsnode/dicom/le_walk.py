"""The top-level elements of a little endian data set, found with ``struct`` alone.

``header.scan`` needs, on every store, the raw bytes of a few dozen indexed tags and proof
that the file is whole. pydicom's ``data_element_generator`` gave both but cost most of the
store's CPU for a small instance (issue 13: a Python generator step, a namedtuple and a
dictionary lookup per element). This walks the same elements by their lengths, skipping
sequences and encapsulated values item by item, and keeps only the tags asked for.

Anything it is not sure of (a length past the end of the file, an item where none may be, an
undefined length on a value that cannot have one) raises ``NotPlain`` and the caller goes
back to pydicom's generator, which decides exactly as before.
"""

from __future__ import annotations

import struct
from typing import Any, Collection

from pydicom.dataelem import RawDataElement
from pydicom.tag import BaseTag

ITEM, ITEM_DELIM, SEQ_DELIM = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}
SHORT_VRS = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN", b"SH",
             b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
MAX_DEPTH = 32


class NotPlain(Exception):
    """The data set has something this walker does not vouch for: use pydicom's generator."""


_EXPLICIT = struct.Struct("<HH2sH")  # group, element, VR, short length (precompiled: issue 13)
_IMPLICIT = struct.Struct("<HHL")  # group, element, length
_LONG_LENGTH = struct.Struct("<L")


def _header(buf: Any, pos: int, end: int, implicit: bool) -> tuple[int, bytes | None, int, int]:
    """(tag, VR or None, value length, value offset) of the element at ``pos``."""
    if pos + 8 > end:
        raise NotPlain("element header past the end")
    if implicit:
        group, element, length = _IMPLICIT.unpack_from(buf, pos)
        return (group << 16) | element, None, length, pos + 8
    group, element, vr, length = _EXPLICIT.unpack_from(buf, pos)
    tag = (group << 16) | element
    if group == 0xFFFE:  # items and delimiters have no VR, whatever the syntax
        return tag, None, _LONG_LENGTH.unpack_from(buf, pos + 4)[0], pos + 8
    if vr in SHORT_VRS:
        return tag, vr, length, pos + 8
    if vr in LONG_VRS:
        if pos + 12 > end:
            raise NotPlain("element header past the end")
        return tag, vr, _LONG_LENGTH.unpack_from(buf, pos + 8)[0], pos + 12
    raise NotPlain(f"VR {vr!r}")


class BeyondPrefix(NotPlain):
    """The walk needs bytes past the prefix it was given: walk the whole file instead."""


def top_level(buf: Any, pos: int, implicit: bool, wanted: Collection[int],
              size: int | None = None) -> dict[int, RawDataElement]:
    """The ``wanted`` top-level elements from ``pos`` to the end of the file, which the last
    element must end exactly at (else NotPlain: a cut file is pydicom's to judge).

    ``buf`` is the whole file, or with ``size`` (the file's length) its first bytes: values are
    skipped by their lengths, so a large instance's pixel data need not be read or mapped; a
    header, a wanted value or a sequence past the prefix raises BeyondPrefix.
    """
    prefix = len(buf)
    end = prefix if size is None else size
    found: dict[int, RawDataElement] = {}
    while pos < end:
        if prefix < end and pos + 12 > prefix:
            raise BeyondPrefix("element header past the prefix")
        tag, vr, length, start = _header(buf, pos, end, implicit)
        if tag >> 16 in (2, 0xFFFE):
            raise NotPlain(f"{tag:08X} in the data set")
        if length == UNDEFINED:
            if prefix < end:
                raise BeyondPrefix("undefined length: walked in the whole file")
            stop = _skip_undefined(buf, start, end, implicit, vr, 0)
        else:
            stop = start + length
            if stop > end:
                raise NotPlain("value past the end of the file")
        if tag in wanted:
            if stop > prefix:
                raise BeyondPrefix("wanted value past the prefix")
            found[tag] = RawDataElement(BaseTag(tag), vr.decode("ascii") if vr else None, length,
                                        bytes(buf[start:stop]), start, implicit, True)
        pos = stop
    return found


def _skip_undefined(buf: Any, pos: int, end: int, implicit: bool, vr: bytes | None, depth: int) -> int:
    """Past a value of undefined length: a sequence, or encapsulated (item) data."""
    if depth > MAX_DEPTH:
        raise NotPlain("nested too deep")
    if vr in (None, b"SQ"):
        return _skip_items(buf, pos, end, implicit, depth)
    if vr == b"UN":  # pydicom reads it as an implicit VR sequence
        return _skip_items(buf, pos, end, True, depth)
    if vr in (b"OB", b"OW"):
        while True:
            tag, _vr, length, start = _header(buf, pos, end, True)
            if tag == SEQ_DELIM:
                return start
            if tag != ITEM or length == UNDEFINED or start + length > end:
                raise NotPlain("malformed encapsulated value")
            pos = start + length
    raise NotPlain(f"undefined length on VR {vr!r}")


def _skip_items(buf: Any, pos: int, end: int, implicit: bool, depth: int) -> int:
    while True:
        tag, _vr, length, start = _header(buf, pos, end, True)
        if tag == SEQ_DELIM:
            return start
        if tag != ITEM:
            raise NotPlain(f"{tag:08X} where an item was expected")
        if length != UNDEFINED:
            if start + length > end:
                raise NotPlain("item past the end of the file")
            pos = start + length
            continue
        pos = start
        while True:  # the item's elements, up to its delimiter
            tag, vr, length, start = _header(buf, pos, end, implicit)
            if tag == ITEM_DELIM:
                pos = start
                break
            if length == UNDEFINED:
                pos = _skip_undefined(buf, start, end, implicit, vr, depth + 1)
            elif start + length > end:
                raise NotPlain("value past the end of the file")
            else:
                pos = start + length
