"""Sending stored instances: engine-neutral pieces shared by C-MOVE, C-GET and ``pacsnode send``.

Retrieval at wire speed (issue 13) means a stored file's dataset goes out as the bytes it
already is on disk whenever the peer accepted the transfer syntax it is stored in: no
pydicom decode, no re-encode, no whole-file buffer. This module knows how to

* propose presentation contexts for a set of instances (the stored syntax alone, then the
  uncompressed ones, per SOP class), so that a peer which refuses the stored syntax still
  gets the instance;
* turn one stored file into the P-DATA-TF PDUs of a C-STORE-RQ on an accepted context:
  streamed from disk in PDU-sized reads when the syntaxes match, decoded and re-encoded with
  pydicom (pillow or any installed pylibjpeg plugin for compressed pixel data) otherwise;
* read a C-STORE-RSP.

It owns no socket: the server (C-GET on its own association) and ``outgoing`` (C-MOVE and
``send`` on a new one) both write what it yields.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from typing import BinaryIO, Generator, Iterable, Iterator, cast

from pacsnode.dimse import pdu
from pacsnode.errors import PacsnodeError, StorageUnavailable
from pacsnode.model import InstanceLocation

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
UNCOMPRESSED = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)
MAX_CONTEXTS = 128  # PS3.8: odd context ids 1..255
UNLIMITED_CHUNK = 1 << 20  # read size when the peer announced no maximum PDU length
PREAMBLE = 128
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_META_ELEMENT = struct.Struct("<HH2s")
_META_LIMIT = 64 * 1024  # a file meta group larger than this is not one we wrote or can trust


class CannotSend(PacsnodeError):
    """This instance cannot be sent, but the association is intact: one failed sub-operation."""


class TranscodeError(CannotSend):
    """The instance cannot be put into the transfer syntax the peer accepted.

    Distinct from I/O errors on purpose: the caller counts one failed sub-operation (with
    the instance in the Failed SOP Instance UID List) and goes on with the next instance.
    """


class UnreadableInstance(CannotSend):
    """The stored file is missing or is not a readable DICOM file."""


class NoAcceptedContext(CannotSend):
    """The peer accepted no presentation context for the instance's SOP class."""


# -- presentation contexts ----------------------------------------------------------------
def proposed_contexts(locations: Iterable[InstanceLocation]) -> list[pdu.PresentationContextRQ]:
    """Contexts to propose for sending ``locations``: per SOP class, the stored syntax alone,
    then Explicit + Implicit VR Little Endian as a fallback; at most 128, ids 1, 3, 5, ...

    The stored syntax gets a context of its own so that a peer choosing among several
    syntaxes cannot pick an uncompressed one and force a decode we did not need.
    """
    wanted: list[tuple[str, tuple[str, ...]]] = []
    seen: set[tuple[str, tuple[str, ...]]] = set()
    for loc in locations:
        stored = loc.transfer_syntax or EXPLICIT_VR_LITTLE_ENDIAN
        for syntaxes in ((stored,), UNCOMPRESSED):
            key = (loc.sop_class_uid, syntaxes)
            if key not in seen:
                seen.add(key)
                wanted.append(key)
    return [pdu.PresentationContextRQ(2 * i + 1, abstract, syntaxes)
            for i, (abstract, syntaxes) in enumerate(wanted[:MAX_CONTEXTS])]


def choose_context(sop_class_uid: str, stored_syntax: str,
                   accepted: dict[int, tuple[str, str]]) -> tuple[int, str] | None:
    """The accepted context to send an instance on: (context id, transfer syntax), or None.

    ``accepted`` maps context id → (abstract syntax, accepted transfer syntax). The stored
    syntax wins (streamed as is); then Explicit, then Implicit VR Little Endian; then any
    other syntax accepted for the class (transcoding is attempted and may fail).
    """
    candidates = [(cid, ts) for cid, (abstract, ts) in sorted(accepted.items()) if abstract == sop_class_uid]
    for preferred in (stored_syntax, *UNCOMPRESSED):
        for cid, ts in candidates:
            if ts == preferred:
                return cid, ts
    return candidates[0] if candidates else None


# -- the stored file ------------------------------------------------------------------------
@dataclass(frozen=True)
class StoredFile:
    """Where a Part 10 file's dataset starts and the syntax its file meta declares."""

    path: str
    dataset_offset: int
    size: int
    transfer_syntax: str


