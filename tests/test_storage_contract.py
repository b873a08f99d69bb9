"""The storage seam's contract, run on both backends: the storage folder and S3 (a real SeaweedFS).

What every backend must do (``pacsnode/storage/area.py``): put/open/read_range/remove/exists/
walk, never overwrite, refuse bytes whose digest is not the one received, and say "absent"
as FileNotFoundError. The S3 half runs with ``pytest -m s3``.
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path
from typing import Any, Iterator

import pytest

from pacsnode.errors import StorageUnavailable
from pacsnode.model import ReceivedFile
from pacsnode.storage.area import DigestMismatch, StorageArea
from pacsnode.storage.filesystem import FileStorage, relative_path_for
from pacsnode.storage.s3 import S3Storage
from pacsnode.storage.s3_url import S3Location

UID = "1.2.826.0.1.3680043.10.1078.3.1.1.7"


@pytest.fixture(params=["filesystem", pytest.param("s3", marks=pytest.mark.s3)])
def area(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageArea]:
    temp = tmp_path / "tmp"
    temp.mkdir()
    if request.param == "filesystem":
        yield FileStorage(tmp_path / "storage")
        return
    server = request.getfixturevalue("s3_server")
    prefix = f"contract-{secrets.token_hex(4)}/"  # each test its own prefix in the session's bucket
    yield S3Storage(S3Location(server.bucket, prefix, server.endpoint), temp,
                    credentials=(server.access_key, server.secret_key, None))


def a_file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "tmp" / f"in-{secrets.token_hex(4)}.dcm"
    path.write_bytes(data)
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_put_then_open_read_range_exists_size_and_walk(area: StorageArea, tmp_path: Path) -> None:
    data = bytes(range(256)) * 4000  # 1 MB: more than one read chunk
    area.put("aa/bb/x.dcm", a_file(tmp_path, data), sha(data))
    with area.open("aa/bb/x.dcm") as handle:
        assert handle.read() == data
        handle.seek(1000)
        assert handle.read(10) == data[1000:1010]
    assert area.read_range("aa/bb/x.dcm", 5000, 300) == data[5000:5300]
    assert area.read_range("aa/bb/x.dcm", len(data) - 10, 100) == data[-10:]
    assert area.exists("aa/bb/x.dcm") and not area.exists("aa/bb/y.dcm")
    assert area.size("aa/bb/x.dcm") == len(data)
    assert area.sha256("aa/bb/x.dcm") == sha(data)
    with area.local_file("aa/bb/x.dcm") as local:
        assert local.read_bytes() == data
    assert list(area.walk()) == ["aa/bb/x.dcm"]
    assert 0 <= area.age_seconds("aa/bb/x.dcm") < 120
    assert area.available()


def test_put_never_overwrites(area: StorageArea, tmp_path: Path) -> None:
    first, second = b"first copy", b"second copy, different"
    area.put("aa/bb/x.dcm", a_file(tmp_path, first), sha(first))
    with pytest.raises(FileExistsError):
        area.put("aa/bb/x.dcm", a_file(tmp_path, second), sha(second))
    assert area.read_range("aa/bb/x.dcm", 0, 100) == first


def test_a_digest_mismatch_is_refused_and_nothing_is_kept(area: StorageArea, tmp_path: Path) -> None:
    data = b"what arrived on the wire"
    with pytest.raises(DigestMismatch):
        area.put("aa/bb/x.dcm", a_file(tmp_path, data), sha(b"what the receiver hashed"))
    assert not area.exists("aa/bb/x.dcm")
    assert list(area.walk()) == []


def test_place_gives_a_second_copy_a_sibling_name(area: StorageArea, tmp_path: Path) -> None:
    one, two = b"one" * 100, b"two" * 100
    first = area.place(a_file(tmp_path, one), UID, ReceivedFile(sha(one), len(one)))
    second = area.place(a_file(tmp_path, two), UID)
    assert first.relative_path == relative_path_for(UID)
    assert second.relative_path != first.relative_path and second.sha256 == sha(two)
    assert area.read_range(first.relative_path, 0, 1000) == one
    assert area.read_range(second.relative_path, 0, 1000) == two
    assert sorted(area.walk()) == sorted([first.relative_path, second.relative_path])
    assert list((tmp_path / "tmp").iterdir()) == []  # place consumed the temp files


@pytest.mark.s3
def test_place_refuses_a_file_that_is_not_what_the_receiver_hashed(s3_server: Any, tmp_path: Path) -> None:
    """On S3 the receiver's digest travels with the PUT and the server checks it (the folder
    backend links the very bytes the receiver hashed: nothing crosses a network to check)."""
    (tmp_path / "tmp").mkdir()
    area = S3Storage(S3Location(s3_server.bucket, f"place-{secrets.token_hex(4)}/", s3_server.endpoint),
                     tmp_path / "tmp", credentials=(s3_server.access_key, s3_server.secret_key, None))
    data = b"bytes changed on disk after they were received"
    with pytest.raises(DigestMismatch):
        area.place(a_file(tmp_path, data), UID, ReceivedFile(sha(b"the received bytes" + b"x" * 29), len(data)))
    assert list(area.walk()) == []


def test_remove_and_absent_files(area: StorageArea, tmp_path: Path) -> None:
    data = b"to be removed"
    area.put("aa/bb/x.dcm", a_file(tmp_path, data), sha(data))
    area.remove("aa/bb/x.dcm")
    area.remove("aa/bb/x.dcm")  # absent: not an error
    assert not area.exists("aa/bb/x.dcm")
    for call in (lambda: area.open("aa/bb/x.dcm"), lambda: area.read_range("aa/bb/x.dcm", 0, 4),
                 lambda: area.size("aa/bb/x.dcm")):
        with pytest.raises(FileNotFoundError):
            call()


def test_remove_if_orphan_keeps_indexed_and_young_files(area: StorageArea, tmp_path: Path) -> None:
    data = b"unindexed"
    area.put("aa/bb/x.dcm", a_file(tmp_path, data), sha(data))
    assert not area.remove_if_orphan("aa/bb/x.dcm", lambda _r: True, 0.0)  # indexed now: kept
    assert not area.remove_if_orphan("aa/bb/x.dcm", lambda _r: False, 3600.0)  # young: kept
    assert area.exists("aa/bb/x.dcm")
    assert area.remove_if_orphan("aa/bb/x.dcm", lambda _r: False, 0.0)
    assert not area.exists("aa/bb/x.dcm")


def test_paths_that_escape_the_area_are_refused(area: StorageArea) -> None:
    from pacsnode.errors import InvalidInstance

    for bad in ("../outside.dcm", "aa/../../outside.dcm", "/etc/passwd"):
        with pytest.raises(InvalidInstance):
            area.read_range(bad, 0, 1)


@pytest.mark.s3
def test_wrong_credentials_are_storage_unavailable(s3_server: Any, tmp_path: Path) -> None:
    area = S3Storage(S3Location(s3_server.bucket, "wrong-key/", s3_server.endpoint), tmp_path,
                     credentials=(s3_server.access_key, "not-the-secret", None))
    with pytest.raises(StorageUnavailable) as caught:
        area.put("aa/bb/x.dcm", a_file_at(tmp_path, b"x"), sha(b"x"))
    assert "not-the-secret" not in str(caught.value) and s3_server.access_key not in str(caught.value)
    assert not area.available()


def a_file_at(folder: Path, data: bytes) -> Path:
    path = folder / f"in-{secrets.token_hex(4)}.dcm"
    path.write_bytes(data)
    return path
