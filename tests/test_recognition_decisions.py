"""validate_decision: the rules a physician's accept/decline record must follow."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from pacsnode.errors import RecognitionError
from pacsnode.recognition import (
    HR_ELIGIBLE,
    NOT_ELIGIBLE,
    REASON_CODES,
    Advice,
    DecisionInput,
    normalise_reason,
    normalise_reasons,
    validate_decision,
)

ELIGIBLE = Advice(HR_ELIGIBLE, (), "CT-CHEST-PLAIN", "黔HR", date(2026, 7, 1), ())
NOT_OK = Advice(NOT_ELIGIBLE, ("outside_window",), "CT-CHEST-PLAIN", "黔HR", date(2026, 5, 1), ())
ACCEPT = DecisionInput("accept", "Dr Wang")
DECLINE = DecisionInput("decline", "Dr Wang", ("N1",), consent="given", informed_party="patient")

VALID = [
    pytest.param(ACCEPT, ELIGIBLE, id="accept-eligible-without-note"),
    pytest.param(replace(ACCEPT, decision=" ACCEPT "), ELIGIBLE, id="decision-case-and-spaces-ignored"),
    pytest.param(replace(ACCEPT, note="images fine, clinical picture unchanged"), NOT_OK, id="accept-not-eligible-with-note"),
    pytest.param(replace(ACCEPT, note="reviewed"), None, id="accept-without-advice-with-note"),
    pytest.param(DECLINE, ELIGIBLE, id="decline-with-reason-consent-and-party"),
    pytest.param(replace(DECLINE, reason_codes=("condition-changed", "poor_quality", "q1")), NOT_OK, id="aliases-and-lower-case-codes"),
    pytest.param(replace(DECLINE, reason_codes=("emergency",), consent="not-obtainable", informed_party="family"), None,
                 id="emergency-allows-not-obtainable"),
    pytest.param(replace(DECLINE, reason_codes=("N4", "N1"), consent="NOT_OBTAINABLE", informed_party="guardian"), ELIGIBLE,
                 id="not-obtainable-underscore-spelling"),
    pytest.param(replace(DECLINE, consent="refused"), ELIGIBLE, id="refused-consent-recorded"),
    pytest.param(replace(DECLINE, note="x" * 200), ELIGIBLE, id="note-of-200-characters"),
    pytest.param(replace(DECLINE, note="长" * 200), ELIGIBLE, id="note-counts-characters-not-bytes"),
]


@pytest.mark.parametrize(("decision", "advice"), VALID)
def test_valid_decisions(decision: DecisionInput, advice: Advice | None) -> None:
    validate_decision(decision, advice)


INVALID = [
    pytest.param(replace(ACCEPT, decision="maybe"), ELIGIBLE, "use accept or decline", id="unknown-decision"),
    pytest.param(replace(ACCEPT, physician="  "), ELIGIBLE, "physician is missing", id="physician-required"),
    pytest.param(replace(ACCEPT, note="x" * 201), ELIGIBLE, "201 characters; shorten it to 200", id="note-too-long"),
    pytest.param(ACCEPT, NOT_OK, "accepting when the advice was NOT_ELIGIBLE needs a note", id="accept-not-eligible-needs-note"),
    pytest.param(replace(ACCEPT, note="   "), NOT_OK, "needs a note", id="blank-note-is-no-note"),
    pytest.param(ACCEPT, None, "accepting when no advice was shown needs a note", id="accept-without-advice-needs-note"),
    pytest.param(replace(ACCEPT, reason_codes=("N1",)), ELIGIBLE, "reason codes are recorded for a decline only",
                 id="accept-with-reasons"),
    pytest.param(replace(ACCEPT, consent="given"), ELIGIBLE, "consent is recorded for a decline", id="accept-with-consent"),
    pytest.param(replace(DECLINE, reason_codes=()), ELIGIBLE, "a decline needs at least one reason code; use one of N1",
                 id="decline-without-reason"),
    pytest.param(replace(DECLINE, reason_codes=("N7",)), ELIGIBLE, "reason 'N7' is not a reason code", id="unknown-reason-code"),
    pytest.param(replace(DECLINE, consent=""), ELIGIBLE, "consent '' is not valid for a decline; use one of given", id="decline-without-consent"),
    pytest.param(replace(DECLINE, consent="verbal"), ELIGIBLE, "consent 'verbal' is not valid", id="bad-consent"),
    pytest.param(replace(DECLINE, consent="not-obtainable"), ELIGIBLE, "not-obtainable only in an emergency; add reason N4",
                 id="not-obtainable-without-emergency"),
    pytest.param(replace(DECLINE, informed_party=""), ELIGIBLE, "informed party '' is not valid", id="decline-without-informed-party"),
    pytest.param(replace(DECLINE, informed_party="neighbour"), ELIGIBLE, "use one of patient, family, guardian", id="bad-informed-party"),
]


@pytest.mark.parametrize(("decision", "advice", "message"), INVALID)
def test_invalid_decisions(decision: DecisionInput, advice: Advice | None, message: str) -> None:
    with pytest.raises(RecognitionError, match=None) as caught:
        validate_decision(decision, advice)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("given", "code"),
    [("N1", "N1"), ("n4", "N4"), (" x1 ", "X1"), ("condition-changed", "N1"), ("Emergency", "N4"), ("outdated", "T1"),
     ("poor quality", "Q1"), ("patient_request", "P1"), ("other", "N6")],
)
def test_normalise_reason(given: str, code: str) -> None:
    assert normalise_reason(given) == code


def test_reason_codes_are_the_documented_set() -> None:
    expected = {f"N{i}" for i in range(1, 7)} | {f"P{i}" for i in range(1, 5)} | {"L1", "T1", "Q1", "B1", "X1"}
    assert set(REASON_CODES) == expected


def test_local_reason_codes_extend_the_list() -> None:
    codes = {**REASON_CODES, "Z1": "Local protocol"}
    assert normalise_reasons(("z1", "N1", "condition-changed"), codes) == ("Z1", "N1")
    validate_decision(replace(DECLINE, reason_codes=("Z1",)), ELIGIBLE, codes)
    with pytest.raises(RecognitionError):
        validate_decision(replace(DECLINE, reason_codes=("Z1",)), ELIGIBLE)
