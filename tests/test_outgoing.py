"""Our own requestor-side association (``pacsnode.dimse.outgoing``) against DCMTK ``storescp``.

``storescp +B`` writes every dataset exactly as it arrived, so "byte for byte" here is exact:
the dataset bytes DCMTK received equal the stored file's dataset bytes. Over TLS the server
certificate must verify against our CA, ours is presented, and a server that does not verify
gets nothing, never a clear-text retry.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pydicom
import pytest
from pydicom import dcmread

from pacsnode.config import NodeConfig, parse_config
from pacsnode.dimse import outgoing, pdu, sending
from pacsnode.model import InstanceLocation, Peer
from support import LOOPBACK, a_ct_file, dataset_bytes, free_port, port_accepts, sample_files, write_instance
from test_tls import pki  # noqa: F401  (the module-scoped test PKI fixture)

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("storescp", path="/usr/bin") is None, reason="DCMTK storescp is needed"),
]
PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
# One file per transfer syntax pydicom's own test files carry (the ones with a file meta).
EVERY_SYNTAX = ["CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm",
                "MR_small_RLE.dcm", "SC_rgb_jpeg_dcmtk.dcm", "JPEG-lossy.dcm", "SC_rgb_jpeg_gdcm.dcm",
                "MR_small_jpeg_ls_lossless.dcm", "JPEGLSNearLossless_08.dcm", "MR_small_jp2klossless.dcm",
                "JPEG2000.dcm"]


def _location(path: Path) -> InstanceLocation:
    ds = dcmread(path, stop_before_pixels=True)
    return InstanceLocation(str(ds.SOPInstanceUID), str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID),
                            str(path))


class StoreSCP:
    """A DCMTK ``storescp`` on a free port, stopped whatever happens."""

    def __init__(self, folder: Path, *options: str) -> None:
        self.folder = folder
        self.port = free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(["/usr/bin/storescp", "+B", "-aet", "STORESCP", "-od", str(folder),
                                         *options, str(self.port)],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not port_accepts(self.port):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError("storescp did not start")
            time.sleep(0.05)

    def peer(self, tls: bool = False) -> Peer:
        return Peer("storescp", "STORESCP", LOOPBACK, self.port, tls=tls)

    def received(self, sop_instance_uid: str) -> Path | None:
        matches = [p for p in self.folder.iterdir() if p.name.endswith(sop_instance_uid)]
        return matches[0] if matches else None

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.stdout.read().decode(errors="replace") if self.process.stdout else ""


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[Callable[..., StoreSCP]]:
    started: list[StoreSCP] = []

    def start(*options: str, name: str = "received") -> StoreSCP:
        scp = StoreSCP(tmp_path / name, *options)
        started.append(scp)
        return scp

    yield start
    for scp in started:
        scp.stop()


def _tls_config(home: Path, pki: Path, cert: str = "client", ca: str = "ca") -> NodeConfig:
    home.mkdir(exist_ok=True)
    for suffix in ("crt", "key"):
        shutil.copyfile(pki / f"{cert}.{suffix}", home / f"{cert}.{suffix}")
    shutil.copyfile(pki / f"{ca}.crt", home / "trusted-ca.crt")
    return parse_config({"tls": {"certificate": f"{cert}.crt", "private_key": f"{cert}.key",
                                 "ca_certificates": "trusted-ca.crt"}}, home)


def _tls_server(pki: Path, cert: str = "node") -> tuple[str, ...]:
    return ("+tls", str(pki / f"{cert}.key"), str(pki / f"{cert}.crt"), "+cf", str(pki / "ca.crt"))


def _unique_copies(folder: Path, names: list[str]) -> list[Path]:
    """pydicom's MR_small* files share one SOP Instance UID: give each copy its own."""
    return [write_instance(PYDICOM_FILES / name, folder / name) for name in names]


