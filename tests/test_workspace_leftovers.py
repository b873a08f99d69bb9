"""Leftovers of the workspace (issue 15): the login lockout shared by every worker, logout as
an audited POST with CSRF, a thumbnail per local prior the user may see, and how the patient
was informed kept as a column of the decision and shown. Real `pacsnode serve` processes.
"""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest
import requests

from support import PACSNODE, NodeProcess
from workspace_helpers import CR_CHEST, CT_HEAD, PASSWORD, audit, base, csrf_of, login, workspace_node

pytestmark = [pytest.mark.web]


def _add_user(home: Path, name: str, institution: str, role: str) -> None:
    result = subprocess.run([*PACSNODE, "--home", str(home), "user", "add", name, "--institution", institution,
                             "--role", role], input=PASSWORD + "\n", capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    home = tmp_path_factory.mktemp("leftovers") / "home"
    node = workspace_node(home)
    _add_user(home, "prog-he", "PRV001", "programme")
    try:
        yield node
    finally:
        node.stop()


def test_login_lockout_is_shared_by_every_worker_even_under_parallel_attempts(tmp_path: Path) -> None:
    home = tmp_path / "home"
    node = NodeProcess(home, institution="PRV001").init()
    node.enable_web().configure("network", "workers", 3)
    _add_user(home, "dr-wang", "PRV001", "physician")
    _add_user(home, "admin-a", "PRV001", "admin")
    session = login(node.start(), "admin-a")  # before the attack: the lockout also counts per address
    try:
        deadline = time.monotonic() + 30
        while True:  # three processes take logins once the workers are up
            health = requests.get(f"{base(node)}/api/admin/health", cookies=session, timeout=30).json()
            if health["workers"]["running"] == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert health["workers"] == {"configured": 3, "running": 3}, health

        def attempt(i: int) -> int:
            return requests.post(f"{base(node)}/login", data={"username": "dr-wang", "password": f"guess {i}"},
                                 allow_redirects=False, timeout=60).status_code

        with ThreadPoolExecutor(max_workers=8) as pool:  # new connections: spread over the workers
            codes = list(pool.map(attempt, range(18)))
        assert sorted(codes) == [401] * 5 + [429] * 13, codes  # 5 tries in all, not 5 per worker
        right = requests.post(f"{base(node)}/login", data={"username": "dr-wang", "password": PASSWORD},
                              allow_redirects=False, timeout=30)
        assert right.status_code == 429
        refused = [e for e in audit(node) if e["action"] == "web-login" and "too many" in e["detail"]]
        # a locked-out address is audited once per reason per 10 s by each serving process (a flood of
        # 429s must not become a flood of audit writes), so three workers write one to three rows
        assert 1 <= len(refused) <= 3, refused
    finally:
        node.stop()


def test_logout_is_a_post_with_csrf_and_is_audited(ws: NodeProcess) -> None:
    wang = login(ws, "dr-wang")
    page = requests.get(f"{base(ws)}/patients", cookies=wang, timeout=30).text
    token = csrf_of(page.split('action="/logout"', 1)[1])  # the logout form carries the token
    forged = requests.post(f"{base(ws)}/logout", cookies=wang, timeout=30)
    assert forged.status_code == 403
    assert requests.get(f"{base(ws)}/api/patients", params={"resident_id": "X1"}, cookies=wang,
                        timeout=30).status_code == 200  # still logged in
    out = requests.post(f"{base(ws)}/logout", cookies=wang, data={"csrf_token": token},
                        headers={"Accept": "text/html"}, allow_redirects=False, timeout=30)
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert requests.get(f"{base(ws)}/api/patients", params={"resident_id": "X1"}, cookies=wang,
                        timeout=30).status_code == 401
    events = [e for e in audit(ws) if e["peer_name"] == "user:dr-wang"]
    assert [e for e in events if e["action"] == "web-logout" and e["outcome"] == "done"]
    assert [e for e in events if e["action"] == "workspace" and "CSRF" in e["detail"] and "/logout" in e["detail"]]
    qc = login(ws, "qc-zhou")  # a script logs out with the token of /api/session
    csrf = requests.get(f"{base(ws)}/api/session", cookies=qc, timeout=30).json()["csrf_token"]
    assert requests.post(f"{base(ws)}/logout", cookies=qc, headers={"X-CSRF-Token": csrf}, timeout=30).status_code == 200
    assert requests.get(f"{base(ws)}/api/session", cookies=qc, timeout=30).status_code == 401


def test_priors_page_shows_a_thumbnail_of_each_local_prior_the_user_may_see(ws: NodeProcess) -> None:
    wang = login(ws, "dr-wang")
    html = requests.get(f"{base(ws)}/patients", params={"patient_id": "P0001", "issuer": "CTY001"}, cookies=wang,
                        timeout=60).text
    for uid in (CR_CHEST, CT_HEAD):
        src = f"/dicom-web/studies/{uid}/thumbnail"
        assert f'src="{src}"' in html
        image = requests.get(f"{base(ws)}{src}", cookies=wang, headers={"Accept": "image/*,*/*;q=0.8"}, timeout=60)
        assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
        assert image.content[:3] == b"\xff\xd8\xff"
    src = f"{base(ws)}/dicom-web/studies/{CR_CHEST}/thumbnail"
    assert requests.get(src, timeout=30).status_code == 401  # no session, no picture
    programme = login(ws, "prog-he")  # reads reports, not images
    assert requests.get(src, cookies=programme, timeout=30).status_code == 404
    assert [e for e in audit(ws) if e["action"] == "wado-rendered" and e["outcome"] == "refused"
            and e["peer_name"] == "user:prog-he"] or [
        e for e in audit(ws) if e["peer_name"] == "user:prog-he" and e["outcome"] == "refused"]


def test_informed_how_is_a_column_of_the_decision_and_shown(ws: NodeProcess) -> None:
    wang = login(ws, "dr-wang")
    requests.get(f"{base(ws)}/patients", params={"patient_id": "P0001", "issuer": "CTY001"}, cookies=wang, timeout=60)
    token = requests.get(f"{base(ws)}/api/session", cookies=wang, timeout=30).json()["csrf_token"]
    body = {"study_uid": CT_HEAD, "decision": "decline", "reasons": ["T1"], "consent": "given",
            "informed": "patient", "method": "e-sign"}
    saved = requests.post(f"{base(ws)}/api/decisions", cookies=wang, json=body, headers={"X-CSRF-Token": token},
                          timeout=30)
    assert saved.status_code == 200, saved.text
    decision_id = saved.json()["decision_id"]
    assert ws.index_rows("SELECT informed_how FROM recognition_decisions WHERE pk = ?", (decision_id,)) == [("e-sign",)]
    page = requests.get(f"{base(ws)}/decide", params={"study": CT_HEAD}, cookies=wang, timeout=30).text
    assert 'class="informed-how">电子签名<' in page
    bad = requests.post(f"{base(ws)}/api/decisions", cookies=wang, json={**body, "method": "carrier pigeon"},
                        headers={"X-CSRF-Token": token}, timeout=30)
    assert bad.status_code == 400 and "informed how" in bad.json()["error"]
    accept = requests.post(f"{base(ws)}/api/decisions", cookies=wang, headers={"X-CSRF-Token": token}, timeout=30,
                           json={"study_uid": CR_CHEST, "decision": "accept", "method": "signature"})
    assert accept.status_code == 400 and "consent is recorded for a decline" in accept.json()["error"]
    cli = ws.cli("recognition", "decide", CT_HEAD, "--decline", "--reason", "N1", "--consent", "refused",
                 "--informed", "family", "--informed-how", "verbal-witnessed", "--physician", "Dr Wang")
    assert cli.returncode == 0, cli.explain()
    rows = ws.index_rows("SELECT informed_how FROM recognition_decisions WHERE study_uid = ? ORDER BY pk", (CT_HEAD,))
    assert rows[-1] == ("verbal-witnessed",)
    decided = [json.loads(e["detail"]) for e in audit(ws) if e["action"] == "recognition-decision"]
    assert decided[-1]["informed_how"] == "verbal-witnessed"
