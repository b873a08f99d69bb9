"""The node's listening socket: accept, (TLS handshake,) read the A-ASSOCIATE-RQ, serve.

Every association is served by our own engine (``association.Association``), one thread
each. Before a connection gets a thread it passes the admission limits (``[network]``):

* ``max_pending_connections``: connections that have not yet sent a whole A-ASSOCIATE-RQ
  (a port scan, a slowloris). When they are all taken, the one silent the longest is cut
  (if silent for ``PENDING_EVICT_SECONDS``) to make room; only when every one of them is
  younger is the new connection closed at once. Otherwise two hosts with 32 silent
  connections each held every slot for ``acse_timeout`` and locked out every real peer,
  which sends its RQ within milliseconds of connecting;
* ``max_associations_per_address``: connections from one source address, whatever their
  state; beyond it the connection is closed at once;
* ``acse_timeout`` is one deadline for the TLS handshake and the whole RQ (not per read:
  a byte every 2 s does not hold a slot);
* ``max_associations``: established associations; beyond it A-ASSOCIATE-RJ (transient,
  local limit exceeded). Callers that are nobody (no registered peer: any AE title may
  echo, and store under ``accept_from = "any"``) never take the last quarter of them
  (``stranger_slots``): one unregistered host used to take all 32 and refuse every
  registered peer.

Refusals are audited (``connection``/``association`` events); the RJ for a blank or
non-printable calling AE title is the acceptance policy's (``policy.negotiate``).

Usage (the server and tests do the same on 127.0.0.1:0)::

    listener = Listener(node, tls_context=None)
    listener.start()
    ...
    listener.stop(grace=10.0)
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections import Counter
from typing import Any

from pacsnode.dimse import pdu
from pacsnode.errors import IndexError_
from pacsnode.dimse.association import Association, identify
from pacsnode.node import Node

LOGGER = logging.getLogger(__name__)

MAX_ASSOCIATE_RQ = 1 << 20  # an RQ larger than this is refused (real ones are a few KB; 128 contexts ~20 KB)
REJECT_LINGER_SECONDS = 2.0
ACCEPT_POLL_SECONDS = 0.5  # bounds how long stop() waits for the accept loop, not any latency
REFUSAL_AUDIT_INTERVAL = 10.0  # at most one audited connection refusal per address and reason per interval
PENDING_EVICT_SECONDS = 1.0  # a pending connection silent this long may be cut when all slots are taken


class Listener:
    """Accept associations on (host, port) and serve each (see module docstring).

    ``host``/``port`` default to the node's configuration (port 0 picks a free port, see
    ``port``). ``reuse_port`` sets SO_REUSEPORT so several worker processes can share the
    port. ``tls_context`` (``tls.server_context``) makes the port TLS-only.
    """

    def __init__(self, node: Node, *, host: str | None = None, port: int | None = None,
                 reuse_port: bool = False, backlog: int = 128, tls_context: ssl.SSLContext | None = None) -> None:
        self.node = node
        self.host = node.config.host if host is None else host
        self.requested_port = node.config.port if port is None else port
        self.reuse_port = reuse_port
        self.backlog = backlog
        self.tls_context = tls_context
        self.refused = 0  # connections closed by an admission limit (statistics, tests)
        self._sock: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Condition()
        self._associations: set[Association] = set()
        self._strangers: set[Association] = set()  # of those, the ones whose caller is nobody
        self._pending: dict[socket.socket, float] = {}  # connected at (monotonic), oldest first
        self._per_address: Counter[str] = Counter()
        self._threads: set[threading.Thread] = set()
        self._last_refusal_audit: dict[tuple[str, str], float] = {}

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Bind and listen; returns once the socket is bound (``port`` is then known)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._sock = socket.create_server((self.host, self.requested_port), family=family, backlog=self.backlog,
                                          reuse_port=self.reuse_port)
        self._sock.settimeout(ACCEPT_POLL_SECONDS)
        self._stopping.clear()
        self._accept_thread = threading.Thread(target=self._accept_loop, name="pacsnode-accept", daemon=True)
        self._accept_thread.start()
        LOGGER.info("pacsnode %s listening on %s:%d%s", self.node.config.aet, self.host, self.port,
                    " (TLS)" if self.tls_context else "")

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1]) if self._sock is not None else self.requested_port

    @property
    def active(self) -> int:
        """Associations running now."""
        with self._lock:
            return len(self._associations)

    @property
    def pending(self) -> int:
        """Connections that have not sent a whole A-ASSOCIATE-RQ yet."""
        with self._lock:
            return len(self._pending)

    def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let associations finish for ``grace`` seconds, then abort the rest."""
        self._stopping.set()
        if self._sock is not None:
            _shutdown(self._sock)  # wakes a blocked accept() at once on Linux
        if self._accept_thread is not None:
            self._accept_thread.join()
            self._accept_thread = None
        if self._sock is not None:
            self._sock.close()
        deadline = time.monotonic() + grace
        with self._lock:
            while self._associations and (remaining := deadline - time.monotonic()) > 0:
                self._lock.wait(remaining)
            leftovers, pending = list(self._associations), list(self._pending)
        for association in leftovers:
            association.abort()
        for sock in pending:
            _shutdown(sock)
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=5.0)
        self._sock = None

    # -- accepting -------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        listening = self._sock
        assert listening is not None
        network = self.node.config.network
        while not self._stopping.is_set():
            try:
                sock, address = listening.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stopping.is_set():
                    return
                LOGGER.error("accept failed: %s", exc)  # e.g. out of file descriptors: back off
                time.sleep(0.1)
                continue
            with self._lock:
                evicted = None
                if self._per_address[address[0]] >= network.max_associations_per_address:
                    why = f"{self._per_address[address[0]]} connections from this address"
                elif len(self._pending) >= network.max_pending_connections and not (
                        evicted := self._evict_oldest_pending(network.max_pending_connections)):
                    why = f"{len(self._pending)} connections have not sent an A-ASSOCIATE-RQ"
                else:
                    why = ""
                    self._pending[sock] = time.monotonic()
                    self._per_address[address[0]] += 1
            if evicted is not None:
                _shutdown(evicted[0])  # its thread sees the close, audits nothing more, cleans up
                self._audit_refusal(evicted[1], "silent connection cut to make room (pending connections full)",
                                    "evicted")
            if why:
                self.refused += 1
                self._refuse_connection(sock, address, why)
                continue
            thread = threading.Thread(target=self._connection, args=(sock, address), name="pacsnode-assoc",
                                      daemon=True)
            with self._lock:
                self._threads.add(thread)
            thread.start()

    def _evict_oldest_pending(self, limit: int) -> tuple[socket.socket, str] | None:
        """With every pending slot taken, drop the connection silent the longest (caller holds the lock).

        Only one silent for ``PENDING_EVICT_SECONDS``: a real peer's RQ follows its connect
        within milliseconds, so a flood of fresh connections cannot cut it off either.
        """
        if len(self._pending) < limit:
            return None
        oldest, since = next(iter(self._pending.items()))  # dicts keep insertion order
        if time.monotonic() - since < PENDING_EVICT_SECONDS:
            return None
        del self._pending[oldest]
        try:
            host = str(oldest.getpeername()[0])
        except OSError:
            host = ""
        return oldest, host

    def _refuse_connection(self, sock: socket.socket, address: Any, why: str) -> None:
        """Close a connection over an admission limit at once; audit it (rate-limited per address)."""
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")  # RST, no TIME_WAIT
        except OSError:
            pass
        sock.close()
        LOGGER.warning("connection from %s refused: %s", address[0], why)
        self._audit_refusal(address[0], why, why.split(" ", 1)[1])

    def _audit_refusal(self, host: str, why: str, kind: str) -> None:
        """Audit a refused connection, at most once per address and kind per interval (a flood of
        refusals must not become a flood of audit writes)."""
        key, now = (host, kind), time.monotonic()
        with self._lock:
            if now - self._last_refusal_audit.get(key, -REFUSAL_AUDIT_INTERVAL) < REFUSAL_AUDIT_INTERVAL:
                return
            self._last_refusal_audit[key] = now
            if len(self._last_refusal_audit) > 10_000:  # many addresses: forget the old ones
                self._last_refusal_audit = {key: now}
        self.node.events.connection_refused(host, why)  # never raises

    def _connection(self, sock: socket.socket, address: Any) -> None:
        """Per-connection thread: handshake, read the RQ, admit, serve."""
        try:
            self._serve(sock, address)
        except Exception:  # edge: a connection must never take the listener down
            LOGGER.exception("connection from %s failed", address)
            _shutdown(sock)
            sock.close()
        finally:
            with self._lock:
                self._pending.pop(sock, None)
                self._per_address[address[0]] -= 1
                if self._per_address[address[0]] <= 0:
                    del self._per_address[address[0]]
                self._threads.discard(threading.current_thread())

    def _serve(self, sock: socket.socket, address: Any) -> None:
        network = self.node.config.network
        deadline = time.monotonic() + network.acse_timeout
        conn: socket.socket = sock
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls_context is not None:
                conn = _handshake(sock, self.tls_context, deadline)
            raw = read_associate_rq(conn, deadline)
            if raw is None:  # closed before a whole RQ arrived
                conn.close()
                return
            rq = pdu.decode_associate_rq(raw)
        except (pdu.PDUError, TimeoutError) as exc:
            LOGGER.warning("connection from %s: no valid A-ASSOCIATE-RQ (%s), aborting", address[0], exc)
            self._audit_refusal(address[0], f"no valid A-ASSOCIATE-RQ: {exc}", type(exc).__name__)
            _abort_and_close(conn)
            return
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError: handshake refused
            LOGGER.warning("connection from %s lost before association: %s", address[0], exc)
            if isinstance(exc, ssl.SSLError):
                self._audit_refusal(address[0], f"TLS: {exc}", "tls")
            conn.close()
            return
        certificate = conn.getpeercert(binary_form=True) if isinstance(conn, ssl.SSLSocket) else None
        try:
            caller = identify(self.node, rq.calling_ae.strip(), address[0], certificate)
        except IndexError_ as exc:  # the index (a PostgreSQL server) is unreachable: who calls is unknown
            LOGGER.warning("association from %s@%s rejected (transient): %s", rq.calling_ae.strip(), address[0], exc)
            _reject_and_close(conn, pdu.AssociateRJ(pdu.RJ_TRANSIENT, pdu.RJ_SOURCE_PRESENTATION,
                                                    pdu.RJ_PRESENTATION_CONGESTION))
            return
        stranger = caller.peer is None
        with self._lock:
            self._pending.pop(sock, None)
            busy = len(self._associations)
            admitted = not self._stopping.is_set() and busy < network.max_associations and not (
                stranger and len(self._strangers) >= stranger_slots(network.max_associations))
            association = Association(conn, address, self.node, rq, certificate, caller) if admitted else None
            if association is not None:
                self._associations.add(association)
                if stranger:
                    self._strangers.add(association)
        if association is None:
            self._reject_busy(conn, address, rq, busy if not stranger else len(self._strangers))
            return
        try:
            association.run()  # closes the socket whatever happens
        finally:
            with self._lock:
                self._associations.discard(association)
                self._strangers.discard(association)
                self._lock.notify_all()

    def _reject_busy(self, conn: socket.socket, address: Any, rq: pdu.AssociateRQ, busy: int) -> None:
        stopping = self._stopping.is_set()
        why = "server stopping" if stopping else f"{busy} associations running"
        LOGGER.warning("association from %s@%s rejected: %s", rq.calling_ae.strip(), address[0], why)
        self.node.events.association_busy(rq.calling_ae, address[0], why)
        reason = pdu.RJ_PRESENTATION_CONGESTION if stopping else pdu.RJ_PRESENTATION_LIMIT
        _reject_and_close(conn, pdu.AssociateRJ(pdu.RJ_TRANSIENT, pdu.RJ_SOURCE_PRESENTATION, reason))


