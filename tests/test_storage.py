"""The storage area: layout, atomic placing, removing, refusing paths that escape, quota."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from pacsnode.errors import InvalidInstance, StorageFull
from pacsnode.model import ReceivedFile
from pacsnode.storage.filesystem import FileStorage, sha256_of

UID = "1.2.826.0.1.3680043.10.1078.3.1.1.1"


@pytest.fixture
def storage(tmp_path: Path) -> FileStorage:
    return FileStorage(tmp_path / "storage")


def temp_file(tmp_path: Path, data: bytes, name: str = "incoming.dcm") -> Path:
    folder = tmp_path / "tmp"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


def test_layout_is_two_hash_levels_and_the_uid(storage: FileStorage) -> None:
    digest = hashlib.sha256(UID.encode("ascii")).hexdigest()
    assert storage.relative_path_for(UID) == f"{digest[:2]}/{digest[2:4]}/{UID}.dcm"


def test_place_moves_the_file_and_reports_size_and_checksum(storage: FileStorage, tmp_path: Path) -> None:
    data = b"DICM-ish payload " * 1000
    temp = temp_file(tmp_path, data)
    stored = storage.place(temp, UID)
    assert not temp.exists()
    assert stored.relative_path == storage.relative_path_for(UID)
    final = storage.root / stored.relative_path
    assert final.read_bytes() == data
    assert stored.size == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest() == sha256_of(final)
    assert list(storage.walk()) == [stored.relative_path]
    assert list((tmp_path / "tmp").iterdir()) == []


def test_second_copy_of_a_uid_never_overwrites_the_first(storage: FileStorage, tmp_path: Path) -> None:
    """Until the index commits, the file it points to must stay what it was (replace, racing duplicates)."""
    first = storage.place(temp_file(tmp_path, b"first copy"), UID)
    second = storage.place(temp_file(tmp_path, b"second copy"), UID)
    assert second.relative_path != first.relative_path
    assert (storage.root / first.relative_path).read_bytes() == b"first copy"
    assert (storage.root / second.relative_path).read_bytes() == b"second copy"
    assert Path(second.relative_path).parent == Path(first.relative_path).parent
    assert second.relative_path.endswith(".dcm")
    assert sorted(storage.walk()) == sorted([first.relative_path, second.relative_path])


def test_place_makes_only_the_missing_folders_and_refuses_a_missing_temp_file(storage: FileStorage,
                                                                              tmp_path: Path) -> None:
    """The link is tried first and the folders made when it finds them missing (issue 13): a temp
    file that is gone is an error, after one attempt with the folders made, not a loop."""
    gone = temp_file(tmp_path, b"x", "gone.dcm")
    received = ReceivedFile(hashlib.sha256(b"x").hexdigest(), 1)
    gone.unlink()
    with pytest.raises(FileNotFoundError):
        storage.place(gone, UID, received)
    with pytest.raises(FileNotFoundError):
        storage._link_unique(str(gone), storage.relative_path_for(UID), [])  # past the size check
    assert (storage.root / storage.relative_path_for(UID)).parent.is_dir()
    other = "1.2.826.0.1.3680043.10.1078.3.1.1.2"
    storage.place(temp_file(tmp_path, b"one"), UID)
    storage.place(temp_file(tmp_path, b"two"), other)
    assert sorted(storage.walk()) == sorted([storage.relative_path_for(UID), storage.relative_path_for(other)])
    folder = os.path.dirname(os.path.join(storage.root, storage.relative_path_for(other)))
    assert storage._make_missing(folder) == [os.path.dirname(folder), folder]  # "made by another": both synced
    shutil.rmtree(storage.root)
    with pytest.raises(FileNotFoundError):  # a storage root that is gone is not made again
        storage.place(temp_file(tmp_path, b"three"), "1.2.826.0.1.3680043.10.1078.3.1.1.4")
    assert not storage.root.exists()


def test_place_syncs_through_the_receivers_descriptor_and_copies_across_filesystems(tmp_path: Path) -> None:
    """fsync = true with the receiver's open descriptor; a temp file on another filesystem (tmpfs)
    is copied next to its place and linked from there (EXDEV), its folders made first."""
    storage = FileStorage(tmp_path / "storage", fsync=True)
    data = b"received bytes " * 100
    temp = temp_file(tmp_path, data)
    fd = os.open(temp, os.O_RDONLY)
    try:
        stored = storage.place(temp, UID, ReceivedFile(hashlib.sha256(data).hexdigest(), len(data), False, fd))
    finally:
        os.close(fd)
    assert (storage.root / stored.relative_path).read_bytes() == data and not temp.exists()
    if not Path("/dev/shm").is_dir() or os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second filesystem to receive on")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as elsewhere:
        foreign = Path(elsewhere) / "incoming.dcm"
        foreign.write_bytes(b"from tmpfs")
        other = storage.place(foreign, "1.2.826.0.1.3680043.10.1078.3.1.1.3")
        assert (storage.root / other.relative_path).read_bytes() == b"from tmpfs" and not foreign.exists()
    assert not [p for p in storage.walk() if p.endswith(".part")]


def test_remove_deletes_the_file_and_tolerates_a_missing_one(storage: FileStorage, tmp_path: Path) -> None:
    stored = storage.place(temp_file(tmp_path, b"x"), UID)
    storage.remove(stored.relative_path)
    assert list(storage.walk()) == []
    storage.remove(stored.relative_path)  # already gone: no error


@pytest.mark.parametrize("uid", ["../../etc/x", "1.2/../../3", "/etc/passwd", "1.2.3\\..\\x", "..", "", "1.2.3/",
                                 "1.2.3.dcm", "1." + "2" * 70])
def test_a_uid_that_is_not_digits_and_dots_cannot_name_a_file(storage: FileStorage, tmp_path: Path,
                                                                uid: str) -> None:
    temp = temp_file(tmp_path, b"payload")
    with pytest.raises(InvalidInstance):
        storage.place(temp, uid)
    assert temp.exists()  # the storage area refuses; consuming the temp file is the Node's job
    assert list(storage.walk()) == []
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["incoming.dcm"]


@pytest.mark.parametrize("relative", ["../outside.dcm", "../../etc/passwd", "/etc/passwd", "ab/../../x.dcm"])
def test_paths_that_escape_the_storage_folder_are_refused(storage: FileStorage, tmp_path: Path,
                                                          relative: str) -> None:
    victim = tmp_path / "outside.dcm"
    victim.write_bytes(b"keep me")
    with pytest.raises(InvalidInstance):
        storage.absolute(relative)
    with pytest.raises(InvalidInstance):
        storage.remove(relative)
    assert victim.read_bytes() == b"keep me"


def test_quota_refuses_what_would_not_fit(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path / "storage", quota_bytes=1000)
    storage.check_room(incoming_bytes=400, used_bytes=600)  # exactly full is fine
    with pytest.raises(StorageFull):
        storage.check_room(incoming_bytes=401, used_bytes=600)


def test_no_quota_means_only_the_disk_limits(storage: FileStorage) -> None:
    storage.check_room(incoming_bytes=10_000_000, used_bytes=10**15)
    with pytest.raises(StorageFull):
        storage.check_room(incoming_bytes=2**62, used_bytes=0)  # more than any disk has free
