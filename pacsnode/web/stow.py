"""STOW-RS (PS3.18 10.5): a multipart/related body of DICOM parts → ``Node.store_file`` per part.

The body is parsed as it streams (python-multipart) into temporary files on the storage
filesystem, never held in memory. Only a body that parsed completely (closing boundary seen,
every part within limits) is stored: a broken body stores nothing. Each part then goes
through the same store path as a C-STORE (durability, duplicates policy, SOP class and UID
checks, QC, provenance), and the answer lists what was stored and what failed, and why.
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from python_multipart.multipart import MultipartParser

from pacsnode.errors import (InvalidInstance, NotPermitted, PacsnodeError, SopClassMismatch, StorageFull)
from pacsnode.model import InstanceFacts, ReceivedFile

# PS3.18 Table 10.5.3-1 / PS3.4 Annex B failure reasons.
PROCESSING_FAILURE = 0x0110
SOP_CLASS_NOT_SUPPORTED = 0x0122
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
REFUSED_NOT_AUTHORIZED = 0x0124
STUDY_UID_MISMATCH = 0xC409  # a part's Study Instance UID differs from the one the URL names

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_TYPE = re.compile(r'type="?([^";]+)"?', re.IGNORECASE)


class BadBody(PacsnodeError):
    """The request body is not a usable multipart/related of DICOM parts."""


class StudyMismatch(InvalidInstance):
    """A part belongs to another study than the one the STOW URL names."""


def declared_uids(path: Path) -> tuple[str, str]:
    """(Media Storage SOP Class, Instance UID) of a Part 10 file: what the sender declares.

    STOW-RS parts are Part 10 files (PS3.18 8.6.1.1.1): the File Meta Information plays the
    role of the C-STORE request, so the dataset is checked against it exactly as a C-STORE's
    dataset is checked against its Affected SOP Class and Instance.
    """
    from pydicom.filereader import read_file_meta_info

    with open(path, "rb") as handle:
        head = handle.read(META_READ)
    if head[128:132] != b"DICM":
        raise InvalidInstance("part is not a DICOM Part 10 file (no DICM preamble)")
    quick = _declared_quickly(head)
    if quick is not None:
        return quick
    try:
        meta = read_file_meta_info(str(path))
    except Exception as exc:
        raise InvalidInstance(f"part's File Meta Information is unreadable: {exc}") from None
    sop_class = str(meta.get("MediaStorageSOPClassUID", "") or "")
    sop_instance = str(meta.get("MediaStorageSOPInstanceUID", "") or "")
    if not sop_class or not sop_instance:
        raise InvalidInstance("part's File Meta Information lacks Media Storage SOP Class/Instance UID")
    return sop_class, sop_instance


META_READ = 4096
_SHORT_LENGTH_VRS = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN",
                     b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}


def _declared_quickly(head: bytes) -> tuple[str, str] | None:
    """The two UIDs from a plain File Meta Information group; None: let pydicom read it."""
    pos, found = 132, {}
    while pos + 8 <= len(head):
        group, element = struct.unpack_from("<HH", head, pos)
        if group != 2:
            break
        vr = head[pos + 4:pos + 6]
        if vr in _SHORT_LENGTH_VRS:
            (length,) = struct.unpack_from("<H", head, pos + 6)
            start = pos + 8
        elif vr in (b"OB", b"UN", b"UT", b"UC", b"UR", b"OW", b"SQ"):
            if pos + 12 > len(head):
                return None
            (length,) = struct.unpack_from("<L", head, pos + 8)
            start = pos + 12
        else:
            return None
        if length == 0xFFFFFFFF or start + length > len(head):
            return None
        if element in (0x0002, 0x0003):
            if vr != b"UI":
                return None
            found[element] = head[start:start + length].decode("ascii", "replace").rstrip("\x00 ")
        pos = start + length
    else:
        return None  # the group did not end inside what was read
    sop_class, sop_instance = found.get(0x0002, ""), found.get(0x0003, "")
    return (sop_class, sop_instance) if sop_class and sop_instance else None


@dataclass
class Part:
    content_type: str = ""
    path: Path | None = None
    size: int = 0
    digest: Any = field(default_factory=hashlib.sha256)  # hashed as it arrives, like a C-STORE

    def received(self) -> ReceivedFile:
        """Digest and size for ``Node.store_file``: the storage area need not read the part back."""
        return ReceivedFile(self.digest.hexdigest(), self.size, False)


@dataclass
class Received:
    """What the body held: one temporary file per part, or why it was refused."""

    parts: list[Part] = field(default_factory=list)
    ended: bool = False


def boundary_of(content_type: str) -> str:
    """The boundary of a ``multipart/related; type="application/dicom"`` request, or BadBody."""
    main = content_type.split(";")[0].strip().lower()
    if main != "multipart/related":
        raise BadBody(f"Content-Type {main or 'missing'!r}: STOW-RS takes multipart/related; "
                      'type="application/dicom"')
    kind = _TYPE.search(content_type)
    if kind and kind.group(1).strip().lower() != "application/dicom":
        raise BadBody(f"multipart/related type {kind.group(1)!r}: only application/dicom parts are accepted")
    found = _BOUNDARY.search(content_type)
    if not found or not 1 <= len(found.group(1)) <= 70:
        raise BadBody("multipart/related without a valid boundary parameter")
    return found.group(1)


class BodyReader:
    """Feed body chunks in; parts land in temporary files made by ``new_temp``."""

    def __init__(self, boundary: str, new_temp: Callable[[], Path], max_parts: int = 10_000) -> None:
        self.received = Received()
        self._new_temp = new_temp
        self._max_parts = max_parts
        self._handle: Any = None
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[str, str] = {}
        callbacks: Any = {
            "on_part_begin": self._begin, "on_part_data": self._data, "on_part_end": self._end_part,
            "on_header_field": self._field, "on_header_value": self._value, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_done, "on_end": self._end,
        }
        self._parser = MultipartParser(boundary, callbacks)

    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except BadBody:
            raise
        except Exception as exc:  # python-multipart's own errors: a malformed body
            raise BadBody(f"malformed multipart body: {exc}") from None

    def finish(self) -> Received:
        if self._handle is not None or not self.received.ended:
            raise BadBody("multipart body ended before its closing boundary")
        if not self.received.parts:
            raise BadBody("multipart body holds no part")
        return self.received

    def discard(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        for part in self.received.parts:
            if part.path is not None:
                part.path.unlink(missing_ok=True)

    # -- callbacks -----------------------------------------------------------------------
    def _begin(self) -> None:
        if len(self.received.parts) >= self._max_parts:
            raise BadBody(f"more than {self._max_parts} parts in one request")
        self._headers = {}
        self.received.parts.append(Part())

    def _field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_name.decode("latin-1").strip().lower()] = \
            self._header_value.decode("latin-1").strip()
        self._header_name = self._header_value = b""

    def _headers_done(self) -> None:
        part = self.received.parts[-1]
        part.content_type = self._headers.get("content-type", "")
        part.path = self._new_temp()
        self._handle = open(part.path, "wb")

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._handle is None:
            raise BadBody("part data before its headers")
        chunk = memoryview(data)[start:end]
        self._handle.write(chunk)
        part = self.received.parts[-1]
        part.digest.update(chunk)
        part.size += end - start

    def _end_part(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _end(self) -> None:
        self.received.ended = True


def in_study(study_uid: str) -> Callable[[InstanceFacts], None]:
    """``Node.store_file``'s check for ``/studies/{study}``: a part of another study is refused."""

    def check(facts: InstanceFacts) -> None:
        if facts.study_uid != study_uid:
            raise StudyMismatch(f"instance {facts.sop_instance_uid} is of study {facts.study_uid}, "
                                f"not the study {study_uid} the URL names")
    return check


