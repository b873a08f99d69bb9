"""The admin pages (issue 15 item 6) on a real `pacsnode serve`: peers, tokens, users, the audit
trail and node health, each with its JSON twin equal to the CLI's `--json`; admin role only
(403, audited); CSRF on every change; every change audited with the admin's name.
"""

from __future__ import annotations

import json
import subprocess
from typing import Iterator

import pytest
import requests

from support import PACSNODE, NodeProcess, free_port
from workspace_helpers import PASSWORD, audit, base, csrf_of, login, workspace_node

pytestmark = [pytest.mark.web]
ADMIN = "root-admin"


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    home = tmp_path_factory.mktemp("admin") / "home"
    node = workspace_node(home)
    added = subprocess.run([*PACSNODE, "--home", str(home), "user", "add", ADMIN, "--institution", "PRV001",
                            "--role", "admin"], input=PASSWORD + "\n", capture_output=True, text=True, timeout=60)
    assert added.returncode == 0, added.stderr
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
def root(ws: NodeProcess) -> dict[str, str]:
    return login(ws, ADMIN)


def _page(ws: NodeProcess, cookies: dict[str, str], path: str, **params: str) -> requests.Response:
    return requests.get(f"{base(ws)}{path}", params=params, cookies=cookies, timeout=30)


def _post(ws: NodeProcess, cookies: dict[str, str], path: str, data: dict[str, object]) -> requests.Response:
    token = csrf_of(_page(ws, cookies, path).text)
    return requests.post(f"{base(ws)}{path}", cookies=cookies, data={"csrf_token": token, **data}, timeout=30)


def _api(ws: NodeProcess, cookies: dict[str, str], kind: str, body: dict[str, object]) -> requests.Response:
    token = _page(ws, cookies, "/api/session").json()["csrf_token"]
    return requests.post(f"{base(ws)}/api/admin/{kind}", cookies=cookies, json=body,
                         headers={"X-CSRF-Token": token}, timeout=30)


def _admin_events(ws: NodeProcess, outcome: str) -> list[dict[str, object]]:
    return [e for e in audit(ws) if e["action"] == "web-admin" and e["outcome"] == outcome
            and e["peer_name"] == f"user:{ADMIN}"]


def test_admin_pages_are_for_the_admin_role_only_and_refusals_are_audited(ws: NodeProcess) -> None:
    wang = login(ws, "dr-wang")
    for path in ("/admin/peers", "/admin/tokens", "/admin/users", "/admin/audit", "/admin/health",
                 "/api/admin/peers", "/api/admin/audit", "/api/admin/health"):
        assert _page(ws, wang, path).status_code == 403, path
    assert requests.get(f"{base(ws)}/api/admin/users", timeout=30).status_code == 401
    assert requests.get(f"{base(ws)}/admin/users", allow_redirects=False, timeout=30).status_code == 303
    refused = [e for e in audit(ws) if e["action"] == "workspace" and e["peer_name"] == "user:dr-wang"
               and "/admin/" in str(e["detail"])]
    assert len(refused) >= 8 and all("role physician" in str(e["detail"]) for e in refused)


def test_admin_opening_patients_is_refused_a_hospital_keeps_clinical_data_to_clinicians(
        ws: NodeProcess, root: dict[str, str]) -> None:
    page = _page(ws, root, "/patients", patient_id="P0001", issuer="CTY001")
    assert page.status_code == 403 and "P0001" not in page.text.split("<nav>")[-1].split("</nav>")[-1]
    assert 'href="/admin"' in page.text  # the admin's own way is offered in the menu
    assert [e for e in audit(ws) if e["action"] == "workspace" and e["peer_name"] == f"user:{ADMIN}"
            and "/patients" in str(e["detail"])]


