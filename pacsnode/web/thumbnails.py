"""Which priors on the priors page get a thumbnail: local studies the user may retrieve.

The picture itself comes from the DICOMweb ``/thumbnail`` route, which decides access again
for every request (a session cookie may read). This only keeps the page from offering an image
the door would refuse: a prior held by a peer has no local pixels, and a local study outside
the user's access is left without one, exactly as ``Node.retrieve`` would decide (same
``RegionalService.access``, same ``get`` permission), without writing an audit row per prior.
"""

from __future__ import annotations

from typing import Any, Iterable

from pacsnode.model import Caller, InformationModel, Level, Query, QueryKey
from pacsnode.node import Node


def visible(node: Node, caller: Caller, priors: Iterable[Any]) -> set[str]:
    """The study UIDs among ``priors`` (local ones) whose thumbnail ``caller`` may fetch."""
    wanted = sorted({p.study_uid for p in priors if p.source == "local" and p.study_uid})
    if not wanted or caller.peer is None or "get" not in caller.peer.permissions:
        return set()
    keys: list[QueryKey] = [QueryKey("StudyInstanceUID", "UI", "\\".join(wanted))]
    patients = {(p.patient_id, p.issuer_of_patient_id) for p in priors if p.source == "local"}
    if len(patients) == 1:  # the patient context a physician's request carries
        patient_id, issuer = next(iter(patients))
        keys += [QueryKey("PatientID", "LO", patient_id), QueryKey("IssuerOfPatientID", "LO", issuer)]
    try:
        allowed, _withheld = node.regional.access(Query(Level.STUDY, InformationModel.STUDY_ROOT, tuple(keys)), caller)
    except Exception:  # refused for any reason: no thumbnails rather than a broken page
        return set()
    return set(wanted) if allowed is None else set(wanted) & allowed
