"""Node.store_file and Node.check: the store order, the temp file, failures undone, consistency repair."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable

import pytest
from pydicom import dcmread

from pacsnode.config import NodeConfig
from pacsnode.errors import IndexError_, InvalidInstance, NotPermitted, SopClassMismatch, StorageFull
from pacsnode.index.sqlite import SqliteIndex
from pacsnode.model import Caller, Peer, StoreResult
from pacsnode.node import Node
from pacsnode.storage.filesystem import sha256_of
from support import make_series, write_instance

MODALITY = Caller.nobody("CT_SCANNER", "127.0.0.1")
ADMIN = Caller.local_admin()
MR = "1.2.840.10008.5.1.4.1.1.4"


class FailingIndex(SqliteIndex):
    """An index whose instance transaction fails, as a full disk or a bug would."""

    def record_instance(self, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        raise IndexError_("simulated index failure")


class AnswerLostIndex(SqliteIndex):
    """An index whose COMMIT reaches the disk and whose answer is lost, as a PostgreSQL connection breaking
    between the server's COMMIT and its reply does."""

    def record_instance(self, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        super().record_instance(*args, **kwargs)  # type: ignore[arg-type]
        raise IndexError_("server closed the connection unexpectedly")


class UnreachableIndex(FailingIndex):
    """Recording fails and the index cannot say afterwards which paths a row names (the server is gone)."""

    def indexed_paths(self, paths: list[str]) -> set[str]:
        raise IndexError_("connection refused")


def receive(node: Node, source: Path) -> Path:
    """What the DIMSE layer does: the dataset lands in a temp file on the storage filesystem."""
    temp = node.new_temp_file()
    shutil.copyfile(source, temp)
    return temp


def files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def instance(tmp_path: Path, ct_template: Path) -> Path:
    return write_instance(ct_template, tmp_path / "in" / "one.dcm", PatientName="FIRST^COPY")


def test_store_places_indexes_and_consumes_the_temp_file(node: Node, instance: Path) -> None:
    temp = receive(node, instance)
    outcome = node.store_file(temp, MODALITY)
    assert outcome.result is StoreResult.STORED
    assert not temp.exists()
    assert files_in(node.config.temp_path) == []
    [row] = node.index.all_instance_files()
    placed = node.storage.root / row["path"]
    assert placed.read_bytes() == instance.read_bytes()
    assert (row["size"], row["sha256"]) == (instance.stat().st_size, sha256_of(instance))
    assert node.studies()[0].instance_count == 1
    assert node.check().clean


def _garbage(tmp_path: Path) -> Path:
    path = tmp_path / "garbage.dcm"
    path.write_bytes(b"not dicom " * 100)
    return path


def _cut(tmp_path: Path, source: Path) -> Path:
    path = tmp_path / "cut.dcm"
    path.write_bytes(source.read_bytes()[:-100])
    return path


@pytest.mark.parametrize("case", ["garbage", "truncated", "sop-class-mismatch", "not-permitted", "storage-full"])
def test_a_refused_store_consumes_the_temp_file_and_leaves_nothing(
        make_config: Callable[..., NodeConfig], tmp_path: Path, instance: Path, case: str) -> None:
    store = {"accept_from": "registered"} if case == "not-permitted" else {}
    if case == "storage-full":
        store["quota_bytes"] = 100
    node = Node(make_config(store=store))
    source = {"garbage": lambda: _garbage(tmp_path), "truncated": lambda: _cut(tmp_path, instance)}.get(
        case, lambda: instance)()
    expected_class = MR if case == "sop-class-mismatch" else None
    error = {"garbage": InvalidInstance, "truncated": InvalidInstance, "sop-class-mismatch": SopClassMismatch,
             "not-permitted": NotPermitted, "storage-full": StorageFull}[case]
    temp = receive(node, source)
    with pytest.raises(error):
        node.store_file(temp, MODALITY, expected_sop_class=expected_class)
    assert not temp.exists()
    assert files_in(node.config.temp_path) == []
    assert files_in(node.storage.root) == []
    assert node.index.all_instance_files() == []
    node.close()


def test_indexing_failure_removes_the_placed_file(make_config: Callable[..., NodeConfig], instance: Path) -> None:
    config = make_config()
    node = Node(config, index=FailingIndex(config.index_path))
    temp = receive(node, instance)
    with pytest.raises(IndexError_):
        node.store_file(temp, MODALITY)
    assert not temp.exists()
    assert files_in(node.storage.root) == []
    assert files_in(node.config.temp_path) == []
    node.close()


def test_a_commit_whose_answer_was_lost_keeps_the_file_its_row_names(make_config: Callable[..., NodeConfig],
                                                                     instance: Path) -> None:
    """The store fails (the sender hears a failure and sends again), but the row committed: removing the file
    left a row without it, and the resend, a keep-first duplicate, was acknowledged with no file behind it."""
    config = make_config()
    node = Node(config, index=AnswerLostIndex(config.index_path))
    try:
        with pytest.raises(IndexError_):
            node.store_file(receive(node, instance), MODALITY)
        [row] = node.index.all_instance_files()
        assert (node.storage.root / row["path"]).read_bytes() == instance.read_bytes()
        assert node.check().clean
    finally:
        node.close()


def test_a_failed_store_keeps_its_file_while_the_index_cannot_say_whether_a_row_names_it(
        make_config: Callable[..., NodeConfig], instance: Path) -> None:
    config = make_config()
    node = Node(config, index=UnreachableIndex(config.index_path))
    try:
        with pytest.raises(IndexError_):
            node.store_file(receive(node, instance), MODALITY)
        assert [p.read_bytes() for p in files_in(node.storage.root)] == [instance.read_bytes()]
        assert files_in(node.config.temp_path) == []
    finally:
        node.close()


def test_indexing_failure_on_a_replacement_keeps_the_first_copy(make_config: Callable[..., NodeConfig],
                                                                 tmp_path: Path, instance: Path) -> None:
    config = make_config(store={"duplicates": "replace"})
    node = Node(config)
    node.store_file(receive(node, instance), MODALITY)
    node.close()
    second = write_instance(instance, tmp_path / "in" / "second.dcm", sop_instance_uid=_uid_of(instance),
                            PatientName="SECOND^COPY")
    failing = Node(config, index=FailingIndex(config.index_path))
    with pytest.raises(IndexError_):
        failing.store_file(receive(failing, second), MODALITY)
    report = failing.check()
    assert report.clean, report
    [row] = failing.index.all_instance_files()
    assert (failing.storage.root / row["path"]).read_bytes() == instance.read_bytes()
    failing.close()


def _uid_of(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_keep_first_drops_a_second_copy(node: Node, tmp_path: Path, instance: Path) -> None:
    assert node.store_file(receive(node, instance), MODALITY).result is StoreResult.STORED
    second = write_instance(instance, tmp_path / "in" / "second.dcm", sop_instance_uid=_uid_of(instance),
                            PatientName="SECOND^COPY")
    assert node.store_file(receive(node, second), MODALITY).result is StoreResult.DUPLICATE
    [row] = node.index.all_instance_files()
    assert (node.storage.root / row["path"]).read_bytes() == instance.read_bytes()
    assert len(files_in(node.storage.root)) == 1
    assert node.studies()[0].patient_name == "FIRST^COPY"
    assert node.check().clean


def test_replace_swaps_in_the_second_copy_without_orphans(make_config: Callable[..., NodeConfig], tmp_path: Path,
                                                           instance: Path) -> None:
    node = Node(make_config(store={"duplicates": "replace"}))
    node.store_file(receive(node, instance), MODALITY)
    second = write_instance(instance, tmp_path / "in" / "second.dcm", sop_instance_uid=_uid_of(instance),
                            PatientName="SECOND^COPY", InstitutionName="Replaced Hospital")
    assert node.store_file(receive(node, second), MODALITY).result is StoreResult.REPLACED
    [row] = node.index.all_instance_files()
    assert (node.storage.root / row["path"]).read_bytes() == second.read_bytes()
    assert files_in(node.storage.root) == [node.storage.root / row["path"]]
    assert node.studies()[0].instance_count == 1
    assert node.check().clean
    node.close()


@pytest.mark.parametrize("policy", ["keep-first", "replace"])
def test_copies_of_one_uid_arriving_at_once_leave_one_consistent_instance(
        make_config: Callable[..., NodeConfig], tmp_path: Path, instance: Path, policy: str) -> None:
    """A modality retrying while its first attempt is still being stored: one row, one file, bytes that match it."""
    node = Node(make_config(store={"duplicates": policy}))
    uid = _uid_of(instance)
    copies = [write_instance(instance, tmp_path / "copies" / f"{n}.dcm", sop_instance_uid=uid,
                             PatientName=f"COPY^{n}") for n in range(6)]
    temps = [receive(node, c) for c in copies]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(temps))

    def store(temp: Path) -> None:
        try:
            barrier.wait()
            node.store_file(temp, MODALITY)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=store, args=(t,)) for t in temps]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    [row] = node.index.all_instance_files()
    assert files_in(node.storage.root) == [node.storage.root / row["path"]]
    assert sha256_of(node.storage.root / row["path"]) == row["sha256"]
    assert node.check().clean
    node.close()


