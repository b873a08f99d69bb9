"""Quality control of received studies: rules, checks, the status workflow, previews.

The node calls :func:`run_checks` when a study has arrived, derives its status with
:func:`auto_status` / :func:`auto_decision`, records reviewer decisions through the pure
transition functions of :mod:`pacsnode.qc.workflow`, and renders a contact sheet with
:func:`render_contact_sheet` for the reviewer. Nothing here touches the index or the clock.
"""

from pacsnode.qc.checks import CHECK_CODES, CheckOutcome, QcInstance, failed, run_checks
from pacsnode.qc.preview import (
    PreviewInfo,
    PreviewSeries,
    PreviewTile,
    preview_series_for,
    render_contact_sheet,
)
from pacsnode.qc.rules import QcRules, default_rules, load_rules
from pacsnode.qc.workflow import (
    REJECTION_REASONS,
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

__all__ = [
    "CHECK_CODES", "REJECTION_REASONS", "CheckOutcome", "PreviewInfo", "PreviewSeries", "PreviewTile",
    "QcDecision", "QcError", "QcInstance", "QcRules", "QcStatus", "accept", "auto_decision",
    "auto_status", "default_rules", "failed", "grade_scale", "load_rules", "mark_needs_fix",
    "on_new_instance", "preview_series_for", "reject", "render_contact_sheet", "restore",
    "run_checks", "status_of", "validate_grade",
]