def inspect_file(handle: BinaryIO, path: str = "") -> StoredFile:
    """Walk the File Meta Information (always Explicit VR Little Endian) without pydicom.

    Raises :class:`UnreadableInstance` when there is no ``DICM`` prefix or the meta group is
    malformed; such a file can still be sent through pydicom (see ``_transcoded``).
    """
    size = handle.seek(0, os.SEEK_END)  # not fstat: an object read from S3 is a spooled file in memory
    handle.seek(0)
    head = handle.read(min(size, PREAMBLE + 4 + _META_LIMIT))
    if head[PREAMBLE:PREAMBLE + 4] != b"DICM":
        raise UnreadableInstance(f"{path or 'file'}: no DICOM file meta (DICM prefix missing)")
    offset, syntax = PREAMBLE + 4, ""
    while offset + 8 <= len(head):
        group, element, vr = _META_ELEMENT.unpack_from(head, offset)
        if group != 0x0002:
            break
        if vr in _LONG_VRS:
            if offset + 12 > len(head):
                raise UnreadableInstance(f"{path or 'file'}: truncated file meta element (0002,{element:04x})")
            (length,) = struct.unpack_from("<L", head, offset + 8)
            start = offset + 12
        else:
            (length,) = struct.unpack_from("<H", head, offset + 6)
            start = offset + 8
        if start + length > len(head):
            raise UnreadableInstance(f"{path or 'file'}: file meta element (0002,{element:04x}) overruns")
        if element == 0x0010:
            syntax = head[start:start + length].decode("ascii", "replace").rstrip("\0 ")
        offset = start + length
    else:
        if offset < size:
            raise UnreadableInstance(f"{path or 'file'}: file meta group larger than {_META_LIMIT} bytes")
    if not syntax:
        raise UnreadableInstance(f"{path or 'file'}: file meta without a Transfer Syntax UID")
    return StoredFile(path, offset, size, syntax)


# -- C-STORE-RQ -----------------------------------------------------------------------------
def store_command(location: InstanceLocation, message_id: int, move_originator: tuple[str, int] | None = None,
                  priority: int = 0) -> bytes:
    """The C-STORE-RQ command set for ``location`` (Move Originator AE and Message ID when given)."""
    elements: dict[int, int | str] = {
        pdu.AFFECTED_SOP_CLASS_UID: location.sop_class_uid,
        pdu.COMMAND_FIELD: pdu.C_STORE_RQ,
        pdu.MESSAGE_ID: message_id,
        pdu.PRIORITY: priority,
        pdu.COMMAND_DATASET_TYPE: pdu.DATASET_PRESENT,
        pdu.AFFECTED_SOP_INSTANCE_UID: location.sop_instance_uid,
    }
    if move_originator is not None:
        elements[pdu.MOVE_ORIGINATOR_AET] = move_originator[0]
        elements[pdu.MOVE_ORIGINATOR_MESSAGE_ID] = move_originator[1]
    return pdu.encode_command(elements)


def pdv_limit(peer_max_pdu: int) -> int:
    """Most dataset bytes one P-DATA-TF of one PDV may carry for this peer (0: unlimited)."""
    if peer_max_pdu == 0:
        return UNLIMITED_CHUNK
    if peer_max_pdu < 8:
        raise pdu.PDUError(f"peer maximum PDU length {peer_max_pdu} cannot carry a PDV")
    return (peer_max_pdu - 6) & ~1  # even: DICOM fragments have even lengths


WIRE_BATCH = 256 * 1024  # PDU bytes laid out per socket write; the buffer is reused, whatever the file size
_MAX_SLOTS = 512  # PDV slots filled per preadv (Linux's IOV_MAX is 1024)


