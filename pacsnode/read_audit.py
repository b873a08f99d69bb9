"""Viewer reads audited per minute: one row when a caller starts reading a study, one with the count.

A viewer opening a 600-slice CT asks for 600 frames, a thumbnail and the metadata within
seconds; one audit row per request made the audit trail the larger half of a frame's cost and
buried the one fact a security officer needs (who looked at which study, and when) under
thousands of identical rows. Reads of one kind (``wado-frames``, ``wado-rendered``,
``wado-metadata``) by one caller of one study are therefore audited per *window* (a minute,
aligned to the clock):

- the **first** read of a window is written at once, before the answer leaves (``requests: 1``):
  no access is ever unaudited, even if the process dies a moment later;
- when the window closes, a second row carries the window's total (``requests: N``, the distinct
  instances read) if there was more than that first read. A crash loses at most that count,
  never the fact of the access.

Refusals are never aggregated: they are audited at once, one row each, by whoever refuses
(``Node.retrieve``, the WADO routes). Whole-instance retrievals and WADO-URI keep one row per
request: those copy the data out of the node.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from pacsnode.audit import AuditLog
from pacsnode.model import Caller

LOGGER = logging.getLogger(__name__)
WINDOW_SECONDS = 60.0
MAX_OPEN_WINDOWS = 10_000  # beyond this many (caller, study, kind) at once, windows close early
MAX_DISTINCT = 100_000  # instances remembered per window for the distinct count


@dataclass
class _Window:
    start: float  # wall-clock seconds at the window's start (a multiple of the window length)
    caller: Caller
    study_uid: str
    action: str
    requests: int = 1
    instances: set[str] = field(default_factory=set)


class ReadAudit:
    """Counts viewer reads per (caller, study, kind, window) and writes the rows (module docstring)."""

    def __init__(self, audit: AuditLog, window: float = WINDOW_SECONDS,
                 clock: Callable[[], float] = time.time) -> None:
        self.audit = audit
        self.window = window
        self.clock = clock
        self._open: dict[tuple[Caller, str, str], _Window] = {}
        self._lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._stopping = threading.Event()

    def counted(self, caller: Caller, study_uid: str, action: str, instance: str = "") -> bool:
        """Count a read when its window is open (its first read already audited): no write.

        False means this read opens a window: call :meth:`record`, which writes (it may block
        on the index, so the event loop never calls it).
        """
        now = self.clock()
        with self._lock:
            found = self._open.get((caller, study_uid, action))
            if found is None or found.start != self._start_of(now):
                return False
            found.requests += 1
            if instance and len(found.instances) < MAX_DISTINCT:
                found.instances.add(instance)
            return True

    def record(self, caller: Caller, study_uid: str, action: str, **detail: Any) -> None:
        """Audit a read: counted in its open window, or written at once as the window's first."""
        instance = str(detail.get("instance", ""))
        if self.counted(caller, study_uid, action, instance):
            return
        now = self.clock()
        start = self._start_of(now)
        self._write(caller, study_uid, action, {**detail, "requests": 1, "window": _minute(start),
                                                "window_seconds": int(self.window)})
        closed: list[_Window] = []
        with self._lock:
            key = (caller, study_uid, action)
            old = self._open.get(key)
            if old is not None and old.start == start:  # another thread opened it meanwhile: count there
                old.requests += 1
                if instance:
                    old.instances.add(instance)
                return
            if old is not None:
                closed.append(old)
            if len(self._open) >= MAX_OPEN_WINDOWS:
                closed.extend(self._open.values())
                self._open.clear()
            self._open[key] = _Window(start, caller, study_uid, action, instances={instance} if instance else set())
        self._start_flusher()
        for window in closed:
            self._close(window)

    def flush(self, everything: bool = False) -> int:
        """Write the totals of the windows that have closed (all of them with ``everything``)."""
        now_start = self._start_of(self.clock())
        with self._lock:
            done = [k for k, w in self._open.items() if everything or w.start != now_start]
            closed = [self._open.pop(k) for k in done]
        for window in closed:
            self._close(window)
        return len(closed)

    def stop(self) -> None:
        """Write every open window's total (server shutdown)."""
        self._stopping.set()
        self.flush(everything=True)

    # -- inside ------------------------------------------------------------------------
    def _start_of(self, now: float) -> float:
        return now - now % self.window

    def _close(self, window: _Window) -> None:
        if window.requests <= 1:
            return  # the first row said it all
        self._write(window.caller, window.study_uid, window.action,
                    {"requests": window.requests, "distinct_instances": len(window.instances),
                     "window": _minute(window.start), "window_seconds": int(self.window), "window_total": True})

    def _write(self, caller: Caller, study_uid: str, action: str, detail: dict[str, Any]) -> None:
        self.audit.record(action, "answered", peer_aet=caller.aet,
                          peer_name=caller.peer.name if caller.peer else "", study_uid=study_uid, detail=detail)

    def _start_flusher(self) -> None:
        if self._flusher is not None:
            return
        with self._lock:
            if self._flusher is not None:
                return
            self._flusher = threading.Thread(target=self._flush_loop, name="pacsnode-read-audit", daemon=True)
        self._flusher.start()

    def _flush_loop(self) -> None:
        """Close windows shortly after their end, also when no further read comes to close them."""
        while not self._stopping.wait(min(5.0, self.window / 4)):
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the index may be closing: say so, keep the thread
                LOGGER.warning("read audit: a window total could not be written", exc_info=True)


def _minute(start: float) -> str:
    return datetime.fromtimestamp(start, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
