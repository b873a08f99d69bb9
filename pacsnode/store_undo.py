"""Undoing a placed file when its index row failed, without ever deleting a file a row names.

A store places the file, then records its row. When recording fails the file is removed again, so a
refused store leaves nothing. But "failed" is not always "did not commit": a PostgreSQL connection that
breaks after COMMIT reached the server and before its answer came back raises, although the row is
there. Removing the file then left a row without its file; the sender, told of a failure, sends again,
hears "duplicate" under keep-first, and may delete its own copy: an instance lost after a Success.

So the file goes only when the index says no row names it. When the index cannot say (it is
unreachable: that is usually why the store failed), the file stays; ``check --repair`` removes it later
if no row names it, after its grace period.
"""

from __future__ import annotations

import logging

from pacsnode.index.base import Index
from pacsnode.storage.area import StorageArea

LOGGER = logging.getLogger(__name__)


def undo_place(index: Index, storage: StorageArea, relative: str) -> None:
    try:
        named = relative in index.indexed_paths([relative])
    except Exception:  # noqa: BLE001 - whatever the index raises, we do not know: keep the file
        LOGGER.warning("the index did not answer whether a row names %s after a failed store: the file is kept "
                       "(check --repair removes it if no row names it)", relative)
        return
    if named:
        LOGGER.warning("a store failed after its row committed (its answer was lost): %s is kept", relative)
        return
    storage.remove(relative)
