"""Run the DICOMweb application with uvicorn in a thread beside the DIMSE server.

``serve`` owns the process; this module binds the HTTP socket itself (SO_REUSEPORT when
several workers share the port, as the DIMSE listener does) and hands it to uvicorn, so that
every worker process answers HTTP too and the kernel spreads connections over them.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

import uvicorn

from pacsnode.node import Node
from pacsnode.web import guarded_http
from pacsnode.web.app import create_app

LOGGER = logging.getLogger(__name__)


class WebServer:
    """uvicorn serving ``create_app(node)`` on ``[web] host:port`` until ``stop``."""

    def __init__(self, node: Node, reuse_port: bool = False, port: int | None = None,
                 limits: guarded_http.Limits = guarded_http.Limits()) -> None:
        self.node = node
        self.limits = limits
        self.host = node.config.web.host
        self.port = port if port is not None else node.config.web.port
        self.reuse_port = reuse_port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._app: Any = None

    def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on an accepted socket only when its
        # proto says TCP. Without it every keep-alive response whose headers and body go in two
        # writes waited ~40 ms for the client's delayed ACK (Nagle): a viewer's frames crawled.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((self.host, self.port))
        sock.listen(128)
        sock.set_inheritable(True)
        self.port = sock.getsockname()[1]
        self._socket = sock
        # httptools (llhttp, Node.js's parser) rather than uvicorn's pure-Python h11 protocol: with h11 a
        # small request on a keep-alive connection took ~10 ms, with httptools ~2 (bench.web frames).
        self._app = create_app(self.node)
        # httptools with deadlines and a per-address cap (guarded_http.py: no slowloris)
        http = guarded_http.protocol(self.node.web_events.connection_refused, self.limits)
        # proxy_headers off: uvicorn would believe X-Forwarded-For/-Proto from 127.0.0.1, so any local process
        # could name the host that the audit and the per-address login throttle record (README: behind a proxy)
        config = uvicorn.Config(self._app, http=http, lifespan="off", log_level="warning",
                                access_log=False, proxy_headers=False,
                                server_header=False, timeout_keep_alive=5, limit_concurrency=256)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="pacsnode-web", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
        if self._socket is not None:
            self._socket.close()
        if self._app is not None:  # the totals of the viewer reads' open audit windows (read_audit.py)
            self._app.state.web.reads.stop()