def test_send_stored_delivers_the_stored_dataset_bytes_for_every_syntax_storescp_accepts(
        storescp, tmp_path: Path) -> None:
    scp = storescp("+xa")
    paths = _unique_copies(tmp_path / "stored", EVERY_SYNTAX) + sample_files()[:5]
    locations = [_location(p) for p in paths]
    with outgoing.open_for_sending(scp.peer(), "PACSNODE", locations) as assoc:
        for location in locations:
            response = assoc.send_stored(location, move_originator=("MOVESCU", 7))
            assert response.status == 0, (location.path, response)
    scp.stop()
    for path, location in zip(paths, locations):
        received = scp.received(location.sop_instance_uid)
        assert received is not None, f"{path.name} not received"
        assert dcmread(received, stop_before_pixels=True).file_meta.TransferSyntaxUID == location.transfer_syntax
        stored, got = dataset_bytes(path), dataset_bytes(received)
        if location.transfer_syntax == sending.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN and len(stored) % 2:
            stored += b"\0"  # an odd deflated bitstream goes out with its trailing pad byte
        assert got == stored, f"{path.name}: bytes differ"


def test_a_peer_taking_only_uncompressed_gets_decompressed_pixels_or_a_counted_failure(
        storescp, tmp_path: Path) -> None:
    scp = storescp("+xi")  # Implicit VR Little Endian only
    jpeg, jpeg_ls, plain = _unique_copies(tmp_path / "stored", ["SC_rgb_jpeg_dcmtk.dcm",
                                                                "MR_small_jpeg_ls_lossless.dcm", "CT_small.dcm"])
    failed = []
    with outgoing.open_for_sending(scp.peer(), "PACSNODE", [_location(p) for p in (jpeg, jpeg_ls, plain)]) as assoc:
        for path in (jpeg, jpeg_ls, plain):
            try:
                assert assoc.send_stored(_location(path)).status == 0
            except sending.CannotSend:
                failed.append(path.name)
        assert assoc.is_open  # a failed transcoding costs one instance, not the association
    scp.stop()
    assert failed == [jpeg_ls.name]  # no JPEG-LS decoder installed
    for path in (jpeg, plain):
        received = dcmread(scp.received(_location(path).sop_instance_uid))
        assert received.file_meta.TransferSyntaxUID == sending.IMPLICIT_VR_LITTLE_ENDIAN
        assert np.array_equal(received.pixel_array, dcmread(path).pixel_array)


def test_a_refusing_peer_is_an_association_rejected_error(storescp) -> None:
    scp = storescp("--refuse")
    with pytest.raises(outgoing.AssociationRejected, match="rejected"):
        outgoing.open_for_sending(scp.peer(), "PACSNODE", [_location(a_ct_file())], timeout=10)


def test_send_stored_over_mutual_tls_delivers_the_same_bytes(storescp, pki: Path, tmp_path: Path) -> None:
    scp = storescp(*_tls_server(pki))
    config = _tls_config(tmp_path / "home", pki)
    paths = sample_files()[:3]
    locations = [_location(p) for p in paths]
    with outgoing.open_for_sending(scp.peer(tls=True), "PACSNODE", locations, config) as assoc:
        assert [assoc.send_stored(loc).status for loc in locations] == [0, 0, 0]
    scp.stop()
    for path, location in zip(paths, locations):
        assert dataset_bytes(scp.received(location.sop_instance_uid)) == dataset_bytes(path)


def test_a_tls_peer_whose_certificate_does_not_verify_gets_nothing(storescp, pki: Path, tmp_path: Path) -> None:
    scp = storescp(*_tls_server(pki, cert="impostor"), "-ic")  # signed by the rogue CA
    config = _tls_config(tmp_path / "home", pki)
    with pytest.raises(outgoing.TLSFailure, match="TLS handshake"):
        outgoing.open_for_sending(scp.peer(tls=True), "PACSNODE", [_location(a_ct_file())], config, timeout=10)
    scp.stop()
    assert list(scp.folder.iterdir()) == []


def _listener() -> tuple[socket.socket, list[bytes]]:
    """A raw TCP listener recording the first bytes of every connection it accepts."""
    server = socket.create_server((LOOPBACK, 0))
    seen: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    seen.append(conn.recv(65536))
                except OSError:
                    seen.append(b"")

    threading.Thread(target=serve, daemon=True).start()
    return server, seen


