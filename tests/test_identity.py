"""Who is asking (issue 10 items 1, 10, 11): a calling AE title is a claim, never an identity.

Played as the hostile party over loopback against a real ``pacsnode serve``: a blank calling AE
(DCMTK ``-aet " "``), 16 NUL bytes in a raw A-ASSOCIATE-RQ, a registered AE title from the wrong
address, a second peer claiming an AE title already taken. The node holds the sample region's
studies of every institution; a peer of this node's own institution sees them all, so a query
that finds nothing proves the refusal (a control query with the registered AE finds them).
"""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import struct
from pathlib import Path
from typing import Callable

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from pacsnode.index import schema
from pacsnode.node import Node
from pacsnode.config import load_config
from support import LOOPBACK, NodeProcess, have_tool, run_tool, sample_files, write_instance

pytestmark = [pytest.mark.interop,
              pytest.mark.skipif(not have_tool("findscu"), reason="DCMTK findscu is needed")]

OWN = "PRV001"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
IMPLICIT_LE = "1.2.840.10008.1.2"


@pytest.fixture
def served(node_process: Callable[..., NodeProcess]) -> NodeProcess:
    """A node of PRV001 holding the sample studies, storing only from registered peers."""
    proc = node_process(institution=OWN)
    proc.cli_in_process = True  # the CLI sets the node up; the wire is what is tested
    proc.configure("store", "accept_from", "registered")
    imported = proc.cli("import", *map(str, sample_files()[:40]))
    assert imported.returncode == 0, imported.explain()
    added = proc.cli("peer", "add", "workstation", "--aet", "PRV_WS", "--host", LOOPBACK, "--port", "1",
                     "--institution", OWN)
    assert added.returncode == 0, added.explain()
    return proc.start()


def findscu_matches(port: int, aet: str) -> int:
    """How many pending C-FIND responses DCMTK's findscu got for "every study" as ``aet``."""
    result = run_tool(["/usr/bin/findscu", "-v", "-S", "-to", "10", "-aet", aet, "-aec", "PACSNODE",
                       "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID", "-k", "PatientID",
                       LOOPBACK, str(port)])
    return len(re.findall(r"Find Response: \d+ \(Pending", result.output))


def test_findscu_with_a_blank_calling_ae_finds_nothing(served: NodeProcess) -> None:
    assert findscu_matches(served.port, "PRV_WS") > 0  # the same query as a registered peer sees the studies
    assert findscu_matches(served.port, " ") == 0
    assert findscu_matches(served.port, " " * 16) == 0


def test_storescu_with_a_blank_calling_ae_obeys_accept_from_registered(served: NodeProcess, tmp_path: Path) -> None:
    blank = write_instance(sample_files()[0], tmp_path / "blank.dcm")
    result = run_tool(["/usr/bin/storescu", "-d", "-aet", " ", "-aec", "PACSNODE", LOOPBACK, str(served.port),
                       str(blank)])
    stored = served.index_rows("SELECT 1 FROM instances WHERE sop_instance_uid=?", (_sop_uid(blank),))
    assert stored == [], result.explain()
    registered = write_instance(sample_files()[0], tmp_path / "registered.dcm")
    assert served.store([registered], aet="PRV_WS").status_of(_sop_uid(registered)) == 0