def test_peer_add_edit_remove_uses_the_validations_of_peer_add_and_is_audited(
        ws: NodeProcess, root: dict[str, str]) -> None:
    added = _post(ws, root, "/admin/peers", {"action": "add", "name": "city", "aet": "CITY_PACS", "host": "127.0.0.1",
                                            "port": "11199", "institution": "CTY001",
                                            "permissions": ["echo", "find"]})
    assert added.status_code == 200 and 'id="done"' in added.text, added.text
    cli_rows = json.loads(ws.cli("peer", "list", "--json").stdout)
    assert _page(ws, root, "/api/admin/peers").json() == cli_rows
    city = next(r for r in cli_rows if r["name"] == "city")
    assert city["port"] == 11199 and city["permissions"] == ["echo", "find"] and city["check_host"] is True

    # The same refusals, in the same words, as `pacsnode peer add`.
    cases = [({"aet": "CTY_PACS"}, ["--aet", "CTY_PACS"]),  # the county peer's AE title: unique
             ({"cert_subject": "x.example.org"}, ["--cert-subject", "x.example.org"]),  # binding without TLS
             ({"port": "70000"}, ["--port", "70000"]),
             ({"institution": "NOPE01"}, ["--institution", "NOPE01"])]
    for form_change, cli_change in cases:
        form = {"action": "add", "name": "bad", "aet": "BAD_AE", "host": "127.0.0.1", "port": "104",
                "institution": "CTY001", **form_change}
        refused = _post(ws, root, "/admin/peers", form)
        args = ["peer", "add", "bad", "--aet", "BAD_AE", "--host", "127.0.0.1", "--port", "104",
                "--institution", "CTY001"]
        for option, value in zip(cli_change[::2], cli_change[1::2]):
            if option in args:
                args[args.index(option) + 1] = value
            else:
                args += [option, value]
        cli = ws.cli(*args)
        assert refused.status_code == 400 and cli.returncode != 0
        shown = refused.text.split('id="error">', 1)[1].split("</p>", 1)[0]
        message = shown.split("：", 1)[-1].replace("&#39;", "'").replace("&#34;", '"')
        assert message and message[:40] in cli.stderr.replace("\n", " "), (message, cli.stderr)
        assert f'value="{form["aet"]}"' in refused.text  # the form keeps what was typed
    assert "bad" not in {r["name"] for r in json.loads(ws.cli("peer", "list", "--json").stdout)}

    edited = _post(ws, root, "/admin/peers", {"action": "edit", "name": "city", "aet": "CITY_PACS",
                                             "host": "127.0.0.2", "port": "11200", "institution": "CTY001",
                                             "permissions": ["echo"], "any_host": "on"})
    assert edited.status_code == 200, edited.text
    city = next(r for r in json.loads(ws.cli("peer", "list", "--json").stdout) if r["name"] == "city")
    assert (city["host"], city["port"], city["permissions"], city["check_host"]) == ("127.0.0.2", 11200, ["echo"], False)
    ghost = _post(ws, root, "/admin/peers", {"action": "edit", "name": "ghost", "aet": "GHOST", "host": "127.0.0.1",
                                            "port": "104", "institution": "CTY001"})
    assert ghost.status_code == 400 and "ghost" not in ws.cli("peer", "list").stdout  # edit never creates
    removed = _api(ws, root, "peers", {"action": "remove", "name": "city"})
    assert removed.status_code == 200 and removed.json() == {"peer": "city"}
    assert "city" not in {r["name"] for r in json.loads(ws.cli("peer", "list", "--json").stdout)}
    done = {(json.loads(str(e["detail"]))["action"], json.loads(str(e["detail"]))["target"])
            for e in _admin_events(ws, "done")}
    assert {("add", "city"), ("edit", "city"), ("remove", "city")} <= done
    assert len([e for e in _admin_events(ws, "refused") if '"page": "peers"' in str(e["detail"])]) >= 5


def test_every_admin_change_needs_the_csrf_token(ws: NodeProcess, root: dict[str, str]) -> None:
    for path, data in (("/admin/users", {"action": "add", "name": "csrf-victim", "institution": "PRV001",
                                         "role": "admin"}),
                       ("/admin/peers", {"action": "remove", "name": "county"}),
                       ("/admin/tokens", {"action": "create", "name": "csrf-token", "institution": "PRV001"})):
        forged = requests.post(f"{base(ws)}{path}", cookies=root, data=data, timeout=30)
        assert forged.status_code == 403, path
        wrong = requests.post(f"{base(ws)}{path}", cookies=root, data={**data, "csrf_token": "0" * 64}, timeout=30)
        assert wrong.status_code == 403
    assert requests.post(f"{base(ws)}/api/admin/users", cookies=root, timeout=30,
                         json={"action": "add", "name": "csrf-victim", "institution": "PRV001"}).status_code == 403
    cross = requests.post(f"{base(ws)}/admin/peers", cookies=root, timeout=30,
                          headers={"Origin": "http://evil.example"},
                          data={"action": "remove", "name": "county", "csrf_token": csrf_of(
                              _page(ws, root, "/admin/peers").text)})
    assert cross.status_code == 403
    assert "csrf-victim" not in ws.cli("user", "list").stdout and "county" in ws.cli("peer", "list").stdout
    assert "csrf-token" not in ws.cli("token", "list").stdout


