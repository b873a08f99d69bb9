"""The QC listing's SQL: every study joined with its QC row (``study_qc``).

``pacsnode.qc_service.QcDesk.listing`` shapes these rows for the CLI and reports; the SQL stays
in ``pacsnode/index/``. A study without a QC row is ``pending``.
"""

from __future__ import annotations

import sqlite3

from pacsnode.index.base import Index


def listing_rows(index: Index) -> list[sqlite3.Row]:
    """Every study with its QC status, grade, reviewer, check time and outcomes (JSON), newest first."""
    return index.query(
        "SELECT s.study_uid, s.study_date, s.modalities, s.institution_name, s.institution_code, "
        "s.instance_count, COALESCE(q.status, 'pending') AS status, COALESCE(q.grade, '') AS grade, "
        "COALESCE(q.reviewer, '') AS reviewer, COALESCE(q.checked_at, '') AS checked_at, "
        "COALESCE(q.outcomes, '[]') AS outcomes FROM studies s LEFT JOIN study_qc q ON q.study_uid = s.study_uid "
        "ORDER BY s.study_date DESC, s.study_uid")
