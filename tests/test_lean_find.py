"""C-FIND on the lean path: DCMTK findscu, pynetdicom and a raw SCU against a Listener.

One node per module (the files of ``test_find_findscu`` imported, a local peer FINDSCU),
served by a Listener on a free port. The pynetdicom server it delegates to listens on a
port of its own, so every findscu case runs against both paths and the responses must be
the same. Servers always stop at teardown.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation
from pynetdicom.sop_class import (
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from pacsnode.config import IndexSettings, NetworkSettings, NodeConfig, QuerySettings, StoreSettings
from pacsnode.dimse import pdu
from pacsnode.dimse.lean_find import MAX_IDENTIFIER
from pacsnode.dimse.listener import Listener
from pacsnode.model import Caller, DuplicatePolicy, InstanceFacts, Peer, StoredFile
from pacsnode.node import Node
from test_find_findscu import A, B, C, D, INSTITUTION, LEVEL_CASES, RESIDENT_ID, final_status, make_files
from support import dcmtk, have_tool

needs_findscu = pytest.mark.skipif(not have_tool("findscu"), reason="DCMTK findscu is not installed")
STUDY_FIND = str(StudyRootQueryRetrieveInformationModelFind)
PATIENT_FIND = str(PatientRootQueryRetrieveInformationModelFind)
EXPLICIT, IMPLICIT = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"
CROWD = 300  # studies of patient CROWD, for cancel tests
CROWD_ROOT = "1.2.826.0.1.3680043.10.1078.78"


class SlowNode(Node):
    """A node whose matches trickle out (2 ms each), so a cancel surely arrives mid-find."""

    slow = False

    def find(self, query: Any, caller: Caller) -> Iterator[dict[str, Any]]:
        matches = super().find(query, caller)
        if not self.slow:
            return matches
        return self._trickle(matches)

    @staticmethod
    def _trickle(matches: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for match in matches:
            yield match
            time.sleep(0.002)


@dataclass
class Site:
    node: SlowNode
    listener: Listener
    delegated_to: list[Any] = field(default_factory=list)  # stays empty: one engine serves everything

    @property
    def port(self) -> int:
        return self.listener.port


def crowd_facts(i: int) -> InstanceFacts:
    return InstanceFacts(
        sop_instance_uid=f"{CROWD_ROOT}.{i}.1.1", sop_class_uid=str(CTImageStorage), study_uid=f"{CROWD_ROOT}.{i}",
        series_uid=f"{CROWD_ROOT}.{i}.1", transfer_syntax=EXPLICIT, patient_id="CROWD", patient_name="Crowd^Many",
        study_date="20230101", modality="CT", series_number=1, instance_number=1)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, index_factory: Any) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("leanfind")
    make_files(base / "files")
    config = NodeConfig(home=base / "home", port=0, institution=INSTITUTION, store=StoreSettings(fsync=False),
                        query=QuerySettings(max_results=0), network=NetworkSettings(max_pdu=16384),
                        index=IndexSettings(url=index_factory.url()))
    node = SlowNode(config)
    node.add_peer(Peer("findscu", "FINDSCU", "127.0.0.1", 1, institution=INSTITUTION))
    report = node.import_paths([base / "files"])
    assert not report.rejected
    for i in range(CROWD):
        node.index.record_instance(crowd_facts(i), StoredFile(f"crowd/{i}.dcm", 1, "0" * 64), "TEST",
                                   DuplicatePolicy.KEEP_FIRST)
    listener = Listener(node, host="127.0.0.1", port=0)
    listener.start()
    try:
        yield Site(node, listener)
    finally:
        listener.stop(grace=1.0)
        node.close()


# -- findscu, lean path against pynetdicom's -------------------------------------------------
def findscu(port: int, out: Path, model: str, *keys: str | bytes, aet: str = "FINDSCU",
            extra: tuple[str, ...] = ()) -> tuple[str, list[Dataset]]:
    out.mkdir(parents=True, exist_ok=True)
    args: list[str | bytes] = [dcmtk("findscu"), "-v", "-aet", aet, "-aec", "PACSNODE", model, *extra, "-X", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    done = subprocess.run([*args, "127.0.0.1", str(port)], capture_output=True, timeout=30)
    responses = [dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]
    return (done.stdout + done.stderr).decode("utf-8", "replace"), responses


def elements(ds: Dataset) -> list[tuple[int, Any]]:
    """Tags and values; the VR is left out: pynetdicom took Implicit VR where the lean path takes
    the requestor's first choice (findscu: Explicit), so private elements there are UN bytes."""
    def value(e: Any) -> Any:
        if e.VR == "SQ":
            return [elements(item) for item in e.value]
        if isinstance(e.value, bytes):
            return e.value.decode("utf-8").rstrip(" \0")
        return "" if e.value is None else e.value
    return [(int(e.tag), value(e)) for e in ds]