def stranger_slots(max_associations: int) -> int:
    """How many associations callers that are nobody may hold at once: all but a quarter kept
    for registered peers (24 of the default 32: 20 unregistered modalities storing at once
    still fit); below 4 nothing is kept (a back-to-back association may meet the last one
    still closing)."""
    return max(1, max_associations - max_associations // 4)


def _handshake(sock: socket.socket, context: ssl.SSLContext, deadline: float) -> ssl.SSLSocket:
    """The server side of the TLS handshake, within the negotiation deadline."""
    sock.settimeout(max(0.001, deadline - time.monotonic()))
    return context.wrap_socket(sock, server_side=True)


def read_associate_rq(sock: socket.socket, deadline: float) -> bytes | None:
    """The whole A-ASSOCIATE-RQ PDU, read before ``deadline`` (monotonic).

    None if the peer closed first; TimeoutError after the deadline, however slowly the
    bytes trickle in; PDUError if the first PDU is not an A-ASSOCIATE-RQ or claims an
    absurd length (checked before its body is read).
    """
    header = _recv_before(sock, pdu.HEADER_SIZE, deadline)
    if header is None:
        return None
    pdu_type, length = pdu.HEADER.unpack(header)
    if pdu_type != pdu.ASSOCIATE_RQ:
        raise pdu.PDUError(f"first PDU has type 0x{pdu_type:02x}, not A-ASSOCIATE-RQ")
    if length > MAX_ASSOCIATE_RQ:
        raise pdu.PDUError(f"A-ASSOCIATE-RQ of {length} bytes is too large")
    body = _recv_before(sock, length, deadline)
    return None if body is None else header + body


def _recv_before(sock: socket.socket, size: int, deadline: float) -> bytes | None:
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("A-ASSOCIATE-RQ not complete within the ACSE timeout")
        sock.settimeout(remaining)
        count = sock.recv_into(view[got:], size - got)
        if not count:
            return None
        got += count
    return bytes(buffer)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except (OSError, ValueError):
        pass


def _abort_and_close(sock: socket.socket) -> None:
    """Send A-ABORT, then drain briefly so the close does not reset the abort away."""
    try:
        sock.sendall(pdu.Abort(pdu.ABORT_SOURCE_PROVIDER, pdu.ABORT_UNRECOGNIZED_PDU).encode())
        if not isinstance(sock, ssl.SSLSocket):
            sock.shutdown(socket.SHUT_WR)
        _drain(sock, REJECT_LINGER_SECONDS)
    except (OSError, ValueError):
        pass
    sock.close()


def _drain(sock: socket.socket, seconds: float) -> None:
    """Read and drop what the peer sends until it closes, ``seconds`` pass, or 1 MB went by."""
    deadline, dropped = time.monotonic() + seconds, 0
    while dropped < (1 << 20) and (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        data = sock.recv(65536)
        if not data:
            return
        dropped += len(data)


def _reject_and_close(sock: socket.socket, reject: pdu.AssociateRJ) -> None:
    """Send A-ASSOCIATE-RJ, give the peer a moment to close (it should), then close."""
    try:
        sock.sendall(reject.encode())
        _drain(sock, REJECT_LINGER_SECONDS)
    except (OSError, ValueError):
        pass
    sock.close()
