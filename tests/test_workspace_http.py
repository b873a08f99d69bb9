"""The recognition workspace over plain HTTP (issue 15): priors page and its JSON twin, decisions
through the same validation as `recognition decide`, CSRF, roles, institutions, accounts, lockout.

A real `pacsnode serve` (PRV001, the samples, a county peer that never answers) is driven with
requests; every refusal is checked in the audit trail.
"""

from __future__ import annotations

import json
import subprocess
from typing import Iterator

import pytest
import requests

from support import PACSNODE, NodeProcess
from workspace_helpers import (CR_CHEST, CT_HEAD, PASSWORD, audit, base, csrf_of, login, workspace_node)

pytestmark = [pytest.mark.web]


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    node = workspace_node(tmp_path_factory.mktemp("workspace") / "home")
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
def wang(ws: NodeProcess) -> dict[str, str]:
    return login(ws, "dr-wang")


def _decide_page(ws: NodeProcess, cookies: dict[str, str], study: str) -> requests.Response:
    return requests.get(f"{base(ws)}/decide", params={"study": study}, cookies=cookies, timeout=30)


def test_priors_page_shows_statuses_failed_conditions_reason_codes_and_peer_status(
        ws: NodeProcess, wang: dict[str, str]) -> None:
    page = requests.get(f"{base(ws)}/patients", params={"patient_id": "P0001", "issuer": "CTY001"},
                        cookies=wang, timeout=60)
    assert page.status_code == 200, page.text
    html = page.text
    assert CR_CHEST in html and CT_HEAD in html
    assert "可互认" in html and "不符合互认条件" in html  # Chinese by default
    assert "超出有效期" in html and "outside_window" in html and "[T1 超出有效期]" in html  # words, code, reason
    # the validity window in words: from the study date to the last valid day, its length, and where today is
    assert "2026年3月15日 至 2026年4月14日（30天）" in html and "已过期" in html
    assert "county" in html and "未连通" in html and "30 秒" in html  # the unreachable peer, visibly
    assert f'/viewer/viewer?StudyInstanceUIDs={CR_CHEST}' in html
    assert "2026年11月24日" in html  # dates as users write them
    english = requests.get(f"{base(ws)}/patients", params={"patient_id": "P0001", "issuer": "CTY001"},
                           cookies={**wang, "pacsnode_lang": "en"}, timeout=60).text
    assert "Not eligible" in english and "Outside the validity window" in english and "2026-11-24" in english


def test_api_patients_returns_what_priors_json_returns(ws: NodeProcess, wang: dict[str, str]) -> None:
    api = requests.get(f"{base(ws)}/api/patients", params={"patient_id": "P0001", "issuer": "CTY001"},
                       cookies=wang, timeout=60)
    assert api.status_code == 200, api.text
    cli = json.loads(ws.cli("priors", "--patient-id", "P0001", "--issuer", "CTY001", "--json").stdout)
    body = api.json()
    assert set(body) == set(cli) == {"priors", "errors"} and set(body["errors"]) == set(cli["errors"]) == {"county"}
    assert body["priors"] == cli["priors"]
    missing = requests.get(f"{base(ws)}/api/patients", params={"patient_id": "P0001"}, cookies=wang, timeout=30)
    assert missing.status_code == 400 and "issuer" in missing.json()["error"]
    assert requests.get(f"{base(ws)}/api/patients", params={"resident_id": "x" * 65}, cookies=wang,
                        timeout=30).status_code == 400


def test_priors_are_audited_once_by_the_service_naming_who_asked(ws: NodeProcess, wang: dict[str, str]) -> None:
    """The priors service writes the audit event, not its adapters: one event per page and per CLI run
    (the page used to add its own second event), the web one naming the user."""
    def priors_events() -> list[dict[str, object]]:
        return [e for e in audit(ws) if e["action"] in ("priors", "web-priors")]

    before = len(priors_events())
    page = requests.get(f"{base(ws)}/patients", params={"patient_id": "P0001", "issuer": "CTY001"},
                        cookies=wang, timeout=60)
    assert page.status_code == 200, page.text
    web = priors_events()[before:]
    assert [(e["action"], e["outcome"], e["peer_name"]) for e in web] == [("priors", "shown", "user:dr-wang")]
    detail = web[0]["detail"] if isinstance(web[0]["detail"], dict) else json.loads(str(web[0]["detail"]))
    assert detail["patient_id"] == "P0001" and detail["issuer"] == "CTY001" and "county" in detail["errors"]
    assert ws.cli("priors", "--patient-id", "P0001", "--issuer", "CTY001").returncode == 0
    cli = priors_events()[before + 1:]
    assert [(e["action"], e["peer_name"]) for e in cli] == [("priors", "")]


