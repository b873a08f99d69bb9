"""``restore``'s last step before anything is replaced: the staged files go where the node keeps them.

A backup holds every instance file under ``storage/`` (``pacsnode.backup``), whatever the live
node's storage backend was. Restored into a home whose ``pacsnode.toml`` (the backup's) names a
folder, the staged folder is simply moved into place. When it names an S3 bucket (``[storage]
url``) the files are PUT into that bucket instead, through the same :class:`StorageArea` a store
uses (``If-None-Match: *`` and the SHA-256 checked by the object store), and the home's storage
folder stays empty: an index that points into the bucket must find its objects there.

What a bucket may already hold at a restored path, and why each answer is safe:

- the same bytes (a repeated restore, or a restore into a bucket that kept its objects while the
  index was lost): read back and compared, then reused, never written again;
- other bytes (another node's object under a shared prefix, or a forged one): never overwritten
  (a key is never written over); the file gets a fresh sibling key, as a second copy of a UID
  gets at ingest, and the staged index's row is moved to it;

Before any of that the staged index must agree with the manifest (``check_rows_match_manifest``):
every row's file is in the backup with the row's size and SHA-256, so a forged index cannot make the
restored node serve an object of the bucket that the backup does not contain. Objects created by a
restore that then fails are deleted again (they were created with ``If-None-Match``: nobody else's);
a restore killed midway leaves them unindexed, which ``check --repair`` removes once they are old.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from pacsnode import backup_config
from pacsnode.errors import PacsnodeError, StorageUnavailable
from pacsnode.index import snapshot
from pacsnode.storage.s3_url import parse_s3_url
from pacsnode.storage.area import StorageArea
from pacsnode.storage.filesystem import sibling_name

LOGGER = logging.getLogger(__name__)

#: Sibling names tried when a restored path is taken by other bytes (as ``S3Storage.place`` does).
SIBLING_ATTEMPTS = 8


class RestoreMismatch(PacsnodeError):
    """The backup's index and its manifest disagree: not restored (message says which file)."""


@dataclass
class Uploaded:
    """What ``upload`` did in the bucket: objects it created, and rows to move to a sibling key."""

    created: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    moved: dict[str, str] = field(default_factory=dict)  # path in the backup -> key it was put under


def check_rows_match_manifest(index_path: Path, files: dict[str, tuple[int, str]]) -> dict[str, tuple[int, str]]:
    """Every instance row of the staged index names a file of the backup, with its size and SHA-256.

    ``files`` maps a relative path (``aa/bb/<uid>.dcm``) to (size, sha256) as the manifest lists
    them, already verified against the bytes. A backup made by ``pacsnode backup`` always agrees
    (a row whose file could not be copied is dropped from its index copy). Returns the files some
    row names: only those go into a bucket (a forged manifest plants no unindexed object there).
    """
    try:
        rows = snapshot.files_of_copy(index_path)
    except (sqlite3.Error, ValueError, TypeError) as exc:
        raise RestoreMismatch(f"the backup's index cannot be read ({exc}); nothing was restored") from None
    for path, size, sha256 in rows:
        if files.get(str(path)) != (size, sha256):
            raise RestoreMismatch(f"the backup's index names {str(path)[:120]!r}, which its manifest does not list "
                                  "with that size and checksum; this is not a consistent pacsnode backup, "
                                  "nothing was restored")
    return {str(path): files[str(path)] for path, _size, _sha256 in rows}


def upload(staged_storage: Path, area: StorageArea, files: dict[str, tuple[int, str]]) -> Uploaded:
    """PUT every staged file into ``area`` (see the module doc); undone when it fails midway."""
    done = Uploaded()
    try:
        for relative, (_size, sha256) in sorted(files.items()):
            _put_one(area, staged_storage / relative, relative, sha256, done)
    except BaseException:
        undo(area, done)
        raise
    if done.moved:
        LOGGER.warning("restore: %d path(s) were taken by other bytes in %s; those files were put under "
                       "sibling keys and their rows point there", len(done.moved), area.describe())
    return done


def _put_one(area: StorageArea, source: Path, relative: str, sha256: str, done: Uploaded) -> None:
    candidate = relative
    for _attempt in range(SIBLING_ATTEMPTS):
        try:
            area.put(candidate, source, sha256)
        except FileExistsError:
            try:
                same = area.sha256(candidate) == sha256
            except FileNotFoundError:  # removed meanwhile: try the same name again
                continue
            if same:
                done.reused.append(candidate)
                break
            candidate = sibling_name(relative)
            continue
        done.created.append(candidate)
        break
    else:
        raise StorageUnavailable(f"the storage refused {SIBLING_ATTEMPTS} names for {relative}; nothing was restored")
    if candidate != relative:
        done.moved[relative] = candidate


def undo(area: StorageArea, done: Uploaded) -> None:
    """Delete the objects this restore created (best effort: what is left is an old orphan later)."""
    for relative in done.created:
        try:
            area.remove(relative)
        except (OSError, PacsnodeError) as exc:
            LOGGER.error("restore failed and could not remove %s it had put: %s (check --repair removes it later)",
                         relative, exc)


def move_rows(index_path: Path, moved: dict[str, str]) -> None:
    """In the staged index copy: the rows of files put under a sibling key point to that key."""
    if moved:
        snapshot.move_files_in_copy(index_path, moved)


def set_storage_url(config_path: Path, url: str) -> None:
    """``restore --storage-url``: the staged ``pacsnode.toml`` names ``url`` as its ``[storage] url``.

    So a backup can be restored into another bucket or prefix than the node it came from (a test
    restore next to the live node must not share its prefix: two SQLite-indexed nodes on one
    prefix each see the other's objects as orphans), or a folder node's backup into S3.
    """
    parse_s3_url(url, "--storage-url")  # ConfigError: not s3://, credentials in it, a bad bucket
    text = config_path.read_text(encoding="utf-8")
    storage = tomllib.loads(text).get("storage")
    if isinstance(storage, dict) and "url" in storage:
        text = backup_config.rewrite(text, {("storage", "url"): url}).replace(
            "# rewritten by pacsnode backup (was outside the home)", "# set by pacsnode restore --storage-url")
    elif storage is None:
        text = text.rstrip("\n") + f"\n\n[storage]\nurl = {json.dumps(url)}\n"  # JSON's escapes are TOML's
    else:
        raise RestoreMismatch("the backup's pacsnode.toml has a [storage] table without url; "
                              "restore without --storage-url and set it by hand")
    if tomllib.loads(text).get("storage", {}).get("url") != url:
        raise RestoreMismatch("cannot set [storage] url in the backup's pacsnode.toml")
    staged = config_path.with_name(config_path.name + ".part")
    backup_config.write_new(staged, text.encode("utf-8"))
    os.replace(staged, config_path)
