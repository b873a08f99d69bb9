"""C-FIND SCP: the handler in process (fake event and node), then interop with DCMTK ``findscu``.

Interop: one server per module, a fresh home with a local peer FINDSCU, a few files written
with pydicom and imported before the server starts, ``pacsnode serve`` in a subprocess on a
free port, always killed in teardown. A pynetdicom SCU covers extended negotiation, which
findscu cannot request.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from pacsnode.dimse.find import answer_find, find_failure, sop_extended_answers
from pacsnode.errors import NotPermitted, TooManyResults
from pacsnode.model import Caller
from support import PACSNODE, NodeProcess, dcmtk, free_port, have_tool

interop = pytest.mark.interop
needs_findscu = pytest.mark.skipif(not have_tool("findscu"), reason="DCMTK findscu is not installed")

CT = "1.2.840.10008.5.1.4.1.1.2"
ROOT = "1.2.826.0.1.3680043.10.1078.77"
A, B, C, D = (f"{ROOT}.{n}" for n in (1, 2, 3, 4))
RESIDENT_ID = "520102196503040013"
INSTITUTION = "PRV001"


# -- the handler in process -------------------------------------------------------------------
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
PATIENT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"


class FakeNode:
    def __init__(self, matches: list[dict[str, Any]] | None = None, error: Exception | None = None) -> None:
        self.config = SimpleNamespace(aet="PACSNODE", query=SimpleNamespace(case_sensitive_pn=False))
        self.matches, self.error, self.query = matches or [], error, None

    def identify(self, aet: str, host: str = "", peer_certificate: bytes | None = None) -> Caller:
        return Caller.nobody(aet, host)

    def find(self, query: Any, caller: Caller) -> Iterator[dict[str, Any]]:
        self.query = query
        if self.error is not None:
            raise self.error
        return iter(self.matches)


def study_identifier(**keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = ""
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def statuses_of(results: list[tuple[Any, Any]]) -> list[int]:
    return [int(status.Status) if isinstance(status, Dataset) else int(status) for status, _ in results]


CALLER = Caller.nobody("FINDSCU", "127.0.0.1")


def test_handler_streams_matches_then_success() -> None:
    node = FakeNode([{"StudyInstanceUID": A}, {"StudyInstanceUID": B}])
    results = list(answer_find(node, study_identifier(), STUDY_FIND, CALLER, True))  # type: ignore[arg-type]
    assert [r.StudyInstanceUID for r in results] == [A, B]
    assert node.query.combined_datetime and node.query.case_insensitive_pn  # type: ignore[attr-defined]


@pytest.mark.parametrize("identifier, error, status", [
    (Dataset(), None, 0xA900),
    (study_identifier(), TooManyResults("more than 10 matches"), 0xA700),
    (study_identifier(), NotPermitted("calling AE 'X' is not a registered peer"), 0x0124),
    (study_identifier(), RuntimeError("boom"), 0xC000),
], ids=["missing-level-identifier-mismatch", "too-many-out-of-resources", "not-permitted", "unexpected-unable"])
def test_handler_failures_end_with_one_status_and_comment(identifier: Dataset, error: Exception | None,
                                                          status: int) -> None:
    with pytest.raises(Exception) as raised:
        list(answer_find(FakeNode(error=error), identifier, STUDY_FIND, CALLER, False))  # type: ignore[arg-type]
    got, comment = find_failure(raised.value)
    assert got == status and comment


def test_sop_extended_accepts_combined_datetime_for_find_only() -> None:
    asked = {STUDY_FIND: b"\x01\x01\x01\x01", PATIENT_FIND: b"\x00\x01", STUDY_MOVE: b"\x01"}
    assert sop_extended_answers(asked) == {STUDY_FIND: b"\x00\x01\x00\x00", PATIENT_FIND: b"\x00\x01"}


# -- interop ---------------------------------------------------------------------------------
def _write(path: Path, study: str, series: str, number: int, **attrs: Any) -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CT
    ds.file_meta.MediaStorageSOPInstanceUID = f"{series}.{number}"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = CT, f"{series}.{number}"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.SeriesNumber, ds.InstanceNumber = int(series.rsplit(".", 1)[1]), number
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def make_files(folder: Path) -> None:
    """P001 Zhang^San: A (CT, 3 images), D; P002 王^小明 (UTF-8): B (MR, 2 series); P003 GB18030: C."""
    zhang = dict(PatientID="P001", IssuerOfPatientID="HOSP_A", PatientName="Zhang^San", Modality="CT")
    for n in (1, 2, 3):
        _write(folder / f"a{n}.dcm", A, f"{A}.1", n, StudyDate="20240101", StudyTime="080000", **zhang)
    _write(folder / "d1.dcm", D, f"{D}.1", 1, StudyDate="20240102", StudyTime="053000", **zhang)
    for series in (1, 2):
        _write(folder / f"b{series}.dcm", B, f"{B}.{series}", 1, SpecificCharacterSet="ISO_IR 192",
               PatientID="P002", PatientName="王^小明", StudyDate="20240101", StudyTime="230000", Modality="MR")
    other = Dataset()
    other.PatientID, other.IssuerOfPatientID = RESIDENT_ID, "CN-RESIDENT-ID"
    _write(folder / "c1.dcm", C, f"{C}.1", 1, SpecificCharacterSet="GB18030", PatientID="P003",
           PatientName="Wang^XiaoHong=王^小红", StudyDate="20240103", StudyTime="120000", Modality="DX",
           OtherPatientIDsSequence=[other])


def cli(home: Path, *args: str) -> None:
    subprocess.run([*PACSNODE, "--home", str(home), *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, index_factory: Any) -> Iterator[int]:
    base = tmp_path_factory.mktemp("findscu")
    home, files, port = base / "home", base / "files", free_port()
    make_files(files)
    url = index_factory.url()
    cli(home, "init", "--port", str(port), "--institution", INSTITUTION, *(["--index-url", url] if url else []))
    cli(home, "peer", "add", "findscu", "--aet", "FINDSCU", "--host", "127.0.0.1", "--port", "1",
        "--institution", INSTITUTION)  # a workstation of this hospital: sees everything
    cli(home, "import", str(files))
    with NodeProcess(home, port=port, log_path=base / "serve.log") as node:
        yield node.port


def findscu(port: int, out: Path, model: str, *keys: str | bytes, aet: str = "FINDSCU") -> tuple[str, list[Dataset]]:
    """Run findscu with -X; return its verbose output (for the final status) and the responses."""
    out.mkdir(parents=True, exist_ok=True)
    args: list[str | bytes] = [dcmtk("findscu"), "-v", "-aet", aet, "-aec", "PACSNODE", model, "-X", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    done = subprocess.run([*args, "127.0.0.1", str(port)], capture_output=True, timeout=30)
    responses = [dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]
    return (done.stdout + done.stderr).decode("utf-8", "replace"), responses


def final_status(output: str) -> str:
    lines = [line for line in output.splitlines() if "Final Find Response" in line]
    return lines[-1] if lines else ""


LEVEL_CASES: list[tuple[str, str, list[str], set[str], str]] = [
    ("study-root-study-all", "-S", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"], {A, B, C, D},
     "StudyInstanceUID"),
    ("study-root-study-by-patient", "-S", ["QueryRetrieveLevel=STUDY", "PatientID=P001", "StudyInstanceUID"],
     {A, D}, "StudyInstanceUID"),
    ("study-root-study-date-range", "-S", ["QueryRetrieveLevel=STUDY", "StudyDate=20240101-20240102"], {A, B, D},
     "StudyInstanceUID"),
    ("study-root-study-modality", "-S", ["QueryRetrieveLevel=STUDY", "ModalitiesInStudy=MR\\DX"], {B, C},
     "StudyInstanceUID"),
    ("study-root-series", "-S", ["QueryRetrieveLevel=SERIES", f"StudyInstanceUID={B}", "SeriesInstanceUID",
                                 "Modality=MR"], {f"{B}.1", f"{B}.2"}, "SeriesInstanceUID"),
    ("study-root-image", "-S", ["QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={A}", f"SeriesInstanceUID={A}.1",
                                "SOPInstanceUID"], {f"{A}.1.1", f"{A}.1.2", f"{A}.1.3"}, "SOPInstanceUID"),
    ("patient-root-patient", "-P", ["QueryRetrieveLevel=PATIENT", "PatientID"], {"P001", "P002", "P003"},
     "PatientID"),
    ("patient-root-study", "-P", ["QueryRetrieveLevel=STUDY", "PatientID=P001", "StudyInstanceUID"], {A, D},
     "StudyInstanceUID"),
    ("patient-root-series", "-P", ["QueryRetrieveLevel=SERIES", "PatientID=P002", f"StudyInstanceUID={B}",
                                   "SeriesInstanceUID"], {f"{B}.1", f"{B}.2"}, "SeriesInstanceUID"),
    ("patient-root-image", "-P", ["QueryRetrieveLevel=IMAGE", "PatientID=P001", f"StudyInstanceUID={A}",
                                  f"SeriesInstanceUID={A}.1", "InstanceNumber=2"], {f"{A}.1.2"}, "SOPInstanceUID"),
    ("other-patient-id-sequence", "-S", ["QueryRetrieveLevel=STUDY",
                                         f"OtherPatientIDsSequence[0].PatientID={RESIDENT_ID}",
                                         "OtherPatientIDsSequence[0].IssuerOfPatientID=CN-RESIDENT-ID"], {C},
     "StudyInstanceUID"),
]


@interop
@needs_findscu
@pytest.mark.parametrize("model, keys, expected, unique", [c[1:] for c in LEVEL_CASES],
                         ids=[c[0] for c in LEVEL_CASES])
def test_levels(server: int, tmp_path: Path, model: str, keys: list[str], expected: set[str], unique: str) -> None:
    output, responses = findscu(server, tmp_path, model, *keys)
    assert "Success" in final_status(output)
    assert {str(r.get(unique)) for r in responses} == expected
    assert all(r.RetrieveAETitle == "PACSNODE" for r in responses)


@interop
@needs_findscu
def test_study_counts_and_upper_attributes(server: int, tmp_path: Path) -> None:
    _, responses = findscu(server, tmp_path, "-S", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={A}",
                           "PatientName", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
                           "NumberOfStudyRelatedInstances", "NumberOfPatientRelatedStudies")
    [study] = responses
    assert (str(study.PatientName), study.ModalitiesInStudy) == ("Zhang^San", "CT")
    assert (study.NumberOfStudyRelatedSeries, study.NumberOfStudyRelatedInstances) == (1, 3)
    assert study.NumberOfPatientRelatedStudies == 2


@interop
@needs_findscu
def test_chinese_name_in_utf8(server: int, tmp_path: Path) -> None:
    _, responses = findscu(server, tmp_path, "-S", "SpecificCharacterSet=ISO_IR 192", "QueryRetrieveLevel=STUDY",
                           "PatientName=王*", "StudyInstanceUID")
    assert {str(r.StudyInstanceUID): str(r.PatientName) for r in responses} == {
        B: "王^小明", C: "Wang^XiaoHong=王^小红"}
    assert all(r.SpecificCharacterSet == "ISO_IR 192" for r in responses)


@interop
@needs_findscu
def test_chinese_name_in_gb18030(server: int, tmp_path: Path) -> None:
    _, responses = findscu(server, tmp_path, "-S", "SpecificCharacterSet=GB18030", "QueryRetrieveLevel=STUDY",
                           b"PatientName=" + "王^小明".encode("gb18030"), "StudyInstanceUID")
    [study] = responses
    assert (study.StudyInstanceUID, str(study.PatientName), study.SpecificCharacterSet) == (B, "王^小明", "GB18030")


@interop
@needs_findscu
def test_unknown_ae_is_refused(server: int, tmp_path: Path) -> None:
    output, responses = findscu(server, tmp_path, "-S", "QueryRetrieveLevel=STUDY", "StudyInstanceUID",
                                aet="STRANGER")
    assert responses == []
    assert "0x124" in final_status(output) or "Not Authorized" in final_status(output)


@interop
@needs_findscu
def test_malformed_identifier_fails_and_server_keeps_answering(server: int, tmp_path: Path) -> None:
    output, responses = findscu(server, tmp_path / "bad", "-S", "PatientName=Zhang*")
    assert responses == []
    assert "DataSetDoesNotMatchSOPClass" in final_status(output) or "0xa900" in final_status(output).lower()
    output, responses = findscu(server, tmp_path / "good", "-S", "QueryRetrieveLevel=STUDY", "PatientName=Zhang*")
    assert "Success" in final_status(output) and {r.StudyInstanceUID for r in responses} == {A, D}


def _pynetdicom_find(port: int, keys: dict[str, str], combined: bool) -> list[Dataset]:
    ae = AE(ae_title="FINDSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    negotiation = []
    if combined:
        item = SOPClassExtendedNegotiation()
        item.sop_class_uid = StudyRootQueryRetrieveInformationModelFind
        item.service_class_application_information = b"\x00\x01"  # relational no, combined date-time yes
        negotiation.append(item)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSNODE", ext_neg=negotiation)
    assert assoc.is_established
    try:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = ""
        for keyword, value in keys.items():
            setattr(identifier, keyword, value)
        found = []
        for status, response in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind):
            assert status is not None and status.Status in (0x0000, 0xFF00, 0xFF01)
            if response is not None:
                found.append(response)
        if combined:
            assert assoc.acceptor.sop_class_extended.get(StudyRootQueryRetrieveInformationModelFind) == b"\x00\x01"
        return found
    finally:
        assoc.release()


@interop
@pytest.mark.parametrize("combined, expected", [(False, set()), (True, {B, D})],
                         ids=["independent-without-negotiation", "combined-across-midnight"])
@pytest.mark.filterwarnings("ignore:Invalid value for VR")
def test_combined_datetime_extended_negotiation(server: int, combined: bool, expected: set[str]) -> None:
    found = _pynetdicom_find(server, {"StudyDate": "20240101-20240102", "StudyTime": "2200-0600"}, combined)
    assert {str(r.StudyInstanceUID) for r in found} == expected
