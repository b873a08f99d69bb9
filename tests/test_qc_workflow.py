"""The QC status workflow: legal transitions, illegal ones, grades and automatic status."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from pacsnode.errors import PacsnodeError
from pacsnode.qc.checks import CheckOutcome
from pacsnode.qc.workflow import (
    AUTO_REVIEWER,
    QcDecision,
    QcError,
    QcStatus,
    accept,
    auto_decision,
    auto_status,
    grade_scale,
    mark_needs_fix,
    on_new_instance,
    reject,
    restore,
    status_of,
    validate_grade,
)

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=timezone(timedelta(hours=8)))
T1 = T0 + timedelta(hours=1)


def pending() -> QcDecision:
    return QcDecision(QcStatus.PENDING, AUTO_REVIEWER, T0)


def accepted(grade: str = "A") -> QcDecision:
    return accept(None, grade=grade, reviewer="dr.li", at=T0, modalities=["DX"])


def rejected() -> QcDecision:
    return reject(None, reviewer="dr.li", at=T0)


def test_status_strings_are_stable() -> None:
    assert [s.value for s in QcStatus] == ["pending", "accepted", "rejected", "needs-fix"]
    assert QcStatus.NEEDS_FIX == "needs-fix"
    assert status_of(None) is QcStatus.PENDING


def test_qc_error_is_a_pacsnode_error() -> None:
    assert issubclass(QcError, PacsnodeError)


def test_accept_records_grade_reviewer_and_time() -> None:
    decision = accept(pending(), grade="b", reviewer=" dr.li ", at=T1, modalities=["CR"], note="ok")
    assert decision == QcDecision(QcStatus.ACCEPTED, "dr.li", T1, grade="B", note="ok")


def test_new_instance_sends_an_accepted_study_back_to_pending() -> None:
    decision = on_new_instance(accepted("B"), at=T1)
    assert decision is not None
    assert decision.status is QcStatus.PENDING and decision.grade is None and decision.at == T1
    assert "grade B" in decision.note


@pytest.mark.parametrize("current", [None, pending(), rejected(),
                                     mark_needs_fix(None, reviewer="dr.li", at=T0, note="no L/R marker")])
def test_new_instance_leaves_other_states_alone(current: QcDecision | None) -> None:
    assert on_new_instance(current, at=T1) is current


def test_reject_then_restore_then_accept() -> None:
    decision = reject(accepted(), reviewer="dr.wang", at=T1, note="motion artefact")
    assert decision.status is QcStatus.REJECTED and decision.reason_code == "113001"
    decision = restore(decision, reviewer="dr.wang", at=T1)
    assert decision.status is QcStatus.PENDING
    assert accept(decision, grade="A", reviewer="dr.wang", at=T1, modalities=["DX"]).status is QcStatus.ACCEPTED


@pytest.mark.parametrize("code", ["113001", "113037", "113038", "113039"])
def test_reject_takes_dicom_rejection_codes(code: str) -> None:
    decision = reject(pending(), reviewer="dr.li", at=T1, reason_code=code)
    assert (decision.status, decision.reason_code) == (QcStatus.REJECTED, code)
    assert decision.note  # the code's meaning when no note is given


def test_reject_with_needs_fix_reason_sends_back_for_fixing() -> None:
    decision = reject(pending(), reviewer="dr.li", at=T1, reason_code="needs-fix", note="wrong side marker")
    assert (decision.status, decision.reason_code) == (QcStatus.NEEDS_FIX, "needs-fix")
    with pytest.raises(QcError, match="note"):
        reject(pending(), reviewer="dr.li", at=T1, reason_code="needs-fix")


def test_unknown_rejection_code_is_refused() -> None:
    with pytest.raises(QcError, match="113001"):
        reject(pending(), reviewer="dr.li", at=T1, reason_code="999999")


def test_needs_fix_can_be_accepted_after_the_fix() -> None:
    decision = mark_needs_fix(pending(), reviewer="dr.li", at=T0, note="exam number missing on film")
    assert decision.status is QcStatus.NEEDS_FIX
    assert accept(decision, grade=2, reviewer="dr.li", at=T1, modalities=["CT"]).grade == "2"


@pytest.mark.parametrize(("action", "current"), [
    ("accept", rejected()),
    ("reject", rejected()),
    ("needs-fix", rejected()),
    ("restore", None),
    ("restore", pending()),
    ("restore", accepted()),
])
def test_illegal_transitions_raise(action: str, current: QcDecision | None) -> None:
    with pytest.raises(QcError, match="cannot"):
        if action == "accept":
            accept(current, grade="A", reviewer="dr.li", at=T1, modalities=["DX"])
        elif action == "reject":
            reject(current, reviewer="dr.li", at=T1)
        elif action == "needs-fix":
            mark_needs_fix(current, reviewer="dr.li", at=T1, note="x")
        else:
            restore(current, reviewer="dr.li", at=T1)


def test_rejected_study_message_says_restore_first() -> None:
    with pytest.raises(QcError, match="restore it first"):
        accept(rejected(), grade="A", reviewer="dr.li", at=T1)


def test_manual_decisions_need_a_reviewer() -> None:
    with pytest.raises(QcError, match="reviewer"):
        accept(pending(), grade="A", reviewer="  ", at=T1)


def test_needs_fix_needs_a_note() -> None:
    with pytest.raises(QcError, match="note"):
        mark_needs_fix(pending(), reviewer="dr.li", at=T1, note=" ")


# --- grades ----------------------------------------------------------------------------

@pytest.mark.parametrize(("modalities", "grade", "expected"), [
    (["DX"], "A", "A"), (["CR"], "d", "D"), (["MG"], "甲", "A"), (["RF"], "丙", "C"), (["XA"], "乙", "B"),
    (["CT"], "3", "3"), (["MR"], 0, "0"), (["CT", "DX"], 2, "2"), (["US"], "1", "1"),
])
def test_validate_grade_by_modality(modalities: list[str], grade: str | int, expected: str) -> None:
    assert validate_grade(modalities, grade) == expected


@pytest.mark.parametrize(("modalities", "grade"), [(["DX"], "3"), (["CT"], "A"), (["MR"], "4"), (["DX"], "E")])
def test_grade_off_the_scale_is_refused(modalities: list[str], grade: str) -> None:
    with pytest.raises(QcError, match="scale"):
        validate_grade(modalities, grade)


def test_scales_list_the_best_grade_first() -> None:
    assert grade_scale(["DX"]).grades[0] == "A"
    assert grade_scale(["CT"]).grades[0] == "3"


@pytest.mark.parametrize(("modalities", "grade"), [(["DX"], "D"), (["DX"], "丁"), (["CT"], "0")])
def test_not_diagnostic_grade_cannot_be_accepted(modalities: list[str], grade: str) -> None:
    with pytest.raises(QcError, match="not diagnostic"):
        accept(pending(), grade=grade, reviewer="dr.li", at=T1, modalities=modalities)


def test_accept_without_modalities_accepts_either_scale() -> None:
    assert accept(None, grade="丙", reviewer="dr.li", at=T1).grade == "C"
    assert accept(None, grade=3, reviewer="dr.li", at=T1).grade == "3"
    with pytest.raises(QcError):
        accept(None, grade="Z", reviewer="dr.li", at=T1)


def test_accept_with_wrong_scale_for_the_study_is_refused() -> None:
    with pytest.raises(QcError, match="scale"):
        accept(None, grade="A", reviewer="dr.li", at=T1, modalities=["CT"])


# --- automatic status --------------------------------------------------------------------

def outcome(code: str, severity: str, passed: bool) -> CheckOutcome:
    return CheckOutcome(code, severity, passed, "")  # type: ignore[arg-type]


PASSING = [outcome("QC-ID-NAME", "fail", True), outcome("QC-LOSSY", "warn", False)]
FAILING = [outcome("QC-ID-NAME", "fail", False), outcome("QC-LOSSY", "warn", True)]


@pytest.mark.parametrize(("outcomes", "auto_accept", "expected"), [
    (PASSING, True, QcStatus.ACCEPTED),
    (PASSING, False, QcStatus.PENDING),
    (FAILING, True, QcStatus.NEEDS_FIX),
    (FAILING, False, QcStatus.NEEDS_FIX),
])
def test_auto_status(outcomes: list[CheckOutcome], auto_accept: bool, expected: QcStatus) -> None:
    assert auto_status(outcomes, auto_accept) is expected


def test_auto_decision_never_overrides_a_person() -> None:
    human = accepted()
    assert auto_decision(human, FAILING, auto_accept=True, at=T1) is human
    assert auto_decision(rejected(), PASSING, auto_accept=True, at=T1).status is QcStatus.REJECTED


def test_auto_decision_moves_automatic_states_and_names_failures() -> None:
    first = auto_decision(None, FAILING, auto_accept=True, at=T0)
    assert first is not None and first.status is QcStatus.NEEDS_FIX
    assert first.reviewer == AUTO_REVIEWER and "QC-ID-NAME" in first.note
    # Re-running with the same outcomes changes nothing (no new audit event needed).
    assert auto_decision(first, FAILING, auto_accept=True, at=T1) is first
    # After the fix arrives, the automatic needs-fix clears.
    second = auto_decision(first, PASSING, auto_accept=True, at=T1)
    assert second is not None and second.status is QcStatus.ACCEPTED and second.at == T1
    # A study made pending by a new instance is re-decided.
    reopened = on_new_instance(second, at=T1)
    assert auto_decision(reopened, PASSING, auto_accept=False, at=T1).status is QcStatus.PENDING
