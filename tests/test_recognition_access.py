"""decide_access as a table: one row per rule of DESIGN.md 5 (may peer X see study S?)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime
from typing import Any

import pytest

from pacsnode.recognition import (
    ALLOW_REASONS,
    Alliance,
    AllianceMember,
    Institution,
    QueryContext,
    Region,
    ShareGrant,
    StudyFacts,
    decide_access,
)

D = date
NOW = datetime(2026, 6, 15, 12, 0)
NODE = "PRV001"  # this node belongs to the provincial hospital
MRN = ("P123", "PRV001-MRN")
RESIDENT = ("520101199001011234", "CN-RESIDENT-ID")


def _inst(code: str, level: str, in_scope: bool = True) -> Institution:
    return Institution(code=code, name=f"{code} hospital", level=level, in_scope=in_scope)


REGION = Region(
    label="黔HR",
    institutions=(
        _inst("PRV001", "3A"),
        _inst("PRV002", "3B"),  # in scope, in no alliance
        _inst("CTY001", "2A"),
        _inst("CTY002", "2A"),  # left the city group at the end of 2025
        _inst("TWN001", "1"),
        _inst("TWN002", "1"),  # joins the county community on 2026-07-01
        _inst("PVT001", "unrated", in_scope=False),
    ),
    alliances=(
        Alliance(
            "QZ-CMG", "city group", "city-medical-group",
            members=(
                AllianceMember("PRV001", D(2024, 1, 1)),
                AllianceMember("CTY001", D(2024, 1, 1)),
                AllianceMember("TWN001", D(2024, 1, 1)),
                AllianceMember("CTY002", D(2024, 1, 1), D(2025, 12, 31)),
            ),
        ),
        Alliance(
            "AP-CMC", "county community", "county-medical-community", recognize_all_items=True,
            members=(
                AllianceMember("CTY001", D(2024, 1, 1)),
                AllianceMember("TWN001", D(2024, 1, 1)),
                AllianceMember("TWN002", D(2026, 7, 1)),
            ),
        ),
    ),
)

SHARE = ShareGrant("1.2.3", "PVT001", starts_at=datetime(2026, 6, 1), expires_at=datetime(2026, 7, 1))


def _study(**changes: Any) -> StudyFacts:
    base = StudyFacts(
        study_uid="1.2.3", study_date=D(2026, 6, 1), modalities=("CT",), producer="PRV001", qc_status="accepted",
        patient_id=MRN[0], issuer_of_patient_id=MRN[1], other_patient_ids=(RESIDENT,),
    )
    return replace(base, **changes)


BY_MRN = QueryContext(patient_id=MRN[0], issuer_of_patient_id=MRN[1])
BY_RESIDENT = QueryContext(other_patient_ids=(RESIDENT,))
NOBODY = QueryContext()

CASES = [
    # --- 0. local peers -------------------------------------------------------------------------
    pytest.param(dict(peer="PRV001", context=NOBODY), "local", id="local-peer-needs-no-patient-context"),
    pytest.param(dict(peer="HOSP9", node="HOSP9", context=NOBODY), "local", id="local-peer-even-if-not-in-region"),
    pytest.param(dict(peer="PRV001", study=_study(qc_status="rejected")), "local", id="local-peer-sees-rejected-study"),
    pytest.param(dict(peer="PRV001", study=_study(restricted=True)), "local", id="local-peer-sees-restricted-study"),
    # --- 1. unknown peers ----------------------------------------------------------------------
    pytest.param(dict(peer="PRV001", registered=False), "unknown_peer", id="unregistered-peer-claiming-local-denied"),
    pytest.param(dict(peer="CTY001", registered=False), "unknown_peer", id="unregistered-peer-denied"),
    pytest.param(dict(peer=None), "unknown_peer", id="registered-peer-without-institution-denied"),
    pytest.param(dict(peer="XYZ999"), "unknown_peer", id="peer-institution-not-in-region-denied"),
    # --- 2. unavailable studies ----------------------------------------------------------------
    pytest.param(dict(study=_study(qc_status="rejected")), "unavailable", id="rejected-study-unavailable"),
    pytest.param(dict(study=_study(restricted=True)), "unavailable", id="restricted-study-unavailable"),
    pytest.param(dict(study=_study(qc_status="needs-fix")), "alliance", id="needs-fix-study-still-available"),
    pytest.param(dict(study=_study(qc_status="rejected"), shares=[SHARE], peer="PVT001"), "unavailable",
                 id="share-does-not-reveal-rejected-study"),
    # --- 3. patient context --------------------------------------------------------------------
    pytest.param(dict(context=NOBODY), "no_patient_context", id="query-naming-nobody-denied"),
    pytest.param(dict(context=QueryContext(patient_id="P123")), "no_patient_context", id="local-id-without-issuer-is-no-context"),
    pytest.param(dict(context=QueryContext(patient_id="P*", issuer_of_patient_id=MRN[1])), "no_patient_context",
                 id="wildcard-id-is-browsing-not-context"),
    pytest.param(dict(context=QueryContext(patient_id="  ", issuer_of_patient_id=MRN[1])), "no_patient_context",
                 id="blank-id-is-no-context"),
    pytest.param(dict(context=QueryContext(patient_id=MRN[0], issuer_of_patient_id="CTY001-MRN")), "no_patient_match",
                 id="local-id-with-wrong-issuer-does-not-match"),
    pytest.param(dict(context=QueryContext(patient_id="P999", issuer_of_patient_id=MRN[1])), "no_patient_match",
                 id="other-patient-local-id-does-not-match"),
    pytest.param(dict(context=QueryContext(other_patient_ids=((RESIDENT[0], "OTHER-ID"),))), "no_patient_match",
                 id="resident-id-with-wrong-issuer-does-not-match"),
    pytest.param(dict(context=QueryContext(other_patient_ids=(("520101199001019999", RESIDENT[1]),))),
                 "no_patient_match", id="other-resident-id-does-not-match"),
    pytest.param(dict(context=BY_MRN), "alliance", id="local-id-with-issuer-matches"),
    pytest.param(dict(context=QueryContext(patient_id=" P123 ", issuer_of_patient_id=" PRV001-MRN")), "alliance",
                 id="padded-local-id-matches"),
    pytest.param(dict(context=BY_RESIDENT), "alliance", id="resident-id-matches"),
    pytest.param(dict(context=QueryContext(patient_id=RESIDENT[0], issuer_of_patient_id=RESIDENT[1])), "alliance",
                 id="issuer-qualified-id-matches-whatever-the-slot"),
    pytest.param(dict(context=QueryContext(patient_id="P999", issuer_of_patient_id=MRN[1], other_patient_ids=(RESIDENT,))),
                 "alliance", id="any-named-identifier-matching-suffices"),
    pytest.param(dict(study=_study(patient_id="", issuer_of_patient_id="", other_patient_ids=())), "no_patient_match",
                 id="study-without-patient-ids-matches-nobody"),
    pytest.param(dict(context=NOBODY, region=replace(REGION, require_patient_context=False)), "alliance",
                 id="no-context-needed-when-region-does-not-require-it"),
    # --- 4. relationship: alliances ------------------------------------------------------------
    pytest.param(dict(peer="CTY001"), "alliance", id="city-group-member-reads-provincial-study"),
    pytest.param(dict(peer="TWN001", study=_study(producer="CTY001")), "alliance", id="county-community-member-reads-county-study"),
    pytest.param(dict(peer="PVT001"), "no_relationship", id="institution-in-no-alliance-denied"),
    pytest.param(dict(peer="CTY002"), "no_relationship", id="member-who-left-denied"),
    pytest.param(dict(peer="CTY002", now=datetime(2025, 12, 31, 23, 59)), "alliance", id="membership-valid-on-its-last-day"),
    pytest.param(dict(peer="TWN002", study=_study(producer="CTY001")), "no_relationship", id="member-not-yet-joined-denied"),
    pytest.param(dict(peer="TWN002", study=_study(producer="CTY001"), now=datetime(2026, 7, 1, 0, 0)), "alliance",
                 id="membership-valid-from-its-first-day"),
    pytest.param(dict(peer="PVT001", study=_study(producer="PVT001")), "own_study", id="peer-reads-study-it-produced"),
    pytest.param(dict(peer="CTY001", study=_study(producer="")), "alliance", id="unknown-producer-counts-as-node-institution"),
    pytest.param(dict(peer="PVT001", study=_study(producer="")), "no_relationship", id="unknown-producer-no-relationship-for-outsider"),
    pytest.param(dict(peer="CTY001", study=_study(producer="PVT001")), "no_relationship", id="alliance-member-cannot-read-outsider-study"),
    # --- 4. relationship: region-wide sharing --------------------------------------------------
    pytest.param(dict(peer="PRV002"), "no_relationship", id="same-region-without-sharing-denied"),
    pytest.param(dict(peer="PRV002", region=replace(REGION, share_within_region=True)), "region_sharing",
                 id="region-sharing-allows-in-scope-institutions"),
    pytest.param(dict(peer="PVT001", region=replace(REGION, share_within_region=True)), "no_relationship",
                 id="region-sharing-excludes-out-of-scope-peer"),
    pytest.param(dict(peer="PRV002", study=_study(producer="PVT001"), region=replace(REGION, share_within_region=True)),
                 "no_relationship", id="region-sharing-excludes-out-of-scope-producer"),
    # --- 4. relationship: consultation shares --------------------------------------------------
    pytest.param(dict(peer="PVT001", shares=[SHARE]), "consultation_share", id="active-share-allows"),
    pytest.param(dict(peer="PVT001", shares=[("1.2.3", "PVT001")]), "consultation_share", id="plain-pair-share-allows"),
    pytest.param(dict(peer="PVT001", shares=[ShareGrant("1.2.3", "PVT001")]), "consultation_share", id="open-ended-share-allows"),
    pytest.param(dict(peer="PVT001", shares=[SHARE], now=datetime(2026, 7, 1)), "no_relationship", id="share-expired-at-its-end"),
    pytest.param(dict(peer="PVT001", shares=[SHARE], now=datetime(2026, 5, 31)), "no_relationship", id="share-not-yet-started"),
    pytest.param(dict(peer="PVT001", shares=[replace(SHARE, revoked=True)]), "no_relationship", id="revoked-share-denied"),
    pytest.param(dict(peer="PVT001", shares=[replace(SHARE, study_uid="9.9")]), "no_relationship", id="share-of-another-study-denied"),
    pytest.param(dict(peer="PVT001", shares=[replace(SHARE, institution="PRV002")]), "no_relationship",
                 id="share-with-another-institution-denied"),
    pytest.param(dict(peer="PVT001", shares=[SHARE], context=QueryContext(patient_id="P999", issuer_of_patient_id=MRN[1])),
                 "no_patient_match", id="share-does-not-skip-patient-context"),
]


@pytest.mark.parametrize(("call", "reason"), CASES)
def test_decide_access(call: dict[str, Any], reason: str) -> None:
    decision = decide_access(
        call.get("region", REGION),
        call.get("node", NODE),
        call.get("peer", "CTY001"),
        call.get("registered", True),
        call.get("study", _study()),
        call.get("context", BY_MRN),
        call.get("shares", ()),
        call.get("now", NOW),
    )
    assert (decision.reason, decision.allowed) == (reason, reason in ALLOW_REASONS)
    assert decision.detail


def test_detail_never_contains_patient_identifiers() -> None:
    for context in (BY_MRN, BY_RESIDENT, QueryContext(patient_id="P999", issuer_of_patient_id=MRN[1])):
        decision = decide_access(REGION, NODE, "PVT001", True, _study(), context, (), NOW)
        assert MRN[0] not in decision.detail and RESIDENT[0] not in decision.detail and "P999" not in decision.detail
