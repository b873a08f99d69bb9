"""Is study S recognised for viewer X now? Advice for the receiving physician, who decides.

Every condition is evaluated and listed, so the physician (and the C-FIND private block)
sees every reason at once rather than the first. A condition that cannot be checked because
a fact is missing does not hold: it is listed as failed with "cannot be checked" and the root
cause appears under its own code. So ``failed`` is exactly the codes of the conditions that
do not hold, and the advice is HR_ELIGIBLE only when that list is empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import NamedTuple

from pacsnode.recognition.catalog import resolve_item
from pacsnode.recognition.facts import StudyFacts
from pacsnode.recognition.provenance import PRODUCER_NOT_VOUCHED
from pacsnode.recognition.region import ExamItem, Institution, Region, rank, tier

HR_ELIGIBLE = "HR_ELIGIBLE"
NOT_ELIGIBLE = "NOT_ELIGIBLE"

ITEM_NOT_LISTED = "item_not_listed"
PRODUCER_UNKNOWN = "producer_unknown"
PRODUCER_NOT_QUALIFIED = "producer_not_qualified"
QC_NOT_ACCEPTED = "qc_not_accepted"
LOSSY = "lossy"
INCOMPLETE = "incomplete"  # RECOGNITION.md's name: a de-identified copy is not the whole record
NO_IMAGES = "no_images"
ITEM_MISMATCH = "item_mismatch"
NO_STUDY_DATE = "no_study_date"
OUTSIDE_WINDOW = "outside_window"
VIEWER_UNKNOWN = "viewer_unknown"
OUT_OF_SCOPE = "out_of_scope"
LEVEL_RULE = "level_rule"

#: Every condition code, in the order conditions are listed.
CONDITION_CODES: tuple[str, ...] = (
    ITEM_NOT_LISTED, ITEM_MISMATCH, NO_IMAGES, PRODUCER_UNKNOWN, PRODUCER_NOT_VOUCHED, PRODUCER_NOT_QUALIFIED,
    QC_NOT_ACCEPTED, LOSSY, INCOMPLETE, NO_STUDY_DATE, OUTSIDE_WINDOW, VIEWER_UNKNOWN, OUT_OF_SCOPE, LEVEL_RULE,
)

#: The decline reason (``reasons.REASON_CODES``) a physician would usually record when a
#: condition fails and a re-examination is ordered; conditions about the programme's rules
#: (who produced, who views, levels, scope) have none: they say "not recognised", not "redo".
SUGGESTED_REASON: dict[str, str] = {
    ITEM_NOT_LISTED: "B1", ITEM_MISMATCH: "B1", NO_IMAGES: "X1", QC_NOT_ACCEPTED: "Q1", LOSSY: "Q1",
    INCOMPLETE: "Q1", NO_STUDY_DATE: "T1", OUTSIDE_WINDOW: "T1",
}

#: How time enters the rules (issue 12.6), said once here, in ``recognition explain`` and in
#: docs/recognition.md. Seeing a study is a relationship *now*; the producer's standing is
#: judged *on the study date*.
TIME_RULE = ("access (alliance or share that lets a viewer see the study) is judged today; the producer's "
             "standing (qualification, and alliance membership for the level rule and for all-items "
             "recognition) on the study date; the validity window runs from the study date to today")

#: A study dated up to this many days after ``now`` is taken as "today": a modality writing
#: local dates seen from a node clock in UTC is a day ahead for eight hours.
FUTURE_TOLERANCE_DAYS = 1


class Condition(NamedTuple):
    """One recognition condition: its stable ``code``, whether it ``holds``, and why."""

    code: str
    holds: bool
    explanation: str


@dataclass(frozen=True)
class Advice:
    """The advice shown to a physician (and sent in the PACSNODE HR private block)."""

    status: str  # HR_ELIGIBLE | NOT_ELIGIBLE
    failed: tuple[str, ...]
    item_code: str  # "" when the study matches no catalog item
    scope_label: str
    valid_until: date | None
    conditions: tuple[Condition, ...]

    @property
    def eligible(self) -> bool:
        return self.status == HR_ELIGIBLE


def recognition_advice(region: Region, study: StudyFacts, viewer_institution: str, now: datetime) -> Advice:
    """Evaluate every condition for ``study`` seen by ``viewer_institution`` at ``now``.

    ``valid_until`` is the study date plus the item's ``valid_days`` (the last day of the
    window, inclusive), or None when the item or the date is unknown.
    """
    producer = region.institution(study.producer.strip())
    viewer = region.institution(viewer_institution.strip())
    today = now.date()
    item = resolve_item(region, study) or _alliance_item(region, study, producer, viewer, today)
    conditions = (
        _listed(item),
        _consistent(item, study),
        _images(item, study),
        _known(PRODUCER_UNKNOWN, "producer", study.producer, producer),
        Condition(PRODUCER_NOT_VOUCHED, study.producer_vouched,
                  study.provenance or ("provenance vouches for the producer" if study.producer_vouched
                                       else "no delivery vouches for the producer")),
        _qualified(region, study, item, producer),
        _qc(region, study),
        Condition(LOSSY, not study.lossy,
                  "lossy-compressed copy: original quality not guaranteed" if study.lossy else "not lossy"),
        Condition(INCOMPLETE, not study.deidentified,
                  "de-identified copy (Patient Identity Removed or a De-identification Method): not the "
                  "original record" if study.deidentified else "not a de-identified copy"),
        Condition(NO_STUDY_DATE, study.study_date is not None,
                  f"study date {study.study_date}" if study.study_date else "the study has no study date"),
        _window(study.study_date, item, today),
        _known(VIEWER_UNKNOWN, "viewer", viewer_institution, viewer),
        _scope(region, viewer),
        _level(region, producer, viewer, study.study_date, today),
    )
    failed = tuple(c.code for c in conditions if not c.holds)
    valid_until = None
    if item is not None and study.study_date is not None:
        valid_until = study.study_date + timedelta(days=item.valid_days)
    return Advice(
        status=NOT_ELIGIBLE if failed else HR_ELIGIBLE,
        failed=failed,
        item_code=item.code if item else "",
        scope_label=region.label,
        valid_until=valid_until,
        conditions=conditions,
    )


ALLIANCE_ITEM = "ALLIANCE-ALL"


def _alliance_item(region: Region, study: StudyFacts, producer: Institution | None, viewer: Institution | None,
                   today: date) -> ExamItem | None:
    """An unlisted study inside an alliance that recognises all items among its members (the
    2025 target for close alliances): a stand-in item with the region's alliance window, so
    the other conditions (qualification by modality, QC, window) still apply."""
    if producer is None or viewer is None or not study.images_of:
        return None
    alliances = [a for a in region.common_alliances(viewer.code, producer.code, study.study_date or today)
                 if a.recognize_all_items]
    if not alliances:
        return None
    return ExamItem(ALLIANCE_ITEM, f"any item within {alliances[0].id}", study.images_of,
                    valid_days=region.alliance_item_valid_days)


def _listed(item: ExamItem | None) -> Condition:
    if item is None:
        return Condition(ITEM_NOT_LISTED, False, "the study matches no catalog item")
    if not item.eligible:
        return Condition(ITEM_NOT_LISTED, False, f"catalog item {item.code} is listed as not eligible")
    return Condition(ITEM_NOT_LISTED, True, f"catalog item {item.code} ({item.name})")


def _consistent(item: ExamItem | None, study: StudyFacts) -> Condition:
    """The item (usually named by Procedure Code Sequence) and the dataset agree on what the
    catalog distinguishes: contrast, and body part. A plain item with a Contrast/Bolus Agent,
    or a chest item on head images, is not that item, whatever the code says (issue 10).

    Not contradictions: a contrast item whose images name no agent (the attribute is Type 2,
    empty is allowed), images with no Body Part Examined, an item for any body part. Modality
    is judged by ``no_images``.
    """
    if item is None:
        return Condition(ITEM_MISMATCH, False, "cannot be checked: no catalog item")
    problems = []
    if item.contrast == "plain" and study.contrast:
        problems.append(f"{item.code} is a plain item but the images have a Contrast/Bolus Agent")
    parts = set(study.image_parts)
    if item.body_parts and parts and not parts & set(item.body_parts):
        problems.append(f"{item.code} is for {'/'.join(item.body_parts)} but the images are of "
                        f"{'/'.join(sorted(parts))}")
    if problems:
        return Condition(ITEM_MISMATCH, False, "; ".join(problems))
    return Condition(ITEM_MISMATCH, True, f"the images agree with {item.code} (contrast, body part)")


def _images(item: ExamItem | None, study: StudyFacts) -> Condition:
    """For imaging, the images are what is recognised: the study holds images of the item's
    modality. A report alone (SR, encapsulated PDF) is not recognised for an imaging item."""
    if item is None:
        return Condition(NO_IMAGES, False, "cannot be checked: no catalog item")
    held = study.images_of
    if set(held) & set(item.modalities):
        return Condition(NO_IMAGES, True, f"{'/'.join(sorted(set(held) & set(item.modalities)))} images present")
    others = sorted({m.strip().upper() for m in study.modalities if m and m.strip()} - set(held))
    what = f"only {'/'.join(held)} images" if held else "no images"
    what += f" (documents: {'/'.join(others)})" if others else ""
    return Condition(NO_IMAGES, False, f"{item.code} needs {'/'.join(item.modalities)} images; the study holds {what}")


def _known(code: str, role: str, given: str, found: Institution | None) -> Condition:
    if found is not None:
        return Condition(code, True, f"{role} {found.code} ({found.name}, level {found.level})")
    shown = given.strip() or "(none)"
    return Condition(code, False, f"{role} institution {shown} is not in the region's institutions")


def _qualified(region: Region, study: StudyFacts, item: ExamItem | None, producer: Institution | None) -> Condition:
    """The producer passed QC evaluation for the item (or its modality) on the study date.

    An item-level record is more specific than a modality-level one and wins; among records
    of the same specificity a "fail" wins over a "pass".
    """
    missing = "no catalog item" if item is None else "producer unknown" if producer is None else \
        "no study date" if study.study_date is None else ""
    if missing:
        return Condition(PRODUCER_NOT_QUALIFIED, False, f"cannot be checked: {missing}")
    assert item is not None and producer is not None and study.study_date is not None
    day = study.study_date
    study_modalities = set(study.images_of)
    modalities = set(item.modalities) & study_modalities if study_modalities else set(item.modalities)
    valid = [q for q in region.qualifications if q.institution == producer.code and q.valid_on(day)]
    for what, records in (
        (f"item {item.code}", [q for q in valid if q.item == item.code]),
        (f"modality {'/'.join(sorted(modalities))}", [q for q in valid if q.modality and q.modality in modalities]),
    ):
        if records:
            if any(not q.passed for q in records):
                why = f"{producer.code} failed QC evaluation for {what} on {day}"
                return Condition(PRODUCER_NOT_QUALIFIED, False, why)
            q = records[0]
            return Condition(PRODUCER_NOT_QUALIFIED, True,
                             f"{producer.code} qualified for {what} ({q.valid_from}..{q.valid_to})")
    return Condition(PRODUCER_NOT_QUALIFIED, False,
                     f"{producer.code} has no passing qualification for {item.code} or its modality on {day}")


def _qc(region: Region, study: StudyFacts) -> Condition:
    """Study QC: rejected never passes; otherwise the region's requirement decides."""
    status = study.qc_status or "unknown"
    if study.qc_status == "rejected":
        return Condition(QC_NOT_ACCEPTED, False, "the study was rejected in QC")
    if region.qc_required_status == "any":
        return Condition(QC_NOT_ACCEPTED, True, f"QC status {status}; the region does not require QC yet")
    if study.qc_status == region.qc_required_status:
        return Condition(QC_NOT_ACCEPTED, True, f"QC status {status}")
    return Condition(QC_NOT_ACCEPTED, False, f"QC status is {status}; {region.qc_required_status} is required")


