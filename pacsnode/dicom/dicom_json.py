"""DICOM JSON (PS3.18 F.2) straight from the bytes of a Part 10 file, without pydicom's Dataset.

The DICOMweb metadata is built at ingest (``web_metadata``), on the acknowledgement path of
every C-STORE and STOW-RS part. Reading the file with ``dcmread`` and calling pydicom's
``to_json_dict`` cost about 10 ms of CPU per instance, more than the rest of the store; this
module walks the elements once with ``struct`` and encodes each value the way pydicom's
``DataElement.to_json_dict`` does (same stripping, splitting, numbers, Person Name groups,
InlineBinary/BulkDataURI threshold), in a fraction of that.

It covers the common case and nothing else: little endian, explicit VR (every encapsulated
syntax included) or implicit VR without private or ambiguous-VR tags, and text that is ASCII
or in a single-byte/UTF-8 character set without ISO 2022 escapes. For anything else it raises
``Unsupported`` and the caller uses pydicom (``web_metadata.build``), so the answer is always
exactly pydicom's: a test compares both on every pydicom test file.
"""

from __future__ import annotations

import base64
import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR

PIXEL_DATA = 0x7FE00010
SPECIFIC_CHARACTER_SET = 0x00080005
ITEM, ITEM_DELIM, SEQ_DELIM = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
EXPLICIT_LE, IMPLICIT_LE = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"
# Syntaxes whose data set is not explicit VR little endian (besides implicit, handled apart).
NOT_EXPLICIT_LE = {"1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1"}
MAX_DEPTH = 16

LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "SV", "UV"}
BYTES_VRS = {"OB", "OD", "OF", "OL", "OV", "OW"}
NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d", "UV": "Q", "SV": "q"}
SPLIT_STRING_VRS = {"AS", "CS", "DA", "DT", "TM"}  # pydicom's convert_string (DA/DT/TM as text)
MULTI_TEXT_VRS = {"LO", "SH", "UC"}  # convert_text: decoded with the character set, split
SINGLE_TEXT_VRS = {"LT", "ST", "UT"}  # convert_single_string: no split
KNOWN_VRS = (LONG_VRS | set(NUMBER_FORMATS) | SPLIT_STRING_VRS | MULTI_TEXT_VRS | SINGLE_TEXT_VRS
             | {"AE", "AT", "DS", "IS", "PN", "UI"})
# pydicom's to_json_dict: a binary value longer than this many bytes becomes a BulkDataURI
# for a threshold of 1024 base64 characters ((threshold // 4) * 3).


class Unsupported(Exception):
    """The file holds something this encoder does not reproduce exactly: use pydicom."""


@dataclass
class Encoded:
    """The DICOM JSON of a file's data set (Pixel Data left out) and where its Pixel Data is."""

    document: dict[str, Any]
    transfer_syntax: str
    pixel_vr: str | None = None  # the VR written in the file (None: implicit VR)
    pixel_offset: int | None = None
    pixel_length: int | None = None  # UNDEFINED for encapsulated Pixel Data
    has_pixel_data: bool = False


@dataclass
class _Context:
    explicit: bool
    codec: str  # Python codec of the text VRs in this data set
    bulk_uri: Callable[[int], str]
    bulk_bytes: int


_CODECS: dict[str, str] = {}


def _codec(value: bytes) -> str:
    """Python codec for a Specific Character Set value, or Unsupported (code extensions)."""
    text = value.decode("latin-1")
    if text not in _CODECS:
        terms = [t.strip() for t in text.rstrip("\x00 ").split("\\")]
        encodings = convert_encodings(terms or [""])
        if len(encodings) != 1 or "2022" in text:
            raise Unsupported(f"character set {text!r}")
        _CODECS[text] = encodings[0]
    return _CODECS[text]


