"""DICOM TLS: the server with mutual authentication against DCMTK's TLS tools, and
pacsnode's own SCU talking TLS to a peer registered with --tls.

Certificates are made per module with the openssl command line: a test CA signing the node
and a client, and a rogue CA signing an impostor client.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Callable

import pytest

from pacsnode.config import parse_config
from pacsnode.errors import ConfigError
from support import LOOPBACK, NodeProcess, dcmtk, have_tool, run_tool, sample_files

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("openssl") is None or not have_tool("echoscu"),
                       reason="openssl and DCMTK are needed for the TLS tests"),
]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(folder: Path, name: str, ca: str) -> None:
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN={name}", cwd=folder)
    (folder / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=folder)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "rogue-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.crt",
                 "-days", "2", "-subj", f"/CN=pacsnode test {ca}", cwd=folder)
    _issue(folder, "node", "ca")
    _issue(folder, "client", "ca")
    _issue(folder, "impostor", "rogue-ca")
    return folder


def _tls_home(proc: NodeProcess, pki: Path, cert: str, ca: str = "ca", enabled: bool = True,
              mutual: bool = True) -> NodeProcess:
    for suffix in ("crt", "key"):
        shutil.copyfile(pki / f"{cert}.{suffix}", proc.home / f"{cert}.{suffix}")
    shutil.copyfile(pki / f"{ca}.crt", proc.home / "trusted-ca.crt")
    proc.configure("tls", "enabled", enabled).configure("tls", "certificate", f"{cert}.crt")
    proc.configure("tls", "private_key", f"{cert}.key").configure("tls", "ca_certificates", "trusted-ca.crt")
    return proc.configure("tls", "require_client_certificate", mutual)


@pytest.fixture
def tls_node(node_process: Callable[..., NodeProcess], pki: Path) -> NodeProcess:
    proc = node_process(institution="PRV001")
    _tls_home(proc, pki, "node")
    proc.cli("peer", "add", "viewer", "--aet", "TLSSCU", "--host", LOOPBACK, "--port", "1", "--institution", "PRV001",
             in_process=True)
    return proc.start()


def _dcmtk(tool: str, port: int, pki: Path, *args: str, cert: str = "client", extra: tuple[str, ...] = ()) -> int:
    tls = ["+tls", str(pki / f"{cert}.key"), str(pki / f"{cert}.crt"), "+cf", str(pki / "ca.crt")] if cert else []
    result = run_tool([dcmtk(tool), *tls, *extra, "-aet", "TLSSCU", "-aec", "PACSNODE", LOOPBACK, str(port), *args],
                      timeout=60)
    return result.returncode


def test_dcmtk_echo_store_and_find_over_mutual_tls(tls_node: NodeProcess, pki: Path) -> None:
    files = [p for p in sample_files() if "CTY001" in str(p)][:5]
    assert _dcmtk("echoscu", tls_node.port, pki) == 0
    assert _dcmtk("storescu", tls_node.port, pki, *map(str, files)) == 0
    stored = {row[0] for row in tls_node.index_rows("SELECT sop_instance_uid FROM instances")}
    assert len(stored) == len(files)
    study_uid = tls_node.index_rows("SELECT study_uid FROM studies")[0][0]
    out = tls_node.home.parent / "find-out"
    out.mkdir()
    found = run_tool([dcmtk("findscu"), "-S", "+tls", str(pki / "client.key"), str(pki / "client.crt"), "+cf",
                      str(pki / "ca.crt"), "-aet", "TLSSCU", "-aec", "PACSNODE", "-X", "-od", str(out),
                      "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
                      LOOPBACK, str(tls_node.port)], timeout=60)
    assert found.returncode == 0, found.explain()
    assert len(list(out.glob("rsp*.dcm"))) == 1


@pytest.mark.parametrize("how", ["impostor-certificate", "anonymous-tls", "plain-tcp"])
def test_peers_without_a_trusted_certificate_are_refused(tls_node: NodeProcess, pki: Path, how: str) -> None:
    if how == "impostor-certificate":
        code = _dcmtk("echoscu", tls_node.port, pki, cert="impostor")
    elif how == "anonymous-tls":
        code = _dcmtk("echoscu", tls_node.port, pki, cert="", extra=("+tla", "-ic"))
    else:
        code = _dcmtk("echoscu", tls_node.port, pki, cert="")
    assert code != 0
    assert _dcmtk("echoscu", tls_node.port, pki) == 0  # the server keeps serving trusted peers


def test_pacsnode_scu_talks_tls_to_a_peer_registered_with_tls(tls_node: NodeProcess, pki: Path,
                                                              node_process: Callable[..., NodeProcess]) -> None:
    caller = _tls_home(node_process(name="caller", aet="TLSSCU"), pki, "client", enabled=False, mutual=False)
    caller.cli("peer", "add", "provincial", "--aet", "PACSNODE", "--host", LOOPBACK, "--port", str(tls_node.port),
               "--tls")
    echoed = caller.cli("echo", "provincial")
    assert echoed.returncode == 0 and "Success" in echoed.stdout, echoed.explain()
    files = [str(p) for p in sample_files() if "TWN001" in str(p)][:3]
    sent = caller.cli("send", "provincial", *files)
    assert sent.returncode == 0, sent.explain()
    assert len(tls_node.index_rows("SELECT 1 FROM instances")) == 3


def test_pacsnode_scu_refuses_a_peer_whose_certificate_it_cannot_verify(
        tls_node: NodeProcess, pki: Path, node_process: Callable[..., NodeProcess]) -> None:
    caller = _tls_home(node_process(name="caller", aet="TLSSCU"), pki, "client", ca="rogue-ca", enabled=False, mutual=False)
    caller.cli("peer", "add", "provincial", "--aet", "PACSNODE", "--host", LOOPBACK, "--port", str(tls_node.port),
               "--tls")
    echoed = caller.cli("echo", "provincial")
    assert echoed.returncode != 0
    assert len(echoed.stderr.strip().splitlines()) == 1 and "Traceback" not in echoed.stderr


def test_tls_settings_are_validated_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[tls\]\.certificate"):
        parse_config({"tls": {"enabled": True}}, tmp_path)
    with pytest.raises(ConfigError, match=r"\[tls\]\.ca_certificates"):
        (tmp_path / "n.crt").write_text("x")
        (tmp_path / "n.key").write_text("x")
        parse_config({"tls": {"enabled": True, "certificate": "n.crt", "private_key": "n.key",
                              "require_client_certificate": True}}, tmp_path)


# -- C-MOVE and C-GET over TLS on the one engine (DCMTK 3.6.7's movescu/getscu have no TLS) ------
def _client_tls(pki: Path) -> tuple[object, None]:
    import ssl

    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki / "ca.crt"))
    context.check_hostname = False
    context.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
    return context, None


def _stored_over_tls(tls_node: NodeProcess, pki: Path, count: int = 5) -> tuple[str, set[str]]:
    files = [p for p in sample_files() if "CTY001" in str(p)][:count]
    assert _dcmtk("storescu", tls_node.port, pki, *map(str, files)) == 0
    study_uid = tls_node.index_rows("SELECT study_uid FROM studies")[0][0]
    return study_uid, {row[0] for row in tls_node.index_rows("SELECT sop_instance_uid FROM instances")}


def _study_identifier(study_uid: str) -> "object":
    from pydicom.dataset import Dataset

    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_uid
    return identifier


def test_move_over_tls_to_a_tls_destination(tls_node: NodeProcess, pki: Path,
                                            node_process: Callable[..., NodeProcess]) -> None:
    """pynetdicom C-MOVE over mutual TLS; the sub-association to a --tls destination is TLS too."""
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as Move

    dest = _tls_home(node_process(name="dest", aet="TLSDEST", institution="PRV001"), pki, "client")
    dest.start()
    study_uid, stored = _stored_over_tls(tls_node, pki)
    tls_node.cli("peer", "add", "dest", "--aet", "TLSDEST", "--host", LOOPBACK, "--port", str(dest.port),
                 "--institution", "PRV001", "--tls")
    ae = AE(ae_title="TLSSCU")
    ae.add_requested_context(Move)
    assoc = ae.associate(LOOPBACK, tls_node.port, ae_title="PACSNODE", tls_args=_client_tls(pki))  # type: ignore[arg-type]
    assert assoc.is_established
    try:
        answers = [status for status, _ in assoc.send_c_move(_study_identifier(study_uid), "TLSDEST", Move)]
    finally:
        assoc.release()
    assert answers[-1].Status == 0x0000 and int(answers[-1].NumberOfCompletedSuboperations) == len(stored)
    assert {row[0] for row in dest.index_rows("SELECT sop_instance_uid FROM instances")} == stored


def test_move_to_a_tls_destination_that_cannot_be_verified_fails_closed(tls_node: NodeProcess, pki: Path) -> None:
    """A destination registered with --tls but speaking plain TCP: nothing goes out in clear text."""
    import socket as socket_

    study_uid, stored = _stored_over_tls(tls_node, pki, count=2)
    with socket_.create_server((LOOPBACK, 0)) as plain:
        plain.settimeout(15)
        tls_node.cli("peer", "add", "plain", "--aet", "PLAINDEST", "--host", LOOPBACK, "--port",
                     str(plain.getsockname()[1]), "--institution", "PRV001", "--tls")
        from pynetdicom import AE
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as Move

        ae = AE(ae_title="TLSSCU")
        ae.add_requested_context(Move)
        assoc = ae.associate(LOOPBACK, tls_node.port, ae_title="PACSNODE", tls_args=_client_tls(pki))  # type: ignore[arg-type]
        assert assoc.is_established
        received = bytearray()

        def listen() -> None:
            conn, _ = plain.accept()
            conn.settimeout(5)
            conn.sendall(b"\x02\x00\x00\x00\x00\x04oops")  # not a TLS ServerHello
            try:
                while chunk := conn.recv(65536):
                    received.extend(chunk)
            except OSError:
                pass
            conn.close()

        import threading
        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        try:
            answers = [status for status, _ in assoc.send_c_move(_study_identifier(study_uid), "PLAINDEST", Move)]
        finally:
            assoc.release()
        listener.join(10)
    assert answers[-1].Status != 0x0000 and int(answers[-1].NumberOfCompletedSuboperations) == 0
    assert received[:1] == b"\x16"  # only a TLS ClientHello went out, never an A-ASSOCIATE-RQ
    assert b"1.2.840.10008" not in bytes(received)


def test_get_over_tls_with_pynetdicom(tls_node: NodeProcess, pki: Path) -> None:
    from pynetdicom import AE, build_role, evt
    from pynetdicom.sop_class import CTImageStorage
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as Get

    study_uid, stored = _stored_over_tls(tls_node, pki)
    got: list[str] = []

    def on_store(event: "evt.Event") -> int:
        got.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    ae = AE(ae_title="TLSSCU")
    ae.add_requested_context(Get)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate(LOOPBACK, tls_node.port, ae_title="PACSNODE", tls_args=_client_tls(pki),  # type: ignore[arg-type]
                         ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    try:
        answers = [status for status, _ in assoc.send_c_get(_study_identifier(study_uid), Get)]
    finally:
        assoc.release()
    assert answers[-1].Status == 0x0000 and int(answers[-1].NumberOfCompletedSuboperations) == len(stored)
    assert set(got) == stored
