"""The HTTP listener's accepted connections send small writes at once (TCP_NODELAY).

uvicorn writes a response's headers and its body in two writes. Without TCP_NODELAY the body of
every response after the first on a keep-alive connection waited for the client's delayed ACK
(~40 ms): a viewer fetching frames over its open connections crawled at ~20 frames/s.
"""

from __future__ import annotations

import socket
import time
from http.client import HTTPConnection
from typing import Callable

from pacsnode.config import NodeConfig
from pacsnode.node import Node
from pacsnode.web.server import WebServer
from support import free_port


def _accepted_sockets(server: WebServer) -> list[socket.socket]:
    """The sockets of the connections uvicorn holds open right now."""
    assert server._server is not None
    found = []
    for protocol in server._server.server_state.connections:
        sock = protocol.transport.get_extra_info("socket")
        if sock is not None:
            found.append(sock)
    return found


def test_a_keep_alive_connection_to_the_web_listener_has_nodelay(make_config: Callable[..., NodeConfig]) -> None:
    node = Node(make_config(web={"enabled": True, "port": free_port()}))
    server = WebServer(node)
    server.start()
    try:
        deadline = time.monotonic() + 20
        connection: HTTPConnection | None = None
        while connection is None:
            try:
                connection = HTTPConnection("127.0.0.1", server.port, timeout=10)
                connection.request("GET", "/healthz")
            except ConnectionRefusedError:
                connection = None
                assert time.monotonic() < deadline, "the web listener never accepted"
                time.sleep(0.05)
        answer = connection.getresponse()
        assert answer.status == 200 and answer.read() == b"ok\n"
        connection.request("GET", "/healthz")  # the same connection, kept alive
        assert connection.getresponse().read() == b"ok\n"
        accepted = _accepted_sockets(server)
        assert accepted, "uvicorn holds no connection although the client kept one open"
        for sock in accepted:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        connection.close()
    finally:
        server.stop()
        node.close()
