"""Online backup and restore of a node home.

``backup(node, dest)`` makes a consistent snapshot while the server keeps receiving:

1. the index is copied at one instant with SQLite's online backup API
   (``SqliteIndex.backup_to``): the snapshot is what the backup *means*;
2. every file a snapshot row points to is copied (never hard-linked: a backup must not share
   inodes with the live storage) into ``dest/storage/<relative path>``, its SHA-256 checked
   against the row while copying, and fsync'ed. Files stored after the snapshot are not
   copied; an indexed file is never rewritten in place, so what the snapshot points to stays
   as it was, unless a replace or a repair removed it meanwhile, in which case the whole
   backup is taken again (a few attempts);
   A file the snapshot points to that is missing from the live storage (the live node lost
   it: ``check`` reports it too) does not fail the backup: its row is dropped from the
   copy, it is listed in the manifest's ``missing`` and the command exits non-zero;
3. ``pacsnode.toml``, the recognition rules, the QC rules and the TLS files it references are
   copied (``backup_config``: files outside the home too, with the copy of ``pacsnode.toml``
   rewritten to point inside the backup, so that a restore never leaves its home);
4. ``manifest.json`` (counts, every file with its size and SHA-256) is written last, atomically:
   a folder without it is an interrupted backup, which ``restore`` refuses.

``restore(src, home)`` verifies every checksum while copying into a staging folder inside
``home``, checks that every row of the backup's index names a file of the backup with its size
and checksum, puts the files into the restored node's storage backend (an S3 bucket through
``restore_storage``, else the folder), and only then moves the index, the storage folder and
the configuration into place, so a damaged backup leaves ``home`` as it was. It refuses a
non-empty home unless ``force`` (which replaces that home's index, storage and configuration), refuses a home a
server runs on (``serve.lock``), writes nothing outside ``home`` whatever the backup's
``pacsnode.toml`` says (``config.validate_home_paths`` without absolute paths, and every
target re-checked after resolving symlinks), and ends with ``Node.check`` on the restored home.

Everything either command writes is mode 600, every folder 700: patient data and keys
(copies are made by opening new files, never ``shutil.copy2``, which would carry the
source's mode).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from functools import partial
from typing import Any, BinaryIO, Callable

from pacsnode import backup_config, restore_storage
from pacsnode.config import CONFIG_NAME, NodeConfig, load_config, validate_home_paths
from pacsnode.errors import PacsnodeError
from pacsnode.index.sqlite import SqliteIndex
from pacsnode.node import Node
from pacsnode.storage.area import StorageArea, open_storage
from pacsnode.storage.filesystem import fsync_dir
from pacsnode.storage.home_lock import LOCK_NAME, HomeLock

LOGGER = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "pacsnode-backup/1"
INDEX_NAME = "index.sqlite"
STORAGE_NAME = "storage"
CHUNK = 1 << 20
ATTEMPTS = 3


class BackupError(PacsnodeError):
    """A backup or restore cannot be made safely (message says why and what to do)."""


@dataclass
class BackupReport:
    """What ``backup`` wrote."""

    dest: Path
    patients: int = 0
    studies: int = 0
    series: int = 0
    instances: int = 0
    bytes: int = 0
    attempts: int = 1
    seconds: float = 0.0
    missing: list[str] = field(default_factory=list)  # indexed files absent from the live storage


@dataclass
class RestoreReport:
    """What ``restore`` put into the home, and what ``check`` then said about it."""

    home: Path
    studies: int = 0
    instances: int = 0
    bytes: int = 0
    check_clean: bool = False
    problems: list[str] = field(default_factory=list)


# -- helpers ---------------------------------------------------------------------------------
def _mkdirs(folder: Path) -> None:
    """Create ``folder`` and its missing parents with mode 700 (``mkdir(parents=True)`` would not)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir(mode=0o700)