def _window(study_date: date | None, item: ExamItem | None, today: date) -> Condition:
    """Inside the window when the study is at most ``valid_days`` old at ``today``."""
    if item is None or study_date is None:
        missing = "no catalog item" if item is None else "no study date"
        return Condition(OUTSIDE_WINDOW, False, f"cannot be checked: {missing}")
    age = (today - study_date).days
    until = study_date + timedelta(days=item.valid_days)
    if age < -FUTURE_TOLERANCE_DAYS:
        why = f"study date {study_date} is after today {today}; check the modality clock"
        return Condition(OUTSIDE_WINDOW, False, why)
    if age > item.valid_days:
        why = f"{age} days old; {item.code} is valid {item.valid_days} days (until {until})"
        return Condition(OUTSIDE_WINDOW, False, why)
    return Condition(OUTSIDE_WINDOW, True, f"{max(age, 0)} days old; valid {item.valid_days} days (until {until})")


def _scope(region: Region, viewer: Institution | None) -> Condition:
    """The viewer lies within the mark's geographic scope (a city mark is not valid outside
    the city): its ``geo`` within ``scope_geo``, unless an admin overrode it on purpose."""
    if viewer is None:
        return Condition(OUT_OF_SCOPE, False, "cannot be checked: viewer unknown")
    where = "within" if viewer.in_scope else "outside"
    why = f"{viewer.code} (geo {viewer.geo or '?'}) is {where} {region.label} (scope {region.scope_geo or '?'})"
    if viewer.scope_override:
        why += f" by manual override: {viewer.scope_override}"
    return Condition(OUT_OF_SCOPE, viewer.in_scope, why)


