"""The cluster run's own harness (``make test-cluster``, tests/cluster_node.py, tests/node_router.py).

The run is only worth its name if a test's store really lands on one node and its query on the
other: here a :class:`ClusterNodeProcess` on the session's PostgreSQL and SeaweedFS takes a
``storescu`` and a ``findscu`` through its one port, and the archive's audit says which node
served each association. The router's parser is checked on the A-ASSOCIATE-RQ that DCMTK itself
sends, captured on a socket.
"""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any, Iterator

import pydicom
import pytest

from cluster_node import ClusterNodeProcess, Engines
from cluster_support import add_peer, find_study_uids
from node_router import QUERY, STORE, abstract_syntaxes, dimse_route, http_route
from support import LOOPBACK, a_ct_file, dcmtk, have_tool, make_series, run_tool

pytestmark = [pytest.mark.interop,
              pytest.mark.skipif(not all(have_tool(t) for t in ("storescu", "findscu")),
                                 reason="DCMTK (storescu, findscu) is not installed")]

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
FIND_STUDY_ROOT = "1.2.840.10008.5.1.4.1.2.2.1"


def _first_pdu_of(argv_before_host: list[str], after: tuple[str, ...] = ()) -> bytes:
    """The first PDU a DCMTK tool sends to a listener that never answers (its A-ASSOCIATE-RQ)."""
    listener = socket.socket()
    listener.bind((LOOPBACK, 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    got: list[bytes] = []

    def take() -> None:
        conn, _ = listener.accept()
        conn.settimeout(10)
        data = b""
        while len(data) < 6 or len(data) < 6 + int.from_bytes(data[2:6], "big"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        got.append(data)
        conn.close()

    thread = threading.Thread(target=take)
    thread.start()
    run_tool([*argv_before_host, LOOPBACK, str(port), *after], timeout=30)
    thread.join(30)
    listener.close()
    assert got, "the tool sent nothing"
    return got[0]


def test_the_router_sends_dcmtk_storescu_to_the_store_node_and_findscu_and_echoscu_to_the_query_node(
        tmp_path: Path) -> None:
    [file] = make_series(a_ct_file(), tmp_path, 1)
    store_rq = _first_pdu_of([dcmtk("storescu"), "-to", "5", "-ta", "5", "-aec", "X"], (str(file),))
    assert CT_STORAGE in (abstract_syntaxes(store_rq) or []) and dimse_route(store_rq) == STORE
    find_rq = _first_pdu_of([dcmtk("findscu"), "-S", "-to", "5", "-ta", "5", "-aec", "X", "-k", "PatientID=X"])
    assert abstract_syntaxes(find_rq) == [FIND_STUDY_ROOT] and dimse_route(find_rq) == QUERY
    echo_rq = _first_pdu_of([dcmtk("echoscu"), "-to", "5", "-ta", "5", "-aec", "X"])
    assert dimse_route(echo_rq) == QUERY
    assert dimse_route(b"\x16\x03\x01\x00\x05hello") == QUERY  # a TLS ClientHello: not parsed, not stored
    assert dimse_route(b"\x01\x00\x00\x00\xff\xff") == QUERY  # a cut or forged RQ
    assert http_route(b"POST /dicom-web/studies HTTP/1.1\r\n") == STORE
    assert http_route(b"GET /dicom-web/studies HTTP/1.1\r\n") == QUERY


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
            ) -> Iterator[ClusterNodeProcess]:
    """A ClusterNodeProcess with DICOMweb on the session's PostgreSQL and SeaweedFS (whatever
    PACSNODE_TEST_ARCHIVE says); one for the module, so the nodes start once."""
    s3 = request.getfixturevalue("s3_server")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Engines, "postgres", request.getfixturevalue("postgres_server"))
        patch.setattr(Engines, "s3", s3)
        for key, value in s3.env().items():
            patch.setenv(key, value)
        node = ClusterNodeProcess(tmp_path_factory.mktemp("cluster-run") / "home", institution="PRV001")
        try:
            yield node.init().enable_web().start()
        finally:
            node.stop()


@pytest.mark.postgres
@pytest.mark.s3
def test_a_cluster_node_stores_through_one_node_and_answers_queries_from_the_other(
        cluster: ClusterNodeProcess, tmp_path: Path) -> None:
    files = make_series(a_ct_file(), tmp_path / "study", 2, PatientID="ROUTED-1")
    add_peer(cluster, "route_find", "ROUTE_FIND", 1)  # through node 2's home: node 2 answers it
    stored = cluster.store(files, aet="ROUTE_STORE")
    assert [r.status for r in stored.store_responses] == [0, 0], stored.explain()
    assert find_study_uids(cluster, "ROUTED-1", aet="ROUTE_FIND") == [
        str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)]
    assert cluster.dimse is not None and cluster.dimse.routed == [1, 1], cluster.dimse.routed
    audit = cluster.cli("audit", "--json", "--limit", "1000")
    assert audit.returncode == 0, audit.explain()
    served_by: dict[str, Any] = {e["peer_aet"]: e["node"] for e in json.loads(audit.stdout)
                                 if e["action"] == "association"}
    assert served_by["ROUTE_STORE"] == "node-1" and served_by["ROUTE_FIND"] == "node-2", served_by
    assert cluster.stored_files() == sorted(cluster.stored_relative(
        str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)) for f in files)  # in S3, none local
    assert not list((cluster.home / "storage").rglob("*.dcm"))


