"""The node's regional side: gathers facts from the index and asks the pure rules.

``pacsnode.recognition`` decides; this module only knows where the facts live (the index)
and who is asking (the caller's registered institution). It is the one door every peer
request goes through (STYLE habit 4): C-FIND filters with ``visible_study_uids``, C-MOVE and
C-GET refuse what it leaves out, ``priors`` and ``explain`` ask ``advice``.

A choice of ours (the rules are silent): a query that names Study Instance UIDs carries
patient context for those studies. A UID is a precise reference to one study, not browsing;
the relationship and availability checks still apply to it.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace
from datetime import date, datetime, timezone
from typing import Iterable

from pacsnode.config import NodeConfig
from pacsnode.errors import MissingPatientContext
from pacsnode.index.regional_store import RegionalStore, StudyRow
from pacsnode.model import Caller, OtherPatientId, Peer, Query
from pacsnode.recognition.provenance import Delivery, Vouch, producer_vouched
from pacsnode.recognition import (
    AccessDecision,
    Advice,
    QueryContext,
    Region,
    ShareGrant,
    StudyFacts,
    decide_access,
    load_region,
    recognition_advice,
    resolve_institution,
    resolve_item,
)

LOGGER = logging.getLogger(__name__)
WILDCARDS = ("*", "?")


def parse_day(text: str) -> date | None:
    try:
        return datetime.strptime(text[:8], "%Y%m%d").date() if len(text) >= 8 else None
    except ValueError:
        return None


def _utc(text: str) -> datetime | None:
    if not text:
        return None
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


ADVICE_BATCH = 500  # studies per batch of index queries (well under SQLite's bound-parameter limit)

class Regional:
    """Access and recognition advice for one node, over its index."""

    def __init__(self, config: NodeConfig, store: RegionalStore, region: Region | None) -> None:
        self.config = config
        self.store = store
        self.region = region

    @classmethod
    def load(cls, config: NodeConfig, store: RegionalStore) -> "Regional":
        """Read the region's rules; a node without ``recognition.toml`` shares with nobody outside."""
        path = config.recognition_path
        region = load_region(path) if path.is_file() else None
        if region is None:
            LOGGER.warning("%s not found: peers of other institutions will see nothing", path)
        return cls(config, store, region)

    # -- facts ---------------------------------------------------------------------------
    def producer_of(self, row: StudyRow) -> str:
        """The producing institution's code: Institution Code Sequence, then name, then calling AE."""
        if self.region is None:
            return row.institution_codes[0] if row.institution_codes else ""
        found = resolve_institution(self.region, row.institution_codes, row.institution_name, row.calling_ae)
        return found.code if found else ""

    def facts_of(self, row: StudyRow) -> StudyFacts:
        return StudyFacts(
            row.study_uid, study_date=parse_day(row.study_date), modalities=tuple(row.modalities),
            body_parts=tuple(row.body_parts), procedure_codes=tuple(row.procedure_codes), contrast=row.contrast,
            producer=self.producer_of(row), qc_status=row.qc_status, lossy=row.lossy, patient_id=row.patient_id,
            issuer_of_patient_id=row.issuer, other_patient_ids=tuple(row.other_patient_ids),
            deidentified=row.deidentified, image_modalities=tuple(row.image_modalities),
            image_body_parts=tuple(row.image_body_parts))

    def shares(self, study_uids: Iterable[str]) -> list[ShareGrant]:
        return [ShareGrant(r["study_uid"], r["institution"], starts_at=_utc(r["granted_at"]),
                           expires_at=_utc(r["expires_at"]), revoked=bool(r["revoked_at"]))
                for r in self.store.shares(study_uids)]

    @staticmethod
    def context_of(query: Query) -> QueryContext:
        """The patient a query names: Patient ID + Issuer and Other Patient IDs Sequence items."""
        others: list[OtherPatientId] = []
        sequence = query.key("OtherPatientIDsSequence")
        if sequence is not None:
            item = {k.keyword: (k.value or "") for k in sequence.items}
            if item.get("PatientID"):
                others.append(OtherPatientId(item["PatientID"], item.get("IssuerOfPatientID", "")))
        return QueryContext(query.value("PatientID"), query.value("IssuerOfPatientID"), tuple(others))

    @staticmethod
    def named_study_uids(query: Query) -> list[str]:
        value = query.value("StudyInstanceUID")
        if not value or any(w in value for w in WILDCARDS):
            return []
        return [uid.strip() for uid in value.split("\\") if uid.strip()]

    # -- access --------------------------------------------------------------------------
    def is_local(self, caller: Caller) -> bool:
        """The CLI, or a registered peer of this node's own institution (a workstation here)."""
        if caller.is_local_admin:
            return True
        peer = caller.peer
        return bool(peer and self.config.institution and peer.institution == self.config.institution)

    def decisions(self, query: Query, caller: Caller, now: datetime) -> dict[str, AccessDecision]:
        """Access decision for every study the query could touch (for a non-local caller)."""
        context = self.context_of(query)
        named = self.named_study_uids(query)
        if not context.patient_identifiers() and not named:
            if self.region is None or self.region.require_patient_context:
                raise MissingPatientContext(
                    "query must name the patient (PatientID with IssuerOfPatientID, or a resident ID "
                    "in OtherPatientIDsSequence)")
            rows = self.store.all_studies()
        elif context.patient_identifiers():
            rows = self.store.studies_of_patients(context.patient_identifiers())
        else:
            rows = self.store.studies_by_uid(named)
        shares = self.shares([r.study_uid for r in rows])
        peer = caller.peer
        out: dict[str, AccessDecision] = {}
        for row in rows:
            facts = self.facts_of(row)
            study_context = context if context.patient_identifiers() else QueryContext(
                row.patient_id, row.issuer, tuple(row.other_patient_ids))
            if self.region is None:
                out[row.study_uid] = AccessDecision(False, "no_region", "no recognition.toml on this node")
                continue
            out[row.study_uid] = decide_access(
                self.region, self.config.institution, peer.institution if peer else None, peer is not None,
                facts, study_context, shares, now)
        return out

    def visible_study_uids(self, query: Query, caller: Caller, now: datetime | None = None) -> set[str] | None:
        """Studies ``caller`` may see (None = everything, for local callers)."""
        return self.access(query, caller, now)[0]

    def access(self, query: Query, caller: Caller,
               now: datetime | None = None) -> tuple[set[str] | None, dict[str, int]]:
        """(studies ``caller`` may see or None for everything, how many were denied for which reason)."""
        if self.is_local(caller):
            return None, {}
        decisions = self.decisions(query, caller, now or datetime.now(timezone.utc))
        denied = Counter(d.reason for d in decisions.values() if not d.allowed)
        return {uid for uid, decision in decisions.items() if decision.allowed}, dict(denied)

    def destination_refusals(self, query: Query, destination: Peer, study_uids: Iterable[str],
                             now: datetime | None = None) -> dict[str, AccessDecision]:
        """The studies a C-MOVE destination may not receive, decided as if it had asked itself.

        The destination is the party that receives the data (THREATS.md rule 2), so it gets the
        caller's decision path with the request's own patient context. A destination without
        an institution is unknown (default deny) unless it is registered as this node's own
        institution; a query that names no patient names nobody for it either.
        """
        wanted = sorted(set(study_uids))
        as_caller = Caller.registered(destination, destination.host)
        if self.is_local(as_caller):
            return {}
        try:
            decisions = self.decisions(query, as_caller, now or datetime.now(timezone.utc))
        except MissingPatientContext:
            return {uid: AccessDecision(False, "no_patient_context", "the request names no patient")
                    for uid in wanted}
        missing = AccessDecision(False, "unavailable", "the destination's decision does not cover the study")
        return {uid: decisions.get(uid, missing) for uid in wanted
                if not decisions.get(uid, missing).allowed}

    # -- advice --------------------------------------------------------------------------
    def advice(self, study_uid: str, viewer_institution: str, now: datetime | None = None) -> Advice | None:
        if self.region is None:
            return None
        rows = self.store.studies_by_uid([study_uid])
        if not rows:
            return None
        vouched, why = self.vouching(rows[0])
        facts = replace(self.facts_of(rows[0]), producer_vouched=vouched, provenance=why)
        return recognition_advice(self.region, facts, viewer_institution, now or datetime.now(timezone.utc))

    def vouching(self, row: StudyRow) -> tuple[bool, str]:
        """Does who delivered the study vouch for the producer its headers claim? (provenance over claims)"""
        return self.vouching_many([row])[row.study_uid]

    def vouching_many(self, rows: list[StudyRow]) -> dict[str, tuple[bool, str]]:
        """:meth:`vouching` for many studies in two index queries."""
        uids = [row.study_uid for row in rows]
        deliveries = self.store.deliveries_many(uids)
        vouches = self.store.vouches_many(uids)
        return {row.study_uid: producer_vouched(
            self.producer_of(row),
            [Delivery(d["kind"], d["institution"], d["who"], d["last_received_at"])
             for d in deliveries.get(row.study_uid, [])],
            [Vouch(v["producer"], v["vouched_at"]) for v in vouches.get(row.study_uid, [])])
            for row in rows}

    def advice_many(self, study_uids: Iterable[str], viewer_institution: str,
                    now: datetime | None = None) -> dict[str, tuple[Advice, StudyRow]]:
        """:meth:`advice` for many studies at once, with each study's row (for its producer).

        One batch of index queries per ``ADVICE_BATCH`` studies instead of one per study: a
        C-FIND with the PACSNODE HR block asks this for all its matches (issue 13 item 7).
        Studies not in the index are left out.
        """
        if self.region is None:
            return {}
        at = now or datetime.now(timezone.utc)
        uids = list(dict.fromkeys(study_uids))
        out: dict[str, tuple[Advice, StudyRow]] = {}
        for start in range(0, len(uids), ADVICE_BATCH):
            rows = self.store.studies_by_uid(uids[start:start + ADVICE_BATCH])
            vouching = self.vouching_many(rows)
            for row in rows:
                vouched, why = vouching[row.study_uid]
                facts = replace(self.facts_of(row), producer_vouched=vouched, provenance=why)
                out[row.study_uid] = (recognition_advice(self.region, facts, viewer_institution, at), row)
        return out

    def item_code(self, row: StudyRow) -> str:
        if self.region is None:
            return ""
        item = resolve_item(self.region, self.facts_of(row))
        return item.code if item else ""
