"""PS3.8 PDUs and PS3.7 command sets of the lean path: round trips, interop, negotiation."""

from __future__ import annotations

import io
import socket
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pynetdicom import pdu as pn_pdu

from pacsnode.config import NetworkSettings, NodeConfig
from pacsnode.dimse import pdu
from pacsnode.dimse.listener import read_associate_rq
from pacsnode.dimse.policy import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, VERIFICATION, negotiate
from pacsnode.dimse.receive import file_meta
from support import dcmtk, have_tool

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
PATIENT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
IMPLICIT, EXPLICIT, DEFLATED = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
REPO = Path(__file__).resolve().parents[1]
SAMPLE_CT = next(iter(sorted((REPO / "sample_dicom" / "CTY001").rglob("*_CT/1.dcm"))))


def full_rq(**changes: object) -> pdu.AssociateRQ:
    user = pdu.UserInformation(
        maximum_length=16384, implementation_class_uid="1.2.3.4", implementation_version_name="TEST_1",
        async_operations_window=(3, 2),
        role_selections=(pdu.RoleSelection(CT, True, False),),
        extended_negotiations=(pdu.ExtendedNegotiation(CT, b"\x01\x00\x02"),),
        common_extended_negotiations=(pdu.CommonExtendedNegotiation(CT, "1.2.840.10008.4.2", ("1.2.9", "1.2.10")),),
        user_identity=pdu.UserIdentity(2, True, b"alice", b"secret"),
        other_items=((0x5F, b"\x01\x02"),),
    )
    rq = pdu.AssociateRQ("PACSNODE", "MODALITY", (
        pdu.PresentationContextRQ(1, VERIFICATION, (IMPLICIT,)),
        pdu.PresentationContextRQ(3, CT, (JPEG_BASELINE, EXPLICIT, IMPLICIT)),
    ), user)
    return replace(rq, **changes)  # type: ignore[arg-type]


def config(tmp_path: Path, **network: object) -> NodeConfig:
    return NodeConfig(home=tmp_path, network=NetworkSettings(**network))  # type: ignore[arg-type]


# -- round trips -------------------------------------------------------------------------
@pytest.mark.parametrize("message", [
    full_rq(),
    pdu.AssociateAC("PACSNODE", "MODALITY", (pdu.PresentationContextAC(1, 0, IMPLICIT),
                                             pdu.PresentationContextAC(3, 4, JPEG_BASELINE)),
                    pdu.UserInformation(maximum_length=0, implementation_class_uid=IMPLEMENTATION_CLASS_UID,
                                        implementation_version_name="PACSNODE_01", user_identity_response=b"ok")),
    pdu.AssociateRJ(1, 1, 7),
    pdu.PDataTF((pdu.PDV(1, True, True, b"\x00" * 10), pdu.PDV(3, False, False, b"abc"))),
    pdu.ReleaseRQ(),
    pdu.ReleaseRP(),
    pdu.Abort(2, 6),
])
def test_every_pdu_round_trips(message: pdu.PDU) -> None:
    encoded = message.encode()
    assert pdu.decode(encoded) == message
    pdu_type, length = pdu.HEADER.unpack_from(encoded)
    assert length == len(encoded) - 6


def test_our_rq_reads_in_pynetdicom_and_its_ac_reads_in_ours() -> None:
    rq = full_rq()
    rq = replace(rq, user_information=replace(rq.user_information, other_items=()))  # pynetdicom: KeyError on those
    theirs = pn_pdu.A_ASSOCIATE_RQ()
    theirs.decode(rq.encode())
    primitive = theirs.to_primitive()
    assert primitive.called_ae_title == "PACSNODE"
    assert primitive.calling_ae_title == "MODALITY"
    assert [str(cx.abstract_syntax) for cx in primitive.presentation_context_definition_list] == [VERIFICATION, CT]
    assert pdu.decode(theirs.encode()) == rq

    ac = negotiate(rq, NodeConfig(home=Path("/nonexistent")))
    parsed = pn_pdu.A_ASSOCIATE_AC()
    parsed.decode(ac.encode())
    assert parsed.encode() == ac.encode()
    assert pdu.decode(parsed.encode()) == ac