def both_paths(site: Site, tmp_path: Path, model: str, *keys: str | bytes, **kwargs: Any) -> tuple[str, list[Dataset]]:
    """findscu against the engine (the pynetdicom server it was once compared with is gone;
    the expected answers are asserted by each test)."""
    lean_output, lean = findscu(site.port, tmp_path / "lean", model, *keys, **kwargs)
    assert len({repr(elements(r)) for r in lean}) == len(lean)  # no response twice
    return lean_output, lean


@needs_findscu
@pytest.mark.parametrize("model, keys, expected, unique", [c[1:] for c in LEVEL_CASES],
                         ids=[c[0] for c in LEVEL_CASES])
def test_levels_match_the_pynetdicom_path(site: Site, tmp_path: Path, model: str, keys: list[str],
                                          expected: set[str], unique: str) -> None:
    before = len(site.delegated_to)
    output, responses = both_paths(site, tmp_path, model, *keys)
    assert "Success" in final_status(output)
    unfiltered = all("=" not in key for key in keys[1:])  # the crowd of this module's node matches too
    crowd = {f"{CROWD_ROOT}.{i}" for i in range(CROWD)} if unique == "StudyInstanceUID" else {"CROWD"}
    assert {str(r.get(unique)) for r in responses} == (expected | crowd if unfiltered else expected)
    assert all(r.RetrieveAETitle == "PACSNODE" for r in responses)
    assert len(site.delegated_to) == before  # findscu went to the lean path


@needs_findscu
@pytest.mark.parametrize("syntax", ["-xi", "-xe", "-xb"], ids=["implicit", "explicit-little", "explicit-big"])
def test_transfer_syntaxes(site: Site, tmp_path: Path, syntax: str) -> None:
    output, responses = both_paths(site, tmp_path, "-S", "QueryRetrieveLevel=STUDY", "PatientID=P001",
                                   "PatientName", "NumberOfStudyRelatedInstances", extra=(syntax,))
    assert "Success" in final_status(output) and {r.StudyInstanceUID for r in responses} == {A, D}


@needs_findscu
def test_chinese_names(site: Site, tmp_path: Path) -> None:
    _, utf8 = both_paths(site, tmp_path / "utf8", "-S", "SpecificCharacterSet=ISO_IR 192",
                         "QueryRetrieveLevel=STUDY", "PatientName=王*", "StudyInstanceUID")
    assert {str(r.StudyInstanceUID): str(r.PatientName) for r in utf8} == {B: "王^小明", C: "Wang^XiaoHong=王^小红"}
    _, gb = both_paths(site, tmp_path / "gb", "-S", "SpecificCharacterSet=GB18030", "QueryRetrieveLevel=STUDY",
                       b"PatientName=" + "王^小明".encode("gb18030"), "StudyInstanceUID")
    [study] = gb
    assert (study.StudyInstanceUID, str(study.PatientName), study.SpecificCharacterSet) == (B, "王^小明", "GB18030")


@needs_findscu
def test_hr_private_block_when_asked(site: Site, tmp_path: Path) -> None:
    _, responses = both_paths(site, tmp_path, "-S", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={A}",
                              "(0011,0010)=PACSNODE HR", "(0011,1001)", "(0011,1003)")
    [study] = responses
    assert study[0x00110010].value == "PACSNODE HR"
    assert 0x00111001 in study and 0x00111003 in study


@needs_findscu
def test_other_patient_ids_sequence(site: Site, tmp_path: Path) -> None:
    _, responses = both_paths(site, tmp_path, "-S", "QueryRetrieveLevel=STUDY",
                              f"OtherPatientIDsSequence[0].PatientID={RESIDENT_ID}", "OtherPatientIDsSequence[0]"
                              ".IssuerOfPatientID")
    assert [r.StudyInstanceUID for r in responses] == [C]
    assert responses[0].OtherPatientIDsSequence[0].IssuerOfPatientID == "CN-RESIDENT-ID"


