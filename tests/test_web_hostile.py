"""A hostile browser user or HTTP client against a served node: what the web side must never do.

PHI kept by a browser or proxy, a frame list that multiplies one frame, refusals left out of
the audit. Each test plays the client on the wire (requests) against ``pacsnode serve``; slow
clients are in ``test_web_slow_clients.py``.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest
import requests

from web_helpers import SAMPLE_GB18030, create_token, get, served_node

pytestmark = pytest.mark.web


@pytest.fixture(scope="module")
def hostile_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    node = served_node(tmp_path_factory.mktemp("web-hostile") / "home")
    try:
        imported = node.cli("import", str(SAMPLE_GB18030))
        assert imported.returncode == 0, imported.explain()
        study = node.studies()[0]["study_uid"]
        token = create_token(node, "local", "PRV001")
        series = get(node, f"/studies/{study}/series", token).json()[0]["0020000E"]["Value"][0]
        sop = get(node, f"/studies/{study}/series/{series}/instances", token).json()[0]["00080018"]["Value"][0]
        yield {"node": node, "study": study, "series": series, "sop": sop, "token": token}
    finally:
        node.stop()


def test_every_dicomweb_answer_is_no_store_and_nosniff(hostile_node: dict[str, Any]) -> None:
    """PHI must not stay in a browser's disk cache or a shared proxy: answers, refusals and the
    frames answered early on the event loop alike."""
    node, token = hostile_node["node"], hostile_node["token"]
    study, series, sop = hostile_node["study"], hostile_node["series"], hostile_node["sop"]
    instance = f"/studies/{study}/series/{series}/instances/{sop}"
    paths = ["/studies", f"/studies/{study}", f"/studies/{study}/metadata", f"/studies/{study}/series",
             f"{instance}/metadata", f"{instance}/frames/1", f"{instance}/frames/1",  # the second: fast path
             f"{instance}/rendered", f"{instance}/thumbnail", f"{instance}/bulkdata/7FE00010",
             f"/wado?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={sop}",
             "/studies/1.2.3.404", f"/studies/1.2.3.404/series/{series}/instances/{sop}/frames/1"]
    for path in paths:
        answer = get(node, path, token, Accept="*/*")
        assert answer.status_code in (200, 404), (path, answer.status_code)
        assert answer.headers.get("cache-control") == "no-store", path
        assert answer.headers.get("x-content-type-options") == "nosniff", path
    refused = get(node, f"/studies/{study}")  # no token: 401
    assert refused.status_code == 401 and refused.headers.get("cache-control") == "no-store"


def test_a_frame_list_that_repeats_a_frame_is_refused(hostile_node: dict[str, Any]) -> None:
    """PS3.18's frame list is of non-duplicate numbers; ``1,1,…`` made a 40 KB URL ask for ten
    thousand copies of one frame (the answer's size times 10 000)."""
    node, token = hostile_node["node"], hostile_node["token"]
    instance = f"/studies/{hostile_node['study']}/series/{hostile_node['series']}/instances/{hostile_node['sop']}"
    assert get(node, f"{instance}/frames/1", token).status_code == 200
    for frames in ("1,1", ",".join(["1"] * 10_000)):
        answer = get(node, f"{instance}/frames/{frames}", token)
        assert answer.status_code == 404 and "at most once" in answer.json()["error"]


def test_a_login_from_another_origin_or_too_large_is_refused_unread_and_audited(hostile_node: dict[str, Any]) -> None:
    node = hostile_node["node"]
    login = node.web_url.replace("/dicom-web", "") + "/login"
    form = {"username": "dr-li", "password": "not the password at all"}
    for _ in range(20):  # audited, but a flood of them is not a flood of rows (once per address per 10 s)
        cross = requests.post(login, data=form, headers={"Origin": "https://evil.example"}, timeout=30)
        assert cross.status_code == 403
    huge = requests.post(login, data={"username": "x", "password": "y" * 10_000}, timeout=30)
    assert huge.status_code == 413
    reasons = [json.loads(e["detail"])["reason"] for e in json.loads(node.cli("audit", "--json").stdout)
               if e["action"] == "web-login" and e["outcome"] == "refused"]
    assert 1 <= reasons.count("login from another origin refused") <= 2
    assert "login form too large or without Content-Length" in reasons


def test_a_locked_out_address_hammering_the_login_writes_few_audit_rows(hostile_node: dict[str, Any]) -> None:
    """After five wrong passwords the address is locked out: each further attempt costs the
    client one request and wrote one audit row (a flood of writes from nobody)."""
    node = hostile_node["node"]
    login = node.web_url.replace("/dicom-web", "") + "/login"
    codes = [requests.post(login, data={"username": "mallory", "password": f"guess number {i}"}, timeout=30)
             .status_code for i in range(25)]
    assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}
    reasons = [json.loads(e["detail"])["reason"] for e in json.loads(node.cli("audit", "--json").stdout)
               if e["action"] == "web-login" and e["outcome"] == "refused"]
    assert reasons.count("wrong user name or password") == 5  # each wrong password stays audited
    assert 1 <= reasons.count("too many failed logins") <= 2


def test_a_new_authorization_scheme_per_request_does_not_write_an_audit_row_each(hostile_node: dict[str, Any]) -> None:
    """401s are audited once per address and kind per 10 s; the kind was the whole reason, which
    quotes the scheme the client sent, so ``Authorization: X1 …``, ``X2 …``, … wrote a row each."""
    node, study = hostile_node["node"], hostile_node["study"]
    for number in range(30):
        assert get(node, f"/studies/{study}", Authorization=f"Scheme{number} abc").status_code == 401
    rows = [e for e in json.loads(node.cli("audit", "--json").stdout)
            if e["action"] == "web-auth" and "unsupported authorization scheme" in e["detail"]]
    assert 1 <= len(rows) <= 2
