"""Slow and greedy HTTP clients against the web listener (slowloris): deadlines and a per-address cap.

uvicorn alone held a connection that never finished its headers or its body for ever, and
``limit_concurrency`` made every other request 503 once 256 such connections were open. The
listener here runs with shortened limits (``guarded_http.Limits``) so that each case takes a
second or two; the raw sockets play the client.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from http.client import HTTPConnection
from pathlib import Path
from typing import Callable, Iterator

import pytest

import pacsnode.defaults
from pacsnode import access_tokens
from pacsnode.config import NodeConfig
from pacsnode.model import Caller
from pacsnode.node import Node
from pacsnode.web.guarded_http import Limits
from pacsnode.web.server import WebServer
from support import free_port, write_instance

# headers get 3 s: the cap test opens nine connections before any may be cut (1 s was too short under load)
LIMITS = Limits(max_per_address=8, header_seconds=3.0, body_idle_seconds=1.0, write_stall_seconds=2.0)


@pytest.fixture
def listener(make_config: Callable[..., NodeConfig], node_home: Path) -> Iterator[tuple[Node, WebServer]]:
    node_home.mkdir(parents=True, exist_ok=True)  # the shipped region, so that a token may name PRV001
    shutil.copy(Path(pacsnode.defaults.__file__).with_name("recognition.toml"), node_home / "recognition.toml")
    node = Node(make_config(node={"institution": "PRV001"}, web={"enabled": True, "port": free_port()}))
    server = WebServer(node, limits=LIMITS)
    server.start()
    try:
        _wait_listening(server.port)
        yield node, server
    finally:
        server.stop()
        node.close()


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            return
        except ConnectionRefusedError:
            assert time.monotonic() < deadline, "the web listener never accepted"
            time.sleep(0.05)


def _healthz(port: int) -> int:
    connection = HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status
    finally:
        connection.close()


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` within ``seconds`` (what it sent before is read and dropped)."""
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
        return True
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True


def _refusals(node: Node) -> list[dict[str, object]]:
    return [json.loads(e.detail) for e in node.audit.events() if e.action == "web-connection"]


def test_connections_that_never_finish_their_headers_are_capped_and_cut(listener: tuple[Node, WebServer]) -> None:
    node, server = listener
    slow = []
    for _ in range(LIMITS.max_per_address):
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        slow.append(sock)
    silent = slow.pop()  # one of them sends nothing at all: the same deadline holds
    extra = socket.create_connection(("127.0.0.1", server.port))
    extra.settimeout(5)
    assert extra.recv(100).startswith(b"HTTP/1.1 503"), "one more connection from the address is refused at once"
    for sock in [*slow, silent]:
        assert _closed_within(sock, LIMITS.header_seconds + 5), "a request whose headers never end is cut"
    assert _healthz(server.port) == 200  # the listener serves again
    time.sleep(0.5)  # the audit rows are written from a worker thread
    reasons = {str(r["reason"]) for r in _refusals(node)}
    assert "more than 8 connections from one address" in reasons
    assert "request headers not complete within 3 s" in reasons


def test_a_body_that_stalls_is_cut_and_nothing_of_it_is_kept(listener: tuple[Node, WebServer]) -> None:
    node, server = listener
    token = access_tokens.create(node, "stower", "PRV001", permissions=frozenset({"store"}))
    sock = socket.create_connection(("127.0.0.1", server.port))
    head = (f"POST /dicom-web/studies HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: multipart/related; type=\"application/dicom\"; boundary=B\r\n"
            "Content-Length: 100000\r\n\r\n")
    sock.sendall(head.encode() + b"--B\r\nContent-Type: application/dicom\r\n\r\nDICM")  # then nothing
    started = time.monotonic()
    assert _closed_within(sock, LIMITS.body_idle_seconds + 5)
    assert time.monotonic() - started >= LIMITS.body_idle_seconds * 0.9
    deadline = time.monotonic() + 5
    while list(Path(node.config.home, "tmp").glob("*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not list(Path(node.config.home, "tmp").glob("*")), "the cut body's part was not removed"
    assert _healthz(server.port) == 200
    time.sleep(0.5)
    assert any(r["reason"] == "request body paused for 1 s" for r in _refusals(node))


def test_a_slow_but_moving_body_and_a_kept_alive_connection_are_served(listener: tuple[Node, WebServer]) -> None:
    _node, server = listener
    connection = HTTPConnection("127.0.0.1", server.port, timeout=10)
    for _ in range(3):  # kept alive across requests further apart than the header deadline's half
        connection.request("GET", "/healthz")
        assert connection.getresponse().read() == b"ok\n"
        time.sleep(0.6)
    connection.close()
    sock = socket.create_connection(("127.0.0.1", server.port))
    body = b"username=nobody&password=wrong-password-here"
    sock.sendall(b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body))
    for start in range(0, len(body), 15):  # a byte run every 0.6 s: slower than one deadline in all
        time.sleep(0.6)
        sock.sendall(body[start:start + 15])
    sock.settimeout(10)
    assert sock.recv(100).startswith(b"HTTP/1.1 401")
    sock.close()


def test_an_answer_the_client_does_not_read_is_cut(listener: tuple[Node, WebServer], tmp_path: Path,
                                                    ct_template: Path) -> None:
    """A WADO-RS client that stops reading held the connection and a worker thread streaming to it."""
    node, server = listener
    big = write_instance(ct_template, tmp_path / "big.dcm", Rows=2048, Columns=2048, BitsAllocated=16,
                         BitsStored=16, HighBit=15, SamplesPerPixel=1, PixelData=b"\0" * (2048 * 2048 * 2))
    temp = node.new_temp_file()
    shutil.copyfile(big, temp)
    outcome = node.store_file(temp, Caller.local_admin())
    token = access_tokens.create(node, "reader", "PRV001")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that reads nothing fills little
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(f"GET /dicom-web/studies/{outcome.study_uid} HTTP/1.1\r\nHost: x\r\n"
                 f"Authorization: Bearer {token}\r\n\r\n".encode())
    time.sleep(LIMITS.write_stall_seconds + 2)  # not reading meanwhile
    received = 0
    sock.settimeout(5)
    try:
        while chunk := sock.recv(1 << 16):
            received += len(chunk)
    except ConnectionResetError:
        pass
    assert received < big.stat().st_size, "the whole answer came: the stalled connection was not cut"
    assert any(r["reason"] == "answer not read for 2 s" for r in _refusals(node))
