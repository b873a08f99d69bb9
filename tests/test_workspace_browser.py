"""The physician's path in a real browser (issue 15): log in, search P0001, see the priors with
their statuses and the unreachable peer, accept one, decline another with reasons and consent;
a refused decision shows why; a POST without the CSRF token is refused; a physician of another
institution is refused by URL. Debian's /usr/bin/chromium through Playwright's executable_path
(the viewer lane's harness: same binary and flags). A screenshot of each page is saved in
``test-artifacts/workspace-browser/`` (gitignored) for reviewers (the QC queue and a study's contact
sheet too).
"""

from __future__ import annotations

import json
import shutil
import time
from typing import Any, Iterator

import pytest

from support import REPO, NodeProcess
from test_viewer_browser import CHROMIUM, CHROMIUM_ARGS
from workspace_helpers import CR_CHEST, CT_HEAD, PASSWORD, audit, base, workspace_node

pytestmark = [pytest.mark.browser, pytest.mark.web]
pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra (make venv)")

SHOTS = REPO / "test-artifacts" / "workspace-browser"


@pytest.fixture(scope="module")
def ws_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    if not CHROMIUM.exists():
        pytest.fail("Debian chromium is missing at /usr/bin/chromium: run `make browser`")
    node = workspace_node(tmp_path_factory.mktemp("wsbrowser") / "home")
    try:
        yield node
    finally:
        node.stop()


def _log_in(page: Any, origin: str, user: str) -> None:
    page.goto(f"{origin}/patients")
    assert page.url == f"{origin}/login", "a stranger goes to the login form"
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def _decide(page: Any, origin: str, study: str) -> None:
    page.goto(f"{origin}/patients?patient_id=P0001&issuer=CTY001")
    page.click(f'tr[data-study="{study}"] a.decide')
    page.wait_for_selector("form#decide")


def test_physician_searches_accepts_one_prior_and_declines_another_with_consent(
        ws_node: NodeProcess) -> None:
    from playwright.sync_api import sync_playwright

    origin = base(ws_node)
    shots = SHOTS
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    started = time.monotonic()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{origin}/login")  # the form in Chinese; a wrong password is refused on it, in words
            assert page.inner_text("h1") == "登录" and "用户名" in page.inner_text("form#login")
            page.fill("input[name=username]", "dr-wang")
            page.fill("input[name=password]", "not the password")
            page.click("button[type=submit]")
            page.wait_for_selector("#error")
            assert page.inner_text("#error") == "用户名或密码错误。"
            page.screenshot(path=str(shots / "01-login.png"))
            _log_in(page, origin, "dr-wang")

            page.goto(f"{origin}/patients")  # the search form (Chinese by default)
            page.fill("input[name=patient_id]", "P0001")
            page.fill("input[name=issuer]", "CTY001")
            page.click("#search button[type=submit]")
            page.wait_for_selector("table#priors")
            page.screenshot(path=str(shots / "02-priors.png"), full_page=True)
            statuses = {row.get_attribute("data-study"): row.query_selector(".status").inner_text()
                        for row in page.query_selector_all("tr.prior")}
            assert "可互认" in statuses[CR_CHEST] and "不符合互认条件" in statuses[CT_HEAD], statuses
            assert "超出有效期" in page.inner_text(f'tr[data-study="{CT_HEAD}"] .failed')
            assert "未连通" in page.inner_text("table#peers")  # the county peer, not reached

            _decide(page, origin, CR_CHEST)  # accept the eligible one: radio, submit
            page.check("input[name=decision][value=accept]")
            page.click("form#decide button[type=submit]")
            page.wait_for_selector("#saved")
            page.screenshot(path=str(shots / "03-accepted.png"), full_page=True)

            _decide(page, origin, CT_HEAD)  # decline without a reason first: refused, why shown
            page.check("input[name=decision][value=decline]")
            page.click("form#decide button[type=submit]")
            assert "不认可须至少选择一项原因" in page.inner_text("#error")  # why, in the user's language
            page.screenshot(path=str(shots / "04-refused.png"), full_page=True)
            page.check("input[name=reasons][value=T1]")  # the form kept "decline"
            page.select_option("select[name=informed]", "patient")
            page.select_option("select[name=method]", "signature")
            page.select_option("select[name=consent]", "given")
            page.fill("textarea[name=note]", "超出30天，患者同意复查")
            page.click("form#decide button[type=submit]")
            page.wait_for_selector("#saved")
            history = page.inner_text("table#history")
            assert "T1 超出有效期" in history and "同意" in history and "书面签字" in history and "不认可" in history
            page.screenshot(path=str(shots / "05-declined.png"), full_page=True)

            _decide(page, origin, CR_CHEST)  # the same form with its CSRF field removed
            page.evaluate("document.querySelector('form#decide input[name=csrf_token]').remove()")
            page.check("input[name=decision][value=accept]")
            with page.expect_response(f"{origin}/decide") as posted:
                page.click("form#decide button[type=submit]")
            assert posted.value.status == 403, "a POST without the CSRF token must be refused"
            page.goto(f"{origin}/patients")

            page.click("#lang-switch")
            page.wait_for_url(f"{origin}/patients")
            assert "Patient prior results" in page.inner_text("h1")
            page.screenshot(path=str(shots / "06-english.png"))

            other = browser.new_context().new_page()  # a physician of CTY001 guessing a URL
            _log_in(other, origin, "dr-li")
            refused = other.goto(f"{origin}/decide?study={CR_CHEST}")
            assert refused is not None and refused.status == 403
            assert "其他机构" in other.inner_text("#error")  # says why, in words
            other.screenshot(path=str(shots / "07-other-institution.png"))

            qc = browser.new_context().new_page()  # QC review: the queue, a study's checks and contact sheet
            _log_in(qc, origin, "qc-zhou")
            qc.goto(f"{origin}/qc?status=all")
            qc.screenshot(path=str(shots / "08-qc-queue.png"), full_page=True)
            qc.click(f'tr.qc-row[data-study="{CR_CHEST}"] a.review')
            deadline = time.monotonic() + 20  # the sheet is rendered on demand (wait_for_function needs eval: CSP)
            while not qc.evaluate("document.querySelector('#preview').naturalWidth") and time.monotonic() < deadline:
                time.sleep(0.3)
            assert qc.evaluate("document.querySelector('#preview').naturalWidth") > 0, "no contact sheet"
            qc.screenshot(path=str(shots / "09-qc-study.png"), full_page=True)
        finally:
            browser.close()
    print(f"\nworkspace screenshots: {shots}")
    print(f"the browser path took {time.monotonic() - started:.0f} s")  # speed lives in bench/, not here
    events = audit(ws_node)
    decided = {e["study_uid"]: e["outcome"] for e in events if e["action"] == "recognition-decision"}
    assert decided == {CR_CHEST: "accept", CT_HEAD: "decline"}
    assert [e for e in events if e["action"] == "workspace" and "CSRF" in json.dumps(e["detail"])]
    assert [e for e in events if e["action"] == "workspace" and e["peer_name"] == "user:dr-li"]
    assert sorted(p.name for p in shots.iterdir()) == [f"0{i}-{n}.png" for i, n in enumerate(
        ["login", "priors", "accepted", "refused", "declined", "english", "other-institution", "qc-queue", "qc-study"],
        1)]
