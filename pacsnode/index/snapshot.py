"""Index snapshots for backup: copy the index at one instant, and trim a copy to the files it has.

``pacsnode.backup`` calls these through ``SqliteIndex.backup_to`` / ``forget_files_in_copy``;
their SQL lives here (split from ``sqlite.py`` to keep modules under 500 lines).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pacsnode.index.sqlite import SqliteIndex


def forget_files_in_copy(path: Path, relative_paths: list[str]) -> dict[str, int]:
    """In a backup copy of the index: drop the rows of files that could not be copied.

    Keeps the copy consistent with the files next to it (a restore then checks clean).
    Returns the copy's new counts of patients, studies, series and instances.
    """
    copy = SqliteIndex(path)
    try:
        pks = [int(r[0]) for start in range(0, len(relative_paths), 500)
               for r in copy.query(f"SELECT pk FROM instances WHERE path IN "
                                   f"({','.join('?' * len(relative_paths[start:start + 500]))})",
                                   tuple(relative_paths[start:start + 500]))]
        copy.delete_instance_rows(pks)
        conn = copy.connection()
        counts = {table: int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
                  for table in ("patients", "studies", "series", "instances")}
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        copy.close()
    return counts


def backup_to(index: SqliteIndex, path: Path) -> tuple[list[tuple[str, int, str]], dict[str, int]]:
    """Copy the whole index to ``path`` at one instant, with SQLite's online backup API.

    The copy is taken in one step under one read transaction, so it is consistent while
    the server keeps writing (WAL: the writer is not blocked). The copy is switched to a
    self-contained rollback-journal file. Returns what the *copy* holds: every instance
    file as (relative path, size, sha256), and counts of patients, studies, series and
    instances, so that the caller copies exactly the files the snapshot points to.
    """
    target = sqlite3.connect(str(path), isolation_level=None)
    try:
        index.connection().backup(target)
        target.execute("PRAGMA journal_mode=DELETE")
        files = [(str(r[0]), int(r[1]), str(r[2]))
                 for r in target.execute("SELECT path, size, sha256 FROM instances ORDER BY path")]
        counts = {table: int(target.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
                  for table in ("patients", "studies", "series", "instances")}
    finally:
        target.close()
    return files, counts


def files_of_copy(path: Path) -> list[tuple[str, int, str]]:
    """A backup's copy of the index (``restore``, before it is used): every row's (path, size, sha256).

    Read-only; ``sqlite3.Error`` when the file is not a SQLite index with an instances table."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [(str(r[0]), int(r[1]), str(r[2])) for r in conn.execute("SELECT path, size, sha256 FROM instances")]
    finally:
        conn.close()


def move_files_in_copy(path: Path, moved: dict[str, str]) -> None:
    """In a restore's staged copy of the index: rows of the files put under another name point to it."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("UPDATE instances SET path = ? WHERE path = ?", [(new, old) for old, new in moved.items()])
        conn.execute("COMMIT")
    finally:
        conn.close()
