"""Socket tuning shared by the server and the SCU.

pynetdicom leaves Nagle's algorithm on; with DIMSE's small command PDUs followed by data
PDUs that costs a delayed-ACK round trip (about 40 ms) per message. Every socket pacsnode
opens or accepts sets TCP_NODELAY.
"""

from __future__ import annotations

import socket

from pynetdicom.events import Event


def set_nodelay(event: Event) -> None:
    """EVT_CONN_OPEN handler: disable Nagle on the association's socket."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
