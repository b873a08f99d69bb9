"""The audit rows of the web side keep their exact shape now that the service layer writes them
(issue 13 item 7): accounts and tokens (``pacsnode.accounts``/``access_tokens``), and logins,
logout, workspace refusals, decisions, QC, admin changes and reads, and the programme report
(``node.web_events``). The admin audit page, ``pacsnode audit`` and other tools read these
actions, outcomes, ``user:NAME`` peers, study UIDs and detail keys, so each is compared whole,
on a real ``pacsnode serve`` driven over HTTP and through the CLI.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any, Iterator

import pytest
import requests

from support import PACSNODE, NodeProcess
from workspace_helpers import CT_HEAD, PASSWORD, audit, base, csrf_of, login, workspace_node

pytestmark = [pytest.mark.web]
ADMIN, OFFICE = "root-admin", "office-sun"
QC_STUDY = "1.2.826.0.1.3680043.10.1078.1.7"  # PRV001/P0001 CT head
HOST = "127.0.0.1"


def _piped(home: str, password: str, *args: str) -> None:
    """``pacsnode --home H <args>`` with a password on standard input (``user add``/``passwd``)."""
    done = subprocess.run([*PACSNODE, "--home", home, *args], input=password + "\n", capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def _add_user(home: str, name: str, role: str) -> None:
    _piped(home, PASSWORD, "user", "add", name, "--institution", "PRV001", "--role", role)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    home = tmp_path_factory.mktemp("webaudit") / "home"
    node = workspace_node(home)
    _add_user(str(home), ADMIN, "admin")
    _add_user(str(home), OFFICE, "programme")
    try:
        yield node
    finally:
        node.stop()


def _rows(ws: NodeProcess, action: str, peer_name: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(outcome, study UID, detail) of ``action`` rows by ``peer_name``, oldest first (``audit --json`` order)."""
    found = [e for e in audit(ws) if e["action"] == action and e["peer_name"] == peer_name]
    return [(e["outcome"], e["study_uid"], json.loads(e["detail"]) if e["detail"] else {}) for e in found]


def _session_csrf(ws: NodeProcess, cookies: dict[str, str]) -> str:
    return str(requests.get(f"{base(ws)}/api/session", cookies=cookies, timeout=30).json()["csrf_token"])


def test_account_and_token_changes_from_the_cli_keep_their_rows(ws: NodeProcess) -> None:
    _add_user(str(ws.home), "temp-user", "viewer")
    _piped(str(ws.home), "another password 9", "user", "passwd", "temp-user")
    assert ws.cli("user", "disable", "temp-user").returncode == 0
    assert [(a, o) for a, o, *_ in [(e["action"], e["outcome"]) for e in audit(ws)
                                     if e["peer_name"] == "user:temp-user"]] == [
        ("user-add", "done"), ("user-passwd", "done"), ("user-disable", "done")]
    assert _rows(ws, "user-add", "user:temp-user") == [("done", "", {"institution": "PRV001", "role": "viewer"})]
    assert _rows(ws, "user-passwd", "user:temp-user") == [("done", "", {})]
    assert _rows(ws, "user-disable", "user:temp-user") == [("done", "", {})]
    created = ws.cli("token", "create", "cli-reader", "--institution", "PRV001", "--permissions", "get,find")
    assert created.returncode == 0, created.explain()
    assert ws.cli("token", "revoke", "cli-reader").returncode == 0
    assert _rows(ws, "token-create", "token:cli-reader") == [
        ("done", "", {"institution": "PRV001", "peer": "", "permissions": ["find", "get"]})]
    assert _rows(ws, "token-revoke", "token:cli-reader") == [("done", "", {})]


def test_login_refused_done_and_logout_keep_their_rows(ws: NodeProcess) -> None:
    wrong = requests.post(f"{base(ws)}/login", data={"username": "dr-wang", "password": "not the password"},
                          allow_redirects=False, timeout=30)
    assert wrong.status_code == 401
    wang = login(ws, "dr-wang")
    out = requests.post(f"{base(ws)}/logout", cookies=wang, headers={"X-CSRF-Token": _session_csrf(ws, wang)},
                        timeout=30)
    assert out.status_code == 200, out.text
    assert _rows(ws, "web-login", "user:dr-wang") == [
        ("refused", "", {"reason": "wrong user name or password", "host": HOST}), ("done", "", {"host": HOST})]
    assert _rows(ws, "web-logout", "user:dr-wang") == [("done", "", {"host": HOST})]


def test_workspace_refusals_keep_their_rows(ws: NodeProcess) -> None:
    wang = login(ws, "dr-wang")
    assert requests.get(f"{base(ws)}/admin/users", cookies=wang, timeout=30).status_code == 403
    assert requests.get(f"{base(ws)}/decide", params={"study": "1.2.3.404"}, cookies=wang,
                        timeout=30).status_code == 404
    assert _rows(ws, "workspace", "user:dr-wang") == [
        ("refused", "", {"reason": "role physician may not use this page", "host": HOST, "method": "GET",
                         "path": "/admin/users"}),
        ("refused", "1.2.3.404", {"reason": "study not in this node nor among the priors shown", "host": HOST,
                                  "method": "GET", "path": "/decide"})]


