"""``check`` and ``check --repair``: compare the index with the files, safely next to a running server.

Issue 10, item 4: the index is read first and the files walked later, so a file stored in
between looks unindexed. The rules that make repair lose nothing:

- an unindexed file is re-asked of the index after the walk (stored meanwhile: fine);
- one younger than the grace period is *in flight* (a store between "link the file" and
  "commit its row"), never an orphan, unless no process writes into the home (``serve.lock``
  free: offline; see ``storage.home_lock``);
- repair re-checks each orphan at the moment it unlinks it (``FileStorage.remove_if_orphan``
  says why that order cannot race with a store), and each row whose file is gone inside the
  write transaction that deletes it (``index.repair_rows.delete_rows_whose_file_is_gone``);
- temporary files of live processes are in use (an open association's spare temp file,
  ``storage.tempfiles``): never reported, never removed;
- after an unclean stop a file without a row may be acknowledged (``pacsnode.durability``:
  rows commit without their own fsync): repair runs the recovery first (it re-indexes them),
  and when it cannot (a server holds the home) it removes no orphan at all. While a dead
  process's marker waits, check (with or without ``--repair``) reports no orphan: every
  unindexed file is *awaiting recovery* (``CheckReport.awaiting_recovery``), never an
  invitation to delete it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pacsnode import recovery
from pacsnode.model import CheckReport
from pacsnode.storage.area import StorageArea
from pacsnode.storage.tempfiles import classify

if TYPE_CHECKING:
    from pacsnode.node import Node


def check(node: "Node", repair: bool, verify_checksums: bool, grace_seconds: float) -> CheckReport:
    """Orphans, missing files, changed files, leftover temp files; removed (re-checked) with ``repair``."""
    report = CheckReport()
    if repair:
        recovery.recover_if_alone(node)
    rows = node.index.all_instance_files()
    indexed = {row["path"] for row in rows}
    missing: list[tuple[int, str]] = []
    storage = node.storage
    for row in rows:
        relative = row["path"]
        try:
            if storage.size(relative) != row["size"] or (verify_checksums and storage.sha256(relative) != row["sha256"]):
                report.changed_files.append(relative)
        except FileNotFoundError:  # gone, or a replace removed it meanwhile: re-checked below
            missing.append((int(row["pk"]), row["path"]))
    unindexed = [p for p in node.storage.walk() if p not in indexed]
    unindexed = sorted(set(unindexed) - node.index.indexed_paths(unindexed))  # stored meanwhile
    lock = node.home_lock
    was_shared = lock.mode == "shared"
    offline = lock.try_exclusive()  # held (for a repair) until the end: nobody starts writing meanwhile
    try:
        if not repair:
            lock.downgrade(to_shared=was_shared)
        # offline means "nobody can be mid-store" only when nobody outside this home writes there
        grace = 0.0 if offline and not node.storage.shared else grace_seconds
        report.orphan_files, report.in_flight = _split_by_age(storage, unindexed, grace)
        if recovery.pending(node):  # rows a dead process lost: only recovery may decide, never a deletion
            report.awaiting_recovery = sorted(report.in_flight + report.orphan_files)
            report.in_flight, report.orphan_files = [], []
        report.missing_files = _still_missing(node, missing)
        temps = classify(node.config.temp_path, offline=offline, grace_seconds=grace_seconds)
        report.temp_files = [str(p) for p in temps.leftovers]
        report.temp_in_use = len(temps.in_use)
        if repair:
            _repair(node, report, missing, grace)
    finally:
        lock.downgrade(to_shared=was_shared)
    return report


def _split_by_age(storage: StorageArea, relatives: list[str], grace: float) -> tuple[list[str], list[str]]:
    """(orphans, in flight): unindexed files older than ``grace``, and the younger ones."""
    old: list[str] = []
    young: list[str] = []
    for relative in relatives:
        try:
            age = storage.age_seconds(relative)
        except FileNotFoundError:  # removed meanwhile (a failed store undone, a replace)
            continue
        (young if grace and age < grace else old).append(relative)
    return old, young


def _still_missing(node: "Node", missing: list[tuple[int, str]]) -> list[str]:
    """Rows whose file was absent, re-read: a replace meanwhile moved the row, it did not lose its file."""
    if not missing:
        return []
    current = node.index.indexed_paths([path for _pk, path in missing])
    return sorted(path for _pk, path in missing if path in current and not node.storage.exists(path))


def _repair(node: "Node", report: CheckReport, missing: list[tuple[int, str]], grace: float) -> None:
    """Remove what is an orphan *now*; anything that turned out indexed or young stays."""
    kept: list[str] = []
    for relative in report.orphan_files:
        if not node.storage.remove_if_orphan(relative, lambda r: bool(node.index.indexed_paths([r])), grace):
            kept.append(relative)
    for temp in report.temp_files:
        Path(temp).unlink(missing_ok=True)
    gone = set(report.missing_files)
    report.missing_files = node.index.delete_rows_whose_file_is_gone(
        [(pk, path) for pk, path in missing if path in gone], lambda path: not node.storage.exists(path))
    report.in_flight += kept
    report.repaired = True


def clean_temp(temp_path: Path) -> int:
    """Remove the temp files no live process owns (a starting server: leftovers of interrupted receives)."""
    count = 0
    for leftover in classify(temp_path, offline=True, grace_seconds=0).leftovers:
        leftover.unlink(missing_ok=True)
        count += 1
    return count
