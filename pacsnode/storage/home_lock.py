"""``<home>/serve.lock``: who is writing into a node home right now.

Every process that writes into the home (``serve`` and each of its workers, ``import``, a
C-GET that stores locally: anything that asks ``Node.new_temp_file``) holds a *shared*
``flock`` on this file for as long as it may write. Maintenance that must be alone takes it
*exclusive*: ``restore`` refuses when it cannot (a server is running on the home), and
``check --repair`` uses it to know whether it runs offline (nobody can be between "file
linked" and "row committed", so orphans are removed at once) or next to a server (orphans
only past a grace period, see ``Node.check``).

flock locks belong to the open file description and vanish when the process dies (even by
SIGKILL), so a crashed server never leaves a stale lock behind. The file itself is never
removed while the home lives (removing a lock file races with a process opening it).
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

from pacsnode.errors import HomeError

LOCK_NAME = "serve.lock"


class HomeLocked(HomeError):
    """The home is locked the other way round (a restore or repair, or a running server)."""


class HomeLock:
    """One process's hold on ``<home>/serve.lock`` (none, shared or exclusive)."""

    def __init__(self, home: Path) -> None:
        self.path = home / LOCK_NAME
        self._fd: int | None = None
        self.mode: str = ""  # "", "shared" or "exclusive"

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._fd

    def _try(self, operation: int) -> bool:
        try:
            fcntl.flock(self._open(), operation | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise

    def share(self, wait_seconds: float = 30.0) -> None:
        """Hold the lock shared (idempotent); waits up to ``wait_seconds`` for a repair to end."""
        if self.mode:
            return
        deadline = time.monotonic() + wait_seconds
        while not self._try(fcntl.LOCK_SH):
            if time.monotonic() >= deadline:
                raise HomeLocked(f"{self.path.parent} is locked by a restore or an offline repair "
                                 f"({self.path} held exclusively); try again when it has finished")
            time.sleep(0.05)
        self.mode = "shared"

    def try_exclusive(self) -> bool:
        """Take the lock exclusive if no *other* process holds it; False otherwise (nothing changed)."""
        if self.mode == "exclusive":
            return True
        if self._try(fcntl.LOCK_EX):
            self.mode = "exclusive"
            return True
        if self.mode == "shared":  # a failed conversion may have dropped our shared lock: take it back
            self.mode = ""
            self.share()
        return False

    def downgrade(self, to_shared: bool) -> None:
        """Back to shared (or released) after an exclusive section."""
        if self.mode != "exclusive":
            return
        if to_shared:
            fcntl.flock(self._open(), fcntl.LOCK_SH)
            self.mode = "shared"
        else:
            self.release()

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
        self.mode = ""


def held_by_others(home: Path) -> bool:
    """Whether some process holds ``<home>/serve.lock`` (a probe; holds nothing afterwards)."""
    if not (home / LOCK_NAME).exists():
        return False
    probe = HomeLock(home)
    try:
        return not probe.try_exclusive()
    finally:
        probe.release()