def test_a_tls_peer_is_never_sent_clear_text(pki: Path, tmp_path: Path) -> None:
    server, seen = _listener()
    port = server.getsockname()[1]
    peer = Peer("plainpeer", "PLAIN", LOOPBACK, port, tls=True)
    try:
        with pytest.raises(outgoing.TLSFailure, match="no \\[tls\\] settings"):
            outgoing.open_for_sending(peer, "PACSNODE", [_location(a_ct_file())], None, timeout=3)
        no_ca = parse_config({}, tmp_path)
        with pytest.raises(outgoing.TLSFailure, match="ca_certificates"):
            outgoing.open_for_sending(peer, "PACSNODE", [_location(a_ct_file())], no_ca, timeout=3)
        with pytest.raises(outgoing.PeerError):  # a plain server: the handshake fails or times out
            outgoing.open_for_sending(peer, "PACSNODE", [_location(a_ct_file())],
                                      _tls_config(tmp_path / "home", pki), timeout=3)
        time.sleep(0.3)
    finally:
        server.close()
    assert len(seen) == 1, "only the TLS attempt may connect"
    assert seen[0][:1] == b"\x16" and b"PACSNODE" not in seen[0], "the first bytes must be a TLS ClientHello"


class _FakeAcceptor:
    """A raw-socket SCP that answers the A-ASSOCIATE-RQ with ``reply(rq)`` bytes, then idles."""

    def __init__(self, reply: Callable[[pdu.AssociateRQ], bytes],
                 after: Callable[[socket.socket], None] | None = None) -> None:
        self.server = socket.create_server((LOOPBACK, 0))
        self.port = self.server.getsockname()[1]
        self.reply, self.after = reply, after
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            conn, _ = self.server.accept()
        except OSError:
            return
        with conn:
            header = conn.recv(6, socket.MSG_WAITALL)
            body = conn.recv(pdu.HEADER.unpack(header)[1], socket.MSG_WAITALL)
            conn.sendall(self.reply(pdu.decode_associate_rq(header + body)))
            if self.after is not None:
                self.after(conn)
            else:
                time.sleep(3)

    def close(self) -> None:
        self.server.close()


def _accept_all(rq: pdu.AssociateRQ, max_pdu: int) -> bytes:
    contexts = tuple(pdu.PresentationContextAC(pc.context_id, pdu.PC_ACCEPTANCE, pc.transfer_syntaxes[0])
                     for pc in rq.presentation_contexts)
    return pdu.AssociateAC(rq.called_ae, rq.calling_ae, contexts, pdu.UserInformation(maximum_length=max_pdu)).encode()


@pytest.mark.parametrize("reply, match", [
    (lambda rq: _accept_all(rq, 6), "maximum PDU length of 6"),
    (lambda rq: pdu.HEADER.pack(pdu.ASSOCIATE_AC, 0xFFFFFFF0), "more than the"),
    (lambda rq: b"\x02\x00\x00\x00\x00\x10" + b"\xff" * 16, "failed"),
])
def test_a_hostile_acceptor_is_refused_at_association_time(reply, match: str) -> None:
    acceptor = _FakeAcceptor(reply)
    try:
        started = time.monotonic()
        with pytest.raises(outgoing.PeerError, match=match):
            outgoing.open_for_sending(Peer("fake", "FAKE", LOOPBACK, acceptor.port), "PACSNODE",
                                      [_location(a_ct_file())], timeout=5)
        assert time.monotonic() - started < 4, "a declared 4 GB PDU must be refused, not awaited"
    finally:
        acceptor.close()


def _read_message(conn: socket.socket) -> tuple[int, pdu.Command, bytes]:
    """One whole DIMSE message from a raw socket: (context id, command, dataset bytes)."""
    command, dataset, parsed, context_id = b"", b"", None, 0
    while True:
        header = conn.recv(6, socket.MSG_WAITALL)
        body = conn.recv(pdu.HEADER.unpack(header)[1], socket.MSG_WAITALL)
        message = pdu.decode(header + body)
        assert isinstance(message, pdu.PDataTF), message
        for pdv in message.pdvs:
            context_id = pdv.context_id
            if pdv.is_command:
                command += pdv.data
                if pdv.is_last:
                    parsed = pdu.decode_command(command)
                    if parsed.us(pdu.COMMAND_DATASET_TYPE) == pdu.NO_DATASET:
                        return context_id, parsed, b""
            else:
                dataset += pdv.data
                if pdv.is_last:
                    assert parsed is not None
                    return context_id, parsed, dataset


