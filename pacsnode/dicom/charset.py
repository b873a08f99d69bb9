"""Specific Character Set help that pydicom 3.0 does not give us for Chinese identifiers.

pydicom decodes and encodes GB18030, GBK and ISO_IR 192 (UTF-8) correctly, including GB18030
names whose second byte is 0x5C (the backslash byte). Its handling of ISO 2022 IR 58
(GB2312 by code extension, PS3.5 6.1.2.5 and Annex K.2) has two gaps this module closes:

* decoding leaves the designation escape ``ESC $ ) A`` inside the decoded text (Python's
  ``gb2312`` codec does not strip it, pydicom assumes it does), so ``王`` would arrive as
  ``"\\x1b$)A王"`` and never match the stored name;
* encoding omits the escape, producing GB2312 bytes in G1 without a designation, which a
  conforming receiver decodes as Latin-1 noise.

So identifiers in ISO 2022 IR 58 are decoded here from their raw bytes, and response values
that need GB2312 are encoded here, with the designation repeated after every delimiter as
PS3.5 6.1.2.5.3 requires (the examples of PS3.5 K.2 do exactly that).
"""

from __future__ import annotations

import re
from typing import Sequence

from pydicom.charset import convert_encodings, custom_encoders

IR58 = "ISO 2022 IR 58"
UTF8 = "ISO_IR 192"
ESC_IR58 = b"\x1b$)A"
# Any ISO 2022 escape sequence: ESC, intermediate bytes 0x20-0x2F, one final byte 0x30-0x7E.
_ESCAPE = re.compile(rb"\x1b[\x20-\x2f]+[\x30-\x7e]")
_ESCAPE_TEXT = re.compile("\x1b[\x20-\x2f]+[\x30-\x7e]")
# Delimiters that reset the G0/G1 designations in a value (PS3.5 6.1.2.5.3); '^' and '=' for PN.
_DELIMITERS = frozenset("\\\r\n\t\f^=")
_ASCII_ONLY_SETS = frozenset({"", "ISO_IR 6", "ISO 2022 IR 6"})


def charset_values(value: object) -> list[str]:
    """(0008,0005) as a list of defined terms, first value possibly empty (ISO 2022)."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split("\\")]
    return [str(part).strip() for part in value]  # type: ignore[attr-defined]


def is_ir58_only(charsets: Sequence[str]) -> bool:
    """True when the set is GB2312 by code extension next to ASCII and nothing else."""
    return IR58 in charsets and all(cs in _ASCII_ONLY_SETS or cs == IR58 for cs in charsets)


def decode_ir58(raw: bytes) -> str:
    """Decode an ISO 2022 IR 58 value: ASCII in G0, GB2312 in G1 (high bit set, EUC-CN form).

    Escape sequences only switch between those two, so removing them and decoding the rest
    as ``gb2312`` is exact. Lenient on purpose: values whose sender forgot the designation
    (seen in the field) decode the same way.
    """
    return _ESCAPE.sub(b"", raw).decode("gb2312", errors="replace")


def strip_escapes(text: str) -> str:
    """Remove escape sequences a decoder left in text (never legitimate characters)."""
    return _ESCAPE_TEXT.sub("", text) if "\x1b" in text else text


def encode_ir58(text: str) -> bytes:
    """Encode text for ISO 2022 IR 58, designating G1 before GB2312 after each delimiter."""
    out = bytearray()
    designated = False
    for char in text:
        if char in _DELIMITERS:
            designated = False
        if ord(char) < 0x80:
            out += char.encode("ascii")
            continue
        if not designated:
            out += ESC_IR58
            designated = True
        out += char.encode("gb2312")
    return bytes(out)


def _encodes(text: str, encoding: str) -> bool:
    try:
        encoder = custom_encoders.get(encoding)
        if encoder is not None:
            encoder(text, errors="strict")
        elif encoding == "iso_ir_58":
            text.encode("gb2312")
        else:
            text.encode(encoding)
    except (UnicodeError, LookupError, ValueError):
        return False
    return True


def can_encode(text: str, charsets: Sequence[str]) -> bool:
    """Whether ``text`` can be written in ``charsets`` without loss.

    With code extensions (several values) a value may switch sets between characters, so
    each character needs one set that holds it.
    """
    if text.isascii():
        return True
    if not charsets:
        return False
    try:
        encodings = convert_encodings(list(charsets))
    except (LookupError, ValueError):
        return False
    if any(_encodes(text, enc) for enc in encodings):
        return True
    if len(encodings) == 1:
        return False
    return all(any(_encodes(char, enc) for enc in encodings) for char in text)


def choose_response_charset(texts: Sequence[str], query_charsets: Sequence[str]) -> list[str]:
    """The Specific Character Set for a response holding ``texts``.

    Empty (attribute omitted) when everything is ASCII; else the query's own set when it
    can hold every value (the SCU asked in it, so it reads it); else UTF-8, which holds
    everything.
    """
    if all(text.isascii() for text in texts):
        return []
    if query_charsets and all(can_encode(text, query_charsets) for text in texts):
        return list(query_charsets)
    return [UTF8]
