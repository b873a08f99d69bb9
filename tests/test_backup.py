"""``pacsnode backup`` / ``restore``: an online snapshot while a server receives, restored into a fresh home.

The server is driven only from outside (``pacsnode serve`` subprocess, pynetdicom senders), the
backup and restore through the CLI, as an operator would.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

from bench.node_process import NodeProcess  # noqa: E402
from bench.soak_crash import (  # noqa: E402
    Sent,
    chunked_send,
    free_port,
    index_rows,
    init_home,
    pacsnode,
    quiet_pynetdicom,
    run_check,
    sender,
    write_instance,
)

pytestmark = pytest.mark.timeout(120)
UID = "1.2.826.0.1.3680043.10.1078.67"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def studies_json(home: Path) -> list[dict[str, Any]]:
    result = pacsnode(home, "studies", "--json", check=True)
    return list(json.loads(result.stdout))


def seed_home(tmp_path: Path, studies: int = 3, per_study: int = 4) -> tuple[Path, int]:
    """A home with a few imported studies (files written with pydicom)."""
    port = free_port()
    home = init_home(tmp_path / "live", port)
    folder = tmp_path / "seed"
    folder.mkdir()
    for s in range(1, studies + 1):
        for i in range(1, per_study + 1):
            write_instance(folder / f"{s}-{i}.dcm", f"{UID}.{s}", f"{UID}.{s}.1", f"{UID}.{s}.1.{i}", f"BK{s}",
                           number=i, seed=s * 100 + i)
    pacsnode(home, "import", str(folder), check=True)
    return home, port


@pytest.fixture(scope="module")
def offline_backup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(live home, backup folder) of a node at rest."""
    tmp = tmp_path_factory.mktemp("offline")
    home, _port = seed_home(tmp)
    dest = tmp / "backup"
    pacsnode(home, "backup", str(dest), check=True)
    return home, dest