def prepare_store(location: InstanceLocation, context_id: int, transfer_syntax: str, message_id: int,
                  peer_max_pdu: int, move_originator: tuple[str, int] | None = None,
                  priority: int = 0) -> "PreparedStore":
    """One C-STORE-RQ for a stored file, ready to go out: its file open and inspected, or its
    dataset transcoded in memory. Nothing has been sent when this raises :class:`CannotSend`
    (:class:`UnreadableInstance` for a missing file, :class:`TranscodeError` when the
    dataset cannot be put into ``transfer_syntax``): the association stays usable.

    When ``transfer_syntax`` (accepted on ``context_id``) is the one in the file's meta, the
    dataset goes out as the bytes on disk (see :meth:`PreparedStore.batches`).
    """
    limit = pdv_limit(peer_max_pdu)
    command = store_command(location, message_id, move_originator, priority)
    try:  # the storage area's open (the real file on the filesystem: streamed as before)
        handle = location.opener() if location.opener is not None else open(location.path, "rb")
    except OSError as exc:
        raise UnreadableInstance(f"cannot open {location.path}: {exc.strerror or exc}") from None
    except StorageUnavailable as exc:
        raise UnreadableInstance(f"cannot read {location.path}: {exc}") from None
    command_pdus = pdu_bytes(context_id, command, True, limit)
    try:
        if location.size is not None and (found := handle.seek(0, os.SEEK_END)) != location.size:
            # cut short (or grown) behind the index's back: a dataset cut at an element boundary
            # would still parse, and the receiver would answer Success for a damaged instance
            raise UnreadableInstance(f"{location.path}: the stored file has {found} bytes, "
                                     f"the index recorded {location.size}")
        try:
            stored: StoredFile | None = inspect_file(handle, location.path)
        except UnreadableInstance:
            stored = None
        if stored is not None and stored.transfer_syntax == transfer_syntax:
            return PreparedStore(command_pdus, context_id, limit, handle, stored)  # it closes the file
        handle.seek(0)
        payload = _transcoded(handle, location.path, transfer_syntax)
    except OSError as exc:  # a read error (EIO): this instance fails, the association goes on
        handle.close()
        raise UnreadableInstance(f"cannot read {location.path}: {exc.strerror or exc}") from None
    except BaseException:
        handle.close()
        raise
    handle.close()
    return PreparedStore(command_pdus, context_id, limit, payload=payload)


class PreparedStore:
    """A C-STORE-RQ whose command is encoded and whose dataset is an open file or bytes.

    :meth:`batches` lays its PDUs out in one reused buffer: the command, then per PDU the
    header written in place and the stored bytes read straight into the slot after it (one
    ``preadv`` for a whole batch when the file is a real file). The sender writes each batch
    with one call, instead of a read, an allocation and a write per PDU. Close it (or use it
    as a context manager) to close the file.
    """

    def __init__(self, command_pdus: bytes, context_id: int, limit: int, handle: BinaryIO | None = None,
                 stored: StoredFile | None = None, payload: bytes | None = None) -> None:
        self.command_pdus = command_pdus
        self.context_id, self.limit = context_id, limit
        self._handle, self._stored, self._payload = handle, stored, payload

    def __enter__(self) -> "PreparedStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def batches(self, buffer: bytearray | None = None) -> Generator[memoryview, None, None]:
        """Whole PDUs, command first, as views of ``buffer`` (or of bytes for a transcoded
        dataset). A view is valid until the next one is asked for. Raises
        :class:`UnreadableInstance` when the file ends early (the file changed under us): the
        caller must then abort, since part of the message may be on the wire."""
        if self._payload is not None:
            yield memoryview(self.command_pdus)
            for raw in fragments(self.context_id, self._payload, False, self.limit):
                yield memoryview(raw)
            return
        assert self._handle is not None and self._stored is not None
        if buffer is None or len(buffer) < len(self.command_pdus) + 64:
            buffer = bytearray(max(WIRE_BATCH, len(self.command_pdus) + 64))
        yield from _laid_out(self._handle, self._stored, self.context_id, self.limit, buffer, self.command_pdus)


def _laid_out(handle: BinaryIO, stored: StoredFile, context_id: int, limit: int, buffer: bytearray,
              head: bytes) -> Iterator[memoryview]:
    """The dataset's P-DATA-TF PDUs (one PDV each, the last flagged last), batch by batch."""
    view = memoryview(buffer)
    view[:len(head)] = head
    pos, offset = len(head), stored.dataset_offset
    remaining = stored.size - offset
    # A deflated bitstream of odd length gets one trailing NUL (PS3.5 A.5): fragments are even.
    pad = remaining % 2 if stored.transfer_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN else 0
    fd = handle.fileno() if type(handle) in (io.BufferedReader, io.FileIO) else None  # never a spool's rollover
    done = False
    while not done:
        slots: list[memoryview] = []
        while not done and len(slots) < _MAX_SLOTS:
            room = (len(buffer) - pos - 13) & ~1  # 12 header bytes and a pad byte; PDVs stay even
            chunk = min(limit, remaining, room)
            if chunk < min(limit, remaining) and slots:
                break  # the next PDU goes whole into the next batch
            last = chunk == remaining
            wire = chunk + (pad if last else 0)
            pdu.HEADER.pack_into(buffer, pos, pdu.P_DATA_TF, wire + 6)
            _PDV_HEADER.pack_into(buffer, pos + 6, wire + 2, context_id, pdu.MCH_LAST if last else 0)
            slots.append(view[pos + 12:pos + 12 + chunk])
            if wire > chunk:
                buffer[pos + 12 + chunk] = 0
            pos += 12 + wire
            remaining -= chunk
            done = last
        wanted = sum(len(slot) for slot in slots)
        got = _read_slots(handle, fd, offset, slots)
        if got != wanted:  # the file shrank under us: never send a short dataset as if it were whole
            raise UnreadableInstance(f"{stored.path}: file ended {remaining + wanted - got} bytes early")
        offset += got
        yield view[:pos]
        pos = 0


