"""Mutual recognition of examination results: pure rules (facts in, decision out).

No I/O except :func:`load_region`, no clock (``now`` is a parameter), no database, no
network: the service layer gathers facts and passes them in, so every rule is testable as a
table. See DESIGN.md sections 4-5 and RECOGNITION.md.
"""

from __future__ import annotations

from pacsnode.recognition.access import ALLOW_REASONS, DENY_REASONS, AccessDecision, decide_access
from pacsnode.recognition.advice import (
    CONDITION_CODES,
    HR_ELIGIBLE,
    SUGGESTED_REASON,
    TIME_RULE,
    NOT_ELIGIBLE,
    Advice,
    Condition,
    recognition_advice,
)
from pacsnode.recognition.catalog import resolve_institution, resolve_item
from pacsnode.recognition.decisions import DecisionInput, validate_decision
from pacsnode.recognition.facts import QueryContext, ShareGrant, StudyFacts
from pacsnode.recognition.reasons import REASON_ALIASES, REASON_CODES, normalise_reason, normalise_reasons
from pacsnode.recognition.region import (
    LEVELS,
    Alliance,
    AllianceMember,
    ExamItem,
    Institution,
    Qualification,
    Region,
    geo_level,
    geo_within,
    load_region,
    parse_region,
    rank,
    tier,
)

__all__ = [
    "ALLOW_REASONS", "CONDITION_CODES", "DENY_REASONS", "HR_ELIGIBLE", "LEVELS", "NOT_ELIGIBLE", "REASON_ALIASES",
    "REASON_CODES", "SUGGESTED_REASON", "TIME_RULE", "AccessDecision", "Advice", "Alliance", "AllianceMember", "Condition", "DecisionInput",
    "ExamItem", "Institution", "Qualification", "QueryContext", "Region", "ShareGrant", "StudyFacts",
    "decide_access", "geo_level", "geo_within", "load_region", "normalise_reason", "normalise_reasons", "parse_region", "rank",
    "recognition_advice", "resolve_institution", "resolve_item", "tier", "validate_decision",
]