def test_online_backup_while_receiving_restores_a_consistent_node(tmp_path: Path) -> None:
    quiet_pynetdicom()
    home, port = seed_home(tmp_path)
    dest, restored = tmp_path / "backup", tmp_path / "restored"
    results: list[Sent] = []
    stop = threading.Event()
    (tmp_path / "sent").mkdir()
    with NodeProcess(home, port=port, log_path=tmp_path / "serve.log", ready="echo", start_timeout=30), chunked_send():
        thread = threading.Thread(target=sender, args=(port, tmp_path / "sent", f"{UID}.9", random.Random(3), stop,
                                                      results, 0.2), daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while sum(r.acked for r in results) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        acked_before = {r.sop_uid for r in results if r.acked}
        backed_up = pacsnode(home, "backup", str(dest))
        acked_during = sum(r.acked for r in results) - len(acked_before)
        time.sleep(0.3)
        stop.set()
        thread.join(30)
    assert backed_up.returncode == 0, backed_up.stderr
    assert acked_before and acked_during > 0, "the server was not receiving during the backup"
    assert all(r.acked for r in results if r.status is not None)

    restore = pacsnode(restored, "restore", str(dest))
    assert restore.returncode == 0, restore.stderr
    assert "index and files agree" in restore.stdout

    manifest = json.loads((dest / "manifest.json").read_text())
    live_rows = {r["sop_instance_uid"]: r for r in index_rows(home)}
    restored_rows = {r["sop_instance_uid"]: r for r in index_rows(restored)}
    # A snapshot: everything acknowledged before it is in it; nothing in it that the live node lacks.
    assert acked_before <= set(restored_rows)
    assert set(restored_rows) <= set(live_rows)
    assert manifest["counts"]["instances"] == len(restored_rows)
    # Checksums: every restored file is byte-identical to the live one and to the manifest.
    by_path = {entry["path"]: entry["sha256"] for entry in manifest["files"]}
    for uid, row in restored_rows.items():
        digest = sha256(restored / "storage" / row["path"])
        assert digest == row["sha256"] == live_rows[uid]["sha256"] == by_path[f"storage/{row['path']}"]
    # Studies: identical where nothing was being added; the receiving study is a consistent prefix.
    live_studies = {s["study_uid"]: s for s in studies_json(home)}
    restored_studies = {s["study_uid"]: s for s in studies_json(restored)}
    receiving = f"{UID}.9.1"
    assert {k: v for k, v in restored_studies.items() if k != receiving} == \
        {k: v for k, v in live_studies.items() if k != receiving}
    assert restored_studies[receiving]["instance_count"] == sum(
        1 for r in restored_rows.values() if r["study_uid"] == receiving)
    assert run_check(restored).clean
    assert run_check(home).clean


def test_offline_backup_restores_identical_studies(offline_backup: tuple[Path, Path], tmp_path: Path) -> None:
    home, dest = offline_backup
    restored = tmp_path / "restored"
    result = pacsnode(restored, "restore", str(dest))
    assert result.returncode == 0, result.stderr
    assert studies_json(restored) == studies_json(home)
    for name in ("pacsnode.toml", "recognition.toml", "qc_rules.toml"):
        assert (restored / name).read_bytes() == (home / name).read_bytes()
    assert run_check(restored).clean


def test_restore_refuses_a_non_empty_home_unless_forced(offline_backup: tuple[Path, Path], tmp_path: Path) -> None:
    _home, dest = offline_backup
    target = tmp_path / "busy"
    pacsnode(target, "init", check=True)
    before = sorted(p.name for p in target.iterdir())
    refused = pacsnode(target, "restore", str(dest))
    assert refused.returncode == 1
    assert len(refused.stderr.strip().splitlines()) == 1 and "not empty" in refused.stderr
    assert sorted(p.name for p in target.iterdir()) == before
    forced = pacsnode(target, "restore", str(dest), "--force")
    assert forced.returncode == 0, forced.stderr
    assert run_check(target).clean
    assert len(studies_json(target)) == 3


def test_damaged_or_interrupted_backup_is_refused_and_home_untouched(offline_backup: tuple[Path, Path],
                                                                      tmp_path: Path) -> None:
    _home, dest = offline_backup
    damaged = tmp_path / "damaged"
    shutil.copytree(dest, damaged)
    victim = next(p for p in sorted((damaged / "storage").rglob("*.dcm")))
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    target = tmp_path / "target"
    result = pacsnode(target, "restore", str(damaged))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "checksum" in result.stderr
    assert not target.exists() or list(target.iterdir()) == []
    (damaged / "manifest.json").unlink()  # an interrupted backup has no manifest
    result = pacsnode(target, "restore", str(damaged))
    assert result.returncode == 1 and "manifest.json" in result.stderr


def test_backup_refuses_a_non_empty_destination(offline_backup: tuple[Path, Path]) -> None:
    home, dest = offline_backup
    result = pacsnode(home, "backup", str(dest))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "not empty" in result.stderr


def test_backup_refuses_a_live_file_that_differs_from_its_row(offline_backup: tuple[Path, Path],
                                                                tmp_path: Path) -> None:
    home, _dest = offline_backup
    damaged = tmp_path / "damaged-live"
    shutil.copytree(home, damaged)
    victim = next(p for p in sorted((damaged / "storage").rglob("*.dcm")))
    victim.write_bytes(victim.read_bytes()[:-1] + b"\x01")
    dest = tmp_path / "backup"
    result = pacsnode(damaged, "backup", str(dest))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "pacsnode check" in result.stderr
    assert not dest.exists() or list(dest.iterdir()) == []  # no half backup left behind


@pytest.mark.parametrize("command", ["backup", "restore"])
def test_commands_have_help_with_an_example(command: str, tmp_path: Path) -> None:
    result = pacsnode(tmp_path, command, "--help", check=True)
    assert "Example:" in result.stdout and "pacsnode --home" in result.stdout
