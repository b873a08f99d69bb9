"""WADO-RS and WADO-URI bodies: stored bytes streamed as multipart/related, metadata, frames.

Instances are streamed from the storage area in chunks (never a whole study in memory).
``/metadata`` concatenates the DICOM JSON kept in the index at ingest; an instance indexed
before DICOMweb was on gets its JSON built once, on first request, and kept. Frames are read
at the offsets recorded at ingest (``StorageArea.read_ranges``: ``os.pread`` on the
filesystem, ranged GETs on S3).
"""

from __future__ import annotations

import json
import secrets
from typing import BinaryIO, Iterable, Iterator, Sequence

from pacsnode.dicom import web_metadata
from pacsnode.index.web_store import InstanceRow, WebStore
from pacsnode.storage.area import StorageArea

CHUNK = 1 << 20
# Encapsulated transfer syntaxes → the media type of their frames (PS3.18 Table 8.7.3-2).
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg", "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg", "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls", "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2", "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
NATIVE_SYNTAXES = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99",
                             "1.2.840.10008.1.2.2"})


def new_boundary() -> str:
    return "pacsnode-" + secrets.token_hex(12)


EXPLICIT_LE = "1.2.840.10008.1.2.1"


def multipart_files(storage: StorageArea, paths: Sequence[str], boundary: str, part_type: str = "application/dicom",
                    transcode: Sequence[bool] = ()) -> Iterator[bytes]:
    """One part per stored file (relative paths), streamed in chunks; files flagged in
    ``transcode`` go as Explicit VR LE."""
    for number, path in enumerate(paths):
        if number < len(transcode) and transcode[number]:
            yield (f"--{boundary}\r\nContent-Type: {part_type}; transfer-syntax={EXPLICIT_LE}\r\n\r\n"
                   ).encode("ascii")
            with storage.open(path) as handle:
                yield to_explicit_le(handle)
        else:
            yield f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode("ascii")
            with storage.open(path) as handle:
                while chunk := handle.read(CHUNK):
                    yield chunk
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("ascii")


def can_transcode(syntax: str) -> bool:
    """Whether an instance stored in ``syntax`` can be sent as Explicit VR Little Endian here."""
    if syntax in NATIVE_SYNTAXES:
        return syntax != "1.2.840.10008.1.2.1.99"  # deflated: not worth a second code path
    from pydicom.pixels import get_decoder

    try:
        return bool(get_decoder(syntax).is_available)
    except (NotImplementedError, ValueError):
        return False


def to_explicit_le(handle: BinaryIO) -> bytes:
    """The instance decoded (when encapsulated) and written as Explicit VR Little Endian, in memory."""
    import io

    from pydicom import dcmread
    from pydicom.uid import UID

    dataset = dcmread(handle)
    if dataset.file_meta.TransferSyntaxUID.is_compressed:
        dataset.decompress(generate_instance_uid=False)  # decoding adds no loss: the same instance
    dataset.file_meta.TransferSyntaxUID = UID(EXPLICIT_LE)
    out = io.BytesIO()
    dataset.save_as(out, implicit_vr=False, little_endian=True)
    return out.getvalue()


def metadata_json(store: WebStore, rows: Iterable[InstanceRow], storage: StorageArea, base_url: str) -> bytes:
    """The DICOM JSON array of the instances, bulk data URIs pointing at this server."""
    parts: list[str] = []
    for row in rows:
        text = row.metadata
        if not text:  # indexed before DICOMweb was on: build once, keep
            with storage.local_file(row.path) as path:
                text, frames = web_metadata.build(path)
            store.save_metadata(row.sop_instance_uid, text, frames)
        parts.append(text)
    return ("[" + ",".join(parts) + "]").replace(web_metadata.BASE_MARKER, base_url).encode("utf-8")


def frame_table(store: WebStore, row: InstanceRow, storage: StorageArea) -> dict[str, object]:
    text = row.frames
    if not text and not row.metadata:
        with storage.local_file(row.path) as path:
            meta, text = web_metadata.build(path)
        store.save_metadata(row.sop_instance_uid, meta, text)
    return json.loads(text) if text else {}


def frame_media_type(syntax: str) -> str:
    """The media type a frame of ``syntax`` is sent as (native: octet-stream)."""
    return FRAME_MEDIA_TYPES.get(syntax, "application/octet-stream")


def accepts(accept: str, media_type: str) -> bool:
    """Whether an Accept header allows frames (or bulk data) of ``media_type``."""
    if not accept.strip():
        return True
    major = media_type.split("/")[0]
    for option in accept.split(","):
        option = option.strip().lower().replace('"', "")
        if option.startswith("*/*") or option.startswith("multipart/related") and "type=" not in option:
            return True
        if media_type in option or "type=*/*" in option or f"type={major}/*" in option:
            return True
        if "application/octet-stream" in option and ("transfer-syntax=*" in option.replace('"', "")
                                                      or media_type == "application/octet-stream"):
            return True
    return False


def requested_syntaxes(accept: str) -> set[str] | None:
    """Transfer syntaxes an Accept header names (``transfer-syntax=``); None = any (absent or ``*``).

    The stored bytes go out whenever their syntax is acceptable; instances may be transcoded to
    Explicit VR Little Endian when that is asked for; anything else is 406, never data in a
    syntax the client did not ask for.
    """
    named: set[str] = set()
    for option in accept.split(","):
        params = [p.strip() for p in option.split(";")[1:]]
        found = [p.split("=", 1)[1].strip().strip('"') for p in params if p.lower().startswith("transfer-syntax=")]
        if not found:
            return None  # an option without the parameter accepts the stored syntax
        if "*" in found:
            return None
        named.update(found)
    return named or None


def multipart_frames(storage: StorageArea, path: str, runs: Sequence[Sequence[Sequence[int]]], boundary: str,
                     part_type: str, syntax: str) -> Iterator[bytes]:
    """The asked frames, each one part, read at their recorded byte ranges from the stored file."""
    ranges = storage.read_ranges(path, [(offset, length) for frame in runs for offset, length in frame])
    for frame in runs:
        yield (f"--{boundary}\r\nContent-Type: {part_type}; transfer-syntax={syntax}\r\n\r\n").encode("ascii")
        for _fragment in frame:
            yield next(ranges)
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("ascii")


def parse_frame_list(text: str, count: int) -> list[int] | None:
    """``1,3`` → [1, 3]; None when a number is not a frame of this instance (1-based) or repeats.

    PS3.18 names "non-duplicate" frame numbers; a repeat would also let a short URL (``1,1,1,…``)
    ask for ten thousand copies of one frame."""
    try:
        numbers = [int(part) for part in text.split(",")]
    except ValueError:
        return None
    if not numbers or len(numbers) > 10_000 or any(n < 1 or n > count for n in numbers) \
            or len(set(numbers)) != len(numbers):
        return None
    return numbers


def file_chunks(handle: BinaryIO) -> Iterator[bytes]:
    """A stored file's bytes in CHUNK pieces, closing it at the end (a WADO-URI answer)."""
    with handle:
        while chunk := handle.read(CHUNK):
            yield chunk


def bulk_value(handle: BinaryIO, tag_text: str) -> bytes | None:
    """The value of the bulk data element ``tag_text`` (hex) anywhere in a stored file, or None."""
    from pydicom import dcmread

    try:
        tag = int(tag_text, 16)
    except ValueError:
        return None
    dataset = dcmread(handle)
    for element in dataset.iterall():
        if int(element.tag) == tag and isinstance(element.value, (bytes, bytearray)):
            return bytes(element.value)
    return None
