"""The programme report (issue 15 item 5) over HTTP against a real `pacsnode serve`.

Decisions are recorded through the physician's JSON door, QC through the CLI; then the report's
page, its SVG charts, its downloads and its JSON twins are read as the programme office would.
Expected numbers are counted here from the decisions the test made, not read back from the
product; the twins are compared with the CLI (`report recognition --json`, `qc report --json`).
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import pytest
import requests

from support import PACSNODE, REPO, NodeProcess
from workspace_helpers import CR_CHEST, CT_HEAD, PASSWORD, audit, base, login, workspace_node

pytestmark = [pytest.mark.web]
PRV_CT = "1.2.826.0.1.3680043.10.1078.1.7"  # PRV001/P0001 CT head


def add_user(node: NodeProcess, name: str, institution: str, role: str) -> None:
    result = subprocess.run([*PACSNODE, "--home", str(node.home), "user", "add", name, "--institution", institution,
                             "--role", role], input=PASSWORD + "\n", capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    node = workspace_node(tmp_path_factory.mktemp("wsreport") / "home")
    try:
        add_user(node, "office-sun", "PRV001", "programme")
        add_user(node, "office-cty", "CTY001", "programme")
        add_user(node, "boss-li", "PRV001", "admin")
        doctor = login(node, "dr-wang")
        shown = requests.get(f"{base(node)}/api/patients", params={"patient_id": "P0001", "issuer": "CTY001"},
                             cookies=doctor, timeout=120)
        assert shown.status_code == 200, shown.text
        token = requests.get(f"{base(node)}/api/csrf", cookies=doctor, timeout=30).json()["csrf_token"]
        for body in ({"study_uid": CR_CHEST, "decision": "accept"},
                     {"study_uid": CT_HEAD, "decision": "decline", "reasons": ["T1"], "consent": "given",
                      "informed": "patient", "method": "signature"}):
            made = requests.post(f"{base(node)}/api/decisions", json=body, cookies=doctor, timeout=30,
                                 headers={"X-CSRF-Token": token})
            assert made.status_code == 200, made.text
        rejected = node.cli("qc", "reject", PRV_CT, "--reason", "113001", "--reviewer", "qc-zhou")
        assert rejected.returncode == 0, rejected.explain()
        yield node
    finally:
        node.stop()


def _cli_json(node: NodeProcess, *args: str) -> Any:
    result = node.cli(*args, "--json")
    assert result.returncode == 0, result.explain()
    return json.loads(result.stdout)


def _cells(html: str, table: str, group: str) -> dict[str, str]:
    """The cells (by class) of one group's row of one table."""
    block = re.search(rf'<table id="{table}">(.*?)</table>', html, re.S)
    assert block, f"no table {table}"
    row = re.search(rf'<tr class="group" data-group="{re.escape(group)}">(.*?)</tr>', block.group(1), re.S)
    assert row, f"no row {group} in {table}"
    return {m[0]: m[1].strip() for m in re.findall(r'<td class="([a-z-]+)">(.*?)</td>', row.group(1), re.S)}


def _pct_of(accepted: int, not_accepted: int) -> str:
    return f"{100 * accepted / (accepted + not_accepted):.1f}%"


def test_report_page_shows_the_rate_the_decisions_make_with_svg_charts(ws: NodeProcess) -> None:
    office = login(ws, "office-sun")
    page = requests.get(f"{base(ws)}/report", cookies=office, timeout=60)
    assert page.status_code == 200, page.text
    html = page.text
    assert "检查结果互认统计报表" in html and "互认率" in html  # Chinese first
    # one eligible prior accepted (CR chest), one NOT_ELIGIBLE declined with T1 (CT head), both by CTY001
    assert _cells(html, "by-institution", "CTY001")["accepted"] == "1"
    assert _cells(html, "by-institution", "CTY001")["declined"] == "1"
    assert _cells(html, "by-institution", "CTY001")["rate"] == "100.0%"  # eligible: 1 accepted of 1
    assert _cells(html, "by-institution", "CTY001")["rate-all"] == "50.0%"  # all decisions: 1 of 2
    assert _cells(html, "by-modality", "CR")["rate"] == "100.0%"
    assert _cells(html, "by-modality", "CT")["rate"] == "-"  # its only decision was on a NOT_ELIGIBLE prior
    month = datetime.now(timezone.utc).strftime("%Y-%m")
    assert _cells(html, "by-month", month)["rate-all"] == "50.0%"
    assert re.search(r'<tr class="reason" data-code="T1">.*?<td class="count">1</td>', html, re.S)
    qc_prv = _cells(html, "qc", "PRV001")  # the rejected PRV001 CT head
    assert qc_prv["qc-rejected"] == "1" and qc_prv["pass-rate"] == _pct_of(int(qc_prv["qc-accepted"]), 1)
    charts = re.findall(r'<svg [^>]*id="(chart-[a-z]+)"', html)
    assert charts == ["chart-month", "chart-institution", "chart-modality", "chart-item", "chart-reasons", "chart-qc"]
    bar = re.search(r'<svg [^>]*id="chart-institution".*?</svg>', html, re.S)
    assert bar and 'data-label="CTY001' in bar.group(0) and 'data-value="1.0"' in bar.group(0)
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    english = requests.get(f"{base(ws)}/report", cookies={**office, "pacsnode_lang": "en"}, timeout=60)
    assert "Mutual recognition report" in english.text and "Recognition rate over time" in english.text