def test_rj_abort_release_match_pynetdicom_bytes() -> None:
    for ours, theirs in ((pdu.AssociateRJ(2, 3, 2), pn_pdu.A_ASSOCIATE_RJ()), (pdu.Abort(2, 0), pn_pdu.A_ABORT_RQ()),
                         (pdu.ReleaseRQ(), pn_pdu.A_RELEASE_RQ()), (pdu.ReleaseRP(), pn_pdu.A_RELEASE_RP())):
        theirs.decode(ours.encode())
        assert theirs.encode() == ours.encode()


def test_pdata_pdvs_are_walked_in_place() -> None:
    body = pdu.PDataTF((pdu.PDV(1, True, False, b"ab"), pdu.PDV(1, True, True, b"cd"),
                        pdu.PDV(5, False, True, b""))).encode()[6:]
    view = memoryview(body)
    found = [(cx, mch, bytes(view[s:e])) for cx, mch, s, e in pdu.iter_pdvs(view)]
    assert found == [(1, 1, b"ab"), (1, 3, b"cd"), (5, 2, b"")]


@pytest.mark.parametrize("raw", [
    b"\x01\x00\x00\x00\x00\x10" + b"\x00" * 4,  # length says 16, 4 present
    b"\x09\x00\x00\x00\x00\x04\x00\x00\x00\x00",  # unknown type
    b"\x05\x00\x00\x00\x00\x02\x00\x00",  # release with length 2
    b"\x04\x00\x00\x00\x00\x06\x00\x00\x00\x09\x01\x03",  # PDV longer than the PDU
    b"\x04\x00\x00\x00\x00\x05\x00\x00\x00\x01\x01",  # PDV of length 1 (no header byte)
    b"\x04\x00\x00\x00\x00\x00",  # P-DATA-TF without a PDV
])
def test_malformed_pdus_raise_pdu_error(raw: bytes) -> None:
    with pytest.raises(pdu.PDUError):
        pdu.decode(raw)


def test_malformed_associate_items_raise_pdu_error() -> None:
    good = bytearray(full_rq().encode())
    good[6 + 68 + 2:6 + 68 + 4] = b"\xff\xff"  # application context item overruns
    with pytest.raises(pdu.PDUError):
        pdu.decode(bytes(good))
    no_contexts = replace(full_rq(), presentation_contexts=())
    with pytest.raises(pdu.PDUError):
        pdu.decode(no_contexts.encode())
    with pytest.raises(pdu.PDUError):
        pdu.decode(full_rq().encode()[:40])


# -- command sets ------------------------------------------------------------------------
def test_command_set_encodes_as_implicit_little_endian() -> None:
    raw = pdu.encode_command({
        pdu.AFFECTED_SOP_CLASS_UID: CT, pdu.COMMAND_FIELD: pdu.C_STORE_RSP, pdu.MESSAGE_ID_BEING_RESPONDED_TO: 7,
        pdu.COMMAND_DATASET_TYPE: pdu.NO_DATASET, pdu.STATUS: 0xA900, pdu.ERROR_COMMENT: "odd",
        pdu.AFFECTED_SOP_INSTANCE_UID: "1.2.3",
    })
    ds = read_dataset(DicomBytesIO(raw), is_implicit_VR=True, is_little_endian=True)
    assert ds.CommandGroupLength == len(raw) - 12
    assert (ds.AffectedSOPClassUID, ds.CommandField, ds.MessageIDBeingRespondedTo) == (CT, 0x8001, 7)
    assert (ds.Status, ds.ErrorComment, ds.AffectedSOPInstanceUID) == (0xA900, "odd", "1.2.3")
    assert len(raw) % 2 == 0
    command = pdu.decode_command(raw)
    assert command.us(pdu.STATUS) == 0xA900 and command.text(pdu.AFFECTED_SOP_INSTANCE_UID) == "1.2.3"


def test_command_set_outside_group_0000_is_refused() -> None:
    with pytest.raises(pdu.PDUError):
        pdu.decode_command(b"\x08\x00\x16\x00\x02\x00\x00\x00ab")
    with pytest.raises(pdu.PDUError):
        pdu.decode_command(b"\x00\x00\x00\x01\x02\x00\x00\x00\x01")  # truncated value


