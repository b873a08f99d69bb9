"""Removing an orphan (``check --repair``): the one order every storage backend follows.

A store *places* its file (a link on a folder, a PUT that never writes over a key on S3),
then commits the index row that points to it (``Node.store_file``), and answers Success
only after the commit. So a file that is acknowledged is indexed, and a file that is placed
but not yet indexed is at most ``min_age`` old. :func:`remove_if_orphan` therefore:

1. stats the file and skips it if it changed within ``min_age`` (the backend's ``age``);
2. asks the index *now* whether a row points to this path;
3. stats it again and skips it unless it is the same file (the backend's ``identity``:
   inode and ctime on a folder, ETag and Last-Modified on S3);
4. removes it.

A row committed after (2) would be for a file placed before (1), hence within ``min_age``
of its commit: only a store stalled longer than the grace (the index's busy timeout is far
shorter) could be caught, and a path is never reused while its file exists (placing never
goes over a name). ``min_age`` is 0 only when no process writes into the home (exclusive
``serve.lock``). Two repairs at once are not supported: one could remove a file and a new
store re-use its name between the other's (3) and (4).

"Acknowledged means indexed" holds once the recovery after an unclean stop has run: with a
SQLite index and ``fsync = true`` a power cut can take a row whose file stays
(``pacsnode.durability``), so ``maintenance.check`` recovers first and removes nothing while a
dead process's marker waits.
"""

from __future__ import annotations

from typing import Callable, Hashable, TypeVar

Stat = TypeVar("Stat")


def remove_if_orphan(relative_path: str, *, stat: Callable[[str], Stat], age: Callable[[Stat], float],
                     identity: Callable[[Stat], Hashable], is_indexed: Callable[[str], bool],
                     remove: Callable[[str], None], min_age: float) -> bool:
    """Remove ``relative_path`` if it is an orphan at this very moment; True when it was removed.

    ``stat`` raises FileNotFoundError for a missing file (then nothing is removed);
    ``age`` is seconds since the file last changed; ``identity`` is what must not change
    between the two stats for the file to count as the one that was checked.
    """
    try:
        before = stat(relative_path)
    except FileNotFoundError:
        return False
    if age(before) < min_age or is_indexed(relative_path):
        return False
    try:
        after = stat(relative_path)
    except FileNotFoundError:
        return False
    if identity(after) != identity(before):
        return False
    remove(relative_path)
    return True
