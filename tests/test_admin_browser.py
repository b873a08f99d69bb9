"""The admin pages in a real browser (issue 15 item 6): an admin logs in, adds a peer through the
form (a refused one first, with the reason in the form), creates a token shown once, looks at the
audit trail and node health, switches to English, and logs out with the menu's button. Debian's
chromium through Playwright (the viewer lane's harness). Screenshots of each page are saved in
``test-artifacts/admin-browser/`` (gitignored), for reviewers.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Iterator

import pytest

from support import PACSNODE, REPO, NodeProcess
from test_viewer_browser import CHROMIUM, CHROMIUM_ARGS
from workspace_helpers import PASSWORD, audit, base, workspace_node

pytestmark = [pytest.mark.browser, pytest.mark.web]
pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra (make venv)")

SHOTS = REPO / "test-artifacts" / "admin-browser"


@pytest.fixture(scope="module")
def admin_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    if not CHROMIUM.exists():
        pytest.fail("Debian chromium is missing at /usr/bin/chromium: run `make browser`")
    home = tmp_path_factory.mktemp("adminbrowser") / "home"
    node = workspace_node(home)
    added = subprocess.run([*PACSNODE, "--home", str(home), "user", "add", "root-admin", "--institution", "PRV001",
                            "--role", "admin"], input=PASSWORD + "\n", capture_output=True, text=True, timeout=60)
    assert added.returncode == 0, added.stderr
    try:
        yield node
    finally:
        node.stop()


def test_admin_adds_a_peer_creates_a_token_reads_audit_and_health_and_logs_out(
        admin_node: NodeProcess) -> None:
    from playwright.sync_api import sync_playwright

    origin = base(admin_node)
    shots = SHOTS
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{origin}/login")
            page.fill("input[name=username]", "root-admin")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_load_state()
            page.goto(f"{origin}/admin")
            assert page.url == f"{origin}/admin/health"
            assert page.inner_text("#listener") == "正在接受连接"
            page.screenshot(path=str(shots / "01-admin-health.png"), full_page=True)

            page.goto(f"{origin}/admin/peers")
            page.fill("#peer-form input[name=name]", "city")
            page.fill("#peer-form input[name=aet]", "CTY_PACS")  # the county peer's AE title: refused
            page.fill("#peer-form input[name=host]", "127.0.0.1")
            page.fill("#peer-form input[name=port]", "11190")
            page.select_option("#peer-form select[name=institution]", "CTY001")
            page.click("#peer-form button[type=submit]")
            page.wait_for_selector("#error")
            assert "AE title 'CTY_PACS' is already registered" in page.inner_text("#error")
            page.screenshot(path=str(shots / "02-admin-peer-refused.png"), full_page=True)
            page.fill("#peer-form input[name=aet]", "CITY_PACS")
            page.click("#peer-form button[type=submit]")
            page.wait_for_selector("#done")
            assert page.query_selector('tr.peer[data-name="city"]') is not None
            page.click('tr.peer[data-name="city"] a')  # edit: the form comes filled, the name fixed
            assert page.input_value("#peer-form input[name=aet]") == "CITY_PACS"
            page.fill("#peer-form input[name=port]", "70000")  # peer add's validation refuses it in the form
            page.click("#peer-form button[type=submit]")
            page.wait_for_selector("#error")
            page.fill("#peer-form input[name=port]", "11191")
            page.click("#peer-form button[type=submit]")
            page.wait_for_selector("#done")
            assert "11191" in page.inner_text('tr.peer[data-name="city"]')
            page.screenshot(path=str(shots / "03-admin-peers.png"), full_page=True)

            page.goto(f"{origin}/admin/tokens")
            page.fill("#token-form input[name=name]", "ohif-ward")
            page.select_option("#token-form select[name=institution]", "PRV001")
            page.click("#token-form button[type=submit]")
            page.wait_for_selector("#secret")
            token = page.inner_text(".secret-token")
            assert token.startswith("pn_")
            page.screenshot(path=str(shots / "04-admin-token-once.png"), full_page=True)

            page.goto(f"{origin}/admin/users")
            page.screenshot(path=str(shots / "05-admin-users.png"), full_page=True)
            page.goto(f"{origin}/admin/audit?actor=user:root-admin&action=web-admin")
            assert page.query_selector_all("tr.event")
            page.screenshot(path=str(shots / "06-admin-audit.png"), full_page=True)
            page.click("#lang-switch")
            page.wait_for_url(f"{origin}/admin/audit?actor=user:root-admin&action=web-admin")  # back to the same page
            page.goto(f"{origin}/admin/health")
            assert page.inner_text("#listener") == "accepting"
            page.screenshot(path=str(shots / "07-admin-health-en.png"), full_page=True)

            page.click("nav form button[type=submit]")  # log out: the menu's form carries the CSRF token
            page.wait_for_load_state()
            assert page.url == f"{origin}/login"
        finally:
            browser.close()
    peers = json.loads(admin_node.cli("peer", "list", "--json").stdout)
    assert "city" in {p["name"] for p in peers}
    events = audit(admin_node)
    assert [e for e in events if e["action"] == "web-logout" and e["peer_name"] == "user:root-admin"]
    assert token not in json.dumps(events)
    for shot in sorted(shots.iterdir()):
        print(f"screenshot: {shot}")
