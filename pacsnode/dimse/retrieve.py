"""C-MOVE and C-GET SCP handlers.

pynetdicom runs the sub-operations (opening the C-MOVE store association, counting
completed/failed/warning, building the Failed SOP Instance UID List); these generators
feed it. Two things are ours:

* the contexts proposed to a move destination: for every SOP class, the stored transfer
  syntax alone and, separately, the uncompressed syntaxes, so that a destination that does
  not take the stored syntax still gets the instance;
* the fallback when only an uncompressed context was accepted for a compressed instance:
  decompress with pydicom (pillow and any installed pylibjpeg plugins), or let the
  sub-operation fail and be counted, never hang.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Iterator

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_context, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification

from pacsnode.dicom.query import parse_identifier
from pacsnode.dimse import statuses
from pacsnode.dimse.handlers import caller_of
from pacsnode.dimse.scu import wait_for_reactor
from pacsnode.dimse.sockets import set_nodelay
from pacsnode.errors import PacsnodeError
from pacsnode.model import InformationModel, InstanceLocation
from pacsnode.node import Node

LOGGER = logging.getLogger(__name__)
UNCOMPRESSED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
MAX_CONTEXTS = 128


def model_of(sop_class_uid: str) -> InformationModel:
    """Patient Root SOP classes are ...1.2.1.x; everything else we accept is Study Root."""
    return InformationModel.PATIENT_ROOT if ".5.1.4.1.2.1." in sop_class_uid else InformationModel.STUDY_ROOT


def proposed_contexts(locations: list[InstanceLocation]) -> list[PresentationContext]:
    """Contexts for a move destination: stored syntax alone, then uncompressed, per SOP class."""
    contexts: list[PresentationContext] = []
    seen: set[tuple[str, str]] = set()
    for loc in locations:
        syntax = loc.transfer_syntax or ExplicitVRLittleEndian
        for key, syntaxes in (((loc.sop_class_uid, syntax), [syntax]),
                              ((loc.sop_class_uid, "uncompressed"), UNCOMPRESSED)):
            if key in seen or (key[1] == "uncompressed" and syntax in UNCOMPRESSED and
                               (loc.sop_class_uid, "uncompressed") in seen):
                continue
            seen.add(key)
            contexts.append(build_context(loc.sop_class_uid, syntaxes))
    return contexts[:MAX_CONTEXTS]


def load_for(location: InstanceLocation, accepted: list[PresentationContext]) -> Dataset:
    """Read an instance, decompressing it when the peer accepted only uncompressed syntaxes for it."""
    dataset = dcmread(location.path)
    syntax = UID(location.transfer_syntax or ExplicitVRLittleEndian)
    if not syntax.is_compressed:
        return dataset
    offered = {UID(cx.transfer_syntax[0]) for cx in accepted
               if cx.abstract_syntax == location.sop_class_uid and cx.transfer_syntax}
    if syntax in offered or not offered & set(UNCOMPRESSED):
        return dataset  # exact match, or nothing better: pynetdicom counts the failure
    try:
        dataset.decompress()
    except Exception as exc:  # no decoder installed for this syntax
        LOGGER.warning("cannot decompress %s for sending: %s", location.sop_instance_uid, exc)
    return dataset


def _sub_operations(event: Event, locations: list[InstanceLocation], accepted: list[PresentationContext],
                    store_association: list[Association] | None = None) -> Iterator[tuple[int, Dataset | None]]:
    for location in locations:
        if event.is_cancelled:
            yield statuses.CANCEL, None
            return
        try:
            dataset = load_for(location, accepted)
            if store_association:  # C-MOVE: pynetdicom sends it on an association with a running reactor
                wait_for_reactor(store_association[0])
            yield statuses.PENDING, dataset
        except (OSError, PacsnodeError) as exc:
            LOGGER.error("cannot read %s: %s", location.sop_instance_uid, exc)
            failed = Dataset()
            failed.SOPInstanceUID = location.sop_instance_uid
            yield statuses.PENDING, failed  # counted as a failed sub-operation


def handle_move(event: Event, node: Node) -> Iterator[Any]:
    """C-MOVE: destination, number of sub-operations, then one dataset per instance."""
    caller = caller_of(event, node)
    try:
        destination = node.move_destination(str(event.move_destination).strip())
    except PacsnodeError as exc:
        LOGGER.warning("C-MOVE refused: %s", exc)
        node.audit.record("move", "refused", peer_aet=caller.aet, detail=str(exc))
        yield None, None  # pynetdicom answers 0xA801 Move Destination Unknown
        return
    try:
        query = parse_identifier(event.identifier, model_of(str(event.request.AffectedSOPClassUID)), retrieve=True)
        locations = node.retrieve(query, caller, "move", destination=destination)
    except PacsnodeError as exc:
        # pynetdicom (3.0) opens the sub-operation association after the count and before the
        # first status, so a refusal still needs a destination with one context it can open
        # (Verification); the status *dataset* comes first so its Error Comment reaches the peer.
        yield destination.host, destination.port, {
            "contexts": [build_context(Verification)], "evt_handlers": [(evt.EVT_CONN_OPEN, set_nodelay)]}
        yield 1
        yield statuses.status_dataset(statuses.query_status(exc), str(exc)), None
        return
    accepted: list[PresentationContext] = []
    store_association: list[Association] = []
    ready = threading.Event()

    def remember_accepted(accept_event: Event) -> None:
        accepted.extend(accept_event.assoc.accepted_contexts)
        store_association.append(accept_event.assoc)
        ready.set()

    node.audit.record("move", "started", peer_aet=caller.aet, peer_name=caller.peer.name if caller.peer else "",
                      study_uid=locations[0].study_uid if locations else "",
                      detail={"destination": destination.aet, "instances": len(locations)})
    yield destination.host, destination.port, {
        "contexts": proposed_contexts(locations),
        "evt_handlers": [(evt.EVT_CONN_OPEN, set_nodelay), (evt.EVT_ACCEPTED, remember_accepted)],
    }
    yield len(locations)
    yield from _sub_operations(event, locations, accepted, store_association)


def handle_get(event: Event, node: Node) -> Iterator[Any]:
    """C-GET: number of sub-operations, then one dataset per instance, on this association."""
    caller = caller_of(event, node)
    try:
        query = parse_identifier(event.identifier, model_of(str(event.request.AffectedSOPClassUID)), retrieve=True)
        locations = node.retrieve(query, caller, "get")
    except PacsnodeError as exc:
        yield 1
        yield statuses.status_dataset(statuses.query_status(exc), str(exc)), None
        return
    node.audit.record("get", "started", peer_aet=caller.aet, peer_name=caller.peer.name if caller.peer else "",
                      study_uid=locations[0].study_uid if locations else "",
                      detail={"instances": len(locations)})
    yield len(locations)
    yield from _sub_operations(event, locations, list(event.assoc.accepted_contexts))