def test_messages_are_fragmented_to_the_peer_maximum() -> None:
    command = pdu.encode_command({pdu.COMMAND_FIELD: pdu.C_ECHO_RSP, pdu.STATUS: 0,
                                  pdu.AFFECTED_SOP_CLASS_UID: VERIFICATION})
    stream = pdu.encode_message(1, command, b"x" * 100, peer_max_pdu=32)
    received: list[pdu.PDV] = []
    offset, commands, data = 0, bytearray(), bytearray()
    while offset < len(stream):
        _type, length = pdu.HEADER.unpack_from(stream, offset)
        assert length <= 32
        message = pdu.decode(stream[offset:offset + 6 + length])
        assert isinstance(message, pdu.PDataTF)
        received.extend(message.pdvs)
        offset += 6 + length
    for pdv in received:
        (commands if pdv.is_command else data).extend(pdv.data)
    assert bytes(commands) == command and bytes(data) == b"x" * 100
    assert [p.is_last for p in received if p.is_command][-1] and not [p.is_last for p in received if p.is_command][0]
    assert pdu.encode_message(1, command, None, 0).count(b"\x04\x00") >= 1


# -- the Part 10 header we write ---------------------------------------------------------
def test_file_meta_plus_dataset_is_valid_part10(tmp_path: Path) -> None:
    source = pydicom.dcmread(SAMPLE_CT)
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, source, enforce_file_format=True)
    raw = buffer.getvalue()
    meta_end = 132 + 12 + int.from_bytes(raw[140:144], "little")
    path = tmp_path / "x.dcm"
    path.write_bytes(file_meta(source.SOPClassUID, source.SOPInstanceUID, EXPLICIT, "CTY_CT") + raw[meta_end:])
    back = pydicom.dcmread(path)
    meta = back.file_meta
    assert meta.MediaStorageSOPClassUID == source.SOPClassUID
    assert meta.MediaStorageSOPInstanceUID == source.SOPInstanceUID
    assert meta.TransferSyntaxUID == EXPLICIT
    assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert meta.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME
    assert meta.SourceApplicationEntityTitle == "CTY_CT"
    assert meta.FileMetaInformationVersion == b"\x00\x01"
    assert back.PatientID == source.PatientID
    if have_tool("dcmdump"):
        assert subprocess.run([dcmtk("dcmdump"), "-q", str(path)], capture_output=True).returncode == 0


# -- negotiation -------------------------------------------------------------------------
@pytest.mark.parametrize(("abstract", "offered", "result", "chosen"), [
    (CT, (JPEG_BASELINE, EXPLICIT), 0, JPEG_BASELINE),  # first proposed we know, as offered
    (CT, ("1.2.3.999", EXPLICIT, IMPLICIT), 0, EXPLICIT),  # unknown syntax skipped
    (CT, ("1.2.3.999",), 4, "1.2.3.999"),  # nothing known: transfer syntaxes not supported
    (VERIFICATION, (IMPLICIT,), 0, IMPLICIT),
    (CT, (DEFLATED,), 0, DEFLATED),
    ("1.2.3.4.5.6", (IMPLICIT,), 3, IMPLICIT),  # abstract syntax not supported
])
def test_presentation_context_table(tmp_path: Path, abstract: str, offered: tuple[str, ...], result: int,
                                    chosen: str) -> None:
    rq = full_rq(presentation_contexts=(pdu.PresentationContextRQ(7, abstract, offered),))
    ac = negotiate(rq, config(tmp_path))
    assert isinstance(ac, pdu.AssociateAC)
    assert ac.presentation_contexts == (pdu.PresentationContextAC(7, result, chosen),)


def test_ac_echoes_titles_and_announces_our_limits(tmp_path: Path) -> None:
    ac = negotiate(full_rq(), config(tmp_path, max_pdu=65536))
    assert isinstance(ac, pdu.AssociateAC)
    assert (ac.called_ae, ac.calling_ae) == ("PACSNODE", "MODALITY")
    user = ac.user_information
    assert user.maximum_length == 65536
    assert (user.implementation_class_uid, user.implementation_version_name) == (IMPLEMENTATION_CLASS_UID,
                                                                                 IMPLEMENTATION_VERSION_NAME)
    # user identity accepted without a response, no extended negotiation for storage (PS3.7 D.3.3);
    # the asynchronous operations window is answered 1/1; role selection as proposed for storage
    assert user.user_identity_response is None and not user.extended_negotiations
    assert user.async_operations_window == (1, 1)
    assert user.role_selections == (pdu.RoleSelection(CT, True, False),)


