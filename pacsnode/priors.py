"""Priors across the region, a service: ask every registered peer (in parallel) and the local index
for a patient's studies, with each holder's recognition advice for this node's institution.

The engine behind ``pacsnode priors`` and the workspace's priors page (both adapters call
:func:`gather_priors`, which writes the audit event itself). Peers are asked with the outgoing
C-FIND of ``dimse.scu``.

A peer answers with the ``PACSNODE HR`` private block (DESIGN.md 4): status, scope label,
failed conditions, valid-until, plus the exam item and the producer (our additions at
(0011,1005) and (0011,1006)). A peer that is down or refuses is reported, never fatal.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from pydicom.dataset import Dataset

from pacsnode.dicom.private_hr import HR_CREATOR, read_hr_block, request_hr_block
from pacsnode.dimse import scu
from pacsnode.errors import PacsnodeError
from pacsnode.index.regional_store import StudyRow
from pacsnode.model import Peer
from pacsnode.node import Node

LOGGER = logging.getLogger(__name__)
RESIDENT_ISSUER = "CN-RESIDENT-ID"


@dataclass
class Prior:
    """One prior result as the physician sees it."""

    study_uid: str
    source: str
    institution: str
    institution_code: str
    study_date: str
    modalities: list[str]
    description: str
    accession_number: str
    patient_id: str
    issuer_of_patient_id: str
    item_code: str
    status: str
    failed: list[str]
    valid_until: str
    scope_label: str = ""
    also_at: list[str] = field(default_factory=list)


@dataclass
class PriorsResult:
    priors: list[Prior]
    errors: dict[str, str]

    def as_json(self) -> dict[str, Any]:
        return {"priors": [asdict(p) for p in self.priors], "errors": self.errors}


def identifier_for(patient_id: str | None, issuer: str | None, resident_id: str | None) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = "STUDY"
    for keyword in ("StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "StudyDescription",
                    "ModalitiesInStudy", "InstitutionName", "PatientName", "NumberOfStudyRelatedInstances"):
        setattr(ds, keyword, "")
    ds.PatientID = patient_id or ""
    ds.IssuerOfPatientID = issuer or ""
    if resident_id:
        item = Dataset()
        item.PatientID = resident_id
        item.IssuerOfPatientID = RESIDENT_ISSUER
        ds.OtherPatientIDsSequence = [item]
    request_hr_block(ds)
    return ds


def _from_response(match: Dataset, source: str) -> Prior:
    block = read_hr_block(match)
    modalities = match.get("ModalitiesInStudy", "")
    return Prior(
        study_uid=str(match.get("StudyInstanceUID", "")), source=source,
        institution=str(match.get("InstitutionName", "") or ""), institution_code=block.get("producer", ""),
        study_date=str(match.get("StudyDate", "") or ""),
        modalities=[str(m) for m in modalities] if not isinstance(modalities, str) else
        [m for m in modalities.split("\\") if m],
        description=str(match.get("StudyDescription", "") or ""),
        accession_number=str(match.get("AccessionNumber", "") or ""),
        patient_id=str(match.get("PatientID", "") or ""),
        issuer_of_patient_id=str(match.get("IssuerOfPatientID", "") or ""),
        item_code=block.get("item", ""), status=block.get("status", "") or "UNKNOWN",
        failed=block.get("failed", []), valid_until=block.get("valid_until", ""), scope_label=block.get("scope", ""))


def _local(node: Node, row: StudyRow, now: datetime) -> Prior:
    advice = node.regional.advice(row.study_uid, node.config.institution, now)
    return Prior(
        study_uid=row.study_uid, source="local", institution=row.institution_name,
        institution_code=node.regional.producer_of(row), study_date=row.study_date, modalities=row.modalities,
        description=row.study_description, accession_number=row.accession_number, patient_id=row.patient_id,
        issuer_of_patient_id=row.issuer, item_code=advice.item_code if advice else "",
        status=advice.status if advice else "UNKNOWN", failed=list(advice.failed) if advice else [],
        valid_until=advice.valid_until.strftime("%Y%m%d") if advice and advice.valid_until else "",
        scope_label=advice.scope_label if advice else "")


def _ask(peer: Peer, calling_aet: scu.LocalAE, identifier: Dataset) -> list[Prior]:
    return [_from_response(match, peer.name) for match in scu.find(peer, calling_aet, identifier, "study")]


def gather_priors(node: Node, patient_id: str | None = None, issuer: str | None = None,
                  resident_id: str | None = None, asked_by: str = "") -> PriorsResult:
    """Local and remote priors of one patient, merged by Study Instance UID, newest first.

    Audited here as one ``priors``/``shown`` event, whoever asks: ``asked_by`` names a web user
    (``user:NAME``; empty for the local CLI), the patient's identifiers are in the detail (the
    resident ID only as "given", it is a national identifier).
    """
    now = datetime.now(timezone.utc)
    ids = [(patient_id, issuer or "")] if patient_id else []
    if resident_id:
        ids.append((resident_id, RESIDENT_ISSUER))
    priors: dict[str, Prior] = {}
    for row in node.regional_store.studies_of_patients(ids):
        priors[row.study_uid] = _local(node, row, now)
    identifier = identifier_for(patient_id, issuer, resident_id)
    own = node.config.institution
    peers = [p for p in node.peers.list()  # other hospitals' nodes: not our workstations, not modalities
             if "find" in p.permissions and p.port > 0 and p.institution and p.institution != own]
    errors: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(peers)))) as pool:
        futures = {peer.name: pool.submit(_ask, peer, scu.LocalAE.of(node.config), identifier) for peer in peers}
        for name, future in futures.items():
            try:
                for prior in future.result():
                    if prior.study_uid in priors:
                        priors[prior.study_uid].also_at.append(name)
                    else:
                        priors[prior.study_uid] = prior
            except (PacsnodeError, OSError, RuntimeError, ValueError) as exc:
                errors[name] = str(exc)
    ordered = sorted(priors.values(), key=lambda p: (p.study_date, p.study_uid), reverse=True)
    node.regional_store.record_advice_shown([
        {"study_uid": p.study_uid, "viewer_institution": node.config.institution, "producer": p.institution_code,
         "modality": "\\".join(p.modalities), "item_code": p.item_code, "status": p.status,
         "failed": ",".join(p.failed)} for p in ordered])
    node.audit.record("priors", "shown", peer_name=asked_by,
                      detail={"patient_id": patient_id or "", "issuer": issuer or "", "resident_id": bool(resident_id),
                              "count": len(ordered), "peers": len(peers), "errors": errors, "creator": HR_CREATOR})
    return PriorsResult(ordered, errors)
