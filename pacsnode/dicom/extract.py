"""Dataset header → :class:`InstanceFacts`: what the index records about an instance.

Only the header is read (``stop_before_pixels``): indexing must never decode or even load
pixel data, so a 500 MB multi-frame costs the same as a 10 KB SR. Text is decoded with the
dataset's Specific Character Set by pydicom; we only normalise what comes out.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import data_element_generator, read_preamble
from pydicom.uid import UID

from pacsnode.dicom import header, limits, lossy, nul
from pacsnode.errors import InvalidInstance, SopClassMismatch
from pacsnode.model import CodedEntry, InstanceFacts, OtherPatientId, ReceivedFile

UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
# pydicom hands ISO 2022 IR 58 (GB2312) to Python's gb2312 codec, which keeps the ESC $ ) A
# designations in the text; decoded text never needs an escape sequence, so drop any left over.
LEFTOVER_ESCAPE = re.compile(r"\x1b[\x20-\x2f]+[\x30-\x7e]")
# Which transfer syntaxes are lossy: pacsnode.dicom.lossy, shared with QC (issue 12.5).
LOSSY_SYNTAXES = lossy.LOSSY_TRANSFER_SYNTAXES


def is_valid_uid(value: str) -> bool:
    """A UID is digits and dots, at most 64 characters (PS3.5 9.1); nothing else reaches a path."""
    return 0 < len(value) <= 64 and bool(UID_PATTERN.match(value))


def require_uid(value: Any, name: str) -> str:
    text = str(value or "").strip().rstrip("\x00")
    if not text:
        raise InvalidInstance(f"{name} is missing")
    if not is_valid_uid(text):
        raise InvalidInstance(f"{name} {text[:80]!r} is not a valid UID (digits and dots, at most 64 characters)")
    return text


def _uid(dataset: Dataset, keyword: str, name: str) -> str:
    """A required UID of ``dataset``; an element pydicom cannot even convert is InvalidInstance too."""
    try:
        value = dataset.get(keyword)
    except Exception as exc:  # a wrong VR or a bad length: pydicom raises many kinds
        raise InvalidInstance(f"{name} cannot be read ({exc.__class__.__name__})") from None
    return require_uid(value, name)


def read_header(path: Path | str) -> Dataset:
    """Read a Part 10 file (or a bare dataset) up to its pixel data, refusing a cut-off file."""
    try:
        dataset = dcmread(str(path), stop_before_pixels=True, force=False)
        require_complete(path, dataset)
        return dataset
    except InvalidInstance:
        raise
    except InvalidDicomError:
        try:
            dataset = dcmread(str(path), stop_before_pixels=True, force=True)
        except Exception as exc:  # pydicom raises many kinds on garbage
            raise InvalidInstance(f"not a DICOM file ({exc.__class__.__name__}: {exc})") from None
        if "SOPInstanceUID" not in dataset:
            raise InvalidInstance("not a DICOM file (no DICM preamble and no SOP Instance UID)") from None
        return dataset
    except Exception as exc:
        raise InvalidInstance(f"unreadable DICOM ({exc.__class__.__name__}: {exc})") from None


def require_complete(path: Path | str, dataset: Dataset) -> None:
    """Raise InvalidInstance when a Part 10 file ends inside an element (a cut transfer).

    ``stop_before_pixels`` never looks at the pixel data, and pydicom quietly accepts a short
    read, so a transfer cut in the middle would otherwise be indexed as a whole instance.
    Walks the top-level elements (skipping large values by seeking) and checks that the
    last one ends exactly at the end of the file.
    """
    try:
        syntax = UID(str(dataset.file_meta.TransferSyntaxUID))
        implicit, little = syntax.is_implicit_VR, syntax.is_little_endian
    except (AttributeError, ValueError):
        return  # no or unknown syntax (e.g. private, deflated): pydicom's own read must do
    if syntax.is_deflated:
        return
    size = Path(path).stat().st_size
    try:
        with open(path, "rb") as handle:
            read_preamble(handle, False)
            for _meta in data_element_generator(handle, False, True, stop_when=lambda tag, *_: tag.group != 2):
                pass
            end = handle.tell()
            for item in data_element_generator(handle, implicit, little, defer_size=4096):
                element = cast(RawDataElement, item)  # raw: no dataset to convert into
                value = getattr(element, "value", None)
                if isinstance(value, bytes) and element.length != 0xFFFFFFFF and len(value) < element.length:
                    end = -1
                    break
                end = handle.tell()
    except Exception as exc:  # pydicom raises many kinds on a cut stream
        raise InvalidInstance(f"incomplete DICOM ({exc.__class__.__name__}: {exc})") from None
    if end != size:
        raise InvalidInstance(f"incomplete DICOM: the file ends inside an element ({size} bytes)")


def normalise_time(value: str) -> str:
    """TM → ``HHMMSS.ffffff`` so that times sort and range-compare as strings."""
    text = value.strip().replace(":", "")
    if not text:
        return ""
    whole, _, frac = text.partition(".")
    if not whole.isdigit():
        return text
    whole = (whole + "0000")[:6] if len(whole) >= 2 else whole
    return f"{whole}.{(frac + '000000')[:6]}"


def _text(dataset: Dataset, keyword: str) -> str:
    try:
        value = dataset.get(keyword, "")
    except Exception:  # a malformed value must not stop indexing of the rest
        return ""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or value.__class__.__name__ == "MultiValue":
        return LEFTOVER_ESCAPE.sub("", "\\".join(str(v) for v in value))
    return LEFTOVER_ESCAPE.sub("", str(value)).strip()


#: What an INTEGER column holds on both index backends (SQLite and PostgreSQL BIGINT: signed 64 bits).
#: A number beyond it (an IS value far over its 12 characters) is not indexed, like any bad number.
_INDEXABLE_INT = (-(1 << 63), (1 << 63) - 1)


def _int(dataset: Dataset, keyword: str) -> int | None:
    try:
        value = dataset.get(keyword)
        return int(value) if value not in (None, "") else None
    except Exception:  # a malformed value (wrong VR, bad number) is simply not indexed
        return None


def _codes(dataset: Dataset, keyword: str) -> tuple[CodedEntry, ...]:
    try:
        items = dataset.get(keyword) or []
        return tuple(
            CodedEntry(_text(item, "CodeValue"), _text(item, "CodingSchemeDesignator"), _text(item, "CodeMeaning"))
            for item in items
            if _text(item, "CodeValue")
        )
    except Exception:
        return ()


def _other_ids(dataset: Dataset) -> tuple[OtherPatientId, ...]:
    try:
        items = dataset.get("OtherPatientIDsSequence") or []
        return tuple(
            OtherPatientId(_text(item, "PatientID"), _text(item, "IssuerOfPatientID"), _text(item, "TypeOfPatientID"))
            for item in items
            if _text(item, "PatientID")
        )
    except Exception:
        return ()


def _lossy(dataset: Dataset, transfer_syntax: str) -> bool:
    return lossy.is_lossy(transfer_syntax, _text(dataset, "LossyImageCompression"),
                          _text(dataset, "LossyImageCompressionMethod"))


def deidentified(patient_identity_removed: str, deidentification_method: str) -> bool:
    """A de-identified copy: Patient Identity Removed (0012,0062) = YES, or any De-identification
    Method (0012,0063). Such a copy is not the original record and never HR-eligible
    (RECOGNITION.md: "if S.lossy or S.deidentified: fail += incomplete")."""
    removed = patient_identity_removed.strip().upper() == "YES"
    return removed or bool(deidentification_method.replace("\\", "").strip())


def facts_from_dataset(dataset: Dataset, transfer_syntax: str = "") -> InstanceFacts:
    """Extract the indexed attributes; raise InvalidInstance when a UID is missing or malformed,
    or an indexed value breaks its VR (``dicom.limits``)."""
    meta = getattr(dataset, "file_meta", None)
    syntax = transfer_syntax or str(getattr(meta, "TransferSyntaxUID", "") or "")
    return check_facts(_facts_of_dataset(dataset, syntax),
                       {k: _text(dataset, k) for k in ("StudyTime", "SeriesTime")})


def _facts_of_dataset(dataset: Dataset, syntax: str) -> InstanceFacts:
    return InstanceFacts(
        sop_instance_uid=_uid(dataset, "SOPInstanceUID", "SOP Instance UID"),
        sop_class_uid=_uid(dataset, "SOPClassUID", "SOP Class UID"),
        study_uid=_uid(dataset, "StudyInstanceUID", "Study Instance UID"),
        series_uid=_uid(dataset, "SeriesInstanceUID", "Series Instance UID"),
        transfer_syntax=syntax,
        patient_id=_text(dataset, "PatientID"),
        issuer_of_patient_id=_text(dataset, "IssuerOfPatientID"),
        patient_name=_text(dataset, "PatientName"),
        patient_birth_date=_text(dataset, "PatientBirthDate"),
        patient_sex=_text(dataset, "PatientSex"),
        other_patient_ids=_other_ids(dataset),
        study_date=_text(dataset, "StudyDate"),
        study_time=normalise_time(_text(dataset, "StudyTime")),
        accession_number=_text(dataset, "AccessionNumber"),
        study_id=_text(dataset, "StudyID"),
        study_description=_text(dataset, "StudyDescription"),
        referring_physician=_text(dataset, "ReferringPhysicianName"),
        institution_name=_text(dataset, "InstitutionName"),
        institution_codes=_codes(dataset, "InstitutionCodeSequence"),
        procedure_codes=_codes(dataset, "ProcedureCodeSequence"),
        modality=_text(dataset, "Modality"),
        body_part=_text(dataset, "BodyPartExamined"),
        contrast_agent=_text(dataset, "ContrastBolusAgent"),
        series_number=_int(dataset, "SeriesNumber"),
        series_description=_text(dataset, "SeriesDescription"),
        series_date=_text(dataset, "SeriesDate"),
        series_time=normalise_time(_text(dataset, "SeriesTime")),
        instance_number=_int(dataset, "InstanceNumber"),
        number_of_frames=_int(dataset, "NumberOfFrames"),
        lossy=_lossy(dataset, syntax),
        deidentified=deidentified(_text(dataset, "PatientIdentityRemoved"), _text(dataset, "DeidentificationMethod")),
        specific_character_set=_text(dataset, "SpecificCharacterSet"),
        device_serial=_text(dataset, "DeviceSerialNumber"),
        station_name=_text(dataset, "StationName"),
    )


def _codes_of(items: list[Dataset]) -> tuple[CodedEntry, ...]:
    if not items:  # the usual case: no Dataset to build (each costs ~40 attribute sets)
        return ()
    holder = Dataset()
    holder.ProcedureCodeSequence = items
    return _codes(holder, "ProcedureCodeSequence")


def facts_from_scan(scanned: header.HeaderScan) -> InstanceFacts:
    """The same facts as ``facts_from_dataset``, from one pass over the file (``dicom.header``)."""
    values = header.Values(scanned)
    text = values.text

    def uid(keyword: str, name: str) -> str:
        return require_uid(text(keyword), name)

    other_items = values.sequence("OtherPatientIDsSequence")
    others = None
    if other_items:
        others = Dataset()
        others.OtherPatientIDsSequence = other_items
    syntax = scanned.transfer_syntax
    return check_facts(InstanceFacts(
        sop_instance_uid=uid("SOPInstanceUID", "SOP Instance UID"), sop_class_uid=uid("SOPClassUID", "SOP Class UID"),
        study_uid=uid("StudyInstanceUID", "Study Instance UID"),
        series_uid=uid("SeriesInstanceUID", "Series Instance UID"), transfer_syntax=syntax,
        patient_id=_clean(text("PatientID")), issuer_of_patient_id=_clean(text("IssuerOfPatientID")),
        patient_name=_clean(text("PatientName")), patient_birth_date=text("PatientBirthDate"),
        patient_sex=text("PatientSex"), other_patient_ids=_other_ids(others) if others is not None else (),
        study_date=text("StudyDate"), study_time=normalise_time(text("StudyTime")),
        accession_number=_clean(text("AccessionNumber")), study_id=_clean(text("StudyID")),
        study_description=_clean(text("StudyDescription")),
        referring_physician=_clean(text("ReferringPhysicianName")),
        institution_name=_clean(text("InstitutionName")),
        institution_codes=_codes_of(values.sequence("InstitutionCodeSequence")),
        procedure_codes=_codes_of(values.sequence("ProcedureCodeSequence")),
        modality=text("Modality"), body_part=text("BodyPartExamined"),
        contrast_agent=_clean(text("ContrastBolusAgent")), series_number=header.first_int(text("SeriesNumber")),
        series_description=_clean(text("SeriesDescription")), series_date=text("SeriesDate"),
        series_time=normalise_time(text("SeriesTime")), instance_number=header.first_int(text("InstanceNumber")),
        number_of_frames=header.first_int(text("NumberOfFrames")),
        lossy=lossy.is_lossy(syntax, text("LossyImageCompression"), text("LossyImageCompressionMethod")),
        deidentified=deidentified(text("PatientIdentityRemoved"), text("DeidentificationMethod")),
        specific_character_set=text("SpecificCharacterSet"), device_serial=_clean(text("DeviceSerialNumber")),
        station_name=_clean(text("StationName")),
    ), {k: text(k) for k in ("StudyTime", "SeriesTime")})


#: InstanceFacts field → the attribute it comes from (its VR is in ``header.INDEXED``).
FACT_KEYWORDS = {
    "patient_id": "PatientID", "issuer_of_patient_id": "IssuerOfPatientID", "patient_name": "PatientName",
    "patient_birth_date": "PatientBirthDate", "patient_sex": "PatientSex", "study_date": "StudyDate",
    "accession_number": "AccessionNumber", "study_id": "StudyID", "study_description": "StudyDescription",
    "referring_physician": "ReferringPhysicianName", "institution_name": "InstitutionName",
    "modality": "Modality", "body_part": "BodyPartExamined", "contrast_agent": "ContrastBolusAgent",
    "series_description": "SeriesDescription", "series_date": "SeriesDate",
    "specific_character_set": "SpecificCharacterSet", "device_serial": "DeviceSerialNumber",
    "station_name": "StationName",
}


def check_facts(facts: InstanceFacts, raw_times: dict[str, str]) -> InstanceFacts:
    """Refuse (ValueTooLong) an instance whose indexed values break their VR; return it otherwise.

    Times are checked as sent (``raw_times``): the index keeps them normalised, which would
    hide an over-long value. NUL is removed from every text value first (``dicom.nul``: identical
    on both index backends).
    """
    facts = nul.without_nul(facts)
    numbers = (facts.series_number, facts.instance_number, facts.number_of_frames)
    if any(value is not None and not _INDEXABLE_INT[0] <= value <= _INDEXABLE_INT[1] for value in numbers):
        series, instance, frames = (value if value is None or _INDEXABLE_INT[0] <= value <= _INDEXABLE_INT[1]
                                    else None for value in numbers)
        facts = replace(facts, series_number=series, instance_number=instance, number_of_frames=frames)
    for name, keyword in FACT_KEYWORDS.items():
        limits.check_value(keyword, header.INDEXED[keyword], getattr(facts, name))
    for keyword, raw in raw_times.items():
        limits.check_value(keyword, "TM", raw)
    for other in facts.other_patient_ids:
        limits.check_value("PatientID", "LO", other.patient_id)
        limits.check_value("IssuerOfPatientID", "LO", other.issuer)
    for code in facts.institution_codes + facts.procedure_codes:
        for value in (code.value, code.scheme, code.meaning):
            limits.check_value("CodeValue", "SH", value)  # descriptive: only absurd lengths refused
    return facts


def _clean(value: str) -> str:
    return (LEFTOVER_ESCAPE.sub("", value) if "\x1b" in value else value).strip()


def read_facts(path: Path | str, received: ReceivedFile | None = None) -> InstanceFacts:
    """Facts of a file: one fast pass when it applies, pydicom's full read otherwise.

    The fast path only ever says yes for what the full read would also accept: a file it
    finds cut short, or whose facts it cannot decode, is judged again by the full read.
    ``received``: the receiver's first bytes of the file (``ReceivedFile.head``), read instead
    of the file when they hold what the fast pass reads.
    """
    try:
        scanned = header.scan(path, received.head, received.size) if received is not None else header.scan(path)
        if scanned is not None and scanned.complete:
            return facts_from_scan(scanned)
    except limits.ValueTooLong:
        raise  # certain, and the full read would load the whole over-long value to say the same
    except Exception:  # any doubt: the full read decides (and names the problem)
        pass
    return facts_from_dataset(read_header(path))


def facts_from_file(path: Path | str, expected_sop_class: str | None = None,
                    expected_sop_instance: str | None = None, received: ReceivedFile | None = None) -> InstanceFacts:
    """Read a file's header and extract facts, checking it against what the sender declared."""
    facts = read_facts(path, received)
    if expected_sop_class and facts.sop_class_uid != expected_sop_class and \
            UID(facts.sop_class_uid) != UID(expected_sop_class):  # equal text: no UID to build
        raise SopClassMismatch(
            f"dataset SOP Class {facts.sop_class_uid} does not match the presentation context {expected_sop_class}"
        )
    if expected_sop_instance and facts.sop_instance_uid != expected_sop_instance.strip():
        raise InvalidInstance(
            f"dataset SOP Instance UID {facts.sop_instance_uid} differs from the C-STORE request's "
            f"Affected SOP Instance UID {expected_sop_instance}"
        )
    return facts