def _read_slots(handle: BinaryIO, fd: int | None, offset: int, slots: list[memoryview]) -> int:
    """Fill ``slots`` from ``offset`` on: one ``preadv`` (repeated on a short read) for a real
    file, ``readinto`` otherwise (an S3 object's spooled file). Bytes read; fewer means EOF."""
    total = 0
    if fd is None:
        handle.seek(offset)
        for slot in slots:
            got = cast(io.BufferedIOBase, handle).readinto(slot) if len(slot) else 0
            total += got
            if got < len(slot):
                break
        return total
    pending = [slot for slot in slots if len(slot)]
    while pending:
        got = os.preadv(fd, pending, offset + total)
        if got == 0:
            break
        total += got
        while pending and got >= len(pending[0]):
            got -= len(pending.pop(0))
        if got:
            pending[0] = pending[0][got:]
    return total


def iter_store_pdus(location: InstanceLocation, context_id: int, transfer_syntax: str, message_id: int,
                    peer_max_pdu: int, move_originator: tuple[str, int] | None = None,
                    priority: int = 0) -> Iterator[bytes]:
    """The encoded P-DATA-TF PDUs of one C-STORE-RQ, command first, as bytes (several whole
    PDUs per item): :func:`prepare_store` and :meth:`PreparedStore.batches`, each batch copied.
    Memory stays at one batch whatever the file size."""
    with prepare_store(location, context_id, transfer_syntax, message_id, peer_max_pdu, move_originator,
                       priority) as prepared:
        for batch in prepared.batches():
            yield bytes(batch)


def pdu_bytes(context_id: int, payload: bytes, is_command: bool, limit: int) -> bytes:
    """:func:`fragments` joined (a command set: a few hundred bytes)."""
    return b"".join(fragments(context_id, payload, is_command, limit))


def fragments(context_id: int, payload: bytes, is_command: bool, limit: int) -> Iterator[bytes]:
    """One P-DATA-TF PDU (of one PDV) per ``limit`` bytes of ``payload``, the last flagged last."""
    base = pdu.MCH_COMMAND if is_command else 0
    size = len(payload)
    for offset in range(0, max(size, 1), limit):
        chunk = payload[offset:offset + limit]
        control = base | (pdu.MCH_LAST if offset + limit >= size else 0)
        yield pdu.HEADER.pack(pdu.P_DATA_TF, len(chunk) + 6) + _PDV_HEADER.pack(len(chunk) + 2, context_id,
                                                                                 control) + chunk


_PDV_HEADER = struct.Struct(">LBB")


