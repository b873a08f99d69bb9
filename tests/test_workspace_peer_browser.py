"""Issue 15's browser test, whole, with a live peer node: Chromium (Debian's, through Playwright's
executable_path, the viewer lane's flags) against two `pacsnode serve` processes on loopback.

provincial (PRV001, PRV_PACS, web on) holds its own samples and the county's CR chest of
patient P0001/CTY001; county (CTY001, CTY_PACS) holds that patient's CT head; each is the
other's peer, and a township peer is registered at a port where nothing listens. Then:

1. a physician logs in, searches P0001, sees the CR chest (this node) and the CT head (from the
   county node) with their statuses and each peer's status (county answered, township not reached);
   accepts the CR chest and declines the CT head with a reason and the consent record;
2. a programme user opens the report page: it shows the rate those two decisions make, counted
   here (eligible: 1 accepted of 1 = 100.0 %; all decisions: 1 of 2 = 50.0 %; one T1 decline);
3. a QC user rejects a provincial study in the browser, and the county node's own C-FIND
   (`pacsnode priors` on the county node) no longer sees it; the report then counts the rejection.

Each page is saved as a screenshot in ``test-artifacts/workspace-peer-browser/`` (gitignored),
and the clicks of each decision are counted and printed (the issue's closing note asks for them).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from support import LOOPBACK, PACSNODE, REPO, SAMPLE_DIR, NodeProcess, free_port
from test_viewer_browser import CHROMIUM, CHROMIUM_ARGS
from workspace_helpers import CR_CHEST, CT_HEAD, PASSWORD, PRV_MR, audit, base

pytestmark = [pytest.mark.browser, pytest.mark.web]
pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra (make venv)")

SHOTS = REPO / "test-artifacts" / "workspace-peer-browser"
USERS = {"dr-wang": "physician", "qc-zhou": "qc", "office-sun": "programme"}


@dataclass
class Region:
    provincial: NodeProcess
    county: NodeProcess


def _ok(result: Any) -> None:
    assert result.returncode == 0, result.explain()


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Region]:
    if not CHROMIUM.exists():
        pytest.fail("Debian chromium is missing at /usr/bin/chromium: run `make browser`")
    folder = tmp_path_factory.mktemp("peerbrowser")
    provincial = NodeProcess(folder / "provincial", aet="PRV_PACS", institution="PRV001").init().enable_web()
    county = NodeProcess(folder / "county", aet="CTY_PACS", institution="CTY001").init()
    _ok(provincial.cli("import", str(SAMPLE_DIR / "PRV001")))
    _ok(provincial.cli("import", str(SAMPLE_DIR / "CTY001" / "P0001" / "20261124_CTY26112404")))  # the CR chest
    _ok(county.cli("import", str(SAMPLE_DIR / "CTY001" / "P0001" / "20260315_CTY26031505")))  # the CT head
    for name, role in USERS.items():
        made = subprocess.run([*PACSNODE, "--home", str(provincial.home), "user", "add", name, "--institution",
                               "PRV001", "--role", role], input=PASSWORD + "\n", capture_output=True, text=True,
                              timeout=60)
        assert made.returncode == 0, made.stderr
    try:
        provincial.start()
        county.start()
        _ok(provincial.cli("peer", "add", "county", "--aet", "CTY_PACS", "--host", LOOPBACK, "--port", str(county.port),
                           "--institution", "CTY001"))
        _ok(provincial.cli("peer", "add", "township", "--aet", "TWN_PACS", "--host", LOOPBACK, "--port",
                           str(free_port()), "--institution", "TWN001"))  # nothing listens there
        _ok(county.cli("peer", "add", "provincial", "--aet", "PRV_PACS", "--host", LOOPBACK, "--port",
                       str(provincial.port), "--institution", "PRV001"))
        yield Region(provincial, county)
    finally:
        provincial.stop()
        county.stop()


@dataclass
class Clicks:
    """Counts what a person does in the page (clicks, ticks, drop-down choices), by task."""

    counts: dict[str, int] = field(default_factory=dict)
    task: str = ""

    def __call__(self, page: Any, how: str, selector: str, value: str = "") -> None:
        self.counts[self.task] = self.counts.get(self.task, 0) + 1
        if how == "click":
            page.click(selector)
        elif how == "check":
            page.check(selector)
        else:
            page.select_option(selector, value)


def _log_in(page: Any, origin: str, user: str, landing: str) -> None:
    page.goto(f"{origin}{landing}")
    assert page.url == f"{origin}/login", "a stranger goes to the login form"
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    page.goto(f"{origin}{landing}")  # each role lands on its own page; the test names the one it needs


def _cell(page: Any, table: str, group: str, column: str) -> str:
    return str(page.inner_text(f'table#{table} tr[data-group="{group}"] td.{column}')).strip()


def _county_sees(region: Region, study: str) -> bool:
    """The county node's own C-FIND to the provincial node (its `priors` engine)."""
    result = region.county.cli("priors", "--patient-id", "P0001", "--issuer", "PRV001", "--json", timeout=120)
    _ok(result)
    answer = json.loads(result.stdout)
    assert "provincial" not in answer["errors"], answer["errors"]
    return study in {p["study_uid"] for p in answer["priors"] if p["source"] == "provincial"}


