"""README's quick start works as written, and the repository stands alone.

The quick-start test does what a new user does after ``make run``: it takes the node commands
of the Makefile's ``run`` recipe (``make -n run``: init, import, serve), runs them in a fresh
home, then runs every command of README's quick-start blocks exactly as written, from the
repository folder, with only the port 11112 replaced by a free one, and checks their effect.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from support import PACSNODE, REPO, SAMPLE_DIR, ToolResult, free_port, have_tool, port_accepts

README = REPO / "README.md"
DOCUMENTED_PORT = "11112"
VENV_SCRIPT = ".venv/bin/pacsnode"
OUTSIDE = "../" + "shared"  # the session's notes next to the repository; spelled so this file does not match


def quick_start_commands() -> list[str]:
    """The shell lines of the README blocks that follow ``make run`` in the Quick start section."""
    section = README.read_text(encoding="utf-8").split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    lines = [line.split("  #", 1)[0].strip() for block in blocks[1:] for line in block.splitlines()]
    return [line for line in lines if line]


def _as_run_here(line: str, port: int) -> str:
    """The line on our port, with ``.venv/bin/pacsnode`` being this environment's script (the same in a clone)."""
    return line.replace(f" {DOCUMENTED_PORT}", f" {port}").replace(VENV_SCRIPT, PACSNODE[0])


def _shell(line: str, env: dict[str, str], timeout: float = 120) -> ToolResult:
    done = subprocess.run(["bash", "-c", line], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    return ToolResult([line], done.returncode, done.stdout, done.stderr)


def test_quick_start_calls_dcmtk_by_full_path() -> None:
    """pynetdicom's apps of the same names shadow DCMTK in an activated venv."""
    tools = {"echoscu", "storescu", "findscu", "movescu", "getscu"}
    for line in quick_start_commands():
        first = line.split()[0]
        assert os.path.basename(first) not in tools or first.startswith("/usr/bin/"), line


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("make") is None or not have_tool("findscu"), reason="make or DCMTK missing")
@pytest.mark.skipif(len(PACSNODE) != 1, reason="no pacsnode console script in this environment")
def test_readme_quick_start_commands_work_as_written(tmp_path: Path) -> None:
    home = tmp_path / "pacsnode-data"
    port = free_port()
    env = {**os.environ, "PACSNODE_HOME": str(home)}
    recipe = subprocess.run(["make", "-n", "--no-print-directory", "run", f"PACSNODE_HOME={home}"], cwd=REPO,
                            capture_output=True, text=True, env=env, check=True).stdout.splitlines()
    node_lines = [line for line in recipe if "pacsnode --home" in line]
    assert [re.search(r"--home \S+ (\w+)", line).group(1) for line in node_lines] == ["init", "import", "serve"]
    for line in node_lines[:2]:
        done = _shell(_as_run_here(line, port), env)
        assert done.returncode == 0, done.explain()
        if " init " in line:  # the quick start's promise: a first admin, its password printed once
            assert re.search(r"^admin account admin \(PRV001\), password shown only this once: \S{16,}$",
                             done.output, re.M), done.explain()
    serve = _as_run_here(node_lines[2], port) + f" --port {port}"
    server = subprocess.Popen(["bash", "-c", f"exec {serve}"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not port_accepts(port):
            assert server.poll() is None and time.monotonic() < deadline, "make run's serve did not start"
            time.sleep(0.05)
        results = [(line, _shell(_as_run_here(line, port), env)) for line in quick_start_commands()]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=15)
    for line, result in results:
        assert result.returncode == 0, result.explain()
        assert not re.search(r"^E: ", result.output, re.M), result.explain()
    by_tool = {line.split()[0].rsplit("/", 1)[-1]: result for line, result in results}
    assert "Bad DICOM file" not in by_tool["storescu"].output
    listing = next(result for line, result in results if line.endswith("pacsnode studies"))
    studies = [line for line in listing.stdout.splitlines()[1:] if line.strip()]
    assert len(studies) == len({p.parent.parent for p in SAMPLE_DIR.rglob("*.dcm")}) == 14
    audit = json.loads(subprocess.run([*PACSNODE, "--home", str(home), "audit", "--json", "--limit", "1000"],
                                      capture_output=True, text=True, check=True).stdout)
    finds = [e for e in audit if e["action"] == "find" and e["peer_aet"] == "FINDSCU"]
    assert finds and finds[-1]["outcome"] == "answered", audit[-5:]
    detail = finds[-1]["detail"]
    assert (json.loads(detail) if isinstance(detail, str) else detail)["matches"] == 4, "P0001 at two hospitals"


def test_nothing_links_outside_the_repository() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
    offenders = []
    for name in tracked:
        path = REPO / name
        if path.is_symlink() or path.suffix not in (".md", ".py", ".toml", ".txt", ".cfg", "") or not path.is_file():
            continue
        if OUTSIDE in path.read_text(encoding="utf-8", errors="replace"):
            offenders.append(name)
    assert offenders == [], f"these files point outside the repository: {offenders}"


def test_readme_points_to_the_architecture_and_stays_true() -> None:
    text = README.read_text(encoding="utf-8")
    assert "docs/ARCHITECTURE.md" in text and (REPO / "docs" / "ARCHITECTURE.md").is_file()
    assert "adapters, thin" not in text
    architecture = (REPO / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    for module in re.findall(r"`pacsnode/([\w/]+\.py)`", text + architecture):
        assert (REPO / "pacsnode" / module).is_file(), module
