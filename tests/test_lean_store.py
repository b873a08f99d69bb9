"""The lean C-STORE/C-ECHO path end to end: real sockets, DCMTK, pynetdicom and a raw SCU.

Every test starts a Listener (and the pynetdicom server it delegates to) on free ports
with a real Node in ``tmp_path``; the fixture always stops both.
"""

from __future__ import annotations

import io
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_file_meta_info
from pydicom.filewriter import write_dataset
from pynetdicom import AE as PynetdicomAE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove, Verification

from pacsnode.config import NetworkSettings, NodeConfig
from pacsnode.dimse import pdu
from pacsnode.dimse.policy import IMPLEMENTATION_CLASS_UID
from pacsnode.dimse.listener import Listener
from pacsnode.model import Peer
from pacsnode.node import Node
from support import dcmtk, have_tool

REPO = Path(__file__).resolve().parents[1]
CTY001 = sorted((REPO / "sample_dicom" / "CTY001").rglob("*.dcm"))
PVT001 = sorted((REPO / "sample_dicom" / "PVT001").rglob("*.dcm"))
PYDICOM_FILES = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm"]
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT, IMPLICIT = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"
DCMTK = pytest.mark.skipif(not (have_tool("storescu") and have_tool("echoscu")), reason="DCMTK not installed")


