"""The QC status of a study and the only legal ways to change it.

Pure functions: a decision in, a new decision out; no I/O and no clock (``at`` is always a
parameter), so the node can audit every transition and tests can drive it as a table.

Statuses (``QcStatus``, plain strings on the wire and in the index)::

    pending ──accept──▶ accepted ──(new instance)──▶ pending
       │  ╲                │
       │   ╲mark_needs_fix  reject / mark_needs_fix
       │    ▼              ▼
       │   needs-fix ──accept / reject──▶ ...
       └──reject──▶ rejected ──restore──▶ pending

``None`` as the current decision means "never decided" and behaves like ``pending``.
A rejected study must be restored before anything else happens to it: rejection hides it
from peers, so un-hiding it is a deliberate, audited step.

Grades (``validate_grade``): X-ray studies (DX, CR, MG, RF, XA) use the film grades
A/B/C/D = 甲/乙/丙/丁, A best; CT, MR and every other modality use 0-3 with **3 best**
(a score: higher is better, like the weighted QC score with its pass mark of 80).
The lowest grade (D, 0) means "not diagnostic": such a study cannot be accepted, it is
rejected or sent back with ``mark_needs_fix``. A study holding both CT/MR and X-ray series
is graded on the CT/MR scale.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from pacsnode.errors import PacsnodeError

if TYPE_CHECKING:
    from pacsnode.qc.study import CheckOutcome


class QcError(PacsnodeError):
    """An illegal QC transition or value (unknown grade, reason code, mixed studies)."""


class QcStatus(str, enum.Enum):
    """QC status of a study; the value is the string stored and shown."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    NEEDS_FIX = "needs-fix"


AUTO_REVIEWER = "pacsnode-qc"
NEEDS_FIX_REASON = "needs-fix"
REJECTED_FOR_QUALITY = "113001"
# DICOM CID 7011 rejection note titles (IOCM), the codes a rejection may carry.
REJECTION_REASONS: dict[str, str] = {
    "113001": "Rejected for Quality Reasons",
    "113037": "Rejected for Patient Safety Reasons",
    "113038": "Incorrect Modality Worklist Entry",
    "113039": "Data Retention Policy Expired",
}

XRAY_MODALITIES: frozenset[str] = frozenset({"DX", "CR", "MG", "RF", "XA"})
CROSS_SECTIONAL_MODALITIES: frozenset[str] = frozenset({"CT", "MR"})


@dataclass(frozen=True)
class GradeScale:
    """A grading scale: ``grades`` best first; ``not_diagnostic`` cannot be accepted."""

    name: str
    grades: tuple[str, ...]
    not_diagnostic: tuple[str, ...]
    aliases: tuple[tuple[str, str], ...] = ()

    def normalise(self, grade: str | int) -> str | None:
        """The canonical grade for ``grade`` (alias or case variant), None if not on this scale."""
        value = str(grade).strip().upper()
        value = dict(self.aliases).get(value, value)
        return value if value in self.grades else None


XRAY_SCALE = GradeScale("xray", ("A", "B", "C", "D"), ("D",),
                        aliases=(("甲", "A"), ("乙", "B"), ("丙", "C"), ("丁", "D")))
SCORE_SCALE = GradeScale("score", ("3", "2", "1", "0"), ("0",))


@dataclass(frozen=True)
class QcDecision:
    """The current QC state of a study and who put it there, when and why.

    ``grade`` is set by :func:`accept` (None for automatic acceptance); ``reason_code`` is
    a CID 7011 code for rejections or ``"needs-fix"``; ``note`` is free text for people.
    """

    status: QcStatus
    reviewer: str
    at: datetime
    grade: str | None = None
    reason_code: str = ""
    note: str = ""


def status_of(current: QcDecision | None) -> QcStatus:
    """The status of ``current``; a study never decided is pending."""
    return QcStatus.PENDING if current is None else current.status


def grade_scale(modalities: Iterable[str]) -> GradeScale:
    """The scale for a study: CT/MR wins, then X-ray, else the 0-3 score scale."""
    present = {m.upper() for m in modalities}
    if present & CROSS_SECTIONAL_MODALITIES or not present & XRAY_MODALITIES:
        return SCORE_SCALE
    return XRAY_SCALE


def validate_grade(modalities: Iterable[str], grade: str | int) -> str:
    """Return the canonical grade for a study of ``modalities``; raise QcError if invalid.

    Aliases are accepted (甲/乙/丙/丁, lower case, ints for the score scale).
    """
    present = tuple(modalities)
    scale = grade_scale(present)
    canonical = scale.normalise(grade)
    if canonical is None:
        raise QcError(f"grade {grade!r} is not on the {scale.name} scale for "
                      f"{'/'.join(sorted(set(present))) or 'this study'}; use one of "
                      f"{', '.join(scale.grades)} (best first)")
    return canonical


def _require(current: QcDecision | None, action: str, allowed: Sequence[QcStatus]) -> None:
    status = status_of(current)
    if status not in allowed:
        hint = " (restore it first)" if status is QcStatus.REJECTED else ""
        raise QcError(f"cannot {action} a study that is {status.value}{hint}")


def _require_reviewer(reviewer: str) -> str:
    if not reviewer.strip():
        raise QcError("a reviewer is required for a manual QC decision")
    return reviewer.strip()


