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
3. ``pacsnode.toml``, the recognition rules and the QC rules are copied;
4. ``manifest.json`` (counts, every file with its size and SHA-256) is written last, atomically:
   a folder without it is an interrupted backup, which ``restore`` refuses.

``restore(src, home)`` verifies every checksum while copying into a staging folder inside
``home``, and only then moves the index, the storage folder and the configuration into
place, so a damaged backup leaves ``home`` as it was. It refuses a non-empty home unless
``force`` (which replaces that home's index, storage and configuration: stop its server
first), and ends with ``Node.check`` on the restored home.
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
from typing import Any

from pacsnode.config import CONFIG_NAME, NodeConfig, load_config
from pacsnode.errors import PacsnodeError
from pacsnode.node import Node
from pacsnode.storage.filesystem import fsync_dir

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
def _copy(source: Path, target: Path) -> tuple[int, str]:
    """Copy ``source`` to ``target`` (new file), fsync it; return its size and SHA-256."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    with open(source, "rb") as reader, open(target, "xb") as writer:
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


def _config_files(config: NodeConfig) -> dict[str, Path]:
    """The configuration files of a home, by the name they get in the backup (relative to the home)."""
    files = {CONFIG_NAME: config.home / CONFIG_NAME}
    for path in (config.recognition_path, config.qc_rules_path):
        if path.is_file():
            try:
                name = path.resolve().relative_to(config.home.resolve()).as_posix()
            except ValueError:  # kept outside the home: restored next to pacsnode.toml
                name = path.name
            files[name] = path
    return files


def _is_empty(folder: Path) -> bool:
    return not folder.exists() or not any(folder.iterdir())


# -- backup ----------------------------------------------------------------------------------
def backup(node: Node, dest: Path) -> BackupReport:
    """Back up ``node`` into ``dest`` (a new or empty folder) while it keeps serving."""
    if dest.exists() and not dest.is_dir():
        raise BackupError(f"{dest} exists and is not a folder; back up into a new folder")
    if not _is_empty(dest):
        raise BackupError(f"{dest} is not empty; back up into a new folder")
    started = time.monotonic()
    for attempt in range(1, ATTEMPTS + 1):
        dest.mkdir(parents=True, exist_ok=True)
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
    files, counts = node.index.backup_to(dest / INDEX_NAME)
    storage = dest / STORAGE_NAME
    entries: list[dict[str, Any]] = []
    total = 0
    for relative, size, sha256 in files:
        source = node.storage.absolute(relative)
        target = storage / _safe_relative(relative)
        try:
            copied_size, copied_sha = _copy(source, target)
        except FileNotFoundError:
            raise _SnapshotMoved(f"indexed file {relative} disappeared while backing up") from None
        if (copied_size, copied_sha) != (size, sha256):
            raise BackupError(f"{relative} differs from its index row (size or checksum); "
                              "run pacsnode check before backing up")
        entries.append({"path": f"{STORAGE_NAME}/{relative}", "size": size, "sha256": sha256})
        total += size
    storage.mkdir(exist_ok=True)
    configs: dict[str, dict[str, Any]] = {}
    for name, source in _config_files(node.config).items():
        size, sha256 = _copy(source, dest / name)
        configs[name] = {"size": size, "sha256": sha256}
    index_size, index_sha = _digest(dest / INDEX_NAME)
    manifest = {
        "format": FORMAT,
        "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": {"home": str(node.config.home.resolve()), "aet": node.config.aet,
                   "institution": node.config.institution},
        "counts": {**counts, "bytes": total},
        "index": {"path": INDEX_NAME, "size": index_size, "sha256": index_sha},
        "configs": configs,
        "files": entries,
    }
    _fsync_tree(dest)
    staging = dest / f".{MANIFEST}.part"
    with open(staging, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staging, dest / MANIFEST)
    fsync_dir(dest)
    return BackupReport(dest=dest, patients=counts["patients"], studies=counts["studies"],
                        series=counts["series"], instances=counts["instances"], bytes=total)


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


def restore(src: Path, home: Path, force: bool = False) -> RestoreReport:
    """Restore the backup in ``src`` into ``home``; checksums verified before anything is replaced."""
    manifest = read_manifest(src)
    if home.exists() and not home.is_dir():
        raise BackupError(f"{home} exists and is not a folder")
    if not force and not _is_empty(home):
        raise BackupError(f"{home} is not empty; restore into a new home, or use --force to replace "
                          "its index, storage and configuration (stop its server first)")
    home.mkdir(parents=True, exist_ok=True)
    staging = home / f".restore-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        _copy_verified(src, staging, manifest)
        config = load_config(staging)  # the restored pacsnode.toml says where things go
        _move_into_place(staging, home, config, list(manifest["configs"]))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    fsync_dir(home)
    node = Node.open(home)
    try:
        check = node.check()
        studies = len(node.studies())
    finally:
        node.close()
    problems = ([f"orphan file: {p}" for p in check.orphan_files] + [f"missing file: {p}" for p in check.missing_files]
                + [f"changed file: {p}" for p in check.changed_files])
    counts = manifest.get("counts", {})
    return RestoreReport(home=home, studies=studies, instances=int(counts.get("instances", 0)),
                         bytes=int(counts.get("bytes", 0)), check_clean=check.clean, problems=problems)


def _verified(src: Path, staging: Path, relative: str, entry: dict[str, Any]) -> None:
    path = _safe_relative(relative)
    source = src / path
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
            if _safe_relative(name).parts[0] in (STORAGE_NAME, INDEX_NAME):
                raise BackupError(f"manifest names a configuration file {name[:80]!r} over the data")
            _verified(src, staging, name, entry)
        for entry in files:
            relative = str(entry["path"])
            if _safe_relative(relative).parts[0] != STORAGE_NAME:
                raise BackupError(f"manifest names a file outside {STORAGE_NAME}/: {relative[:80]!r}")
            _verified(src, staging, relative, entry)
    except (KeyError, TypeError, AttributeError) as exc:
        raise BackupError(f"{MANIFEST} is incomplete ({exc.__class__.__name__}: {exc})") from None
    (staging / STORAGE_NAME).mkdir(exist_ok=True)
    _fsync_tree(staging)


def _move_into_place(staging: Path, home: Path, config: NodeConfig, config_names: list[str]) -> None:
    """Replace the home's index, storage and configuration by the staged ones (renames)."""
    target_index = home / config.index_file
    for leftover in (target_index, Path(f"{target_index}-wal"), Path(f"{target_index}-shm"),
                     Path(f"{target_index}-journal")):
        leftover.unlink(missing_ok=True)
    target_storage = home / config.storage_dir
    if target_storage.exists():
        shutil.rmtree(target_storage)
    shutil.rmtree(home / "tmp", ignore_errors=True)
    target_storage.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(staging / STORAGE_NAME, target_storage)  # a rename unless storage_dir is elsewhere
    target_index.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(staging / INDEX_NAME, target_index)
    for name in config_names:
        target = home / name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / name, target)
