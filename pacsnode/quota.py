"""How many bytes the archive holds, for ``[store] quota_bytes``, without summing every row at every store.

The quota check ran ``SUM(size)`` over every instance row before each C-STORE: a full scan that costs
tens of milliseconds per store at a million instances, for an answer that moves by one file at a time.
The meter reads the index's total at most once per ``refresh_seconds`` and adds what this process placed
since. Other processes' stores (workers, nodes on one archive) reach it at the next read, so together
they may overshoot the quota by what they store in that second; a replaced copy counts until the read
(the meter errs on the full side). A quota is a guard against filling the disk, not an accounting.
"""

from __future__ import annotations

import threading
import time
from typing import Callable


class QuotaMeter:
    def __init__(self, read_total: Callable[[], int], refresh_seconds: float = 1.0) -> None:
        self._read_total = read_total
        self._refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._total = 0
        self._read_at = float("-inf")

    def used(self) -> int:
        """The archive's bytes as of at most ``refresh_seconds`` ago, plus this process's since."""
        with self._lock:
            now = time.monotonic()
            if now - self._read_at >= self._refresh_seconds:
                self._total, self._read_at = self._read_total(), now
            return self._total

    def placed(self, size: int) -> None:
        """A file of ``size`` bytes was placed by this process (counted until the next read)."""
        with self._lock:
            self._total += size
