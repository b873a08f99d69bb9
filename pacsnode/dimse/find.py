"""C-FIND SCP core (Patient Root and Study Root) and its SOP Class Extended Negotiation.

``answer_find`` is the adapter: identifier → :class:`Query` (``dicom.query``), ``Node.find``,
each match → a response identifier; domain errors become the status ``statuses`` names
(``find_failure``). ``lean_find`` streams the answers on the wire.

SOP Class Extended Negotiation (PS3.4 C.5.1.1, the Q/R service-class application
information): for the two FIND SOP classes we answer relational queries 0 (not supported),
combined date-time matching 1 when asked, fuzzy semantic PN matching 0, timezone adjustment
0 (``policy.negotiate`` puts the answer into the A-ASSOCIATE-AC; the association
remembers which FIND SOP classes agreed to combined date-time matching).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Iterator, Mapping

from pydicom.dataset import Dataset

from pacsnode.dicom.private_hr import hr_block_byte, write_hr_block
from pacsnode.dicom.query import build_response, model_for_sop_class, parse_identifier
from pacsnode.dicom.response_bytes import ResponseEncoder
from pacsnode.dimse import statuses
from pacsnode.errors import PacsnodeError
from pacsnode.model import Caller, Query
from pacsnode.node import Node

LOGGER = logging.getLogger(__name__)

FIND_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.2.1.1",  # Patient Root Q/R FIND
    "1.2.840.10008.5.1.4.1.2.2.1",  # Study Root Q/R FIND
})
# What we support, byte by byte: relational, combined date-time, fuzzy PN, timezone adjust.
FIND_EXTENDED_SUPPORT = (0, 1, 0, 0)
COMBINED_DATETIME_BYTE = 1


def sop_extended_answers(app_info: Mapping[str, bytes]) -> dict[str, bytes]:
    """Our answer to SOP Class Extended Negotiation requests (SOP class UID → application info).

    The answer has as many bytes as the request, each 1 only when asked and supported;
    other SOP classes (MOVE, GET) get no answer, which the requestor reads as "not
    supported" (we offer no relational retrieve). Both paths answer with this.
    """
    answers: dict[str, bytes] = {}
    for sop_class, info in app_info.items():
        if str(sop_class) not in FIND_SOP_CLASSES or not info:
            continue
        supported = FIND_EXTENDED_SUPPORT + (0,) * max(0, len(info) - len(FIND_EXTENDED_SUPPORT))
        answers[str(sop_class)] = bytes(min(asked, 1) & ours for asked, ours in zip(info, supported))
    return answers


def combined_datetime_in(info: bytes) -> bool:
    """Whether an agreed extended negotiation answer accepts combined date-time matching."""
    return len(info) > COMBINED_DATETIME_BYTE and info[COMBINED_DATETIME_BYTE] == 1


def _find_status(exc: PacsnodeError) -> int:
    """The C-FIND status for a domain error: C-FIND knows no 0xA701/0xA702 (those are C-MOVE's)."""
    status = statuses.query_status(exc)
    if status in (statuses.QR_OUT_OF_RESOURCES_MATCHES, statuses.QR_OUT_OF_RESOURCES_SUBOPS):
        return statuses.REFUSED_OUT_OF_RESOURCES
    return status


def find_failure(exc: BaseException) -> tuple[int, str]:
    """The final status and Error Comment of a C-FIND that raised ``exc``; logs it once.

    Domain errors get their named status and message; anything else is 0xC000 "unable to
    process" with the exception's class only (no internals on the wire).
    """
    if isinstance(exc, PacsnodeError):
        LOGGER.warning("C-FIND refused: %s", exc)
        return _find_status(exc), str(exc)
    LOGGER.error("C-FIND failed", exc_info=exc)
    return statuses.QR_UNABLE_TO_PROCESS, f"unable to process: {exc.__class__.__name__}"


def answer_find(node: Node, identifier: Dataset, sop_class: str, caller: Caller,
                combined_datetime: bool) -> Iterator[Dataset]:
    """The response identifiers of one C-FIND request, one per match, as pydicom Datasets.

    The core of the C-FIND service: parse the identifier for the SOP class's model, ask
    ``Node.find`` (which checks access and audits), build each response, add the PACSNODE HR
    block when the identifier asks for it. Raises what they raise; ``find_failure`` maps it
    to a status. ``answer_find_encoded`` is the same answer as bytes, for the wire.
    """
    query, hr_block, matches, hr = _matches(node, identifier, sop_class, caller, combined_datetime)
    count = 0
    for match in matches:
        count += 1
        yield response_dataset(query, node.config.aet, match, hr_block, _hr_of(match, hr_block, hr))
    LOGGER.info("C-FIND %s level: %d match(es)", query.level.value, count)


def answer_find_encoded(node: Node, identifier: Dataset, sop_class: str, caller: Caller, combined_datetime: bool,
                        implicit_vr: bool, little_endian: bool,
                        encode: Callable[[Dataset], bytes]) -> Iterator[bytes]:
    """``answer_find`` as encoded identifiers (before any deflate): what ``lean_find`` sends.

    Each match is written straight from its index row by ``ResponseEncoder`` (no Dataset);
    a match it does not write (a sequence key, an unusual character set or value) is built
    as ``answer_find`` builds it and encoded by ``encode``: the bytes are the same either way.
    """
    query, hr_block, matches, hr = _matches(node, identifier, sop_class, caller, combined_datetime)
    encoder = ResponseEncoder(query, node.config.aet, hr_block, implicit_vr=implicit_vr,
                              little_endian=little_endian)
    count = 0
    for match in matches:
        values = _hr_of(match, hr_block, hr)
        data = encoder.encode(match, values)
        count += 1
        yield data if data is not None else encode(response_dataset(query, node.config.aet, match, hr_block, values))
    LOGGER.info("C-FIND %s level: %d match(es)", query.level.value, count)


def _matches(node: Node, identifier: Dataset, sop_class: str, caller: Caller, combined_datetime: bool
             ) -> tuple[Query, int | None, Iterable[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The parsed query, the HR block byte asked for, the matches and their HR values.

    The matches stay an iterator (responses go out as the node yields them) unless the HR
    block is asked for: then every study UID is needed first, for one batch of advice.
    """
    query = parse_identifier(identifier, model_for_sop_class(sop_class), combined_datetime=combined_datetime,
                             case_insensitive_pn=not node.config.query.case_sensitive_pn)
    hr_block = hr_block_byte(identifier)
    matches: Iterable[dict[str, Any]] = node.find(query, caller)
    hr: dict[str, dict[str, Any]] = {}
    if hr_block is not None:  # one batch for all matches, not queries per match
        matches = list(matches)
        hr = node.hr_values_many([str(m["_study_uid"]) for m in matches if m.get("_study_uid")], caller)
    return query, hr_block, matches, hr


def _hr_of(match: Mapping[str, Any], hr_block: int | None, hr: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The HR values for one match's response (None: not asked, or not a study-bound match)."""
    study_uid = match.get("_study_uid")
    return hr[str(study_uid)] if hr_block is not None and study_uid else None


def response_dataset(query: Query, retrieve_aet: str, match: Mapping[str, Any], hr_block: int | None,
                     hr_values: Mapping[str, Any] | None) -> Dataset:
    """One response identifier as a pydicom Dataset: the reference the byte encoder is held to."""
    response = build_response(query, match, retrieve_aet)
    if hr_block is not None and hr_values is not None:
        write_hr_block(response, hr_block, dict(hr_values))
    return response