def _transcoded(handle: BinaryIO, path: str, transfer_syntax: str) -> bytes:
    """The dataset re-encoded in ``transfer_syntax`` (no file meta), or :class:`TranscodeError`."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:
        dataset = dcmread(handle, force=True)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise UnreadableInstance(f"{path}: {exc}") from None
    return encode_dataset(dataset, transfer_syntax, path)


def encode_dataset(dataset: "object", transfer_syntax: str, what: str = "instance") -> bytes:
    """Encode a pydicom Dataset in ``transfer_syntax``, decompressing or compressing as needed."""
    from pydicom.dataset import Dataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset
    from pydicom.uid import UID

    assert isinstance(dataset, Dataset)
    target = UID(transfer_syntax)
    meta = getattr(dataset, "file_meta", None)
    source = UID(str(meta.get("TransferSyntaxUID", "")) if meta is not None else "") or UID(EXPLICIT_VR_LITTLE_ENDIAN)
    if target == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN or not target.is_transfer_syntax:
        raise TranscodeError(f"{what}: transcoding to {transfer_syntax} is not supported")
    try:
        if source != target and source.is_compressed and "PixelData" in dataset:
            # pillow / pylibjpeg; raises when no decoder handles the syntax. Keep the SOP Instance UID:
            # pydicom 3 would mint a new one, and the peer would store a different instance.
            dataset.decompress(generate_instance_uid=False)
        if not source.is_little_endian and target.is_little_endian:
            _swap_to_little_endian(dataset, what)
        if target.is_compressed and source != target:
            if "PixelData" not in dataset:
                raise TranscodeError(f"{what}: no pixel data to encode in {transfer_syntax}")
            dataset.compress(target, generate_instance_uid=False)
    except TranscodeError:
        raise
    except Exception as exc:  # pydicom raises many types for a missing or failing codec
        raise TranscodeError(f"{what}: cannot convert {source.name} to {target.name}: {exc}") from None
    buffer = DicomBytesIO()
    buffer.is_little_endian = target.is_little_endian
    buffer.is_implicit_VR = target.is_implicit_VR
    try:
        write_dataset(buffer, dataset)
    except Exception as exc:
        raise TranscodeError(f"{what}: cannot encode in {target.name}: {exc}") from None
    return buffer.getvalue()


_WORD_VRS = frozenset({"OW", "OF", "OD", "OL", "OV"})


def _swap_to_little_endian(dataset: "object", what: str) -> None:
    """Re-order the raw words of a Big Endian dataset: pydicom re-encodes typed values itself
    but writes OW/OF/... bytes unchanged, which would scramble the pixels silently.

    Pixel Data is rebuilt from the decoded array; any other word-valued element is refused
    rather than guessed.
    """
    from pydicom.dataset import Dataset

    assert isinstance(dataset, Dataset)
    for element in dataset.iterall():
        if element.VR in _WORD_VRS and element.tag != 0x7FE00010 and element.value:
            raise TranscodeError(f"{what}: Big Endian {element.VR} element {element.tag} cannot be converted")
    if "PixelData" in dataset and dataset["PixelData"].VR != "OB":
        pixels = dataset.pixel_array
        dataset.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
        dataset["PixelData"].VR = "OW"
        if int(dataset.get("SamplesPerPixel", 1) or 1) > 1:
            dataset.PlanarConfiguration = 0  # pixel_array is always colour-by-pixel


# -- C-STORE-RSP ----------------------------------------------------------------------------
@dataclass(frozen=True)
class StoreResponse:
    """A C-STORE-RSP as the sender needs it."""

    message_id: int
    status: int
    error_comment: str = ""
    sop_instance_uid: str = ""


def store_response(command: pdu.Command) -> StoreResponse:
    """Read a decoded C-STORE-RSP command set; :class:`pdu.PDUError` when it is not one."""
    if command.us(pdu.COMMAND_FIELD) != pdu.C_STORE_RSP:
        raise pdu.PDUError(f"expected a C-STORE-RSP, got command 0x{command.us(pdu.COMMAND_FIELD) or 0:04x}")
    status = command.us(pdu.STATUS)
    if status is None:
        raise pdu.PDUError("C-STORE-RSP without a Status")
    return StoreResponse(command.us(pdu.MESSAGE_ID_BEING_RESPONDED_TO, 0) or 0, status,
                         command.text(pdu.ERROR_COMMENT), command.text(pdu.AFFECTED_SOP_INSTANCE_UID))


def store_outcome(status: int) -> str:
    """'success', 'warning' or 'failure' for a C-STORE status (PS3.4 B.2.3)."""
    if status == 0x0000:
        return "success"
    if status in (0x0001, 0x0107, 0x0116) or 0xB000 <= status <= 0xBFFF:
        return "warning"
    return "failure"


def location_of_file(path: str, sop_class_uid: str, transfer_syntax: str) -> InstanceLocation:
    """An :class:`InstanceLocation` for a DICOM file on disk (``send PATH...``): its SOP
    Instance UID read from the dataset, pixels not loaded."""
    from pydicom import dcmread

    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
    except Exception as exc:  # pydicom raises many kinds on a broken file
        raise UnreadableInstance(f"{path}: {exc}") from None
    uid = str(ds.get("SOPInstanceUID", "") or "").strip()
    if not uid:
        raise UnreadableInstance(f"{path}: no SOP Instance UID")
    return InstanceLocation(uid, sop_class_uid, transfer_syntax, path)
