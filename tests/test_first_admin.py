"""``init --web`` makes the first admin account (issue 15, Done means): a generated password
printed once that logs in at ``/login`` of a served node, stored nowhere in clear, never reset
by ``init --force``; ``serve`` prints the workspace and viewer addresses."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import requests

from support import PACSNODE, NodeProcess, free_port
from workspace_helpers import base, login

PRINTED = re.compile(r"^admin account (\S+) \(PRV001\), password shown only this once: (\S+)$", re.M)


def _init(node: NodeProcess, *extra: str) -> str:
    """``pacsnode init --web`` with a stdin that stays open and silent: a prompt would hang it."""
    node.port = node.port or free_port()
    silent, keep_open = os.pipe()
    try:
        result = subprocess.run([*PACSNODE, "--home", str(node.home), "init", "--aet", node.aet, "--port",
                                 str(node.port), "--institution", "PRV001", "--web", *extra], stdin=silent,
                                capture_output=True, text=True, timeout=60)
    finally:
        os.close(silent)
        os.close(keep_open)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _serve_web(node: NodeProcess) -> NodeProcess:
    node.web_port = free_port()
    node.configure("web", "port", node.web_port)
    return node.start()


def test_init_web_prints_an_admin_password_that_logs_in_and_is_stored_only_hashed(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "home", institution="PRV001")
    output = _init(node)
    match = PRINTED.search(output)
    assert match, output
    name, password = match.groups()
    assert name == "admin" and len(password) >= 16
    assert "pacsnode user passwd admin" in output
    for path in (tmp_path / "home").rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), f"password in clear in {path}"
    try:
        _serve_web(node)
        cookie = login(node, name, password)
        studies = requests.get(f"{node.web_url}/studies", cookies=cookie, allow_redirects=False, timeout=30)
        assert studies.status_code in (200, 204), studies.status_code  # the admin's session opens DICOMweb
        anonymous = requests.get(f"{node.web_url}/studies", allow_redirects=False, timeout=30)
        assert anonymous.status_code in (401, 403), anonymous.status_code
        wrong = requests.post(f"{base(node)}/login", data={"username": name, "password": password + "x"},
                              allow_redirects=False, timeout=30)
        assert "pacsnode_session" not in wrong.cookies
    finally:
        node.stop()
    listed = json.loads(node.cli("user", "list", "--json").stdout)
    assert [(u["name"], u["role"], u["institution"]) for u in listed] == [("admin", "admin", "PRV001")]


def test_init_force_keeps_the_existing_admins_password(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "home", institution="PRV001")
    name, password = PRINTED.search(_init(node)).groups()
    refused = node.cli("init", "--institution", "PRV001", "--web")
    assert refused.returncode != 0 and "--force" in refused.stderr + refused.stdout
    again = _init(node, "--force")
    assert not PRINTED.search(again) and "password is unchanged" in again, again
    try:
        _serve_web(node)
        assert login(node, name, password)["pacsnode_session"]
    finally:
        node.stop()


def test_serve_prints_the_workspace_and_viewer_urls(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "home", institution="PRV001")
    node.init().enable_web()
    try:
        node.start()
        site = f"http://127.0.0.1:{node.web_port}"
        line = f"workspace: {site}/patients  viewer: {site}/viewer/"
        deadline = time.monotonic() + 10
        while line not in node.stderr_text():
            assert time.monotonic() < deadline, node.stderr_text()
            time.sleep(0.05)
    finally:
        node.stop()


def test_init_web_without_an_institution_makes_no_admin_and_says_how(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = subprocess.run([*PACSNODE, "--home", str(home), "init", "--port", str(free_port()), "--web"],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert not PRINTED.search(result.stdout) and "password" not in result.stdout
    assert "No admin account created" in result.stderr and "--role admin" in result.stderr
    assert json.loads(subprocess.run([*PACSNODE, "--home", str(home), "user", "list", "--json"],
                                     capture_output=True, text=True, timeout=60).stdout) == []