def _copy(source: Path | Callable[[], BinaryIO], target: Path) -> tuple[int, str]:
    """Copy ``source`` (a path, or how to open it: ``StorageArea.open``) to ``target`` (a new file,
    mode 600), fsync it; return its size and SHA-256."""
    _mkdirs(target.parent)
    digest = hashlib.sha256()
    size = 0
    opened = source() if callable(source) else open(source, "rb")
    with opened as reader:  # first: a missing source must leave no empty copy behind
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as writer:
            while chunk := reader.read(CHUNK):
                digest.update(chunk)
                writer.write(chunk)
                size += len(chunk)
            writer.flush()
            os.fsync(writer.fileno())
    return size, digest.hexdigest()


def _fsync_tree(root: Path) -> None:
    """fsync every folder under ``root`` (and root): the new names reach the disk too."""
    for dirpath, _dirs, _files in os.walk(root):
        fsync_dir(Path(dirpath))


def _safe_relative(text: str) -> PurePosixPath:
    """A manifest path, refused when it could leave the backup or the home (absolute, ``..``)."""
    path = PurePosixPath(text)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise BackupError(f"manifest names an unsafe path {text[:80]!r}; this is not a pacsnode backup")
    return path


def _is_empty(folder: Path) -> bool:
    """No entry but, at most, the lock file a failed restore leaves behind."""
    return not folder.exists() or all(child.name == LOCK_NAME for child in folder.iterdir())


# -- backup ----------------------------------------------------------------------------------
POSTGRES_REFUSED = ("this node's index is in PostgreSQL ([index] url): pacsnode {what} handles a SQLite index only. "
                    "Back up the database with pg_dump (pg_dump -Fc, then pg_restore) and the storage folder with "
                    "your file backup, dump first; see docs/postgresql.md")


