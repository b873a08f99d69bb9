"""Where instance files live: a folder tree on the local filesystem.

The layout is ``<root>/<aa>/<bb>/<sop_instance_uid>.dcm`` where ``aabb`` are the first hex
digits of the SHA-256 of the SOP Instance UID: spreads files over 65k folders and never uses
anything from the wire as a path component except a UID already validated as digits and dots.
Placing a file is a hard link inside one filesystem (atomic, and never over an existing file),
preceded by fsync of the data and followed by fsync of the folder, so a file that the index
points to has reached the disk.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from contextlib import contextmanager
from typing import BinaryIO, Callable, Iterator, Sequence

from pacsnode.dicom.extract import is_valid_uid
from pacsnode.errors import InvalidInstance, StorageFull
from pacsnode.model import ReceivedFile, StoredFile
from pacsnode.storage import orphans
from pacsnode.storage.area import CHUNK, DigestMismatch, StorageArea, sha256_of
from pacsnode.storage.tempfiles import age_seconds

__all__ = ["FileStorage", "StorageArea", "sha256_of", "fsync_dir", "CHUNK"]


#: the names ``place`` makes (``aa/bb/<uid>.dcm``, a sibling ``aa/bb/<uid>.<8 hex>.dcm``)
_LAYOUT = re.compile(r"[0-9a-f]{2}/[0-9a-f]{2}/[0-9.]{1,64}(\.[0-9a-f]{8})?\.dcm")


def relative_path_for(sop_instance_uid: str) -> str:
    """``aa/bb/<uid>.dcm``: the one place an instance's name is made (both backends use it)."""
    if not is_valid_uid(sop_instance_uid):
        raise InvalidInstance(f"SOP Instance UID {sop_instance_uid[:80]!r} cannot name a file")
    digest = hashlib.sha256(sop_instance_uid.encode("ascii")).hexdigest()
    return f"{digest[:2]}/{digest[2:4]}/{sop_instance_uid}.dcm"


def _with_ancestors(folder: str) -> list[str]:
    """``aa/bb`` -> ``aa/bb``, ``aa``: the names a durable folder's parents make durable."""
    names = []
    while folder and folder != ".":
        names.append(folder)
        folder = os.path.dirname(folder)
    return names


def sibling_name(relative: str) -> str:
    """A fresh name next to ``relative`` for a second copy of the same UID (a replace, a race)."""
    return f"{relative[:-len('.dcm')]}.{secrets.token_hex(4)}.dcm"


def check_quota(quota_bytes: int, incoming_bytes: int, used_bytes: int) -> None:
    """Raise StorageFull when ``[store] quota_bytes`` (0: none) cannot take ``incoming_bytes`` more."""
    if quota_bytes and used_bytes + incoming_bytes > quota_bytes:
        raise StorageFull(f"storage quota of {quota_bytes} bytes reached")


def fsync_dir(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: fdatasync where the platform has it: the file's bytes and the metadata needed to read them
#: back (its size, its blocks), without its timestamps; its *name* is the folder's to make durable.
sync_data: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)

#: folder fsyncs run here, beside the data sync in the storing thread (both release the GIL).
#: One pool for the process rather than a thread started per instance: several associations
#: share it, and a new thread per store cost ~0.1-0.3 ms under load (issue 13).
_FOLDER_SYNCS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="fsync-dir")


def fsync_file_and_dir(path: Path | int | None, folder: Path | str, parents: Sequence[Path | str] = ()) -> None:
    """Make the data of ``path`` (a descriptor open on it, or None: already synced), ``folder``
    and the ``parents`` of new folders durable, concurrently.

    The file is already linked into ``folder``; both must reach the disk before the index
    row commits, in any order between them. Two syncs issued together cost about one on
    ext4 (the second joins the journal commit of the first), where one after the other
    cost two: a store with ``fsync = true`` waits ~5 ms less per instance (issue 13).
    ``fdatasync`` suffices for the data: the size it covers is what a reader needs, and the
    link that names the file is made durable by the folder's fsync.
    """
    folders = [_FOLDER_SYNCS.submit(fsync_dir, each) for each in (*parents, folder)]
    try:
        if isinstance(path, int):
            sync_data(path)  # the receiver's descriptor: no open and close of the placed file (issue 13)
        elif path is not None:
            fd = os.open(path, os.O_RDONLY)
            try:
                sync_data(fd)
            finally:
                os.close(fd)
    finally:
        for synced in folders:
            synced.result()  # re-raises a folder's error in this thread