def test_json_twin_is_what_report_recognition_json_prints(ws: NodeProcess) -> None:
    office = login(ws, "office-sun")
    today = datetime.now(timezone.utc).date()
    for by in ("institution", "modality", "item", "month", "day", "all"):
        api = requests.get(f"{base(ws)}/api/report", params={"by": by}, cookies=office, timeout=30)
        assert api.status_code == 200 and api.json() == _cli_json(ws, "report", "recognition", "--by", by), by
    window = {"from": (today - timedelta(days=1)).isoformat(), "to": today.isoformat()}
    api = requests.get(f"{base(ws)}/api/report", params={**window, "by": "item"}, cookies=office, timeout=30).json()
    assert api == _cli_json(ws, "report", "recognition", "--by", "item", "--from", window["from"], "--to", window["to"])
    qc = requests.get(f"{base(ws)}/api/report/qc", params=window, cookies=office, timeout=30).json()
    assert qc == _cli_json(ws, "qc", "report", "--from", window["from"],
                           "--to", (today + timedelta(days=1)).isoformat())  # qc report's --to is exclusive
    later = {"from": (today + timedelta(days=1)).isoformat()}  # nothing decided after today
    assert requests.get(f"{base(ws)}/api/report", params=later, cookies=office, timeout=30).json() == []
    total = _cli_json(ws, "report", "recognition", "--by", "all")  # the new groupings, counted here
    assert [(r["all"], r["accepted"], r["declined"], r["recognition_rate"], r["rate_all"], r["declined_by_reason"])
            for r in total] == [("all", 1, 1, 1.0, 0.5, {"T1": 1})]
    days = _cli_json(ws, "report", "recognition", "--by", "day")
    assert [(r["day"], r["accepted"], r["declined"]) for r in days] == [(today.isoformat(), 1, 1)]
    whole = requests.get(f"{base(ws)}/report.json", cookies=office, timeout=30)
    assert whole.headers["content-disposition"].startswith("attachment")
    doc = whole.json()
    assert doc["recognition"]["institution"] == _cli_json(ws, "report", "recognition")
    assert doc["declines_by_reason"] == {"T1": 1}


def test_csv_downloads_are_the_cli_csv(ws: NodeProcess) -> None:
    office = login(ws, "office-sun")
    for by in ("institution", "modality", "month"):
        got = requests.get(f"{base(ws)}/report.csv", params={"by": by}, cookies=office, timeout=30)
        assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
        cli = ws.cli("report", "recognition", "--by", by, "--csv").stdout
        assert list(csv.reader(io.StringIO(got.content.decode("utf-8-sig")))) == list(csv.reader(io.StringIO(cli)))
    reasons = requests.get(f"{base(ws)}/report.csv", params={"by": "reasons"}, cookies=office, timeout=30)
    assert list(csv.reader(io.StringIO(reasons.content.decode("utf-8-sig")))) == [["reason", "declined"], ["T1", "1"]]
    qc = requests.get(f"{base(ws)}/report.csv", params={"by": "qc"}, cookies=office, timeout=30)
    rows = list(csv.DictReader(io.StringIO(qc.content.decode("utf-8-sig"))))
    assert {r["institution"]: r["rejected"] for r in rows}["PRV001"] == "1"


@pytest.mark.parametrize("query", [{"from": "2026-13-01"}, {"to": "yesterday"}, {"from": "2026-11-30", "to": "2026-11-01"},
                                   {"from": "9" * 5000}, {"period": "decade"}, {"from": "2026-02-30"}],
                         ids=["month-13", "word", "from-after-to", "huge", "bad-period", "no-such-day"])
def test_bad_filters_are_refused_in_the_form_and_audited(ws: NodeProcess, query: dict[str, str]) -> None:
    office = login(ws, "office-sun")
    page = requests.get(f"{base(ws)}/report", params=query, cookies=office, timeout=30)
    assert page.status_code == 400 and 'id="error"' in page.text and 'id="summary"' not in page.text
    api = requests.get(f"{base(ws)}/api/report", params=query, cookies=office, timeout=30)
    assert api.status_code == 400 and "error" in api.json()
    refused = [e for e in audit(ws) if e["action"] == "workspace" and "report filter" in e["detail"]]
    assert refused and all(len(e["detail"]) < 1000 for e in refused)


def test_dates_as_users_write_them_filter_the_same(ws: NodeProcess) -> None:
    office = login(ws, "office-sun")
    today = datetime.now(timezone.utc).date()
    iso = requests.get(f"{base(ws)}/api/report", params={"from": today.isoformat(), "to": today.isoformat()},
                       cookies=office, timeout=30).json()
    assert iso and iso[0]["accepted"] == 1
    for written in (f"{today.year}年{today.month}月{today.day}日", today.strftime("%Y/%m/%d"), today.strftime("%Y%m%d")):
        got = requests.get(f"{base(ws)}/api/report", params={"from": written, "to": written}, cookies=office, timeout=30)
        assert got.status_code == 200 and got.json() == iso, written
    page = requests.get(f"{base(ws)}/report", params={"from": today.isoformat()}, cookies=office, timeout=30)
    assert f"{today.year}年{today.month}月{today.day}日" in page.text  # shown as the users write it