def _refuse_postgres_home(home: Path) -> None:
    """A home whose pacsnode.toml sets ``[index] url`` is never overwritten by a SQLite backup."""
    import tomllib

    try:
        data = tomllib.loads((home / "pacsnode.toml").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    index = data.get("index")
    if isinstance(index, dict) and str(index.get("url", "")).strip():
        raise BackupError(POSTGRES_REFUSED.format(what="restore"))


def backup(node: Node, dest: Path) -> BackupReport:
    """Back up ``node`` into ``dest`` (a new or empty folder) while it keeps serving.

    A node whose index is in PostgreSQL is refused (pg_dump is the tool for that database)."""
    if node.config.index.url:
        raise BackupError(POSTGRES_REFUSED.format(what="backup"))
    if dest.exists() and not dest.is_dir():
        raise BackupError(f"{dest} exists and is not a folder; back up into a new folder")
    if not _is_empty(dest):
        raise BackupError(f"{dest} is not empty; back up into a new folder")
    from pacsnode import recovery

    recovery.recover_if_alone(node)
    if recovery.pending(node):  # acknowledged files may lack their rows: a backup would leave them out
        raise BackupError("an unclean stop has not been recovered yet (another process writes into the home): "
                          "restart serve, or run check --repair with the home to itself, then back up")
    started = time.monotonic()
    for attempt in range(1, ATTEMPTS + 1):
        _mkdirs(dest)
        try:
            report = _backup_once(node, dest)
        except _SnapshotMoved as exc:
            LOGGER.info("backup attempt %d: %s; taking the snapshot again", attempt, exc)
            _empty(dest)
            if attempt == ATTEMPTS:
                raise BackupError(f"{exc} on {ATTEMPTS} attempts; run the backup when fewer instances "
                                  "are being replaced, or run pacsnode check") from None
            continue
        except BaseException:
            _empty(dest)  # it was empty: leave no half backup behind (it has no manifest anyway)
            raise
        report.attempts, report.seconds = attempt, time.monotonic() - started
        return report
    raise AssertionError("unreachable")


def _empty(folder: Path) -> None:
    for child in folder.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


class _SnapshotMoved(Exception):
    """A file the snapshot points to was removed before it could be copied."""


def _backup_once(node: Node, dest: Path) -> BackupReport:
    layout = {("node", "storage_dir"): STORAGE_NAME, ("node", "index_file"): INDEX_NAME}
    configs_to_copy = backup_config.collect(node.config, layout)  # refuses before copying anything
    backup_config.write_new(dest / INDEX_NAME, b"")  # mode 600 before SQLite fills it
    files, counts = node.index.backup_to(dest / INDEX_NAME)
    storage = dest / STORAGE_NAME
    entries: list[dict[str, Any]] = []
    missing: list[str] = []
    total = 0
    for relative, size, sha256 in files:
        target = storage / _safe_relative(relative)
        try:
            copied_size, copied_sha = _copy(partial(node.storage.open, relative), target)
        except FileNotFoundError:
            if node.index.indexed_paths([relative]):  # still indexed, file gone: the live node lost it
                missing.append(relative)
                continue
            raise _SnapshotMoved(f"indexed file {relative} disappeared while backing up") from None
        if (copied_size, copied_sha) != (size, sha256):
            raise BackupError(f"{relative} differs from its index row (size or checksum); "
                              "run pacsnode check before backing up")
        entries.append({"path": f"{STORAGE_NAME}/{relative}", "size": size, "sha256": sha256})
        total += size
    if missing:
        LOGGER.warning("%d indexed file(s) missing from the live storage; backed up without them", len(missing))
        counts = SqliteIndex.forget_files_in_copy(dest / INDEX_NAME, missing)
    _mkdirs(storage)
    configs = _copy_configs(configs_to_copy, dest)
    index_size, index_sha = _digest(dest / INDEX_NAME)
    manifest = {
        "format": FORMAT,
        "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": {"home": str(node.config.home.resolve()), "aet": node.config.aet,
                   "institution": node.config.institution},
        "counts": {**counts, "bytes": total},
        "index": {"path": INDEX_NAME, "size": index_size, "sha256": index_sha},
        "configs": configs,
        "config_rewritten": configs_to_copy.rewritten,
        "missing": missing,
        "files": entries,
    }
    _fsync_tree(dest)
    staging = dest / f".{MANIFEST}.part"
    backup_config.write_new(staging, json.dumps(manifest, indent=1).encode("utf-8"))
    os.replace(staging, dest / MANIFEST)
    fsync_dir(dest)
    return BackupReport(dest=dest, patients=counts["patients"], studies=counts["studies"],
                        series=counts["series"], instances=counts["instances"], bytes=total, missing=missing)


def _copy_configs(found: backup_config.ConfigFiles, dest: Path) -> dict[str, dict[str, Any]]:
    """Copy the configuration files into ``dest``: pacsnode.toml as (re)written, the others as they are."""
    configs: dict[str, dict[str, Any]] = {}
    for name, source in found.files.items():
        target = dest / _safe_relative(name)
        if name == CONFIG_NAME:
            data = found.config_text.encode("utf-8")
            backup_config.write_new(target, data)
            configs[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        else:
            size, sha256 = _copy(source, target)
            configs[name] = {"size": size, "sha256": sha256}
    return configs


def _digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


# -- restore ---------------------------------------------------------------------------------
def read_manifest(src: Path) -> dict[str, Any]:
    """The manifest of a complete backup (BackupError for anything else)."""
    path = src / MANIFEST
    if not path.is_file():
        raise BackupError(f"{src} has no {MANIFEST}: not a pacsnode backup, or an interrupted one")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BackupError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{path}: unknown backup format {str(manifest.get('format'))[:40]!r}; expected {FORMAT}"
                          if isinstance(manifest, dict) else f"{path}: not a pacsnode manifest")
    return manifest


def restore(src: Path, home: Path, force: bool = False, storage_url: str = "") -> RestoreReport:
    """Restore the backup in ``src`` into ``home``; checksums verified before anything is replaced.

    ``storage_url``: the S3 bucket/prefix the restored node keeps its files in, instead of the one
    the backup's ``pacsnode.toml`` names (``restore_storage.set_storage_url``)."""
    manifest = read_manifest(src)
    if home.exists() and not home.is_dir():
        raise BackupError(f"{home} exists and is not a folder")
    was_empty = _is_empty(home)
    _refuse_postgres_home(home)
    if not force and not was_empty:
        raise BackupError(f"{home} is not empty; restore into a new home, or use --force to replace "
                          "its index, storage and configuration (stop its server first)")
    _mkdirs(home)
    lock = HomeLock(home)
    if not lock.try_exclusive():
        lock.release()
        raise BackupError(f"a server (or an import) is running on {home} ({LOCK_NAME} is held); stop it first")
    try:
        _restore_locked(src, home, manifest, storage_url)
        return _check_restored(home, manifest, lock)
    except BaseException:
        if was_empty:  # leave the new home as empty as it was
            (home / LOCK_NAME).unlink(missing_ok=True)
        raise
    finally:
        lock.release()


def _restore_locked(src: Path, home: Path, manifest: dict[str, Any], storage_url: str = "") -> None:
    staging = home / f".restore-{secrets.token_hex(4)}"
    staging.mkdir(mode=0o700)
    try:
        _copy_verified(src, staging, manifest)
        if storage_url:
            restore_storage.set_storage_url(staging / CONFIG_NAME, storage_url)
        # The restored pacsnode.toml says where things go, read where its TLS files are (staging),
        # and only paths inside the home are accepted from it.
        staged = load_config(staging)
        validate_home_paths(staged, f"the backup's {CONFIG_NAME}", allow_absolute=False)
        files = {_safe_relative(str(e["path"])).relative_to(STORAGE_NAME).as_posix(): (e["size"], e["sha256"])
                 for e in manifest["files"]}  # each verified against its bytes by _copy_verified
        indexed = restore_storage.check_rows_match_manifest(staging / INDEX_NAME, files)
        area, uploaded = _into_object_storage(staging, staged, indexed)
        try:
            _move_into_place(staging, home, staged, list(manifest["configs"]))
        except BaseException:
            if area is not None:
                restore_storage.undo(area, uploaded)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    fsync_dir(home)


def _into_object_storage(staging: Path, staged: NodeConfig, files: dict[str, tuple[int, str]]) -> tuple[
        StorageArea | None, restore_storage.Uploaded]:
    """An S3 node's files go into its bucket, its rows to where they went, and its storage folder stays
    empty (``restore_storage``); a folder node's staged folder is moved into place as it is."""
    if not staged.storage.url:
        return None, restore_storage.Uploaded()
    _mkdirs(staged.temp_path)  # read-backs of objects already there spool into the staging's tmp
    area = open_storage(staged)
    uploaded = restore_storage.upload(staging / STORAGE_NAME, area, files)
    try:
        restore_storage.move_rows(staging / INDEX_NAME, uploaded.moved)
    except BaseException:
        restore_storage.undo(area, uploaded)
        raise
    shutil.rmtree(staging / STORAGE_NAME)
    _mkdirs(staging / STORAGE_NAME)
    return area, uploaded


def _check_restored(home: Path, manifest: dict[str, Any], lock: HomeLock) -> RestoreReport:
    node = Node.open(home)
    node.home_lock.release()
    node.home_lock = lock  # our exclusive hold: the check knows nobody else writes (offline)
    try:
        check = node.check()
        studies = len(node.studies())
    finally:
        node.close()
    problems = ([f"orphan file: {p}" for p in check.orphan_files] + [f"missing file: {p}" for p in check.missing_files]
                + [f"changed file: {p}" for p in check.changed_files]
                + [f"unindexed file awaiting recovery: {p}" for p in check.awaiting_recovery])
    counts = manifest.get("counts", {})
    return RestoreReport(home=home, studies=studies, instances=int(counts.get("instances", 0)),
                         bytes=int(counts.get("bytes", 0)), check_clean=check.clean, problems=problems)


def _verified(src: Path, staging: Path, relative: str, entry: dict[str, Any]) -> None:
    path = _safe_relative(relative)
    source = src / path
    if source.is_symlink():
        raise BackupError(f"backup file {relative} is a symbolic link; this is not a pacsnode backup")
    if not source.is_file():
        raise BackupError(f"backup file {relative} is missing; the backup is incomplete")
    size, sha256 = _copy(source, staging / path)
    if size != entry.get("size") or sha256 != entry.get("sha256"):
        raise BackupError(f"backup file {relative} does not match its checksum in {MANIFEST}; "
                          "the backup is damaged, nothing was restored")


def _copy_verified(src: Path, staging: Path, manifest: dict[str, Any]) -> None:
    try:
        index = manifest["index"]
        configs = manifest["configs"]
        files = manifest["files"]
        _verified(src, staging, INDEX_NAME, index)
        if CONFIG_NAME not in configs:
            raise BackupError(f"the backup has no {CONFIG_NAME}")
        for name, entry in configs.items():
            first = _safe_relative(name).parts[0]
            if first in backup_config.RESERVED or first.startswith(".restore-"):
                raise BackupError(f"manifest names a configuration file {name[:80]!r} over the data")
            _verified(src, staging, name, entry)
        for entry in files:
            relative = str(entry["path"])
            if _safe_relative(relative).parts[0] != STORAGE_NAME:
                raise BackupError(f"manifest names a file outside {STORAGE_NAME}/: {relative[:80]!r}")
            _verified(src, staging, relative, entry)
    except (KeyError, TypeError, AttributeError) as exc:
        raise BackupError(f"{MANIFEST} is incomplete ({exc.__class__.__name__}: {exc})") from None
    _mkdirs(staging / STORAGE_NAME)
    _fsync_tree(staging)


def _inside_home(home: Path, target: Path, what: str) -> Path:
    """``target`` if it stays inside ``home`` once symlinks are resolved (restore writes nowhere else)."""
    real_home = os.path.realpath(home)
    real = os.path.realpath(target)
    if real == real_home or not real.startswith(real_home + os.sep):
        raise BackupError(f"{what} would be written to {real}, outside {home}; nothing was replaced")
    return target


def _move_into_place(staging: Path, home: Path, config: NodeConfig, config_names: list[str]) -> None:
    """Replace the home's index, storage and configuration by the staged ones (renames, inside ``home``)."""
    for key, value in (("storage_dir", config.storage_dir), ("index_file", config.index_file)):
        first = PurePosixPath(value).parts[0]
        if first in ("tmp", LOCK_NAME, MANIFEST) or first.startswith(".restore-"):
            raise BackupError(f"the backup's {CONFIG_NAME} names [node].{key} = {value!r}, a name the node "
                              "uses for something else; nothing was replaced")
    target_index = _inside_home(home, home / config.index_file, "the index")
    target_storage = _inside_home(home, home / config.storage_dir, "the storage folder")
    targets = {name: _inside_home(home, home / name, f"configuration file {name}") for name in config_names}
    storage_real = os.path.realpath(target_storage) + os.sep
    for name, target in targets.items():
        if os.path.realpath(target).startswith(storage_real) or os.path.realpath(target) == os.path.realpath(
                target_index):
            raise BackupError(f"the backup's configuration file {name} lies in its storage folder or on its index")
    for leftover in (target_index, Path(f"{target_index}-wal"), Path(f"{target_index}-shm"),
                     Path(f"{target_index}-journal")):
        leftover.unlink(missing_ok=True)
    if target_storage.is_symlink():
        target_storage.unlink()
    elif target_storage.exists():
        shutil.rmtree(target_storage)
    shutil.rmtree(home / "tmp", ignore_errors=True)
    _mkdirs(target_storage.parent)
    os.replace(staging / STORAGE_NAME, target_storage)  # same filesystem: the staging folder is in home
    _mkdirs(target_index.parent)
    os.replace(staging / INDEX_NAME, target_index)
    for name, target in targets.items():
        _mkdirs(target.parent)
        os.replace(staging / name, target)
