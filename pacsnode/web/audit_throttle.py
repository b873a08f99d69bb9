"""At most one audit row per client address and refusal per interval, with the count of those not written.

A refusal that costs the client nothing (a locked-out login, a request from another origin, a connection
over the per-address cap) is one request each: written one by one, a flood of them became a flood of audit
writes. The login door and the HTTP listener throttle the same way, each with its own memory.
"""

from __future__ import annotations

import threading
import time

AUDIT_INTERVAL = 10.0  # seconds between two audited refusals of one address and reason
MAX_REMEMBERED = 10_000  # (address, reason) pairs kept; past that the memory starts again


class AuditThrottle:
    def __init__(self, interval: float = AUDIT_INTERVAL) -> None:
        self.interval = interval
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def admit(self, host: str, reason: str) -> int | None:
        """None: not to be written; else write it, saying how many like it since the last were not."""
        now = time.monotonic()
        with self._lock:
            last, skipped = self._seen.get((host, reason), (-self.interval, 0))
            if now - last < self.interval:
                self._seen[(host, reason)] = (last, skipped + 1)
                return None
            if len(self._seen) > MAX_REMEMBERED:
                self._seen.clear()
            self._seen[(host, reason)] = (now, 0)
            return skipped