@dataclass
class Served:
    node: Node
    listener: Listener
    delegated_to: list[Any] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.listener.port

    def instance_count(self) -> int:
        return len(self.node.index.all_instance_files())

    def temp_files(self) -> list[Path]:
        return [p for p in self.node.config.temp_path.iterdir() if p.is_file()]

    def stored_path(self, sop_instance_uid: str) -> Path:
        return self.node.storage.absolute(self.node.storage.relative_path_for(sop_instance_uid))

    def wait_idle(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.listener.active and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.listener.active == 0


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """``serve(**network_settings)`` → a running Served; everything stops at teardown."""
    stoppers: list[Callable[[], None]] = []

    def start(**network: Any) -> Served:
        node = Node(NodeConfig(home=tmp_path / f"home{len(stoppers)}", port=0, network=NetworkSettings(**network)))
        listener = Listener(node, host="127.0.0.1", port=0)
        served = Served(node, listener)
        listener.start()

        def stop() -> None:
            listener.stop(grace=1.0)
            node.close()

        stoppers.append(stop)
        return served

    yield start
    for stop in reversed(stoppers):
        stop()


# -- a minimal SCU on raw sockets, to say what storescu cannot ---------------------------
class RawScu:
    def __init__(self, port: int, contexts: dict[int, tuple[str, str]], called: str = "PACSNODE",
                 calling: str = "RAWSCU", max_pdu: int = 16384) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.rq = pdu.AssociateRQ(called, calling, tuple(
            pdu.PresentationContextRQ(cid, abstract, (syntax,)) for cid, (abstract, syntax) in contexts.items()),
            pdu.UserInformation(maximum_length=max_pdu, implementation_class_uid="1.2.3.4"))
        self.received_lengths: list[int] = []

    def associate(self) -> pdu.PDU | None:
        self.sock.sendall(self.rq.encode())
        return self.read_pdu()

    def read_pdu(self) -> pdu.PDU | None:
        header = self._recv(6)
        if header is None:
            return None
        _type, length = pdu.HEADER.unpack(header)
        body = self._recv(length) if length else b""
        assert body is not None
        self.received_lengths.append(length)
        return pdu.decode(header + body)

    def _recv(self, size: int) -> bytes | None:
        data = b""
        try:
            while len(data) < size:
                chunk = self.sock.recv(size - len(data))
                if not chunk:
                    return None
                data += chunk
        except ConnectionResetError:
            return None
        return data

    def response(self) -> pdu.Command:
        command = bytearray()
        while True:
            message = self.read_pdu()
            assert isinstance(message, pdu.PDataTF), message
            for pdv in message.pdvs:
                assert pdv.is_command
                command += pdv.data
                if pdv.is_last:
                    return pdu.decode_command(command)

    def send_store(self, context_id: int, sop_class: str, sop_instance: str, dataset: bytes | None,
                   message_id: int = 1, pdu_size: int = 0) -> None:
        command = pdu.encode_command({
            pdu.AFFECTED_SOP_CLASS_UID: sop_class, pdu.COMMAND_FIELD: pdu.C_STORE_RQ, pdu.MESSAGE_ID: message_id,
            pdu.PRIORITY: 0, pdu.COMMAND_DATASET_TYPE: pdu.NO_DATASET if dataset is None else 0,
            pdu.AFFECTED_SOP_INSTANCE_UID: sop_instance})
        self.sock.sendall(pdu.encode_message(context_id, command, dataset, pdu_size))

    def store(self, *args: Any, **kwargs: Any) -> pdu.Command:
        self.send_store(*args, **kwargs)
        return self.response()

    def echo(self, context_id: int = 1, message_id: int = 1) -> pdu.Command:
        command = pdu.encode_command({pdu.AFFECTED_SOP_CLASS_UID: Verification, pdu.COMMAND_FIELD: pdu.C_ECHO_RQ,
                                      pdu.MESSAGE_ID: message_id, pdu.COMMAND_DATASET_TYPE: pdu.NO_DATASET})
        self.sock.sendall(pdu.encode_message(context_id, command, None, 0))
        return self.response()

    def release(self) -> pdu.PDU | None:
        self.sock.sendall(pdu.ReleaseRQ().encode())
        return self.read_pdu()

    def close(self) -> None:
        self.sock.close()


def split_part10(path: Path) -> tuple[str, str, str, bytes]:
    """(SOP class, SOP instance, transfer syntax, dataset bytes after the meta group) of a file."""
    meta = read_file_meta_info(path)
    raw = path.read_bytes()
    start = 132 + 12 + int(meta.FileMetaInformationGroupLength)
    return (str(meta.MediaStorageSOPClassUID), str(meta.MediaStorageSOPInstanceUID), str(meta.TransferSyntaxUID),
            raw[start:])


def comparable(ds: pydicom.Dataset) -> list[pydicom.DataElement]:
    return [elem for elem in ds if elem.tag.element != 0 and elem.tag != 0xFFFCFFFC]


def storescu(port: int, files: list[Path], aec: str = "PACSNODE", *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([dcmtk("storescu"), "-aet", "STORESCU", "-aec", aec, *extra, "127.0.0.1", str(port),
                           *map(str, files)], capture_output=True, text=True, timeout=120)


# -- DCMTK -------------------------------------------------------------------------------
@DCMTK
def test_echoscu_is_answered_on_the_lean_path(serve: Callable[..., Served]) -> None:
    served = serve()
    result = subprocess.run([dcmtk("echoscu"), "-aec", "PACSNODE", "127.0.0.1", str(served.port)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert served.delegated_to == []


@DCMTK
def test_storescu_files_are_stored_byte_identical(serve: Callable[..., Served]) -> None:
    served = serve()
    ours = CTY001 + PVT001[:2]  # written by pacsnode's generator: storescu sends them as they are
    foreign = [Path(str(get_testdata_file(name))) for name in PYDICOM_FILES]  # storescu re-encodes some of these
    result = storescu(served.port, ours + foreign)
    assert result.returncode == 0, result.stderr
    served.wait_idle()
    assert served.instance_count() == len(ours + foreign)
    assert len(served.node.studies()) >= 4
    for source in ours + foreign:
        original = pydicom.dcmread(source)
        stored = served.stored_path(original.SOPInstanceUID)
        meta = read_file_meta_info(stored)
        if source in ours:  # storescu proposes Explicit VR LE first and converts rtplan's Implicit VR
            assert meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert (meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID) == (original.SOPClassUID,
                                                                                   original.SOPInstanceUID)
        assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
        assert meta.SourceApplicationEntityTitle == "STORESCU"
        received = pydicom.dcmread(stored)
        if source in ours:
            assert split_part10(stored)[3] == split_part10(source)[3]
        else:  # storescu drops group lengths and trailing padding (FFFC,FFFC); the rest arrives unchanged
            assert comparable(received) == comparable(original)
    assert subprocess.run([dcmtk("dcmdump"), "-q", str(served.stored_path(split_part10(ours[0])[1]))]).returncode == 0
    assert served.temp_files() == []


@DCMTK
def test_strict_called_ae(serve: Callable[..., Served]) -> None:
    served = serve(strict_called_aet=True)
    scu = RawScu(served.port, {1: (Verification, IMPLICIT)}, called="SOMEONE")
    try:
        assert scu.associate() == pdu.AssociateRJ(pdu.RJ_PERMANENT, pdu.RJ_SOURCE_USER, pdu.RJ_USER_CALLED_AE)
    finally:
        scu.close()
    assert storescu(served.port, CTY001[:1], aec="SOMEONE").returncode != 0
    assert storescu(served.port, CTY001[:1]).returncode == 0
    assert served.instance_count() == 1


@DCMTK
def test_garbage_is_aborted_and_the_server_keeps_serving(serve: Callable[..., Served]) -> None:
    served = serve()
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: pacsnode\r\n\r\n")
        answer = sock.recv(100)
        assert answer == b"" or answer[0] == pdu.ABORT
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(b"\x01\x00\xff\xff\xff\xff" + b"\x00" * 100)  # an RQ claiming 4 GB
        answer = sock.recv(100)
        assert answer == b"" or answer[0] == pdu.ABORT
    assert storescu(served.port, CTY001[:2]).returncode == 0
    assert served.instance_count() == 2


@DCMTK
def test_big_dataset_streams_to_disk(serve: Callable[..., Served], tmp_path: Path) -> None:
    served = serve()
    big = tmp_path / "big.dcm"
    size = write_big_file(big, side=5120)  # 5120 x 5120 x 16 bit = 50 MiB of pixel data
    baseline, peak, stop = rss_kib(), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kib())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = storescu(served.port, [big])
    finally:
        stop.set()
        sampler.join()
    assert result.returncode == 0, result.stderr
    assert served.instance_count() == 1
    stored = served.stored_path(split_part10(big)[1])
    assert stored.stat().st_size > size - 1024
    assert split_part10(stored)[3] == split_part10(big)[3]
    grown_mib = (peak[0] - baseline) / 1024
    assert grown_mib < 16, f"RSS grew by {grown_mib:.1f} MiB while receiving 50 MiB"


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def write_big_file(path: Path, side: int) -> int:
    """A CT with side x side 16-bit pixels, written in chunks (never the whole thing in memory)."""
    ds = pydicom.dcmread(next(p for p in CTY001 if "_CT" in str(p)))
    del ds.PixelData
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.10.1078.99.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Rows = ds.Columns = side
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    pixels = side * side * 2
    with open(path, "wb") as handle:
        handle.write(buffer.getvalue())
        handle.write(b"\xe0\x7f\x10\x00OW\x00\x00" + pixels.to_bytes(4, "little"))
        chunk = bytes(range(256)) * 4096
        for offset in range(0, pixels, len(chunk)):
            handle.write(chunk[:pixels - offset])
    return path.stat().st_size


# -- pynetdicom as the other side --------------------------------------------------------
def test_move_association_is_served_by_the_engine(serve: Callable[..., Served]) -> None:
    served = serve()
    scu = PynetdicomAE(ae_title="MOVESCU")
    scu.add_requested_context(Verification)
    scu.add_requested_context(StudyRootQueryRetrieveInformationModelMove)  # C-FIND is lean now: test_lean_find
    assoc = scu.associate("127.0.0.1", served.port, ae_title="PACSNODE")
    try:
        assert assoc.is_established
        status = assoc.send_c_echo()
        assert status.Status == 0
    finally:
        assoc.release()
        scu.shutdown()
    assert served.delegated_to == []


def test_pynetdicom_storage_scu_takes_the_lean_path(serve: Callable[..., Served]) -> None:
    served = serve()
    scu = PynetdicomAE(ae_title="PYSCU")
    scu.add_requested_context(CT, [EXPLICIT])
    assoc = scu.associate("127.0.0.1", served.port, ae_title="PACSNODE")
    try:
        ct = next(p for p in CTY001 if "_CT" in str(p))
        assert assoc.send_c_store(pydicom.dcmread(ct)).Status == 0
    finally:
        assoc.release()
        scu.shutdown()
    assert served.delegated_to == [] and served.instance_count() == 1


# -- protocol edges, with the raw SCU ----------------------------------------------------
def ct_dataset() -> tuple[str, str, bytes]:
    sop_class, sop_instance, syntax, dataset = split_part10(next(p for p in CTY001 if "_CT" in str(p)))
    assert syntax == EXPLICIT
    return sop_class, sop_instance, dataset


def test_sop_class_mismatch_fails_and_the_association_goes_on(serve: Callable[..., Served]) -> None:
    served = serve()
    sop_class, sop_instance, dataset = ct_dataset()
    scu = RawScu(served.port, {1: (MR, EXPLICIT), 3: (CT, EXPLICIT)})
    try:
        assert isinstance(scu.associate(), pdu.AssociateAC)
        answer = scu.store(1, MR, sop_instance, dataset, message_id=5)
        assert answer.us(pdu.STATUS) == 0xA900
        assert answer.us(pdu.MESSAGE_ID_BEING_RESPONDED_TO) == 5
        assert answer.us(pdu.COMMAND_FIELD) == pdu.C_STORE_RSP
        assert answer.text(pdu.AFFECTED_SOP_INSTANCE_UID) == sop_instance
        assert 0 < len(answer.text(pdu.ERROR_COMMENT)) <= 64
        assert scu.store(3, CT, sop_instance, dataset, message_id=6).us(pdu.STATUS) == 0
        assert scu.store(3, CT, "1.2.3.4", dataset, message_id=7).us(pdu.STATUS) >= 0xA000  # wrong instance UID
        assert scu.store(3, CT, sop_instance, None, message_id=8).us(pdu.STATUS) == 0xC000  # no dataset
        assert scu.echo(message_id=9).us(pdu.STATUS) == 0
        assert isinstance(scu.release(), pdu.ReleaseRP)
    finally:
        scu.close()
    served.wait_idle()
    assert served.instance_count() == 1 and served.temp_files() == []


def test_fragmented_pdvs_and_a_tiny_peer_maximum(serve: Callable[..., Served]) -> None:
    served = serve()
    sop_class, sop_instance, dataset = ct_dataset()
    scu = RawScu(served.port, {1: (Verification, IMPLICIT), 3: (CT, EXPLICIT)}, max_pdu=64)
    try:
        assert isinstance(scu.associate(), pdu.AssociateAC)
        assert scu.store(3, CT, sop_instance, dataset, pdu_size=200).us(pdu.STATUS) == 0
        assert scu.echo().us(pdu.STATUS) == 0
        assert max(scu.received_lengths[1:]) <= 64  # every P-DATA-TF we got respects our maximum
        # several PDVs in one P-DATA-TF, command and dataset together
        command = pdu.encode_command({pdu.AFFECTED_SOP_CLASS_UID: CT, pdu.COMMAND_FIELD: pdu.C_STORE_RQ,
                                      pdu.MESSAGE_ID: 2, pdu.PRIORITY: 0, pdu.COMMAND_DATASET_TYPE: 0,
                                      pdu.AFFECTED_SOP_INSTANCE_UID: sop_instance})
        half = len(dataset) // 2
        scu.sock.sendall(pdu.PDataTF((pdu.PDV(3, True, True, command), pdu.PDV(3, False, False, dataset[:half]),
                                      pdu.PDV(3, False, True, dataset[half:]))).encode())
        assert scu.response().us(pdu.STATUS) == 0  # a duplicate, kept first: still success
    finally:
        scu.close()
    stored = served.stored_path(sop_instance)
    assert split_part10(stored)[3] == dataset


def test_abort_mid_dataset_leaves_nothing(serve: Callable[..., Served]) -> None:
    served = serve()
    sop_class, sop_instance, dataset = ct_dataset()
    for how in ("abort", "close"):
        scu = RawScu(served.port, {3: (CT, EXPLICIT)})
        assert isinstance(scu.associate(), pdu.AssociateAC)
        command = pdu.encode_command({pdu.AFFECTED_SOP_CLASS_UID: CT, pdu.COMMAND_FIELD: pdu.C_STORE_RQ,
                                      pdu.MESSAGE_ID: 1, pdu.PRIORITY: 0, pdu.COMMAND_DATASET_TYPE: 0,
                                      pdu.AFFECTED_SOP_INSTANCE_UID: sop_instance})
        scu.sock.sendall(pdu.PDataTF((pdu.PDV(3, True, True, command),
                                      pdu.PDV(3, False, False, dataset[:1000]))).encode())
        deadline = time.monotonic() + 5
        while not served.temp_files() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert served.temp_files(), "the dataset should be streaming into a temporary file"
        if how == "abort":
            scu.sock.sendall(pdu.Abort(pdu.ABORT_SOURCE_USER, 0).encode())
        scu.close()
        served.wait_idle()
        assert served.temp_files() == [] and served.instance_count() == 0


@pytest.mark.parametrize("bad", [
    pdu.PDataTF((pdu.PDV(99, True, True, b"\0" * 8),)).encode(),  # context never proposed
    b"\x04\x00\x7f\xff\xff\xff",  # P-DATA-TF of 2 GB
    pdu.PDataTF((pdu.PDV(1, False, True, b"\0" * 8),)).encode(),  # dataset without a command
    b"\x0c\x00\x00\x00\x00\x00",  # unknown PDU type
    pdu.PDataTF((pdu.PDV(1, True, True, pdu.encode_command({pdu.COMMAND_FIELD: 0x0020})),)).encode(),  # C-FIND
    pdu.PDataTF((pdu.PDV(1, True, False, b"\0" * 70000),)).encode(),  # endless command set
    pdu.AssociateRQ("A", "B", (pdu.PresentationContextRQ(1, CT, (IMPLICIT,)),)).encode(),  # second RQ
])
def test_protocol_errors_abort_the_association(serve: Callable[..., Served], bad: bytes) -> None:
    served = serve()
    scu = RawScu(served.port, {1: (Verification, IMPLICIT)})
    try:
        assert isinstance(scu.associate(), pdu.AssociateAC)
        scu.sock.sendall(bad)
        answer = scu.read_pdu()
        assert answer is None or isinstance(answer, pdu.Abort)
    finally:
        scu.close()
    served.wait_idle()
    again = RawScu(served.port, {1: (Verification, IMPLICIT)})
    try:
        assert isinstance(again.associate(), pdu.AssociateAC)
        assert again.echo().us(pdu.STATUS) == 0
    finally:
        again.close()


def test_max_associations_rejects_the_extra_one(serve: Callable[..., Served]) -> None:
    served = serve(max_associations=1)
    first = RawScu(served.port, {1: (Verification, IMPLICIT)})
    second = RawScu(served.port, {1: (Verification, IMPLICIT)})
    try:
        assert isinstance(first.associate(), pdu.AssociateAC)
        assert second.associate() == pdu.AssociateRJ(pdu.RJ_TRANSIENT, pdu.RJ_SOURCE_PRESENTATION,
                                                     pdu.RJ_PRESENTATION_LIMIT)
        assert isinstance(first.release(), pdu.ReleaseRP)
    finally:
        first.close()
        second.close()
    served.wait_idle()
    third = RawScu(served.port, {1: (Verification, IMPLICIT)})
    try:
        assert isinstance(third.associate(), pdu.AssociateAC)
    finally:
        third.close()


def test_stop_aborts_what_is_left_after_the_grace_period(serve: Callable[..., Served]) -> None:
    served = serve()
    scu = RawScu(served.port, {1: (Verification, IMPLICIT)})
    try:
        assert isinstance(scu.associate(), pdu.AssociateAC)
        started = time.monotonic()
        served.listener.stop(grace=0.3)
        assert time.monotonic() - started < 5
        answer = scu.read_pdu()
        assert answer is None or isinstance(answer, pdu.Abort)
    finally:
        scu.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", served.port), timeout=1).close()


def test_implicit_vr_dataset_is_stored_with_its_syntax(serve: Callable[..., Served]) -> None:
    served = serve()
    ds = pydicom.dcmread(next(p for p in CTY001 if "_CT" in str(p)))
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_dataset(buffer, ds)  # a bare dataset, as it travels in P-DATA
    scu = RawScu(served.port, {5: (CT, IMPLICIT)})
    try:
        assert isinstance(scu.associate(), pdu.AssociateAC)
        assert scu.store(5, CT, ds.SOPInstanceUID, buffer.getvalue()).us(pdu.STATUS) == 0
    finally:
        scu.close()
    stored = served.stored_path(ds.SOPInstanceUID)
    assert read_file_meta_info(stored).TransferSyntaxUID == IMPLICIT
    assert pydicom.dcmread(stored).PatientID == ds.PatientID


def test_peer_permissions_apply_on_the_lean_path(serve: Callable[..., Served]) -> None:
    served = serve()
    served.node.add_peer(Peer(name="limited", aet="RAWSCU", host="127.0.0.1", port=104,
                              permissions=frozenset({"find"})))
    sop_class, sop_instance, dataset = ct_dataset()
    scu = RawScu(served.port, {1: (Verification, IMPLICIT), 3: (CT, EXPLICIT)})
    try:
        assert isinstance(scu.associate(), pdu.AssociateAC)
        assert scu.echo().us(pdu.STATUS) == 0x0124
        answer = scu.store(3, CT, sop_instance, dataset)
        assert answer.us(pdu.STATUS) == 0x0124 and "store" in answer.text(pdu.ERROR_COMMENT)
    finally:
        scu.close()
    served.wait_idle()
    assert served.instance_count() == 0 and served.temp_files() == []


def test_two_listeners_share_a_port_with_reuse_port(serve: Callable[..., Served]) -> None:
    served = serve()
    first = Listener(served.node, host="127.0.0.1", port=0, reuse_port=True)
    first.start()
    second = Listener(served.node, host="127.0.0.1", port=first.port, reuse_port=True)
    try:
        second.start()
        assert second.port == first.port
        for _ in range(4):
            scu = RawScu(first.port, {1: (Verification, IMPLICIT)})
            try:
                assert isinstance(scu.associate(), pdu.AssociateAC)
                assert scu.echo().us(pdu.STATUS) == 0
                assert isinstance(scu.release(), pdu.ReleaseRP)
            finally:
                scu.close()
    finally:
        second.stop(grace=1.0)
        first.stop(grace=1.0)
        first.stop(grace=1.0)  # stopping twice is harmless