def test_physician_decides_on_priors_of_two_nodes_report_shows_the_rate_qc_reject_hides_from_peer(
        region: Region) -> None:
    from playwright.sync_api import sync_playwright

    origin = base(region.provincial)
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    clicks = Clicks()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{origin}/login")
            page.screenshot(path=str(SHOTS / "01-login.png"))
            _log_in(page, origin, "dr-wang", "/patients")
            page.fill("input[name=patient_id]", "P0001")
            page.fill("input[name=issuer]", "CTY001")
            page.click("#search button[type=submit]")
            page.wait_for_selector("table#priors")
            page.screenshot(path=str(SHOTS / "02-priors-two-nodes.png"), full_page=True)
            sources = {r.get_attribute("data-study"): r.inner_text() for r in page.query_selector_all("tr.prior")}
            assert set(sources) == {CR_CHEST, CT_HEAD}, sources
            assert "本节点" in sources[CR_CHEST] and "county" in sources[CT_HEAD]  # one prior from each node
            assert "可互认" in page.inner_text(f'tr[data-study="{CR_CHEST}"] .status')
            assert "不符合互认条件" in page.inner_text(f'tr[data-study="{CT_HEAD}"] .status')
            assert "超出有效期" in page.inner_text(f'tr[data-study="{CT_HEAD}"] .failed')
            # a peer's prior: no local pixels, the page says where its images are (see the priors module)
            assert page.inner_text(f'tr[data-study="{CT_HEAD}"] .remote-thumb') == "图像在 county"
            assert page.query_selector(f'tr[data-study="{CR_CHEST}"] img.thumbnail') is not None
            assert "已过期" in page.inner_text(f'tr[data-study="{CT_HEAD}"] .window')
            peers = {r.inner_text().split("\t")[0].split(" ")[0]: r.inner_text() for r in page.query_selector_all("tr.peer")}
            assert "已应答 (1)" in peers["county"] and "未连通" in peers["township"], peers

            clicks.task = "accept"  # from the priors list to a recorded acceptance
            clicks(page, "click", f'tr[data-study="{CR_CHEST}"] a.decide')
            page.wait_for_selector("form#decide")
            clicks(page, "check", "input[name=decision][value=accept]")
            clicks(page, "click", "form#decide button[type=submit]")
            page.wait_for_selector("#saved")
            page.screenshot(path=str(SHOTS / "03-accepted.png"), full_page=True)

            page.goto(f"{origin}/patients?patient_id=P0001&issuer=CTY001")
            clicks.task = "decline"  # from the priors list to a recorded decline with reason and consent
            clicks(page, "click", f'tr[data-study="{CT_HEAD}"] a.decide')
            page.wait_for_selector("form#decide")
            clicks(page, "check", "input[name=decision][value=decline]")
            clicks(page, "check", "input[name=reasons][value=T1]")
            clicks(page, "select", "select[name=informed]", "patient")
            clicks(page, "select", "select[name=method]", "signature")
            clicks(page, "select", "select[name=consent]", "given")
            clicks(page, "click", "form#decide button[type=submit]")
            page.wait_for_selector("#saved")
            assert "T1" in page.inner_text("table#history") and "同意" in page.inner_text("table#history")
            page.screenshot(path=str(SHOTS / "04-declined-peer-prior.png"), full_page=True)

            office = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
            _log_in(office, origin, "office-sun", "/report")
            assert office.url == f"{origin}/report"
            office.wait_for_selector("table#summary")
            office.screenshot(path=str(SHOTS / "05-report.png"), full_page=True)
            # counted from the two decisions above: the CR chest (eligible) accepted, the CT head
            # (NOT_ELIGIBLE, outside its window) declined with T1; both produced by CTY001
            assert [_cell(office, "by-institution", "CTY001", c) for c in ("accepted", "declined", "rate", "rate-all")] \
                == ["1", "1", "100.0%", "50.0%"]
            assert office.inner_text("table#summary td.rate").strip() == "100.0%"
            assert office.inner_text("table#summary td.rate-all").strip() == "50.0%"
            assert _cell(office, "by-modality", "CR", "rate") == "100.0%" and _cell(office, "by-modality", "CT", "rate") == "-"
            assert office.inner_text('table#reasons tr[data-code="T1"] td.count').strip() == "1"
            assert office.query_selector('svg#chart-institution g.bar[data-label^="CTY001"]').get_attribute(
                "data-value") == "1.0"
            assert office.query_selector("svg#chart-reasons g.bar").get_attribute("data-value") == "1"
            office.click("#lang-switch")
            office.wait_for_url(f"{origin}/report")
            assert "Mutual recognition report" in office.inner_text("h1")
            office.screenshot(path=str(SHOTS / "06-report-english.png"), full_page=True)

            assert _county_sees(region, PRV_MR), "before QC: the county's C-FIND sees the provincial MR"
            qc = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
            _log_in(qc, origin, "qc-zhou", "/qc")
            qc.goto(f"{origin}/qc?status=all")
            qc.click(f'tr.qc-row[data-study="{PRV_MR}"] a.review')
            qc.wait_for_selector("form#qc-reject")
            qc.select_option("form#qc-reject select[name=reason]", "113001")
            qc.fill("form#qc-reject input[name=note]", "运动伪影")
            qc.click("form#qc-reject button[type=submit]")
            qc.wait_for_selector("#saved")
            assert "已退回" in qc.inner_text("#qc-status")
            qc.screenshot(path=str(SHOTS / "07-qc-rejected.png"), full_page=True)
            assert not _county_sees(region, PRV_MR), "a study rejected in QC must vanish from the peer's C-FIND"

            office.goto(f"{origin}/report")
            # the provincial node's 4 studies were accepted on import; one of them is now rejected: 3 of 4
            assert [_cell(office, "qc", "PRV001", c) for c in ("qc-accepted", "qc-rejected", "pass-rate")] == \
                ["3", "1", "75.0%"]
            assert office.query_selector('svg#chart-qc g.bar[data-label^="PRV001"]').get_attribute("data-value") == "0.75"
            office.screenshot(path=str(SHOTS / "08-report-after-qc.png"), full_page=True)
        finally:
            browser.close()
    print(f"\nscreenshots: {SHOTS}\nclicks per decision: {clicks.counts}")
    assert clicks.counts == {"accept": 3, "decline": 7}
    events = audit(region.provincial)
    decided = {e["study_uid"]: e["outcome"] for e in events if e["action"] == "recognition-decision"}
    assert decided == {CR_CHEST: "accept", CT_HEAD: "decline"}
    assert [e for e in events if e["action"] == "web-report" and e["peer_name"] == "user:office-sun"]
    assert [e for e in events if e["action"] == "web-qc" and e["outcome"] == "reject" and e["study_uid"] == PRV_MR]
    assert sorted(p.name for p in SHOTS.iterdir()) == [
        "01-login.png", "02-priors-two-nodes.png", "03-accepted.png", "04-declined-peer-prior.png", "05-report.png",
        "06-report-english.png", "07-qc-rejected.png", "08-report-after-qc.png"]
    assert all(re.match(rb"\x89PNG", p.read_bytes()[:4]) for p in SHOTS.iterdir())
