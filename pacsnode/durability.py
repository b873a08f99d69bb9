"""``fsync = true`` with one flush per instance: rows commit without their own WAL sync.

Before Success a store makes its *file* durable (fdatasync of the data, fsync of the folder
that names it: ``storage.filesystem``), then commits the index row. The commit used to fsync
the WAL too: two flushes per instance. Here, while a :class:`RowSyncer` runs, instance rows
commit with ``synchronous=NORMAL`` (no fsync): the row survives a crash of the process (it is
in the WAL file), and a power cut can lose only the WAL tail, i.e. rows whose *files* are
durable. What makes that sound:

- **An unclean-stop marker.** Before its first relaxed commit the process writes, durably,
  ``<index file>-unclean/<pid>.<start>.json`` (beside the index, not in the home: homes that
  share one SQLite archive see each other's markers); a clean stop syncs the WAL and removes
  it. A marker whose process is gone means rows may have been lost (SIGKILL, power cut).
- **Recovery re-indexes, never deletes** (``pacsnode.recovery``): after an unclean stop, before
  serving and before ``check --repair`` may remove anything, every file without a row is
  re-indexed through the ingest rules (acknowledged: its row was lost; never answered: fine to
  keep), oldest first, except a copy older than the indexed copy of its UID (a replaced copy
  whose unlink was lost). No time watermark decides *which* orphans: a clock stepped back
  cannot hide a file, and no store's place-to-commit latency has to be bounded.
- **Online repair defers** to recovery: while a dead process's marker exists, ``check
  --repair`` next to a server removes no orphan (``maintenance``).
- **A periodic WAL sync** (every ``SYNC_INTERVAL_S`` and at a clean stop) bounds what a power
  cut can take from the index to a few seconds of rows, so recovery re-indexes few files.
  Correctness does not depend on it.
- **Checkpoints in the syncer's thread.** A commit that takes the WAL past SQLite's automatic
  checkpoint (1000 pages, every ~150 instances) copies it into the database file and syncs both,
  inside that association's store: a few ms to tens of ms every time, more than all of an
  instance's statements. While a RowSyncer runs, connections checkpoint only past
  ``CHECKPOINT_BOUND_PAGES`` (a bound if this thread stalls) and the syncer checkpoints
  (PASSIVE: it never waits for a writer) after each WAL sync.

Only a SQLite index over a local folder runs this: PostgreSQL keeps ``synchronous_commit`` on
for instance rows, and an S3 bucket is shared (its listing cannot say which objects a dead
process wrote), so those keep a durable commit per instance.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

from pacsnode.index import sqlite_ingest
from pacsnode.storage.filesystem import fsync_dir, sync_data

LOGGER = logging.getLogger(__name__)

MARKER_SUFFIX = "-unclean"
SYNC_INTERVAL_S = 2.0
CHECKPOINT_BOUND_PAGES = 10_000  # ~40 MB of WAL: far above what one interval of stores writes


def _start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22): pid + this is unique."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, start: str) -> bool:
    return bool(start) and _start_ticks(pid) == start


def marker_dir(index_path: Path) -> Path:
    """``<index file>-unclean``: where the processes writing into this SQLite index leave their markers."""
    return index_path.with_name(index_path.name + MARKER_SUFFIX)


def markers(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def dead_markers(folder: Path) -> list[Path]:
    """Markers of processes that are gone without a clean stop: their last rows may be lost."""
    dead: list[Path] = []
    for marker in markers(folder):
        try:
            data = json.loads(marker.read_text())
            alive = _alive(int(data["pid"]), str(data["start"]))
        except (OSError, ValueError, KeyError, TypeError):
            alive = False  # unreadable (torn by a power cut): assume the worst
        if not alive:
            dead.append(marker)
    return dead


def remove_markers(done: list[Path]) -> None:
    """Recovery finished: the markers go, durably (a marker that comes back only costs a walk)."""
    for marker in done:
        marker.unlink(missing_ok=True)
    if done:
        fsync_dir(done[0].parent)


def _write_durably(path: Path, data: dict[str, Any]) -> None:
    staging = path.with_suffix(".part")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(data).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(staging, path)
    fsync_dir(path.parent)
    fsync_dir(path.parent.parent)  # the marker folder's own name, the first time


class RowSyncer:
    """Lets one process's instance rows commit without their own fsync, soundly (module doc)."""

    def __init__(self, index: Any, interval: float = SYNC_INTERVAL_S) -> None:
        self.index = index
        self.wal = Path(f"{index.path}-wal")
        pid = os.getpid()
        self.marker = marker_dir(Path(index.path)) / f"{pid}.{_start_ticks(pid) or '0'}.json"
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Marker first (durably), then relaxed commits, then the periodic WAL sync."""
        self.marker.parent.mkdir(exist_ok=True)
        _write_durably(self.marker, {"pid": os.getpid(), "start": _start_ticks(os.getpid())})
        self.index.autocheckpoint_pages = CHECKPOINT_BOUND_PAGES  # connections opened from now on
        self.index.relaxed_instance_commits = True
        self._thread = threading.Thread(target=self._run, name="wal-sync", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sync()
            except OSError as exc:  # rows stay recoverable from their files: the marker stays
                LOGGER.error("cannot sync the index WAL: %s", exc)
            self.checkpoint()

    def checkpoint(self) -> None:
        """Copy the WAL into the database file here rather than in an association's commit."""
        try:
            sqlite_ingest.checkpoint(self.index)
        except sqlite3.Error as exc:  # the next tick, or a commit past the bound, tries again
            LOGGER.warning("cannot checkpoint the index WAL: %s", exc)

    def sync(self) -> None:
        """fdatasync the WAL: every frame written so far, hence every row committed so far, is durable.

        Without a WAL file everything is in the database file, synced by the checkpoint that
        emptied it (SQLite syncs the database at every checkpoint with ``synchronous`` >= NORMAL).
        """
        try:
            fd = os.open(self.wal, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            sync_data(fd)
        finally:
            os.close(fd)

    def stop(self) -> None:
        """Clean stop: durable commits again, one last WAL sync, then the marker goes."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.index.relaxed_instance_commits = False
        self.index.autocheckpoint_pages = 1000
        with self.index._write_lock:  # no relaxed batch is mid-commit any more (SqliteIndex)
            self.sync()
        self.marker.unlink(missing_ok=True)
        fsync_dir(self.marker.parent)


def start_syncer(node: Any) -> RowSyncer | None:
    """A RowSyncer for ``node`` when it stores durably into a local folder with a SQLite index."""
    from pacsnode.index.sqlite import SqliteIndex
    from pacsnode.storage.filesystem import FileStorage

    # not PostgreSQL (PostgresIndex is a SqliteIndex underneath: the URL tells them apart), whose
    # instance rows keep synchronous_commit on; not S3, whose listing cannot be walked as ours
    if not (node.config.store.fsync and not node.config.index.url and isinstance(node.index, SqliteIndex)
            and isinstance(node.storage, FileStorage)):
        return None
    syncer = RowSyncer(node.index)
    syncer.start()
    return syncer