def test_token_is_shown_once_listed_like_the_cli_and_revoked(ws: NodeProcess, root: dict[str, str]) -> None:
    created = _post(ws, root, "/admin/tokens", {"action": "create", "name": "ohif-web", "institution": "PRV001",
                                               "permissions": ["find", "get"]})
    assert created.status_code == 200, created.text
    token = created.text.split('class="secret-token">', 1)[1].split("<", 1)[0]
    assert token.startswith("pn_") and len(token) == 46
    assert token not in _page(ws, root, "/admin/tokens").text  # shown once only
    assert token not in json.dumps(audit(ws))  # never audited
    bearer = {"Authorization": f"Bearer {token}"}
    assert requests.get(ws.web_url + "/studies", headers=bearer, timeout=30).status_code in (200, 204)
    assert _page(ws, root, "/api/admin/tokens").json() == json.loads(ws.cli("token", "list", "--json").stdout)
    refused = _post(ws, root, "/admin/tokens", {"action": "create", "name": "bad", "institution": "PRV001",
                                               "permissions": ["find", "delete"]})
    assert refused.status_code == 400 and "--permissions" in refused.text
    revoked = _post(ws, root, "/admin/tokens", {"action": "revoke", "name": "ohif-web"})
    assert revoked.status_code == 200
    assert requests.get(ws.web_url + "/studies", headers=bearer, timeout=30).status_code == 401
    via_api = _api(ws, root, "tokens", {"action": "create", "name": "script", "institution": "PRV001",
                                        "permissions": "find"})
    assert via_api.status_code == 200 and via_api.json()["token"].startswith("pn_")


def test_users_add_with_generated_or_typed_password_disable_and_reset(ws: NodeProcess, root: dict[str, str]) -> None:
    made = _post(ws, root, "/admin/users", {"action": "add", "name": "dr-zhao", "institution": "PRV001",
                                           "role": "physician", "password": ""})
    assert made.status_code == 200, made.text
    generated = made.text.split('class="secret-password">', 1)[1].split("<", 1)[0]
    assert len(generated) >= 20 and generated not in json.dumps(audit(ws))
    zhao = login(ws, "dr-zhao", generated)
    assert _page(ws, zhao, "/patients").status_code == 200
    typed = _api(ws, root, "users", {"action": "add", "name": "qc-sun", "institution": "PRV001", "role": "qc",
                                     "password": "typed password 42"})
    assert typed.status_code == 200 and "password" not in typed.json()
    login(ws, "qc-sun", "typed password 42")
    short = _api(ws, root, "users", {"action": "add", "name": "x", "institution": "PRV001", "role": "qc",
                                     "password": "short"})
    assert short.status_code == 400 and "10 to 1024" in short.json()["error"]
    reset = _post(ws, root, "/admin/users", {"action": "passwd", "name": "dr-zhao", "password": ""})
    new_password = reset.text.split('class="secret-password">', 1)[1].split("<", 1)[0]
    assert _page(ws, zhao, "/patients", ).status_code in (303, 200) and new_password != generated
    assert requests.get(f"{base(ws)}/api/patients", cookies=zhao, timeout=30).status_code == 401  # sessions ended
    zhao = login(ws, "dr-zhao", new_password)
    assert _post(ws, root, "/admin/users", {"action": "disable", "name": "dr-zhao"}).status_code == 200
    assert requests.get(f"{base(ws)}/api/patients", cookies=zhao, timeout=30).status_code == 401
    me = _post(ws, root, "/admin/users", {"action": "disable", "name": ADMIN})
    assert me.status_code == 400 and "your own account" in me.text
    assert _page(ws, root, "/api/admin/users").json() == json.loads(ws.cli("user", "list", "--json").stdout)
    actions = {json.loads(str(e["detail"]))["action"] for e in _admin_events(ws, "done")
               if '"page": "users"' in str(e["detail"])}
    assert {"add", "passwd", "disable"} <= actions


