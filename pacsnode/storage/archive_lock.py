"""Who is writing into an *archive* right now, when several node homes share one (issue 16).

A node home's ``serve.lock`` (``home_lock.py``) tells ``check --repair`` whether it runs offline
(nobody between "file placed" and "row committed": orphans go at once) and keeps a restore away
from a running server. When several homes point to one index and one storage area, a lock per
home is not enough: node 1's repair would see its own home idle and remove a file node 2 placed
a moment ago and is about to index, and node 2 would then acknowledge an instance whose file is
gone. So a node holds, with the same shared/exclusive protocol, one lock per *place it writes
to*: its home, and the archive's (``serve.lock`` beside a SQLite index outside the home; a
PostgreSQL index brings its own, an advisory lock that spans machines). Exclusive means
exclusive on all of them; they are taken in one fixed order so two maintainers cannot deadlock.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from pacsnode.storage.home_lock import HomeLock


class WriterLock(Protocol):
    """The protocol of ``HomeLock``: none, shared (writing) or exclusive (maintenance alone)."""

    @property
    def mode(self) -> str: ...

    def share(self, wait_seconds: float = 30.0) -> None: ...

    def try_exclusive(self) -> bool: ...

    def downgrade(self, to_shared: bool) -> None: ...

    def release(self) -> None: ...


class ArchiveLock:
    """Several writer locks held as one (each at most once, in a fixed order)."""

    def __init__(self, locks: list[WriterLock]) -> None:
        self.locks = locks

    @property
    def mode(self) -> str:
        return self.locks[0].mode if self.locks else ""

    def share(self, wait_seconds: float = 30.0) -> None:
        """Hold every lock shared (idempotent); a restore or offline repair anywhere makes it wait, then fail."""
        for lock in self.locks:
            lock.share(wait_seconds)

    def try_exclusive(self) -> bool:
        """Exclusive on every lock, or on none (what was taken is given back, shared as before)."""
        taken: list[tuple[WriterLock, str]] = []
        for lock in self.locks:
            before = lock.mode
            if not lock.try_exclusive():
                for done, mode in reversed(taken):
                    done.downgrade(to_shared=mode == "shared")
                return False
            taken.append((lock, before))
        return True

    def downgrade(self, to_shared: bool) -> None:
        for lock in reversed(self.locks):
            lock.downgrade(to_shared)

    def release(self) -> None:
        for lock in reversed(self.locks):
            lock.release()


class OthersMayWrite:
    """The writers' lock of an archive whose other writers no file lock can see (a PostgreSQL index:
    nodes on other machines). Sharing it is free; it is never exclusive, so ``check --repair`` never
    counts as offline there and leaves young unindexed files to the grace period."""

    mode = ""

    def share(self, wait_seconds: float = 30.0) -> None:
        self.mode = "shared"

    def try_exclusive(self) -> bool:
        return False

    def downgrade(self, to_shared: bool) -> None:
        self.mode = "shared" if to_shared else ""

    def release(self) -> None:
        self.mode = ""


def lock_folders(home: Path, index_file: Path | None) -> list[Path]:
    """The folders whose ``serve.lock`` a node holds: its home, and the folder of a SQLite index
    outside it (the archive several homes share); each once, whatever the spelling."""
    folders = [home]
    if index_file is not None:
        folders.append(index_file.parent)
    out: list[Path] = []
    seen: set[str] = set()
    for folder in folders:
        real = os.path.realpath(folder)
        if real not in seen:  # two flocks of one process on one file would exclude each other
            seen.add(real)
            out.append(folder)
    return out


def file_archive_lock(home: Path, index_file: Path | None, extra: list[WriterLock] | None = None) -> ArchiveLock:
    """The lock of a node whose archive lives in files (``index_file`` None: an index elsewhere,
    whose own lock comes in ``extra``)."""
    locks: list[WriterLock] = [HomeLock(folder) for folder in lock_folders(home, index_file)]
    return ArchiveLock(locks + list(extra or []))
