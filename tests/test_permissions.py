"""Patient data is 600 and folders 700, everywhere the node writes (issue 10 item 12).

Each test runs the real commands (``init``, ``import``, ``serve`` + DCMTK ``storescu``,
``backup``, ``restore``) from a shell whose umask is the usual 022, and stats what they made:
the CLI sets umask 077 itself, so nothing depends on the admin's shell.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Callable, Iterable

import pytest

from support import PACSNODE, NodeProcess, have_tool, sample_files, write_instance


def _open_umask() -> None:
    os.umask(0o022)


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*PACSNODE, "--home", str(home), *args], capture_output=True, text=True, timeout=120,
                          preexec_fn=_open_umask)
    assert done.returncode == 0, done.stderr
    return done


def too_open(root: Path, extra: Iterable[Path] = ()) -> list[str]:
    """Every file under ``root`` not 600 and every folder not 700 (``root`` included)."""
    wrong = []
    for path in [root, *root.rglob("*"), *extra]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        wanted = 0o700 if path.is_dir() else 0o600
        if mode != wanted:
            wrong.append(f"{oct(mode)} {path.relative_to(root) if path.is_relative_to(root) else path}")
    return wrong


def test_init_and_import_write_600_files_and_700_folders(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)  # a folder made by hand before init
    os.chmod(home, 0o755)
    run(home, "init", "--institution", "PRV001")
    run(home, "import", *map(str, sample_files()[:10]))
    assert run(home, "studies", "--json").stdout.strip() != "[]"
    assert too_open(home) == []


@pytest.mark.skipif(not have_tool("storescu"), reason="DCMTK storescu is needed")
def test_served_stores_index_wal_backup_and_restore_are_private(node_process: Callable[..., NodeProcess],
                                                                tmp_path: Path) -> None:
    proc = node_process(institution="PRV001")
    proc.preexec_fn = _open_umask  # the usual 022: the node itself must make its files private
    proc.start()
    files = [write_instance(sample_files()[0], tmp_path / "in" / f"{n}.dcm") for n in range(3)]
    result = proc.store(files)
    assert [r.status for r in result.store_responses] == [0, 0, 0], result.explain()
    live = [p for p in (proc.home / "index.sqlite-wal", proc.home / "index.sqlite-shm") if p.exists()]
    assert live, "the serving node keeps its WAL open"
    assert too_open(proc.home) == []
    backup = tmp_path / "backup"
    run(proc.home, "backup", str(backup))
    assert too_open(backup) == []
    proc.stop()
    restored = tmp_path / "restored"
    run(restored, "restore", str(backup))
    assert too_open(restored) == []
