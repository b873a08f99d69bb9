"""A hostile peer on the wire against a real ``pacsnode serve`` (issue 10 items 1, 6, 7).

* a blank (16 spaces, 16 NULs) or non-printable calling AE title is refused at association
  time with A-ASSOCIATE-RJ (rejected-permanent, service-user, calling AE title not
  recognized) and audited: it never becomes anybody, let alone the local admin;
* a PDU declaring more than we advertised is an A-ABORT before its body is read, on every
  path (A-ASSOCIATE-RQ, P-DATA before and after the association): the server does not grow;
* a byte every second does not hold an association slot or a negotiation slot; connections
  per source address and connections without an A-ASSOCIATE-RQ are capped.
"""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path
from typing import Callable

import pytest

from pacsnode.dimse import pdu
from support import LOOPBACK, NodeProcess, run_tool

pytestmark = pytest.mark.interop

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT = "1.2.840.10008.1.2"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


def rq_bytes(calling: bytes, contexts: tuple[tuple[str, str], ...] = ((VERIFICATION, IMPLICIT),)) -> bytes:
    """An A-ASSOCIATE-RQ whose calling AE field is exactly these 16 bytes."""
    assert len(calling) == 16
    raw = bytearray(pdu.AssociateRQ("PACSNODE", "PLACEHOLDER", tuple(
        pdu.PresentationContextRQ(2 * i + 1, a, (t,)) for i, (a, t) in enumerate(contexts)),
        pdu.UserInformation(maximum_length=16384, implementation_class_uid="1.2.3.4")).encode())
    raw[6 + 20:6 + 36] = calling
    return bytes(raw)


def read_pdu(sock: socket.socket, timeout: float = 10.0) -> pdu.PDU | None:
    sock.settimeout(timeout)
    header = _recv(sock, 6)
    if header is None:
        return None
    _type, length = pdu.HEADER.unpack(header)
    body = _recv(sock, length)
    return None if body is None else pdu.decode(header + body)


