"""Deleting instance rows whose file is gone (``check --repair``), keeping the aggregates right.

Out of ``sqlite.py`` (module size); the same SQL serves PostgreSQL through the dialect layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from pacsnode.index.sqlite import SqliteIndex


def delete_rows_whose_file_is_gone(index: SqliteIndex, candidates: list[tuple[int, str]],
                                   is_missing: Callable[[str], bool]) -> list[str]:
    """Drop the rows of ``candidates`` (pk, path) that still point to that path, whose file is still gone.

    Both are re-checked inside the write transaction: a store links its file *before* its
    row commits, and commits under this same writer lock, so a row that points to a path
    whose file is absent at this moment has really lost its file (a replace meanwhile
    moved the row to a new path, which this re-check sees). Returns the paths dropped.
    """
    dropped: list[str] = []
    if not candidates:
        return dropped
    with index.write() as conn:
        pks: list[int] = []
        for pk, path in candidates:
            row = conn.execute("SELECT path FROM instances WHERE pk = ?", (pk,)).fetchone()
            if row is not None and row[0] == path and is_missing(path):
                pks.append(pk)
                dropped.append(path)
        if pks:
            delete_rows(index, conn, pks)
    return dropped


def delete_rows(index: SqliteIndex, conn: Any, pks: list[int]) -> None:
    """Delete instance rows and keep the series/study aggregates right (inside a write)."""
    study_pks = {r[0] for r in conn.execute(
        f"SELECT DISTINCT se.study_pk FROM instances i JOIN series se ON se.pk=i.series_pk "
        f"WHERE i.pk IN ({','.join('?' * len(pks))})", pks)}
    conn.execute(f"DELETE FROM instances WHERE pk IN ({','.join('?' * len(pks))})", pks)
    index._refresh_counts(conn, study_pks)
    conn.execute("DELETE FROM series WHERE instance_count = 0")
    conn.execute("DELETE FROM study_codes WHERE study_pk IN (SELECT pk FROM studies WHERE instance_count=0)")
    conn.execute("DELETE FROM studies WHERE instance_count = 0")