def test_after_store_hooks_run_after_commit_and_cannot_undo_it(node: Node, instance: Path) -> None:
    seen: list[tuple[str, bool]] = []

    def hook(outcome, facts) -> None:  # type: ignore[no-untyped-def]
        seen.append((outcome.result.value, node.index.has_instance(facts.sop_instance_uid)))
        raise RuntimeError("a broken hook")

    node.after_store.append(hook)
    assert node.store_file(receive(node, instance), MODALITY).result is StoreResult.STORED
    assert seen == [("stored", True)]
    assert len(node.index.all_instance_files()) == 1


def test_unknown_ae_may_store_with_accept_any_but_only_registered_peers_otherwise(
        make_config: Callable[..., NodeConfig], tmp_path: Path, ct_template: Path) -> None:
    files = make_series(ct_template, tmp_path / "series", 3)
    open_node = Node(make_config())
    assert open_node.store_file(receive(open_node, files[0]), open_node.identify("ANYONE")).result is StoreResult.STORED
    open_node.close()
    strict = Node(make_config(store={"accept_from": "registered"}))
    with pytest.raises(NotPermitted):
        strict.store_file(receive(strict, files[1]), strict.identify("ANYONE"))
    strict.add_peer(Peer("ct", "CT_SCANNER", "127.0.0.1", 104, permissions=frozenset({"echo", "store"})))
    assert strict.store_file(receive(strict, files[1]), strict.identify("CT_SCANNER", "127.0.0.1")).result is StoreResult.STORED
    strict.add_peer(Peer("viewer", "VIEWER", "127.0.0.1", 104, permissions=frozenset({"find"})))
    with pytest.raises(NotPermitted):
        strict.store_file(receive(strict, files[2]), strict.identify("VIEWER"))
    assert strict.store_file(receive(strict, files[2]), ADMIN).result is StoreResult.STORED
    strict.close()


