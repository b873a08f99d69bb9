"""Run the QC rule set on one study: the entry point the node calls after a study arrives.

``run_checks`` is pure apart from reading the files it is given (one middle image per image
series is decoded): no index, no clock, no audit. The node stores the outcomes, derives the
status with :func:`pacsnode.qc.workflow.auto_status` and writes the audit event.

Check codes are stable (UIs, audits and reports key on them):

====================  ========  ==========================================================
code                  per       meaning
====================  ========  ==========================================================
QC-ID-PATIENT-ID      study     Patient ID present (and the same in every series)
QC-ID-ISSUER          study     Issuer of Patient ID present (or its qualifiers sequence)
QC-ID-NAME            study     Patient name present
QC-ID-SEX             study     Patient sex present and one of M, F, O
QC-ID-BIRTH-DATE      study     Birth date present and not after the study date
QC-ID-STUDY-DATE      study     Study date present
QC-ID-STUDY-TIME      study     Study time present
QC-ID-ACCESSION       study     Accession number present
QC-ID-INSTITUTION     study     Institution name or code on every image
QC-ID-MODALITY        study     Modality present
QC-ID-BODY-PART       study     Body part examined or procedure code on every image
QC-FMT-DATE           study     Every DA/TM/DT value is well formed
QC-COUNT-GAP          series    No missing or repeated instance numbers (image series)
QC-COUNT-DECLARED     study     No fewer series/instances/images than the headers declare
QC-PIXEL-DIMS         series    Every image at least the modality's minimum size
QC-PIXEL-DECODE       series    The middle image decodes (warn when no codec is installed)
QC-PIXEL-RANGE        series    The middle image is not blank (all pixels equal)
QC-LOSSY              series    No lossy compression (warn)
QC-DOSE               study     CT / DX / CR carry a dose record or a dose SR
QC-REPORT             study     CT / MR studies include an SR or PDF report (warn)
====================  ========  ==========================================================

A check that does not apply (no image series, a modality without dose rule, nothing
declared) yields no outcome rather than a vacuous pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pacsnode.qc.completeness import declared_check, dose_check, gap_checks, report_check
from pacsnode.qc.identity import date_format_check, identity_checks
from pacsnode.qc.pixels import pixel_checks
from pacsnode.qc.rules import QcRules
from pacsnode.qc.study import CheckOutcome, QcInstance, StudyView, build_study, text
from pacsnode.qc.workflow import QcError

__all__ = ["CHECK_CODES", "CheckOutcome", "QcInstance", "failed", "run_checks"]

CHECK_CODES: tuple[str, ...] = (
    "QC-ID-PATIENT-ID", "QC-ID-ISSUER", "QC-ID-NAME", "QC-ID-SEX", "QC-ID-BIRTH-DATE",
    "QC-ID-STUDY-DATE", "QC-ID-STUDY-TIME", "QC-ID-ACCESSION", "QC-ID-INSTITUTION",
    "QC-ID-MODALITY", "QC-ID-BODY-PART", "QC-FMT-DATE", "QC-COUNT-GAP", "QC-COUNT-DECLARED",
    "QC-PIXEL-DIMS", "QC-PIXEL-DECODE", "QC-PIXEL-RANGE", "QC-LOSSY", "QC-DOSE", "QC-REPORT",
)

_CHECKS: tuple[Callable[[StudyView, QcRules], list[CheckOutcome]], ...] = (
    identity_checks,
    date_format_check,
    gap_checks,
    declared_check,
    pixel_checks,
    dose_check,
    report_check,
)


def run_checks(instances: Sequence[QcInstance], rules: QcRules) -> list[CheckOutcome]:
    """Check one study's instances against ``rules`` and return every outcome.

    All instances must belong to one study (same Study Instance UID); the node calls this
    per study. Raises :class:`QcError` for an empty list or a mix of studies, because
    outcomes carry no study UID and would be attributed to the wrong study.
    """
    if not instances:
        raise QcError("no instances to check: pass the instances of one study")
    study_uids = {text(i.header, "StudyInstanceUID") for i in instances}
    if len(study_uids) != 1:
        raise QcError(f"run_checks got {len(study_uids)} studies; call it once per study")
    study = build_study(instances)
    outcomes: list[CheckOutcome] = []
    for check in _CHECKS:
        outcomes.extend(check(study, rules))
    return outcomes


def failed(outcomes: Sequence[CheckOutcome], severity: str | None = None) -> list[CheckOutcome]:
    """Outcomes that did not pass, optionally only those of one severity ("fail"/"warn")."""
    return [o for o in outcomes if not o.passed and (severity is None or o.severity == severity)]
