"""Recovery after an unclean stop, in process: the marker, repair deferring to recovery, re-indexing.

The end-to-end version (a real ``serve`` killed, its WAL cut) is ``test_crash_wal_tail.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from pacsnode import durability, maintenance, recovery
from pacsnode.cli import main
from pacsnode.config import parse_config
from pacsnode.model import Caller
from pacsnode.node import Node
from pacsnode.storage.home_lock import HomeLock
from support import a_ct_file


def _stored_then_row_lost(node: Node) -> tuple[str, Path]:
    """Store one instance, then drop its row (what a power cut's lost WAL tail does), keep its file."""
    temp = node.new_temp_file()
    shutil.copyfile(a_ct_file(), temp)
    outcome = node.store_file(temp, Caller.local_admin())
    row = node.index.all_instance_files()[0]
    node.index.delete_instance_rows([int(row["pk"])])
    return outcome.sop_instance_uid, node.storage.root / row["path"]


def _dead_marker(node: Node) -> None:
    folder = durability.marker_dir(node.config.index_path)
    folder.mkdir(exist_ok=True)
    (folder / "4194000.1.json").write_text(json.dumps({"pid": 4194000, "start": "1"}))


def test_repair_next_to_a_server_keeps_orphans_a_dead_process_may_have_acknowledged(tmp_path: Path) -> None:
    node = Node(parse_config({}, tmp_path / "home"))
    uid, path = _stored_then_row_lost(node)
    _dead_marker(node)
    server = HomeLock(node.config.home)
    server.share()  # a serve that could not recover at its start (the home was not its alone)
    # past the grace a running server gets, so only the dead marker can keep it
    report = maintenance.check(node, repair=True, verify_checksums=True, grace_seconds=0.001)
    assert path.exists() and report.orphan_files == [] and report.in_flight == []
    assert report.awaiting_recovery == [str(path.relative_to(node.storage.root))] and not report.clean
    assert recovery.pending(node)
    server.release()
    report = node.check(repair=True)  # offline now: the recovery runs first, then the repair
    assert path.exists() and not recovery.pending(node)
    assert node.index.instance_files([uid])[uid]["path"] == str(path.relative_to(node.storage.root))
    assert node.check().clean
    node.close()


def test_check_lists_files_whose_row_an_unclean_stop_lost_as_awaiting_recovery_not_orphans(tmp_path: Path) -> None:
    """Without --repair, before any recovery ran: the file may be an acknowledged instance, never an orphan."""
    home = tmp_path / "home"
    runner = CliRunner()
    assert runner.invoke(main, ["--home", str(home), "init"]).exit_code == 0
    node = Node.open(home)
    uid, path = _stored_then_row_lost(node)
    relative = str(path.relative_to(node.storage.root))
    assert node.check().orphan_files == [relative]  # a clean stop: a leftover of a store never answered
    _dead_marker(node)
    report = node.check()
    assert (report.orphan_files, report.in_flight, report.awaiting_recovery) == ([], [], [relative])
    assert not report.clean and path.exists() and recovery.pending(node)  # check alone changes nothing
    node.close()
    shown = runner.invoke(main, ["--home", str(home), "check"])
    assert shown.exit_code == 1 and "orphan file" not in shown.output and "--repair to fix orphans" not in shown.output
    assert f"unindexed file awaiting recovery: {relative}" in shown.output
    node = Node.open(home)
    assert node.check(repair=True).clean and node.index.instance_files([uid])[uid]["path"] == relative
    node.close()


def test_without_a_dead_marker_repair_removes_orphans_as_before(tmp_path: Path) -> None:
    """A clean stop leaves no marker: an orphan is a leftover of a store that was never answered."""
    node = Node(parse_config({}, tmp_path / "home"))
    _uid, path = _stored_then_row_lost(node)
    syncer = durability.RowSyncer(node.index)
    syncer.start()
    folder = durability.marker_dir(node.config.index_path)
    assert durability.markers(folder) and not durability.dead_markers(folder)
    syncer.stop()
    assert durability.markers(folder) == []
    node.check(repair=True)
    assert not path.exists()
    node.close()


def test_a_recovered_instance_sends_an_accepted_study_back_to_qc(tmp_path: Path) -> None:
    """The after-store hooks ran after the lost row, so their writes were lost with it: recovery runs them."""
    node = Node(parse_config({}, tmp_path / "home"))
    temp = node.new_temp_file()
    shutil.copyfile(a_ct_file(), temp)
    study = node.store_file(temp, Caller.local_admin()).study_uid
    node.qc.accept(study, "3", "Dr Li")
    row = node.index.all_instance_files()[0]
    node.index.delete_instance_rows([int(row["pk"])])  # the instance arrived after the acceptance; its row was lost
    _dead_marker(node)
    assert recovery.recover_if_alone(node).reindexed == [row["path"]]
    current = node.qc.current(study)
    assert current is not None and current.status.value == "pending"
    node.close()


@pytest.mark.postgres
def test_while_a_syncer_runs_stores_leave_the_checkpoints_to_its_thread(tmp_path: Path) -> None:
    """A commit past SQLite's 1000-page automatic checkpoint copied the WAL into the database and synced
    both inside that association's store; with a RowSyncer its thread checkpoints (PASSIVE) instead."""
    import threading

    from pacsnode.model import DuplicatePolicy, InstanceFacts, StoredFile

    node = Node(parse_config({}, tmp_path / "home"))
    syncer = durability.RowSyncer(node.index, interval=3600)  # no tick during the test: checkpoint() by hand
    syncer.start()

    def association() -> None:  # a thread of its own, opened after the syncer started, as an association's is
        for n in range(200):  # ~7 WAL pages each
            facts = InstanceFacts(f"1.2.826.0.1.3680043.10.1078.96.{n}", "1.2.840.10008.5.1.4.1.1.7",
                                  "1.2.826.0.1.3680043.10.1078.96.1", "1.2.826.0.1.3680043.10.1078.96.2",
                                  "1.2.840.10008.1.2.1", patient_id="P", instance_number=n)
            node.index.record_instance(facts, StoredFile(f"a/{n}.dcm", 1, "x"), "MOD", DuplicatePolicy.KEEP_FIRST)

    database = node.config.index_path
    before = database.stat().st_size
    thread = threading.Thread(target=association)
    thread.start()
    thread.join()
    assert Path(f"{database}-wal").stat().st_size > 1000 * 4096  # past SQLite's automatic checkpoint
    assert database.stat().st_size == before  # yet no store copied the WAL into the database
    syncer.checkpoint()
    assert database.stat().st_size > before + 40 * 4096  # the distinct pages the stores touched
    assert node.index.query("SELECT COUNT(*) FROM instances")[0][0] == 200
    syncer.stop()
    node.close()


def test_postgresql_keeps_a_durable_commit_per_instance(tmp_path: Path, postgres_url: str) -> None:
    """PostgresIndex is a SqliteIndex underneath: no syncer, no relaxed commit (synchronous_commit stays on)."""
    node = Node(parse_config({"index": {"url": postgres_url}}, tmp_path / "home"))
    assert durability.start_syncer(node) is None
    assert not node.index.relaxed_instance_commits  # type: ignore[attr-defined]
    node.close()