def _level(
    region: Region, producer: Institution | None, viewer: Institution | None, study_date: date | None, today: date
) -> Condition:
    """Same level, or lower accepts higher; higher accepts lower only inside an alliance (a
    medical alliance or county medical community) holding both **on the study date**, or
    where the region allows it (RECOGNITION.md: "higher accepts lower only inside a medical
    alliance or county medical community").

    The study date, not today (issue 12.6): the alliance is the producer's standing, the
    quality arrangement under which the study was made. An alliance that ended since still
    covers the study (whether the viewer may *see* it is access, judged today); one that
    began since does not reach back to a study made outside it.
    """
    if producer is None or viewer is None:
        missing = "producer unknown" if producer is None else "viewer unknown"
        return Condition(LEVEL_RULE, False, f"cannot be checked: {missing}")
    if producer.code == viewer.code:
        return Condition(LEVEL_RULE, True, "viewer is the producing institution")
    order = tier if region.same_level_by == "tier" else rank
    shown = f"viewer {viewer.code} ({viewer.level}), producer {producer.code} ({producer.level})"
    if order(viewer.level) == order(producer.level):
        return Condition(LEVEL_RULE, True, f"same level: {shown}")
    if order(viewer.level) < order(producer.level):
        return Condition(LEVEL_RULE, True, f"lower accepts higher: {shown}")
    day = study_date or today
    alliances = region.common_alliances(viewer.code, producer.code, day)
    if alliances:
        return Condition(LEVEL_RULE, True, f"higher accepts lower inside {alliances[0].id} on {day}: {shown}")
    if region.allow_higher_accepts_lower:
        return Condition(LEVEL_RULE, True, f"higher accepts lower (allowed by the region): {shown}")
    return Condition(LEVEL_RULE, False, f"higher does not accept lower outside an alliance (none on {day}): {shown}")
