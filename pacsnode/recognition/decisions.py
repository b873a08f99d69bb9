"""The physician's decision on an external result, and the rules its record must follow.

The physician's judgement is the standard (national Measures): the system advises, the
physician decides, and the record must be complete enough to be a medical-record entry.
A decline needs coded reasons and the informed party's consent (Guizhou plan); accepting
against the advice needs a note saying why.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

from pacsnode.errors import RecognitionError
from pacsnode.recognition.advice import Advice
from pacsnode.recognition.reasons import EMERGENCY, REASON_CODES, normalise_reason, normalise_reasons

__all__ = ["DECISIONS", "CONSENTS", "INFORMED_HOW", "INFORMED_PARTIES", "NOTE_MAX_CHARS", "REASON_CODES", "DecisionInput",
           "hidden_character", "normalise_reason", "normalise_reasons", "validate_decision"]

DECISIONS: tuple[str, ...] = ("accept", "decline")
CONSENTS: tuple[str, ...] = ("given", "refused", "not-obtainable")
INFORMED_PARTIES: tuple[str, ...] = ("patient", "family", "guardian")
INFORMED_HOW: tuple[str, ...] = ("signature", "e-sign", "verbal-witnessed")  # RECOGNITION.md: how informed
NOTE_MAX_CHARS = 200


@dataclass(frozen=True)
class DecisionInput:
    """What a physician submits for one study. Values are compared case-insensitively and
    trimmed; ``consent`` also accepts ``not_obtainable``. ``reason_codes`` take codes (N4) or
    aliases (emergency)."""

    decision: str
    physician: str
    reason_codes: tuple[str, ...] = ()
    consent: str = ""
    informed_party: str = ""
    note: str = ""
    study_uid: str = ""
    institution: str = ""
    informed_how: str = ""  # signature, e-sign or verbal-witnessed; optional, kept with the decision


def validate_decision(
    decision: DecisionInput, advice: Advice | None, reason_codes: Mapping[str, str] = REASON_CODES
) -> None:
    """Raise :class:`RecognitionError` with the fix when the record breaks a rule.

    - ``decision`` is accept or decline; ``physician`` is named; ``note`` <= 200 characters.
    - decline: at least one known reason; ``consent`` given, refused or not-obtainable, the
      last only with the emergency reason N4; ``informed_party`` patient, family or guardian.
    - accept: no reasons and no consent (they belong to a decline); a note when the advice
      was not HR_ELIGIBLE, or when no advice was shown (``advice`` None).

    ``reason_codes`` is the region's list (``Region.reason_codes``) when it adds local codes.
    """
    kind = _word(decision.decision)
    if kind not in DECISIONS:
        raise RecognitionError(f"decision {decision.decision!r} is not valid; use accept or decline",
                               "decision_invalid")
    if not decision.physician.strip():
        raise RecognitionError("the deciding physician is missing; give the physician's name", "physician_missing")
    if len(decision.note.strip()) > NOTE_MAX_CHARS:
        raise RecognitionError(
            f"the note has {len(decision.note.strip())} characters; shorten it to {NOTE_MAX_CHARS} or fewer",
            "note_too_long"
        )
    if any(hidden_character(c) for c in decision.note):
        raise RecognitionError("the note has control or text-direction characters; type it again as plain text",
                               "note_control")
    if kind == "decline":
        _check_decline(decision, reason_codes)
        return
    if decision.reason_codes:
        raise RecognitionError("reason codes are recorded for a decline only; remove them or decline",
                               "reasons_on_accept")
    if decision.consent.strip() or decision.informed_party.strip() or decision.informed_how.strip():
        raise RecognitionError("consent is recorded for a decline (re-examination) only; remove it or decline",
                               "consent_on_accept")
    if (advice is None or not advice.eligible) and not decision.note.strip():
        shown = "no advice was shown" if advice is None else f"the advice was {advice.status}"
        raise RecognitionError(f"accepting when {shown} needs a note saying why; add a note", "accept_needs_note")


def _check_decline(decision: DecisionInput, reason_codes: Mapping[str, str]) -> None:
    if not decision.reason_codes:
        raise RecognitionError(
            f"a decline needs at least one reason code; use one of {', '.join(reason_codes)}", "decline_needs_reason"
        )
    codes = normalise_reasons(decision.reason_codes, reason_codes)
    consent = _word(decision.consent).replace("_", "-")
    if consent not in CONSENTS:
        raise RecognitionError(
            f"consent {decision.consent!r} is not valid for a decline; use one of {', '.join(CONSENTS)}",
            "consent_invalid"
        )
    if consent == "not-obtainable" and EMERGENCY not in codes:
        raise RecognitionError(
            "consent may be not-obtainable only in an emergency; add reason N4 (emergency) or record given/refused",
            "not_obtainable_needs_n4"
        )
    if _word(decision.informed_party) not in INFORMED_PARTIES:
        raise RecognitionError(
            f"informed party {decision.informed_party!r} is not valid; use one of {', '.join(INFORMED_PARTIES)}",
            "informed_invalid"
        )
    if decision.informed_how.strip() and _word(decision.informed_how) not in INFORMED_HOW:
        raise RecognitionError(
            f"informed how {decision.informed_how!r} is not valid; use one of {', '.join(INFORMED_HOW)}",
            "informed_how_invalid"
        )


def hidden_character(char: str) -> bool:
    """A character a note must not carry: a control character (but tab and line breaks, which a
    form's text box sends) or a text-direction override that makes a record read otherwise than
    it was written, in the page, the CSV and a terminal alike."""
    return (unicodedata.category(char) == "Cc" and char not in "\t\r\n") or char in _DIRECTION_CONTROLS


_DIRECTION_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")


def _word(value: str) -> str:
    return value.strip().casefold() if isinstance(value, str) else ""