def encode(path: Path | str, bulk_uri: Callable[[int], str], threshold: int = 1024) -> Encoded:
    """The DICOM JSON of the Part 10 file at ``path``; Unsupported when pydicom must do it."""
    with open(path, "rb") as handle:
        size = handle.seek(0, 2)
        if size < 144:
            raise Unsupported("too short for a Part 10 file")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            if buf[128:132] != b"DICM":
                raise Unsupported("no DICM preamble")
            syntax, pos = _file_meta(buf)
            if syntax in NOT_EXPLICIT_LE or not syntax:
                raise Unsupported(f"transfer syntax {syntax!r}")
            context = _Context(syntax != IMPLICIT_LE, "iso8859", bulk_uri, (threshold // 4) * 3)
            encoded = Encoded({}, syntax)
            _elements(buf, pos, size, context, encoded.document, 0, encoded)
            return encoded


def _file_meta(buf: Any) -> tuple[str, int]:
    """(Transfer Syntax UID, offset of the data set) from the group 2 elements (explicit VR LE)."""
    pos, syntax = 132, ""
    while True:
        if pos + 12 > len(buf):
            raise Unsupported("file meta without a data set")
        group, element = struct.unpack_from("<HH", buf, pos)
        if group != 2:
            return syntax, pos
        vr = bytes(buf[pos + 4:pos + 6])
        if vr in (b"OB", b"OW", b"UN", b"UT", b"SQ", b"UC", b"UR"):
            (length,) = struct.unpack_from("<L", buf, pos + 8)
            start = pos + 12
        else:
            (length,) = struct.unpack_from("<H", buf, pos + 6)
            start = pos + 8
        if length == UNDEFINED or start + length > len(buf):
            raise Unsupported("malformed file meta")
        if element == 0x0010:
            syntax = bytes(buf[start:start + length]).decode("ascii", "replace").strip("\x00 ")
        pos = start + length


def _elements(buf: Any, pos: int, end: int, context: _Context, out: dict[str, Any], depth: int,
              top: Encoded | None) -> int:
    """Encode the elements from ``pos`` into ``out``; return where they stopped (``end`` or
    just past an Item Delimitation)."""
    unpack = struct.unpack_from
    explicit = context.explicit
    while pos < end:
        if pos + 8 > end:
            raise Unsupported("truncated element header")
        group, element = unpack("<HH", buf, pos)
        tag = (group << 16) | element
        if tag == ITEM_DELIM:
            return pos + 8
        if explicit:
            vr = bytes(buf[pos + 4:pos + 6]).decode("latin-1")
            if vr in LONG_VRS:
                (length,) = unpack("<L", buf, pos + 8)
                start = pos + 12
            else:
                (length,) = unpack("<H", buf, pos + 6)
                start = pos + 8
            if vr not in KNOWN_VRS or vr == "UN":
                raise Unsupported(f"VR {vr!r} of {tag:08X}")
        else:
            (length,) = unpack("<L", buf, pos + 4)
            start = pos + 8
            vr = "" if tag == PIXEL_DATA else _implicit_vr(tag)
        if group == 2 or group == 0xFFFE:
            raise Unsupported(f"unexpected {tag:08X} in the data set")
        if tag == PIXEL_DATA and top is not None:
            pos = _pixel_data(buf, start, length, end, vr if explicit else None, top)
            continue
        key = f"{tag:08X}"
        if vr == "SQ":
            items: list[dict[str, Any]] = []
            pos = _sequence(buf, start, length, end, context, items, depth)
            out[key] = {"vr": "SQ", "Value": items}
            continue
        if length == UNDEFINED or start + length > end:
            raise Unsupported(f"length of {tag:08X}")
        pos = start + length
        if vr in BYTES_VRS:
            out[key] = _binary(vr, tag, length, buf, start, context)
            continue
        raw = bytes(buf[start:pos])
        if tag == SPECIFIC_CHARACTER_SET:
            context.codec = _codec(raw)
        out[key] = value_json(vr, raw, context.codec)
    return pos


def _implicit_vr(tag: int) -> str:
    try:
        vr = str(dictionary_VR(tag))
    except KeyError:
        if tag & 0x10000:
            raise Unsupported(f"private tag {tag:08X} in implicit VR") from None
        return "UL" if tag & 0xFFFF == 0 else "UN"
    if " or " in vr or vr not in KNOWN_VRS:
        raise Unsupported(f"VR {vr!r} of {tag:08X} in implicit VR")
    if tag & 0x10000:
        raise Unsupported(f"private tag {tag:08X} in implicit VR")
    return vr


def _binary(vr: str, tag: int, length: int, buf: Any, start: int, context: _Context) -> dict[str, Any]:
    if length == 0:
        return {"vr": vr}
    if length > context.bulk_bytes:
        return {"vr": vr, "BulkDataURI": context.bulk_uri(tag)}
    return {"vr": vr, "InlineBinary": base64.b64encode(buf[start:start + length]).decode("ascii")}


def _sequence(buf: Any, pos: int, length: int, end: int, parent: _Context, items: list[dict[str, Any]],
              depth: int) -> int:
    if depth >= MAX_DEPTH:
        raise Unsupported("sequences nested too deep")
    stop = end if length == UNDEFINED else pos + length
    if stop > end:
        raise Unsupported("sequence longer than its container")
    while pos < stop:
        if pos + 8 > stop:
            raise Unsupported("truncated item header")
        group, element, item_length = struct.unpack_from("<HHL", buf, pos)
        tag = (group << 16) | element
        pos += 8
        if tag == SEQ_DELIM and length == UNDEFINED:
            return pos
        if tag != ITEM:
            raise Unsupported(f"{tag:08X} where a sequence item was expected")
        item: dict[str, Any] = {}
        context = _Context(parent.explicit, parent.codec, parent.bulk_uri, parent.bulk_bytes)
        if item_length == UNDEFINED:
            pos = _elements(buf, pos, stop, context, item, depth + 1, None)
        else:
            if pos + item_length > stop:
                raise Unsupported("item longer than its sequence")
            _elements(buf, pos, pos + item_length, context, item, depth + 1, None)
            pos += item_length
        items.append(item)
    if length == UNDEFINED:
        raise Unsupported("sequence without its delimiter")
    return pos


def _pixel_data(buf: Any, start: int, length: int, end: int, vr: str | None, top: Encoded) -> int:
    """Record where Pixel Data sits; return the offset after it (encapsulated: after its items)."""
    top.has_pixel_data, top.pixel_vr, top.pixel_offset, top.pixel_length = True, vr, start, length
    if length != UNDEFINED:
        if start + length > end:
            raise Unsupported("pixel data longer than the file")
        return start + length
    pos = start
    while pos + 8 <= end:
        group, element, item_length = struct.unpack_from("<HHL", buf, pos)
        tag = (group << 16) | element
        pos += 8
        if tag == SEQ_DELIM:
            return pos
        if tag != ITEM or item_length == UNDEFINED:
            raise Unsupported("malformed encapsulated pixel data")
        pos += item_length
    raise Unsupported("encapsulated pixel data without its delimiter")


# -- values, as pydicom's converters and DataElement.to_json_dict produce them -------------
def value_json(vr: str, raw: bytes, codec: str) -> dict[str, Any]:
    """The JSON of one non-sequence, non-binary element from its value bytes."""
    if vr in NUMBER_FORMATS:
        return _numbers(vr, raw)
    if vr == "AT":
        if len(raw) % 4:
            raise Unsupported("AT of odd length")
        pairs = struct.unpack(f"<{len(raw) // 2}H", raw)
        tags = [f"{(pairs[i] << 16) | pairs[i + 1]:08X}" for i in range(0, len(pairs), 2)]
        return {"vr": vr, "Value": tags} if tags else {"vr": vr}
    if vr in MULTI_TEXT_VRS or vr in SINGLE_TEXT_VRS or vr == "PN":
        text = _decode(raw, codec)
    else:
        if max(raw, default=0) > 0x7F:
            raise Unsupported("non-ASCII bytes in a default-repertoire VR")
        text = raw.decode("latin-1")
    values: list[Any]
    if vr in SPLIT_STRING_VRS:
        values = text.rstrip(" \x00").split("\\")
    elif vr in MULTI_TEXT_VRS:
        values = [v.rstrip("\x00 ") for v in text.split("\\")]
    elif vr in SINGLE_TEXT_VRS:
        values = [text.rstrip("\x00 ")]
    elif vr == "UR":
        values = [text.rstrip()]
    elif vr == "AE":
        values = [v.strip() for v in text.split("\\")]
    elif vr == "UI":
        values = text.rstrip("\x00 ").rstrip(" \x00").split("\\")
    elif vr == "DS":
        values = _numbers_of(text.strip().rstrip(" \x00").split("\\"), _ds)
    elif vr == "IS":
        values = _numbers_of(text.rstrip(" \x00").split("\\"), _is)
    elif vr == "PN":
        return _person_names(vr, _decode(raw.rstrip(b"\x00 "), codec))
    else:
        raise Unsupported(f"VR {vr}")
    if len(values) == 1 and values[0] in ("", None):
        return {"vr": vr}
    return {"vr": vr, "Value": values}


def _decode(raw: bytes, codec: str) -> str:
    if b"\x1b" in raw:
        raise Unsupported("ISO 2022 escape in text")
    try:
        return raw.decode(codec)
    except (UnicodeDecodeError, LookupError):
        raise Unsupported("text not in its character set") from None


def _numbers(vr: str, raw: bytes) -> dict[str, Any]:
    size = struct.calcsize("<" + NUMBER_FORMATS[vr])
    if len(raw) % size:
        raise Unsupported(f"{vr} of length {len(raw)}")
    if not raw:
        return {"vr": vr}
    values = list(struct.unpack(f"<{len(raw) // size}{NUMBER_FORMATS[vr]}", raw))
    if vr in ("FL", "FD") and not all(math.isfinite(v) for v in values):
        raise Unsupported("non-finite float")
    return {"vr": vr, "Value": values}


def _numbers_of(parts: list[str], convert: Callable[[str], int | float]) -> list[Any]:
    if len(parts) == 1 and not parts[0].strip():
        return [""]
    return [convert(p) for p in parts]


def _ds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise Unsupported(f"DS {text!r}") from None
    if not math.isfinite(value) or "_" in text:
        raise Unsupported(f"DS {text!r}")
    return value


def _is(text: str) -> int:
    stripped = text.strip()
    if not stripped or "_" in stripped or not stripped.lstrip("+-").isdigit():
        raise Unsupported(f"IS {text!r}")
    return int(stripped)


def _person_names(vr: str, text: str) -> dict[str, Any]:
    names = text.split("\\")
    if len(names) == 1 and not names[0]:
        return {"vr": vr}
    values = []
    for name in names:
        groups = name.split("=")
        while groups and not groups[-1]:  # pydicom's PersonName drops trailing empty groups
            groups.pop()
        if not groups:
            raise Unsupported("an empty Person Name among several")  # pydicom cannot encode it
        entry = {"Alphabetic": groups[0]}
        if len(groups) > 1:
            entry["Ideographic"] = groups[1]
        if len(groups) > 2:
            entry["Phonetic"] = groups[2]
        if len(groups) > 3:
            raise Unsupported("more than three Person Name groups")
        values.append(entry)
    return {"vr": vr, "Value": values}