def test_an_unsolicited_message_before_the_store_response_is_kept_not_spun_on() -> None:
    """A destination that sends a message of its own (here a C-ECHO-RQ) before its C-STORE-RSP:
    the C-STORE-RSP is read off the wire and the other message is kept for whoever waits for it.
    The wait used to take the kept message back out of the pending list, put it in again, and
    so on: the C-MOVE's thread spun at 100 % CPU for ever, the bytes of the answer unread."""
    location = _location(a_ct_file())
    received: list[bytes] = []

    def serve_one(conn: socket.socket) -> None:
        context_id, command, dataset = _read_message(conn)
        received.append(dataset)
        conn.sendall(pdu.encode_message(context_id, pdu.encode_command({
            pdu.AFFECTED_SOP_CLASS_UID: outgoing.VERIFICATION, pdu.COMMAND_FIELD: pdu.C_ECHO_RQ,
            pdu.MESSAGE_ID: 77, pdu.COMMAND_DATASET_TYPE: pdu.NO_DATASET}), None, 0))
        conn.sendall(pdu.encode_message(context_id, pdu.encode_command({
            pdu.AFFECTED_SOP_CLASS_UID: location.sop_class_uid, pdu.COMMAND_FIELD: pdu.C_STORE_RSP,
            pdu.MESSAGE_ID_BEING_RESPONDED_TO: command.us(pdu.MESSAGE_ID), pdu.COMMAND_DATASET_TYPE: pdu.NO_DATASET,
            pdu.STATUS: 0, pdu.AFFECTED_SOP_INSTANCE_UID: location.sop_instance_uid}), None, 0))
        time.sleep(3)

    acceptor = _FakeAcceptor(lambda rq: _accept_all(rq, 16384), serve_one)
    outcome: list[object] = []
    try:
        assoc = outgoing.open_for_sending(Peer("fake", "FAKE", LOOPBACK, acceptor.port), "PACSNODE", [location],
                                          timeout=5)

        def send() -> None:
            try:
                outcome.append(assoc.send_stored(location))
            except Exception as exc:  # noqa: BLE001 (reported below)
                outcome.append(exc)

        worker = threading.Thread(target=send, daemon=True)
        worker.start()
        worker.join(5)
        if worker.is_alive():  # stop the spinning thread before failing
            def stop(timeout: float | None = None) -> outgoing.Message:
                raise outgoing.AssociationAborted("stopped by the test")
            assoc.receive_message = stop  # type: ignore[method-assign]
            worker.join(5)
            pytest.fail("send_stored never returned: it spun on the kept unsolicited message")
        assert isinstance(outcome[0], sending.StoreResponse) and outcome[0].status == 0, outcome
        assert received == [dataset_bytes(a_ct_file())]
        kept = assoc.receive_message(timeout=1)  # the C-ECHO-RQ is still there for whoever waits
        assert kept.command.us(pdu.COMMAND_FIELD) == pdu.C_ECHO_RQ
        assoc.abort()
    finally:
        acceptor.close()


def _send_to_a_destination_that_aborts_us(location: InstanceLocation, serve_one: Callable[[socket.socket], None],
                                          reason: str) -> None:
    """Send ``location`` to a fake destination answering with ``serve_one``: our association with it
    (only that one) ends with ``reason``."""
    acceptor = _FakeAcceptor(lambda rq: _accept_all(rq, 16384), serve_one)
    try:
        assoc = outgoing.open_for_sending(Peer("fake", "FAKE", LOOPBACK, acceptor.port), "PACSNODE", [location],
                                          timeout=5)
        with pytest.raises(outgoing.AssociationAborted, match=reason):
            assoc.send_stored(location)
        assert not assoc.is_open
    finally:
        acceptor.close()


