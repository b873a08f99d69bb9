"""The association's reader: bytes, end of stream and the timeout, on a plain and a TLS-like path."""

from __future__ import annotations

import socket
import threading
import time
from typing import Iterator

import pytest

from pacsnode.dimse.wire_reader import WireReader


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, peer = socket.socketpair()
    ours.settimeout(5.0)
    yield ours, peer
    ours.close()
    peer.close()


def test_reads_what_arrived_in_one_call_without_touching_the_timeout(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    reader = WireReader(ours)
    peer.sendall(b"abcdef")
    time.sleep(0.05)
    buffer = memoryview(bytearray(16))
    assert reader.recv_into(buffer, 0.5) == 6 and bytes(buffer[:6]) == b"abcdef"
    assert ours.gettimeout() == 5.0  # sends keep the association's timeout


def test_waits_for_bytes_that_come_later(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    reader = WireReader(ours)
    threading.Timer(0.1, peer.sendall, args=(b"late",)).start()
    buffer = memoryview(bytearray(8))
    assert reader.recv_into(buffer, 2.0) == 4 and bytes(buffer[:4]) == b"late"


def test_times_out_when_nothing_comes_and_reports_a_close(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    reader = WireReader(ours)
    buffer = memoryview(bytearray(8))
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        reader.recv_into(buffer, 0.2)
    assert 0.15 < time.monotonic() - started < 2.0
    peer.close()
    assert reader.recv_into(buffer, 1.0) == 0


def test_a_blocking_socket_is_read_through_the_socket_with_the_timeout(
        pair: tuple[socket.socket, socket.socket]) -> None:
    ours, _peer = pair
    ours.settimeout(None)  # a blocking descriptor: readv would wait forever, so the socket's timeout is used
    reader = WireReader(ours)
    with pytest.raises(TimeoutError):
        reader.recv_into(memoryview(bytearray(8)), 0.2)
