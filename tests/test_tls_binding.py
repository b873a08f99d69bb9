"""A TLS peer bound to its certificate (issue 10 item 11): a valid certificate cannot claim another AE.

Two client certificates signed by the same test CA: both pass the node's mutual TLS, so without
the binding either could claim the other's AE title. Played with DCMTK ``findscu``/``storescu
+tls`` against a real TLS ``pacsnode serve``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Callable

import pytest

from pacsnode.node import Node
from support import LOOPBACK, NodeProcess, run_tool, sample_files, write_instance
from test_tls import _issue, _openssl, _tls_home

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("openssl") is None or shutil.which("findscu") is None,
                       reason="openssl and DCMTK are needed for the TLS tests"),
]
OWN = "PRV001"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki-binding")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "2", "-subj", "/CN=pacsnode binding test ca", cwd=folder)
    for name in ("node", "client", "client2"):
        _issue(folder, name, "ca")
    return folder


def sha256_colons(pki: Path, name: str) -> str:
    """The fingerprint as an admin copies it from openssl (AB:CD:...)."""
    out = subprocess.run(["openssl", "x509", "-in", str(pki / f"{name}.crt"), "-noout", "-fingerprint", "-sha256"],
                         capture_output=True, text=True, check=True).stdout
    return out.strip().split("=", 1)[1]


@pytest.fixture
def bound_node(node_process: Callable[..., NodeProcess], pki: Path) -> NodeProcess:
    proc = node_process(institution=OWN)
    _tls_home(proc, pki, "node")
    proc.configure("store", "accept_from", "registered")
    assert proc.cli("import", *map(str, sample_files()[:20])).returncode == 0
    by_fingerprint = proc.cli("peer", "add", "viewer", "--aet", "TLSSCU", "--host", LOOPBACK, "--port", "1",
                              "--institution", OWN, "--tls", "--cert-fingerprint", sha256_colons(pki, "client"))
    assert by_fingerprint.returncode == 0, by_fingerprint.explain()
    by_subject = proc.cli("peer", "add", "reading", "--aet", "TLSWS", "--host", LOOPBACK, "--port", "1",
                          "--institution", OWN, "--tls", "--cert-subject", "client")
    assert by_subject.returncode == 0, by_subject.explain()
    return proc.start()


def tls_args(pki: Path, cert: str) -> list[str]:
    return ["+tls", str(pki / f"{cert}.key"), str(pki / f"{cert}.crt"), "+cf", str(pki / "ca.crt")]


def find_count(node: NodeProcess, pki: Path, cert: str, aet: str) -> int:
    result = run_tool(["/usr/bin/findscu", "-v", "-S", *tls_args(pki, cert), "-aet", aet, "-aec", "PACSNODE",
                       "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID", LOOPBACK, str(node.port)])
    return len(re.findall(r"Find Response: \d+ \(Pending", result.output))


@pytest.mark.parametrize("aet", ["TLSSCU", "TLSWS"])  # bound by fingerprint, bound by subject CN
def test_a_second_certificate_of_the_same_ca_cannot_claim_a_bound_ae(bound_node: NodeProcess, pki: Path,
                                                                      aet: str) -> None:
    assert find_count(bound_node, pki, "client", aet) > 0
    assert find_count(bound_node, pki, "client2", aet) == 0
    refused = bound_node.index_rows("SELECT detail FROM audit WHERE peer_aet=? AND outcome='refused'", (aet,))
    assert refused and "certificate" in refused[-1][0]


def test_storescu_with_another_certificate_claiming_a_bound_ae_stores_nothing(
        bound_node: NodeProcess, pki: Path, tmp_path: Path) -> None:
    from pydicom import dcmread

    files = [write_instance(sample_files()[0], tmp_path / f"{n}.dcm") for n in range(2)]
    uids = [str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    for path, cert in zip(files, ("client2", "client")):
        run_tool(["/usr/bin/storescu", *tls_args(pki, cert), "-aet", "TLSSCU", "-aec", "PACSNODE", LOOPBACK,
                  str(bound_node.port), str(path)])
    stored = {row[0] for row in bound_node.index_rows("SELECT sop_instance_uid FROM instances")}
    assert uids[0] not in stored  # client2 claiming TLSSCU is nobody, and accept_from = "registered"
    assert uids[1] in stored  # the bound certificate stores


def test_a_bound_peer_without_a_certificate_is_nobody(bound_node: NodeProcess, pki: Path) -> None:
    node = Node.open(bound_node.home)
    try:
        der = subprocess.run(["openssl", "x509", "-in", str(pki / "client.crt"), "-outform", "DER"],
                             capture_output=True, check=True).stdout
        assert node.identify("TLSSCU", LOOPBACK, der).peer is not None
        assert node.identify("TLSSCU", LOOPBACK, None).peer is None  # plain TCP, or no client certificate
        assert node.identify("TLSWS", LOOPBACK, der).peer is not None  # CN=client read from the DER
    finally:
        node.close()


@pytest.mark.parametrize("args", [("--tls", "--cert-fingerprint", "abc"),  # not 64 hex digits
                                  ("--cert-subject", "client",),  # a certificate only comes over TLS
                                  ("--any-host", "--check-host")])
def test_peer_add_refuses_a_binding_it_cannot_enforce(node_process: Callable[..., NodeProcess],
                                                      args: tuple[str, ...]) -> None:
    proc = node_process(institution=OWN)
    result = proc.cli("peer", "add", "p", "--aet", "P", "--host", LOOPBACK, "--port", "104", *args)
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1, result.explain()
    assert proc.cli("peer", "list", "--json").stdout.strip() == "[]"
