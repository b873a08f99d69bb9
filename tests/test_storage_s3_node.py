"""A served node whose storage is S3 (``[storage] url``), on a real SeaweedFS (issue 16 item 2).

DCMTK storescu stores; movescu (to storescp) and getscu retrieve byte-identical datasets;
WADO-RS serves the instance and its frames (ranged GETs); ``check`` is clean and
``check --repair`` removes an old unindexed object but never an indexed one; a store while
the object store is down is answered with a failure status, never Success.
"""

from __future__ import annotations

import json
import secrets
import time
import tomllib
from pathlib import Path
from typing import Callable, Iterator

import pytest
import requests
from pydicom import dcmread

from pacsnode import maintenance
from pacsnode.config import load_config
from pacsnode.node import Node

from engines import S3Server, s3_client, start_seaweedfs
from support import LOOPBACK, SAMPLE_DIR, NodeProcess, Storescp, dataset_bytes, have_tool, run_tool
from web_helpers import create_token, get, multipart_parts

pytestmark = [pytest.mark.s3, pytest.mark.interop,
              pytest.mark.skipif(not all(have_tool(t) for t in ("storescu", "movescu", "getscu", "storescp")),
                                 reason="DCMTK missing (make peers)")]
INSTITUTION = "PRV001"
CT_STUDY = "1.2.826.0.1.3680043.10.1078.1.8"  # PRV001/P0002, two CT series of 5
CT_FILES = sorted((SAMPLE_DIR / "PRV001" / "P0002").rglob("*.dcm"))


def s3_node(node_process: Callable[..., NodeProcess], server: S3Server, monkeypatch: pytest.MonkeyPatch,
            name: str = "node") -> NodeProcess:
    """An initialised, unstarted node storing into its own prefix of ``server``'s bucket."""
    for key, value in server.env().items():  # serve and the CLI inherit the credentials
        monkeypatch.setenv(key, value)
    node = node_process(name=name, institution=INSTITUTION)
    node.configure("storage", "url", server.url(f"{name}-{secrets.token_hex(4)}"))
    node.cli("peer", "add", "local-qr", "--aet", "LOCALQR", "--host", LOOPBACK, "--port", "1",
             "--institution", INSTITUTION)
    return node


def objects(server: S3Server, node: NodeProcess) -> dict[str, bytes]:
    """The node's objects in the bucket, by relative path (read behind the node's back)."""
    prefix = _prefix(node)
    client = s3_client(server)
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=server.bucket, Prefix=prefix):
        for item in page.get("Contents", ()):
            out[item["Key"][len(prefix):]] = client.get_object(Bucket=server.bucket, Key=item["Key"])["Body"].read()
    return out


def _prefix(node: NodeProcess) -> str:
    url = tomllib.loads((node.home / "pacsnode.toml").read_text())["storage"]["url"]
    return url.split("s3://", 1)[1].split("?", 1)[0].split("/", 1)[1].strip("/") + "/"


def stored_bytes(server: S3Server, node: NodeProcess, sop_uid: str) -> bytes:
    rows = node.index_rows("SELECT path FROM instances WHERE sop_instance_uid = ?", (sop_uid,))
    assert rows, f"{sop_uid} not indexed"
    return s3_client(server).get_object(Bucket=server.bucket, Key=_prefix(node) + rows[0][0])["Body"].read()


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[Storescp]:
    scp = Storescp(tmp_path / "scp", "STORESCP", "+xa").start()
    yield scp
    scp.stop()


def test_a_node_on_s3_stores_retrieves_serves_and_checks_clean(
        node_process: Callable[..., NodeProcess], s3_server: S3Server, monkeypatch: pytest.MonkeyPatch,
        storescp: Storescp, tmp_path: Path) -> None:
    node = s3_node(node_process, s3_server, monkeypatch)
    node.cli("peer", "add", "storescp", "--aet", "STORESCP", "--host", LOOPBACK, "--port", str(storescp.port),
             "--institution", INSTITUTION)
    node.enable_web()
    node.start()
    stored = node.store(CT_FILES)
    assert stored.returncode == 0 and all(r.status == 0 for r in stored.store_responses), stored.explain()
    assert not (node.home / "storage").exists() or not any((node.home / "storage").rglob("*.dcm"))
    in_bucket = objects(s3_server, node)
    assert len(in_bucket) == len(CT_FILES)
    originals = {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID): f for f in CT_FILES}
    for uid, original in originals.items():
        assert dataset_bytes(original) in stored_bytes(s3_server, node, uid)  # what arrived, unchanged

    moved = run_tool(["/usr/bin/movescu", "-S", "-aet", "LOCALQR", "-aec", "PACSNODE", "-aem", "STORESCP",
                      "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={CT_STUDY}",
                      LOOPBACK, str(node.port)], timeout=120)
    assert moved.returncode == 0, moved.explain()
    received = {path.name: path for path in (tmp_path / "scp").iterdir()}
    assert len(received) == len(CT_FILES), moved.explain()
    for path in received.values():
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert dataset_bytes(path) == dataset_bytes(originals[uid]), f"C-MOVE of {uid} differs"

    got_dir = tmp_path / "got"
    got_dir.mkdir()
    got = run_tool(["/usr/bin/getscu", "-S", "-aet", "LOCALQR", "-aec", "PACSNODE", "-k", "QueryRetrieveLevel=STUDY",
                    "-k", f"StudyInstanceUID={CT_STUDY}", "-od", str(got_dir), LOOPBACK, str(node.port)], timeout=120)
    assert got.returncode == 0, got.explain()
    fetched = list(got_dir.iterdir())
    assert len(fetched) == len(CT_FILES), got.explain()
    for path in fetched:  # getscu re-encodes what it writes (undefined lengths): compare the elements
        ds = dcmread(path)
        assert ds == dcmread(originals[str(ds.SOPInstanceUID)]), f"C-GET of {ds.SOPInstanceUID} differs"

    token = create_token(node, "viewer", INSTITUTION)
    uid, original = next(iter(originals.items()))
    ds = dcmread(original)
    base = f"/studies/{CT_STUDY}/series/{ds.SeriesInstanceUID}/instances/{uid}"
    instance = get(node, base, token, Accept='multipart/related; type="application/dicom"')
    assert instance.status_code == 200, instance.text
    assert [dataset_bytes_of(part) for part in multipart_parts(instance)] == [dataset_bytes(original)]
    frame = get(node, base + "/frames/1", token, Accept='multipart/related; type="application/octet-stream"')
    assert frame.status_code == 200, frame.text
    assert list(multipart_parts(frame)) == [ds.PixelData]

    status = json.loads(node.cli("status", "--json").stdout)
    assert status["ready"] and status["storage"]["ok"] and status["storage"]["path"].startswith("s3://"), status
    ready = requests.get(f"http://{LOOPBACK}:{node.web_port}/readyz", timeout=30)
    assert ready.status_code == 200, ready.text

    checked = node.check()  # sizes and SHA-256 of every object, read back
    assert checked.returncode == 0 and "index and files agree" in checked.stdout, checked.explain()