def accept(current: QcDecision | None, *, grade: str | int, reviewer: str, at: datetime,
           modalities: Iterable[str] | None = None, note: str = "") -> QcDecision:
    """Accept a pending, needs-fix or already accepted (re-grade) study with a grade.

    With ``modalities`` the grade must be on that study's scale; without, on either scale.
    A not-diagnostic grade (D, 0) is refused: reject the study or mark it needs-fix.
    """
    _require(current, "accept", (QcStatus.PENDING, QcStatus.NEEDS_FIX, QcStatus.ACCEPTED))
    if modalities is not None:
        scale = grade_scale(modalities)
    else:
        scale = XRAY_SCALE if XRAY_SCALE.normalise(grade) else SCORE_SCALE
    canonical = scale.normalise(grade)
    if canonical is None:
        raise QcError(f"grade {grade!r} is not on the {scale.name} scale; use one of "
                      f"{', '.join(scale.grades)} (best first)")
    if canonical in scale.not_diagnostic:
        raise QcError(f"grade {canonical} means not diagnostic: reject the study or mark it needs-fix")
    return QcDecision(QcStatus.ACCEPTED, _require_reviewer(reviewer), at, grade=canonical, note=note)


def reject(current: QcDecision | None, *, reviewer: str, at: datetime,
           reason_code: str = REJECTED_FOR_QUALITY, note: str = "") -> QcDecision:
    """Reject a study with a CID 7011 reason (default 113001, quality); hides it from peers.

    ``reason_code="needs-fix"`` is a softer rejection: the study goes to needs-fix instead
    (same as :func:`mark_needs_fix`, and like it needs a note saying what to fix).
    """
    if reason_code == NEEDS_FIX_REASON:
        return mark_needs_fix(current, reviewer=reviewer, at=at, note=note)
    if reason_code not in REJECTION_REASONS:
        raise QcError(f"unknown rejection reason {reason_code!r}; use one of "
                      f"{', '.join(REJECTION_REASONS)} or {NEEDS_FIX_REASON}")
    _require(current, "reject", (QcStatus.PENDING, QcStatus.NEEDS_FIX, QcStatus.ACCEPTED))
    return QcDecision(QcStatus.REJECTED, _require_reviewer(reviewer), at,
                      reason_code=reason_code, note=note or REJECTION_REASONS[reason_code])


def mark_needs_fix(current: QcDecision | None, *, reviewer: str, at: datetime, note: str) -> QcDecision:
    """Send a study back to the producing department; ``note`` says what to fix."""
    _require(current, "mark needs-fix", (QcStatus.PENDING, QcStatus.ACCEPTED, QcStatus.NEEDS_FIX))
    if not note.strip():
        raise QcError("say what needs fixing: a note is required")
    return QcDecision(QcStatus.NEEDS_FIX, _require_reviewer(reviewer), at,
                      reason_code=NEEDS_FIX_REASON, note=note.strip())


def restore(current: QcDecision | None, *, reviewer: str, at: datetime, note: str = "") -> QcDecision:
    """Undo a rejection: the study is pending again and must be reviewed anew."""
    _require(current, "restore", (QcStatus.REJECTED,))
    return QcDecision(QcStatus.PENDING, _require_reviewer(reviewer), at, note=note or "restored")


def on_new_instance(current: QcDecision | None, *, at: datetime | None = None) -> QcDecision | None:
    """A new instance arrived in the study: an acceptance no longer covers it.

    accepted -> pending (grade cleared, the old grade kept in the note); every other state
    is returned unchanged (a rejected study stays hidden, needs-fix keeps its note).
    """
    if current is None or current.status is not QcStatus.ACCEPTED:
        return current
    previous = f" (was grade {current.grade})" if current.grade else ""
    return QcDecision(QcStatus.PENDING, AUTO_REVIEWER, at or current.at,
                      note=f"new instance arrived after acceptance{previous}")


def auto_status(outcomes: Sequence[CheckOutcome], auto_accept: bool) -> QcStatus:
    """Status the checks alone justify: needs-fix on any failed "fail" check, else
    accepted when the node auto-accepts, else pending (a person reviews). Warnings never
    block acceptance; they are shown to the reviewer."""
    if any(not o.passed and o.severity == "fail" for o in outcomes):
        return QcStatus.NEEDS_FIX
    return QcStatus.ACCEPTED if auto_accept else QcStatus.PENDING


def auto_decision(current: QcDecision | None, outcomes: Sequence[CheckOutcome], *,
                  auto_accept: bool, at: datetime) -> QcDecision:
    """Apply :func:`auto_status` unless a person has decided: a human acceptance,
    rejection or needs-fix is never overridden by a re-run of the checks.

    Returns ``current`` unchanged when it must not move.
    """
    if current is not None:
        if current.status is QcStatus.REJECTED:
            return current
        if current.reviewer != AUTO_REVIEWER and current.status is not QcStatus.PENDING:
            return current
    status = auto_status(outcomes, auto_accept)
    failing = sorted({o.code for o in outcomes if not o.passed and o.severity == "fail"})
    note = f"failed checks: {', '.join(failing)}" if failing else "all required checks passed"
    decision = QcDecision(status, AUTO_REVIEWER, at,
                          reason_code=NEEDS_FIX_REASON if status is QcStatus.NEEDS_FIX else "", note=note)
    if current is not None and (current.status, current.note) == (decision.status, decision.note):
        return current
    return decision


__all__ = [
    "AUTO_REVIEWER", "NEEDS_FIX_REASON", "REJECTED_FOR_QUALITY", "REJECTION_REASONS",
    "SCORE_SCALE", "XRAY_SCALE", "GradeScale", "QcDecision", "QcError", "QcStatus",
    "accept", "auto_decision", "auto_status", "grade_scale", "mark_needs_fix", "on_new_instance",
    "reject", "restore", "status_of", "validate_grade",
]