def test_audit_trail_filters_and_pages_like_audit_json(ws: NodeProcess, root: dict[str, str]) -> None:
    token = _page(ws, root, "/api/session").json()["csrf_token"]
    for i in range(60):  # refused removals: more than a page of events, whatever ran before
        requests.post(f"{base(ws)}/api/admin/peers", cookies=root, json={"action": "remove", "name": f"nobody-{i}"},
                      headers={"X-CSRF-Token": token}, timeout=30)
    rows = _page(ws, root, "/api/admin/audit", actor=f"user:{ADMIN}", action="web-admin", outcome="refused").json()
    assert len(rows) >= 3 and all(r["outcome"] == "refused" and r["peer_name"] == f"user:{ADMIN}" for r in rows)
    assert [json.loads(r["detail"])["target"] for r in rows[:3]] == ["nobody-59", "nobody-58", "nobody-57"]  # newest first
    cli = json.loads(ws.cli("audit", "--peer", f"user:{ADMIN}", "--json", "--limit", "5000").stdout)
    assert all(r in cli for r in rows)  # the same rows as `audit --json`
    first = _page(ws, root, "/api/admin/audit")
    second = _page(ws, root, "/api/admin/audit", page=first.headers["X-Next-Page"], upto=first.headers["X-Audit-Upto"])
    assert len(first.json()) == 50 and first.headers["X-Next-Page"] == "2"
    assert not {json.dumps(r) for r in first.json()} & {json.dumps(r) for r in second.json()}  # reading is audited
    again = _page(ws, root, "/api/admin/audit", page="1", upto=first.headers["X-Audit-Upto"])
    assert again.json() == first.json()  # the pages stand still while new events arrive
    assert _page(ws, root, "/api/admin/audit", until="2000-01-01").json() == []
    today = rows[0]["at"][:10]
    assert _page(ws, root, "/api/admin/audit", **{"from": today, "until": today}).json()
    assert _page(ws, root, "/api/admin/audit", **{"from": "yesterday"}).status_code == 400
    assert _page(ws, root, "/api/admin/audit", page="0").status_code == 400
    html = _page(ws, root, "/admin/audit", outcome="refused", actor=f"user:{ADMIN}").text
    assert "nobody-59" in html and 'id="next"' in html and "审计日志" in html and "upto=" in html


def test_health_page_and_twin_say_what_pacsnode_status_says(ws: NodeProcess, root: dict[str, str]) -> None:
    assert requests.get(f"{ws.web_url}/studies", timeout=30).status_code == 401  # a refusal, audited
    api = _page(ws, root, "/api/admin/health").json()
    cli = json.loads(ws.cli("status", "--json").stdout)
    assert set(api) == set(cli) >= {"ready", "storage", "index", "listener", "workers", "last_errors"}
    assert api["ready"] is cli["ready"] is True and api["index"] == cli["index"] == {"ok": True, "error": ""}
    assert api["listener"] == cli["listener"] and api["listener"]["accepting"] is True
    assert api["listener"]["port"] == ws.port and api["workers"]["running"] >= 1
    assert api["storage"]["free_bytes"] > 0 and api["storage"]["path"] == cli["storage"]["path"]
    assert api["last_errors"] and all(e["outcome"] in ("refused", "rejected", "failed", "error", "undelivered")
                                      for e in api["last_errors"])
    html = _page(ws, root, "/admin/health").text
    assert "节点状态" in html and "正在接受连接" in html and "GiB" in html
    english = requests.get(f"{base(ws)}/admin/health", cookies={**root, "pacsnode_lang": "en"}, timeout=30).text
    assert "Node health" in english and "accepting" in english and "节点状态" not in english


def test_status_reports_a_stopped_listener(tmp_path) -> None:  # type: ignore[no-untyped-def]
    node = NodeProcess(tmp_path / "home", institution="PRV001").init()
    node.port = free_port()
    result = node.cli("status", "--json")
    assert result.returncode == 0, result.explain()
    health = json.loads(result.stdout)
    assert health["ready"] is True and health["listener"]["accepting"] is False
    assert health["workers"]["running"] == 0
