"""Outgoing DICOM through pynetdicom: echo, find, move and get towards a peer.

C-STORE (``pacsnode send``) no longer goes through here: ``send_files`` streams stored bytes
on our own association (``outgoing``). Every association opened here sets TCP_NODELAY (see
``sockets``), proposes a large maximum PDU, and uses TLS when the peer is registered with
``--tls`` (pynetdicom wraps the socket before connecting; a failed handshake is an error,
never a clear-text retry); errors become ``PeerError`` with a message that says what the
peer did.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from pydicom.dataset import Dataset
from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.presentation import StoragePresentationContexts

from pacsnode.config import NodeConfig

VERIFICATION = "1.2.840.10008.1.1"  # Verification SOP Class (pynetdicom makes its named constant at run time)
from pacsnode.dimse.sockets import set_nodelay
from pacsnode.dimse.tls import client_context
from pacsnode.errors import ConfigError, PeerError
from pacsnode.model import Peer

DEFAULT_MAX_PDU = 1_048_576


@dataclass(frozen=True)
class LocalAE:
    """Who we are when we call a peer: our AE title, and our TLS settings for TLS peers."""

    aet: str
    config: NodeConfig | None = None

    @classmethod
    def of(cls, config: NodeConfig) -> "LocalAE":
        return cls(config.aet, config)

    @classmethod
    def coerce(cls, value: "LocalAE | str") -> "LocalAE":
        return value if isinstance(value, LocalAE) else cls(value)

    def tls_args(self, peer: Peer) -> tuple[Any, str | None] | None:
        if not peer.tls:
            return None
        if self.config is None:
            raise ConfigError(f"peer {peer.name} uses TLS but no [tls] settings were given")
        return client_context(self.config), (peer.host if self.config.tls.verify_peer_hostname else None)


def new_ae(aet: str, timeout: float = 30.0) -> AE:
    ae = AE(ae_title=aet)
    ae.maximum_pdu_size = DEFAULT_MAX_PDU
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout * 4
    ae.network_timeout = timeout * 4
    ae.connection_timeout = timeout
    return ae


REACTOR_RESUME_WAIT = 0.5  # seconds; the reactor thread normally resumes within microseconds


def wait_for_reactor(assoc: Association) -> None:
    """Call before each ``send_c_store`` in a loop: let pynetdicom's reactor resume first.

    pynetdicom (3.0.x) pauses an association's reactor thread around every ``send_*`` with an
    Event plus an ``_is_paused`` flag, and the flag stays True after a send until the reactor
    thread actually runs again. A next send that starts in that gap believes the reactor is
    paused; the reactor, resuming, takes the C-STORE-RSP off the queue and drops it
    ("Received unexpected C-STORE service message"), and the sender waits out the whole DIMSE
    timeout before the association is aborted. Measured here (2 CPUs, loaded): 3 of 15 C-MOVEs
    of a 200-image CT study and 4 of 15 ``pacsnode send`` runs hit it; with this wait 0 of 30
    and 0 of 15. The flag is private, so it is read defensively: if pynetdicom renames it,
    this waits for nothing.
    """
    deadline = time.monotonic() + REACTOR_RESUME_WAIT
    while getattr(assoc, "_is_paused", False) and assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.0001)


@contextmanager
def associate(ae: AE, peer: Peer, local: LocalAE | None = None, **kwargs: Any) -> Iterator[Association]:
    """An established association to ``peer`` (TLS when the peer is registered so), released on exit."""
    handlers = list(kwargs.pop("evt_handlers", []))
    handlers.append((evt.EVT_CONN_OPEN, set_nodelay))
    tls_args = (local or LocalAE(str(ae.ae_title))).tls_args(peer)
    if tls_args is not None:
        kwargs["tls_args"] = tls_args
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.aet, evt_handlers=handlers, **kwargs)
    if not assoc.is_established:
        if assoc.is_rejected:
            raise PeerError(f"{peer.aet}@{peer.host}:{peer.port} rejected the association")
        if tls_args is not None:  # pynetdicom logs the SSL error and reports only a failed association
            raise PeerError(f"cannot associate with {peer.aet}@{peer.host}:{peer.port} over TLS (handshake failed, "
                            "certificate not trusted, or no answer); nothing was sent in clear text")
        raise PeerError(f"cannot associate with {peer.aet}@{peer.host}:{peer.port} (no answer or aborted)")
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def echo(peer: Peer, calling_aet: LocalAE | str) -> tuple[int, float]:
    """C-ECHO; returns (status, round-trip seconds of the C-ECHO itself)."""
    local = LocalAE.coerce(calling_aet)
    ae = new_ae(local.aet)
    ae.add_requested_context(VERIFICATION)
    with associate(ae, peer, local) as assoc:
        started = time.perf_counter()
        status = assoc.send_c_echo()
        elapsed = time.perf_counter() - started
    if not status or "Status" not in status:
        raise PeerError(f"{peer.aet} sent no C-ECHO response")
    return int(status.Status), elapsed


# -- C-FIND ---------------------------------------------------------------------------------
FIND_MODELS = {
    "patient": "1.2.840.10008.5.1.4.1.2.1.1",
    "study": "1.2.840.10008.5.1.4.1.2.2.1",
}
MOVE_MODELS = {
    "patient": "1.2.840.10008.5.1.4.1.2.1.2",
    "study": "1.2.840.10008.5.1.4.1.2.2.2",
}
GET_MODELS = {
    "patient": "1.2.840.10008.5.1.4.1.2.1.3",
    "study": "1.2.840.10008.5.1.4.1.2.2.3",
}


def find(peer: Peer, calling_aet: LocalAE | str, identifier: Dataset, model: str = "study") -> Iterator[Dataset]:
    """C-FIND; yields each pending identifier; raises PeerError on a failure status."""
    local = LocalAE.coerce(calling_aet)
    ae = new_ae(local.aet)
    ae.add_requested_context(FIND_MODELS[model])
    with associate(ae, peer, local) as assoc:
        for status, match in assoc.send_c_find(identifier, FIND_MODELS[model]):
            if not status or "Status" not in status:
                raise PeerError(f"{peer.aet} aborted or sent no C-FIND response")
            code = int(status.Status)
            if code in (0xFF00, 0xFF01):
                if match is not None:
                    yield match
            elif code == 0x0000:
                return
            else:
                comment = str(status.get("ErrorComment", "") or "")
                raise PeerError(f"{peer.aet} answered C-FIND with 0x{code:04X}" + (f": {comment}" if comment else ""))


@dataclass
class RetrieveProgress:
    """Counts from C-MOVE/C-GET responses."""

    remaining: int = 0
    completed: int = 0
    failed: int = 0
    warning: int = 0
    status: int = 0xFF00
    comment: str = ""
    failed_uids: list[str] = field(default_factory=list)

    def update(self, status: Dataset, identifier: Dataset | None) -> None:
        self.status = int(status.Status)
        self.remaining = int(status.get("NumberOfRemainingSuboperations", self.remaining) or 0)
        self.completed = int(status.get("NumberOfCompletedSuboperations", self.completed) or 0)
        self.failed = int(status.get("NumberOfFailedSuboperations", self.failed) or 0)
        self.warning = int(status.get("NumberOfWarningSuboperations", self.warning) or 0)
        self.comment = str(status.get("ErrorComment", "") or "")
        if identifier is not None and "FailedSOPInstanceUIDList" in identifier:
            value = identifier.FailedSOPInstanceUIDList
            self.failed_uids = [str(v) for v in (value if isinstance(value, (list, tuple)) or
                                                 value.__class__.__name__ == "MultiValue" else [value]) if v]


def move(peer: Peer, calling_aet: LocalAE | str, identifier: Dataset, destination: str, model: str = "study",
         progress: Callable[[RetrieveProgress], None] | None = None) -> RetrieveProgress:
    """C-MOVE to ``destination``; returns the final counts."""
    local = LocalAE.coerce(calling_aet)
    ae = new_ae(local.aet, timeout=60.0)
    ae.add_requested_context(MOVE_MODELS[model])
    state = RetrieveProgress()
    with associate(ae, peer, local) as assoc:
        for status, ident in assoc.send_c_move(identifier, destination, MOVE_MODELS[model]):
            if not status or "Status" not in status:
                raise PeerError(f"{peer.aet} aborted the C-MOVE")
            state.update(status, ident)
            if progress:
                progress(state)
    return state


def get(peer: Peer, calling_aet: LocalAE | str, identifier: Dataset, on_instance: Callable[[Any], int | Dataset],
        model: str = "study", progress: Callable[[RetrieveProgress], None] | None = None) -> RetrieveProgress:
    """C-GET; ``on_instance(event)`` stores each received instance and returns a C-STORE status."""
    local = LocalAE.coerce(calling_aet)
    ae = new_ae(local.aet, timeout=60.0)
    ae.add_requested_context(GET_MODELS[model])
    roles = []
    for context in StoragePresentationContexts[: 128 - 1]:
        assert context.abstract_syntax is not None  # pynetdicom's storage contexts all name one
        ae.add_requested_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES[:4])
        roles.append(build_role(context.abstract_syntax, scp_role=True))
    state = RetrieveProgress()
    with associate(ae, peer, local, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_instance)]) as assoc:
        for status, ident in assoc.send_c_get(identifier, GET_MODELS[model]):
            if not status or "Status" not in status:
                raise PeerError(f"{peer.aet} aborted the C-GET")
            state.update(status, ident)
            if progress:
                progress(state)
    return state
