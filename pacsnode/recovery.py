"""Start-up recovery after an unclean stop: files whose row a power cut took are indexed again.

With ``fsync = true`` an instance's file and its folder entry are durable before its row
commits, and the row commits without a WAL sync (``pacsnode.durability``). A power cut can
therefore leave durable files without rows, some of them acknowledged. Recovery, run with the
home to itself (``serve.lock`` exclusive) when a dead process's unclean-stop marker exists:

- walks the storage folder; every file of the layout that no row points to is a candidate,
  taken oldest first by ``st_mtime``, the end of its receive (the bytes are written once, before
  the file is linked; link and unlink change only ``st_ctime``): a copy that replaced another
  is indexed after it;
- a candidate older than the file of an existing row for its UID is a replaced copy whose
  unlink did not reach the disk: removed (the row and its newer file stay);
- any other candidate is indexed through the ingest rules (``[store] duplicates``): its
  facts, size and SHA-256 from the file, its web metadata, and ``duplicates = keep-first``
  drops a second copy as at ingest;
- who delivered it is not in the file with any authority (a STOW-RS upload brings its own
  file meta): the row records ``unknown`` provenance with the Source AE Title (0002,0016) the
  receiver wrote, so a re-indexed instance never gains trust it might not have had;
- it never deletes a row, and never a file that could be the only copy of an instance.

Why the walk covers the whole storage folder, not only files newer than the last WAL sync: a
row lost by a power cut was committed after the last sync began, but its file may have been
placed long before (a store waiting for the write lock, a slow receive finishing its commit), so
a bound from the sync time alone misses it. A sound bound needs the oldest place time of every
store still uncommitted at each sync, recorded durably with it (hooks in every store path: the
receive, import, STOW-RS, the PostgreSQL pipeline), and then trusts wall-clock file and folder
times against a clock that NTP may step back; folder mtimes being durable with their entries is
what ext4 and XFS do, not what POSIX promises. Until that is built and proven, a slow recovery
after an unclean stop is the price of never missing an acknowledged instance.

Nothing is deleted from the index here, so nothing deliberately removed comes back through
a row; a file comes back only if it was never unlinked durably, and an instance file is
unlinked only when a newer copy replaced it (handled above) or its store failed (never
answered: fine to keep).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pacsnode import durability
from pacsnode.dicom.extract import facts_from_file
from pacsnode.errors import PacsnodeError
from pacsnode.model import DeliveryKind, Provenance, StoredFile, StoreOutcome, StoreResult
from pacsnode.storage.filesystem import FileStorage, relative_path_for
from pacsnode.storage.area import sha256_of

if TYPE_CHECKING:
    from pacsnode.node import Node

LOGGER = logging.getLogger(__name__)


@dataclass
class RecoveryReport:
    """What a recovery did (``serve`` logs it; tests read it)."""

    reindexed: list[str] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)  # older copies of an indexed UID, removed
    unreadable: list[str] = field(default_factory=list)  # left for ``check`` to report
    failed: list[str] = field(default_factory=list)  # could not be indexed now: the markers stay (retried)
    ran: bool = False


def pending(node: "Node") -> bool:
    """A process stopped uncleanly since the last recovery (its rows may be lost)."""
    return bool(_dead(node))


def _dead(node: "Node") -> list[Path]:
    if node.config.index.url:  # PostgreSQL: no relaxed commits, no markers
        return []
    return durability.dead_markers(durability.marker_dir(node.config.index_path))


def recover(node: "Node") -> RecoveryReport:
    """Re-index what an unclean stop may have lost; the caller holds ``serve.lock`` exclusive."""
    report = RecoveryReport()
    dead = _dead(node)
    if not dead:
        return report
    storage = node.storage
    if not isinstance(storage, FileStorage):  # markers are only written over a local folder
        return report
    report.ran = True
    indexed = {row["path"] for row in node.index.all_instance_files()}
    candidates: list[tuple[int, str]] = []
    for relative in storage.walk():
        if relative in indexed or not relative.endswith(".dcm"):
            continue
        try:
            candidates.append((os.lstat(storage.absolute(relative)).st_mtime_ns, relative))
        except (FileNotFoundError, PacsnodeError):
            continue
    for mtime, relative in sorted(candidates):
        try:
            _reindex(node, storage, relative, mtime, report)
        except (OSError, sqlite3.Error, PacsnodeError) as exc:  # a full disk...: the file stays, retried
            LOGGER.error("recovery could not index %s again: %s", relative, exc)
            report.failed.append(relative)
    if not report.failed:  # else the markers stay: repair keeps deferring, the next start retries
        durability.remove_markers(dead)
    if report.reindexed or report.superseded:
        LOGGER.warning("recovery after an unclean stop: %d file(s) indexed again, %d older copies removed",
                       len(report.reindexed), len(report.superseded))
    return report


def _source_aet(path: Path) -> str:
    from pydicom.filereader import read_file_meta_info

    try:
        return str(read_file_meta_info(path).get("SourceApplicationEntityTitle", "") or "").strip()[:16]
    except Exception:  # noqa: BLE001 (a header we cannot read names nobody)
        return ""


def _reindex(node: "Node", storage: FileStorage, relative: str, mtime: int, report: RecoveryReport) -> None:
    path = storage.absolute(relative)
    try:
        facts = facts_from_file(path)
        expected = relative_path_for(facts.sop_instance_uid)
    except PacsnodeError:
        report.unreadable.append(relative)
        return
    if relative != expected and not (relative.startswith(expected[:-len(".dcm")] + ".")
                                      and relative.count(".") == expected.count(".") + 1):
        report.unreadable.append(relative)  # not the name place() gives this UID: not ours to index
        return
    current = node.index.instance_files([facts.sop_instance_uid]).get(facts.sop_instance_uid)
    if current is not None:
        try:
            newer = os.lstat(storage.absolute(current["path"])).st_mtime_ns > mtime
        except FileNotFoundError:
            newer = False
        if newer:  # a replaced copy: the indexed one came later
            storage.remove(relative)
            report.superseded.append(relative)
            return
    aet = _source_aet(path)
    web = None
    if node.config.web.enabled:
        from pacsnode.dicom import web_metadata

        web = web_metadata.at_ingest(path)
    stored = StoredFile(relative, path.stat().st_size, sha256_of(path))
    result, orphan = node.index.record_instance(facts, stored, aet, node.config.store.duplicates,
                                                Provenance(DeliveryKind.UNKNOWN, aet=aet), web_metadata=web)
    if orphan:
        storage.remove(orphan)
    if result is StoreResult.DUPLICATE:
        report.superseded.append(relative)
        return
    report.reindexed.append(relative)
    outcome = StoreOutcome(result, facts.sop_instance_uid, facts.study_uid)
    for hook in node.after_store:  # what a store does after its commit (QC: the study is pending again);
        try:                       # lost with the row, since its own write came after the row's
            hook(outcome, facts)
        except Exception:  # as in Node.store_file: a hook never undoes a store
            LOGGER.exception("after-store hook failed during recovery")


def recover_if_alone(node: "Node") -> RecoveryReport:
    """Recover when a dead process's marker exists and this process can have the home to itself."""
    if not pending(node):
        return RecoveryReport()
    lock = node.home_lock
    was_shared = lock.mode == "shared"
    if not lock.try_exclusive():
        LOGGER.warning("an unclean stop needs recovery, but another process writes into %s: "
                       "it runs at the next start with the home to itself", node.config.home)
        return RecoveryReport()
    try:
        return recover(node)
    finally:
        lock.downgrade(to_shared=was_shared)
