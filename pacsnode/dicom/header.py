"""One pass over a Part 10 file: the indexed attributes, and proof that the file is whole.

The store path used to read the header with ``dcmread`` and then walk the file again to
check it does not end inside an element; then every value went through pydicom's
``Dataset`` machinery. For a 9 KB instance that was about 1 ms of a 3 ms store. This module
walks the top-level elements once with pydicom's ``data_element_generator`` (large values
are skipped by seeking), keeps the raw bytes of the few tags the index needs, and decodes
them directly: ASCII VRs as ASCII, text VRs with the dataset's Specific Character Set
through pydicom's charset functions, sequences through pydicom (rare, and small).

Anything unusual (no ``DICM`` preamble, deflated or unknown transfer syntax, a value pydicom
would refuse) returns ``None`` so that the caller falls back to the full pydicom read: the
fast path never decides a file is bad where the slow path would have stored it, and a test
compares both on every sample and pydicom test file.
"""

from __future__ import annotations

import functools
import io
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.dataelem import RawDataElement
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.filereader import data_element_generator
from pydicom.uid import UID
from pydicom.valuerep import PersonName

from pacsnode.dicom import le_walk, limits

#: keyword → VR of every attribute the index reads (implicit VR files carry no VR).
INDEXED: dict[str, str] = {
    "SpecificCharacterSet": "CS", "SOPClassUID": "UI", "SOPInstanceUID": "UI", "StudyDate": "DA",
    "SeriesDate": "DA", "StudyTime": "TM", "SeriesTime": "TM", "AccessionNumber": "SH", "Modality": "CS",
    "InstitutionName": "LO", "InstitutionCodeSequence": "SQ", "ReferringPhysicianName": "PN",
    "StationName": "SH", "StudyDescription": "LO", "ProcedureCodeSequence": "SQ", "SeriesDescription": "LO",
    "PatientName": "PN", "PatientID": "LO", "IssuerOfPatientID": "LO", "PatientBirthDate": "DA",
    "PatientSex": "CS", "OtherPatientIDsSequence": "SQ", "ContrastBolusAgent": "LO", "BodyPartExamined": "CS",
    "DeviceSerialNumber": "LO", "StudyInstanceUID": "UI", "SeriesInstanceUID": "UI", "StudyID": "SH",
    "SeriesNumber": "IS", "InstanceNumber": "IS", "NumberOfFrames": "IS", "LossyImageCompression": "CS",
    "LossyImageCompressionMethod": "CS", "PatientIdentityRemoved": "CS", "DeidentificationMethod": "LO",
}
TAGS: dict[int, tuple[str, str]] = {int(tag_for_keyword(k) or 0): (k, vr) for k, vr in INDEXED.items()}
TEXT_VRS = {"PN", "LO", "SH", "LT", "ST", "UT", "UC"}
DEFER_BYTES = 4096
SMALL_FILE = 64 * 1024  # the scan reads this much of a file at once (larger ones: see _walk)
MAX_META_VALUE = 1 << 16  # a meta value longer than this is not ours to vouch for


@dataclass
class HeaderScan:
    """The raw indexed elements of one file and how it is encoded."""

    transfer_syntax: str
    implicit: bool
    little: bool
    elements: dict[int, RawDataElement]
    complete: bool