def test_decline_without_reason_and_accept_of_not_eligible_without_note_are_refused_in_the_form(
        ws: NodeProcess, wang: dict[str, str]) -> None:
    requests.get(f"{base(ws)}/patients", params={"patient_id": "P0001", "issuer": "CTY001"}, cookies=wang, timeout=60)
    token = csrf_of(_decide_page(ws, wang, CT_HEAD).text)
    before = len([e for e in audit(ws) if e["action"] == "recognition-decision"])
    declined = requests.post(f"{base(ws)}/decide", cookies=wang, timeout=30, data={
        "csrf_token": token, "study_uid": CT_HEAD, "decision": "decline", "consent": "given", "informed": "patient"})
    assert declined.status_code == 400 and "a decline needs at least one reason code" in declined.text
    assert "不认可须至少选择一项原因" in declined.text  # the reason in the user's language, in the form
    assert 'value="decline" checked' in declined.text  # the form keeps what was entered
    accepted = requests.post(f"{base(ws)}/decide", cookies=wang, timeout=30, data={
        "csrf_token": token, "study_uid": CT_HEAD, "decision": "accept"})
    assert accepted.status_code == 400 and "needs a note saying why" in accepted.text
    assert "认可时须在备注中说明理由" in accepted.text
    events = audit(ws)
    assert len([e for e in events if e["action"] == "recognition-decision"]) == before  # nothing recorded
    assert len([e for e in events if e["action"] == "web-decide" and e["outcome"] == "refused"]) >= 2


def test_form_decision_is_recorded_with_consent_and_the_session_physician(ws: NodeProcess,
                                                                           wang: dict[str, str]) -> None:
    token = csrf_of(_decide_page(ws, wang, CT_HEAD).text)
    saved = requests.post(f"{base(ws)}/decide", cookies=wang, timeout=30, data=[
        ("csrf_token", token), ("study_uid", CT_HEAD), ("decision", "decline"), ("reasons", "T1"),
        ("reasons", "N1"), ("consent", "given"), ("informed", "family"), ("method", "signature"),
        ("note", "复查 CT")])
    assert saved.status_code == 200 and 'id="saved"' in saved.text, saved.text
    events = audit(ws)
    decided = [e for e in events if e["action"] == "recognition-decision" and e["study_uid"] == CT_HEAD]
    detail = json.loads(decided[0]["detail"])
    assert decided[0]["outcome"] == "decline" and detail["physician"] == "dr-wang"
    assert sorted(detail["reasons"]) == ["N1", "T1"] and detail["consent"] == "given"
    web = [e for e in events if e["action"] == "web-decide" and e["outcome"] == "done"]
    assert json.loads(web[0]["detail"])["informed_how"] == "signature" and web[0]["peer_name"] == "user:dr-wang"


def test_post_without_or_with_a_wrong_csrf_token_or_from_another_origin_is_refused_and_audited(
        ws: NodeProcess, wang: dict[str, str]) -> None:
    token = csrf_of(_decide_page(ws, wang, CR_CHEST).text)
    form = {"study_uid": CR_CHEST, "decision": "accept"}
    assert requests.post(f"{base(ws)}/decide", data=form, cookies=wang, timeout=30).status_code == 403
    assert requests.post(f"{base(ws)}/decide", data={**form, "csrf_token": "0" * 64}, cookies=wang,
                         timeout=30).status_code == 403
    assert requests.post(f"{base(ws)}/decide", data={**form, "csrf_token": token}, cookies=wang, timeout=30,
                         headers={"Origin": "http://evil.example"}).status_code == 403
    assert requests.post(f"{base(ws)}/api/decisions", json={**form, "note": "x"}, cookies=wang,
                         timeout=30).status_code == 403
    other = login(ws, "dr-wang")  # another session's token is not this one's
    other_token = csrf_of(_decide_page(ws, other, CR_CHEST).text)
    assert other_token != token
    assert requests.post(f"{base(ws)}/decide", data={**form, "csrf_token": other_token}, cookies=wang,
                         timeout=30).status_code == 403
    refused = [e for e in audit(ws) if e["action"] == "workspace" and e["outcome"] == "refused"]
    reasons = [json.loads(e["detail"])["reason"] for e in refused]
    assert reasons.count("missing or wrong CSRF token") >= 4 and "request from another origin" in reasons
    assert not [e for e in audit(ws) if e["action"] == "recognition-decision" and e["study_uid"] == CR_CHEST]