def test_only_programme_and_admin_users_of_this_institution_read_the_report(ws: NodeProcess) -> None:
    for user in ("dr-wang", "qc-zhou", "office-cty"):
        cookies = login(ws, user)
        for path in ("/report", "/report.csv", "/report.json", "/api/report", "/api/report/qc"):
            assert requests.get(f"{base(ws)}{path}", cookies=cookies, timeout=30).status_code == 403, (user, path)
    admin = login(ws, "boss-li")
    assert requests.get(f"{base(ws)}/report", cookies=admin, timeout=60).status_code == 200
    stranger = requests.get(f"{base(ws)}/report", allow_redirects=False, timeout=30)
    assert stranger.status_code == 303 and stranger.headers["location"] == "/login"
    assert requests.get(f"{base(ws)}/api/report", timeout=30).status_code == 401
    refused = {e["peer_name"] for e in audit(ws) if e["action"] == "workspace" and "may not use" in e["detail"]}
    assert {"user:dr-wang", "user:qc-zhou"} <= refused
    assert [e for e in audit(ws) if e["peer_name"] == "user:office-cty" and "has no workspace" in e["detail"]]
    shown = [e for e in audit(ws) if e["action"] == "web-report"]
    assert {e["peer_name"] for e in shown} == {"user:office-sun", "user:boss-li"}


def test_language_switch_returns_to_the_report(ws: NodeProcess) -> None:
    office = login(ws, "office-sun")
    host = base(ws).split("://", 1)[1]
    back = requests.get(f"{base(ws)}/lang", params={"to": "en"}, cookies=office, allow_redirects=False, timeout=30,
                        headers={"Referer": f"{base(ws)}/report?from=2026-11-01"})
    assert back.status_code == 303 and back.headers["location"] == "/report?from=2026-11-01"  # same page, same filter
    elsewhere = requests.get(f"{base(ws)}/lang", params={"to": "en"}, cookies=office, allow_redirects=False, timeout=30,
                             headers={"Referer": "http://evil.example/report", "Host": host})
    assert elsewhere.headers["location"] == "/login"  # not back to another site; the login form sends her on
    unknown = requests.get(f"{base(ws)}/lang", params={"to": "en"}, cookies=office, allow_redirects=False, timeout=30,
                           headers={"Referer": f"{base(ws)}//evil.example/x?next=http://evil.example"})
    assert unknown.headers["location"] == "/login"
    onwards = requests.get(f"{base(ws)}/login", cookies=office, allow_redirects=False, timeout=30)
    assert onwards.status_code == 303 and onwards.headers["location"] == "/report"
    html = requests.get(f"{base(ws)}/report", cookies={**office, "pacsnode_lang": "en"}, timeout=30).text
    assert 'id="nav-report"' in html and "Mutual recognition report" in html


# -- without a server: the pieces the page is made of -----------------------------------------------
def test_every_message_of_the_report_page_is_in_both_catalogs() -> None:
    from pacsnode.web import i18n
    from pacsnode.web.i18n_report import REPORT_ZH

    templates = REPO / "pacsnode" / "web" / "templates"
    used = set(re.findall(r"t\('([a-z_.]+)'\)", (templates / "report.html").read_text(encoding="utf-8")))
    used |= {"nav.report", "report.over_time", "report.no_decision", "report.none", "report.bad_date",
             "report.bad_range", "report.bad_period", *(f"report.by_{by}" for by in ("institution", "modality", "item")),
             *(f"report.period.{p}" for p in ("month", "day"))}
    assert not used - set(i18n.ZH) and not used - set(i18n.EN), (used - set(i18n.ZH), used - set(i18n.EN))
    assert set(REPORT_ZH) <= set(i18n.EN), "every Chinese message has its English twin"


def test_csv_cells_that_a_spreadsheet_would_run_are_defused() -> None:
    from pacsnode.web.programme import safe_csv

    got = list(csv.reader(io.StringIO(safe_csv('institution,shown\r\n=HYPERLINK("x"),1\r\n+1,2\r\n@SUM(A1),3\r\nCTY001,4\r\n'))))
    assert got == [["institution", "shown"], ["'=HYPERLINK(\"x\")", "1"], ["'+1", "2"], ["'@SUM(A1)", "3"], ["CTY001", "4"]]


def test_chart_labels_from_dicom_headers_cannot_inject_markup() -> None:
    from pacsnode.web.svg_charts import Bar, bar_chart, column_chart

    hostile = '</text><script>alert(1)</script><text x="'
    for chart in (bar_chart("c", "t", [Bar(hostile, 0.5, "50%")], 1.0), column_chart("c", "t", [Bar(hostile, None, "")])):
        assert "<script" not in chart and "&lt;script&gt;" in chart