class FileStorage:
    """Instance files under one root folder (a :class:`StorageArea`)."""

    shared = False  # only this home's processes write here (they hold serve.lock)

    def __init__(self, root: Path, quota_bytes: int = 0, fsync: bool = True) -> None:
        self.root = root
        self.quota_bytes = quota_bytes
        self.fsync = fsync
        self.root.mkdir(parents=True, exist_ok=True)
        self._durable_names: set[str] = set()  # folders whose name this process made durable (_parents_to_sync)

    def relative_path_for(self, sop_instance_uid: str) -> str:
        return relative_path_for(sop_instance_uid)

    def absolute(self, relative_path: str) -> Path:
        if _LAYOUT.fullmatch(relative_path):  # a name place() made: hex folders, UID digits, no way out
            return self.root / relative_path
        path = (self.root / relative_path).resolve()
        if self.root.resolve() not in path.parents:
            raise InvalidInstance(f"path {relative_path!r} escapes the storage folder")
        return path

    def describe(self) -> str:
        return str(self.root)

    def open(self, relative_path: str) -> BinaryIO:
        """The real file object: C-MOVE/C-GET stream from it, ``fileno()`` works for ``os.pread``."""
        return open(self.absolute(relative_path), "rb")

    def read_range(self, relative_path: str, offset: int, length: int) -> bytes:
        fd = os.open(self.absolute(relative_path), os.O_RDONLY)
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def read_ranges(self, relative_path: str, ranges: Sequence[tuple[int, int]]) -> Iterator[bytes]:
        """``os.pread`` at each range of one open descriptor (frames, as before the seam)."""
        fd = os.open(self.absolute(relative_path), os.O_RDONLY)
        try:
            for offset, length in ranges:
                yield os.pread(fd, length, offset)
        finally:
            os.close(fd)

    @contextmanager
    def local_file(self, relative_path: str) -> Iterator[Path]:
        """The file itself (no copy)."""
        yield self.absolute(relative_path)

    def size(self, relative_path: str) -> int:
        return self.absolute(relative_path).stat().st_size

    def sha256(self, relative_path: str) -> str:
        return sha256_of(self.absolute(relative_path))

    def exists(self, relative_path: str) -> bool:
        return self.absolute(relative_path).is_file()

    def age_seconds(self, relative_path: str) -> float:
        return age_seconds(os.lstat(self.absolute(relative_path)))

    def free_bytes(self) -> int | None:
        return shutil.disk_usage(self.root).free

    def available(self) -> bool:
        return self.root.is_dir()

    def put(self, relative_path: str, source: Path, sha256: str) -> None:
        """Copy ``source`` to exactly ``relative_path`` (never over a file), checking its digest."""
        final = self.absolute(relative_path)
        new_folders = self._make_folders(final.parent)
        fd, staging = tempfile.mkstemp(suffix=".part", dir=final.parent)
        try:
            digest = hashlib.sha256()
            with open(source, "rb") as reader, os.fdopen(fd, "wb") as writer:
                while chunk := reader.read(CHUNK):
                    digest.update(chunk)
                    writer.write(chunk)
                writer.flush()
                if self.fsync:
                    os.fsync(writer.fileno())
            if digest.hexdigest() != sha256:
                raise DigestMismatch(f"{relative_path}: stored bytes do not match SHA-256 {sha256[:16]}...")
            try:
                os.link(staging, final)  # atomic, and FileExistsError rather than over a file
            except FileExistsError:
                raise
            except OSError as exc:
                raise self._translate(exc) from exc
        finally:
            os.unlink(staging)
        if self.fsync:
            folder = os.path.relpath(final.parent, self.root)
            fsync_file_and_dir(None, final.parent, parents=self._parents_to_sync(folder, new_folders))
            self._durable_names.update(_with_ancestors(folder))

    def place(self, temp_path: Path, sop_instance_uid: str, received: ReceivedFile | None = None) -> StoredFile:
        """fsync ``temp_path`` and move it into its final place, never over an existing file.

        A second copy of a UID (a replace, or a duplicate racing the first) gets a sibling
        name: the file the index points to must stay intact until the index commits, and the
        caller removes whichever copy no row points to afterwards. ``received`` (digest and
        size from the receiver, whether it already fsync'ed, its open descriptor) spares
        reading the file back and opening it again to sync it.

        The link is tried first and the folders made only when it finds them missing (one
        system call per store once the archive has its folders, instead of a stat before it),
        on strings rather than ``Path`` objects: this runs once per instance (issue 13).
        """
        relative = self.relative_path_for(sop_instance_uid)
        temp = os.fspath(temp_path)
        data_synced, data_fd = True, -1
        if received is not None and received.size == os.stat(temp).st_size:
            size, sha256, data_fd = received.size, received.sha256, received.fd
            data_synced = received.synced or not self.fsync  # else synced below, with the folder
        else:
            size, sha256 = self._hash_and_sync(temp_path)
        new_folders: list[str] = []
        try:
            relative = self._link_unique(temp, relative, new_folders)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise self._translate(exc) from exc
            # temp file on another filesystem: copy next to the final place, then link
            fd, staging = tempfile.mkstemp(suffix=".part", dir=os.path.dirname(self._root + relative))
            os.close(fd)
            try:
                shutil.copyfile(temp, staging)
                with open(staging, "rb") as handle:
                    os.fsync(handle.fileno())
                relative = self._link_unique(staging, relative, new_folders)
                data_synced = True  # the staging copy that was linked is synced
            except OSError as exc2:
                raise self._translate(exc2) from exc2
            finally:
                os.unlink(staging)
        if self.fsync:
            folder = os.path.dirname(relative)
            fsync_file_and_dir(None if data_synced else data_fd if data_fd >= 0 else temp_path,
                               self._root + folder, parents=self._parents_to_sync(folder, new_folders))
            self._durable_names.update(_with_ancestors(folder))
        os.unlink(temp)
        return StoredFile(relative, size, sha256)

    def _parents_to_sync(self, folder: str, new_folders: Sequence[Path | str]) -> list[str]:
        """The folders to fsync with ``folder`` (relative, ``aa/bb``) so that its name is durable too.

        A store syncs the parent of each folder it made. A folder it found may have been made a
        moment ago by another store (another association's thread, a worker) that has not synced
        that folder's parent yet: a link into it and an fsync of it alone are then durable inside a
        folder whose own name may not be, and a power cut loses the instance after its Success. So
        the first store into a folder in this process syncs its parents as well (once per folder:
        at most 256 + 65,536 names remembered), and later ones trust them.
        """
        parents = [os.path.dirname(os.fspath(made)) for made in new_folders]
        name = folder
        while name and name != "." and name not in self._durable_names:
            name = os.path.dirname(name)
            parents.append(self._root + name if name else os.fspath(self.root))
        return list(dict.fromkeys(parents))

    @property
    def _root(self) -> str:
        """The root as a string ending in a separator: ``self._root + relative`` is a file's path."""
        return os.path.join(self.root, "")

    def _make_folders(self, folder: Path | str) -> list[Path]:
        """Create ``folder`` and whichever of its parents under the root are missing; returns those
        that were missing (whoever created them), outermost first.

        A new folder's own name lives in its parent: unless the parent is fsync'ed too, a power
        cut can take the folder, and the acknowledged file inside it, away. A folder another
        association is creating at the same moment counts as missing here, so this store syncs
        its parent itself rather than trusting the other store to do it before this one commits.
        """
        folder = Path(folder)
        if folder.is_dir():  # the usual case once the archive has its 65k folders
            return []
        missing: list[Path] = []
        while folder != self.root and not folder.is_dir():
            missing.append(folder)
            folder = folder.parent
        for new in reversed(missing):
            new.mkdir(exist_ok=True)
        return list(reversed(missing))

    def _hash_and_sync(self, path: Path) -> tuple[int, str]:
        digest = hashlib.sha256()
        size = 0
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
            if self.fsync:
                os.fsync(handle.fileno())
        return size, digest.hexdigest()

    def _link_unique(self, source: str, relative: str, new_folders: list[str]) -> str:
        """Hard-link ``source`` at ``relative``, or at a fresh sibling name when that exists (atomic).

        The folders are made when the link finds them missing; the ones missing then are
        appended to ``new_folders``, outermost first, whoever made them: one that another store
        made meanwhile counts too (see ``_make_folders``), so that its name is synced here.
        """
        candidate, root, made = relative, self._root, False
        while True:
            try:
                os.link(source, root + candidate)
                return candidate
            except FileExistsError:
                candidate = sibling_name(relative)
            except FileNotFoundError:
                if made:
                    raise  # the folders are there: the temp file is missing
                made = True
                new_folders.extend(self._make_missing(os.path.dirname(root + candidate)))

    def _make_missing(self, folder: str) -> list[str]:
        """``_make_folders`` for a folder a link found missing, with one mkdir per folder made and
        no stat: returns ``folder`` and whichever of its parents were missing, outermost first.
        A folder another store made meanwhile counts as missing, and so does its parent."""
        try:
            os.mkdir(folder)
            return [folder]
        except FileExistsError:  # made by another store since our link: sync both names here too
            parent = os.path.dirname(folder)
            return [folder] if parent == os.fspath(self.root) else [parent, folder]
        except FileNotFoundError:
            parent = os.path.dirname(folder)
            if parent == os.fspath(self.root):
                raise  # the storage root itself is gone: not ours to make again
            made = self._make_missing(parent)
            try:
                os.mkdir(folder)
            except FileExistsError:
                pass
            return [*made, folder]

    def check_room(self, incoming_bytes: int, used_bytes: int) -> None:
        """Raise StorageFull when the quota or the disk cannot take ``incoming_bytes`` more."""
        check_quota(self.quota_bytes, incoming_bytes, used_bytes)
        free = shutil.disk_usage(self.root).free
        if free < incoming_bytes + (16 << 20):
            raise StorageFull(f"only {free} bytes free on the storage disk")

    def remove(self, relative_path: str) -> None:
        try:
            self.absolute(relative_path).unlink()
        except FileNotFoundError:
            pass

    def remove_if_orphan(self, relative_path: str, is_indexed: Callable[[str], bool], min_age: float) -> bool:
        """Remove an orphan file (``check --repair``) only if it is one at this very moment
        (``storage/orphans.py`` says why this cannot remove an acknowledged instance). The file is
        the same between the two looks when its inode and ctime are: ``max(mtime, ctime)`` is its
        age, so a change of data, link or name within ``min_age`` keeps it."""
        return orphans.remove_if_orphan(
            relative_path, stat=lambda relative: os.lstat(self.absolute(relative)), age=age_seconds,
            identity=lambda st: (st.st_ino, st.st_ctime_ns), is_indexed=is_indexed, remove=self.remove,
            min_age=min_age)

    def walk(self) -> Iterator[str]:
        """Every file under the root, as a relative path (for ``check``)."""
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                yield str(Path(dirpath, name).relative_to(self.root))

    @staticmethod
    def _translate(exc: OSError) -> Exception:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return StorageFull(f"storage disk is full ({exc.strerror})")
        return exc
