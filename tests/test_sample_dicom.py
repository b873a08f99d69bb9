"""The synthetic sample region in sample_dicom/ is valid, complete and reproducible.

The files are produced by scripts/make_sample_dicom.py; these tests check the
contract other parts of pacsnode (import, recognition rules, demos) rely on.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict
from datetime import date
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from support import dcmtk, have_tool

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_dicom"
SCRIPT = REPO / "scripts" / "make_sample_dicom.py"
DESCRIPTION = REPO / "docs" / "sample_dicom.md"
MANIFEST = REPO / "tests" / "data" / "sample_manifest.json"

UID_ROOT = "1.2.826.0.1.3680043.10.1078."
UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")
REFERENCE_DATE = date(2026, 11, 26)
PRIORS_RESIDENT_ID = "520100199001010011"

INSTITUTIONS = {
    "PRV001": ("Qianzhong Provincial People's Hospital", {"PRV_CT", "PRV_MR", "PRV_PACS"}),
    "CTY001": ("Anping County People's Hospital", {"CTY_CT", "CTY_DR", "CTY_PACS"}),
    "TWN001": ("Heping Township Health Centre", {"TWN_DR", "TWN_US", "TWN_PACS"}),
    "PVT001": ("Riverside Private Imaging Clinic", {"PVT_CT"}),
}

SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
    "DOC": "1.2.840.10008.5.1.4.1.1.104.1",
    "SR": "1.2.840.10008.5.1.4.1.1.88.11",
}


def _dcm_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.dcm"))


@pytest.fixture(scope="module")
def files() -> list[Path]:
    found = _dcm_files(SAMPLE)
    assert found, f"no .dcm files under {SAMPLE}: run `python {SCRIPT.relative_to(REPO)} sample_dicom`"
    return found


@pytest.fixture(scope="module")
def datasets(files) -> dict[Path, pydicom.Dataset]:
    return {f: pydicom.dcmread(f) for f in files}


def _date(yyyymmdd: str) -> date:
    return date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:]))


# --------------------------------------------------------------------------- files


def test_file_count_and_layout(datasets):
    assert 60 <= len(datasets) <= 120
    for path, ds in datasets.items():
        parts = path.relative_to(SAMPLE).parts
        assert len(parts) == 5, path
        inst, patient_dir, study_dir, series_dir, name = parts
        assert inst in INSTITUTIONS
        assert patient_dir == ds.PatientID
        assert study_dir == f"{ds.StudyDate}_{ds.AccessionNumber}"
        assert series_dir == f"{ds.SeriesNumber:03d}_{ds.Modality}"
        assert name == f"{ds.InstanceNumber}.dcm"


def test_every_file_is_part10_with_matching_file_meta(datasets):
    for path, ds in datasets.items():
        raw = path.read_bytes()
        assert raw[:128] == b"\x00" * 128 and raw[128:132] == b"DICM", path
        meta = ds.file_meta
        assert meta.MediaStorageSOPClassUID == ds.SOPClassUID, path
        assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID, path
        assert meta.TransferSyntaxUID in (ExplicitVRLittleEndian, ImplicitVRLittleEndian), path
        assert meta.ImplementationClassUID.startswith(UID_ROOT)
        assert meta.FileMetaInformationVersion == b"\x00\x01"


def test_exactly_one_series_uses_implicit_vr(datasets):
    implicit = {
        ds.SeriesInstanceUID
        for ds in datasets.values()
        if ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    }
    assert len(implicit) == 1


def test_uids_unique_and_valid(datasets):
    sop_uids = [ds.SOPInstanceUID for ds in datasets.values()]
    assert len(sop_uids) == len(set(sop_uids))
    series_to_study: dict[str, set] = defaultdict(set)
    study_to_patient: dict[str, set] = defaultdict(set)
    for ds in datasets.values():
        uids = [ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID]
        if "FrameOfReferenceUID" in ds:
            uids.append(ds.FrameOfReferenceUID)
        for uid in uids:
            assert len(uid) <= 64 and UID_RE.match(uid), uid
            assert uid.startswith(UID_ROOT), uid
        series_to_study[ds.SeriesInstanceUID].add(ds.StudyInstanceUID)
        study_to_patient[ds.StudyInstanceUID].add((ds.PatientID, ds.IssuerOfPatientID))
    assert all(len(v) == 1 for v in series_to_study.values())
    assert all(len(v) == 1 for v in study_to_patient.values())
    assert 12 <= len(study_to_patient) <= 16


def test_instance_numbers_contiguous(datasets):
    numbers: dict[str, list[int]] = defaultdict(list)
    for ds in datasets.values():
        numbers[ds.SeriesInstanceUID].append(int(ds.InstanceNumber))
    for uid, got in numbers.items():
        assert sorted(got) == list(range(1, len(got) + 1)), uid


def test_total_size_under_5_mb():
    total = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert total < 5_000_000, total


def test_description_says_generated():
    text = DESCRIPTION.read_text(encoding="utf-8")
    assert "make_sample_dicom.py" in text and "do not edit" in text.lower()


def test_sample_folder_holds_only_dicom_files():
    """`storescu +sd +r sample_dicom` stops at the first non-DICOM file, so there must be none."""
    others = [p for p in SAMPLE.rglob("*") if p.is_file() and not p.name.endswith(".dcm")]
    assert others == []
    for path in SAMPLE.rglob("*.dcm"):
        with path.open("rb") as f:
            assert f.read(132)[128:] == b"DICM", path


# --------------------------------------------------------------------------- region


def test_institution_and_equipment_attributes(datasets):
    for path, ds in datasets.items():
        code = path.relative_to(SAMPLE).parts[0]
        name, aes = INSTITUTIONS[code]
        assert ds.InstitutionName == name
        assert len(ds.InstitutionCodeSequence) == 1
        item = ds.InstitutionCodeSequence[0]
        assert (item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning) == (code, "CN-INST", name)
        assert ds.Manufacturer == "pacsnode-synthetic"
        assert ds.StationName in aes
        assert ds.DeviceSerialNumber
        assert ds.file_meta.SourceApplicationEntityTitle in aes
        assert ds.IssuerOfPatientID == code


def test_study_and_series_attributes(datasets):
    study_keys = ("AccessionNumber", "StudyID", "StudyDate", "StudyTime", "StudyDescription",
                  "ReferringPhysicianName", "PatientID", "IssuerOfPatientID", "PatientName",
                  "PatientBirthDate", "PatientSex")
    series_keys = ("Modality", "SeriesNumber", "SeriesDescription", "SeriesDate", "SeriesTime",
                   "BodyPartExamined")
    studies: dict[str, set] = defaultdict(set)
    series: dict[str, set] = defaultdict(set)
    for ds in datasets.values():
        for key in study_keys + series_keys:
            assert ds.get(key) not in (None, ""), (key, ds.SOPInstanceUID)
        assert ds.PatientSex in ("M", "F")
        (proc,) = ds.ProcedureCodeSequence
        assert proc.CodingSchemeDesignator == "CN-HR" and proc.CodeValue and proc.CodeMeaning
        studies[ds.StudyInstanceUID].add(tuple(str(ds[k].value) for k in study_keys) + (proc.CodeValue,))
        series[ds.SeriesInstanceUID].add(tuple(str(ds[k].value) for k in series_keys))
    assert all(len(v) == 1 for v in studies.values()), "study attributes differ within a study"
    assert all(len(v) == 1 for v in series.values()), "series attributes differ within a series"


def test_gb18030_patient_name(datasets):
    gb = [(p, ds) for p, ds in datasets.items() if ds.SpecificCharacterSet == "GB18030"]
    assert gb
    for path, ds in gb:
        assert ds.PatientName == "王^小明"
        raw = pydicom.dcmread(path).get_item(0x00100010).value  # undecoded bytes
        assert raw.rstrip(b" ") == "王^小明".encode("gb18030")


def test_utf8_patient_name(datasets):
    utf8 = [(p, ds) for p, ds in datasets.items() if ds.SpecificCharacterSet == "ISO_IR 192"]
    assert utf8
    for path, ds in utf8:
        assert ds.PatientName == "李^华"
        raw = pydicom.dcmread(path).get_item(0x00100010).value
        assert raw.rstrip(b" ") == "李^华".encode("utf-8")


def test_same_patient_id_at_two_hospitals_is_two_people(datasets):
    p0001 = {
        (ds.IssuerOfPatientID, str(ds.PatientName), ds.PatientBirthDate, ds.PatientSex)
        for ds in datasets.values()
        if ds.PatientID == "P0001"
    }
    assert {x[0] for x in p0001} == {"CTY001", "PRV001"}
    assert len(p0001) == 2
    cty, prv = sorted(p0001)
    assert cty[1:] == ("ZHAO^LEI", cty[2], "M")
    assert prv[1:] == ("QIAN^MEI", prv[2], "F")
    assert cty[2] != prv[2]


def test_resident_ids(datasets):
    residents = set()
    for ds in datasets.values():
        for item in ds.get("OtherPatientIDsSequence", []):
            assert item.IssuerOfPatientID == "CN-RESIDENT-ID"
            assert item.TypeOfPatientID == "TEXT"
            assert re.fullmatch(r"\d{18}", item.PatientID)
            residents.add(item.PatientID)
    assert len(residents) >= 3
    assert PRIORS_RESIDENT_ID in residents


def test_priors_patient_has_studies_at_three_institutions(datasets):
    studies = {}
    for path, ds in datasets.items():
        ids = {i.PatientID for i in ds.get("OtherPatientIDsSequence", [])}
        if PRIORS_RESIDENT_ID in ids:
            code = path.relative_to(SAMPLE).parts[0]
            studies.setdefault(ds.StudyInstanceUID, set()).add(
                (code, ds.PatientID, ds.IssuerOfPatientID, ds.ProcedureCodeSequence[0].CodeValue, ds.StudyDate)
            )
    assert all(len(v) == 1 for v in studies.values())
    rows = sorted(next(iter(v)) for v in studies.values())
    assert {r[0] for r in rows} == {"TWN001", "CTY001", "PRV001"}
    for code, pid, issuer, _, _ in rows:
        assert issuer == code
    assert len({r[1] for r in rows}) == 3, "each hospital assigns its own local PatientID"
    by_proc = {r[3]: (r[0], (REFERENCE_DATE - _date(r[4])).days) for r in rows}
    assert by_proc["DX-CHEST"][0] == "TWN001"
    assert by_proc["CT-CHEST-PLAIN"][0] == "CTY001"
    assert by_proc["MR-BRAIN-PLAIN"][0] == "PRV001"
    ages = sorted(age for _, age in by_proc.values())
    # the 7/14/30/90-day validity windows must not all give the same answer
    assert ages[0] <= 7 and 14 < ages[1] <= 30 and ages[2] > 90


def test_private_clinic_has_a_study(datasets):
    assert any(p.relative_to(SAMPLE).parts[0] == "PVT001" for p in datasets)


# --------------------------------------------------------------------------- modalities


def test_modalities_and_sop_classes_present(datasets):
    seen = {(ds.Modality, ds.SOPClassUID) for ds in datasets.values()}
    for modality, sop in SOP_CLASSES.items():
        assert (modality, sop) in seen, modality
    for ds in datasets.values():
        assert SOP_CLASSES[ds.Modality] == ds.SOPClassUID


def test_ct_attributes(datasets):
    cts = [ds for ds in datasets.values() if ds.Modality == "CT"]
    per_study: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for ds in cts:
        assert ds.CTDIvol > 0 and float(ds.KVP) > 0
        assert float(ds.RescaleSlope) == 1 and "RescaleIntercept" in ds
        assert "WindowCenter" in ds and "WindowWidth" in ds
        per_study[ds.StudyInstanceUID][ds.SeriesInstanceUID] += 1
    assert any(len(s) >= 2 and all(n >= 5 for n in s.values()) for s in per_study.values())
    assert any(ds.get("ContrastBolusAgent") for ds in cts)


def test_pixel_data_is_not_blank(datasets):
    photometrics = set()
    for path, ds in datasets.items():
        if "PixelData" not in ds:
            assert ds.Modality in ("DOC", "SR")
            continue
        arr = ds.pixel_array
        assert arr.std() > 0, path
        photometrics.add((ds.Modality, ds.PhotometricInterpretation))
        if ds.SamplesPerPixel == 1:
            assert "WindowCenter" in ds and "WindowWidth" in ds, path
        else:
            assert ds.PhotometricInterpretation == "RGB" and arr.shape[-1] == 3
    assert ("DX", "MONOCHROME1") in photometrics
    assert ("US", "RGB") in photometrics
    dx = [ds for ds in datasets.values() if ds.Modality == "DX"]
    assert all(float(ds.ImageAndFluoroscopyAreaDoseProduct) > 0 for ds in dx)


def test_encapsulated_pdf(datasets):
    docs = [ds for ds in datasets.values() if ds.Modality == "DOC"]
    assert docs
    for ds in docs:
        assert ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
        assert ds.DocumentTitle
        pdf = bytes(ds.EncapsulatedDocument)[: ds.EncapsulatedDocumentLength]
        assert pdf.startswith(b"%PDF-1.") and pdf.rstrip().endswith(b"%%EOF")
        # the cross-reference table points at the objects it names
        startxref = int(re.search(rb"startxref\s+(\d+)", pdf).group(1))
        assert pdf[startxref:].startswith(b"xref")
        entries = re.findall(rb"(\d{10}) 00000 n ", pdf[startxref:])
        assert entries
        for number, offset in enumerate(entries, start=1):
            assert pdf[int(offset):].startswith(b"%d 0 obj" % number)
    # the PDF report belongs to the priors patient's CT chest study
    ct_chest_studies = {
        ds.StudyInstanceUID
        for ds in datasets.values()
        if ds.Modality == "CT" and ds.ProcedureCodeSequence[0].CodeValue == "CT-CHEST-PLAIN"
        and PRIORS_RESIDENT_ID in {i.PatientID for i in ds.get("OtherPatientIDsSequence", [])}
    }
    assert {ds.StudyInstanceUID for ds in docs} & ct_chest_studies


def test_basic_text_sr(datasets):
    srs = [ds for ds in datasets.values() if ds.Modality == "SR"]
    assert srs
    mr_studies = {ds.StudyInstanceUID for ds in datasets.values() if ds.Modality == "MR"}
    for ds in srs:
        assert ds.StudyInstanceUID in mr_studies
        assert ds.CompletionFlag == "COMPLETE" and ds.VerificationFlag == "VERIFIED"
        assert ds.ValueType == "CONTAINER" and ds.ConceptNameCodeSequence[0].CodeValue
        texts = [i for i in ds.ContentSequence if i.ValueType == "TEXT"]
        assert texts and all(i.TextValue and i.ConceptNameCodeSequence for i in texts)


# --------------------------------------------------------------------------- tools


@pytest.mark.skipif(not have_tool("dcmdump"), reason="DCMTK dcmdump not installed")
def test_dcmdump_renders_one_file_per_sop_class(datasets):
    picked: dict[str, Path] = {}
    for path, ds in datasets.items():
        picked.setdefault(ds.SOPClassUID, path)
        if ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian:
            picked.setdefault("implicit", path)
    for path in picked.values():
        proc = subprocess.run([dcmtk("dcmdump"), "-q", str(path)], capture_output=True)
        assert proc.returncode == 0, proc.stderr
        assert b"SOPInstanceUID" in proc.stdout
        assert not re.search(rb"^[EW]: ", proc.stderr, re.M), proc.stderr
    gb = next(p for p, ds in datasets.items() if ds.SpecificCharacterSet == "GB18030")
    proc = subprocess.run([dcmtk("dcmdump"), "-q", "+U8", str(gb)], capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert "王^小明" in proc.stdout.decode("utf-8")


def test_generator_is_deterministic(tmp_path):
    out = tmp_path / "sample_dicom"
    manifest, description = tmp_path / "manifest.json", tmp_path / "sample_dicom.md"
    subprocess.run([sys.executable, str(SCRIPT), str(out), "--manifest", str(manifest), "--readme", str(description)],
                   check=True, capture_output=True)
    expected = sorted(p.relative_to(SAMPLE) for p in SAMPLE.rglob("*") if p.is_file())
    produced = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert produced == expected, "sample_dicom/ is stale: regenerate it with the script"
    for rel in expected:
        assert (out / rel).read_bytes() == (SAMPLE / rel).read_bytes(), rel
    assert manifest.read_bytes() == MANIFEST.read_bytes(), "regenerate tests/data/sample_manifest.json"
    assert description.read_bytes() == DESCRIPTION.read_bytes(), "regenerate docs/sample_dicom.md"
