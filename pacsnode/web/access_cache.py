"""A short-lived memory of per-study access decisions, so a viewer's frames skip the door.

A viewer fetching a 600-slice series asks 600 times within seconds whether the same caller
may see the same study; each answer went through ``Node.retrieve`` (permission, recognition
door, instance match, rejected-instance filter). The answer for (caller, study) — the set of
SOP Instance UIDs the caller may have — is kept here for ``ttl`` seconds. Only answers that
allowed something are kept: a refusal is decided (and audited) afresh every time.

The cost of the memory is that a change reaches a viewer late by at most ``ttl``: a QC
rejection, a withdrawn share, or a recognition rule that now says no stops the frames within
``ttl`` seconds. Credentials are not cached: a revoked token or ended session is refused on its
next request, since the caller is looked up before the cache is asked.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Hashable

DEFAULT_TTL = 5.0
MAX_ENTRIES = 4096


class AccessCache:
    """(caller, study) → the SOP Instance UIDs it may have, for ``ttl`` seconds (bounded)."""

    def __init__(self, ttl: float = DEFAULT_TTL, max_entries: int = MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._entries: dict[Hashable, tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> frozenset[str] | None:
        """The kept answer, or None when there is none or it is older than ``ttl``."""
        if self.ttl <= 0:
            return None
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            if self.clock() - found[0] >= self.ttl:
                del self._entries[key]
                return None
            return found[1]

    def put(self, key: Hashable, allowed: frozenset[str]) -> None:
        if self.ttl <= 0 or not allowed:
            return
        now = self.clock()
        with self._lock:
            if len(self._entries) >= self.max_entries:  # drop the expired first, then everything
                for old in [k for k, (at, _v) in self._entries.items() if now - at >= self.ttl]:
                    del self._entries[old]
                if len(self._entries) >= self.max_entries:
                    self._entries.clear()
            self._entries[key] = (now, allowed)
