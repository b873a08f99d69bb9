"""Outgoing DICOM: echo, store, find, move and get towards a peer.

Every association opened here sets TCP_NODELAY (see ``sockets``) and proposes a large
maximum PDU; errors become ``PeerError`` with a message that says what the peer did.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator

from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification

from pacsnode.dimse.sockets import set_nodelay
from pacsnode.errors import PeerError
from pacsnode.model import Peer

DEFAULT_MAX_PDU = 1_048_576


def new_ae(aet: str, timeout: float = 30.0) -> AE:
    ae = AE(ae_title=aet)
    ae.maximum_pdu_size = DEFAULT_MAX_PDU
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout * 4
    ae.network_timeout = timeout * 4
    ae.connection_timeout = timeout
    return ae


@contextmanager
def associate(ae: AE, peer: Peer, **kwargs: Any) -> Iterator[Association]:
    """An established association to ``peer``, released (or aborted) on exit."""
    handlers = list(kwargs.pop("evt_handlers", []))
    handlers.append((evt.EVT_CONN_OPEN, set_nodelay))
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.aet, evt_handlers=handlers, **kwargs)
    if not assoc.is_established:
        if assoc.is_rejected:
            raise PeerError(f"{peer.aet}@{peer.host}:{peer.port} rejected the association")
        raise PeerError(f"cannot associate with {peer.aet}@{peer.host}:{peer.port} (no answer or aborted)")
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def echo(peer: Peer, calling_aet: str) -> tuple[int, float]:
    """C-ECHO; returns (status, round-trip seconds of the C-ECHO itself)."""
    ae = new_ae(calling_aet)
    ae.add_requested_context(Verification)
    with associate(ae, peer) as assoc:
        started = time.perf_counter()
        status = assoc.send_c_echo()
        elapsed = time.perf_counter() - started
    if not status or "Status" not in status:
        raise PeerError(f"{peer.aet} sent no C-ECHO response")
    return int(status.Status), elapsed