# -- 16 NUL bytes as calling AE, on raw sockets -------------------------------------------------
class RawAssociation:
    """Just enough of PS3.8 to send an A-ASSOCIATE-RQ with any calling AE bytes, then one DIMSE request."""

    def __init__(self, port: int, calling: bytes, abstract: str) -> None:
        self.sock = socket.create_connection((LOOPBACK, port), timeout=10)
        context = _item(0x30, abstract.encode()) + _item(0x40, IMPLICIT_LE.encode())
        variable = (_item(0x10, b"1.2.840.10008.3.1.1.1") + _item(0x20, b"\x01\x00\x00\x00" + context)
                    + _item(0x50, _item(0x51, struct.pack(">I", 16384)) + _item(0x52, b"1.2.3.4")))
        body = struct.pack(">HH", 1, 0) + b"PACSNODE".ljust(16) + calling + b"\0" * 32 + variable
        self.sock.sendall(struct.pack(">BBI", 0x01, 0, len(body)) + body)
        self.accepted = self._pdu()[0] == 0x02

    def request(self, command: dict[int, bytes], dataset: bytes) -> list[int]:
        """Send a command and its dataset; return every response status until a final one."""
        encoded = b"".join(struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(v)) + v for tag, v in command.items())
        group = struct.pack("<HHII", 0, 0, 4, len(encoded))
        for payload, flags in ((group + encoded, 0x03), (dataset, 0x02)):
            pdv = struct.pack(">IBB", len(payload) + 2, 1, flags) + payload
            self.sock.sendall(struct.pack(">BBI", 0x04, 0, len(pdv)) + pdv)
        statuses: list[int] = []
        while True:
            kind, body = self._pdu()
            if kind != 0x04:
                return statuses  # released or aborted: no more answers
            flags, payload = body[5], body[6:]
            if flags & 0x01:  # a command: find its Status (0000,0900)
                status = _element(payload, 0x00000900)
                statuses.append(struct.unpack("<H", status)[0])
                if statuses[-1] not in (0xFF00, 0xFF01):
                    return statuses

    def _pdu(self) -> tuple[int, bytes]:
        header = self._read(6)
        if len(header) < 6:
            return 0, b""
        length = struct.unpack(">I", header[2:])[0]
        return header[0], self._read(length)

    def _read(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            try:
                chunk = self.sock.recv(size - len(data))
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()


def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


def _element(data: bytes, wanted: int) -> bytes:
    pos = 0
    while pos + 8 <= len(data):
        group, element, length = struct.unpack("<HHI", data[pos:pos + 8])
        if (group << 16 | element) == wanted:
            return data[pos + 8:pos + 8 + length]
        pos += 8 + length
    raise AssertionError(f"no ({wanted >> 16:04X},{wanted & 0xFFFF:04X}) in the command")


def _uid(text: str) -> bytes:
    raw = text.encode()
    return raw + b"\0" * (len(raw) % 2)


def _find_command() -> dict[int, bytes]:
    return {0x00000002: _uid(STUDY_ROOT_FIND), 0x00000100: struct.pack("<H", 0x0020),
            0x00000110: struct.pack("<H", 7), 0x00000700: struct.pack("<H", 0), 0x00000800: struct.pack("<H", 0)}


def test_raw_associate_with_16_nul_bytes_as_calling_ae_finds_nothing(served: NodeProcess) -> None:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    query.PatientID = ""
    control = RawAssociation(served.port, b"PRV_WS".ljust(16), STUDY_ROOT_FIND)
    try:
        assert control.accepted
        assert control.request(_find_command(), _implicit_le(query)).count(0xFF00) > 0
    finally:
        control.close()
    raw = RawAssociation(served.port, b"\0" * 16, STUDY_ROOT_FIND)
    try:  # refused at association time, or accepted and then nothing found: either way nothing leaks
        if raw.accepted:
            statuses = raw.request(_find_command(), _implicit_le(query))
            assert statuses and not [s for s in statuses if s in (0xFF00, 0xFF01)], statuses
    finally:
        raw.close()


def test_raw_store_with_16_nul_bytes_as_calling_ae_obeys_accept_from_registered(
        served: NodeProcess, tmp_path: Path) -> None:
    from pydicom import dcmread

    path = write_instance(sample_files()[0], tmp_path / "nul.dcm")
    ds = dcmread(path)
    sop_class, sop_instance = str(ds.SOPClassUID), str(ds.SOPInstanceUID)
    raw = RawAssociation(served.port, b"\0" * 16, sop_class)
    try:
        if raw.accepted:
            command = {0x00000002: _uid(sop_class), 0x00000100: struct.pack("<H", 0x0001),
                       0x00000110: struct.pack("<H", 1), 0x00000700: struct.pack("<H", 0),
                       0x00000800: struct.pack("<H", 0), 0x00001000: _uid(sop_instance)}
            statuses = raw.request(command, _implicit_le(ds))
            assert statuses and statuses[-1] != 0, statuses
    finally:
        raw.close()
    assert served.index_rows("SELECT 1 FROM instances WHERE sop_instance_uid=?", (sop_instance,)) == []


def _implicit_le(ds: Dataset) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    clean = Dataset()
    for element in ds:
        if element.tag.group != 0x0002:
            clean.add(element)
    write_dataset(buffer, clean)
    return buffer.getvalue()


def _sop_uid(path: Path) -> str:
    from pydicom import dcmread

    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


# -- item 11: a registered AE title from another address ----------------------------------------
def test_a_registered_ae_from_another_address_is_nobody_unless_any_host(served: NodeProcess) -> None:
    added = served.cli("peer", "add", "elsewhere", "--aet", "PRV_FAR", "--host", "127.0.0.2", "--port", "1",
                       "--institution", OWN)
    assert added.returncode == 0, added.explain()
    assert findscu_matches(served.port, "PRV_FAR") == 0  # findscu calls from 127.0.0.1
    refused = served.index_rows("SELECT detail FROM audit WHERE peer_aet='PRV_FAR' AND outcome='refused'")
    assert refused and "127.0.0.2" in refused[-1][0]
    opened = served.cli("peer", "add", "elsewhere", "--aet", "PRV_FAR", "--host", "127.0.0.2", "--port", "1",
                        "--institution", OWN, "--any-host", "--replace")
    assert opened.returncode == 0, opened.explain()
    assert findscu_matches(served.port, "PRV_FAR") > 0


# -- item 10: AE titles unique, host/port/institution validated ---------------------------------
def test_a_second_peer_cannot_take_a_registered_ae_title(served: NodeProcess) -> None:
    twin = served.cli("peer", "add", "twin", "--aet", "PRV_WS", "--host", LOOPBACK, "--port", "1",
                      "--institution", OWN)
    assert twin.returncode != 0 and "PRV_WS" in twin.stderr and len(twin.stderr.strip().splitlines()) == 1
    again = served.cli("peer", "add", "workstation", "--aet", "PRV_WS", "--host", LOOPBACK, "--port", "2",
                       "--institution", OWN, "--replace")
    assert again.returncode == 0, again.explain()
    peers = json.loads(served.cli("peer", "list", "--json").stdout)
    assert [(p["name"], p["port"]) for p in peers if p["aet"] == "PRV_WS"] == [("workstation", 2)]


@pytest.mark.parametrize("padded", [" PRV_WS", "PRV_WS ", "  PRV_WS   "])
def test_a_space_padded_ae_title_is_the_same_title_for_uniqueness(served: NodeProcess, padded: str) -> None:
    twin = served.cli("peer", "add", "twin", "--aet", padded, "--host", LOOPBACK, "--port", "1", "--institution", OWN)
    assert twin.returncode != 0 and "PRV_WS" in twin.stderr, twin.explain()
    peers = json.loads(served.cli("peer", "list", "--json").stdout)
    assert [p["name"] for p in peers if p["aet"].strip() == "PRV_WS"] == ["workstation"]


@pytest.mark.parametrize("args, named", [
    (("--host", "10.0.0 .7"), "host"),
    (("--host", "no-such-host.invalid"), "host"),
    (("--port", "70000"), "port"),
    (("--institution", "PRV01"), "PRV001"),  # nearest known institution suggested
    (("--institution", "NOWHERE"), "NOWHERE"),
])
def test_peer_add_validates_host_port_and_institution(node_process: Callable[..., NodeProcess],
                                                      args: tuple[str, str], named: str) -> None:
    proc = node_process(institution=OWN)
    proc.cli_in_process = True  # the same click command; stderr is still one line (a traceback would add lines)
    base = {"--aet": "NEWPEER", "--host": LOOPBACK, "--port": "104", "--institution": "CTY001"}
    base.update(dict([args]))
    result = proc.cli("peer", "add", "new", *[x for pair in base.items() for x in pair])
    assert result.returncode != 0 and named in result.stderr, result.explain()
    assert len(result.stderr.strip().splitlines()) == 1
    assert json.loads(proc.cli("peer", "list", "--json").stdout) == []
    own = proc.cli("peer", "add", "ws", "--aet", "WS", "--host", "localhost", "--port", "104", "--institution", OWN)
    assert own.returncode == 0, own.explain()


# -- item 11: the migration of peers registered before the host check was the default ----------
def test_existing_peers_get_the_host_check_from_the_named_migration(node_process: Callable[..., NodeProcess],
                                                                     tmp_path: Path) -> None:
    proc = node_process(institution=OWN)
    old_home = tmp_path / "old"
    old_home.mkdir()
    for name in ("pacsnode.toml", "recognition.toml", "qc_rules.toml"):
        (old_home / name).write_bytes((proc.home / name).read_bytes())
    conn = sqlite3.connect(old_home / "index.sqlite", isolation_level=None)
    names = [name for name, _ in schema.MIGRATIONS]
    schema.migrate(conn, schema.MIGRATIONS[:names.index("0004_peer_tls") + 1])
    conn.execute("INSERT INTO peers (name, aet, host, port, institution, check_host) "
                 "VALUES ('old', 'OLD_PACS', '10.0.0.7', 104, 'CTY001', 0)")
    conn.close()
    node = Node(load_config(old_home))
    try:
        assert node.peers.get("old").check_host is True
        assert node.identify("OLD_PACS", "127.0.0.1").peer is None
        assert node.identify("OLD_PACS", "10.0.0.7").peer is not None
    finally:
        node.close()


# -- the value itself ---------------------------------------------------------------------------
def test_no_calling_ae_title_is_the_local_admin_and_callers_come_only_from_named_constructors(
        node: Node) -> None:
    from hypothesis import given, settings, strategies as st

    from pacsnode.model import Caller, CallerKind, Peer

    node.add_peer(Peer("ws", "PRV_WS", LOOPBACK, 104))
    for aet in ("", " ", " " * 16, "\0" * 16, "PRV_WS\0", "\0PRV_WS", "PRV\x1bWS", "PRV_WS\n", "ＰＲＶ"):
        caller = node.identify(aet, LOOPBACK)
        assert caller.kind is CallerKind.NOBODY and caller.peer is None, repr(aet)
    assert node.identify("  PRV_WS ", LOOPBACK).peer is not None  # padding spaces are not significant (PS3.5)
    node.add_peer(Peer("named", "NAMED", "localhost", 104))  # a host name is resolved to check the address
    assert node.identify("NAMED", LOOPBACK).peer is not None
    assert node.identify("NAMED", "::ffff:127.0.0.1").peer is not None
    assert node.identify("NAMED", "10.1.1.1").peer is None and node.identify("NAMED", "").peer is None

    @settings(max_examples=300, deadline=None)
    @given(st.text(max_size=20) | st.binary(max_size=20).map(lambda b: b.decode("latin-1")))
    def never_admin(aet: str) -> None:
        assert not node.identify(aet, LOOPBACK).is_local_admin

    never_admin()
    with pytest.raises(TypeError):
        Caller(CallerKind.LOCAL_ADMIN)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Caller(CallerKind.PEER, aet="PRV_WS")  # type: ignore[call-arg]