@pytest.mark.parametrize(("strict", "called", "accepted"), [
    (False, "ANYTHING", True), (True, "PACSNODE", True), (True, "PACSNODE  ", True), (True, "OTHER", False),
])
def test_called_ae_strictness(tmp_path: Path, strict: bool, called: str, accepted: bool) -> None:
    answer = negotiate(full_rq(called_ae=called), config(tmp_path, strict_called_aet=strict))
    if accepted:
        assert isinstance(answer, pdu.AssociateAC)
    else:
        assert answer == pdu.AssociateRJ(pdu.RJ_PERMANENT, pdu.RJ_SOURCE_USER, pdu.RJ_USER_CALLED_AE)


def test_wrong_application_context_or_version_is_rejected(tmp_path: Path) -> None:
    assert negotiate(full_rq(application_context="1.2.3"), config(tmp_path)) == pdu.AssociateRJ(1, 1, 2)
    assert negotiate(full_rq(protocol_version=2), config(tmp_path)) == pdu.AssociateRJ(1, 2, 2)


@pytest.mark.parametrize(("abstracts", "roles", "accepted"), [
    ((VERIFICATION, CT, MR), False, (0, 0, 0)),
    ((CT,), True, (0,)),  # role selection: answered by the same engine
    ((CT, STUDY_FIND, PATIENT_FIND), False, (0, 0, 0)),
    ((STUDY_FIND, STUDY_MOVE, "1.2.840.10008.5.1.4.1.2.2.3"), False, (0, 0, 0)),  # C-MOVE, C-GET
    (("1.2.840.10008.1.20.1",), False, (0,)),  # storage commitment push model
    (("1.2.3.4.5.6",), False, (3,)),  # private SOP class: abstract syntax not supported
])
def test_one_engine_accepts_every_service(tmp_path: Path, abstracts: tuple[str, ...], roles: bool,
                                          accepted: tuple[int, ...]) -> None:
    user = pdu.UserInformation(role_selections=(pdu.RoleSelection(CT, False, True),) if roles else ())
    rq = pdu.AssociateRQ("A", "B", tuple(pdu.PresentationContextRQ(2 * i + 1, a, (IMPLICIT,))
                                         for i, a in enumerate(abstracts)), user)
    ac = negotiate(rq, config(tmp_path))
    assert isinstance(ac, pdu.AssociateAC)
    assert tuple(pc.result for pc in ac.presentation_contexts) == accepted
    assert ac.user_information.role_selections == ((pdu.RoleSelection(CT, False, True),) if roles else ())


