"""Thin DIMSE handlers: unpack the event, call one Node method, map the outcome to a status.

No SQL, no paths and no policy decisions here: those belong to the Node. Broad catches
exist only at this edge, where an unexpected error must become a failure status while the
association and the server keep running.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom.events import Event

from pacsnode.dimse import statuses
from pacsnode.errors import PacsnodeError
from pacsnode.model import Caller, Peer
from pacsnode.node import Node

LOGGER = logging.getLogger(__name__)


def caller_of(event: Event, node: Node) -> Caller:
    """Who is on the other end of this event's association."""
    requestor = event.assoc.requestor
    return node.identify(str(requestor.ae_title).strip(), str(requestor.address))


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
        node.store_file(temp, Caller(aet=peer.aet, host=peer.host, peer=peer),
                        expected_sop_class=str(event.context.abstract_syntax))
    except PacsnodeError as exc:
        return statuses.status_dataset(statuses.store_status(exc), str(exc))
    except Exception as exc:  # edge: say why, keep the association
        LOGGER.exception("C-STORE (C-GET sub-operation) failed")
        temp.unlink(missing_ok=True)
        return statuses.status_dataset(statuses.PROCESSING_FAILURE, f"internal error: {exc.__class__.__name__}")
    return statuses.SUCCESS


def handle_association(event: Event, node: Node) -> None:
    """EVT_ACCEPTED / EVT_REJECTED / EVT_ABORTED: every peer association is an audit event."""
    requestor = event.assoc.requestor
    outcome = {"EVT_ACCEPTED": "accepted", "EVT_REJECTED": "rejected", "EVT_ABORTED": "aborted"}.get(
        event.event.name, event.event.name)
    try:
        caller = caller_of(event, node)
        node.audit.record("association", outcome, peer_aet=caller.aet,
                          peer_name=caller.peer.name if caller.peer else "",
                          detail={"host": str(requestor.address), "called": str(event.assoc.acceptor.ae_title)})
    except Exception:  # auditing must never break an association
        LOGGER.exception("audit of association failed")
