"""IHE IOCM rejection notes: a Key Object Selection document whose title rejects instances.

A KOS (SOP class 1.2.840.10008.5.1.4.1.1.88.59) whose Concept Name Code Sequence is one of
the DCM codes below is a *rejection note*: the instances listed in its Current Requested
Procedure Evidence Sequence are withdrawn from the normal view (RECOGNITION.md, step 2 and
the DICOM notes). Any other KOS (e.g. 113000 "Of Interest", 113010 "Quality Issue") is an
ordinary instance. This module only reads the file; what a note does is the node's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from pacsnode.dicom.extract import require_uid
from pacsnode.errors import InvalidInstance

KOS_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"

#: DCM document titles that reject the instances a KOS references (PS3.16 CID 7011).
REJECTION_TITLES: dict[str, str] = {
    "113001": "Rejected for Quality Reasons",
    "113037": "Rejected for Patient Safety Reasons",
    "113038": "Incorrect Modality Worklist Entry",
    "113039": "Data Retention Policy Expired",
}

#: A note naming more instances than this is refused (bounded everything, THREATS.md rule 6).
MAX_REFERENCES = 65535


@dataclass(frozen=True)
class RejectedInstance:
    sop_instance_uid: str
    study_uid: str
    series_uid: str


@dataclass(frozen=True)
class RejectionNote:
    """The note's own UID, its title (reason) and the instances it rejects."""

    sop_instance_uid: str
    reason_code: str
    reason_meaning: str
    rejected: tuple[RejectedInstance, ...]


def rejection_note(path: Path) -> RejectionNote | None:
    """The rejection note in ``path``, or None when it is not one (any other SOP class or title)."""
    try:
        ds = dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError) as exc:
        raise InvalidInstance(f"cannot read the key object selection document: {exc}") from exc
    if str(ds.get("SOPClassUID", "")) != KOS_SOP_CLASS:
        return None
    title = ds.get("ConceptNameCodeSequence") or []
    if len(title) != 1:
        return None
    code, scheme = str(title[0].get("CodeValue", "")).strip(), str(title[0].get("CodingSchemeDesignator", "")).strip()
    if scheme != "DCM" or code not in REJECTION_TITLES:
        return None
    rejected: list[RejectedInstance] = []
    # Each reference must be a UID (InvalidInstance otherwise, before anything is kept): it goes into the
    # index as it is, where PostgreSQL refuses a NUL in text that SQLite keeps (the two would differ).
    for study in ds.get("CurrentRequestedProcedureEvidenceSequence") or []:
        study_uid = _optional_uid(study, "StudyInstanceUID", "Study Instance UID")
        for series in study.get("ReferencedSeriesSequence") or []:
            series_uid = _optional_uid(series, "SeriesInstanceUID", "Series Instance UID")
            for item in series.get("ReferencedSOPSequence") or []:
                uid = _optional_uid(item, "ReferencedSOPInstanceUID", "Referenced SOP Instance UID")
                if uid:
                    rejected.append(RejectedInstance(uid, study_uid, series_uid))
                if len(rejected) > MAX_REFERENCES:
                    raise InvalidInstance(f"rejection note references more than {MAX_REFERENCES} instances")
    if not rejected:
        raise InvalidInstance("rejection note references no instance (Current Requested Procedure Evidence)")
    own = str(ds.get("SOPInstanceUID", "")).strip()
    if any(r.sop_instance_uid == own for r in rejected):
        raise InvalidInstance("a rejection note cannot reject itself")
    return RejectionNote(own, code, REJECTION_TITLES[code], tuple(rejected))


def _optional_uid(item: Any, keyword: str, name: str) -> str:
    """``item``'s UID ``keyword`` ("" when absent or blank); InvalidInstance when it is no UID."""
    text = str(item.get(keyword, "") or "").strip().rstrip("\x00")
    return require_uid(text, f"rejection note: {name}") if text else ""
