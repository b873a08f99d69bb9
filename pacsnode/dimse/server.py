"""Build and run the node's Application Entity: contexts, syntaxes, limits, handlers.

This is the only place that configures pynetdicom for serving. Two library settings are
chosen here on purpose (they are pynetdicom's documented knobs, set once at start, not at
import):

* ``_config.STORE_RECV_CHUNKED_DATASET``: a C-STORE dataset is streamed to a temporary file
  instead of being held in memory, so a 500 MB multi-frame costs no 500 MB of RAM;
* ``tempfile.tempdir`` points at ``<home>/tmp`` so that file lands on the storage filesystem
  and placing it is a rename, not a copy.
"""

from __future__ import annotations

import functools
import logging
import tempfile
import threading
import time
from typing import Any, Callable

from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, _config, evt
from pynetdicom.presentation import StoragePresentationContexts
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from pacsnode.dimse import find, handlers, retrieve
from pacsnode.dimse.listener import Listener
from pacsnode.dimse.sockets import set_nodelay
from pacsnode.dimse.tls import server_context
from pacsnode.node import Node
from pacsnode.storage.tempfiles import temp_prefix

LOGGER = logging.getLogger(__name__)

QR_CONTEXTS = (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
)

def configure_library(node: Node) -> None:
    """Process-wide pynetdicom settings for a serving node (see module docstring)."""
    _config.STORE_RECV_CHUNKED_DATASET = True
    node.config.temp_path.mkdir(parents=True, exist_ok=True)
    tempfile.tempdir = str(node.config.temp_path)
    tempfile.template = temp_prefix()  # pynetdicom's chunked-receive files carry our pid (storage.tempfiles)


def build_ae(node: Node) -> AE:
    """An AE accepting every storage SOP class in every syntax, Verification, and Q/R."""
    cfg = node.config
    ae = AE(ae_title=cfg.aet)
    ae.maximum_pdu_size = cfg.network.max_pdu
    ae.maximum_associations = cfg.network.max_associations
    ae.acse_timeout = cfg.network.acse_timeout
    ae.dimse_timeout = cfg.network.dimse_timeout
    ae.network_timeout = cfg.network.network_timeout
    ae.require_called_aet = cfg.network.strict_called_aet
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    for context in StoragePresentationContexts:
        # scp_role/scu_role answer the role selection a C-GET SCU proposes (we send, it stores).
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES, scu_role=False, scp_role=True)
    for abstract_syntax in QR_CONTEXTS:
        ae.add_supported_context(abstract_syntax, ALL_TRANSFER_SYNTAXES[:4])
    return ae


def event_handlers(node: Node) -> list[tuple[Any, Callable[..., Any]]]:
    bound: list[tuple[Any, Callable[..., Any]]] = [
        (evt.EVT_CONN_OPEN, set_nodelay),
        (evt.EVT_CONN_CLOSE, handlers.handle_connection_closed),
        (evt.EVT_C_ECHO, functools.partial(handlers.handle_echo, node=node)),
        (evt.EVT_C_STORE, functools.partial(handlers.handle_store, node=node)),
        (evt.EVT_C_FIND, functools.partial(find.handle_find, node=node)),
        (evt.EVT_SOP_EXTENDED, find.handle_sop_extended),
        (evt.EVT_C_MOVE, functools.partial(retrieve.handle_move, node=node)),
        (evt.EVT_C_GET, functools.partial(retrieve.handle_get, node=node)),
        (evt.EVT_ACCEPTED, functools.partial(handlers.handle_association, node=node)),
        (evt.EVT_REJECTED, functools.partial(handlers.handle_association, node=node)),
        (evt.EVT_ABORTED, functools.partial(handlers.handle_association, node=node)),
    ]
    return bound


class DicomServer:
    """The listening node; ``start`` returns once the socket is bound.

    Without TLS our own ``Listener`` owns the port: it serves associations that only store,
    echo or find on the lean path (one blocking thread, no polling reactors: 2x pynetdicom's
    store rate, C-FIND at the echo floor) and hands every other association (C-MOVE, C-GET,
    role selection), untouched, to pynetdicom, which runs on an
    internal loopback port nobody is told about. With TLS pynetdicom owns the port (the
    Listener cannot peek through TLS).
    """

    def __init__(self, node: Node, reuse_port: bool = False, clean_temp: bool = True) -> None:
        self.node = node
        self.ae = build_ae(node)
        self.reuse_port = reuse_port
        self.clean_temp = clean_temp
        self._server: Any = None
        self._listener: Listener | None = None
        self._stopped = threading.Event()

    def start(self) -> None:
        configure_library(self.node)
        if self.clean_temp:
            removed = self.node.clean_temp()
            if removed:
                LOGGER.info("removed %d leftover temporary file(s) of interrupted receives", removed)
        cfg = self.node.config
        tls = server_context(cfg)
        handlers_ = event_handlers(self.node)
        if tls is not None:
            self._server = self.ae.start_server((cfg.host, cfg.port), block=False, evt_handlers=handlers_,
                                                ssl_context=tls)
        else:
            self._server = self.ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers_)
            server = self._server
            self._listener = Listener(self.node, lambda sock, address: server.process_request(sock, address),
                                      reuse_port=self.reuse_port,
                                      delegated_count=lambda: len(self.ae.active_associations))
            self._listener.start()
        LOGGER.info("pacsnode %s listening on %s:%d%s", cfg.aet, cfg.host, self.port, " (TLS)" if tls else "")

    def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop accepting, let running associations finish, abort what is left after the grace period.

        A store interrupted here is never half-indexed: its file is placed and indexed in
        one transaction or not at all, and an aborted association gets no Success.
        """
        deadline = time.monotonic() + grace_seconds
        if self._listener is not None:
            self._listener.stop(grace_seconds)
            self._listener = None
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        # Only established associations can be finishing work: a bare TCP connection (a port
        # probe, a health check) idles in pynetdicom until its ACSE timeout and must not hold us.
        while any(a.is_established for a in self.ae.active_associations) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.ae.shutdown()
        self._stopped.set()

    @property
    def port(self) -> int:
        if self._listener is not None:
            return self._listener.port
        return int(self._server.server_address[1]) if self._server else self.node.config.port
