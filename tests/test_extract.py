"""Dataset header → InstanceFacts: charsets, UIDs, times, other IDs, codes, lossy flag, refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit, JPEGLosslessSV1, UID

from pacsnode.dicom.extract import facts_from_dataset, facts_from_file, is_valid_uid, normalise_time, read_header, \
    require_uid
from pacsnode.errors import InvalidInstance, SopClassMismatch
from pacsnode.model import CodedEntry, OtherPatientId

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
ROOT = "1.2.826.0.1.3680043.10.1078.99"


def dataset(**attributes: Any) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = f"{ROOT}.3.1"
    ds.StudyInstanceUID = f"{ROOT}.1"
    ds.SeriesInstanceUID = f"{ROOT}.2.1"
    ds.Modality = "CT"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def write(path: Path, ds: Dataset, syntax: str = ExplicitVRLittleEndian,
          raw: dict[int, tuple[str, bytes]] | None = None, pixels: int = 0) -> Path:
    """Write ``ds`` as Part 10; ``raw`` elements are written byte for byte (already encoded)."""
    for tag, (vr, value) in (raw or {}).items():
        ds.add_new(tag, vr, value)
    if pixels:
        ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, pixels // 2, 16, 16, 15
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 0
        ds.PixelData = bytes(range(256)) * (pixels // 256) + bytes(pixels % 256)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    dcmwrite(path, ds, enforce_file_format=True)
    return path


# -- character sets -------------------------------------------------------------------------------
CHARSET_CASES = [
    pytest.param("GB18030", "王^小明".encode("gb18030"), "王^小明", id="GB18030"),
    pytest.param("ISO_IR 192", "李^华".encode("utf-8"), "李^华", id="UTF-8"),
    pytest.param(["", "ISO 2022 IR 58"],  # PS3.5 Annex K.2, byte for byte
                 b"Zhang^XiaoDong=\x1b$)A\xd5\xc5^\x1b$)A\xd0\xa1\xb6\xab=", "Zhang^XiaoDong=张^小东", id="ISO2022-IR58"),
    pytest.param("ISO_IR 100", "Müller^Jürgen".encode("latin-1"), "Müller^Jürgen", id="latin-1"),
]


@pytest.mark.parametrize("charset, encoded, expected", CHARSET_CASES)
def test_person_names_decode_with_the_specific_character_set(tmp_path: Path, charset: Any, encoded: bytes,
                                                             expected: str) -> None:
    path = write(tmp_path / "x.dcm", dataset(SpecificCharacterSet=charset), raw={0x00100010: ("PN", encoded)})
    assert encoded in path.read_bytes()  # the file holds the encoded bytes, not pydicom's re-encoding
    facts = facts_from_file(path)
    assert facts.patient_name == expected
    assert "\x1b" not in facts.patient_name


def test_gb18030_text_attributes_decode(tmp_path: Path) -> None:
    raw = {0x00081030: ("LO", "胸部CT平扫 ".encode("gb18030")), 0x00080080: ("LO", "黔中省人民医院".encode("gb18030")),
           0x00080090: ("PN", "张^医生".encode("gb18030"))}
    facts = facts_from_file(write(tmp_path / "x.dcm", dataset(SpecificCharacterSet="GB18030"), raw=raw))
    assert (facts.study_description, facts.institution_name, facts.referring_physician) == (
        "胸部CT平扫", "黔中省人民医院", "张^医生")
    assert facts.specific_character_set == "GB18030"


# -- UIDs -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, valid", [
    ("1.2.840.10008.5.1.4.1.1.2", True),
    ("1", True),
    ("2.25.329800735698586629295641978511506172918", True),
    ("1." + "2" * 62, True),  # 64 characters
    ("1." + "2" * 63, False),  # 65 characters
    ("", False),
    ("1..2", False),
    (".1.2", False),
    ("1.2.", False),
    ("1.2.3a", False),
    ("1.2.3.abc", False),
    ("1.2 .3", False),
    ("1.2.3 ", False),
    ("../../etc/x", False),
    ("1.2/../../3", False),
    ("1.2\\3", False),
    ("/1.2.3", False),
    ("１.２", False),  # full-width digits are not DICOM digits
])
def test_uid_validation(value: str, valid: bool) -> None:
    assert is_valid_uid(value) is valid


def test_require_uid_trims_padding_and_names_the_attribute() -> None:
    assert require_uid("1.2.3\x00", "SOP Instance UID") == "1.2.3"
    assert require_uid(" 1.2.3 ", "SOP Instance UID") == "1.2.3"
    with pytest.raises(InvalidInstance, match="Study Instance UID is missing"):
        require_uid("", "Study Instance UID")
    with pytest.raises(InvalidInstance, match="Series Instance UID"):
        require_uid("1.2.x", "Series Instance UID")


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
@pytest.mark.parametrize("keyword", ["SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID"])
@pytest.mark.parametrize("bad", ["", "../../etc/x", "1.2.3.abc"])
def test_a_missing_or_malformed_key_uid_refuses_the_instance(keyword: str, bad: str) -> None:
    ds = dataset()
    if bad:
        setattr(ds, keyword, bad)
    else:
        delattr(ds, keyword)
    with pytest.raises(InvalidInstance):
        facts_from_dataset(ds, ExplicitVRLittleEndian)


# -- times ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, expected", [
    ("", ""),
    ("   ", ""),
    ("12", "120000.000000"),
    ("1230", "123000.000000"),
    ("123045", "123045.000000"),
    ("123045.5", "123045.500000"),
    ("123045.123456", "123045.123456"),
    ("123045.1234567", "123045.123456"),
    ("12:30:45", "123045.000000"),
    ("12:30", "123000.000000"),
    (" 0815 ", "081500.000000"),
])
def test_normalise_time(value: str, expected: str) -> None:
    assert normalise_time(value) == expected


def test_study_and_series_times_are_normalised_in_facts() -> None:
    facts = facts_from_dataset(dataset(StudyTime="0912", SeriesTime="091215.25"))
    assert (facts.study_time, facts.series_time) == ("091200.000000", "091215.250000")


# -- other patient IDs and codes ------------------------------------------------------------------
def _item(**attributes: str) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def test_other_patient_ids_keep_id_issuer_and_type(tmp_path: Path) -> None:
    ds = dataset(PatientID="P0002", IssuerOfPatientID="PRV001", OtherPatientIDsSequence=Sequence([
        _item(PatientID="520102196503040013", IssuerOfPatientID="CN-RESIDENT-ID", TypeOfPatientID="TEXT"),
        _item(PatientID="T0009", IssuerOfPatientID="TWN001"),
        _item(IssuerOfPatientID="NO-ID"),  # an item without an ID carries nothing to index
    ]))
    facts = facts_from_file(write(tmp_path / "x.dcm", ds))
    assert (facts.patient_id, facts.issuer_of_patient_id) == ("P0002", "PRV001")
    assert facts.other_patient_ids == (
        OtherPatientId("520102196503040013", "CN-RESIDENT-ID", "TEXT"), OtherPatientId("T0009", "TWN001", ""))


def test_procedure_and_institution_code_sequences(tmp_path: Path) -> None:
    ds = dataset(
        ProcedureCodeSequence=Sequence([
            _item(CodeValue="CT-CHEST-PLAIN", CodingSchemeDesignator="CN-HR", CodeMeaning="CT chest plain"),
            _item(CodingSchemeDesignator="CN-HR", CodeMeaning="no value, skipped"),
        ]),
        InstitutionCodeSequence=Sequence([
            _item(CodeValue="PRV001", CodingSchemeDesignator="CN-INST", CodeMeaning="Provincial Hospital")]),
    )
    facts = facts_from_file(write(tmp_path / "x.dcm", ds))
    assert facts.procedure_codes == (CodedEntry("CT-CHEST-PLAIN", "CN-HR", "CT chest plain"),)
    assert facts.institution_codes == (CodedEntry("PRV001", "CN-INST", "Provincial Hospital"),)


def test_absent_optional_attributes_are_empty_not_errors() -> None:
    facts = facts_from_dataset(dataset())
    assert (facts.patient_id, facts.patient_name, facts.study_date, facts.other_patient_ids,
            facts.procedure_codes, facts.series_number, facts.instance_number) == ("", "", "", (), (), None, None)


def test_numbers_and_series_attributes() -> None:
    facts = facts_from_dataset(dataset(SeriesNumber="3", InstanceNumber="12", NumberOfFrames="40",
                                       BodyPartExamined="CHEST", ContrastBolusAgent="Iohexol",
                                       StationName="PRV_CT", DeviceSerialNumber="SN-1"))
    assert (facts.series_number, facts.instance_number, facts.number_of_frames) == (3, 12, 40)
    assert (facts.body_part, facts.contrast_agent, facts.station_name, facts.device_serial) == (
        "CHEST", "Iohexol", "PRV_CT", "SN-1")


# -- lossy ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("syntax, flag, lossy", [
    (ExplicitVRLittleEndian, None, False),
    (ExplicitVRLittleEndian, "00", False),
    (ExplicitVRLittleEndian, "01", True),  # decompressed from lossy: still lossy
    (JPEGBaseline8Bit, None, True),
    (JPEGLosslessSV1, None, False),
    ("1.2.840.10008.1.2.4.91", None, True),  # JPEG 2000 (lossy allowed)
    ("1.2.840.10008.1.2.4.90", None, False),  # JPEG 2000 lossless only
])
def test_lossy_detection(syntax: str, flag: str | None, lossy: bool) -> None:
    ds = dataset() if flag is None else dataset(LossyImageCompression=flag)
    facts = facts_from_dataset(ds, syntax)
    assert facts.lossy is lossy
    assert facts.transfer_syntax == syntax


# -- de-identified copies (issue 12.2) ---------------------------------------------------------------
@pytest.mark.parametrize("attributes, deidentified", [
    ({}, False),
    ({"PatientIdentityRemoved": "NO"}, False),
    ({"PatientIdentityRemoved": "YES"}, True),
    ({"PatientIdentityRemoved": "NO", "DeidentificationMethod": "DCMTK dcmodify"}, True),
    ({"DeidentificationMethod": ["Basic profile", "Retain dates"]}, True),
])
def test_deidentified_copy_is_recognised_by_both_readers(tmp_path: Path, attributes: dict[str, Any],
                                                         deidentified: bool) -> None:
    from pacsnode.dicom.extract import read_facts

    ds = dataset(**attributes)
    assert facts_from_dataset(ds, ExplicitVRLittleEndian).deidentified is deidentified
    path = write(tmp_path / "x.dcm", ds)
    assert read_facts(path).deidentified is deidentified  # the store path's one-pass reader


# -- what the sender declared ---------------------------------------------------------------------
def test_sop_class_that_differs_from_the_context_is_a_mismatch(tmp_path: Path) -> None:
    path = write(tmp_path / "x.dcm", dataset(SOPClassUID=MR))
    with pytest.raises(SopClassMismatch):
        facts_from_file(path, expected_sop_class=CT)
    assert facts_from_file(path, expected_sop_class=MR).sop_class_uid == MR


def test_sop_instance_that_differs_from_the_request_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "x.dcm", dataset())
    with pytest.raises(InvalidInstance, match="Affected SOP Instance UID"):
        facts_from_file(path, expected_sop_instance=f"{ROOT}.3.999")
    assert facts_from_file(path, expected_sop_instance=f"{ROOT}.3.1 ").sop_instance_uid == f"{ROOT}.3.1"


def test_transfer_syntax_comes_from_the_file_meta(tmp_path: Path) -> None:
    facts = facts_from_file(write(tmp_path / "x.dcm", dataset(), syntax=ImplicitVRLittleEndian))
    assert facts.transfer_syntax == ImplicitVRLittleEndian


# -- files that are not whole DICOM ---------------------------------------------------------------
def _cut(path: Path, keep: int) -> Path:
    out = path.with_name(f"cut-{keep}.dcm")
    out.write_bytes(path.read_bytes()[:keep])
    return out


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_a_file_cut_inside_the_pixel_data_is_refused(tmp_path: Path, syntax: str) -> None:
    whole = write(tmp_path / "whole.dcm", dataset(PatientName="CUT^PIXELS"), syntax=syntax, pixels=8192)
    assert facts_from_file(whole).patient_name == "CUT^PIXELS"
    size = whole.stat().st_size
    for keep in (size - 1, size - 4000, size - 8000):
        with pytest.raises(InvalidInstance, match="incomplete"):
            facts_from_file(_cut(whole, keep))


def test_a_file_cut_inside_the_header_is_refused(tmp_path: Path) -> None:
    ds = dataset(PatientName="CUT^HEADER", StudyDescription="x" * 40)
    whole = write(tmp_path / "whole.dcm", ds, pixels=512)
    data = whole.read_bytes()
    inside_description = data.index(b"x" * 40) + 20
    inside_a_tag = data.index(b"\xe0\x7f\x10\x00") + 2  # half of the Pixel Data tag
    for keep in (inside_description, inside_a_tag):
        with pytest.raises(InvalidInstance):
            facts_from_file(_cut(whole, keep))


def test_bytes_that_are_not_dicom_are_refused(tmp_path: Path) -> None:
    for name, data in (("text.dcm", b"this is not DICOM at all\n" * 40), ("empty.dcm", b""),
                       ("zeros.dcm", bytes(4096))):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(InvalidInstance):
            read_header(path)


def test_a_bare_dataset_without_preamble_is_read(tmp_path: Path) -> None:
    """Old archives hold datasets without the Part 10 header; with a SOP Instance UID they are usable."""
    ds = dataset(PatientName="BARE^DATASET")
    path = tmp_path / "bare.dcm"
    dcmwrite(path, ds, implicit_vr=True, little_endian=True)
    assert not path.read_bytes()[128:132] == b"DICM"
    facts = facts_from_file(path)
    assert (facts.sop_instance_uid, facts.patient_name) == (f"{ROOT}.3.1", "BARE^DATASET")


def test_sample_files_all_extract(samples: list[Path]) -> None:
    for path in samples:
        facts = facts_from_file(path)
        assert is_valid_uid(facts.sop_instance_uid) and UID(facts.sop_class_uid).is_valid
        assert "\x1b" not in facts.patient_name
