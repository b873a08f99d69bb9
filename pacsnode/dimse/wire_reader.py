"""Reading an association's bytes with a timeout in one system call when they are already there.

A Python socket with a timeout polls before every ``recv_into`` and the association set a
new timeout (an ``ioctl``) before every read: three system calls per read, about twelve
per 128 KB P-DATA-TF PDU once its header and body are read separately (issue 13's profile:
reading PDU headers and recv ~11% of a 0.5 MB C-STORE). The socket's descriptor is
already non-blocking (a socket with a timeout is), so ``os.readv`` on it returns what has
arrived, and only when nothing has does the reader ``poll`` with the time left: one system
call while a peer streams, the same three as before when it pauses.

TLS sockets keep the socket's own ``recv_into`` (their bytes are decrypted inside the SSL
object, which ``poll`` cannot see), as do sockets that are blocking.
"""

from __future__ import annotations

import math
import os
import select
import socket
import ssl


class WireReader:
    """``recv_into(view, timeout)`` for one connected socket; the socket stays usable as before.

    The socket must keep a positive timeout (``settimeout``) while this reader is used: that
    is what makes its descriptor non-blocking. A reader made for a TLS or blocking socket
    sets the timeout and calls the socket's ``recv_into``.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        timeout = sock.gettimeout()
        raw = not isinstance(sock, ssl.SSLSocket) and timeout is not None and timeout > 0
        self._fd = sock.fileno() if raw else -1
        self._poller = select.poll()  # not select.select: it fails on descriptors >= 1024
        if raw:
            self._poller.register(self._fd, select.POLLIN)

    def recv_into(self, view: memoryview, timeout: float) -> int:
        """Bytes read into ``view`` (0: the peer closed), waiting at most ``timeout`` seconds
        for the first one (``TimeoutError`` after that)."""
        if self._fd < 0:
            self.sock.settimeout(timeout)
            return self.sock.recv_into(view, len(view))
        while True:
            try:
                return os.readv(self._fd, (view,))
            except BlockingIOError:
                pass
            if not self._poller.poll(max(1, math.ceil(timeout * 1000))):
                raise TimeoutError("timed out")
            # readable, closed or failed: the next readv returns bytes, 0 or raises OSError


def ack_now(sock: socket.socket) -> None:
    """Acknowledge what was received at once (TCP_QUICKACK), not when the kernel's delayed-ACK timer fires.

    DCMTK's tools leave Nagle's algorithm on unless TCP_NODELAY is set in their environment, and write a
    PDU's 6 + 6 header bytes apart from the rest: the rest waits for our ACK of those 12 bytes. Once we
    have answered a request the kernel delays that ACK (40 ms or more on Linux), so every request after
    the first cost an echoscu or findscu 40+ ms, as it cost every C-STORE-RSP that a DCMTK storescp wrote to
    our C-MOVE's or ``send``'s outgoing association. Called when a read leaves a PDU incomplete, once per
    PDU: one system call, and no extra ACK when none is pending.
    """
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    except (OSError, AttributeError):  # not Linux, or not TCP
        pass
