"""A small generator of IHE IOCM rejection notes (Key Object Selection documents) for tests.

``rejection_note(template, refs, out)`` writes a KOS titled with a rejection code (113001 by
default) that references ``refs`` in its Current Requested Procedure Evidence Sequence, with
the patient and study of ``template``. Small files written at test time: nothing is added to
``sample_dicom/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from pydicom import dcmread
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

KOS_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"
TITLES = {"113001": "Rejected for Quality Reasons", "113037": "Rejected for Patient Safety Reasons",
          "113038": "Incorrect Modality Worklist Entry", "113039": "Data Retention Policy Expired",
          "113000": "Of Interest"}


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


def rejection_note(template: Path, refs: Iterable[tuple[str, str, str]], out: Path, *, code: str = "113001",
                   sop_instance_uid: str | None = None) -> Path:
    """A KOS for the study of ``template`` rejecting ``refs`` = (series UID, SOP class UID, SOP instance UID)."""
    base = dcmread(template, stop_before_pixels=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = KOS_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = sop_instance_uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = base.get("SpecificCharacterSet", "ISO_IR 192")
    ds.SOPClassUID, ds.SOPInstanceUID = KOS_SOP_CLASS, meta.MediaStorageSOPInstanceUID
    for keyword in ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
                    "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "StudyID",
                    "InstitutionName", "InstitutionCodeSequence"):
        if keyword in base:
            setattr(ds, keyword, base.data_element(keyword).value)
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = "KO", generate_uid(), 999, 1
    ds.ContentDate, ds.ContentTime = base.get("StudyDate", ""), "120000"
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [_code(code, TITLES.get(code, "Rejected"))]
    ds.ContinuityOfContent = "SEPARATE"
    by_series: dict[str, list[Dataset]] = {}
    content: list[Dataset] = []
    for series_uid, sop_class, sop_uid in refs:
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = sop_class, sop_uid
        by_series.setdefault(series_uid, []).append(ref)
        item = Dataset()
        item.RelationshipType, item.ValueType = "CONTAINS", "IMAGE"
        item.ReferencedSOPSequence = [ref]
        content.append(item)
    study = Dataset()
    study.StudyInstanceUID = base.StudyInstanceUID
    study.ReferencedSeriesSequence = []
    for series_uid, sops in by_series.items():
        series = Dataset()
        series.SeriesInstanceUID = series_uid
        series.ReferencedSOPSequence = sops
        study.ReferencedSeriesSequence.append(series)
    ds.CurrentRequestedProcedureEvidenceSequence = [study]
    ds.ContentSequence = content
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out, enforce_file_format=True)
    return out
