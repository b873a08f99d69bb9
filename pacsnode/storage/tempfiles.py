"""Naming of incoming temporary files, so that maintenance can tell a live one from a leftover.

Every temporary file a process makes in ``<home>/tmp`` starts with ``in-<pid>-``: the ones
``Node.new_temp_file`` makes (the lean receiver's current and *spare* temp file, imports,
C-GET sub-operations) and pynetdicom's chunked-receive files (``configure_library`` sets the
process's ``tempfile.template`` to the same prefix). A file whose process is alive may be
held by an open association, even when it is old (a spare temp waits for the peer's next
C-STORE); a file whose process is gone is a leftover of an interrupted receive.

A file without the prefix (an older version, something an admin dropped there) has no known
owner: it is a leftover only when nobody writes into the home (offline) or when it has not
changed for the grace period.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

_OWNED = re.compile(r"^in-(\d{1,10})-")


def temp_prefix(pid: int | None = None) -> str:
    """The prefix of this process's temporary files."""
    return f"in-{os.getpid() if pid is None else pid}-"


def create(folder: Path | str, suffix: str = ".dcm") -> tuple[Path, int]:
    """A new, empty temporary file of this process in ``folder``, and its descriptor open for writing.

    ``tempfile.mkstemp`` with a cheaper name: 96 random bits (``os.urandom``) instead of eight
    characters drawn one by one by ``random.choices`` behind a lock, a tenth of a 9 KB store's
    Python time once the receiver also keeps the descriptor instead of reopening the file
    (issue 13). ``O_EXCL`` still refuses a name that exists; mode 0600 like mkstemp.
    """
    prefix = os.path.join(folder, temp_prefix())
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _attempt in range(100):
        name = f"{prefix}{os.urandom(12).hex()}{suffix}"
        try:
            return Path(name), os.open(name, flags, 0o600)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary file name in {folder}")


def owner_pid(name: str) -> int | None:
    """The pid a temporary file's name says made it, or None for a file without an owner."""
    match = _OWNED.match(name)
    return int(match.group(1)) if match else None


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (a reused pid only ever keeps a file longer)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def age_seconds(stat: os.stat_result, now: float | None = None) -> float:
    """Time since the file's data or its name last changed (a link or rename updates ctime)."""
    return (time.time() if now is None else now) - max(stat.st_mtime, stat.st_ctime)


@dataclass
class TempFiles:
    """The temporary folder sorted into files in use and leftovers."""

    in_use: list[Path]
    leftovers: list[Path]


def classify(folder: Path, offline: bool, grace_seconds: float) -> TempFiles:
    """Sort ``folder``'s files: in use (never touched, not a problem) or leftovers (reported, removable).

    In use: a live owner, or no owner and changed within the grace period while the home is
    online. Everything else is a leftover.
    """
    result = TempFiles([], [])
    now = time.time()
    for path in sorted(folder.glob("*")):
        try:
            stat = path.lstat()
        except FileNotFoundError:  # consumed meanwhile: placed or removed by its owner
            continue
        if not path.is_file():
            continue
        pid = owner_pid(path.name)
        if pid is not None:
            held = pid_alive(pid)
        else:
            held = not offline and age_seconds(stat, now) < grace_seconds
        (result.in_use if held else result.leftovers).append(path)
    return result
