"""``backup`` and ``restore`` of a node whose files live in S3 (``[storage] url``), on a real SeaweedFS.

The backup holds every object's bytes; a restore puts them back into the node's bucket (not
into the home's folder) so the restored index finds them: ``check`` is clean and getscu
retrieves every instance through the restored node. A repeated restore reuses what is there,
and a path taken by other bytes is never written over. A backup whose index names files its
manifest does not hold is refused before anything is replaced.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import sqlite3
import tomllib
from pathlib import Path
from typing import Iterator

import pytest
from pydicom import dcmread

from bench.node_process import free_port
from engines import S3Server, s3_client
from support import LOOPBACK, SAMPLE_DIR, NodeProcess, have_tool, home_index_rows, run_tool

pytestmark = [pytest.mark.s3, pytest.mark.interop, pytest.mark.timeout(180),
              pytest.mark.skipif(not have_tool("getscu"), reason="DCMTK missing (make peers)")]
INSTITUTION = "PRV001"
CT_STUDY = "1.2.826.0.1.3680043.10.1078.1.8"  # PRV001/P0002, two CT series of 5
CT_FILES = sorted((SAMPLE_DIR / "PRV001" / "P0002").rglob("*.dcm"))


def _prefix(home: Path) -> str:
    url = tomllib.loads((home / "pacsnode.toml").read_text())["storage"]["url"]
    return url.split("s3://", 1)[1].split("?", 1)[0].split("/", 1)[1].strip("/") + "/"


def objects(server: S3Server, home: Path) -> dict[str, bytes]:
    """The home's objects in the bucket, by relative path (read behind the node's back)."""
    prefix, client = _prefix(home), s3_client(server)
    return {item["Key"][len(prefix):]: client.get_object(Bucket=server.bucket, Key=item["Key"])["Body"].read()
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=server.bucket, Prefix=prefix)
            for item in page.get("Contents", ())}


def rows(home: Path) -> dict[str, tuple[str, str]]:
    """sop_instance_uid -> (path, sha256) of the home's SQLite index."""
    return {uid: (path, sha) for uid, path, sha in home_index_rows(home, "SELECT sop_instance_uid, path, sha256 FROM instances")}


@pytest.fixture(scope="module")
def backed_up(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[NodeProcess, Path, dict[str, bytes]]]:
    """(an S3 node holding the CT study, a backup of it, its objects when backed up): one import and
    backup for the module; the tests restore from the backup (the forged one from a copy of it)."""
    tmp = tmp_path_factory.mktemp("s3backup")
    with pytest.MonkeyPatch.context() as env:
        for key, value in s3_server.env().items():  # every pacsnode command inherits the credentials
            env.setenv(key, value)
        node = NodeProcess(tmp / "live", institution=INSTITUTION).init()
        node.configure("storage", "url", s3_server.url(f"live-{secrets.token_hex(4)}"))
        node.cli("peer", "add", "local-qr", "--aet", "LOCALQR", "--host", LOOPBACK, "--port", "1",
                 "--institution", INSTITUTION, in_process=True)
        imported = node.cli("import", *map(str, CT_FILES), in_process=True)
        assert imported.returncode == 0, imported.explain()
        dest = tmp / "backup"
        made = node.cli("backup", str(dest))
        assert made.returncode == 0, made.explain()
        yield node, dest, objects(s3_server, node.home)


def test_backup_of_an_s3_node_holds_every_objects_bytes(
        backed_up: tuple[NodeProcess, Path, dict[str, bytes]]) -> None:
    node, dest, live = backed_up
    manifest = json.loads((dest / "manifest.json").read_text())
    assert len(live) == len(CT_FILES) == manifest["counts"]["instances"] == len(manifest["files"])
    for uid, (path, sha) in rows(node.home).items():
        copy = (dest / "storage" / path).read_bytes()
        assert copy == live[path] and hashlib.sha256(copy).hexdigest() == sha, uid


