"""The writers' lock of an archive several nodes share (issue 16 item 3), in process.

``check --repair`` removes unindexed files at once only when it runs *offline*: when it can take
every writers' lock exclusive. A home's own ``serve.lock`` cannot see a node that writes into
the same archive from another home, let alone from another machine through PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pacsnode.config import parse_config
from pacsnode.node import Node
from pacsnode.storage.archive_lock import lock_folders


def _plant(storage: Path) -> Path:
    young = storage / "ee" / "ee" / "1.2.3.4.5.6.7.8.9.dcm"
    young.parent.mkdir(parents=True, exist_ok=True)
    young.write_bytes(b"\0" * 100)
    return young


def test_a_lone_home_repairs_offline_at_once(tmp_path: Path) -> None:
    """The baseline the two tests below depart from: nobody else writes, the orphan goes."""
    node = Node(parse_config({}, tmp_path / "home"))
    young = _plant(node.config.storage_path)
    report = node.check(repair=True)
    assert not young.exists() and report.in_flight == []
    node.close()


def test_a_home_whose_sqlite_archive_another_node_serves_is_not_offline(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    shared = {"node": {"index_file": str(archive / "index.sqlite"), "storage_dir": str(archive / "storage")}}
    serving = Node(parse_config({**shared}, tmp_path / "serving"))
    serving.home_lock.share()  # what `serve` does
    repairing = Node(parse_config({**shared}, tmp_path / "repairing"))
    young = _plant(archive / "storage")
    report = repairing.check(repair=True)
    assert young.exists() and report.in_flight == ["ee/ee/1.2.3.4.5.6.7.8.9.dcm"]
    serving.close()
    report = repairing.check(repair=True)  # the other node stopped: offline now, the orphan goes
    assert not young.exists()
    repairing.close()


@pytest.mark.postgres
def test_a_node_on_a_postgresql_index_never_repairs_as_if_offline(tmp_path: Path, postgres_url: str) -> None:
    """Nodes on other machines write through the same PostgreSQL: no file lock sees them."""
    node = Node(parse_config({"index": {"url": postgres_url}, "node": {"storage_dir": str(tmp_path / "shared")}},
                             tmp_path / "home"))
    young = _plant(tmp_path / "shared")
    report = node.check(repair=True)
    assert young.exists() and report.in_flight == ["ee/ee/1.2.3.4.5.6.7.8.9.dcm"]
    node.close()


def test_each_lock_folder_once_whatever_the_spelling(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    assert lock_folders(home, home / "index.sqlite") == [home]
    assert lock_folders(home, tmp_path / "home" / ".." / "home" / "index.sqlite") == [home]
    assert lock_folders(home, tmp_path / "archive" / "index.sqlite") == [home, tmp_path / "archive"]
