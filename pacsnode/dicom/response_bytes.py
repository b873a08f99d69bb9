"""C-FIND response identifiers written as bytes straight from index rows, no pydicom Dataset.

Profiled at 100k studies, a 1,000-match study-level C-FIND spent 80% of its time building a
pydicom ``Dataset`` per match (``build_response``: ``DataElement`` conversions, tag sorting)
and 15% writing it; the index query was 3%. :class:`ResponseEncoder` is planned once per
request (the return keys in tag order, their VRs and element headers) and writes each match
in a few microseconds, byte for byte what ``build_response`` + ``write_hr_block`` + pydicom's
``write_dataset`` give (``tests/test_response_bytes.py`` proves it over the sample data and
hypothesis-generated rows):

* the same values: ``query.response_value`` (empty → zero length, multi-valued text split
  at backslashes and joined back, private creators echoed, the unique key always present),
  QueryRetrieveLevel and RetrieveAETitle, the PACSNODE HR block when asked;
* the same Specific Character Set: omitted when all is ASCII, else the query's own set when it
  holds every value, else ISO_IR 192; the HR block switches a set that cannot carry its
  (non-ASCII) scope label to ISO_IR 192, as ``write_hr_block`` does;
* little endian, implicit or explicit VR, padding to even length (NUL for UI, space else).

What it does not write it leaves to the pydicom path (``encode`` returns None): sequence keys,
binary and unknown (UN) values, numbers other than US/UL integers, DS/IS text pydicom would
refuse, character sets other than none/ISO_IR 192/GB18030/GBK/ISO_IR 100 (GB2312 by code extension needs
escapes), big endian. Those are rare in a C-FIND and stay correct, only slower.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Any, Mapping

from pydicom.tag import BaseTag

from pacsnode.dicom.charset import UTF8, charset_values, choose_response_charset, is_ir58_only
from pacsnode.dicom.private_hr import ELEMENTS as HR_ELEMENTS, GROUP as HR_GROUP, HR_CREATOR, _code
from pacsnode.dicom.query import UNIQUE_KEYS, response_tag_vr, response_value
from pacsnode.model import Level, Query, QueryKey

# The single character sets written here, and their Python codecs (no code extensions, no escapes).
_CODECS = {UTF8: "utf-8", "GB18030": "gb18030", "GBK": "gbk", "ISO_IR 100": "latin_1"}
_WIDE_SETS = frozenset({UTF8, "GB18030", "GBK"})  # the sets write_hr_block keeps for a non-ASCII scope label
_CHARSET_VRS = frozenset({"SH", "LO", "ST", "LT", "UC", "UT", "PN"})  # encoded with the character set
_ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI", "UR"})  # default repertoire only
_NUMBER_TEXT = {"IS": re.compile(r" *[-+]?[0-9]+ *"),
                "DS": re.compile(r" *[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)? *")}
_INTEGERS = {"US": (struct.Struct("<H"), 0xFFFF), "UL": (struct.Struct("<L"), 0xFFFFFFFF)}
_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
_EXPLICIT_SHORT = struct.Struct("<HH2sH")
_EXPLICIT_LONG = struct.Struct("<HH2s2xL")
_IMPLICIT = struct.Struct("<HHL")
_LENGTH_SHORT, _LENGTH_LONG = struct.Struct("<H"), struct.Struct("<L")
_PLAIN_TEXT_VRS = _CHARSET_VRS | _ASCII_VRS | frozenset(_NUMBER_TEXT)
_SPECIFIC_CHARACTER_SET, _QUERY_RETRIEVE_LEVEL, _RETRIEVE_AE_TITLE = 0x00080005, 0x00080052, 0x00080054


class _Unsupported(Exception):
    """A value this encoder does not write: the match goes to the pydicom path."""


@dataclass(frozen=True)
class _Slot:
    """One return key: where its value comes from and how it is written."""

    key: QueryKey
    tag: BaseTag
    vr: str


class ResponseEncoder:
    """The C-FIND response identifiers of one request, as bytes (see the module docstring).

    ``hr_block`` is the block byte under which the request asked for the PACSNODE HR block
    (None: not asked). ``supported`` is False when no match can be written here (a sequence
    key, big endian): the caller then builds every response with pydicom.
    """

    def __init__(self, query: Query, retrieve_aet: str, hr_block: int | None, *, implicit_vr: bool,
                 little_endian: bool = True) -> None:
        self.implicit_vr = implicit_vr
        self.hr_block = hr_block
        self.query_charsets = charset_values(query.value("SpecificCharacterSet"))
        self.fixed = {_QUERY_RETRIEVE_LEVEL: ("CS", query.level.value), _RETRIEVE_AE_TITLE: ("AE", retrieve_aet)}
        keys = [key for key in query.keys if key.keyword != "SpecificCharacterSet"]
        unique = UNIQUE_KEYS[query.level]
        if query.key(unique) is None:
            keys.append(QueryKey(unique, "UI" if query.level is not Level.PATIENT else "LO"))
        self.slots = [_Slot(key, tag, vr) for key, (tag, vr) in ((k, response_tag_vr(k)) for k in keys)]
        self.supported = little_endian and all(slot.vr != "SQ" for slot in self.slots)
        self.plain = self._plain_plan(retrieve_aet) if self.supported and hr_block is None else None

    def encode(self, match: Mapping[str, Any], hr_values: Mapping[str, Any] | None = None) -> bytes | None:
        """The response for ``match`` (with ``hr_values`` when the block was asked), or None for pydicom."""
        if not self.supported:
            return None
        if self.plain is not None:
            data = self._encode_plain(match)
            if data is not None:
                return data
        try:
            return self._encode(match, hr_values)
        except _Unsupported:
            return None

    # -- the plain case: every value ASCII text or a small integer, no HR block ------------------------
    def _plain_plan(self, retrieve_aet: str) -> list[tuple[bytes | None, str, str, bytes]] | None:
        """(constant bytes, or None and keyword, VR, header prefix) per element in tag order, or None.

        A response whose values are all ASCII (the common case) has no Specific Character Set
        and the same elements in the same order for every match: only the values change.
        """
        if not retrieve_aet.isascii() or any(_is_creator(int(s.tag)) for s in self.slots):
            return None
        entries: dict[int, tuple[bytes | None, str, str, bytes]] = {}
        for tag, (vr, value) in self.fixed.items():
            entries[tag] = (self._element(tag, vr, _raw(vr, value, "ascii")), "", vr, b"")
        for slot in self.slots:
            tag = int(slot.tag)
            if tag in entries or not (slot.vr in _PLAIN_TEXT_VRS or slot.vr in _INTEGERS):
                return None
            entries[tag] = (None, slot.key.keyword, slot.vr, self._prefix(tag, slot.vr))
        return [entries[tag] for tag in sorted(entries)]

    def _encode_plain(self, match: Mapping[str, Any]) -> bytes | None:
        """The response when every value is ASCII text or a US/UL integer; None to take the general way."""
        parts: list[bytes] = []
        long_length = self.implicit_vr
        for constant, keyword, vr, prefix in self.plain:  # type: ignore[union-attr]
            if constant is not None:
                parts.append(constant)
                continue
            value = match.get(keyword)
            if value is None or value == "":
                raw = b""
            elif type(value) is str and value.isascii() and vr not in _NUMBER_TEXT:
                raw = value.encode("ascii")
            elif type(value) is int and vr in _INTEGERS:
                packer, top = _INTEGERS[vr]
                if not 0 <= value <= top:
                    return None
                raw = packer.pack(value)
            elif type(value) is int and vr in _NUMBER_TEXT:
                raw = str(value).encode("ascii")
            else:
                return None
            if len(raw) % 2:
                raw += b"\0" if vr == "UI" else b" "
            if long_length or vr in _LONG_VRS:
                parts += (prefix, _LENGTH_LONG.pack(len(raw)), raw)
            elif len(raw) <= 0xFFFF:
                parts += (prefix, _LENGTH_SHORT.pack(len(raw)), raw)
            else:
                return None
        return b"".join(parts)

    def _prefix(self, tag: int, vr: str) -> bytes:
        """The element header before its length: tag, and in explicit VR the VR (and 2 reserved bytes)."""
        head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
        if self.implicit_vr:
            return head
        return head + vr.encode("ascii") + (b"\0\0" if vr in _LONG_VRS else b"")

    def _element(self, tag: int, vr: str, raw: bytes) -> bytes:
        parts: list[bytes] = []
        self._write(parts, tag, vr, raw)
        return b"".join(parts)

    def _encode(self, match: Mapping[str, Any], hr_values: Mapping[str, Any] | None) -> bytes:
        elements: dict[int, tuple[str, Any]] = dict(self.fixed)
        texts: list[str] = []
        for slot in self.slots:
            value = response_value(slot.key, slot.tag, slot.vr, match.get(slot.key.keyword))
            if isinstance(value, list):
                texts.extend(str(v) for v in value)
            elif value is not None:
                texts.append(str(value))
            elements[int(slot.tag)] = (slot.vr, value)
        charsets = choose_response_charset(texts, self.query_charsets)
        if is_ir58_only(charsets):  # GB2312 needs escapes, written by query._encode_ir58_values
            raise _Unsupported("GB2312 by code extension")
        if self.hr_block is not None and hr_values is not None:
            charsets = self._add_hr(elements, hr_values, charsets)
        if charsets:
            elements[_SPECIFIC_CHARACTER_SET] = ("CS", charsets if len(charsets) > 1 else charsets[0])
            if len(charsets) > 1 or charsets[0] not in _CODECS:
                raise _Unsupported("character set with code extensions or without a plain codec")
        encoding = _CODECS[charsets[0]] if charsets else "ascii"
        parts: list[bytes] = []
        for tag in sorted(elements):
            vr, value = elements[tag]
            self._write(parts, tag, vr, _raw(vr, value, encoding))
        return b"".join(parts)

    def _add_hr(self, elements: dict[int, tuple[str, Any]], values: Mapping[str, Any],
                charsets: list[str]) -> list[str]:
        """The HR block as ``write_hr_block`` adds it; returns the (possibly switched) character set."""
        block = self.hr_block
        assert block is not None
        texts = [str(v) for v in values.values() if isinstance(v, str)]
        if any(not t.isascii() for t in texts) and not set(charsets) & _WIDE_SETS:
            charsets = [UTF8]
        elements[(HR_GROUP << 16) | block] = ("LO", HR_CREATOR)
        for offset, (vr, name) in HR_ELEMENTS.items():
            value = values.get(name, "")
            if name == "failed":
                value = [_code(v) for v in (value if isinstance(value, (list, tuple)) else [value]) if str(v)]
            elif vr == "CS":
                value = str(value).upper()
            elif not isinstance(value, str):
                raise _Unsupported("an HR value that is not text")
            elements[(HR_GROUP << 16) | (block << 8) | offset] = (vr, value)
        return charsets

    def _write(self, parts: list[bytes], tag: int, vr: str, raw: bytes) -> None:
        group, element = tag >> 16, tag & 0xFFFF
        if self.implicit_vr:
            parts.append(_IMPLICIT.pack(group, element, len(raw)))
        elif vr in _LONG_VRS:
            parts.append(_EXPLICIT_LONG.pack(group, element, vr.encode("ascii"), len(raw)))
        elif len(raw) <= 0xFFFF:
            parts.append(_EXPLICIT_SHORT.pack(group, element, vr.encode("ascii"), len(raw)))
        else:
            raise _Unsupported("a value too long for a short explicit VR length")
        parts.append(raw)


def _is_creator(tag: int) -> bool:
    """A private creator element: its value is echoed from the request when the index has none."""
    return (tag >> 16) % 2 == 1 and 0x0010 <= (tag & 0xFFFF) <= 0x00FF


def _raw(vr: str, value: Any, encoding: str) -> bytes:
    """The padded value bytes of one element, as pydicom writes them; raises ``_Unsupported`` otherwise."""
    if value is None or value == "" or value == []:
        return b""
    if vr in _INTEGERS:
        packer, top = _INTEGERS[vr]
        values = value if isinstance(value, list) else [value]
        if not all(type(v) is int and 0 <= v <= top for v in values):
            raise _Unsupported(f"{vr} value {value!r}")
        return b"".join(packer.pack(v) for v in values)
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) for v in items):
        raise _Unsupported(f"{vr} value of type {type(value).__name__}")
    pattern = _NUMBER_TEXT.get(vr)
    if pattern is not None and not all(pattern.fullmatch(v) or v == "" for v in items):
        raise _Unsupported(f"{vr} text pydicom would not take as written")
    text = "\\".join(items)
    if vr in _CHARSET_VRS:
        try:
            raw = text.encode(encoding)
        except UnicodeEncodeError as exc:
            raise _Unsupported("text outside the response's character set") from exc
    elif (vr in _ASCII_VRS or pattern is not None) and text.isascii():
        raw = text.encode("ascii")
    else:
        raise _Unsupported(f"{vr} value")
    if len(raw) % 2:
        raw += b"\0" if vr == "UI" else b" "
    return raw
