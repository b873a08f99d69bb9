"""Issue 10 item 3: every outgoing association uses the destination peer's TLS settings and
fails closed, for each CLI command that calls a peer (echo, find, move, get, send, priors).

The commands under test run as ``pacsnode`` subprocesses; the peers they call are registered in
process (set-up, not what is tested). Two proofs per command: against a TLS-only pacsnode (mutual authentication) it works, so it
did speak TLS; against a listener registered with ``--tls`` that does not answer the
handshake, the command fails (priors: reports the peer as not reached) and the listener
never receives anything but a TLS ClientHello: no clear-text retry, no A-ASSOCIATE-RQ.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Callable

import pytest
from pydicom import dcmread

from support import LOOPBACK, NodeProcess, sample_files
from test_tls import _tls_home, pki, tls_node  # noqa: F401  (fixtures and the PKI helper)

pytestmark = pytest.mark.interop
COMMANDS = ["echo", "find", "move", "get", "send", "priors"]


def _command(name: str, peer: str, study_uid: str = "1.2.3.4", patient: tuple[str, str] = ("P0001", "PRV001")
             ) -> list[str]:
    return {
        "echo": ["echo", peer],
        "find": ["find", peer, "-k", f"PatientID={patient[0]}", "-k", f"IssuerOfPatientID={patient[1]}"],
        "move": ["move", peer, "--study", study_uid, "--dest", "TLSSCU"],
        "get": ["get", peer, "--study", study_uid],
        "send": ["send", peer, str(sample_files()[0])],
        "priors": ["priors", "--patient-id", patient[0], "--issuer", patient[1]],
    }[name]


@pytest.fixture
def caller(node_process: Callable[..., NodeProcess], pki: Path) -> NodeProcess:  # noqa: F811
    """A node (not serving) whose [tls] trusts the test CA and presents the client certificate."""
    return _tls_home(node_process(name="caller", aet="TLSSCU", institution="CTY001"), pki, "client",
                     enabled=False, mutual=False)


class _SilentListener:
    """Accepts connections, records the first bytes of each, then hangs up."""

    def __init__(self) -> None:
        self.server = socket.create_server((LOOPBACK, 0))
        self.port = self.server.getsockname()[1]
        self.seen: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(3)
                try:
                    self.seen.append(conn.recv(65536))
                except OSError:
                    self.seen.append(b"")

    def close(self) -> None:
        self.server.close()


@pytest.mark.parametrize("command", COMMANDS)
def test_a_tls_peer_that_fails_the_handshake_is_an_error_never_clear_text(caller: NodeProcess, command: str) -> None:
    listener = _SilentListener()
    try:
        caller.cli("peer", "add", "provincial", "--aet", "PACSNODE", "--host", LOOPBACK, "--port",
                   str(listener.port), "--institution", "PRV001", "--tls", in_process=True)
        result = caller.cli(*_command(command, "provincial"))
    finally:
        listener.close()
    if command == "priors":  # a peer that cannot be reached is reported, the local answer still printed
        assert "peer provincial not reached" in result.stderr, result.explain()
    else:
        assert result.returncode != 0, result.explain()
        assert "Traceback" not in result.stderr
        assert "TLS" in result.stderr, f"{command}: the error must say TLS failed: {result.stderr!r}"
    assert listener.seen, "the command never tried the peer"
    for first in listener.seen:
        assert first[:2] == b"\x16\x03", f"{command} sent {first[:16]!r}: not a TLS handshake"
        assert b"PACSNODE" not in first and b"TLSSCU" not in first


@pytest.mark.parametrize("command", ["echo", "find", "get", "send", "priors"])
def test_each_command_works_against_a_tls_only_peer(tls_node: NodeProcess, caller: NodeProcess,  # noqa: F811
                                                    command: str) -> None:
    files = [p for p in sample_files() if "PRV001" in str(p)][:2]
    assert tls_node.cli("import", *map(str, files), in_process=True).returncode == 0
    study_uid = tls_node.index_rows("SELECT study_uid FROM studies")[0][0]
    tls_node.cli("peer", "add", "caller", "--aet", "TLSSCU", "--host", LOOPBACK, "--port", "1",
                 "--institution", "CTY001", "--replace", in_process=True)
    caller.cli("peer", "add", "provincial", "--aet", "PACSNODE", "--host", LOOPBACK, "--port", str(tls_node.port),
               "--institution", "PRV001", "--tls", in_process=True)
    ds = dcmread(files[0], stop_before_pixels=True)
    result = caller.cli(*_command(command, "provincial", study_uid, (str(ds.PatientID), str(ds.IssuerOfPatientID))))
    assert result.returncode == 0, result.explain()
    assert "not reached" not in result.stderr, result.explain()


def test_a_tls_peer_with_a_certificate_we_do_not_trust_is_refused_by_every_command(
        tls_node: NodeProcess, node_process: Callable[..., NodeProcess], pki: Path) -> None:  # noqa: F811
    rogue = _tls_home(node_process(name="rogue", aet="TLSSCU", institution="CTY001"), pki, "client", ca="rogue-ca",
                      enabled=False, mutual=False)
    rogue.cli("peer", "add", "provincial", "--aet", "PACSNODE", "--host", LOOPBACK, "--port", str(tls_node.port),
              "--institution", "PRV001", "--tls", in_process=True)
    for command in COMMANDS:
        result = rogue.cli(*_command(command, "provincial"))
        if command == "priors":
            assert "peer provincial not reached" in result.stderr, result.explain()
        else:
            assert result.returncode != 0, f"{command}: {result.explain()}"
