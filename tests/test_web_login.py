"""Browser users: `pacsnode user add` (password from stdin, argon2), the login form, the session cookie.

The cookie is Secure, HttpOnly and SameSite=Strict; it authorises reading only (a STOW with a
cookie and no token is refused: no cross-site request can change anything); wrong passwords
are audited and throttled; logging out ends the session on the server.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from typing import Iterator

import pytest
import requests

from web_helpers import multipart_body, served_node
from support import PACSNODE, NodeProcess

pytestmark = pytest.mark.web
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def login_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    node = served_node(tmp_path_factory.mktemp("web-login") / "home")
    try:
        added = subprocess.run([*PACSNODE, "--home", str(node.home), "user", "add", "dr-li", "--institution",
                                "PRV001", "--role", "physician"], input=PASSWORD + "\n", capture_output=True,
                               text=True, timeout=60)
        assert added.returncode == 0, added.stderr
        yield node
    finally:
        node.stop()


def _login(node: NodeProcess, user: str, password: str) -> requests.Response:
    return requests.post(f"http://127.0.0.1:{node.web_port}/login", data={"username": user, "password": password},
                         timeout=30)


def test_password_is_stored_as_argon2id_only(login_node: NodeProcess) -> None:
    files = b"".join(p.read_bytes() for p in login_node.home.glob("index.sqlite*") if p.is_file())  # the WAL too
    assert PASSWORD.encode() not in files
    listed = json.loads(login_node.cli("user", "list", "--json").stdout)
    assert [u["name"] for u in listed] == ["dr-li"] and "argon2" not in json.dumps(listed)
    with sqlite3.connect(f"file:{login_node.home / 'index.sqlite'}?mode=ro", uri=True) as conn:
        assert conn.execute("SELECT password_hash FROM web_users").fetchone()[0].startswith("$argon2id$")


def test_short_password_is_refused(login_node: NodeProcess) -> None:
    short = subprocess.run([*PACSNODE, "--home", str(login_node.home), "user", "add", "x", "--institution", "PRV001",
                            "--role", "viewer"], input="short\n", capture_output=True, text=True, timeout=60)
    assert short.returncode != 0 and "password" in short.stderr


def test_login_sets_a_secure_httponly_strict_cookie_that_reads_but_never_writes(login_node: NodeProcess) -> None:
    node = login_node
    assert "<form" in requests.get(f"http://127.0.0.1:{node.web_port}/login", timeout=30).text
    response = _login(node, "dr-li", PASSWORD)
    assert response.status_code == 200
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    session = response.cookies.get("pacsnode_session") or cookie.split(";")[0].split("=", 1)[1]
    jar = {"pacsnode_session": session}
    assert requests.get(node.web_url + "/studies", cookies=jar, timeout=30).status_code in (200, 204)
    stow = requests.post(node.web_url + "/studies", cookies=jar, timeout=30,
                         data=multipart_body([("application/dicom", b"x")]),
                         headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=TESTBOUNDARY'})
    assert stow.status_code == 401 and "bearer token" in stow.json()["error"]
    assert requests.post(f"http://127.0.0.1:{node.web_port}/logout", cookies=jar, timeout=30).status_code == 403
    csrf = requests.get(f"http://127.0.0.1:{node.web_port}/api/session", cookies=jar, timeout=30).json()["csrf_token"]
    assert requests.post(f"http://127.0.0.1:{node.web_port}/logout", cookies=jar, headers={"X-CSRF-Token": csrf},
                         timeout=30).status_code == 200
    assert requests.get(node.web_url + "/studies", cookies=jar, timeout=30).status_code == 401


def test_wrong_passwords_are_audited_and_throttled(login_node: NodeProcess) -> None:
    node = login_node
    codes = [_login(node, "dr-li", f"wrong password {i}").status_code for i in range(6)]
    assert codes[:5] == [401] * 5 and codes[5] == 429
    assert _login(node, "dr-li", PASSWORD).status_code == 429  # throttled even with the right one, for a while
    assert _login(node, "nobody-here", "whatever it is").status_code in (401, 429)
    events = json.loads(node.cli("audit", "--json").stdout)
    refused = [e for e in events if e["action"] == "web-login" and e["outcome"] == "refused"]
    assert len(refused) >= 6  # 5 wrong passwords, then the lockout once per address per 10 s (login.py)
    assert not any("wrong password" in json.dumps(e) for e in refused)  # passwords never reach the audit


@pytest.fixture(scope="module")
def landing_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node of its own: the wrong-password test above locks 127.0.0.1 out of ``login_node``."""
    node = served_node(tmp_path_factory.mktemp("web-landing") / "home")
    try:
        yield node
    finally:
        node.stop()


@pytest.mark.parametrize(("role", "landing"), [("physician", "/patients"), ("qc", "/qc"), ("programme", "/report"),
                                               ("admin", "/admin"), ("viewer", "/viewer/")])
def test_a_person_logging_in_lands_on_the_page_of_their_role(landing_node: NodeProcess, role: str,
                                                              landing: str) -> None:
    name = f"land-{role}"
    added = subprocess.run([*PACSNODE, "--home", str(landing_node.home), "user", "add", name, "--institution",
                            "PRV001", "--role", role], input=PASSWORD + "\n", capture_output=True, text=True,
                           timeout=60)
    assert added.returncode == 0, added.stderr
    answer = requests.post(f"http://127.0.0.1:{landing_node.web_port}/login",
                           data={"username": name, "password": PASSWORD}, headers={"Accept": "text/html"},
                           allow_redirects=False, timeout=30)
    assert answer.status_code == 303
    assert answer.headers["location"] == landing


@pytest.mark.parametrize(("asked", "landing"), [("/viewer/", "/viewer/"), ("/qc", "/qc"),
                                                ("https://elsewhere.example/", "/patients"),
                                                ("//elsewhere.example/viewer/", "/patients"),
                                                ("/viewer/../admin", "/patients")])
def test_a_login_returns_only_to_a_page_of_this_node_it_knows(landing_node: NodeProcess, asked: str,
                                                                landing: str) -> None:
    name = "land-next"
    subprocess.run([*PACSNODE, "--home", str(landing_node.home), "user", "add", name, "--institution", "PRV001",
                    "--role", "physician"], input=PASSWORD + "\n", capture_output=True, text=True, timeout=60)
    answer = requests.post(f"http://127.0.0.1:{landing_node.web_port}/login", params={"next": asked},
                           data={"username": name, "password": PASSWORD}, headers={"Accept": "text/html"},
                           allow_redirects=False, timeout=30)
    assert answer.status_code == 303
    assert answer.headers["location"] == landing


def test_a_forwarded_for_header_does_not_choose_the_host_in_the_audit(landing_node: NodeProcess) -> None:
    """uvicorn believes X-Forwarded-For from 127.0.0.1 by default: any local process could name the host the
    audit and the per-address login throttle record. The node reads the socket's address only."""
    node = landing_node
    answer = requests.post(f"http://127.0.0.1:{node.web_port}/login", timeout=30,
                           data={"username": "forwarded-probe", "password": "not the password at all"},
                           headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"})
    assert answer.status_code in (401, 429)
    events = json.loads(node.cli("audit", "--json").stdout)
    probes = [e for e in events if e["action"] == "web-login" and "forwarded-probe" in json.dumps(e)]
    assert probes and "203.0.113.9" not in json.dumps(probes), probes
    assert all("127.0.0.1" in json.dumps(e) for e in probes), probes
