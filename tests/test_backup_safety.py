"""Backup and restore stay inside the home and keep what they copy private (issue 10, items 5, 12-13, low).

Everything is driven through the CLI (``pacsnode backup``/``restore``/``check``/``serve`` subprocesses; the
homes they work on are set up in process) and checked on disk and on the wire (DCMTK ``echoscu +tls``), as an
operator and an attacker who hands over a crafted backup would.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Callable

import pytest

from bench.soak_crash import index_rows, pacsnode, write_instance
from support import LOOPBACK, PACSNODE, NodeProcess, cli_in_process, dcmtk, free_port, run_tool, set_config

pytestmark = pytest.mark.timeout(180)
UID = "1.2.826.0.1.3680043.10.1078.68"


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` by relative path, with its SHA-256 (what "untouched" means)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith(("-wal", "-shm"))}


def set_up(home: Path, *args: str) -> None:
    """A set-up command (init, import): run in process, since the commands under test here are the
    subprocesses (backup, restore, check, serve) and an interpreter start costs seconds on a loaded machine."""
    done = cli_in_process("--home", str(home), *args)
    assert done.returncode == 0, done.explain()


def seeded_home(tmp_path: Path, name: str = "live", count: int = 4) -> Path:
    home = tmp_path / name
    set_up(home, "init", "--port", str(free_port()))
    folder = tmp_path / f"{name}-seed"
    folder.mkdir()
    for i in range(1, count + 1):
        write_instance(folder / f"{i}.dcm", f"{UID}.1", f"{UID}.1.1", f"{UID}.1.1.{i}", "SAFE1", number=i, seed=i)
    set_up(home, "import", str(folder))
    return home


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def tamper_config(backup: Path, section: str, key: str, value: str) -> None:
    """Change the backup's pacsnode.toml and fix its manifest entry, as a crafted backup would."""
    set_config(backup, section, key, value)
    manifest = json.loads((backup / "manifest.json").read_text())
    data = (backup / "pacsnode.toml").read_bytes()
    manifest["configs"]["pacsnode.toml"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (backup / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def live_and_backup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A live node (shared: every test checks it is left untouched) and a backup of it."""
    tmp = tmp_path_factory.mktemp("crafted")
    live = seeded_home(tmp)
    (live / "tls.key").write_text("live key")
    pacsnode(live, "backup", str(tmp / "backup"), check=True)
    return live, tmp / "backup"


@pytest.mark.parametrize("section,key,value", [
    ("node", "storage_dir", "{live}/storage"),
    ("node", "storage_dir", "../live/storage"),
    ("node", "index_file", "{live}/index.sqlite"),
    ("node", "index_file", "../live/index.sqlite"),
    ("node", "storage_dir", "serve.lock"),
    ("node", "recognition_file", "{live}/recognition.toml"),
    ("tls", "private_key", "{live}/tls.key"),
])
def test_restore_of_a_crafted_backup_never_touches_the_live_node(live_and_backup: tuple[Path, Path], tmp_path: Path,
                                                                 section: str, key: str, value: str) -> None:
    live, pristine = live_and_backup
    backup = tmp_path / "backup"
    shutil.copytree(pristine, backup)
    tamper_config(backup, section, key, value.format(live=live))
    before = snapshot(live)
    target = tmp_path / "new-home"
    refused = pacsnode(target, "restore", str(backup))
    assert key in one_line_error(refused)
    assert snapshot(live) == before, "restore changed the live node's files"
    assert pacsnode(live, "check").returncode == 0
    assert not target.exists() or list(target.iterdir()) == [], "a refused restore left files behind"


@pytest.mark.parametrize("key,value", [
    ("storage_dir", "../elsewhere"), ("storage_dir", "."), ("storage_dir", ""), ("storage_dir", "tmp"),
    ("index_file", "../index.sqlite"), ("index_file", "storage/index.sqlite"), ("index_file", "tmp/index.sqlite"),
    ("recognition_file", "storage/recognition.toml"),
])
def test_a_live_config_naming_paths_that_leave_the_home_is_refused(tmp_path: Path, key: str, value: str) -> None:
    home = tmp_path / "home"
    set_up(home, "init")
    set_config(home, "node", key, value)
    assert key in one_line_error(pacsnode(home, "check"))


def test_an_admins_absolute_storage_dir_is_accepted_and_backed_up_into_the_home(tmp_path: Path) -> None:
    live = seeded_home(tmp_path)
    elsewhere = tmp_path / "disk2" / "images"
    shutil.move(str(live / "storage"), str(elsewhere))
    set_config(live, "node", "storage_dir", str(elsewhere))
    assert pacsnode(live, "check").returncode == 0
    backup, restored = tmp_path / "backup", tmp_path / "restored"
    pacsnode(live, "backup", str(backup), check=True)
    before = snapshot(elsewhere)
    result = pacsnode(restored, "restore", str(backup))
    assert result.returncode == 0, result.stderr
    assert snapshot(elsewhere) == before
    assert 'storage_dir = "storage"' in (restored / "pacsnode.toml").read_text()
    assert len(index_rows(restored)) == 4 and all((restored / "storage" / r["path"]).is_file()
                                                  for r in index_rows(restored))


def test_backup_with_a_missing_file_backs_up_the_rest_lists_it_and_fails(tmp_path: Path) -> None:
    live = seeded_home(tmp_path)
    lost = sorted(index_rows(live), key=lambda r: r["path"])[0]["path"]
    (live / "storage" / lost).unlink()
    backup = tmp_path / "backup"
    result = pacsnode(live, "backup", str(backup))
    assert result.returncode == 1
    assert f"missing file: {lost}" in result.stderr
    manifest = json.loads((backup / "manifest.json").read_text())
    assert manifest["missing"] == [lost] and manifest["counts"]["instances"] == 3
    assert not (backup / "storage" / lost).exists()  # no empty stand-in for the lost file
    restored = tmp_path / "restored"
    done = pacsnode(restored, "restore", str(backup))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "index and files agree" in done.stdout
    assert len(index_rows(restored)) == 3


def test_restore_force_refuses_a_home_a_server_is_running_on(node_process: Callable[..., NodeProcess],
                                                              tmp_path: Path) -> None:
    source = seeded_home(tmp_path, "source")
    backup = tmp_path / "backup"
    pacsnode(source, "backup", str(backup), check=True)
    node = node_process().start()
    before = snapshot(node.home)
    refused = pacsnode(node.home, "restore", str(backup), "--force")
    assert "running" in one_line_error(refused) and "serve.lock" in refused.stderr
    assert snapshot(node.home) == before
    assert node.echo().returncode == 0  # the server kept serving
    node.stop()
    forced = pacsnode(node.home, "restore", str(backup), "--force")
    assert forced.returncode == 0, forced.stderr
    assert len(index_rows(node.home)) == 4


def _modes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): oct(stat.S_IMODE(p.stat().st_mode)) for p in sorted(folder.rglob("*"))
            if p.name != "tmp" and "tmp" not in p.relative_to(folder).parts}


def test_backup_and_restore_write_files_600_and_folders_700_whatever_the_sources_mode(tmp_path: Path) -> None:
    live = seeded_home(tmp_path)
    for path in [live, *live.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # as an old node (umask 022) left them
    backup, restored = tmp_path / "backup", tmp_path / "restored"
    env_umask = ["sh", "-c", 'umask 022; exec "$@"', "pacsnode"]
    subprocess.run([*env_umask, *PACSNODE, "--home", str(live), "backup", str(backup)], check=True,
                   capture_output=True)
    subprocess.run([*env_umask, *PACSNODE, "--home", str(restored), "restore", str(backup)], check=True,
                   capture_output=True)
    for folder in (backup, restored):
        modes = _modes(folder)
        assert modes and oct(stat.S_IMODE(folder.stat().st_mode)) == "0o700"
        wrong = {name: mode for name, mode in modes.items()
                 if mode != ("0o700" if (folder / name).is_dir() else "0o600")}
        assert not wrong, f"{folder.name}: {wrong}"


# -- TLS (item 13) ------------------------------------------------------------------------------
def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=pacsnode backup test ca", cwd=folder)
    for name in ("node", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=folder)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", cwd=folder)
    return folder


@pytest.mark.skipif(shutil.which("openssl") is None or shutil.which("echoscu") is None,
                    reason="openssl and DCMTK are needed")
def test_a_tls_node_is_restored_and_serves_echoscu_over_tls(tmp_path: Path, pki: Path) -> None:
    live = seeded_home(tmp_path)
    (live / "certs").mkdir()
    for name in ("node.crt", "node.key"):
        shutil.copyfile(pki / name, live / "certs" / name)  # inside the home: kept under its own path
    outside = tmp_path / "etc-pacsnode"  # outside the home: copied in, the config rewritten
    outside.mkdir()
    shutil.copyfile(pki / "ca.crt", outside / "peers-ca.crt")
    set_config(live, "tls", "enabled", True)
    set_config(live, "tls", "certificate", "certs/node.crt")
    set_config(live, "tls", "private_key", "certs/node.key")
    set_config(live, "tls", "ca_certificates", str(outside / "peers-ca.crt"))
    set_config(live, "tls", "require_client_certificate", True)
    backup, restored = tmp_path / "backup", tmp_path / "restored"
    pacsnode(live, "backup", str(backup), check=True)
    shutil.rmtree(outside)  # the restored node must not need anything outside its home
    result = pacsnode(restored, "restore", str(backup))
    assert result.returncode == 0, result.stdout + result.stderr
    restored_config = (restored / "pacsnode.toml").read_text()
    assert str(outside) not in restored_config
    assert (restored / "certs" / "node.key").read_bytes() == (pki / "node.key").read_bytes()
    assert oct(stat.S_IMODE((restored / "certs" / "node.key").stat().st_mode)) == "0o600"
    node = NodeProcess(restored)
    node.port = free_port()
    with node:
        tls = ["+tls", str(pki / "client.key"), str(pki / "client.crt"), "+cf", str(pki / "ca.crt")]
        echoed = run_tool([dcmtk("echoscu"), *tls, "-aet", "TLSSCU", "-aec", "PACSNODE", LOOPBACK, str(node.port)])
        assert echoed.returncode == 0, echoed.explain() + node.stderr_text()
        plain = run_tool([dcmtk("echoscu"), "-aet", "TLSSCU", "-aec", "PACSNODE", LOOPBACK, str(node.port)])
        assert plain.returncode != 0  # the restored node is TLS-only, like the live one


def test_serve_refuses_a_home_being_restored(tmp_path: Path) -> None:
    from pacsnode.storage.home_lock import HomeLock

    home = tmp_path / "home"
    set_up(home, "init", "--port", str(free_port()))
    restoring = HomeLock(home)
    assert restoring.try_exclusive()  # what restore holds while it replaces the home's files
    try:
        refused = pacsnode(home, "serve", timeout=30)
    finally:
        restoring.release()
    assert "locked by a restore" in one_line_error(refused)


def _tamper_index(backup: Path, change: Callable[[Path], None]) -> None:
    """Change the backup's index and fix its manifest entry, as a crafted backup would."""
    change(backup / "index.sqlite")
    manifest = json.loads((backup / "manifest.json").read_text())
    data = (backup / "index.sqlite").read_bytes()
    manifest["index"] = {"path": "index.sqlite", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (backup / "manifest.json").write_text(json.dumps(manifest))


def _row_to(path: str) -> Callable[[Path], None]:
    def change(index: Path) -> None:
        import sqlite3

        conn = sqlite3.connect(index)
        conn.execute("UPDATE instances SET path = ? WHERE pk = (SELECT MIN(pk) FROM instances)", (path,))
        conn.commit()
        conn.close()
    return change


@pytest.mark.parametrize("change", [
    _row_to("00/00/not-in-the-backup.dcm"),
    _row_to("../../live/storage/x.dcm"),
    lambda index: index.write_bytes(b"not a database" * 100),
], ids=["row-outside-manifest", "row-leaving-storage", "not-sqlite"])
def test_restore_refuses_an_index_that_names_files_the_backup_does_not_hold(
        live_and_backup: tuple[Path, Path], tmp_path: Path, change: Callable[[Path], None]) -> None:
    _live, pristine = live_and_backup
    backup = tmp_path / "backup"
    shutil.copytree(pristine, backup)
    _tamper_index(backup, change)
    target = tmp_path / "new-home"
    refused = pacsnode(target, "restore", str(backup))
    assert "nothing was restored" in one_line_error(refused)
    assert not target.exists() or list(target.iterdir()) == [], "a refused restore left files behind"