def failure_reason(exc: BaseException) -> int:
    """The PS3.18 FailureReason of a refused part."""
    if isinstance(exc, StudyMismatch):
        return STUDY_UID_MISMATCH
    if isinstance(exc, SopClassMismatch):
        return DATASET_DOES_NOT_MATCH
    if isinstance(exc, StorageFull):
        return OUT_OF_RESOURCES
    if isinstance(exc, NotPermitted):
        return REFUSED_NOT_AUTHORIZED
    if isinstance(exc, (InvalidInstance, BadBody)):
        return CANNOT_UNDERSTAND
    return PROCESSING_FAILURE


def response(referenced: list[dict[str, Any]], failed: list[dict[str, Any]], study_url: str) -> dict[str, Any]:
    """The PS3.18 Store Instances Response Module as DICOM JSON."""
    body: dict[str, Any] = {}
    if study_url:
        body["00081190"] = {"vr": "UR", "Value": [study_url]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": [_item(f) for f in failed]}
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": [_item(r) for r in referenced]}
    return body


def _item(entry: dict[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = {"00081150": {"vr": "UI", "Value": [entry["sop_class"]]} if entry.get("sop_class")
                            else {"vr": "UI"},
                            "00081155": {"vr": "UI", "Value": [entry["sop_instance"]]} if entry.get("sop_instance")
                            else {"vr": "UI"}}
    if "reason" in entry:
        item["00081197"] = {"vr": "US", "Value": [entry["reason"]]}
    if entry.get("url"):
        item["00081190"] = {"vr": "UR", "Value": [entry["url"]]}
    return item
