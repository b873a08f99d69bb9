"""Thin DIMSE handlers: unpack the event, call one Node method, map the outcome to a status.

No SQL, no paths and no policy decisions here: those belong to the Node. Broad catches
exist only at this edge, where an unexpected error must become a failure status while the
association and the server keep running.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom.events import Event

from pacsnode.dimse import statuses
from pacsnode.errors import PacsnodeError
from pacsnode.model import Caller, Peer
from pacsnode.node import Node

LOGGER = logging.getLogger(__name__)


def caller_of(event: Event, node: Node) -> Caller:
    """Who is on the other end of this event's association (with its TLS certificate, if any)."""
    requestor = event.assoc.requestor
    return node.identify(str(requestor.ae_title), str(requestor.address), peer_certificate_of(event))


def peer_certificate_of(event: Event) -> bytes | None:
    """The DER certificate the peer showed on a TLS association (None on plain TCP)."""
    sock = getattr(getattr(getattr(event.assoc, "dul", None), "socket", None), "socket", None)
    if isinstance(sock, ssl.SSLSocket):
        try:
            return sock.getpeercert(binary_form=True)
        except (ValueError, OSError):
            return None
    return None


def handle_echo(event: Event, node: Node) -> int | Dataset:
    """C-ECHO: anyone may echo unless a registered peer lacks the permission."""
    try:
        node.require_permission(caller_of(event, node), "echo")
    except PacsnodeError as exc:
        return statuses.status_dataset(statuses.REFUSED_NOT_AUTHORIZED, str(exc))
    return statuses.SUCCESS


def handle_store(event: Event, node: Node) -> int | Dataset:
    """C-STORE: the dataset was streamed to a temporary file by pynetdicom; the node places it."""
    try:
        temp = Path(event.dataset_path)
        outcome = node.store_file(
            temp,
            caller_of(event, node),
            expected_sop_class=str(event.context.abstract_syntax),
            expected_sop_instance=str(event.request.AffectedSOPInstanceUID or ""),
        )
    except PacsnodeError as exc:
        LOGGER.warning("C-STORE refused: %s", exc)
        return statuses.status_dataset(statuses.store_status(exc), str(exc))
    except Exception as exc:  # edge: keep the association alive, say why
        LOGGER.exception("C-STORE failed")
        return statuses.status_dataset(statuses.PROCESSING_FAILURE, f"internal error: {exc.__class__.__name__}")
    LOGGER.debug("C-STORE %s: %s", outcome.result.value, outcome.sop_instance_uid)
    return statuses.SUCCESS


def store_received(event: Event, node: Node, peer: Peer) -> int | Dataset:
    """C-STORE arriving on an association *we* opened (C-GET SCU): store it as from ``peer``.

    Unlike the server path the dataset arrives in memory (pynetdicom's SCU side), so it is
    written to a temporary file in the node's own temp folder, then stored like any other.
    """
    temp = node.new_temp_file()
    try:
        with open(temp, "wb") as handle:
            handle.write(event.encoded_dataset(include_meta=True))
        caller = Caller.registered(peer, peer.host)
        node.store_file(temp, caller, expected_sop_class=str(event.context.abstract_syntax),
                        provenance=node.provenance_of(caller, retrieved=True))
    except PacsnodeError as exc:
        return statuses.status_dataset(statuses.store_status(exc), str(exc))
    except Exception as exc:  # edge: say why, keep the association
        LOGGER.exception("C-STORE (C-GET sub-operation) failed")
        temp.unlink(missing_ok=True)
        return statuses.status_dataset(statuses.PROCESSING_FAILURE, f"internal error: {exc.__class__.__name__}")
    return statuses.SUCCESS


def handle_connection_closed(event: Event) -> None:
    """EVT_CONN_CLOSE: leave nothing behind a connection that ended early (see the two helpers)."""
    discard_partial_dataset(event)
    release_unrequested(event)


def release_unrequested(event: Event) -> None:
    """Wake an acceptor still waiting for the A-ASSOCIATE-RQ of a connection that is gone.

    pynetdicom's acceptor thread waits up to the ACSE timeout for the RQ, even when the
    connection already closed (a port probe, garbage instead of an RQ): meanwhile it counts
    against ``max_associations``, so a few dozen such connections refuse every real peer
    for 30 s. ``None`` on its queue is what it reads as "timed out": it ends at once.
    """
    assoc = event.assoc
    if not getattr(assoc, "is_acceptor", False) or assoc.is_established:
        return
    if getattr(assoc.requestor, "primitive", None) is not None:
        return  # the RQ was delivered: pynetdicom's own state machine takes it from here
    queue = getattr(getattr(assoc, "dul", None), "to_user_queue", None)
    if queue is not None:
        queue.put(None)


def discard_partial_dataset(event: Event) -> None:
    """Remove the temporary file of a C-STORE the connection ended in the middle of.

    With chunked receive pynetdicom opens ``<home>/tmp/tmp*.dcm`` when a C-STORE command
    arrives and hands it to ``handle_store`` (which always consumes it) only once the dataset
    is complete. A peer that aborts or disconnects half-way, or sends a command pynetdicom
    cannot decode (an over-long UID), leaves that file behind until the next start. The
    unfinished message is ``assoc.dimse.message`` (complete ones are reset to None before any
    handler runs); a complete one still queued when the connection died is discarded too.
    """
    dimse = getattr(event.assoc, "dimse", None)
    pending = [getattr(dimse, "message", None)]
    queued = getattr(getattr(dimse, "msg_queue", None), "queue", ())
    pending += [item[1] for item in list(queued) if isinstance(item, tuple) and len(item) == 2]
    for message in pending:
        handle = getattr(message, "_data_set_file", None) or getattr(message, "_dataset_file", None)
        path = getattr(message, "_data_set_path", None) or getattr(message, "_dataset_path", None)
        try:
            if handle is not None:
                handle.close()
            if isinstance(path, tuple):  # (path, offset) on the sending side: not ours
                continue
            if path is not None:
                Path(path).unlink(missing_ok=True)
                LOGGER.info("removed the partial dataset of an interrupted C-STORE")
        except OSError as exc:  # best effort: clean_temp at the next start removes it anyway
            LOGGER.warning("cannot remove a partial dataset: %s", exc)


def handle_association(event: Event, node: Node) -> None:
    """EVT_ACCEPTED / EVT_REJECTED / EVT_ABORTED: every peer association is an audit event."""
    requestor = event.assoc.requestor
    outcome = {"EVT_ACCEPTED": "accepted", "EVT_REJECTED": "rejected", "EVT_ABORTED": "aborted"}.get(
        event.event.name, event.event.name)
    try:
        caller = caller_of(event, node)
        detail = {"host": str(requestor.address), "called": str(event.assoc.acceptor.ae_title)}
        if caller.refused:
            detail["identity_refused"] = caller.refused
        node.audit.record("association", outcome, peer_aet=caller.aet,
                          peer_name=caller.peer.name if caller.peer else "", detail=detail)
    except Exception:  # auditing must never break an association
        LOGGER.exception("audit of association failed")