def test_api_decisions_records_through_the_same_validation(ws: NodeProcess, wang: dict[str, str]) -> None:
    token = requests.get(f"{base(ws)}/api/csrf", cookies=wang, timeout=30).json()["csrf_token"]
    headers = {"X-CSRF-Token": token}
    refused = requests.post(f"{base(ws)}/api/decisions", cookies=wang, headers=headers, timeout=30,
                            json={"study_uid": CR_CHEST, "decision": "decline", "reasons": ["N4"],
                                  "consent": "not-obtainable"})
    assert refused.status_code == 400 and "informed party" in refused.json()["error"]
    done = requests.post(f"{base(ws)}/api/decisions", cookies=wang, headers=headers, timeout=30,
                         json={"study_uid": CR_CHEST, "decision": "accept"})
    assert done.status_code == 200, done.text
    assert done.json()["decision"] == "accept" and done.json()["physician"] == "dr-wang"
    unknown = requests.post(f"{base(ws)}/api/decisions", cookies=wang, headers=headers, timeout=30,
                            json={"study_uid": "1.2.3.999", "decision": "accept", "note": "x"})
    assert unknown.status_code == 404 and "no such study" in unknown.json()["error"]
    report = json.loads(ws.cli("report", "recognition", "--json").stdout)
    assert sum(r["accepted"] for r in report) >= 1


@pytest.mark.parametrize("field, value, words", [
    ("reasons", "ZZ9", "不认可原因代码不存在"),  # a reason code that does not exist
    ("note", "复查\x1b[2J\x1b[31m", "备注含有控制字符"),  # terminal escapes for whoever lists decisions
    ("note", "正常\u202e复查", "备注含有控制字符"),  # a right-to-left override that makes the note read otherwise
    ("note", "长" * 999, "备注超过200字"),  # long, but under the form's size limit
    ("consent", "given\x00", "不认可须记录知情同意"),
])
def test_forged_decide_inputs_are_refused_in_words_and_nothing_is_recorded(
        ws: NodeProcess, wang: dict[str, str], field: str, value: str, words: str) -> None:
    token = csrf_of(_decide_page(ws, wang, CT_HEAD).text)
    form = {"csrf_token": token, "study_uid": CT_HEAD, "decision": "decline", "reasons": "T1", "consent": "given",
            "informed": "patient", field: value}
    before = len([e for e in audit(ws) if e["action"] == "recognition-decision"])
    refused = requests.post(f"{base(ws)}/decide", cookies=wang, timeout=30, data=form)
    assert refused.status_code == 400 and words in refused.text, refused.text[-2000:]
    assert "\x1b" not in refused.text and "\u202e" not in refused.text.split('id="error"')[1].split("</p>")[0]
    api = requests.post(f"{base(ws)}/api/decisions", cookies=wang, timeout=30, json={**form, "reasons": [form["reasons"]]},
                        headers={"X-CSRF-Token": token})
    assert api.status_code == 400  # the JSON twin refuses the same
    assert len([e for e in audit(ws) if e["action"] == "recognition-decision"]) == before


def test_a_huge_note_or_a_qc_users_own_token_on_the_decide_form_is_refused(ws: NodeProcess,
                                                                          wang: dict[str, str]) -> None:
    token = csrf_of(_decide_page(ws, wang, CT_HEAD).text)
    huge = requests.post(f"{base(ws)}/decide", cookies=wang, timeout=30, data={
        "csrf_token": token, "study_uid": CT_HEAD, "decision": "decline", "reasons": "T1", "note": "x" * 200_000})
    assert huge.status_code == 413  # refused before the body is read
    qc = login(ws, "qc-zhou")
    qc_token = csrf_of(requests.get(f"{base(ws)}/qc", cookies=qc, timeout=30).text)  # the qc user's own, valid token
    posted = requests.post(f"{base(ws)}/decide", cookies=qc, timeout=30, data={
        "csrf_token": qc_token, "study_uid": CT_HEAD, "decision": "accept", "note": "qc accepting"})
    assert posted.status_code == 403
    swapped = requests.post(f"{base(ws)}/decide", cookies=wang, timeout=30, data={
        "csrf_token": qc_token, "study_uid": CT_HEAD, "decision": "accept", "note": "another session's token"})
    assert swapped.status_code == 403  # a token is this session's only
    refusals = [e for e in audit(ws) if e["action"] == "workspace" and e["outcome"] == "refused"]
    assert [e for e in refusals if e["peer_name"] == "user:qc-zhou" and "role qc" in e["detail"]]


