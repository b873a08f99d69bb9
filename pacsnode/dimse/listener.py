"""The node's listening socket: accept, look at the A-ASSOCIATE-RQ, pick the path.

Each accepted connection gets a thread that *peeks* at the A-ASSOCIATE-RQ (``MSG_PEEK``:
the bytes stay in the kernel) and decides:

* every proposed context is Verification, a storage SOP class or Patient/Study Root
  C-FIND, and no SCP/SCU role selection is proposed → the lean path
  (``pacsnode.dimse.lean``) consumes the RQ and serves the association in this thread;
* anything else (C-MOVE, C-GET, role selection, private SOP classes) → the untouched
  socket goes to ``delegate(sock, address)``, which hands it to pynetdicom
  (``ThreadedAssociationServer.process_request``); pynetdicom then reads the RQ itself.

Usage (the lead's integration; tests do the same on 127.0.0.1:0)::

    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=event_handlers(node))
    listener = Listener(node, lambda sock, addr: server.process_request(sock, addr),
                        delegated_count=lambda: len(ae.active_associations))
    listener.start()
    ...
    listener.stop(grace=10.0)
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from typing import Any, Callable

from pacsnode.dimse import pdu
from pacsnode.dimse.lean import LeanAssociation, lean_can_serve
from pacsnode.node import Node

LOGGER = logging.getLogger(__name__)

Delegate = Callable[[socket.socket, Any], None]
MAX_ASSOCIATE_RQ = 1 << 20  # an RQ larger than this is refused (real ones are a few KB)
REJECT_LINGER_SECONDS = 2.0
ACCEPT_POLL_SECONDS = 0.5  # bounds how long stop() waits for the accept loop, not any latency


class Listener:
    """Accept associations on (host, port) and serve or delegate each (see module docstring).

    ``host``/``port`` default to the node's configuration (port 0 picks a free port, see
    ``port``). ``reuse_port`` sets SO_REUSEPORT so several worker processes can share the
    port. ``delegated_count`` reports how many associations the delegate is running, so that
    ``max_associations`` bounds both paths together (pynetdicom enforces its own limit too).
    """

    def __init__(self, node: Node, delegate: Delegate, *, host: str | None = None, port: int | None = None,
                 reuse_port: bool = False, backlog: int = 128,
                 delegated_count: Callable[[], int] | None = None) -> None:
        self.node = node
        self.delegate = delegate
        self.host = node.config.host if host is None else host
        self.requested_port = node.config.port if port is None else port
        self.reuse_port = reuse_port
        self.backlog = backlog
        self.delegated_count = delegated_count
        self.delegated = 0  # how many connections went to the delegate (statistics, tests)
        self._sock: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Condition()
        self._lean: set[LeanAssociation] = set()
        self._undecided: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()

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
        LOGGER.info("pacsnode %s listening on %s:%d (lean C-STORE/C-FIND path)", self.node.config.aet, self.host,
                    self.port)

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1]) if self._sock is not None else self.requested_port

    @property
    def active(self) -> int:
        """Lean associations running now."""
        with self._lock:
            return len(self._lean)

    def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let lean associations finish for ``grace`` seconds, then abort the rest.

        Delegated associations belong to pynetdicom: stop its server/AE separately.
        """
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
            while self._lean and (remaining := deadline - time.monotonic()) > 0:
                self._lock.wait(remaining)
            leftovers, undecided = list(self._lean), list(self._undecided)
        for association in leftovers:
            association.abort()
        for sock in undecided:
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
            thread = threading.Thread(target=self._connection, args=(sock, address), name="pacsnode-assoc",
                                      daemon=True)
            with self._lock:
                self._threads.add(thread)
                self._undecided.add(sock)
            thread.start()

    def _connection(self, sock: socket.socket, address: Any) -> None:
        """Per-connection thread: peek, route, and (lean path) serve."""
        try:
            self._route(sock, address)
        except Exception:  # edge: a connection must never take the listener down
            LOGGER.exception("connection from %s failed", address)
            _shutdown(sock)
            sock.close()
        finally:
            with self._lock:
                self._undecided.discard(sock)
                self._threads.discard(threading.current_thread())

    def _route(self, sock: socket.socket, address: Any) -> None:
        network = self.node.config.network
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            raw = peek_associate_rq(sock, network.acse_timeout)
            if raw is None:  # closed or silent before a whole RQ arrived
                sock.close()
                return
            rq = pdu.decode_associate_rq(raw)
        except (pdu.PDUError, TimeoutError) as exc:
            LOGGER.warning("connection from %s: no valid A-ASSOCIATE-RQ (%s), aborting", address[0], exc)
            _abort_and_close(sock)
            return
        except OSError as exc:
            LOGGER.debug("connection from %s lost before association: %s", address[0], exc)
            sock.close()
            return
        if not lean_can_serve(rq) and not self._stopping.is_set():
            with self._lock:
                self._undecided.discard(sock)
                self.delegated += 1
            sock.settimeout(None)
            self.delegate(sock, address)  # the socket is pynetdicom's now
            return
        with self._lock:
            busy = len(self._lean) + (self.delegated_count() if self.delegated_count else 0)
            admitted = not self._stopping.is_set() and busy < network.max_associations
            association = LeanAssociation(sock, address, self.node, rq) if admitted else None
            if association is not None:
                self._lean.add(association)
                self._undecided.discard(sock)
        try:
            _recv_exact(sock, len(raw))  # consume the RQ we peeked at
            if association is not None:
                association.run()  # closes the socket whatever happens
                return
        except OSError as exc:
            LOGGER.debug("connection from %s lost before association: %s", address[0], exc)
            sock.close()
            return
        finally:
            if association is not None:
                with self._lock:
                    self._lean.discard(association)
                    self._lock.notify_all()
        stopping = self._stopping.is_set()
        LOGGER.warning("association from %s@%s rejected: %s", rq.calling_ae.strip(), address[0],
                       "server stopping" if stopping else f"{busy} associations running")
        reason = pdu.RJ_PRESENTATION_CONGESTION if stopping else pdu.RJ_PRESENTATION_LIMIT
        _reject_and_close(sock, pdu.AssociateRJ(pdu.RJ_TRANSIENT, pdu.RJ_SOURCE_PRESENTATION, reason))


