"""A TCP front for the nodes of one archive, as a load balancer would be (``make test-cluster``).

Production puts several ``pacsnode serve`` behind one address (docs/deployment.md: a TCP load
balancer for DIMSE, an HTTP one for DICOMweb). The cluster run of the interop suites does the
same on loopback, with a *deliberate* choice instead of round-robin, so that every test crosses
nodes: an association whose A-ASSOCIATE-RQ proposes only storage SOP classes (storescu, a
STOW-RS ``POST``) goes to the *store* node; everything else (C-ECHO, C-FIND, C-MOVE, C-GET,
storage commitment, WADO/QIDO) goes to the *query* node. What the test stored through one node
is therefore found, moved, fetched and served by the other.

The router reads only the first PDU (or the HTTP request line) to decide, then copies bytes both
ways unchanged. A client that sends nothing within :data:`DECIDE_S` (an idle-timeout test), or
closes before its first byte (a port probe), is sent to the query node, which then sees the same.
"""

from __future__ import annotations

import socket
import struct
import threading
from typing import Callable

LOOPBACK = "127.0.0.1"
DECIDE_S = 2.0  # how long the router waits for the first PDU before choosing the query node
MAX_FIRST_PDU = 1 << 20  # an A-ASSOCIATE-RQ is a few KB; more is not buffered before routing
STORAGE_PREFIX = "1.2.840.10008.5.1.4.1.1."  # the Storage SOP classes
STORE, QUERY = 0, 1  # indexes into the router's backends


def abstract_syntaxes(pdu: bytes) -> list[str] | None:
    """The abstract syntaxes an A-ASSOCIATE-RQ proposes, or None when ``pdu`` is not a whole one."""
    if len(pdu) < 6 or pdu[0] != 0x01:
        return None
    (length,) = struct.unpack(">I", pdu[2:6])
    if len(pdu) < 6 + length or length < 68:
        return None
    found: list[str] = []
    offset, end = 6 + 68, 6 + length  # after protocol version, reserved, called/calling AE, reserved
    while offset + 4 <= end:
        kind, item_length = pdu[offset], struct.unpack(">H", pdu[offset + 2:offset + 4])[0]
        body = pdu[offset + 4:offset + 4 + item_length]
        if kind == 0x20:  # presentation context: id, 3 reserved, then sub-items
            sub = 4
            while sub + 4 <= len(body):
                sub_kind, sub_length = body[sub], struct.unpack(">H", body[sub + 2:sub + 4])[0]
                if sub_kind == 0x30:
                    found.append(body[sub + 4:sub + 4 + sub_length].rstrip(b"\0 ").decode("ascii", "replace"))
                sub += 4 + sub_length
        offset += 4 + item_length
    return found


def dimse_route(first: bytes) -> int:
    """STORE for an association that proposes storage SOP classes only, else QUERY."""
    syntaxes = abstract_syntaxes(first)
    if syntaxes and all(uid.startswith(STORAGE_PREFIX) for uid in syntaxes):
        return STORE
    return QUERY


def http_route(first: bytes) -> int:
    """STORE for a ``POST`` (STOW-RS), else QUERY."""
    return STORE if first.startswith(b"POST ") else QUERY


def _dimse_complete(data: bytes) -> bool:
    if len(data) < 6:
        return False
    (length,) = struct.unpack(">I", data[2:6])
    return len(data) >= 6 + length or len(data) >= MAX_FIRST_PDU


def _http_complete(data: bytes) -> bool:
    return b"\r\n" in data or len(data) >= 8192


class Router:
    """Listens on ``port`` (chosen at construction, kept across ``close``/``open``) and forwards each
    connection to ``backends[route(first bytes)]``. ``backends`` may change while it runs (restarts)."""

    def __init__(self, backends: list[int], route: Callable[[bytes], int], complete: Callable[[bytes], bool],
                 port: int = 0) -> None:
        self.backends = backends
        self.route, self.complete = route, complete
        self.port = port
        self.routed = [0, 0]  # connections sent to STORE, QUERY (the cluster run's own check)
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()

    @classmethod
    def for_dimse(cls, backends: list[int], port: int = 0) -> "Router":
        return cls(backends, dimse_route, _dimse_complete, port)

    @classmethod
    def for_http(cls, backends: list[int], port: int = 0) -> "Router":
        return cls(backends, http_route, _http_complete, port)

    def open(self) -> "Router":
        if self._listener is not None:
            return self
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((LOOPBACK, self.port))
        except OSError:  # taken while stopped (as NodeProcess.start does: serve on another free port)
            listener.bind((LOOPBACK, 0))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True, name=f"router-{self.port}").start()
        return self

    def close(self) -> None:
        """Stop listening and cut every forwarded connection (the nodes behind are being stopped)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        with self._lock:
            for sock in list(self._open):
                _close(sock)
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        self._track(client)
        first = self._first_bytes(client)
        choice = QUERY if first is None else self.route(first)
        self.routed[choice] += 1
        try:
            backend = socket.create_connection((LOOPBACK, self.backends[choice]), timeout=10)
        except OSError:
            self._untrack(client)
            return
        if first is None:  # connected and closed without a byte (a port probe): the node sees the same
            _close(backend)
            self._untrack(client)
            return
        backend.settimeout(None)
        client.settimeout(None)
        for sock in (client, backend):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._track(backend)
        if first:
            try:
                backend.sendall(first)
            except OSError:
                pass
        pump = threading.Thread(target=_copy, args=(backend, client), daemon=True)
        pump.start()
        _copy(client, backend)
        pump.join()
        self._untrack(client)
        self._untrack(backend)

    def _first_bytes(self, client: socket.socket) -> bytes | None:
        """What the client sent before it could be routed: b"" when it sent nothing in time."""
        client.settimeout(DECIDE_S)
        data = b""
        while not self.complete(data):
            try:
                chunk = client.recv(65536)
            except TimeoutError:
                return data
            except OSError:
                return None if not data else data
            if not chunk:
                return data or None
            data += chunk
        return data

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.add(sock)

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)
        _close(sock)


def _copy(source: socket.socket, target: socket.socket) -> None:
    """Bytes from ``source`` to ``target`` until EOF, then half-close ``target`` (as TCP would)."""
    while True:
        try:
            chunk = source.recv(65536)
        except OSError:
            chunk = b""
        if not chunk:
            try:
                target.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            return
        try:
            target.sendall(chunk)
        except OSError:
            try:
                source.shutdown(socket.SHUT_RD)
            except OSError:
                pass
            return


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
