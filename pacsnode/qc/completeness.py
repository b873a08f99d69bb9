"""Is the whole study here, with its dose record and its report?

Mutual recognition replaces a repeat examination, so an incomplete study (a series missing
slices after an interrupted transfer), a CT without its dose, or a CT/MR without a report
must not pass silently. These checks compare what arrived with what the headers declare;
they look only for *missing* data, because surplus instances are a storage question.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from pacsnode.qc.rules import DoseRule, QcRules
from pacsnode.qc.study import (
    CheckOutcome,
    QcInstance,
    SeriesView,
    StudyView,
    find_anywhere,
    integer,
    join_list,
    outcome_severity,
    series_list,
    text,
)

GAP_CODE = "QC-COUNT-GAP"
DECLARED_CODE = "QC-COUNT-DECLARED"
DOSE_CODE = "QC-DOSE"
REPORT_CODE = "QC-REPORT"


def gap_checks(study: StudyView, rules: QcRules) -> list[CheckOutcome]:
    """``QC-COUNT-GAP``, one outcome per image series: missing or repeated Instance Numbers.

    Only series where every instance has an Instance Number are judged (otherwise there is
    no numbering to trust). Numbers before the lowest one are not counted as missing:
    some scanners do not start at 1.
    """
    if rules.counts.gap == "off":
        return []
    outcomes = []
    for series in study.image_series:
        numbers = [integer(i.header, "InstanceNumber") for i in series.instances]
        if any(n is None for n in numbers):
            continue
        message = _numbering_problem(series, [n for n in numbers if n is not None])
        outcomes.append(CheckOutcome(
            GAP_CODE, outcome_severity(rules.counts.gap), message is None,
            message or f"{series.label} has no missing instance numbers "
                       f"({len(numbers)} instance{'s' if len(numbers) != 1 else ''}).",
            series_uid=series.series_uid))
    return outcomes


def _numbering_problem(series: SeriesView, numbers: list[int]) -> str | None:
    """Describe gaps (as ranges) and repeats; None when the numbering is complete."""
    counts = Counter(numbers)
    ordered = sorted(counts)
    gaps = [(low + 1, high - 1) for low, high in zip(ordered, ordered[1:]) if high > low + 1]
    repeated = [n for n in ordered if counts[n] > 1]
    parts = []
    if gaps:
        missing = sum(last - first + 1 for first, last in gaps)
        runs = join_list(str(a) if a == b else f"{a}-{b}" for a, b in gaps)
        parts.append(f"is missing instance number{'s' if missing > 1 else ''} {runs}")
    if repeated:
        parts.append(f"has instance number{'s' if len(repeated) > 1 else ''} "
                     f"{join_list(repeated)} more than once")
    return f"{series.label} " + " and ".join(parts) + "." if parts else None


def declared_check(study: StudyView, rules: QcRules) -> list[CheckOutcome]:
    """``QC-COUNT-DECLARED``: fewer series/instances arrived than the headers declare.

    Uses Number of Study Related Series/Instances, Number of Series Related Instances and
    Images in Acquisition (per series and Acquisition Number) where present; no outcome
    when nothing is declared. One outcome per study, naming every shortfall.
    """
    if rules.counts.declared == "off":
        return []
    declared_any = False
    problems: list[str] = []
    for keyword, arrived, what in (
        ("NumberOfStudyRelatedSeries", len(study.series), "series"),
        ("NumberOfStudyRelatedInstances", len(study.instances), "instances"),
    ):
        expected = _declared(i.header.get(keyword) for i in study.instances)
        if expected is not None:
            declared_any = True
            if arrived < expected:
                problems.append(f"the study declares {expected} {what} but {arrived} arrived")
    for series in study.series:
        found, series_problems = _series_shortfalls(series)
        declared_any = declared_any or found
        problems.extend(series_problems)
    if not declared_any:
        return []
    severity = outcome_severity(rules.counts.declared)
    if problems:
        message = "; ".join(problems)
        return [CheckOutcome(DECLARED_CODE, severity, False, message[0].upper() + message[1:] + ".")]
    return [CheckOutcome(DECLARED_CODE, severity, True, "Everything the headers declare has arrived.")]


def _series_shortfalls(series: SeriesView) -> tuple[bool, list[str]]:
    """(anything declared?, problems) for one series."""
    problems: list[str] = []
    declared_any = False
    expected = _declared(i.header.get("NumberOfSeriesRelatedInstances") for i in series.instances)
    if expected is not None:
        declared_any = True
        if len(series.instances) < expected:
            problems.append(f"{series.label} declares {expected} instances but {len(series.instances)} arrived")
    groups: dict[int | None, list[QcInstance]] = {}
    for instance in series.instances:
        groups.setdefault(integer(instance.header, "AcquisitionNumber"), []).append(instance)
    for acquisition, members in groups.items():
        expected = _declared(i.header.get("ImagesInAcquisition") for i in members)
        if expected is None:
            continue
        declared_any = True
        frames = sum(integer(i.header, "NumberOfFrames") or 1 for i in members)
        if len(members) < expected and frames < expected:
            which = f" acquisition {acquisition}" if acquisition is not None else ""
            problems.append(f"{series.label}{which} declares {expected} images but {len(members)} arrived")
    return declared_any, problems


def _declared(values: Iterable[object]) -> int | None:
    """The largest positive declared count among ``values`` (None when none is usable)."""
    counts = []
    for value in values:
        try:
            if value is not None and str(value).strip():
                counts.append(int(str(value)))
        except ValueError:
            continue
    counts = [c for c in counts if c > 0]
    return max(counts) if counts else None


def dose_check(study: StudyView, rules: QcRules) -> list[CheckOutcome]:
    """``QC-DOSE``: CT and DX/CR studies carry a dose record (header or dose SR).

    A dose SR anywhere in the study satisfies every modality. Otherwise each original,
    non-localizer series of the modality must carry one of the rule's attributes (derived
    reformats and scouts often lack it); if only such series exist, one of them must.
    """
    applicable = [(m, r) for m in study.image_modalities
                  if (r := rules.dose_for(m)) is not None and r.severity != "off"]
    if not applicable:
        return []
    has_sr = any(text(i.header, "SOPClassUID") in rules.dose_sr_classes for i in study.instances)
    problems: list[tuple[DoseRule, str]] = []
    if not has_sr:
        for modality, rule in applicable:
            lacking = _series_without_dose(study, modality, rule)
            if lacking:
                names = " or ".join(rule.any_of)
                problems.append((rule, f"no {names} in {modality} {series_list(lacking)} "
                                       "and no radiation dose SR in the study"))
    if problems:
        severity = outcome_severity("fail" if any(r.severity == "fail" for r, _ in problems) else "warn")
        message = "Dose is not recorded: " + "; ".join(p for _, p in problems) + "."
        return [CheckOutcome(DOSE_CODE, severity, False, message)]
    severity = outcome_severity("fail" if any(r.severity == "fail" for _, r in applicable) else "warn")
    source = "a radiation dose SR" if has_sr else "the image headers"
    return [CheckOutcome(DOSE_CODE, severity, True, f"Dose is recorded in {source}.")]


def _series_without_dose(study: StudyView, modality: str, rule: DoseRule) -> list[SeriesView]:
    series = [s for s in study.image_series if s.modality == modality]
    original = [s for s in series if not _derived_or_localizer(s)]

    def has_dose(view: SeriesView) -> bool:
        return any(find_anywhere(i.header, keyword) for i in view.instances for keyword in rule.any_of)

    if original:
        return [s for s in original if not has_dose(s)]
    return [] if any(has_dose(s) for s in series) else series


def _derived_or_localizer(series: SeriesView) -> bool:
    image_type = [str(v).upper() for v in (series.instances[0].header.get("ImageType") or [])]
    return "LOCALIZER" in image_type or (bool(image_type) and image_type[0] == "DERIVED")


def report_check(study: StudyView, rules: QcRules) -> list[CheckOutcome]:
    """``QC-REPORT``: studies of the listed modalities (default CT, MR) include a report."""
    rule = rules.report
    needing = [m for m in study.image_modalities if m in rule.required_for]
    if rule.severity == "off" or not needing:
        return []
    severity = outcome_severity(rule.severity)
    reports = [i for i in study.instances if rule.is_report(text(i.header, "SOPClassUID"))]
    if reports:
        return [CheckOutcome(REPORT_CODE, severity, True, f"The study includes a report ({len(reports)}).")]
    return [CheckOutcome(REPORT_CODE, severity, False,
                         f"No report in the study: {'/'.join(needing)} studies need a structured "
                         "report (SR) or a PDF report sent with the images.")]