def test_a_store_response_without_a_status_is_a_peer_error_that_aborts_only_that_association() -> None:
    """A C-STORE-RSP without its Status used to raise a bare PDUError (a ValueError) out of
    send_stored: C-MOVE counts only PeerError as "this destination is gone", so the error went
    on up and aborted the move requester's association, which got no final response, no counts
    and no Failed SOP Instance UID List."""
    location = _location(a_ct_file())

    def serve_one(conn: socket.socket) -> None:
        context_id, command, _dataset = _read_message(conn)
        conn.sendall(pdu.encode_message(context_id, pdu.encode_command({
            pdu.AFFECTED_SOP_CLASS_UID: location.sop_class_uid, pdu.COMMAND_FIELD: pdu.C_STORE_RSP,
            pdu.MESSAGE_ID_BEING_RESPONDED_TO: command.us(pdu.MESSAGE_ID),
            pdu.COMMAND_DATASET_TYPE: pdu.NO_DATASET}), None, 0))
        time.sleep(3)

    _send_to_a_destination_that_aborts_us(location, serve_one, "without a Status")


@pytest.mark.parametrize("answer", [
    pdu.HEADER.pack(pdu.P_DATA_TF, 0),  # no PDV at all
    pdu.HEADER.pack(pdu.P_DATA_TF, 8) + b"\x00\x00\x10\x00\x01\x03\x00\x00",  # a PDV longer than its PDU
], ids=["empty", "overrunning-pdv"])
def test_a_malformed_p_data_answer_is_a_peer_error(answer: bytes) -> None:
    """Like a missing Status: a broken P-DATA-TF from the destination used to escape send_stored as
    a bare PDUError and abort the C-MOVE requester's association instead of this one."""
    location = _location(a_ct_file())

    def serve_one(conn: socket.socket) -> None:
        _read_message(conn)
        conn.sendall(answer)
        time.sleep(3)

    _send_to_a_destination_that_aborts_us(location, serve_one, "malformed P-DATA-TF")


def test_a_file_that_cannot_be_read_fails_its_sub_operation_and_the_association_goes_on(storescp) -> None:
    """An open file whose read fails (EIO: /proc/self/mem is the kernel's own unreadable file) is
    one failed sub-operation (CannotSend before anything is sent). The OSError used to escape
    send_stored: C-MOVE took it for the requester's connection breaking and closed that, with
    no final response; C-GET closed the requester's association the same way."""
    scp = storescp()
    good = _location(a_ct_file())
    unreadable = InstanceLocation("1.2.826.0.1.3680043.10.1173.18.1", good.sop_class_uid, good.transfer_syntax,
                                  "/proc/self/mem")
    with outgoing.open_for_sending(scp.peer(), "PACSNODE", [good]) as assoc:
        with pytest.raises(sending.UnreadableInstance, match="cannot read /proc/self/mem"):
            assoc.send_stored(unreadable)
        assert assoc.send_stored(good).status == 0
    scp.stop()
    received = scp.received(good.sop_instance_uid)
    assert received is not None and dataset_bytes(received) == dataset_bytes(a_ct_file())


def test_a_storescp_with_nagle_on_is_not_held_by_our_delayed_ack(storescp, tmp_path: Path) -> None:
    """DCMTK's storescp (TCP_NODELAY not in its environment, Nagle on) writes each C-STORE-RSP's first 12 bytes,
    then the rest: the rest waits for our ACK of those. Reading a response left incomplete must ACK at once
    (TCP_QUICKACK), or every sub-operation of a C-MOVE waits for the kernel's delayed-ACK timer (40 ms or more
    on Linux). The bound is half that timer; a stalled send took 40+ ms each."""
    assert "TCP_NODELAY" not in os.environ
    scp = storescp()
    paths = [write_instance(path, tmp_path / "stored" / path.name) for path in sample_files()[:12]]
    locations = [_location(p) for p in paths]
    took = []
    with outgoing.open_for_sending(scp.peer(), "PACSNODE", locations) as assoc:
        for location in locations:
            began = time.perf_counter()
            assert assoc.send_stored(location).status == 0
            took.append(time.perf_counter() - began)
    assert sorted(took)[len(took) // 2] < 0.020, [round(t * 1000, 1) for t in took]