@pytest.mark.postgres
@pytest.mark.s3
@pytest.mark.web
def test_dicomweb_through_the_balancer_names_the_balancer_in_bulk_data_uris_with_public_url(
        cluster: ClusterNodeProcess, tmp_path: Path) -> None:
    """dicomweb-client sends ``Host`` without the port, so a node behind a balancer used to name its own
    private port in BulkDataURI; with ``[web] public_url`` (set by the cluster node, as in
    docs/deployment.md) every URI names the address the client used."""
    from dicomweb_client.api import DICOMwebClient

    [file] = make_series(a_ct_file(), tmp_path / "web", 1, PatientID="ROUTED-WEB")
    imported = cluster.cli("import", str(file))
    assert imported.returncode == 0, imported.explain()
    made = cluster.cli("token", "create", "route-web", "--institution", "PRV001", "--permissions", "find,get")
    assert made.returncode == 0, made.explain()
    client = DICOMwebClient(cluster.web_url, headers={"Authorization": f"Bearer {made.stdout.strip().splitlines()[-1]}"})
    ds = pydicom.dcmread(file, stop_before_pixels=True)
    [metadata] = client.retrieve_study_metadata(str(ds.StudyInstanceUID))
    uri = metadata["7FE00010"]["BulkDataURI"]
    assert uri.startswith(cluster.web_url + "/studies/"), (uri, cluster.web_url)
    assert client.retrieve_bulkdata(uri)  # resolvable through the balancer
    assert cluster.http is not None and cluster.http.routed[1] >= 1  # answered by the query node


@pytest.mark.parametrize("bad", ["ftp://pacs.example.org", "http://user:secret@pacs.example.org",
                                 "https://pacs.example.org/?next=x", "https://", "http://pacs.example.org:99999",
                                 "http://pacs example.org"])
def test_a_public_url_that_is_not_a_plain_http_address_is_refused(tmp_path: Path, bad: str) -> None:
    from pacsnode.config import parse_config
    from pacsnode.errors import ConfigError

    with pytest.raises(ConfigError, match="public_url"):
        parse_config({"web": {"public_url": bad}}, tmp_path)
    assert parse_config({"web": {"public_url": "https://pacs.example.org/"}}, tmp_path).web.public_url == \
        "https://pacs.example.org"


@pytest.mark.s3
def test_a_second_seaweedfs_on_the_machine_starts_beside_the_sessions(
        request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """``weed mini`` opened its Iceberg and Lance listeners on fixed ports: with the session's server
    running, every further one (another xdist worker, the cluster run) died at start-up."""
    from engines import s3_client, start_seaweedfs

    first = request.getfixturevalue("s3_server")
    second = start_seaweedfs(tmp_path / "second", start_timeout=90)
    try:
        for server in (first, second):
            s3_client(server).put_object(Bucket=server.bucket, Key="two-servers-probe", Body=b"1")
        assert first.running() and second.running()
    finally:
        second.stop()
