"""Index rows as the model's summaries (kept apart so the SQLite index stays one job)."""

from __future__ import annotations

from typing import Any

from pacsnode.model import StudySummary


def study_summary(row: Any) -> StudySummary:
    """A ``studies`` row joined with its patient, as the listings (CLI, web) show it."""
    return StudySummary(
        study_uid=row["study_uid"], patient_id=row["patient_id"], issuer_of_patient_id=row["issuer"],
        patient_name=row["patient_name"], study_date=row["study_date"],
        accession_number=row["accession_number"],
        modalities=[m for m in row["modalities"].split("\\") if m], series_count=row["series_count"],
        instance_count=row["instance_count"], institution_name=row["institution_name"],
        study_description=row["study_description"], institution_code=row["institution_code"],
        patient_birth_date=row["birth_date"], patient_sex=row["sex"], study_time=row["study_time"],
        received_at=row["received_at"])
