"""C-STORE SCP: the dataset streams from the receive buffer into a temporary file.

Fragments are written straight from the association's receive buffer (no copy, hashed as
they arrive), behind a Part 10 file meta we write ourselves; after the last fragment
``Node.store_file`` fsyncs (through the receiver's still open descriptor), places and indexes
the file, and only then is Success sent.
Domain errors get ``statuses.store_status``, anything unexpected 0x0110, and a malformed
request (an empty or invalid Affected SOP Instance UID) a failure status: the association
always goes on.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from pathlib import Path

from pacsnode.dicom.extract import is_valid_uid
from pacsnode.dicom.header import SMALL_FILE
from pacsnode.dimse import pdu, statuses
from pacsnode.dimse.policy import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from pacsnode.dimse.session import Request, Session
from pacsnode.errors import PacsnodeError
from pacsnode.model import ReceivedFile

LOGGER = logging.getLogger(__name__)


# -- Part 10 file meta (PS3.10 7.1), Explicit VR Little Endian -------------------------
def _meta_element(element: int, vr: bytes, value: bytes, pad: bytes) -> bytes:
    if len(value) % 2:
        value += pad
    if vr == b"OB":
        return struct.pack("<HH2s2xL", 2, element, vr, len(value)) + value
    return struct.pack("<HH2sH", 2, element, vr, len(value)) + value


def file_meta(sop_class: str, sop_instance: str, transfer_syntax: str, source_aet: str) -> bytes:
    """Preamble, ``DICM`` and a complete File Meta Information group for a received dataset."""
    elements = [
        _meta_element(0x0001, b"OB", b"\x00\x01", b"\0"),
        _meta_element(0x0002, b"UI", sop_class.encode("ascii"), b"\0"),
        _meta_element(0x0003, b"UI", sop_instance.encode("ascii"), b"\0"),
        _meta_element(0x0010, b"UI", transfer_syntax.encode("ascii"), b"\0"),
        _meta_element(0x0012, b"UI", IMPLEMENTATION_CLASS_UID.encode("ascii"), b"\0"),
        _meta_element(0x0013, b"SH", IMPLEMENTATION_VERSION_NAME.encode("ascii"), b" "),
    ]
    if source_aet.strip():
        elements.append(_meta_element(0x0016, b"AE", source_aet.strip().encode("ascii", "replace"), b" "))
    body = b"".join(elements)
    return b"\0" * 128 + b"DICM" + _meta_element(0x0000, b"UL", struct.pack("<L", len(body)), b"") + body


class IncomingStore:
    """One C-STORE whose dataset is arriving: its temporary file, or the failure to report (a Sink)."""

    def __init__(self, session: Session, request: Request, sop_class: str, sop_instance: str) -> None:
        self.session = session
        self.request = request
        self.sop_class = sop_class
        self.sop_instance = sop_instance
        self.path: Path | None = None
        self.fd = -1  # the temporary file's descriptor, written with os.write (no file object: no fstat)
        self.failure: tuple[int, str] | None = None  # set: sink the dataset, then answer this
        self.digest = hashlib.sha256()  # hashed as it arrives: the storage area need not read it back
        self.size = 0
        self.synced = False
        self.head = bytearray()  # the file's first SMALL_FILE bytes, as written: the facts are read from them

    def open(self, path: Path, fd: int, header: bytes) -> None:
        """Take over ``path`` and its descriptor ``fd`` (closed in close/discard), write ``header``."""
        self.path = path
        self.fd = fd
        self.write(memoryview(header))

    def write(self, fragment: memoryview) -> None:
        if self.fd < 0:
            return
        try:
            written = 0
            self.digest.update(fragment)
            self.size += len(fragment)
            while written < len(fragment):
                written += os.write(self.fd, fragment[written:])
            if len(self.head) < SMALL_FILE:  # only once written: a failed write discards the file
                self.head += fragment[:SMALL_FILE - len(self.head)]
        except OSError as exc:
            LOGGER.error("cannot write the received dataset: %s", exc)
            self.discard()
            self.failure = (statuses.STORE_OUT_OF_RESOURCES, f"cannot write the dataset: {exc.strerror or exc}")

    def close(self, sync: bool = False) -> None:
        """Close the file; with ``sync``, fsync it first on the open descriptor (saves a reopen)."""
        if self.fd >= 0:
            if sync:
                try:
                    os.fsync(self.fd)
                    self.synced = True
                except OSError:
                    self.synced = False
            fd, self.fd = self.fd, -1
            os.close(fd)

    def discard(self) -> None:
        self.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None

    def finish(self) -> None:
        """The last fragment arrived: let the node place and index the file, then answer."""
        node = self.session.node
        if self.failure is not None or self.path is None:
            self.discard()
            self.answer(*(self.failure or (statuses.PROCESSING_FAILURE, "dataset not received")))
            return
        # The descriptor stays open until the file is placed: the storage area fdatasyncs through
        # it, together with the folder's fsync (FileStorage.place), instead of opening the file again.
        fd = self.fd
        status, comment = statuses.SUCCESS, ""
        try:
            outcome = node.store_file(self.path, self.session.caller(),
                                      expected_sop_class=self.request.abstract_syntax,
                                      expected_sop_instance=self.sop_instance,
                                      received=ReceivedFile(self.digest.hexdigest(), self.size, self.synced, fd,
                                                            bytes(self.head)))
            LOGGER.debug("C-STORE %s: %s", outcome.result.value, outcome.sop_instance_uid)
        except PacsnodeError as exc:
            LOGGER.warning("C-STORE refused: %s", exc)
            status, comment = statuses.store_status(exc), str(exc)
        except Exception as exc:  # edge: keep the association alive, say why
            LOGGER.exception("C-STORE failed")
            status, comment = statuses.PROCESSING_FAILURE, f"internal error: {exc.__class__.__name__}"
        finally:
            self.path = None  # store_file consumed it
            self.close()
        self.answer(status, comment)

    def answer(self, status: int, comment: str) -> None:
        self.session.stats["stored" if status == statuses.SUCCESS else "failed"] += 1
        elements: dict[int, int | str] = {pdu.AFFECTED_SOP_CLASS_UID: self.sop_class}
        if self.sop_instance:
            elements[pdu.AFFECTED_SOP_INSTANCE_UID] = self.sop_instance
        self.session.respond(self.request, pdu.C_STORE_RSP, status, comment, elements)
        self.session.prepare_temp_file()  # while the peer reads the response and sends its next file


def store(session: Session, request: Request) -> IncomingStore:
    """C-STORE-RQ: open the temporary file the dataset streams into (or note why it cannot be stored)."""
    sop_class = request.sop_class
    sop_instance = request.command.text(pdu.AFFECTED_SOP_INSTANCE_UID)
    incoming = IncomingStore(session, request, sop_class, sop_instance)
    if not is_valid_uid(sop_instance) or not is_valid_uid(sop_class):
        incoming.failure = (statuses.STORE_CANNOT_UNDERSTAND, "C-STORE request without valid Affected SOP UIDs")
    elif not request.has_dataset:
        incoming.failure = (statuses.STORE_CANNOT_UNDERSTAND, "C-STORE request without a dataset")
    else:
        try:
            meta = file_meta(sop_class, sop_instance, request.transfer_syntax, session.rq.calling_ae)
            temp, fd = session.temp_file()
            incoming.open(temp, fd, meta)
        except OSError as exc:
            LOGGER.error("cannot create a temporary file: %s", exc)
            incoming.discard()
            incoming.failure = (statuses.STORE_OUT_OF_RESOURCES, f"cannot store: {exc.strerror or exc}")
    return incoming