def test_physician_decisions_refused_and_done_keep_their_rows(ws: NodeProcess) -> None:
    wang = login(ws, "dr-wang")
    requests.get(f"{base(ws)}/patients", params={"patient_id": "P0001", "issuer": "CTY001"}, cookies=wang, timeout=60)
    page = requests.get(f"{base(ws)}/decide", params={"study": CT_HEAD}, cookies=wang, timeout=30)
    form = {"csrf_token": csrf_of(page.text), "study_uid": CT_HEAD, "decision": "decline", "consent": "given",
            "informed": "patient"}
    refused = requests.post(f"{base(ws)}/decide", cookies=wang, timeout=30, data=form)
    assert refused.status_code == 400
    saved = requests.post(f"{base(ws)}/decide", cookies=wang, timeout=30,
                          data={**form, "reasons": "T1", "method": "signature"})
    assert saved.status_code == 200 and 'id="saved"' in saved.text, saved.text
    rows = _rows(ws, "web-decide", "user:dr-wang")
    assert [(o, s, sorted(d)) for o, s, d in rows] == [("refused", CT_HEAD, ["reason"]),
                                                       ("done", CT_HEAD, ["decision", "decision_id", "host",
                                                                          "informed_how"])]
    assert "reason code" in rows[0][2]["reason"]
    decided = rows[1][2]
    assert (decided["decision"], decided["informed_how"], decided["host"]) == ("decline", "signature", HOST)
    assert isinstance(decided["decision_id"], int) and decided["decision_id"] > 0


def test_qc_refused_and_accepted_keep_their_rows(ws: NodeProcess) -> None:
    qc = login(ws, "qc-zhou")
    csrf = csrf_of(requests.get(f"{base(ws)}/qc/study", params={"study": QC_STUDY}, cookies=qc, timeout=30).text)
    form = {"csrf_token": csrf, "study_uid": QC_STUDY}
    bogus = requests.post(f"{base(ws)}/qc/study", cookies=qc, timeout=30,
                          data={**form, "action": "x" * 40, "grade": "3"})
    assert bogus.status_code == 400
    good = requests.post(f"{base(ws)}/qc/study", cookies=qc, timeout=30,
                         data={**form, "action": "accept", "grade": "3", "reason": "R" * 30})
    assert good.status_code == 200, good.text
    rows = _rows(ws, "web-qc", "user:qc-zhou")
    assert [(o, s) for o, s, _ in rows] == [("refused", QC_STUDY), ("accept", QC_STUDY)]
    assert sorted(rows[0][2]) == ["action", "reason"] and rows[0][2]["action"] == "x" * 20  # cut to 20
    assert rows[0][2]["reason"].startswith("action 'xxxxxxxxxxxxxxxxxxx")
    assert rows[1][2] == {"status": "accepted", "grade": "3", "reason": "R" * 16}


def test_admin_changes_and_audit_reads_keep_their_rows(ws: NodeProcess) -> None:
    root = login(ws, ADMIN)
    headers = {"X-CSRF-Token": _session_csrf(ws, root)}
    made = requests.post(f"{base(ws)}/api/admin/tokens", cookies=root, headers=headers, timeout=30,
                         json={"action": "create", "name": "adm-reader", "institution": "PRV001",
                               "permissions": "find"})
    assert made.status_code == 200 and made.json()["token"].startswith("pn_"), made.text
    bogus = requests.post(f"{base(ws)}/api/admin/tokens", cookies=root, headers=headers, timeout=30,
                          json={"action": "burn", "name": "adm-reader"})
    assert bogus.status_code == 400
    read = requests.get(f"{base(ws)}/api/admin/audit", params={"action": "web-admin"}, cookies=root, timeout=30)
    assert read.status_code == 200
    rows = _rows(ws, "web-admin", f"user:{ADMIN}")
    target = {"page": "tokens", "target": "adm-reader", "host": HOST}
    assert rows == [
        ("done", "", {**target, "action": "create", "name": "adm-reader"}),  # never the token itself
        ("refused", "", {**target, "action": "burn", "reason": "action 'burn': use one of create, revoke"}),
        ("shown", "", {"page": "audit", "filters": {"action": "web-admin"}, "host": HOST})]
    assert _rows(ws, "token-create", "token:adm-reader") == [
        ("done", "", {"institution": "PRV001", "peer": "", "permissions": ["find"]})]


def test_programme_report_reads_keep_their_rows(ws: NodeProcess) -> None:
    office = login(ws, OFFICE)
    window = {"from": "2026-01-01", "to": "2026-12-31"}
    assert requests.get(f"{base(ws)}/api/report", params={**window, "by": "item"}, cookies=office,
                        timeout=30).status_code == 200
    assert requests.get(f"{base(ws)}/report.json", cookies=office, timeout=30).status_code == 200
    assert _rows(ws, "web-report", f"user:{OFFICE}") == [
        ("shown", "", {"what": "api:item", "from": "2026-01-01", "to": "2026-12-31", "period": "month"}),
        ("shown", "", {"what": "json", "from": "", "to": "", "period": "month"})]


def test_login_lockout_keeps_its_row(ws: NodeProcess) -> None:
    # Last in this module: the lockout also counts per address, so no login from here works after it.
    answers = [requests.post(f"{base(ws)}/login", data={"username": "qc-zhou", "password": "wrong password 1"},
                             allow_redirects=False, timeout=30).status_code for _ in range(6)]
    assert 429 in answers
    refused = [d for o, _, d in _rows(ws, "web-login", "user:qc-zhou") if o == "refused"]
    assert {"reason": "too many failed logins", "host": HOST} in refused
    assert all(sorted(d) == ["host", "reason"] for d in refused)
