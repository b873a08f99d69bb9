"""Helpers of the workspace tests: a served PRV001 node with the samples, an unreachable
county peer, and one account per role (and one physician of another institution)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import requests

from support import PACSNODE, REPO, NodeProcess, free_port

PASSWORD = "workspace test password 7"
USERS = {"dr-wang": ("PRV001", "physician"), "dr-li": ("CTY001", "physician"), "qc-zhou": ("PRV001", "qc")}
CR_CHEST = "1.2.826.0.1.3680043.10.1078.1.4"  # CTY001/P0001, HR_ELIGIBLE for PRV001
CT_HEAD = "1.2.826.0.1.3680043.10.1078.1.5"  # CTY001/P0001, NOT_ELIGIBLE (outside_window)
PRV_MR = "1.2.826.0.1.3680043.10.1078.1.6"  # PRV001/P0001


def workspace_node(home: Path) -> NodeProcess:
    """PRV001 node with every sample, [web] on, a county peer that never answers, and the USERS."""
    node = NodeProcess(home, institution="PRV001")
    node.init()
    node.enable_web()
    imported = node.cli("import", str(REPO / "sample_dicom"))
    assert imported.returncode == 0, imported.explain()
    added = node.cli("peer", "add", "county", "--aet", "CTY_PACS", "--host", "127.0.0.1", "--port",
                     str(free_port()), "--institution", "CTY001")
    assert added.returncode == 0, added.explain()
    for name, (institution, role) in USERS.items():
        result = subprocess.run([*PACSNODE, "--home", str(home), "user", "add", name, "--institution", institution,
                                 "--role", role], input=PASSWORD + "\n", capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
    return node.start()


def base(node: NodeProcess) -> str:
    return f"http://127.0.0.1:{node.web_port}"


def login(node: NodeProcess, user: str, password: str = PASSWORD) -> dict[str, str]:
    """The session cookie of ``user`` (sent explicitly: requests keeps Secure cookies for https only)."""
    response = requests.post(f"{base(node)}/login", data={"username": user, "password": password},
                             allow_redirects=False, timeout=30)
    assert response.status_code in (200, 303), response.text
    return {"pacsnode_session": response.cookies["pacsnode_session"]}


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', html)
    assert match, "no CSRF field in the form"
    return match.group(1)


def audit(node: NodeProcess) -> list[dict[str, Any]]:
    result = node.cli("audit", "--json", "--limit", "5000")
    assert result.returncode == 0, result.explain()
    return json.loads(result.stdout)
