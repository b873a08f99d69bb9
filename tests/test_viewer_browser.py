"""OHIF in a real browser: log in, the study list, the CT study rendered, a GB18030 name as characters.

Debian's headless Chromium (/usr/bin/chromium) driven by Playwright through ``executable_path``;
Playwright's own browser download is never used. WebGL runs on SwiftShader. The image check is a
pixel readback inside the page (``getImageData`` of the viewport canvas, which cornerstone fills
from its WebGL renderer), not a screenshot: screenshots of WebGL canvases can read black. A
screenshot is still saved for reviewers (its path is printed).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from support import PACSNODE, REPO, NodeProcess

pytestmark = [pytest.mark.browser, pytest.mark.web]
pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra (make venv)")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run"]
SAMPLES = REPO / "sample_dicom"
CT_STUDY = "1.2.826.0.1.3680043.10.1078.1.8"  # PRV001/P0002, 王^小明 (GB18030), two CT series
USER, PASSWORD = "dr-wang", "browser test password 42"

# In the page: the largest visible canvas's pixels, read back and summarised.
READBACK = """() => {
  const canvases = Array.from(document.querySelectorAll('canvas')).filter(c => c.width > 100 && c.height > 100);
  if (!canvases.length) return null;
  const c = canvases.sort((a, b) => b.width * b.height - a.width * a.height)[0];
  const ctx = c.getContext('2d');
  if (!ctx) return {error: 'no 2d context', cls: c.className};
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  let lit = 0; const levels = new Set();
  for (let i = 0; i < d.length; i += 4) {
    const v = Math.max(d[i], d[i + 1], d[i + 2]);
    if (v > 24) lit++;
    levels.add(v >> 3);
  }
  return {cls: c.className, width: c.width, height: c.height, lit: lit / (d.length / 4), levels: levels.size};
}"""


@pytest.fixture(scope="module")
def viewer_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    if not CHROMIUM.exists():
        pytest.fail("Debian chromium is missing at /usr/bin/chromium: run `make browser`")
    fetched = subprocess.run([sys.executable, str(REPO / "scripts" / "fetch_ohif.py")], capture_output=True,
                             text=True, timeout=300)
    assert fetched.returncode == 0, f"make viewer failed: {fetched.stderr}"
    node = NodeProcess(tmp_path_factory.mktemp("viewer") / "home", institution="PRV001")
    node.init()
    node.enable_web()
    imported = node.cli("import", str(SAMPLES))
    assert imported.returncode == 0, imported.explain()
    added = subprocess.run([*PACSNODE, "--home", str(node.home), "user", "add", USER, "--institution", "PRV001",
                            "--role", "physician"], input=PASSWORD + "\n", capture_output=True, text=True,
                           timeout=60)
    assert added.returncode == 0, added.stderr
    node.start()
    try:
        yield node
    finally:
        node.stop()


def _origin(node: NodeProcess) -> str:
    return f"http://127.0.0.1:{node.web_port}"


def test_viewer_is_only_served_after_login(viewer_node: NodeProcess) -> None:
    base = _origin(viewer_node)
    page = requests.get(f"{base}/viewer/", headers={"Accept": "text/html"}, allow_redirects=False, timeout=30)
    assert page.status_code == 303 and page.headers["location"] == "/login?next=/viewer/"
    asset = requests.get(f"{base}/viewer/app-config.js", timeout=30)
    assert asset.status_code == 401 and "dicom-web" not in asset.text
    forged = requests.get(f"{base}/viewer/app-config.js", cookies={"pacsnode_session": "forged"}, timeout=30)
    assert forged.status_code == 401
    audit = json.loads(viewer_node.cli("audit", "--json", "--limit", "1000").stdout)
    refused = [e for e in audit if e["action"] == "web-auth" and e["outcome"] == "refused"]
    assert any("viewer without a valid session" in json.dumps(e["detail"], ensure_ascii=False) for e in refused)


def test_viewer_files_never_leave_the_build(viewer_node: NodeProcess) -> None:
    session = requests.Session()
    login = session.post(f"{_origin(viewer_node)}/login", data={"username": USER, "password": PASSWORD}, timeout=30)
    assert login.status_code == 200
    cookie = login.cookies.get("pacsnode_session")
    for probe in ("..%2f..%2f..%2fetc%2fpasswd", "%2e%2e/%2e%2e/pacsnode.toml", "..%5cindex.sqlite"):
        answer = requests.get(f"{_origin(viewer_node)}/viewer/{probe}", cookies={"pacsnode_session": cookie},
                              timeout=30)
        assert "root:" not in answer.text and "[node]" not in answer.text, probe
        assert answer.status_code == 404 or answer.text.lower().startswith("<!doctype html>"), probe
    config = requests.get(f"{_origin(viewer_node)}/viewer/app-config.js", cookies={"pacsnode_session": cookie},
                          timeout=30)
    assert config.status_code == 200 and "window.location.origin + '/dicom-web'" in config.text
    assert "frame-ancestors 'none'" in config.headers["content-security-policy"]


def _launch(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)


def test_ohif_logs_in_lists_and_renders_the_ct_study(viewer_node: NodeProcess) -> None:
    from playwright.sync_api import sync_playwright

    base = _origin(viewer_node)
    shots = Path(tempfile.mkdtemp(prefix="pacsnode-viewer-"))
    started = time.monotonic()
    with sync_playwright() as playwright:
        browser = _launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{base}/viewer/")
            assert page.url == f"{base}/login?next=/viewer/", "the viewer must send a stranger to the login form"
            page.fill("input[name=username]", USER)
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/viewer/**")  # the form sends a person on to the viewer
            cookie = next(c for c in page.context.cookies() if c["name"] == "pacsnode_session")
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["secure"]
            # OHIF's study list, filled by QIDO-RS with the session cookie
            name = page.get_by_text("王, 小明").first
            name.wait_for(timeout=30_000)
            shown = name.evaluate("e => e.textContent")
            assert "王" in shown and "小明" in shown and "?" not in shown, shown
            width = name.evaluate("e => { const r = document.createRange(); r.selectNodeContents(e);"
                                  " return r.getBoundingClientRect().width; }")
            assert width > 20, "the name has no rendered width: glyphs missing"
            assert page.get_by_text("胸部CT增强").count() >= 1
            page.screenshot(path=str(shots / "study-list.png"))

            page.goto(f"{base}/viewer/viewer?StudyInstanceUIDs={CT_STUDY}")
            stats = _wait_for_image(page)
            page.screenshot(path=str(shots / "ct-viewer.png"))
            print(f"\nviewer screenshots: {shots}")
        finally:
            browser.close()
    assert stats["lit"] > 0.05 and stats["levels"] >= 4, stats
    assert time.monotonic() - started < 90


def _wait_for_image(page: Any, timeout: float = 40.0) -> dict[str, Any]:
    """Poll the viewport canvas until it holds an image (many lit pixels, several grey levels)."""
    deadline = time.monotonic() + timeout
    stats: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        stats = page.evaluate(READBACK)
        if stats and "error" not in stats and stats["lit"] > 0.05 and stats["levels"] >= 4:
            return stats
        time.sleep(0.5)
    raise AssertionError(f"the viewport canvas never held the CT image: {stats}")
