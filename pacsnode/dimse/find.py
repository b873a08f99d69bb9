"""C-FIND SCP (Patient Root and Study Root) and its SOP Class Extended Negotiation.

The handler is an adapter: identifier → :class:`Query` (``dicom.query``), ``Node.find``,
each match → a response identifier; domain errors become the status ``statuses`` names.

SOP Class Extended Negotiation (PS3.4 C.5.1.1, the Q/R service-class application
information): for the two FIND SOP classes we answer relational queries 0 (not supported),
combined date-time matching 1 when asked, fuzzy semantic PN matching 0, timezone adjustment
0. pynetdicom puts that answer into the association's acceptor user information, so the
find handler reads what was agreed from ``event.assoc.acceptor.sop_class_extended``; no
state of our own per association.
"""

from __future__ import annotations

import logging
from typing import Iterator

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom.events import Event

from pacsnode.dicom.private_hr import hr_block_byte, write_hr_block
from pacsnode.dicom.query import build_response, model_for_sop_class, parse_identifier
from pacsnode.dimse import statuses
from pacsnode.dimse.handlers import caller_of
from pacsnode.errors import PacsnodeError
from pacsnode.model import Query
from pacsnode.node import Node

LOGGER = logging.getLogger(__name__)

FIND_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.2.1.1",  # Patient Root Q/R FIND
    "1.2.840.10008.5.1.4.1.2.2.1",  # Study Root Q/R FIND
})
# What we support, byte by byte: relational, combined date-time, fuzzy PN, timezone adjust.
FIND_EXTENDED_SUPPORT = (0, 1, 0, 0)
COMBINED_DATETIME_BYTE = 1


def handle_sop_extended(event: Event) -> dict[UID, bytes]:
    """EVT_SOP_EXTENDED: accept combined date-time matching for the FIND SOP classes.

    The answer has as many bytes as the request, each 1 only when asked and supported;
    other SOP classes (MOVE, GET) get no answer, which the requestor reads as "not
    supported" (we offer no relational retrieve).
    """
    answers: dict[UID, bytes] = {}
    for sop_class, info in (getattr(event, "app_info", None) or {}).items():
        if str(sop_class) not in FIND_SOP_CLASSES or not info:
            continue
        supported = FIND_EXTENDED_SUPPORT + (0,) * max(0, len(info) - len(FIND_EXTENDED_SUPPORT))
        answers[UID(str(sop_class))] = bytes(min(asked, 1) & ours for asked, ours in zip(info, supported))
    return answers


def combined_datetime_agreed(event: Event) -> bool:
    """Whether this association agreed combined date-time matching for the request's SOP class."""
    try:
        agreed = event.assoc.acceptor.sop_class_extended
        info = agreed.get(UID(str(event.request.AffectedSOPClassUID)), b"")
    except AttributeError:
        return False
    return len(info) > COMBINED_DATETIME_BYTE and info[COMBINED_DATETIME_BYTE] == 1


def _find_status(exc: PacsnodeError) -> int:
    """The C-FIND status for a domain error: C-FIND knows no 0xA701/0xA702 (those are C-MOVE's)."""
    status = statuses.query_status(exc)
    if status in (statuses.QR_OUT_OF_RESOURCES_MATCHES, statuses.QR_OUT_OF_RESOURCES_SUBOPS):
        return statuses.REFUSED_OUT_OF_RESOURCES
    return status


def _query_of(event: Event, node: Node) -> Query:
    model = model_for_sop_class(str(event.request.AffectedSOPClassUID))
    identifier = event.identifier  # decoding errors are caught by the caller's edge catch
    return parse_identifier(identifier, model, combined_datetime=combined_datetime_agreed(event),
                            case_insensitive_pn=not node.config.query.case_sensitive_pn)


def handle_find(event: Event, node: Node) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    """C-FIND: translate the identifier, ask the node, stream matches; cancel between matches."""
    count = 0
    try:
        query = _query_of(event, node)
        caller = caller_of(event, node)
        hr_block = hr_block_byte(event.identifier)
        matches = node.find(query, caller)
        for match in matches:
            if event.is_cancelled:
                LOGGER.info("C-FIND cancelled by the peer after %d match(es)", count)
                yield statuses.CANCEL, None
                return
            count += 1
            response = build_response(query, match, node.config.aet)
            if hr_block is not None and match.get("_study_uid"):
                write_hr_block(response, hr_block, node.hr_values(str(match["_study_uid"]), caller))
            yield statuses.PENDING, response
    except PacsnodeError as exc:
        LOGGER.warning("C-FIND refused: %s", exc)
        yield statuses.status_dataset(_find_status(exc), str(exc)), None
        return
    except Exception as exc:  # edge: keep the association and the server alive, say why
        LOGGER.exception("C-FIND failed")
        comment = f"unable to process: {exc.__class__.__name__}"
        yield statuses.status_dataset(statuses.QR_UNABLE_TO_PROCESS, comment), None
        return
    LOGGER.info("C-FIND %s level: %d match(es)", query.level.value, count)
    yield statuses.SUCCESS, None
