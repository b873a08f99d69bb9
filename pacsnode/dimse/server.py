"""The serving node: one engine (``listener`` + ``association``) for every association and TLS.

There is no second DICOM stack and no hidden port: C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET
and Storage Commitment are all served by ``association.Association``, on plain TCP or,
when ``[tls] enabled``, on TLS (``tls.server_context``: BCP 195, optional mutual
authentication). pynetdicom is used only by the outgoing CLI commands and tests.
"""

from __future__ import annotations

import logging
import threading

from pacsnode.dimse.listener import Listener
from pacsnode.dimse.tls import server_context
from pacsnode.node import Node

LOGGER = logging.getLogger(__name__)


class DicomServer:
    """The listening node; ``start`` returns once the socket is bound.

    ``reuse_port`` lets worker processes share the port (SO_REUSEPORT); each worker runs its
    own listener, TLS included. ``clean_temp`` removes leftover temporary files of
    interrupted receives at start (only the first process does it).
    """

    def __init__(self, node: Node, reuse_port: bool = False, clean_temp: bool = True) -> None:
        self.node = node
        self.reuse_port = reuse_port
        self.clean_temp = clean_temp
        self._listener: Listener | None = None
        self._stopped = threading.Event()

    def start(self) -> None:
        if self.clean_temp:
            removed = self.node.clean_temp()
            if removed:
                LOGGER.info("removed %d leftover temporary file(s) of interrupted receives", removed)
        self._listener = Listener(self.node, reuse_port=self.reuse_port, tls_context=server_context(self.node.config))
        self._listener.start()

    def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop accepting, let running associations finish, abort what is left after the grace period.

        A store interrupted here is never half-indexed: its file is placed and indexed in
        one transaction or not at all, and an aborted association gets no Success.
        """
        if self._listener is not None:
            self._listener.stop(grace_seconds)
            self._listener = None
        self._stopped.set()

    @property
    def port(self) -> int:
        return self._listener.port if self._listener is not None else self.node.config.port