@needs_findscu
def test_unknown_ae_is_refused_with_a_comment(site: Site, tmp_path: Path) -> None:
    output, responses = both_paths(site, tmp_path, "-S", "QueryRetrieveLevel=STUDY", "StudyInstanceUID",
                                   aet="STRANGER")
    assert responses == []
    assert "0x124" in final_status(output) or "Not Authorized" in final_status(output)
    with pynetdicom_association(site.port, calling="STRANGER") as assoc:
        [(status, identifier)] = list(assoc.send_c_find(study_query(), StudyRootQueryRetrieveInformationModelFind))
        assert status.Status == 0x0124 and "not a registered peer" in status.ErrorComment and identifier is None


# -- pynetdicom as the SCU ---------------------------------------------------------------------
class pynetdicom_association:
    """``with pynetdicom_association(port) as assoc``: an established association, released after."""

    def __init__(self, port: int, calling: str = "FINDSCU", contexts: tuple[tuple[Any, list[str] | None], ...] = (
            (StudyRootQueryRetrieveInformationModelFind, None),), combined: bool = False) -> None:
        self.ae = AE(ae_title=calling)
        for abstract, syntaxes in contexts:
            if syntaxes is None:
                self.ae.add_requested_context(abstract)
            else:
                self.ae.add_requested_context(abstract, syntaxes)
        self.port, self.combined = port, combined

    def __enter__(self) -> Any:
        negotiation = []
        if self.combined:
            item = SOPClassExtendedNegotiation()
            item.sop_class_uid = StudyRootQueryRetrieveInformationModelFind
            item.service_class_application_information = b"\x01\x01\x01"  # relational, combined, fuzzy
            negotiation.append(item)
        self.assoc = self.ae.associate("127.0.0.1", self.port, ae_title="PACSNODE", ext_neg=negotiation)
        assert self.assoc.is_established
        return self.assoc

    def __exit__(self, *exc: object) -> None:
        if self.assoc.is_established:
            self.assoc.release()
        self.ae.shutdown()


def study_query(**keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = ""
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def run_find(assoc: Any, identifier: Dataset, model: Any = StudyRootQueryRetrieveInformationModelFind
             ) -> tuple[list[Dataset], Dataset]:
    found, last = [], None
    for status, response in assoc.send_c_find(identifier, model):
        last = status
        if response is not None and status.Status in (0xFF00, 0xFF01):
            found.append(response)
    assert last is not None
    settle(assoc)
    return found, last


def settle(assoc: Any) -> None:
    """Wait until pynetdicom's reactor thread has resumed after a finished request.

    pynetdicom (the test peer) pauses its reactor for a request and resumes it at the final response, but
    its ``_is_paused`` stays True until that thread runs again. A next ``send_c_find`` at once sees it still
    True, sends, and the resuming reactor takes the first response off the queue as a request to serve: one
    match lost, 299 of 300, about once in 25 runs of test_concurrent_finds (the first match, each time)."""
    deadline = time.monotonic() + 5
    while assoc._is_paused and time.monotonic() < deadline:
        time.sleep(0.0001)


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
@pytest.mark.parametrize("combined, expected", [(False, set()), (True, {B, D})],
                         ids=["independent-without-negotiation", "combined-across-midnight"])
def test_combined_datetime_extended_negotiation(site: Site, combined: bool, expected: set[str]) -> None:
    before = len(site.delegated_to)
    with pynetdicom_association(site.port, combined=combined) as assoc:
        agreed = assoc.acceptor.sop_class_extended.get(StudyRootQueryRetrieveInformationModelFind)
        assert agreed == (b"\x00\x01\x00" if combined else None)  # never more bytes than asked, only combined
        found, last = run_find(assoc, study_query(StudyDate="20240101-20240102", StudyTime="2200-0600"))
    assert last.Status == 0x0000 and {str(r.StudyInstanceUID) for r in found} == expected
    assert len(site.delegated_to) == before


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian])
def test_implicit_and_deflated_contexts(site: Site, syntax: str) -> None:
    contexts = ((PatientRootQueryRetrieveInformationModelFind, [syntax]),)
    with pynetdicom_association(site.port, contexts=contexts) as assoc:
        assert assoc.accepted_contexts[0].transfer_syntax[0] == syntax
        identifier = study_query(PatientID="P002", PatientName="")
        found, last = run_find(assoc, identifier, PatientRootQueryRetrieveInformationModelFind)
    assert last.Status == 0x0000
    assert [(r.StudyInstanceUID, str(r.PatientName)) for r in found] == [(B, "王^小明")]