def peek_associate_rq(sock: socket.socket, timeout: float) -> bytes | None:
    """The whole A-ASSOCIATE-RQ PDU, read with MSG_PEEK so the socket still holds it.

    None if the peer closed first; TimeoutError after ``timeout`` seconds; PDUError if the
    first PDU is not an A-ASSOCIATE-RQ or claims an absurd length.
    """
    deadline = time.monotonic() + timeout
    header = _peek(sock, pdu.HEADER_SIZE, deadline)
    if header is None:
        return None
    pdu_type, length = pdu.HEADER.unpack(header)
    if pdu_type != pdu.ASSOCIATE_RQ:
        raise pdu.PDUError(f"first PDU has type 0x{pdu_type:02x}, not A-ASSOCIATE-RQ")
    if length > MAX_ASSOCIATE_RQ:
        raise pdu.PDUError(f"A-ASSOCIATE-RQ of {length} bytes is too large")
    return _peek(sock, pdu.HEADER_SIZE + length, deadline)


def _peek(sock: socket.socket, size: int, deadline: float) -> bytes | None:
    flags = socket.MSG_PEEK | getattr(socket, "MSG_WAITALL", 0)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("A-ASSOCIATE-RQ not complete within the ACSE timeout")
        sock.settimeout(remaining)
        data = sock.recv(size, flags)
        if len(data) == size:
            return data
        if not data or _hung_up(sock):
            return None
        time.sleep(0.002)  # part of it is there: MSG_WAITALL|MSG_PEEK may return early, poll


def _hung_up(sock: socket.socket) -> bool:
    """Whether the peer shut its side although unread bytes are still queued (Linux POLLRDHUP).

    A peek never consumes: a peer that sent part of an RQ and closed looks like one still
    sending, and its thread would poll every 2 ms until the ACSE timeout (and hold up stop()).
    """
    rdhup = getattr(select, "POLLRDHUP", 0)
    if not rdhup:
        return False
    poller = select.poll()
    poller.register(sock, rdhup)
    return any(event & (rdhup | select.POLLHUP | select.POLLERR) for _fd, event in poller.poll(0))


def _recv_exact(sock: socket.socket, size: int) -> None:
    buffer = memoryview(bytearray(size))
    got = 0
    while got < size:
        count = sock.recv_into(buffer[got:])
        if not count:
            raise ConnectionError("peer closed while we consumed its A-ASSOCIATE-RQ")
        got += count


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _abort_and_close(sock: socket.socket) -> None:
    """Send A-ABORT, then drain briefly so the close does not reset the abort away."""
    try:
        sock.sendall(pdu.Abort(pdu.ABORT_SOURCE_PROVIDER, pdu.ABORT_UNRECOGNIZED_PDU).encode())
        sock.shutdown(socket.SHUT_WR)
        _drain(sock, REJECT_LINGER_SECONDS)
    except OSError:
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
    except OSError:
        pass
    sock.close()
