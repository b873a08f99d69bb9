"""May peer X see and retrieve study S? The one door every access question goes through.

Default deny (DESIGN.md 5, STYLE habit 4): the answer is an :class:`AccessDecision` with a
stable reason code, so C-FIND can filter silently, C-MOVE can refuse with a status, and the
audit trail can say why. ``detail`` names institutions and rules, never patient identifiers,
so it may be logged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from pacsnode.recognition.facts import QueryContext, ShareGrant, StudyFacts
from pacsnode.recognition.region import Region

# Reasons for ALLOW.
LOCAL = "local"
OWN_STUDY = "own_study"
ALLIANCE = "alliance"
REGION_SHARING = "region_sharing"
CONSULTATION_SHARE = "consultation_share"
# Reasons for DENY.
UNKNOWN_PEER = "unknown_peer"
UNAVAILABLE = "unavailable"
NO_PATIENT_CONTEXT = "no_patient_context"
NO_PATIENT_MATCH = "no_patient_match"
NO_RELATIONSHIP = "no_relationship"

DENY_REASONS: tuple[str, ...] = (UNKNOWN_PEER, UNAVAILABLE, NO_PATIENT_CONTEXT, NO_PATIENT_MATCH, NO_RELATIONSHIP)
ALLOW_REASONS: tuple[str, ...] = (LOCAL, OWN_STUDY, ALLIANCE, REGION_SHARING, CONSULTATION_SHARE)


@dataclass(frozen=True)
class AccessDecision:
    """The answer: ``allowed``, a stable ``reason`` code (ALLOW_REASONS / DENY_REASONS) and a loggable ``detail``."""

    allowed: bool
    reason: str
    detail: str


def decide_access(
    region: Region,
    node_institution: str,
    peer_institution: str | None,
    peer_registered: bool,
    study: StudyFacts,
    context: QueryContext,
    shares: Iterable[ShareGrant | tuple[str, str]],
    now: datetime,
) -> AccessDecision:
    """Decide whether a peer may see and retrieve ``study``; checks run in this order.

    0. The peer is registered and its institution is ``node_institution``: LOCAL, allowed
       with no patient context, even for rejected or restricted studies (local staff fix them).
    1. The peer is registered and its institution is in the region, else ``unknown_peer``.
    2. The study is not rejected (``qc_status == "rejected"``) nor restricted, else ``unavailable``.
    3. When the region requires it, the query names the study's patient by an issuer-qualified
       identifier: ``no_patient_context`` if it names nobody usable, ``no_patient_match`` if
       it names someone else.
    4. A relationship with the producer (``study.producer``, or ``node_institution`` when the
       producer is unknown: the node holds the study and answers for it): the peer produced it;
       both are members of one alliance on ``now``; ``share_within_region`` and both in scope;
       or an active consultation share for (study, peer institution). Else ``no_relationship``.

    ``shares`` holds :class:`ShareGrant` objects (checked against ``now``) or plain
    ``(study_uid, institution)`` pairs taken as already active.
    """
    peer = (peer_institution or "").strip()
    node = node_institution.strip()
    if not peer_registered:
        return _deny(UNKNOWN_PEER, "the calling AE is not a registered peer")
    if peer and peer == node:
        return AccessDecision(True, LOCAL, f"peer belongs to this node's institution {node}")
    if region.institution(peer) is None:
        return _deny(UNKNOWN_PEER, f"peer institution {peer or '(none)'} is not in the region's institutions")
    if study.qc_status == "rejected":
        return _deny(UNAVAILABLE, "the study is rejected for quality")
    if study.restricted:
        return _deny(UNAVAILABLE, "the study is under a patient sharing restriction")
    if region.require_patient_context:
        named = context.patient_identifiers()
        if not named:
            return _deny(NO_PATIENT_CONTEXT, "the query names no patient by an ID with its issuer")
        if not named & study.patient_identifiers():
            return _deny(NO_PATIENT_MATCH, "the query names a different patient")
    return _relationship(region, node, peer, study, shares, now)


def _relationship(
    region: Region,
    node: str,
    peer: str,
    study: StudyFacts,
    shares: Iterable[ShareGrant | tuple[str, str]],
    now: datetime,
) -> AccessDecision:
    """Step 4: any one relationship between the peer and the producer allows."""
    producer = study.producer.strip() or node
    if producer == peer:
        return AccessDecision(True, OWN_STUDY, f"peer institution {peer} produced the study")
    common = region.common_alliances(peer, producer, now.date())
    if common:
        return AccessDecision(True, ALLIANCE, f"{peer} and {producer} are members of {common[0].id}")
    if region.share_within_region:
        first, second = region.institution(peer), region.institution(producer)
        if first is not None and second is not None and first.in_scope and second.in_scope:
            return AccessDecision(True, REGION_SHARING, f"{peer} and {producer} are both in {region.label}")
    for share in shares:
        if isinstance(share, ShareGrant):
            if share.study_uid == study.study_uid and share.institution == peer and share.active_at(now):
                return AccessDecision(True, CONSULTATION_SHARE, f"the study is shared with {peer} for consultation")
        elif tuple(share) == (study.study_uid, peer):
            return AccessDecision(True, CONSULTATION_SHARE, f"the study is shared with {peer} for consultation")
    return _deny(NO_RELATIONSHIP, f"{peer} has no alliance, region rule or share with producer {producer}")


def _deny(reason: str, detail: str) -> AccessDecision:
    return AccessDecision(False, reason, detail)