def test_cancel_after_the_first_response(site: Site) -> None:
    site.node.slow = True
    try:
        with pynetdicom_association(site.port) as assoc:
            responses = assoc.send_c_find(study_query(PatientID="CROWD"), StudyRootQueryRetrieveInformationModelFind,
                                          msg_id=7)
            statuses, found = [], 0
            for status, identifier in responses:
                statuses.append(status.Status)
                found += identifier is not None and status.Status == 0xFF00
                if found == 1 and len(statuses) == 1:
                    assoc.send_c_cancel(7, query_model=StudyRootQueryRetrieveInformationModelFind)
            assert statuses[-1] == 0xFE00 and 1 <= found < CROWD
            found_after, last = run_find(assoc, study_query(PatientID="P001"))  # the association goes on
            assert last.Status == 0 and len(found_after) == 2
    finally:
        site.node.slow = False


def test_a_find_on_a_storage_association(site: Site, tmp_path: Path) -> None:
    contexts = ((Verification, None), (CTImageStorage, None), (StudyRootQueryRetrieveInformationModelFind, None))
    before = len(site.delegated_to)
    with pynetdicom_association(site.port, contexts=contexts) as assoc:
        assert assoc.send_c_echo().Status == 0
        found, last = run_find(assoc, study_query(PatientID="P002", ModalitiesInStudy=""))
        assert last.Status == 0 and [r.ModalitiesInStudy for r in found] == ["MR"]
    assert len(site.delegated_to) == before


def test_find_on_an_association_that_also_proposes_move(site: Site) -> None:
    before = len(site.delegated_to)
    contexts = ((StudyRootQueryRetrieveInformationModelFind, None), (StudyRootQueryRetrieveInformationModelMove, None))
    with pynetdicom_association(site.port, contexts=contexts) as assoc:
        found, last = run_find(assoc, study_query(PatientID="P001"))
        assert last.Status == 0 and len(found) == 2
    assert len(site.delegated_to) == before


