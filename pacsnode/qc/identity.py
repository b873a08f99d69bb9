"""Identification checks: who, when, where and what (``QC-ID-*``) and date formats.

A study is recognised by another hospital only if it unambiguously names the patient (ID
with its issuer), the date, the producing institution and the examination. These checks
run on headers, report one outcome per rule per study, and name the series to fix. They
never put patient names or IDs in messages: outcomes end up in audit trails and UIs.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import date

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from pacsnode.qc.rules import IdentityRule, QcRules
from pacsnode.qc.study import (
    CheckOutcome,
    QcInstance,
    SeriesView,
    StudyView,
    first_value,
    has_value,
    is_image,
    outcome_severity,
    series_list,
    text,
)

DATE_CODE = "QC-FMT-DATE"
VALID_SEX = ("M", "F", "O")

_DA = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_TM = re.compile(r"^(\d{2})(?:(\d{2})(?:(\d{2})(?:\.\d{1,6})?)?)?$")
_DT = re.compile(r"^(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.\d{1,6})?)?)?)?)?)?"
                 r"(?:[+-]\d{4})?$")


def identity_checks(study: StudyView, rules: QcRules) -> list[CheckOutcome]:
    """One outcome per active identity rule that applies to some instance of the study."""
    outcomes: list[CheckOutcome] = []
    for rule in rules.identity:
        if rule.severity == "off":
            continue
        outcome = _identity_outcome(study, rule)
        if outcome is not None:
            outcomes.append(outcome)
    return outcomes


def _applies(rule: IdentityRule, header: Dataset) -> bool:
    if rule.scope == "images" and not is_image(header):
        return False
    return not rule.modalities or text(header, "Modality") in rule.modalities


def _identity_outcome(study: StudyView, rule: IdentityRule) -> CheckOutcome | None:
    members = [(s, i) for s in study.series for i in s.instances if _applies(rule, i.header)]
    if not members:
        return None
    problems: list[str] = []
    missing = _series_where(members, lambda i: not any(has_value(i.header, spec) for spec in rule.any_of))
    if missing:
        problems.append(f"{rule.label} is missing in {series_list(missing)}")
    if rule.consistent:
        problems.extend(_consistency_problems(rule, members))
    problems.extend(_value_problems(rule, members))
    severity = outcome_severity(rule.severity)
    if problems:
        return CheckOutcome(rule.code, severity, False, "; ".join(problems) + ".")
    scope = "image series" if rule.scope == "images" else "series"
    return CheckOutcome(rule.code, severity, True, f"{rule.label} is present in every {scope}.")


def _series_where(members: list[tuple[SeriesView, QcInstance]],
                  predicate: Callable[[QcInstance], bool]) -> list[SeriesView]:
    """Series (in study order, once each) having an instance for which ``predicate`` holds."""
    found: dict[str, SeriesView] = {}
    for series, instance in members:
        if predicate(instance):
            found.setdefault(series.series_uid, series)
    return list(found.values())


def _consistency_problems(rule: IdentityRule, members: list[tuple[SeriesView, QcInstance]]) -> list[str]:
    """Name the series whose value differs from the study's most common value."""
    values = [(s, first_value(i.header, rule.any_of)) for s, i in members]
    counts = Counter(v for _, v in values if v)
    if len(counts) <= 1:
        return []
    usual = counts.most_common(1)[0][0]
    odd = _series_where(members, lambda i: first_value(i.header, rule.any_of) not in ("", usual))
    return [f"{rule.label} is not the same in every series ({len(counts)} different values; "
            f"{series_list(odd)} differ from the rest)"]


def _value_problems(rule: IdentityRule, members: list[tuple[SeriesView, QcInstance]]) -> list[str]:
    """Checks on the value itself, by attribute (sex codes, birth date before the study)."""
    problems: list[str] = []
    if "PatientSex" in rule.any_of:
        bad = _series_where(members, lambda i: text(i.header, "PatientSex") not in ("", *VALID_SEX))
        if bad:
            problems.append(f"{rule.label} must be M, F or O in {series_list(bad)}")
    if "PatientBirthDate" in rule.any_of:
        late = _series_where(members, _born_after_study)
        if late:
            problems.append(f"{rule.label} is after the study date in {series_list(late)}")
    return problems


def _born_after_study(instance: QcInstance) -> bool:
    birth = _parse_da(text(instance.header, "PatientBirthDate"))
    study = _parse_da(text(instance.header, "StudyDate"))
    return birth is not None and study is not None and birth > study


def _parse_da(value: str) -> date | None:
    match = _DA.match(value)
    if not match:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def date_format_check(study: StudyView, rules: QcRules) -> list[CheckOutcome]:
    """``QC-FMT-DATE``: every DA/TM/DT value in the headers is a well-formed DICOM value.

    Malformed dates (``2026-01-05``, ``20260230``, ``10:30``) break date-range queries
    and the validity-window arithmetic of recognition, so they are caught at arrival.
    """
    if rules.dates == "off":
        return []
    problems: dict[str, set[str]] = {}
    for series in study.series:
        for instance in series.instances:
            for name, value in _bad_temporals(instance.header):
                problems.setdefault(f"{name} {value!r}", set()).add(series.label.lower())
    severity = outcome_severity(rules.dates)
    if not problems:
        return [CheckOutcome(DATE_CODE, severity, True, "All dates and times are well formed.")]
    parts = [f"{what} is not a valid DICOM date/time (in {', '.join(sorted(where))})"
             for what, where in sorted(problems.items())]
    shown = parts[:8] + ([f"and {len(parts) - 8} more"] if len(parts) > 8 else [])
    return [CheckOutcome(DATE_CODE, severity, False, "; ".join(shown) + ".")]


def _bad_temporals(header: Dataset) -> Iterator[tuple[str, str]]:
    """(attribute name, value) for each malformed DA/TM/DT value at the top level."""
    for element in header:
        if element.VR not in ("DA", "TM", "DT") or element.value in (None, ""):
            continue
        values = element.value if isinstance(element.value, MultiValue) else [element.value]
        for value in values:
            # With pydicom's datetime conversion on, values are objects keeping the text.
            raw = str(getattr(value, "original_string", None) or value).strip()
            if raw and not _well_formed(element.VR, raw):
                yield element.name, raw


def _well_formed(vr: str, value: str) -> bool:
    if vr == "DA":
        return _parse_da(value) is not None
    if vr == "TM":
        time = _TM.match(value)
        return time is not None and _time_in_range(time[1], time[2], time[3])
    match = _DT.match(value)
    if not match:
        return False
    year, month, day, hour, minute, second = match.groups()
    if month and not 1 <= int(month) <= 12:
        return False
    if day and _parse_da(f"{year}{month}{day}") is None:
        return False
    return _time_in_range(hour, minute, second)


def _time_in_range(hour: str | None, minute: str | None, second: str | None) -> bool:
    """Hours 00-23, minutes 00-59, seconds 00-60 (a leap second is legal in DICOM)."""
    return ((hour is None or int(hour) < 24) and (minute is None or int(minute) < 60)
            and (second is None or int(second) <= 60))