def scan(path: Path | str, head: bytes = b"", size: int = -1) -> HeaderScan | None:
    """Walk the file once; None when the fast path does not apply (the caller reads it fully).

    ``head``: the file's first bytes as its writer kept them, ``size``: the file's length (the
    receiver's ``ReceivedFile``). When they hold what the walk reads, the file is not opened
    (issue 13: opening and reading back the 9 KB just written was a quarter of the facts' CPU);
    anything else (``_from_head`` is unsure) reads the file, as without them.
    """
    if head and len(head) <= size:
        try:
            return _from_head(head, size)
        except _NeedFile:
            pass
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        preamble = handle.read(132)
        if len(preamble) < 132 or preamble[128:] != b"DICM":
            return None
        syntax = _meta_syntax(handle)
        if syntax is None:  # something unusual in the group: pydicom's generator reads it
            handle.seek(132)
            syntax = ""
            for raw in data_element_generator(handle, False, True, stop_when=lambda tag, *_: tag.group != 2):
                if raw.tag == 0x00020010 and isinstance(raw.value, bytes):
                    syntax = raw.value.decode("ascii", "replace").strip("\x00 ")
        kind = _syntax_kind(syntax)
        if kind is None:
            return None
        implicit, little = kind
        if little:
            try:
                return _walked(syntax, implicit, _walk(handle, size, implicit))
            except le_walk.NotPlain:
                pass  # pydicom's generator below decides, as it always did
        elements: dict[int, RawDataElement] = {}
        complete = True
        end = handle.tell()  # the end of the last whole element: a file cut inside a tag ends later
        for item in data_element_generator(handle, implicit, little, defer_size=DEFER_BYTES):
            element = cast(RawDataElement, item)  # what the generator yields without a dataset to convert into
            value = element.value
            if isinstance(value, bytes) and element.length != 0xFFFFFFFF and len(value) < element.length:
                complete = False
                break
            if element.tag in TAGS:
                keyword, vr = TAGS[int(element.tag)]
                if vr != "SQ" and element.length != 0xFFFFFFFF:
                    limits.check_declared_length(keyword, vr, element.length)
                elements[int(element.tag)] = element
            end = handle.tell()
        complete = complete and end == size
    return HeaderScan(syntax, implicit, little, elements, complete)


class _NeedFile(Exception):
    """The kept bytes do not settle the scan: read the file."""


def _from_head(head: bytes, size: int) -> HeaderScan | None:
    """``scan`` from the file's first bytes, deciding only what the file path decides on the same
    bytes: the preamble, a plain File Meta group read whole, and ``le_walk.top_level`` on the
    prefix with the file's true size (a walk on any prefix either ends as on the whole file or
    raises BeyondPrefix). A short read, an unusual meta group, a big endian syntax, and every
    NotPlain (pydicom's generator reads the file) raise _NeedFile."""
    if len(head) < 132:
        raise _NeedFile
    if head[128:132] != b"DICM":
        return None
    handle = io.BytesIO(head)
    handle.seek(132)
    syntax = _meta_syntax(handle)
    if syntax is None:  # unusual, or the prefix ended inside the group
        raise _NeedFile
    kind = _syntax_kind(syntax)
    if kind is None:
        return None
    implicit, little = kind
    if not little:
        raise _NeedFile
    try:  # at most SMALL_FILE bytes, as _walk reads: past them the file path maps the file whole
        found = le_walk.top_level(head[:SMALL_FILE], handle.tell(), implicit, TAGS, size)
    except le_walk.NotPlain:
        raise _NeedFile from None
    return _walked(syntax, implicit, found)


def _walked(syntax: str, implicit: bool, found: dict[int, RawDataElement]) -> HeaderScan:
    """The scan of a little endian data set ``le_walk`` read whole; ValueTooLong for a declared
    length no indexed value may have."""
    for tag, raw in found.items():
        keyword, vr = TAGS[tag]
        if vr != "SQ" and raw.length != 0xFFFFFFFF:
            limits.check_declared_length(keyword, vr, raw.length)
    return HeaderScan(syntax, implicit, True, found, True)


@functools.lru_cache(maxsize=64)
def _syntax_kind(syntax: str) -> tuple[bool, bool] | None:
    """(implicit VR, little endian) of a transfer syntax the scan reads; None: the full read decides
    (none, not a transfer syntax, deflated). Cached: pydicom's ``UID`` validates its value anew
    on every construction, a few percent of a 9 KB store (issue 13)."""
    uid = UID(syntax)
    if not syntax or not uid.is_transfer_syntax or uid.is_deflated:
        return None
    return uid.is_implicit_VR, uid.is_little_endian


def _walk(handle: BinaryIO, size: int, implicit: bool) -> dict[int, RawDataElement]:
    """``le_walk.top_level`` from the handle's position: a small file read at once, a large one's
    first ``SMALL_FILE`` bytes (its pixel data is skipped by length, never read), mapped whole
    only when the walk needs more (a sequence of undefined length, a header past the prefix).
    No map: two system calls and page faults fewer. The handle's position does not move: after
    NotPlain, pydicom's generator reads on from there."""
    start = handle.tell()
    try:  # read from 0: offsets stay file offsets, as in the map
        return le_walk.top_level(os.pread(handle.fileno(), min(size, SMALL_FILE), 0), start, implicit, TAGS,
                                 size)
    except le_walk.BeyondPrefix:
        pass
    with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        return le_walk.top_level(buf, start, implicit, TAGS)