# -- a raw SCU: what the libraries will not send ------------------------------------------------
class RawFindScu:
    def __init__(self, port: int, max_pdu: int = 16384, syntax: str = EXPLICIT) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.syntax, self.max_pdu = syntax, max_pdu
        rq = pdu.AssociateRQ("PACSNODE", "FINDSCU", (pdu.PresentationContextRQ(1, STUDY_FIND, (syntax,)),),
                             pdu.UserInformation(maximum_length=max_pdu, implementation_class_uid="1.2.3.4"))
        self.sock.sendall(rq.encode())
        assert isinstance(self.read_pdu(), pdu.AssociateAC)

    def read_pdu(self) -> pdu.PDU:
        header = self._recv(6)
        _type, length = pdu.HEADER.unpack(header)
        assert self.max_pdu == 0 or _type != pdu.P_DATA_TF or length <= self.max_pdu
        return pdu.decode(header + self._recv(length))

    def _recv(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            assert chunk, "peer closed"
            data += chunk
        return data

    def find_request(self, identifier: bytes, message_id: int = 1, pdu_size: int = 0) -> bytes:
        command = pdu.encode_command({pdu.AFFECTED_SOP_CLASS_UID: STUDY_FIND, pdu.COMMAND_FIELD: pdu.C_FIND_RQ,
                                      pdu.MESSAGE_ID: message_id, pdu.PRIORITY: 0, pdu.COMMAND_DATASET_TYPE: 1})
        return pdu.encode_message(1, command, identifier, pdu_size)

    def responses(self) -> list[tuple[pdu.Command, bytes | None]]:
        """Every response until the final one: (command, dataset bytes or None)."""
        out: list[tuple[pdu.Command, bytes | None]] = []
        command, data, expecting = bytearray(), bytearray(), False
        while True:
            message = self.read_pdu()
            assert isinstance(message, pdu.PDataTF), message
            for pdv in message.pdvs:
                (command if pdv.is_command else data).extend(pdv.data)
                if not pdv.is_last:
                    continue
                if pdv.is_command:
                    decoded = pdu.decode_command(command)
                    command.clear()
                    expecting = decoded.us(pdu.COMMAND_DATASET_TYPE) != pdu.NO_DATASET
                    out.append((decoded, None))
                    if not expecting:
                        if decoded.us(pdu.STATUS) not in (0xFF00, 0xFF01):
                            return out
                else:
                    assert expecting
                    out[-1] = (out[-1][0], bytes(data))
                    data.clear()
                    expecting = False

    def close(self) -> None:
        self.sock.sendall(pdu.ReleaseRQ().encode())
        assert isinstance(self.read_pdu(), pdu.ReleaseRP)
        self.sock.close()


def encoded(ds: Dataset, implicit: bool = False) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = implicit, True
    write_dataset(buffer, ds)
    return buffer.getvalue()


def cancel_request(message_id: int) -> bytes:
    command = pdu.encode_command({pdu.COMMAND_FIELD: pdu.C_CANCEL_RQ, pdu.MESSAGE_ID_BEING_RESPONDED_TO: message_id,
                                  pdu.COMMAND_DATASET_TYPE: pdu.NO_DATASET})
    return pdu.encode_message(1, command, None, 0)


LEVEL = b"\x08\x00\x52\x00CS\x06\x00STUDY "


def test_malformed_identifiers_fail_and_the_association_goes_on(site: Site) -> None:
    scu = RawFindScu(site.port)
    try:
        bad = [
            (LEVEL + b"\x10\x00\x20\x00SQ\x00\x00\xff\x00\x00\x00\xfe\xff\x00\xe0", 0xC000),  # sequence overrun
            (LEVEL + b"\x20\x00\x10\x12US\x03\x00abc", 0xC000),  # a US of three bytes
            (b"\x10\x00\x20\x00LO\x02\x00P1", 0xA900),  # no QueryRetrieveLevel
            (encoded(study_query(PatientName="Zhang*")).replace(b"STUDY", b"STUDX"), 0xA900),  # no such level
            (b"\0" * (MAX_IDENTIFIER + 100), 0xC000),  # too long
        ]
        for message_id, (identifier, expected) in enumerate(bad, start=1):
            scu.sock.sendall(scu.find_request(identifier, message_id, pdu_size=16384))
            [(command, data)] = scu.responses()
            assert (command.us(pdu.STATUS), data) == (expected, None)
            assert command.us(pdu.MESSAGE_ID_BEING_RESPONDED_TO) == message_id
            assert command.text(pdu.ERROR_COMMENT)
        scu.sock.sendall(scu.find_request(encoded(study_query(PatientID="P001")), 9))
        answers = scu.responses()
        assert [c.us(pdu.STATUS) for c, _ in answers] == [0xFF00, 0xFF00, 0x0000]
        assert all(c.text(pdu.AFFECTED_SOP_CLASS_UID) == STUDY_FIND and c.us(pdu.COMMAND_FIELD) == pdu.C_FIND_RSP
                   for c, _ in answers)
        assert [d is not None for _, d in answers] == [True, True, False]
    finally:
        scu.close()


def test_cancel_already_waiting_stops_before_the_first_match(site: Site) -> None:
    scu = RawFindScu(site.port)
    try:
        scu.sock.sendall(scu.find_request(encoded(study_query(PatientID="CROWD")), 5) + cancel_request(5))
        answers = scu.responses()
        assert [c.us(pdu.STATUS) for c, _ in answers] == [0xFE00]
        scu.sock.sendall(scu.find_request(encoded(study_query(PatientID="CROWD")), 6) + cancel_request(99))
        answers = scu.responses()  # a cancel for another message is no cancel
        assert len(answers) == CROWD + 1 and answers[-1][0].us(pdu.STATUS) == 0
    finally:
        scu.close()


def test_responses_fit_a_small_peer_maximum(site: Site) -> None:
    scu = RawFindScu(site.port, max_pdu=64, syntax=IMPLICIT)  # read_pdu checks every P-DATA-TF length
    try:
        identifier = study_query(PatientID="P001", PatientName="", StudyDescription="", AccessionNumber="")
        scu.sock.sendall(scu.find_request(encoded(identifier, implicit=True), 3, pdu_size=64))
        answers = scu.responses()
        assert [c.us(pdu.STATUS) for c, _ in answers] == [0xFF00, 0xFF00, 0x0000]
        assert all(len(data or b"") > 64 for _, data in answers[:2])
    finally:
        scu.close()


def test_each_pending_response_is_one_pdu(site: Site) -> None:
    """The command and its identifier share one P-DATA-TF (PS3.8 9.3.5: one or more PDVs): half the PDUs to read."""
    scu = RawFindScu(site.port)
    try:
        scu.sock.sendall(scu.find_request(encoded(study_query(PatientID="P001")), 4))
        pdus = [scu.read_pdu() for _ in range(3)]
        layout = [[(pdv.is_command, pdv.is_last) for pdv in message.pdvs] for message in pdus]  # type: ignore[attr-defined]
        assert layout == [[(True, True), (False, True)], [(True, True), (False, True)], [(True, True)]]
    finally:
        scu.close()


def test_a_peer_with_nagle_on_is_not_held_by_our_delayed_ack(site: Site) -> None:
    """DCMTK without TCP_NODELAY writes each PDU's 12 header bytes, then the rest, Nagle on: the rest waits for
    our ACK of the header. A reader that waits mid-PDU must ACK at once (TCP_QUICKACK), not after the kernel's
    delayed-ACK timer (40 ms or more on Linux): each request cost 40+ ms before. C-ECHOs, so that only the
    reader's wake-ups are timed, not a query; the bound is half the delayed-ACK timer."""
    sock = socket.create_connection(("127.0.0.1", site.port), timeout=10)  # Nagle stays on, as in DCMTK's tools
    scu = RawFindScu.__new__(RawFindScu)
    scu.sock, scu.max_pdu = sock, 16384
    try:
        rq = pdu.AssociateRQ("PACSNODE", "ECHOSCU", (pdu.PresentationContextRQ(1, str(Verification), (EXPLICIT,)),),
                             pdu.UserInformation(maximum_length=16384, implementation_class_uid="1.2.3.4"))
        sock.sendall(rq.encode())
        assert isinstance(scu.read_pdu(), pdu.AssociateAC)
        took = []
        for message_id in range(1, 12):
            command = pdu.encode_command({pdu.AFFECTED_SOP_CLASS_UID: str(Verification), pdu.MESSAGE_ID: message_id,
                                          pdu.COMMAND_FIELD: 0x0030, pdu.COMMAND_DATASET_TYPE: pdu.NO_DATASET})
            request = pdu.encode_message(1, command, None, 0)
            began = time.perf_counter()
            sock.send(request[:12])  # as DCMTK writes a PDU: its header and PDV header, then the rest
            sock.sendall(request[12:])
            assert scu.responses()[-1][0].us(pdu.STATUS) == 0
            took.append(time.perf_counter() - began)
        assert sorted(took)[len(took) // 2] < 0.020, [round(t * 1000, 1) for t in took]
    finally:
        scu.close()


def test_a_small_answer_is_one_write_and_a_large_one_starts_with_two_matches(site: Site) -> None:
    """Up to two matches (an exact Patient ID) and the final response go out in one write, one wake-up of the
    peer; a larger answer sends its first two matches at once, then batches of about BATCH_BYTES."""
    from pacsnode.dimse.lean_find import FindRequest, FindService

    def pdus_in(data: bytes) -> int:
        count, at = 0, 0
        while at < len(data):
            at += pdu.HEADER_SIZE + pdu.HEADER.unpack_from(data, at)[1]
            count += 1
        return count

    writes: list[bytes] = []
    service = FindService(site.node, writes.append, lambda _message_id: False, 16384)
    caller = site.node.identify("FINDSCU", "127.0.0.1")
    for patient_id, matches in (("P001", 2), ("CROWD", CROWD)):
        writes.clear()
        request = FindRequest(1, 7, STUDY_FIND)
        request.identifier += encoded(study_query(PatientID=patient_id))
        assert service.answer(request, caller, EXPLICIT, False) == 0
        assert sum(pdus_in(w) for w in writes) == matches + 1  # one P-DATA-TF per pending response, the final
        if matches <= 2:
            assert len(writes) == 1
        else:
            assert pdus_in(writes[0]) == 2 and len(writes) > 2


def test_release_while_a_find_runs_is_answered_after_it(site: Site) -> None:
    site.node.slow = True
    try:
        scu = RawFindScu(site.port)
        scu.sock.sendall(scu.find_request(encoded(study_query(PatientID="CROWD")), 2))
        time.sleep(0.05)
        scu.sock.sendall(pdu.ReleaseRQ().encode())
        answers = scu.responses()
        assert len(answers) == CROWD + 1 and answers[-1][0].us(pdu.STATUS) == 0
        assert isinstance(scu.read_pdu(), pdu.ReleaseRP)
        scu.sock.close()
    finally:
        site.node.slow = False


def test_abort_during_a_find_ends_it_at_once(site: Site) -> None:
    site.node.slow = True  # 300 matches: 0.6 s if nothing stopped it
    try:
        scu = RawFindScu(site.port)
        scu.sock.sendall(scu.find_request(encoded(study_query(PatientID="CROWD")), 4))
        scu.read_pdu()  # the first response: the find runs
        scu.sock.sendall(pdu.Abort(pdu.ABORT_SOURCE_USER, 0).encode())
        started = time.monotonic()
        while site.listener.active and time.monotonic() - started < 5:
            time.sleep(0.01)
        assert site.listener.active == 0 and time.monotonic() - started < 0.3
        scu.sock.close()
    finally:
        site.node.slow = False


def test_lean_finds_and_associations_are_audited(site: Site) -> None:
    with pynetdicom_association(site.port, calling="STRANGER") as assoc:
        list(assoc.send_c_find(study_query(PatientID="P001"), StudyRootQueryRetrieveInformationModelFind))
    with pynetdicom_association(site.port) as assoc:
        run_find(assoc, study_query(PatientID="P002"))
    events = [(e.action, e.outcome, e.peer_aet) for e in site.node.audit.events()]
    assert ("find", "refused", "STRANGER") in events and ("association", "accepted", "STRANGER") in events
    assert ("find", "answered", "FINDSCU") in events


def test_concurrent_finds(site: Site) -> None:
    errors: list[BaseException] = []

    def one() -> None:
        try:
            with pynetdicom_association(site.port) as assoc:
                for _ in range(3):
                    found, last = run_find(assoc, study_query(PatientID="CROWD"))
                    assert last.Status == 0 and len(found) == CROWD
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []


# -- the fast response encoder ------------------------------------------------------------------
def flat_cases() -> list[Dataset]:
    plain = study_query(PatientName="WANGAN^WEI=W^A", PatientID="P1", StudyDate="20240101", AccessionNumber="")
    plain.StudyInstanceUID = "1.2.3.45"  # odd length: NUL padding
    plain.ModalitiesInStudy = ["CT", "MR"]
    plain.NumberOfStudyRelatedInstances, plain.Rows, plain.PatientWeight = 12, 512, "70.50"
    plain.PatientSize, plain.OtherStudyNumbers = 1.75, ["1", "02"]
    plain.ImageType, plain.StudyDescription = None, "CT study"
    plain.add_new(0x00110010, "LO", "PACSNODE HR")
    plain.add_new(0x00111001, "CS", "")
    long_text = Dataset()
    long_text.add_new(0x00081190, "UR", "http://example.org/" + "a" * 70)
    long_text.add_new(0x00400280, "ST", "odd")
    return [plain, long_text]


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "explicit"])
@pytest.mark.parametrize("ds", flat_cases(), ids=["response", "long-and-odd-text"])
def test_encode_flat_writes_what_pydicom_writes(ds: Dataset, implicit: bool) -> None:
    from pacsnode.dimse.lean_find import encode_flat

    assert encode_flat(ds, implicit) == encoded(ds, implicit)


def test_encode_flat_leaves_the_rest_to_pydicom() -> None:
    from pacsnode.dimse.lean_find import DatasetCodec, encode_flat

    chinese = study_query(PatientName="王^小明")
    chinese.SpecificCharacterSet = "ISO_IR 192"
    sequence = study_query()
    sequence.OtherPatientIDsSequence = [study_query(PatientID="X")]
    raw = study_query()
    raw.add_new(0x00111001, "UN", b"\x01\x02")
    for ds in (chinese, sequence, raw):
        assert encode_flat(ds, False) is None
        assert DatasetCodec.of(EXPLICIT).encode(ds) == encoded(ds)  # pydicom wrote it
