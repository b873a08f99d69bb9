"""QC review in the workspace (issue 15 item 4) over HTTP against a real `pacsnode serve`: the queue
and its JSON twin (= `qc list --json`), a study's checks (= `qc show --json`) and contact sheet,
reject with 113001 (the study then vanishes from another institution's QIDO-RS), restore, accept with a grade,
refusals shown in the form, CSRF and role checks."""

from __future__ import annotations

import json
from typing import Iterator

import pytest
import requests

from support import NodeProcess
from workspace_helpers import audit, base, csrf_of, login, workspace_node

pytestmark = [pytest.mark.web]
STUDY = "1.2.826.0.1.3680043.10.1078.1.7"  # PRV001/P0001 CT head


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    node = workspace_node(tmp_path_factory.mktemp("wsqc") / "home")
    try:
        yield node
    finally:
        node.stop()


def _qido_sees(ws: NodeProcess, token: str) -> bool:
    answer = requests.get(f"{base(ws)}/dicom-web/studies", params={"PatientID": "P0001", "IssuerOfPatientID": "PRV001"},
                          headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert answer.status_code in (200, 204), answer.text
    return answer.status_code == 200 and STUDY in answer.text


def test_queue_and_study_pages_match_the_cli_and_show_the_contact_sheet(ws: NodeProcess) -> None:
    qc = login(ws, "qc-zhou")
    page = requests.get(f"{base(ws)}/qc", params={"status": "all"}, cookies=qc, timeout=30)
    assert page.status_code == 200 and STUDY in page.text and "质控审核队列" in page.text
    api = requests.get(f"{base(ws)}/api/qc", params={"status": "all"}, cookies=qc, timeout=30).json()
    assert api == json.loads(ws.cli("qc", "list", "--json").stdout)
    shown = requests.get(f"{base(ws)}/api/qc/study", params={"study": STUDY}, cookies=qc, timeout=30).json()
    assert shown == json.loads(ws.cli("qc", "show", STUDY, "--json").stdout)
    sheet = requests.get(f"{base(ws)}/qc/preview.png", params={"study": STUDY}, cookies=qc, timeout=60)
    assert sheet.status_code == 200 and sheet.content.startswith(b"\x89PNG")
    assert requests.get(f"{base(ws)}/qc/study", params={"study": "1.2.3.404"}, cookies=qc,
                        timeout=30).status_code == 404
    assert requests.get(f"{base(ws)}/qc", params={"status": "bogus"}, cookies=qc, timeout=30).status_code == 400


def test_reject_hides_the_study_restore_and_accept_with_grade(ws: NodeProcess) -> None:
    token = ws.cli("token", "create", "county-reader", "--institution", "CTY001").stdout.strip().splitlines()[-1]
    assert _qido_sees(ws, token)
    qc = login(ws, "qc-zhou")
    csrf = csrf_of(requests.get(f"{base(ws)}/qc/study", params={"study": STUDY}, cookies=qc, timeout=30).text)
    form = {"csrf_token": csrf, "study_uid": STUDY}
    rejected = requests.post(f"{base(ws)}/qc/study", cookies=qc, timeout=30,
                             data={**form, "action": "reject", "reason": "113001", "note": "motion"})
    assert rejected.status_code == 200 and 'id="saved"' in rejected.text, rejected.text
    assert json.loads(ws.cli("qc", "show", STUDY, "--json").stdout)["status"] == "rejected"
    assert not _qido_sees(ws, token)  # rejected: gone from the query view
    restored = requests.post(f"{base(ws)}/qc/study", cookies=qc, timeout=30, data={**form, "action": "restore"})
    assert restored.status_code == 200 and _qido_sees(ws, token)
    bad = requests.post(f"{base(ws)}/qc/study", cookies=qc, timeout=30,
                        data={**form, "action": "accept", "grade": "Z"})
    assert bad.status_code == 400 and 'id="error"' in bad.text
    good = requests.post(f"{base(ws)}/qc/study", cookies=qc, timeout=30, data={**form, "action": "accept", "grade": "3"})
    assert good.status_code == 200, good.text
    shown = json.loads(ws.cli("qc", "show", STUDY, "--json").stdout)
    assert (shown["status"], shown["grade"], shown["reviewer"]) == ("accepted", "3", "qc-zhou")
    actions = [e["outcome"] for e in audit(ws) if e["action"] == "web-qc" and e["study_uid"] == STUDY]
    assert {"reject", "restore", "accept", "refused"} <= set(actions)


def test_qc_post_needs_csrf_and_the_qc_role(ws: NodeProcess) -> None:
    qc = login(ws, "qc-zhou")
    plain = requests.post(f"{base(ws)}/qc/study", cookies=qc, timeout=30,
                          data={"study_uid": STUDY, "action": "reject", "reason": "113001"})
    assert plain.status_code == 403
    wang = login(ws, "dr-wang")
    assert requests.get(f"{base(ws)}/qc", cookies=wang, timeout=30).status_code == 403
    assert requests.get(f"{base(ws)}/qc/preview.png", params={"study": STUDY}, cookies=wang,
                        timeout=30).status_code == 403
    refused = [json.loads(e["detail"])["reason"] for e in audit(ws) if e["action"] == "workspace"]
    assert "missing or wrong CSRF token" in refused and any("role physician" in r for r in refused)
