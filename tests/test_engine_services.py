"""The one engine against a real ``pacsnode serve``: the services the pynetdicom path used to
own, and the odd requests it crashed on.

* Storage Commitment Push Model with pynetdicom as the SCU, N-EVENT-REPORT on the same
  association, failures 0x0110 (file changed on disk) and 0x0112 (not here);
* an association proposing 128 contexts of mixed services;
* C-GET with a transfer syntax the requester does not accept: transcoded, or a counted
  failure with the Failed SOP Instance UID List, never a hang;
* extended negotiation (asynchronous operations window 1/1, user identity accepted) and a
  C-STORE with an empty Affected SOP Instance UID (failure status, the association goes on).
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.presentation import StoragePresentationContexts
from pynetdicom.sop_class import (
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from pacsnode.dimse import pdu
from support import LOOPBACK, NodeProcess, sample_files
from test_lean_store import RawScu, split_part10

pytestmark = [pytest.mark.interop, pytest.mark.cluster,
              pytest.mark.skipif(shutil.which("storescu") is None, reason="DCMTK storescu is needed")]

COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"


def ct_files(count: int) -> list[Path]:
    return [p for p in sample_files() if "CTY001" in str(p) and "_CT" in str(p)][:count]


@pytest.fixture
def node(node_process: Callable[..., NodeProcess]) -> NodeProcess:
    proc = node_process(institution="CTY001")
    proc.cli("peer", "add", "modality", "--aet", "MODALITY", "--host", LOOPBACK, "--port", "1",
             "--institution", "CTY001")
    return proc.start()


def stored_uids(node: NodeProcess) -> list[str]:
    return sorted(row[0] for row in node.index_rows("SELECT sop_instance_uid FROM instances"))


# -- storage commitment ----------------------------------------------------------------------
def test_storage_commitment_reports_on_the_same_association(node: NodeProcess) -> None:
    files = ct_files(3)
    assert node.store(files, aet="MODALITY").returncode == 0
    uids = stored_uids(node)
    damaged = uids[2]
    stored = node.stored_bytes(damaged)
    assert stored is not None
    node.replace_stored(damaged, stored + b"\0\0")  # the file no longer matches its recorded digest
    reports: list[Dataset] = []
    event_types: list[int] = []
    arrived = threading.Event()

    def on_report(event: Any) -> tuple[int, None]:
        event_types.append(int(event.request.EventTypeID))
        reports.append(event.event_information)
        arrived.set()
        return 0x0000, None  # an N-EVENT-REPORT handler answers (status, reply), on either side

    request = Dataset()
    request.TransactionUID = "1.2.826.0.1.3680043.10.1078.99.1"
    refs = [(CTImageStorage, uid) for uid in uids] + [(CTImageStorage, "1.2.826.0.1.3680043.10.1078.99.404")]
    request.ReferencedSOPSequence = []
    for sop_class, sop_instance in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        request.ReferencedSOPSequence.append(item)
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate(LOOPBACK, node.port, ae_title=node.aet, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    assert assoc.is_established
    try:
        status, _reply = assoc.send_n_action(request, 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE)
        assert status.Status == 0x0000
        assert arrived.wait(10), "no N-EVENT-REPORT on the requesting association"
    finally:
        assoc.release()
    report = reports[0]
    assert event_types == [2]  # some failed
    assert report.TransactionUID == request.TransactionUID
    assert {item.ReferencedSOPInstanceUID for item in report.ReferencedSOPSequence} == set(uids[:2])
    failures = {item.ReferencedSOPInstanceUID: int(item.FailureReason) for item in report.FailedSOPSequence}
    assert failures == {damaged: 0x0110, "1.2.826.0.1.3680043.10.1078.99.404": 0x0112}


def test_storage_commitment_of_another_senders_instances_is_no_such_instance(node: NodeProcess) -> None:
    """Only the AE that delivered an instance gets it committed: others cannot probe what is here."""
    assert node.store(ct_files(1), aet="OTHERAE").returncode == 0
    uid = stored_uids(node)[0]
    got: list[Dataset] = []
    arrived = threading.Event()

    def on_report(event: Any) -> tuple[int, None]:
        got.append(event.event_information)
        arrived.set()
        return 0x0000, None

    request = Dataset()
    request.TransactionUID = "1.2.826.0.1.3680043.10.1078.99.2"
    item = Dataset()
    item.ReferencedSOPClassUID = CTImageStorage
    item.ReferencedSOPInstanceUID = uid
    request.ReferencedSOPSequence = [item]
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate(LOOPBACK, node.port, ae_title=node.aet, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    try:
        status, _ = assoc.send_n_action(request, 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE)
        assert status.Status == 0 and arrived.wait(10)
    finally:
        assoc.release()
    assert [int(i.FailureReason) for i in got[0].FailedSOPSequence] == [0x0112]


# -- 128 contexts --------------------------------------------------------------------------------
def test_an_association_with_128_contexts_of_mixed_services(node: NodeProcess) -> None:
    services = [Verification, StorageCommitmentPushModel, PatientRootQueryRetrieveInformationModelFind,
                StudyRootQueryRetrieveInformationModelFind, PatientRootQueryRetrieveInformationModelMove,
                StudyRootQueryRetrieveInformationModelMove, PatientRootQueryRetrieveInformationModelGet,
                StudyRootQueryRetrieveInformationModelGet]
    storage = [cx.abstract_syntax for cx in StoragePresentationContexts][:128 - len(services)]
    assert CTImageStorage in storage
    ae = AE(ae_title="MODALITY")
    for abstract in services + storage:
        ae.add_requested_context(abstract)
    assert len(ae.requested_contexts) == 128
    assoc = ae.associate(LOOPBACK, node.port, ae_title=node.aet)
    assert assoc.is_established
    try:
        assert len(assoc.accepted_contexts) == 128 and not assoc.rejected_contexts
        assert assoc.send_c_echo().Status == 0
        assert assoc.send_c_store(str(ct_files(1)[0])).Status == 0
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = ""
        answers = list(assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind))
        assert answers[-1][0].Status == 0 and sum(1 for s, i in answers if s.Status == 0xFF00) == 1
    finally:
        assoc.release()


# -- C-GET when the requester does not take the stored syntax -------------------------------------
def _get(node: NodeProcess, study_uid: str, syntaxes: list[str]) -> tuple[list[Dataset], list[Dataset], float]:
    received: list[Dataset] = []

    def on_store(event: Any) -> int:
        received.append(event.dataset)
        return 0

    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage, syntaxes)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_uid
    started = time.monotonic()
    assoc = ae.associate(LOOPBACK, node.port, ae_title=node.aet, ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    try:
        answers = [status for status, _identifier in assoc.send_c_get(identifier,
                                                                      StudyRootQueryRetrieveInformationModelGet)]
    finally:
        assoc.release()
    return answers, received, time.monotonic() - started


def test_get_transcodes_to_the_only_syntax_the_requester_accepts(node: NodeProcess) -> None:
    files = ct_files(3)
    assert node.store(files, aet="MODALITY").returncode == 0
    assert {str(dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID) for f in files} == {EXPLICIT}
    study_uid = node.index_rows("SELECT study_uid FROM studies")[0][0]
    answers, received, _seconds = _get(node, study_uid, [IMPLICIT])
    assert answers[-1].Status == 0 and int(answers[-1].NumberOfCompletedSuboperations) == 3
    assert {str(ds.SOPInstanceUID) for ds in received} == set(stored_uids(node))
    originals = {str(dcmread(f).SOPInstanceUID): dcmread(f) for f in files}
    for ds in received:
        assert ds.PixelData == originals[str(ds.SOPInstanceUID)].PixelData


def test_get_in_a_syntax_nobody_can_encode_is_counted_failed_not_hung(node: NodeProcess) -> None:
    assert node.store(ct_files(3), aet="MODALITY").returncode == 0
    study_uid = node.index_rows("SELECT study_uid FROM studies")[0][0]
    answers, received, seconds = _get(node, study_uid, [JPEG_BASELINE])
    last = answers[-1]
    assert last.Status == 0xA702 and int(last.NumberOfFailedSuboperations) == 3
    assert int(last.NumberOfCompletedSuboperations) == 0 and received == []
    assert seconds < 30


def test_get_failed_list_names_the_instances(node: NodeProcess) -> None:
    """The final C-GET-RSP carries the Failed SOP Instance UID List (raw, to read the identifier)."""
    assert node.store(ct_files(2), aet="MODALITY").returncode == 0
    study_uid = node.index_rows("SELECT study_uid FROM studies")[0][0]
    scu = RawScu(node.port, {1: (StudyRootQueryRetrieveInformationModelGet, EXPLICIT),
                             3: (CTImageStorage, JPEG_BASELINE)}, calling="MODALITY")
    scu.rq = pdu.AssociateRQ(scu.rq.called_ae, scu.rq.calling_ae, scu.rq.presentation_contexts,
                             pdu.UserInformation(maximum_length=16384, implementation_class_uid="1.2.3.4",
                                                 role_selections=(pdu.RoleSelection(CTImageStorage, False, True),)))
    try:
        ac = scu.associate()
        assert isinstance(ac, pdu.AssociateAC)
        assert ac.user_information.role_selections == (pdu.RoleSelection(CTImageStorage, False, True),)
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = study_uid
        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import write_dataset
        buffer = DicomBytesIO()
        buffer.is_little_endian, buffer.is_implicit_VR = True, False
        write_dataset(buffer, identifier)
        command = pdu.encode_command({pdu.AFFECTED_SOP_CLASS_UID: StudyRootQueryRetrieveInformationModelGet,
                                      pdu.COMMAND_FIELD: pdu.C_GET_RQ, pdu.MESSAGE_ID: 9, pdu.PRIORITY: 0,
                                      pdu.COMMAND_DATASET_TYPE: 1})
        scu.sock.sendall(pdu.encode_message(1, command, buffer.getvalue(), 16384))
        while True:
            response = scu.read_pdu()
            assert isinstance(response, pdu.PDataTF)
            decoded = pdu.decode_command(b"".join(p.data for p in response.pdvs if p.is_command))
            if decoded.us(pdu.STATUS) != 0xFF00:
                break
        assert decoded.us(pdu.STATUS) == 0xA702 and decoded.us(pdu.NUMBER_OF_FAILED) == 2
        data = scu.read_pdu()
        assert isinstance(data, pdu.PDataTF)
        from io import BytesIO

        from pydicom.filereader import read_dataset
        failed = read_dataset(BytesIO(b"".join(p.data for p in data.pdvs)), False, True)
        assert set(failed.FailedSOPInstanceUIDList) == set(stored_uids(node))
        assert isinstance(scu.release(), pdu.ReleaseRP)
    finally:
        scu.close()


# -- extended negotiation and malformed requests --------------------------------------------------
def test_async_window_is_answered_1_1_and_user_identity_is_accepted(node: NodeProcess) -> None:
    scu = RawScu(node.port, {1: (Verification, IMPLICIT)}, calling="MODALITY")
    scu.rq = pdu.AssociateRQ(scu.rq.called_ae, scu.rq.calling_ae, scu.rq.presentation_contexts,
                             pdu.UserInformation(maximum_length=16384, implementation_class_uid="1.2.3.4",
                                                 async_operations_window=(5, 5),
                                                 user_identity=pdu.UserIdentity(2, True, b"alice", b"secret")))
    try:
        ac = scu.associate()
        assert isinstance(ac, pdu.AssociateAC)
        assert ac.user_information.async_operations_window == (1, 1)
        assert ac.user_information.user_identity_response is None  # accepted, not confirmed (PS3.7 D.3.3.7)
        assert scu.echo().us(pdu.STATUS) == 0
        assert isinstance(scu.release(), pdu.ReleaseRP)
    finally:
        scu.close()


@pytest.mark.parametrize("sop_instance", ["", " ", "1..2", "x" * 80])
def test_store_with_an_empty_or_invalid_affected_sop_instance_fails_and_goes_on(node: NodeProcess,
                                                                                sop_instance: str) -> None:
    sop_class, real_instance, syntax, dataset = split_part10(ct_files(1)[0])
    scu = RawScu(node.port, {1: (Verification, IMPLICIT), 3: (sop_class, syntax)}, calling="MODALITY")
    try:
        assert isinstance(scu.associate(), pdu.AssociateAC)
        answer = scu.store(3, sop_class, sop_instance, dataset, message_id=2)
        assert answer.us(pdu.STATUS) == 0xC000 and answer.text(pdu.ERROR_COMMENT)
        assert scu.echo(message_id=3).us(pdu.STATUS) == 0  # the association goes on
        assert scu.store(3, sop_class, real_instance, dataset, message_id=4).us(pdu.STATUS) == 0
        assert isinstance(scu.release(), pdu.ReleaseRP)
    finally:
        scu.close()
    assert stored_uids(node) == [real_instance]
    assert node.temp_files() == []


def test_storage_commitment_report_goes_on_a_new_association_after_release(
        node_process: Callable[..., NodeProcess]) -> None:
    """The requester releases right after N-ACTION-RSP: the report reaches its registered SCP."""
    from pynetdicom import AE as ScpAE

    reports: list[tuple[int, Dataset]] = []
    arrived = threading.Event()

    def on_report(event: Any) -> tuple[int, None]:
        reports.append((int(event.request.EventTypeID), event.event_information))
        arrived.set()
        return 0x0000, None  # an acceptor's N-EVENT-REPORT handler answers (status, reply)

    scp = ScpAE(ae_title="MODALITY")
    scp.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
    server = scp.start_server((LOOPBACK, 0), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    try:
        proc = node_process(institution="CTY001")
        proc.cli("peer", "add", "modality", "--aet", "MODALITY", "--host", LOOPBACK, "--port",
                 str(server.server_address[1]), "--institution", "CTY001")
        proc.start()
        assert proc.store(ct_files(1), aet="MODALITY").returncode == 0
        uid = stored_uids(proc)[0]
        request = Dataset()
        request.TransactionUID = "1.2.826.0.1.3680043.10.1078.99.3"
        item = Dataset()
        item.ReferencedSOPClassUID = CTImageStorage
        item.ReferencedSOPInstanceUID = uid
        request.ReferencedSOPSequence = [item]
        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import write_dataset
        buffer = DicomBytesIO()
        buffer.is_little_endian, buffer.is_implicit_VR = True, True
        write_dataset(buffer, request)
        scu = RawScu(proc.port, {1: (StorageCommitmentPushModel, IMPLICIT)}, calling="MODALITY")
        try:
            assert isinstance(scu.associate(), pdu.AssociateAC)
            command = pdu.encode_command({
                pdu.REQUESTED_SOP_CLASS_UID: StorageCommitmentPushModel, pdu.COMMAND_FIELD: pdu.N_ACTION_RQ,
                pdu.MESSAGE_ID: 1, pdu.COMMAND_DATASET_TYPE: 1, pdu.REQUESTED_SOP_INSTANCE_UID: COMMITMENT_INSTANCE,
                pdu.ACTION_TYPE_ID: 1})
            scu.sock.sendall(pdu.encode_message(1, command, buffer.getvalue(), 16384))
            assert scu.response().us(pdu.STATUS) == 0  # N-ACTION-RSP
            scu.sock.sendall(pdu.ReleaseRQ().encode())  # gone before answering the report
            seen = [scu.read_pdu() for _ in range(3)]  # the unanswered report (command, dataset), then RP
            assert isinstance(seen[-1], pdu.ReleaseRP)
        finally:
            scu.close()
        assert arrived.wait(20), "the report never reached the requester's registered address"
    finally:
        server.shutdown()
    event_type, report = reports[0]
    assert event_type == 1 and report.TransactionUID == request.TransactionUID
    assert [i.ReferencedSOPInstanceUID for i in report.ReferencedSOPSequence] == [uid]
    events = proc.index_rows("SELECT outcome, detail FROM audit WHERE action = 'commitment'")
    assert any(outcome == "reported" and "new_association" in detail for outcome, detail in events)