def test_check_finds_orphans_missing_changed_and_leftover_temp_files(node: Node, tmp_path: Path,
                                                                     ct_template: Path) -> None:
    files = make_series(ct_template, tmp_path / "series", 4)
    for f in files:
        node.store_file(receive(node, f), MODALITY)
    rows = sorted(node.index.all_instance_files(), key=lambda r: r["path"])
    missing, changed, same_size = rows[0]["path"], rows[1]["path"], rows[2]["path"]
    (node.storage.root / missing).unlink()
    with open(node.storage.root / changed, "ab") as handle:
        handle.write(b"tampered")
    data = bytearray((node.storage.root / same_size).read_bytes())
    data[-1] ^= 0xFF  # same size, different bytes: only the checksum sees it
    (node.storage.root / same_size).write_bytes(bytes(data))
    orphan = node.storage.root / "00" / "00" / "1.2.3.4.5.dcm"
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"no row points here")
    leftover = node.config.temp_path / "tmpleftover.dcm"  # no owner pid: a leftover once nobody writes
    leftover.write_bytes(b"half a dataset")

    quick = node.check(verify_checksums=False)
    assert quick.changed_files == [changed]
    report = node.check()
    assert report.orphan_files == ["00/00/1.2.3.4.5.dcm"]
    assert report.missing_files == [missing]
    assert sorted(report.changed_files) == sorted([changed, same_size])
    assert report.temp_files == [str(leftover)]
    assert not report.clean and not report.repaired

    repaired = node.check(repair=True)
    assert repaired.repaired
    assert not orphan.exists() and not leftover.exists()
    assert (node.storage.root / changed).exists()  # changed files are reported, never deleted
    after = node.check()
    assert (after.orphan_files, after.missing_files, after.temp_files) == ([], [], [])
    assert sorted(after.changed_files) == sorted([changed, same_size])
    assert node.studies()[0].instance_count == 3
    assert len(node.index.all_instance_files()) == 3


