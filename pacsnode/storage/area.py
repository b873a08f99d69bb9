"""The storage seam: what the rest of pacsnode may do with instance files, whatever holds them.

Two backends implement it: :class:`~pacsnode.storage.filesystem.FileStorage` (a folder, the
default) and :class:`~pacsnode.storage.s3.S3Storage` (an S3 bucket, ``[storage] url``).
Nothing outside ``pacsnode/storage/`` builds a path to an instance file or opens one by path:
it asks the area with the *relative path* the index recorded (``aa/bb/<uid>.dcm``).

The contract every backend keeps (``tests/test_storage_contract.py`` runs it on both):

- ``put``/``place`` never overwrite: a name that exists is refused (``put``) or the file gets
  a fresh sibling name (``place``), so the file an index row points to stays intact;
- ``put``/``place`` return only when the bytes are durably stored *and* match the digest the
  receiver computed (:class:`DigestMismatch` otherwise, nothing left behind);
- ``open`` is a readable, seekable binary file (the real file on the filesystem: C-MOVE and
  C-GET stream from it as before); ``read_range`` reads one byte range (frames: ``os.pread``
  on the filesystem, a ranged GET on S3);
- an absent file raises :class:`FileNotFoundError` from ``open``/``read_range``/``size``;
- a backend that cannot be reached raises :class:`~pacsnode.errors.StorageUnavailable`, which
  a store answers as Out of Resources (0xA700), never Success.
"""

from __future__ import annotations

import hashlib
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterator, Protocol, Sequence

from pacsnode.errors import PacsnodeError
from pacsnode.model import ReceivedFile, StoredFile

if TYPE_CHECKING:
    from pacsnode.config import NodeConfig

CHUNK = 1 << 20


class DigestMismatch(PacsnodeError):
    """The stored bytes are not the bytes that were received (refused; nothing is kept)."""


class StorageArea(Protocol):
    """Where instance files live; every method takes the relative path the index recorded."""

    quota_bytes: int
    #: whether processes this home's ``serve.lock`` does not see may write into the area (an
    #: S3 bucket that other nodes share): then ``check --repair`` never counts as offline and
    #: leaves young unindexed files alone whatever the lock says
    shared: bool

    def describe(self) -> str:
        """Where the files are, for people (a folder, or ``s3://bucket/prefix``; never credentials)."""
        ...

    def place(self, temp_path: Path, sop_instance_uid: str, received: ReceivedFile | None = None) -> StoredFile:
        """Store a received temp file under its UID's name (a sibling name if taken); consumes it."""
        ...

    def put(self, relative_path: str, source: Path, sha256: str) -> None:
        """Store ``source`` at exactly ``relative_path``: FileExistsError if taken, DigestMismatch."""
        ...

    def open(self, relative_path: str) -> BinaryIO:
        """The file, readable and seekable, position 0 (the caller closes it)."""
        ...

    def read_range(self, relative_path: str, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (fewer only at the end of the file)."""
        ...

    def read_ranges(self, relative_path: str, ranges: Sequence[tuple[int, int]]) -> Iterator[bytes]:
        """``read_range`` of each (offset, length) in order (frames: the file opened once)."""
        ...

    def local_file(self, relative_path: str) -> AbstractContextManager[Path]:
        """A local path of the file for readers that need one (pydicom, Pillow), valid in the block."""
        ...

    def size(self, relative_path: str) -> int:
        ...

    def sha256(self, relative_path: str) -> str:
        """The SHA-256 of the bytes stored now (read back: ``check --verify``, commitment)."""
        ...

    def exists(self, relative_path: str) -> bool:
        ...

    def age_seconds(self, relative_path: str) -> float:
        """Time since the file was stored (FileNotFoundError when absent)."""
        ...

    def remove(self, relative_path: str) -> None:
        """Remove the file; an absent one is not an error."""
        ...

    def remove_if_orphan(self, relative_path: str, is_indexed: Callable[[str], bool], min_age: float) -> bool:
        """``check --repair``: remove a file only if it is unindexed and old at this very moment."""
        ...

    def walk(self) -> Iterator[str]:
        """Every stored file, as a relative path."""
        ...

    def check_room(self, incoming_bytes: int, used_bytes: int) -> None:
        """Raise StorageFull when the quota (or the disk) cannot take ``incoming_bytes`` more."""
        ...

    def free_bytes(self) -> int | None:
        """Free bytes on the disk holding the files, or None when that is not known (S3)."""
        ...

    def available(self) -> bool:
        """Whether the files can be reached now (the health check)."""
        ...


def sha256_of(path: Path) -> str:
    """The SHA-256 of a local file."""
    return sha256_stream(open(path, "rb"))


def sha256_stream(handle: BinaryIO) -> str:
    """The SHA-256 of a readable stream, which is closed afterwards."""
    digest = hashlib.sha256()
    with handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def open_storage(config: "NodeConfig") -> StorageArea:
    """The storage area ``pacsnode.toml`` names: ``[storage] url`` (S3), else the storage folder."""
    url = config.storage.url
    if url:
        from pacsnode.storage.s3 import S3Storage

        return S3Storage.from_url(url, temp_dir=config.temp_path, quota_bytes=config.store.quota_bytes)
    from pacsnode.storage.filesystem import FileStorage

    return FileStorage(config.storage_path, quota_bytes=config.store.quota_bytes, fsync=config.store.fsync)