def _meta_syntax(handle: BinaryIO) -> str | None:
    """The Transfer Syntax UID of the File Meta group (explicit VR little endian, PS3.10 7.1),
    walked with ``struct``; the handle is left at the first element after the group, where
    pydicom's generator leaves it. None (position undefined): anything unusual, for pydicom.

    Issue 13: the generator cost a Python generator step and a namedtuple per meta element,
    about a sixth of reading a 9 KB instance's facts, for a group the receiver wrote itself.
    """
    syntax = ""
    while True:
        head = handle.read(8)
        if len(head) < 8:
            return None
        group, element = struct.unpack_from("<HH", head)
        if group != 2:
            handle.seek(-8, 1)
            return syntax
        vr = head[4:6]
        if vr in le_walk.SHORT_VRS:
            (length,) = struct.unpack_from("<H", head, 6)
        elif vr in le_walk.LONG_VRS:
            extra = handle.read(4)
            if len(extra) < 4:
                return None
            (length,) = struct.unpack_from("<L", extra)
        else:
            return None
        if length == le_walk.UNDEFINED or length > MAX_META_VALUE:
            return None
        value = handle.read(length)
        if len(value) < length:
            return None
        if element == 0x0010:
            syntax = value.decode("ascii", "replace").strip("\x00 ")


class Values:
    """Decoded values of a scan, read by keyword like ``Dataset.get``."""

    def __init__(self, header: HeaderScan) -> None:
        self.header = header
        charset = self._ascii(TAGS_BY_KEYWORD["SpecificCharacterSet"])
        self.charsets = [c.strip() for c in charset.split("\\")] if charset else []
        self.encodings = convert_encodings(self.charsets or ["ISO_IR 6"])

    def _bytes(self, tag: int) -> bytes | None:
        raw = self.header.elements.get(tag)
        if raw is None or raw.value is None:
            return None
        return bytes(raw.value)

    def _ascii(self, tag: int) -> str:
        value = self._bytes(tag)
        return "" if value is None else value.decode("ascii", "replace").strip("\x00 ")

    def text(self, keyword: str) -> str:
        tag = TAGS_BY_KEYWORD[keyword]
        vr = TAGS[tag][1]
        value = self._bytes(tag)
        if value is None:
            return ""
        if value.isascii() and b"\x1b" not in value and (vr != "PN" or b"=" not in value):
            # Every character set a dataset may name reads 7-bit bytes without an escape as ASCII,
            # so pydicom's decoders (10-20 us a value: a tenth of a 9 KB store) would say the same.
            return value.rstrip(b"\x00 ").decode("ascii").strip() if vr == "PN" else \
                value.decode("ascii").strip("\x00 ")
        if vr == "PN":
            return str(PersonName(value.rstrip(b"\x00 "), self.encodings)).strip()
        if vr in TEXT_VRS:
            return decode_bytes(value, self.encodings, {0x5C} if len(self.encodings) > 1 else set()).strip("\x00 ")
        return value.decode("ascii", "replace").strip("\x00 ")

    def sequence(self, keyword: str) -> list[Dataset]:
        """A sequence's items, parsed by pydicom (the only place we hand a value to Dataset)."""
        tag = TAGS_BY_KEYWORD[keyword]
        raw = self.header.elements.get(tag)
        if raw is None:
            return []
        if raw.VR is None:
            raw = raw._replace(VR="SQ")
        holder = Dataset({BaseTag(tag): raw})
        if self.charsets:
            holder.SpecificCharacterSet = self.charsets if len(self.charsets) > 1 else self.charsets[0]
        holder.set_original_encoding(self.header.implicit, self.header.little)
        return list(holder[tag].value or [])


TAGS_BY_KEYWORD: dict[str, int] = {keyword: tag for tag, (keyword, _vr) in TAGS.items()}


def first_int(text: str) -> int | None:
    try:
        return int(text.split("\\")[0]) if text else None
    except ValueError:
        return None


def as_dict(values: Values) -> dict[str, Any]:
    """Every indexed keyword → decoded text (sequences excluded)."""
    return {k: values.text(k) for k, vr in INDEXED.items() if vr != "SQ"}