def test_import_counts_stored_duplicate_and_rejected_with_reasons(node: Node, tmp_path: Path,
                                                                  ct_template: Path) -> None:
    folder = tmp_path / "import"
    good = make_series(ct_template, folder / "series", 3)
    (folder / "junk.dcm").write_bytes(b"not dicom")
    (folder / "README.md").write_text("skipped")
    (folder / "cut.dcm").write_bytes(good[0].read_bytes()[:-10])
    report = node.import_paths([folder])
    assert (report.stored, report.duplicate, report.replaced) == (3, 0, 0)
    assert sorted(Path(p).name for p, _reason in report.rejected) == ["cut.dcm", "junk.dcm"]
    assert all(reason for _p, reason in report.rejected)
    again = node.import_paths([folder])
    assert (again.stored, again.duplicate, len(again.rejected)) == (0, 3, 2)
    assert files_in(node.config.temp_path) == []
    assert node.check().clean
    assert {f.name for f in folder.iterdir()} >= {"junk.dcm", "cut.dcm"}  # sources are copied, never moved
    assert all(g.exists() for g in good)


def test_import_of_a_missing_path_is_an_error(node: Node, tmp_path: Path) -> None:
    with pytest.raises(InvalidInstance):
        node.import_paths([tmp_path / "nosuch"])


def test_clean_temp_removes_leftovers_of_interrupted_receives_and_keeps_live_ones(node: Node) -> None:
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                           text=True, check=True)
    dead_pid = int(ended.stdout)  # a process that has exited: its temp files are leftovers
    for n in range(3):
        (node.config.temp_path / f"in-{dead_pid}-{n}.dcm").write_bytes(b"half")
    (node.config.temp_path / "tmpold.dcm").write_bytes(b"no owner")
    live = node.new_temp_file()  # this process is alive: may be an association's spare temp file
    assert node.clean_temp() == 4
    assert files_in(node.config.temp_path) == [live]


def test_new_temp_files_live_next_to_storage(node: Node) -> None:
    temp = node.new_temp_file()
    assert temp.parent == node.config.temp_path
    assert temp.stat().st_dev == node.storage.root.stat().st_dev
    temp.unlink()


def test_the_quota_sums_the_archive_at_most_once_a_second_and_counts_what_it_placed(
        make_config: Callable[..., NodeConfig], tmp_path: Path, ct_template: Path) -> None:
    """``[store] quota_bytes`` summed every instance row before each store: a full scan per C-STORE, tens of
    milliseconds at a million instances. The meter reads the total once a second and adds its own files, so
    the quota still holds between two reads."""
    files = make_series(ct_template, tmp_path / "in", 12)
    one = max(path.stat().st_size for path in files)
    node = Node(make_config(store={"quota_bytes": 10 * one + one // 2}))  # room for ten
    sums: list[int] = []
    read_total = node.index.used_bytes
    node.quota._read_total = lambda: sums.append(1) or read_total()  # count the index's scans
    try:
        results = []
        for path in files:
            try:
                results.append(node.store_file(receive(node, path), MODALITY).result)
            except StorageFull:
                results.append(None)
        assert results == [StoreResult.STORED] * 10 + [None, None]
        assert 1 <= len(sums) <= 3, len(sums)  # 12 stores in well under three seconds
    finally:
        node.close()