def test_physician_of_another_institution_cannot_open_a_study_by_url(ws: NodeProcess) -> None:
    li = login(ws, "dr-li")  # CTY001
    assert requests.get(f"{base(ws)}/decide", params={"study": "1.2.826.0.1.3680043.10.1078.1.7"}, cookies=li,
                        timeout=30).status_code == 403
    assert requests.get(f"{base(ws)}/patients", params={"patient_id": "P0001", "issuer": "PRV001"}, cookies=li,
                        timeout=30).status_code == 403
    private = "1.2.826.0.1.3680043.10.1078.1.12"  # PVT001: outside the programme, outside CTY001's access
    metadata = requests.get(f"{base(ws)}/dicom-web/studies/{private}/metadata", cookies=li, timeout=30)
    assert metadata.status_code == 404  # outside access: the same answer as absent
    events = audit(ws)
    assert [e for e in events if e["action"] == "workspace" and e["peer_name"] == "user:dr-li"]
    assert [e for e in events if e["study_uid"] == private and e["outcome"] == "refused"
            and "dr-li" in (e["peer_name"] + e["detail"])]


def test_qc_role_may_not_decide_and_no_session_goes_to_login(ws: NodeProcess) -> None:
    qc = login(ws, "qc-zhou")
    assert requests.get(f"{base(ws)}/patients", cookies=qc, timeout=30).status_code == 403
    assert requests.get(f"{base(ws)}/api/patients", params={"resident_id": "1"}, cookies=qc,
                        timeout=30).status_code == 403
    anonymous = requests.get(f"{base(ws)}/patients", allow_redirects=False, timeout=30)
    assert anonymous.status_code == 303 and anonymous.headers["location"] == "/login"
    assert requests.get(f"{base(ws)}/api/patients", timeout=30).status_code == 401


def test_user_list_disable_passwd_end_sessions(ws: NodeProcess) -> None:
    def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([*PACSNODE, "--home", str(ws.home), *args], input=stdin, capture_output=True,
                              text=True, timeout=60)

    added = cli("user", "add", "prog-he", "--institution", "PRV001", "--role", "programme", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    rows = json.loads(cli("user", "list", "--json").stdout)
    assert {r["name"]: r["role"] for r in rows}["prog-he"] == "programme"
    session = login(ws, "prog-he")
    assert cli("user", "passwd", "prog-he", stdin="short\n").returncode != 0
    assert cli("user", "passwd", "prog-he", stdin="a new password 123\n").returncode == 0
    assert requests.get(f"{base(ws)}/api/patients", cookies=session, timeout=30).status_code == 401  # sessions ended
    session = login(ws, "prog-he", "a new password 123")
    assert cli("user", "disable", "prog-he").returncode == 0
    assert requests.get(f"{base(ws)}/api/patients", cookies=session, timeout=30).status_code == 401
    assert cli("user", "disable", "prog-he").returncode != 0
    actions = {e["action"] for e in audit(ws) if e["peer_name"] == "user:prog-he"}
    assert {"user-add", "user-passwd", "user-disable"} <= actions


def test_login_locks_out_after_repeated_failures_even_with_the_right_password(ws: NodeProcess) -> None:
    # Last in this module: the lockout also counts per address (127.0.0.1).
    for _ in range(5):
        wrong = requests.post(f"{base(ws)}/login", data={"username": "qc-zhou", "password": "wrong password 1"},
                              allow_redirects=False, timeout=30)
        assert wrong.status_code == 401
    right = requests.post(f"{base(ws)}/login", data={"username": "qc-zhou", "password": PASSWORD},
                          allow_redirects=False, timeout=30)
    assert right.status_code == 429 and "pacsnode_session" not in right.cookies
    assert [e for e in audit(ws) if e["action"] == "web-login" and "too many" in e["detail"]]