# -- a real A-ASSOCIATE-RQ from DCMTK ----------------------------------------------------
@pytest.mark.skipif(not have_tool("storescu"), reason="DCMTK storescu not installed")
def test_parse_rq_captured_from_storescu() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        proc = subprocess.Popen([dcmtk("storescu"), "-aet", "CTY_CT", "-aec", "PACSNODE", "--max-pdu", "65536",
                                 "127.0.0.1", str(port), str(SAMPLE_CT)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            server.settimeout(10)
            sock, _address = server.accept()
            with sock:
                raw = read_associate_rq(sock, time.monotonic() + 10.0)
                assert raw is not None
        finally:
            proc.wait(10)
    rq = pdu.decode(raw)
    assert isinstance(rq, pdu.AssociateRQ)
    assert (rq.called_ae, rq.calling_ae, rq.application_context) == ("PACSNODE", "CTY_CT", pdu.APPLICATION_CONTEXT)
    assert rq.user_information.maximum_length == 65536
    assert rq.user_information.implementation_class_uid.startswith("1.2.276.0.7230010.3")
    assert rq.user_information.implementation_version_name.startswith("OFFIS_DCMTK")
    assert CT in {pc.abstract_syntax for pc in rq.presentation_contexts}
    assert all(pc.context_id % 2 == 1 for pc in rq.presentation_contexts)
    ct = next(pc for pc in rq.presentation_contexts if pc.abstract_syntax == CT)
    assert EXPLICIT in ct.transfer_syntaxes
    assert pdu.decode(rq.encode()) == rq


def test_reading_the_rq_times_out_on_a_partial_rq() -> None:
    left, right = socket.socketpair()
    with left, right:
        left.sendall(full_rq().encode()[:20])
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            read_associate_rq(right, time.monotonic() + 0.3)
        assert time.monotonic() - started < 2
        left.close()


# -- C-FIND on the lean path -------------------------------------------------------------
@pytest.mark.parametrize(("offered", "result", "chosen"), [
    ((EXPLICIT, IMPLICIT), 0, EXPLICIT),
    ((JPEG_BASELINE, IMPLICIT), 0, IMPLICIT),  # compressed syntaxes mean nothing for an identifier
    ((DEFLATED,), 0, DEFLATED),
    (("1.2.840.10008.1.2.2", IMPLICIT), 0, IMPLICIT),  # big endian only when nothing else is offered
    ((JPEG_BASELINE,), 4, JPEG_BASELINE),
])
def test_find_contexts_take_the_query_syntaxes(tmp_path: Path, offered: tuple[str, ...], result: int,
                                               chosen: str) -> None:
    rq = full_rq(presentation_contexts=(pdu.PresentationContextRQ(5, STUDY_FIND, offered),))
    ac = negotiate(rq, config(tmp_path))
    assert isinstance(ac, pdu.AssociateAC)
    assert ac.presentation_contexts == (pdu.PresentationContextAC(5, result, chosen),)


@pytest.mark.parametrize(("asked", "answered"), [
    ({STUDY_FIND: b"\x01\x01\x01\x01\x01"}, {STUDY_FIND: b"\x00\x01\x00\x00\x00"}),  # as long as asked
    ({STUDY_FIND: b"\x00\x01"}, {STUDY_FIND: b"\x00\x01"}),
    ({PATIENT_FIND: b"\x01"}, {PATIENT_FIND: b"\x00"}),  # one byte asked: one byte answered
    ({STUDY_FIND: b"\x00\x00", CT: b"\x01"}, {STUDY_FIND: b"\x00\x00"}),  # storage: no answer
    ({PATIENT_FIND: b"\x01\x01"}, {}),  # not proposed: no answer
])
def test_find_extended_negotiation_is_answered(tmp_path: Path, asked: dict[str, bytes],
                                               answered: dict[str, bytes]) -> None:
    user = pdu.UserInformation(maximum_length=16384, extended_negotiations=tuple(
        pdu.ExtendedNegotiation(uid, info) for uid, info in asked.items()))
    contexts = (pdu.PresentationContextRQ(1, STUDY_FIND, (IMPLICIT,)), pdu.PresentationContextRQ(3, CT, (IMPLICIT,)))
    if PATIENT_FIND in asked and answered:
        contexts += (pdu.PresentationContextRQ(5, PATIENT_FIND, (IMPLICIT,)),)
    ac = negotiate(pdu.AssociateRQ("PACSNODE", "SCU", contexts, user), config(tmp_path))
    assert isinstance(ac, pdu.AssociateAC)
    got = {ext.sop_class_uid: ext.application_information for ext in ac.user_information.extended_negotiations}
    assert got == answered
    # the encoded AC carries them as 0x56 sub-items, which pynetdicom reads the same way
    parsed = pn_pdu.A_ASSOCIATE_AC()
    parsed.decode(ac.encode())
    theirs = {str(item.sop_class_uid): item.service_class_application_information
              for item in parsed.user_information.user_data if item.item_type == 0x56}
    assert theirs == answered
    assert pdu.decode(ac.encode()) == ac


def test_encode_fragments_respects_the_peer_maximum() -> None:
    payload = bytes(range(256)) * 3
    encoded = pdu.encode_fragments(3, payload, False, 100)
    pdus, offset = [], 0
    while offset < len(encoded):
        _type, length = pdu.HEADER.unpack_from(encoded, offset)
        assert length <= 100
        pdus.append(pdu.decode(encoded[offset:offset + 6 + length]))
        offset += 6 + length
    pdvs = [pdv for message in pdus for pdv in message.pdvs]  # type: ignore[union-attr]
    assert b"".join(pdv.data for pdv in pdvs) == payload
    assert [pdv.is_last for pdv in pdvs] == [False] * (len(pdvs) - 1) + [True]
    assert all(pdv.context_id == 3 and not pdv.is_command for pdv in pdvs)
    command = pdu.encode_command({pdu.COMMAND_FIELD: pdu.C_FIND_RSP, pdu.STATUS: 0xFF00})
    assert pdu.encode_message(3, command, payload, 100) == pdu.encode_fragments(3, command, True, 100) + encoded


def test_error_comment_is_a_valid_lo() -> None:
    assert pdu.error_comment("a\\b " + "é" * 80) == "a/b " + "?" * 60