def _recv(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    try:
        while len(data) < size:
            chunk = sock.recv(size - len(data))
            if not chunk:
                return None
            data += chunk
    except (ConnectionResetError, TimeoutError):
        return None
    return data


def rss_kb(proc: NodeProcess) -> int:
    assert proc.proc is not None
    for line in Path(f"/proc/{proc.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def threads_of(proc: NodeProcess) -> int:
    assert proc.proc is not None
    for line in Path(f"/proc/{proc.proc.pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads")


def audit_rows(proc: NodeProcess, action: str) -> list[tuple[str, str, str]]:
    return [tuple(r) for r in proc.index_rows("SELECT outcome, peer_aet, detail FROM audit WHERE action = ?",
                                              (action,))]  # type: ignore[misc]


def echo_works(proc: NodeProcess) -> bool:
    with socket.create_connection((LOOPBACK, proc.port), timeout=10) as sock:
        sock.sendall(rq_bytes(b"ECHOSCU".ljust(16)))
        return isinstance(read_pdu(sock), pdu.AssociateAC)


@pytest.fixture
def node(node_process: Callable[..., NodeProcess]) -> NodeProcess:
    return node_process(institution="PRV001")


# -- item 1: blank or non-printable calling AE --------------------------------------------------
@pytest.mark.skipif(not Path("/usr/bin/findscu").exists(), reason="DCMTK findscu is needed")
def test_findscu_with_a_blank_calling_ae_is_rejected_and_finds_nothing(node: NodeProcess, tmp_path: Path) -> None:
    node.start()
    sample = next(p for p in Path(__file__).resolve().parents[1].joinpath("sample_dicom").rglob("*.dcm"))
    assert node.store([sample]).returncode == 0
    out = tmp_path / "out"
    out.mkdir()
    result = run_tool(["/usr/bin/findscu", "-S", "-aet", " ", "-aec", "PACSNODE", "-X", "-od", str(out),
                       "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID", LOOPBACK, str(node.port)],
                      timeout=60)
    assert result.returncode != 0
    assert "Calling AE Title Not Recognized" in result.output or "rejected" in result.output.lower(), result.output
    assert list(out.iterdir()) == []
    rejections = [detail for outcome, _aet, detail in audit_rows(node, "association") if outcome == "rejected"]
    assert any("calling AE" in detail for detail in rejections)


@pytest.mark.parametrize("calling", [b"\0" * 16, b" " * 16, b"\x01EVIL" + b" " * 11, b"CT\x1b[2J" + b" " * 10,
                                     "ÉCOLE".encode("latin-1").ljust(16), b"A\\B".ljust(16),
                                     b"\0\0\0PEER".ljust(16), b"PEER\0\0X".ljust(16)],
                         ids=["nuls", "spaces", "control", "escape", "non-ascii", "backslash", "leading-nuls",
                              "inner-nuls"])
def test_raw_rq_with_an_unusable_calling_ae_is_rejected_calling_ae_not_recognized(node: NodeProcess,
                                                                                 calling: bytes) -> None:
    node.start()
    with socket.create_connection((LOOPBACK, node.port), timeout=10) as sock:
        sock.sendall(rq_bytes(calling, ((VERIFICATION, IMPLICIT), (STUDY_FIND, IMPLICIT))))
        answer = read_pdu(sock)
    assert answer == pdu.AssociateRJ(pdu.RJ_PERMANENT, pdu.RJ_SOURCE_USER, pdu.RJ_USER_CALLING_AE)
    rejected = [row for row in audit_rows(node, "association") if row[0] == "rejected"]
    raw_hex = calling.rstrip(b"\0 ").hex()
    assert rejected and f'"calling_raw": "{raw_hex}"' in rejected[-1][2]
    assert echo_works(node)


# -- item 6: a PDU longer than we advertised ----------------------------------------------------
def _flood(sock: socket.socket, megabytes: int) -> int:
    """Send up to ``megabytes`` MB of zeros; how many bytes went before the server closed."""
    chunk, sent = b"\0" * (1 << 20), 0
    sock.settimeout(5)
    try:
        for _ in range(megabytes):
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass
    return sent


@pytest.mark.parametrize("when", ["after-association", "instead-of-rq", "huge-rq"])
def test_a_declared_4_gb_pdu_is_aborted_before_its_body(node: NodeProcess, when: str) -> None:
    node.start()
    before = rss_kb(node)
    with socket.create_connection((LOOPBACK, node.port), timeout=10) as sock:
        if when == "after-association":
            sock.sendall(rq_bytes(b"RAWSCU".ljust(16)))
            assert isinstance(read_pdu(sock), pdu.AssociateAC)
            sock.sendall(pdu.HEADER.pack(pdu.P_DATA_TF, 0xFFFFFFF0))
        elif when == "instead-of-rq":
            sock.sendall(pdu.HEADER.pack(pdu.P_DATA_TF, 0xFFFFFFF0))
        else:
            sock.sendall(pdu.HEADER.pack(pdu.ASSOCIATE_RQ, 0xFFFFFFF0))
        answer = read_pdu(sock)
        assert isinstance(answer, pdu.Abort)
        sent = _flood(sock, 200)
    assert sent < 200 << 20  # the server stopped reading and closed
    assert rss_kb(node) - before < 30_000  # KB: nothing of the flood was buffered
    assert echo_works(node)


# -- item 7: slowloris and connection caps ------------------------------------------------------
def trickle(sock: socket.socket, data: bytes, interval: float = 1.0) -> float | None:
    """Send ``data`` one byte per ``interval``; seconds until the server spoke or closed (None: never)."""
    started = time.monotonic()
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
            sock.settimeout(interval)
            sock.recv(64, socket.MSG_PEEK)  # returns (an A-ABORT, or b"" on close) once the server acts
            return time.monotonic() - started
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - started
    return None


def test_a_byte_every_second_does_not_hold_an_association(node: NodeProcess) -> None:
    node.configure("network", "pdu_timeout", 2).configure("network", "network_timeout", 60)
    node.start()
    with socket.create_connection((LOOPBACK, node.port), timeout=10) as sock:
        sock.sendall(rq_bytes(b"SLOWSCU".ljust(16)))
        assert isinstance(read_pdu(sock), pdu.AssociateAC)
        message = pdu.encode_message(1, pdu.encode_command({
            pdu.AFFECTED_SOP_CLASS_UID: VERIFICATION, pdu.COMMAND_FIELD: pdu.C_ECHO_RQ, pdu.MESSAGE_ID: 1,
            pdu.COMMAND_DATASET_TYPE: pdu.NO_DATASET}), None, 0)
        assert len(message) > 20  # 20+ seconds if every byte were welcome
        seconds = trickle(sock, message)
    assert seconds is not None and seconds < 6, "a trickling peer held the association"


def test_a_byte_every_second_does_not_hold_the_negotiation(node: NodeProcess) -> None:
    node.configure("network", "acse_timeout", 2)
    node.start()
    with socket.create_connection((LOOPBACK, node.port), timeout=10) as sock:
        seconds = trickle(sock, rq_bytes(b"SLOWSCU".ljust(16)))
    assert seconds is not None and seconds < 6, "a trickling peer held the negotiation"


def test_connections_per_address_are_capped(node: NodeProcess) -> None:
    node.configure("network", "max_associations_per_address", 3)
    node.start()
    silent = [socket.create_connection((LOOPBACK, node.port), timeout=10) for _ in range(3)]
    try:
        time.sleep(0.3)
        try:
            extra = socket.create_connection((LOOPBACK, node.port), timeout=5)
        except ConnectionResetError:  # refused so fast that connect() itself saw the reset
            extra = None
        if extra is not None:
            with extra:
                extra.settimeout(5)
                try:
                    assert extra.recv(64) == b""  # closed at once
                except ConnectionResetError:
                    pass
    finally:
        for sock in silent:
            sock.close()
    time.sleep(0.3)
    assert echo_works(node)
    assert any("from this address" in detail for outcome, _aet, detail in audit_rows(node, "connection"))


def test_connections_without_an_rq_are_capped_and_cost_no_thread_each(node: NodeProcess) -> None:
    node.configure("network", "max_pending_connections", 8).configure("network", "max_associations_per_address", 500)
    node.start()
    threads_before = threads_of(node)
    silent = []
    try:
        for _ in range(200):
            try:
                silent.append(socket.create_connection((LOOPBACK, node.port), timeout=10))
            except ConnectionResetError:  # refused so fast the handshake saw the reset
                pass
        time.sleep(0.5)
        assert threads_of(node) <= threads_before + 8 + 2
        alive = 0
        for sock in silent:
            sock.settimeout(0.01)
            try:
                alive += sock.recv(1) != b""
            except TimeoutError:
                alive += 1
            except OSError:
                pass
        assert alive <= 8 + 2
    finally:
        for sock in silent:
            sock.close()
    time.sleep(0.5)
    assert echo_works(node)


def test_silent_connections_from_two_hosts_do_not_lock_out_a_real_peer(node: NodeProcess) -> None:
    """Two hosts, 32 silent connections each (the per-address cap), took all 64 pending slots:
    every real peer was refused for acse_timeout, again and again. A real peer sends its RQ at
    once, so the connection silent the longest is cut to make room for it."""
    node.start()
    silent = []
    try:
        for host in ("127.0.0.2", "127.0.0.3"):
            for _ in range(32):
                sock = socket.socket()
                sock.bind((host, 0))
                sock.connect((LOOPBACK, node.port))
                silent.append(sock)
        time.sleep(1.5)  # PENDING_EVICT_SECONDS: they are all silent for longer than a real peer
        for _ in range(3):
            assert node.echo().returncode == 0  # DCMTK echoscu
            assert echo_works(node)  # raw RQ
        assert any(row[0] == "refused" and "cut to make room" in row[2] for row in audit_rows(node, "connection"))
    finally:
        for sock in silent:
            sock.close()


def test_one_unregistered_host_cannot_take_every_association_slot(node: NodeProcess) -> None:
    """An unregistered AE held all 32 associations (max_associations = per-address cap) from one
    host, and every registered peer got A-ASSOCIATE-RJ. A quarter of the slots stays for registered peers."""
    added = node.cli("peer", "add", "ward", "--aet", "WARD_WS", "--host", LOOPBACK, "--port", "1",
                     "--institution", "PRV001")
    assert added.returncode == 0, added.explain()
    node.start()
    held = []
    try:
        for _ in range(32):
            sock = socket.socket()
            sock.bind(("127.0.0.2", 0))
            sock.connect((LOOPBACK, node.port))
            sock.sendall(rq_bytes(b"HOG".ljust(16)))
            if isinstance(read_pdu(sock), pdu.AssociateAC):
                held.append(sock)
            else:
                sock.close()
        assert 0 < len(held) < 32
        assert node.echo(aet="WARD_WS").returncode == 0  # DCMTK echoscu as the registered peer
        assert node.echo(aet="OTHER").returncode != 0  # another stranger waits like the hog's extras
    finally:
        for sock in held:
            sock.close()


def test_dcmtk_still_works_under_the_default_limits(node: NodeProcess) -> None:
    if shutil.which("echoscu") is None:
        pytest.skip("DCMTK echoscu is needed")
    node.start()
    assert node.echo().returncode == 0