def test_restore_into_an_s3_node_puts_the_files_into_its_bucket(backed_up: tuple[NodeProcess, Path, dict[str, bytes]],
                                                                s3_server: S3Server, tmp_path: Path) -> None:
    node, dest, live = backed_up
    client, prefix = s3_client(s3_server), _prefix(node.home)
    for path in objects(s3_server, node.home):  # the disaster: the bucket lost this node's objects with its home
        client.delete_object(Bucket=s3_server.bucket, Key=prefix + path)
    assert objects(s3_server, node.home) == {}

    restored = NodeProcess(tmp_path / "restored", port=free_port(), institution=INSTITUTION)
    done = restored.cli("restore", str(dest))
    assert done.returncode == 0 and "index and files agree" in done.stdout, done.explain()
    assert objects(s3_server, restored.home) == live  # back in the bucket, byte for byte
    assert not any((restored.home / "storage").rglob("*.dcm")), "the files went into the local folder"
    assert rows(restored.home) == rows(node.home)

    got_dir = tmp_path / "got"
    got_dir.mkdir()
    with restored:
        got = run_tool(["/usr/bin/getscu", "-S", "-aet", "LOCALQR", "-aec", "PACSNODE", "-k",
                        "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={CT_STUDY}", "-od", str(got_dir),
                        LOOPBACK, str(restored.port)], timeout=120)
    assert got.returncode == 0, got.explain()
    originals = {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID): f for f in CT_FILES}
    fetched = [dcmread(path) for path in got_dir.iterdir()]
    assert sorted(str(ds.SOPInstanceUID) for ds in fetched) == sorted(originals)
    for ds in fetched:
        assert ds == dcmread(originals[str(ds.SOPInstanceUID)]), f"C-GET of {ds.SOPInstanceUID} differs"

    again = restored.cli("restore", "--force", str(dest), in_process=True)  # repeated: the objects are reused
    assert again.returncode == 0 and "index and files agree" in again.stdout, again.explain()
    assert objects(s3_server, restored.home) == live

    # another writer's bytes at one of the paths: never written over; the row moves to a sibling key
    taken = sorted(live)[0]
    client.delete_object(Bucket=s3_server.bucket, Key=prefix + taken)
    client.put_object(Bucket=s3_server.bucket, Key=prefix + taken, Body=b"someone else's object")
    third = restored.cli("restore", "--force", str(dest), in_process=True)
    assert third.returncode == 0 and "index and files agree" in third.stdout, third.explain()
    now = objects(s3_server, restored.home)
    assert now[taken] == b"someone else's object"
    uid = next(u for u, (path, _sha) in rows(node.home).items() if path == taken)
    moved = rows(restored.home)[uid][0]
    assert moved != taken and now[moved] == live[taken]


def test_restore_refuses_a_backup_whose_index_names_a_file_it_does_not_hold(
        backed_up: tuple[NodeProcess, Path, dict[str, bytes]], tmp_path: Path) -> None:
    """A forged index could point a row at an object of the bucket that the backup never held."""
    _node, pristine, live = backed_up
    dest = tmp_path / "forged"
    shutil.copytree(pristine, dest)
    victim = sorted(live)[0]
    conn = sqlite3.connect(dest / "index.sqlite")
    conn.execute("UPDATE instances SET path = ? WHERE path = ?", ("00/00/someone-elses.dcm", victim))
    conn.commit()
    conn.close()
    manifest = json.loads((dest / "manifest.json").read_text())
    data = (dest / "index.sqlite").read_bytes()
    manifest["index"].update(size=len(data), sha256=hashlib.sha256(data).hexdigest())  # a consistent forgery
    (dest / "manifest.json").write_text(json.dumps(manifest))
    home = tmp_path / "restored"
    done = NodeProcess(home, port=free_port()).cli("restore", str(dest))
    assert done.returncode != 0 and "does not list" in done.stderr, done.explain()
    assert not (home / "index.sqlite").exists() and not (home / "pacsnode.toml").exists()


def test_restore_into_an_s3_node_without_credentials_is_refused_before_anything_is_replaced(
        backed_up: tuple[NodeProcess, Path, dict[str, bytes]], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    _node, dest, _live = backed_up
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    home = tmp_path / "restored"
    done = NodeProcess(home, port=free_port()).cli("restore", str(dest))
    assert done.returncode != 0 and "AWS_ACCESS_KEY_ID" in done.stderr, done.explain()
    assert not (home / "index.sqlite").exists() and not (home / "pacsnode.toml").exists()


def test_restore_with_storage_url_keeps_the_restored_node_off_the_live_prefix(
        backed_up: tuple[NodeProcess, Path, dict[str, bytes]], s3_server: S3Server, tmp_path: Path) -> None:
    """A test restore next to the live node: its own prefix, the live objects untouched."""
    node, dest, live = backed_up
    before = objects(s3_server, node.home)
    restored = NodeProcess(tmp_path / "restored", port=free_port())
    url = s3_server.url(f"restored-{secrets.token_hex(4)}")
    done = restored.cli("restore", "--storage-url", url, str(dest))
    assert done.returncode == 0 and "index and files agree" in done.stdout, done.explain()
    assert tomllib.loads((restored.home / "pacsnode.toml").read_text())["storage"]["url"] == url
    assert _prefix(restored.home) != _prefix(node.home)
    assert objects(s3_server, restored.home) == live and objects(s3_server, node.home) == before
    bad = restored.cli("restore", "--force", "--storage-url", "s3://key:secret@bucket/x", str(dest), in_process=True)
    assert bad.returncode != 0 and "secret" not in bad.stdout + bad.stderr, bad.explain()
