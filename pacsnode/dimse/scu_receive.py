"""C-STOREs arriving on an association *we* opened as a C-GET SCU (CLI ``get``, pynetdicom).

Unlike the server path the dataset arrives in memory (pynetdicom's SCU side), so it is
written to a temporary file in the node's own temp folder, then stored like any other
instance, as delivered by the peer we asked.
"""

from __future__ import annotations

import logging

from pydicom.dataset import Dataset
from pynetdicom.events import Event

from pacsnode.dimse import statuses
from pacsnode.errors import PacsnodeError
from pacsnode.model import Caller, Peer
from pacsnode.node import Node

LOGGER = logging.getLogger(__name__)


def store_received(event: Event, node: Node, peer: Peer) -> int | Dataset:
    """EVT_C_STORE on our C-GET association: store the instance as from ``peer``."""
    temp = node.new_temp_file()
    try:
        with open(temp, "wb") as handle:
            handle.write(event.encoded_dataset(include_meta=True))
        caller = Caller.registered(peer, peer.host)
        node.store_file(temp, caller, provenance=node.provenance_of(caller, retrieved=True),
                        expected_sop_class=str(event.context.abstract_syntax))
    except PacsnodeError as exc:
        return statuses.status_dataset(statuses.store_status(exc), str(exc))
    except Exception as exc:  # edge: say why, keep the association
        LOGGER.exception("C-STORE (C-GET sub-operation) failed")
        temp.unlink(missing_ok=True)
        return statuses.status_dataset(statuses.PROCESSING_FAILURE, f"internal error: {exc.__class__.__name__}")
    return statuses.SUCCESS
