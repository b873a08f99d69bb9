"""Who may see what over DICOMweb: every request authenticated, the same door as DIMSE, audited.

Plays the hostile party against a served node: no token, a forged or revoked token, a token of
an institution without a relationship to the producer (with and without patient context), a
guessed study UID. A hidden study answers exactly like a study that does not exist.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Iterator

import pytest

from web_helpers import SAMPLE_GB18030, create_token, get, multipart_body, served_node
from support import NodeProcess

pytestmark = pytest.mark.web
WANG = {"PatientID": "P0002", "IssuerOfPatientID": "PRV001"}


@pytest.fixture(scope="module")
def access_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess, str, str]]:
    node = served_node(tmp_path_factory.mktemp("web-access") / "home")
    try:
        imported = node.cli("import", str(SAMPLE_GB18030))
        assert imported.returncode == 0, imported.explain()
        study = node.studies()[0]["study_uid"]
        yield node, study, create_token(node, "local", "PRV001")
    finally:
        node.stop()


def _audit(node: NodeProcess) -> list[dict[str, Any]]:
    result = node.cli("audit", "--json")
    assert result.returncode == 0, result.explain()
    return list(json.loads(result.stdout))


def _paths(study: str) -> list[str]:
    return ["/studies", f"/studies/{study}", f"/studies/{study}/metadata", f"/studies/{study}/series"]


def test_no_token_malformed_or_unknown_token_is_401_and_audited(access_node: Any) -> None:
    node, study, _ = access_node
    forged = "pn_" + "A" * 43
    for headers in ({}, {"Authorization": "Basic YWRtaW46YWRtaW4="}, {"Authorization": "Bearer "},
                    {"Authorization": "Bearer not-a-token"}, {"Authorization": f"Bearer {forged}"}):
        for path in _paths(study):
            response = get(node, path, **headers)
            assert response.status_code == 401, (path, headers)
            assert response.headers["www-authenticate"].startswith("Bearer")
    stow = get(node, "/wado?requestType=WADO")
    assert stow.status_code == 401
    refusals = [json.loads(e["detail"]) for e in _audit(node) if e["action"] == "web-auth"]
    reasons = [r["reason"] for r in refusals]
    for reason in ("no credentials", "unsupported authorization scheme 'Basic'", "malformed bearer token",
                   "unknown bearer token"):
        assert reason in reasons  # every kind of refusal is audited ...
    assert len(refusals) < 21  # ... but a flood is not: one row per address and reason per interval
    assert forged not in json.dumps(refusals)  # a presented secret is never written down
    time.sleep(10.5)
    assert get(node, "/studies").status_code == 401
    latest = [json.loads(e["detail"]) for e in _audit(node) if e["action"] == "web-auth"]
    assert any(r.get("similar_refusals_not_audited", 0) >= 4 for r in latest)


def test_revoked_token_is_401(access_node: Any) -> None:
    node, study, _ = access_node
    token = create_token(node, "soon-revoked", "PRV001")
    assert get(node, f"/studies/{study}/metadata", token).status_code == 200
    assert node.cli("token", "revoke", "soon-revoked").returncode == 0
    assert get(node, f"/studies/{study}/metadata", token).status_code == 401
    listed = json.loads(node.cli("token", "list", "--json").stdout)
    assert {t["name"]: bool(t["revoked_at"]) for t in listed}["soon-revoked"] is True
    stored = b"".join(p.read_bytes() for p in node.home.glob("index.sqlite*") if p.is_file())  # the WAL too
    assert token.encode() not in stored and hashlib.sha256(token.encode()).hexdigest().encode() in stored


def test_own_institution_token_sees_the_study(access_node: Any) -> None:
    node, study, local = access_node
    assert get(node, "/studies", local).status_code == 200
    assert get(node, f"/studies/{study}", local).status_code == 200


def test_other_institution_without_patient_context_gets_nothing(access_node: Any) -> None:
    node, _study, _ = access_node
    outsider = create_token(node, "outsider-browse", "PVT001")
    response = get(node, "/studies", outsider)
    assert response.status_code == 400 and "patient" in response.json()["error"].lower()
    assert get(node, "/series", outsider).status_code == 400
    assert get(node, "/instances?PatientName=*", outsider).status_code == 400
    refused = [e for e in _audit(node) if e["action"] == "find" and e["outcome"] == "refused"
               and e["peer_name"] == "token:outsider-browse"]
    assert len(refused) == 3


def test_hidden_study_equals_absent_for_another_institution(access_node: Any) -> None:
    node, study, _ = access_node
    outsider = create_token(node, "outsider", "PVT001")
    with_context = get(node, "/studies?" + "&".join(f"{k}={v}" for k, v in WANG.items()), outsider)
    assert with_context.status_code == 204 and not with_context.content
    guessed = "1.2.826.0.1.3680043.10.1078.999.999"
    for suffix in ("", "/metadata", "/series"):
        hidden, absent = get(node, f"/studies/{study}{suffix}", outsider), get(node, f"/studies/{guessed}{suffix}", outsider)
        if suffix == "/series":  # QIDO within the study: empty, as for a study that is not there
            assert hidden.status_code == absent.status_code == 204
        else:
            assert hidden.status_code == absent.status_code == 404
            assert hidden.content == absent.content
    events = [e for e in _audit(node) if e["peer_name"] == "token:outsider"]
    assert any(e["action"] == "get" and e["outcome"] == "refused" and e["study_uid"] == study for e in events)
    assert any(e["action"] == "find" and "studies_withheld" in json.dumps(e) for e in events)


def test_a_hidden_study_never_fills_a_qido_page(access_node: Any) -> None:
    """limit/offset page in SQL after the access filter: no offset lets a withheld study through."""
    node, _study, local = access_node
    outsider = create_token(node, "outsider-pages", "PVT001")
    context = "&".join(f"{k}={v}" for k, v in WANG.items())
    seen = get(node, f"/studies?{context}", local).json()
    assert seen  # the study is there, for its own institution
    for offset in range(len(seen) + 2):
        for limit in (1, 2, 1000):
            page = get(node, f"/studies?{context}&limit={limit}&offset={offset}", outsider)
            assert page.status_code == 204 and not page.content, (limit, offset)
        mine = get(node, f"/studies?{context}&limit=1&offset={offset}", local)
        assert (mine.json() if mine.status_code == 200 else []) == seen[offset:offset + 1]
    events = [e for e in _audit(node) if e["peer_name"] == "token:outsider-pages" and e["action"] == "find"]
    assert events and all("studies_withheld" in json.dumps(e) for e in events)


def test_token_for_a_peer_takes_its_institution_and_no_more_than_its_permissions(access_node: Any) -> None:
    node, study, _ = access_node
    added = node.cli("peer", "add", "county", "--aet", "CTY_PACS", "--host", "127.0.0.1", "--port", "104",
                     "--institution", "CTY001", "--permissions", "find")
    assert added.returncode == 0, added.explain()
    mismatch = node.cli("token", "create", "bad", "--peer", "county", "--institution", "PVT001")
    assert mismatch.returncode != 0 and "differs" in mismatch.stderr
    token = create_token_for_peer(node, "county-token", "county")
    assert get(node, "/studies?" + "&".join(f"{k}={v}" for k, v in WANG.items()), token).status_code in (200, 204)
    assert get(node, f"/studies/{study}", token).status_code == 404  # the peer may find, not get
    events = [e for e in _audit(node) if e["peer_name"] == "county"]
    assert any(e["action"] == "get" and e["outcome"] == "refused" and "not permitted" in e["detail"] for e in events)
    assert node.cli("peer", "remove", "county").returncode == 0
    assert get(node, "/studies", token).status_code == 401  # a removed peer's tokens act for nobody


def create_token_for_peer(node: NodeProcess, name: str, peer: str) -> str:
    result = node.cli("token", "create", name, "--peer", peer)
    assert result.returncode == 0, result.explain()
    return result.stdout.strip().splitlines()[-1]


def test_token_without_store_permission_cannot_stow(access_node: Any) -> None:
    import requests

    node, _study, local = access_node
    body = multipart_body([("application/dicom", b"x" * 200)])
    response = requests.post(node.web_url + "/studies", data=body, timeout=30, headers={
        "Authorization": f"Bearer {local}", "Content-Type": 'multipart/related; type="application/dicom"; '
                                                            "boundary=TESTBOUNDARY"})
    assert response.status_code == 403
    assert any(e["action"] == "stow" and e["outcome"] == "refused" and e["peer_name"] == "token:local"
               for e in _audit(node))
