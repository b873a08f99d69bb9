"""Provenance over claims, the node's side: who delivered what, and an admin's explicit vouch.

Every instance records at ingest who delivered it (:meth:`ProvenanceDesk.of`, called by
``Node.store_file`` through ``Node.provenance_of``). The pure rule that compares deliveries
with the producer a study claims is ``pacsnode.recognition.provenance``; recognition asks it
through ``Regional.vouching`` (condition ``producer_not_vouched``) and QC shows it as the
finding ``QC-PROVENANCE``. An admin may vouch for a producer explicitly (audited).
"""

from __future__ import annotations

from typing import Any

from pacsnode.audit import AuditLog
from pacsnode.config import NodeConfig
from pacsnode.errors import NotFound, RecognitionError
from pacsnode.index.regional_store import RegionalStore
from pacsnode.index.base import Index
from pacsnode.model import Caller, DeliveryKind, Provenance
from pacsnode.qc import CheckOutcome
from pacsnode.regional import Regional

FINDING = "QC-PROVENANCE"


class ProvenanceDesk:
    """Provenance of one node's instances."""

    def __init__(self, config: NodeConfig, index: Index, regional: Regional, store: RegionalStore,
                 audit: AuditLog) -> None:
        self.config = config
        self.index = index
        self.regional = regional
        self.store = store
        self.audit = audit

    def of(self, caller: Caller, retrieved: bool = False) -> Provenance:
        """Who is delivering, as a fact for the index: admin import, own institution, peer, or nobody.

        ``retrieved``: this node fetched the instance from ``caller``'s peer (C-GET as SCU).
        """
        if caller.is_local_admin:
            return Provenance(DeliveryKind.IMPORT, aet=caller.aet)
        peer = caller.peer
        if peer is None:
            return Provenance(DeliveryKind.UNREGISTERED, aet=caller.aet)
        kind = DeliveryKind.RETRIEVED if retrieved else (
            DeliveryKind.OWN if self.config.institution and peer.institution == self.config.institution
            else DeliveryKind.PEER)
        return Provenance(kind, aet=caller.aet, peer=peer.name, institution=peer.institution)

    def vouch(self, study_uid: str, producer: str, note: str, vouched_by: str) -> str:
        """An admin states that ``producer`` made a study its deliverers do not vouch for (audited).

        It covers every instance received until now; copies that arrive later need their own.
        Returns the time of the vouch.
        """
        producer, note = producer.strip(), note.strip()
        if not self.index.studies(study_uids=[study_uid]):
            raise NotFound(f"no study {study_uid} in this node")
        if not note:
            raise RecognitionError("a vouch needs a --note saying how the producer was verified")
        region = self.regional.region
        if region is None or region.institution(producer) is None:
            raise RecognitionError(f"{producer!r} is not an institution in {self.config.recognition_path.name}")
        at = self.store.add_vouch(study_uid, producer, note, vouched_by)
        self.audit.record("recognition-vouch", "vouched", study_uid=study_uid,
                          detail={"producer": producer, "note": note, "by": vouched_by, "covers_until": at})
        return at

    def describe(self, study_uid: str) -> dict[str, Any]:
        """How a study arrived, what it claims, and whether the one vouches for the other."""
        rows = self.store.studies_by_uid([study_uid])
        if not rows:
            raise NotFound(f"no study {study_uid} in this node")
        vouched, why = self.regional.vouching(rows[0])
        return {"study_uid": study_uid, "producer": self.regional.producer_of(rows[0]), "vouched": vouched,
                "explanation": why, "deliveries": self.store.deliveries(study_uid),
                "vouches": self.store.vouches(study_uid)}

    def finding(self, study_uid: str) -> list[CheckOutcome]:
        """QC-PROVENANCE: the producer the headers claim is vouched for by who delivered the study.

        A warning, not a failure: image quality may be fine; recognition fails on its own
        condition (``producer_not_vouched``) until someone vouches.
        """
        rows = self.store.studies_by_uid([study_uid])
        if not rows or self.regional.region is None:
            return []
        vouched, why = self.regional.vouching(rows[0])
        return [CheckOutcome(FINDING, "warn", vouched, why)]
