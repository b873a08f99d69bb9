"""uvicorn's HTTP protocol with deadlines and a per-address cap: a slow client cannot hold the listener.

uvicorn times out only an idle keep-alive connection between two requests. A connection that
sends half a request line, headers one byte at a time, a body that stalls, or never reads the
answer was held for ever; and ``limit_concurrency`` counts connections, so 256 of them from
one address turned every other request (the viewer, the login, DICOMweb) into 503 until they
left (slowloris). THREATS.md rule 6: every connection has a deadline and a count per source.

- at most ``MAX_PER_ADDRESS`` open connections per client address; one more is answered 503
  and closed at once;
- the request line and headers complete within ``HEADER_SECONDS`` of the connection (or of the
  previous answer on a kept-alive connection), else the connection is closed;
- a request body never pauses longer than ``BODY_IDLE_SECONDS`` (unless we paused reading
  it), else the connection is closed: the application sees a disconnect (STOW keeps nothing);
- an answer the client does not read for ``WRITE_STALL_SECONDS`` closes the connection.

Each refusal is audited (``Node.web_events.connection_refused``), at most once per address
and reason per ``audit_throttle.AUDIT_INTERVAL`` with the count of those not written, from a worker thread
(never an index write on the event loop).
"""

from __future__ import annotations

import logging
import time
from asyncio import TimerHandle
from dataclasses import dataclass
from typing import Any, Callable

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pacsnode.web.audit_throttle import AuditThrottle

LOGGER = logging.getLogger(__name__)

MAX_PER_ADDRESS = 64  # a browser opens about 6; a viewer's workers a few more
HEADER_SECONDS = 10.0
BODY_IDLE_SECONDS = 30.0
WRITE_STALL_SECONDS = 60.0
_BUSY = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"

Refused = Callable[[str, str, int], None]  # (reason, host, similar refusals not audited)


@dataclass(frozen=True)
class Limits:
    """The deadlines and the per-address cap (the module's constants; tests shorten them)."""

    max_per_address: int = MAX_PER_ADDRESS
    header_seconds: float = HEADER_SECONDS
    body_idle_seconds: float = BODY_IDLE_SECONDS
    write_stall_seconds: float = WRITE_STALL_SECONDS


class _Refusals:
    """Throttled audit of refused connections (one row per address and reason per interval)."""

    def __init__(self, record: Refused) -> None:
        self.record = record
        self.throttle = AuditThrottle()

    def __call__(self, loop: Any, reason: str, host: str) -> None:
        LOGGER.warning("web: %s: %s", host, reason)
        skipped = self.throttle.admit(host, reason)
        if skipped is not None:
            loop.run_in_executor(None, self.record, reason, host, skipped)


def protocol(record: Refused, limits: Limits = Limits()) -> type[HttpToolsProtocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` with its own per-address counts;
    ``record`` audits a refusal (it runs in a worker thread)."""
    per_address: dict[str, int] = {}
    refusals = _Refusals(record)

    class GuardedHttp(HttpToolsProtocol):
        _address = ""
        _counted = False
        _deadline: TimerHandle | None = None
        _write_stall: TimerHandle | None = None
        _body_seen = 0.0

        # -- connection ------------------------------------------------------------------
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._address = self.client[0] if self.client else ""
            if per_address.get(self._address, 0) >= limits.max_per_address:
                refusals(self.loop, f"more than {limits.max_per_address} connections from one address", self._address)
                transport.write(_BUSY)
                transport.close()
                return
            per_address[self._address] = per_address.get(self._address, 0) + 1
            self._counted = True
            self._arm(limits.header_seconds, self._headers_late)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._write_stall is not None:
                self._write_stall.cancel()
                self._write_stall = None
            if self._counted:
                self._counted = False
                left = per_address.get(self._address, 1) - 1
                if left > 0:
                    per_address[self._address] = left
                else:
                    per_address.pop(self._address, None)
            super().connection_lost(exc)

        # -- request -----------------------------------------------------------------------
        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()
            if self.cycle is not None and self.cycle.more_body:
                self._body_seen = time.monotonic()
                self._arm(limits.body_idle_seconds, self._body_stalled)

        def on_body(self, body: bytes) -> None:
            self._body_seen = time.monotonic()
            super().on_body(body)

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def on_response_complete(self) -> None:
            self._disarm()
            super().on_response_complete()
            if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
                self._arm(limits.header_seconds, self._headers_late)  # the next request's headers, in time

        # -- the client does not read --------------------------------------------------------
        def pause_writing(self) -> None:
            super().pause_writing()
            if self._write_stall is None:
                self._write_stall = self.loop.call_later(limits.write_stall_seconds, self._close,
                                                         f"answer not read for {limits.write_stall_seconds:g} s", True)

        def resume_writing(self) -> None:
            super().resume_writing()
            if self._write_stall is not None:
                self._write_stall.cancel()
                self._write_stall = None

        # -- deadlines -----------------------------------------------------------------------
        def _arm(self, seconds: float, then: Callable[[], None]) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, then)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _headers_late(self) -> None:
            self._deadline = None
            if self.cycle is None or self.cycle.response_complete:  # no request in progress
                self._close(f"request headers not complete within {limits.header_seconds:g} s")

        def _body_stalled(self) -> None:
            self._deadline = None
            if self.cycle is None or not self.cycle.more_body or self.cycle.response_complete:
                return
            now = time.monotonic()
            if self.flow.read_paused:  # we stopped reading it (the application is busy): not the client's pause
                self._body_seen = now
            quiet = now - self._body_seen
            if quiet < limits.body_idle_seconds:
                self._arm(limits.body_idle_seconds - quiet, self._body_stalled)
                return
            self._close(f"request body paused for {limits.body_idle_seconds:g} s")

        def _close(self, reason: str, abort: bool = False) -> None:
            """Close (or, when the client does not read, abort: close would wait to flush to it)."""
            if abort or not self.transport.is_closing():
                refusals(self.loop, reason, self._address)
                if abort:
                    self.transport.abort()
                else:
                    self.transport.close()

    return GuardedHttp