def dataset_bytes_of(part: bytes) -> bytes:
    path = Path(f"/tmp/part-{secrets.token_hex(6)}.dcm")
    try:
        path.write_bytes(part)
        return dataset_bytes(path)
    finally:
        path.unlink()


def test_check_repair_on_s3_removes_old_orphans_and_rows_of_lost_objects_never_indexed_ones(
        node_process: Callable[..., NodeProcess], s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    node = s3_node(node_process, s3_server, monkeypatch)
    node.start()
    stored = node.store(CT_FILES[:3])
    assert stored.returncode == 0, stored.explain()
    client, prefix = s3_client(s3_server), _prefix(node)
    client.put_object(Bucket=s3_server.bucket, Key=prefix + "ab/cd/1.2.3.4.dcm", Body=b"left by a crash")
    lost_uid = str(dcmread(CT_FILES[0], stop_before_pixels=True).SOPInstanceUID)
    lost_path = node.index_rows("SELECT path FROM instances WHERE sop_instance_uid = ?", (lost_uid,))[0][0]
    client.delete_object(Bucket=s3_server.bucket, Key=prefix + lost_path)

    online = node.check("--repair")  # next to a running server: a young orphan may be a store in flight
    assert "ab/cd/1.2.3.4.dcm" in objects(s3_server, node), online.explain()
    node.stop()
    offline = node.check("--repair")  # the bucket may be shared by other nodes: still not offline for it
    assert "ab/cd/1.2.3.4.dcm" in objects(s3_server, node), offline.explain()
    assert "left alone: 1 unindexed" in offline.stderr, offline.explain()
    assert node.index_rows("SELECT 1 FROM instances WHERE sop_instance_uid = ?", (lost_uid,)) == []

    time.sleep(1.5)
    opened = Node(load_config(node.home))  # the same repair, with a 1 s grace instead of 5 minutes
    try:
        report = maintenance.check(opened, repair=True, verify_checksums=True, grace_seconds=1.0)
    finally:
        opened.close()
    assert report.repaired and report.orphan_files == ["ab/cd/1.2.3.4.dcm"], report
    left = objects(s3_server, node)
    assert "ab/cd/1.2.3.4.dcm" not in left
    kept = [str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in CT_FILES[1:3]]
    for uid in kept:  # acknowledged and present: never removed
        path = node.index_rows("SELECT path FROM instances WHERE sop_instance_uid = ?", (uid,))[0][0]
        assert path in left
    clean = node.check()
    assert clean.returncode == 0 and "index and files agree" in clean.stdout, clean.explain()


def test_a_store_while_the_object_store_is_down_is_answered_with_a_failure(
        node_process: Callable[..., NodeProcess], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    server = start_seaweedfs(tmp_path / "weed")
    try:
        node = s3_node(node_process, server, monkeypatch)
        node.start()
        first = node.store(CT_FILES[:1])
        assert first.returncode == 0 and first.store_responses[0].status == 0, first.explain()
        server.kill()  # SIGKILL: the store's PUT finds nobody
        second = node.store(CT_FILES[1:3])
        statuses = [r.status for r in second.store_responses]
        assert statuses and all(0xA700 <= s <= 0xA7FF or 0xC000 <= s <= 0xCFFF for s in statuses), second.explain()
        for path in CT_FILES[1:3]:  # nothing acknowledged, nothing indexed
            uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            assert node.index_rows("SELECT 1 FROM instances WHERE sop_instance_uid = ?", (uid,)) == []
        assert node.running
    finally:
        server.stop()
