"""The recognition and QC commands through click's CliRunner: help with examples, one-line
errors with a non-zero exit and no traceback, stable JSON keys, and the happy paths.

A county node home (``init --institution CTY001``, the county's sample studies imported) is
built once per module; every test works on a copy of it.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import socket
from pathlib import Path
from typing import Any, Iterator

import click
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from pacsnode.cli import main
from pacsnode.recognition.advice import CONDITION_CODES
from support import SAMPLE_DIR, free_port

pytestmark = pytest.mark.skipif(not (SAMPLE_DIR / "CTY001").is_dir(), reason="sample_dicom/ is not generated")

UID_ROOT = "1.2.826.0.1.3680043.10.1078.1."
CT_CHEST, CR_CHEST, DX_CHEST, CT_HEAD = UID_ROOT + "2", UID_ROOT + "4", UID_ROOT + "13", UID_ROOT + "5"
UNKNOWN = UID_ROOT + "999"

NEW_COMMANDS = [
    ("priors",), ("recognition", "explain"), ("recognition", "decide"), ("share", "grant"), ("share", "revoke"),
    ("share", "list"), ("report", "recognition"), ("audit",), ("qc", "run"), ("qc", "list"), ("qc", "show"),
    ("qc", "accept"), ("qc", "reject"), ("qc", "restore"), ("qc", "report"), ("qc", "preview"),
]


# -- fixtures (may move to conftest.py) -----------------------------------------------------------
def run(home: Path | None, *args: str) -> Result:
    prefix = ["--home", str(home)] if home is not None else []
    return CliRunner().invoke(main, [*prefix, *args], catch_exceptions=True)


def ok(home: Path, *args: str) -> Result:
    result = run(home, *args)
    assert result.exit_code == 0, f"{args}: exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result


def as_json(home: Path, *args: str) -> Any:
    return json.loads(ok(home, *args).stdout)


@pytest.fixture(scope="module")
def county_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("cli") / "county"
    ok(home, "init", "--aet", "CTY_PACS", "--institution", "CTY001", "--port", str(free_port()))
    ok(home, "import", str(SAMPLE_DIR / "CTY001"))
    return home


@pytest.fixture
def home(county_template: Path, tmp_path: Path) -> Iterator[Path]:
    copy = tmp_path / "county"
    shutil.copytree(county_template, copy)
    yield copy


# -- help ------------------------------------------------------------------------------------------
def _commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


def test_every_new_command_is_registered() -> None:
    assert set(NEW_COMMANDS) <= {path for path, _ in _commands(main)}


@pytest.mark.parametrize("path", NEW_COMMANDS, ids=["-".join(p) for p in NEW_COMMANDS])
def test_help_has_an_example_of_the_command(path: tuple[str, ...]) -> None:
    result = run(None, *path, "--help")
    assert result.exit_code == 0, result.output
    assert "Example" in result.stdout
    example = result.stdout.split("Example", 1)[1]
    assert f"pacsnode {' '.join(path)}" in example


def test_groups_show_their_help_when_called_alone() -> None:
    for group in ("recognition", "share", "report", "qc"):
        result = run(None, group)
        assert "Usage:" in result.output and "Commands:" in result.output


# -- errors: one line, non-zero, no traceback --------------------------------------------------------
ERRORS = [
    ("decide-without-accept-or-decline", ["recognition", "decide", CT_CHEST, "--physician", "Dr Wang"], 2,
     "--accept or --decline"),
    ("decide-without-physician", ["recognition", "decide", CT_CHEST, "--accept"], 2, "--physician"),
    ("decline-without-consent", ["recognition", "decide", CT_CHEST, "--decline", "--reason", "N1", "--physician",
                                 "Dr Wang"], 1, "consent"),
    ("decline-without-reason", ["recognition", "decide", CT_CHEST, "--decline", "--consent", "given", "--informed",
                                "patient", "--physician", "Dr Wang"], 1, "reason"),
    ("decline-unknown-reason", ["recognition", "decide", CT_CHEST, "--decline", "--reason", "because",
                                "--consent", "given", "--informed", "patient", "--physician", "Dr Wang"], 1,
     "not a reason code"),
    ("not-obtainable-without-emergency", ["recognition", "decide", CT_CHEST, "--decline", "--reason", "N1",
                                          "--consent", "not-obtainable", "--informed", "family", "--physician",
                                          "Dr Wang"], 1, "emergency"),
    ("accept-not-eligible-without-note", ["recognition", "decide", CT_HEAD, "--accept", "--physician", "Dr Wang"],
     1, "note"),
    ("decide-unknown-study", ["recognition", "decide", UNKNOWN, "--accept", "--physician", "Dr Wang"], 1,
     "priors"),
    ("explain-unknown-study", ["recognition", "explain", UNKNOWN], 1, "no study"),
    ("explain-bad-date", ["recognition", "explain", CT_CHEST, "--at", "yesterday"], 2, "not a date"),
    ("priors-without-patient", ["priors"], 2, "name the patient"),
    ("priors-id-without-issuer", ["priors", "--patient-id", "P0815"], 2, "--issuer"),
    ("share-unknown-study", ["share", "grant", UNKNOWN, "--to", "PRV001", "--days", "7"], 1, "no study"),
    ("share-unknown-institution", ["share", "grant", CT_CHEST, "--to", "NOWHERE", "--days", "7"], 1, "NOWHERE"),
    ("share-zero-days", ["share", "grant", CT_CHEST, "--to", "PRV001", "--days", "0"], 1, "--days"),
    ("share-without-to", ["share", "grant", CT_CHEST, "--days", "7"], 2, "--to"),
    ("revoke-nothing", ["share", "revoke", CT_CHEST, "--to", "PRV001"], 1, "no active share"),
    ("report-bad-by", ["report", "recognition", "--by", "physician"], 2, "--by"),
    ("report-bad-date", ["report", "recognition", "--from", "last week"], 2, "not a date"),
    ("audit-bad-since", ["audit", "--since", "2026-13-45"], 2, "not a date"),
    ("qc-run-unknown", ["qc", "run", UNKNOWN], 1, "no study"),
    ("qc-show-unknown", ["qc", "show", UNKNOWN], 1, "no study"),
    ("qc-accept-bad-grade", ["qc", "accept", CT_CHEST, "--grade", "A", "--reviewer", "Dr Li"], 1, "grade"),
    ("qc-accept-not-diagnostic", ["qc", "accept", CT_CHEST, "--grade", "0", "--reviewer", "Dr Li"], 1,
     "not diagnostic"),
    ("qc-reject-bad-reason", ["qc", "reject", CT_CHEST, "--reason", "999", "--reviewer", "Dr Li"], 1, "reason"),
    ("qc-restore-not-rejected", ["qc", "restore", CT_CHEST, "--reviewer", "Dr Li"], 1, "cannot restore"),
    ("qc-list-bad-status", ["qc", "list", "--status", "great"], 2, "--status"),
    ("qc-report-bad-by", ["qc", "report", "--by", "reviewer"], 2, "--by"),
    ("qc-preview-unknown", ["qc", "preview", UNKNOWN, "-o", "x.png"], 1, "no study"),
]


@pytest.mark.parametrize("args, code, fragment", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors_are_one_line_with_a_non_zero_exit(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  args: list[str], code: int, fragment: str) -> None:
    monkeypatch.chdir(tmp_path)  # qc preview's -o x.png must not land in the repository
    result = run(home, *args)
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert fragment in lines[0]
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_missing_home_is_one_line(tmp_path: Path) -> None:
    result = run(tmp_path / "nowhere", "qc", "list")
    assert result.exit_code == 1 and len(result.stderr.splitlines()) == 1 and "init" in result.stderr


def test_failed_decisions_leave_no_record(home: Path) -> None:
    run(home, "recognition", "decide", CT_CHEST, "--decline", "--reason", "N1", "--physician", "Dr Wang")
    assert [e for e in as_json(home, "audit", "--json") if e["action"] == "recognition-decision"] == []
    assert as_json(home, "report", "recognition", "--json") == []


# -- JSON keys --------------------------------------------------------------------------------------
PRIOR_KEYS = {"study_uid", "source", "institution", "institution_code", "study_date", "modalities", "description",
              "accession_number", "patient_id", "issuer_of_patient_id", "item_code", "status", "failed",
              "valid_until", "scope_label", "also_at"}
REPORT_KEYS = ["institution", "shown", "eligible_shown", "accepted", "declined", "declined_by_reason",
               "recognition_rate", "rate_all"]


def test_explain_json(home: Path) -> None:
    data = as_json(home, "recognition", "explain", CT_CHEST, "--for", "TWN001", "--at", "2026-11-26", "--json")
    assert set(data) == {"study_uid", "status", "failed", "item_code", "scope_label", "valid_until", "conditions",
                         "time_rule"}
    assert "study date" in data["time_rule"] and "today" in data["time_rule"]
    assert (data["study_uid"], data["status"], data["failed"], data["item_code"], data["valid_until"]) == (
        CT_CHEST, "HR_ELIGIBLE", [], "CT-CHEST-PLAIN", "2026-12-10")
    assert [c["code"] for c in data["conditions"]] == list(CONDITION_CODES)
    assert all(set(c) == {"code", "holds", "explanation", "decline_reason"} and c["holds"] is True
               for c in data["conditions"])
    later = as_json(home, "recognition", "explain", CT_CHEST, "--at", "20261211", "--json")
    assert later["failed"] == ["outside_window"]
    text = ok(home, "recognition", "explain", CT_HEAD, "--at", "2026-11-26").stdout
    assert text.startswith("NOT_ELIGIBLE") and "FAIL outside_window" in text  # 256 days old
    assert "[decline reason T1]" in text and "  time: access" in text


def test_priors_json_local_and_an_unreachable_peer(home: Path) -> None:
    ok(home, "peer", "add", "provincial", "--aet", "PRV_PACS", "--host", "127.0.0.1", "--port", str(free_port()),
       "--institution", "PRV001")
    data = as_json(home, "priors", "--patient-id", "P0815", "--issuer", "CTY001", "--json")
    assert set(data) == {"priors", "errors"} and set(data["errors"]) == {"provincial"}
    [prior] = data["priors"]
    assert set(prior) == PRIOR_KEYS
    assert (prior["study_uid"], prior["source"], prior["institution_code"], prior["item_code"]) == (
        CT_CHEST, "local", "CTY001", "CT-CHEST-PLAIN")
    table = run(home, "priors", "--resident-id", "520100199001010011")
    assert table.exit_code == 0 and CT_CHEST in table.stdout
    assert table.stderr.strip().startswith("peer provincial not reached")


def test_decide_share_report_and_audit(home: Path) -> None:
    ok(home, "priors", "--resident-id", "520100199001010011", "--json")
    declined = ok(home, "recognition", "decide", CT_CHEST, "--decline", "--reason", "condition-changed,P1",
                  "--consent", "given", "--informed", "patient", "--physician", "Dr Wang")
    assert declined.stdout.startswith("decision ") and f"recorded: decline {CT_CHEST}" in declined.stdout
    ok(home, "recognition", "decide", CR_CHEST, "--accept", "--note", "read locally", "--physician", "Dr Wang")

    rows = as_json(home, "report", "recognition", "--json")
    assert [list(r) for r in rows] == [REPORT_KEYS]
    assert {k: rows[0][k] for k in ("institution", "shown", "accepted", "declined", "declined_by_reason")} == {
        "institution": "CTY001", "shown": 1, "accepted": 1, "declined": 1, "declined_by_reason": {"N1": 1, "P1": 1}}
    by_modality = as_json(home, "report", "recognition", "--by", "modality", "--json")
    assert {r["modality"] for r in by_modality} == {"CT\\DOC", "CR"}
    table = list(csv.DictReader(io.StringIO(ok(home, "report", "recognition", "--csv").stdout)))
    assert list(table[0]) == REPORT_KEYS and table[0]["declined_by_reason"] == "N1=1;P1=1"
    assert as_json(home, "report", "recognition", "--from", "2999-01-01", "--json") == []
    assert "recognition_rate" in ok(home, "report", "recognition").stdout

    granted = ok(home, "share", "grant", CT_CHEST, "--to", "PVT001", "--days", "7", "--by", "Dr Wang")
    assert f"shared {CT_CHEST} with PVT001 until" in granted.stdout
    [share] = as_json(home, "share", "list", "--json")
    assert {"study_uid", "institution", "granted_at", "expires_at", "revoked_at", "granted_by"} <= set(share)
    assert (share["study_uid"], share["institution"], share["revoked_at"]) == (CT_CHEST, "PVT001", "")
    assert "revoked the share" in ok(home, "share", "revoke", CT_CHEST, "--to", "PVT001").stdout
    assert as_json(home, "share", "list", "--json")[0]["revoked_at"]
    assert "PVT001" in ok(home, "share", "list").stdout

    events = as_json(home, "audit", "--json")
    assert all(set(e) == {"action", "outcome", "peer_aet", "peer_name", "study_uid", "detail", "at", "node"}
               for e in events)
    [name] = {e["node"] for e in events}  # the default node name: host name/AE title:port
    assert name.startswith(socket.gethostname().split(".")[0] + "/CTY_PACS:")
    mine = [(e["action"], e["outcome"]) for e in as_json(home, "audit", "--study", CT_CHEST, "--json")]
    assert {("recognition-decision", "decline"), ("share-grant", "granted"), ("share-revoke", "revoked"),
            ("qc", "accepted")} <= set(mine)
    assert as_json(home, "audit", "--since", "2999-01-01", "--json") == []
    assert len(as_json(home, "audit", "--limit", "2", "--json")) == 2
    assert "recognition-decision" in ok(home, "audit").stdout


QC_LIST_KEYS = {"study_uid", "study_date", "modalities", "institution_name", "institution_code", "instance_count",
                "status", "grade", "reviewer", "checked_at", "failed_checks", "warnings"}


def test_qc_commands(home: Path, tmp_path: Path) -> None:
    listing = as_json(home, "qc", "list", "--json")
    assert all(set(row) == QC_LIST_KEYS for row in listing)
    assert {r["study_uid"]: r["status"] for r in listing} == {
        uid: "accepted" for uid in (CT_CHEST, CR_CHEST, DX_CHEST, UID_ROOT + "5")}
    shown = as_json(home, "qc", "show", CT_CHEST, "--json")
    assert {"study_uid", "status", "grade", "reviewer", "reviewed_at", "reason_code", "note", "ruleset_version",
            "checked_at", "outcomes"} <= set(shown)
    assert shown["outcomes"] and {"code", "passed", "severity", "message"} <= set(shown["outcomes"][0])
    assert "status: accepted" in ok(home, "qc", "show", CT_CHEST).stdout

    rejected = ok(home, "qc", "reject", CT_CHEST, "--reviewer", "Dr Li", "--note", "motion artefact")
    assert rejected.stdout.strip() == f"{CT_CHEST}: rejected (113001) by Dr Li"
    assert [r["study_uid"] for r in as_json(home, "qc", "list", "--status", "rejected", "--json")] == [CT_CHEST]
    assert ok(home, "qc", "run", CT_CHEST).stdout.startswith(f"{CT_CHEST}: rejected")
    assert ok(home, "qc", "restore", CT_CHEST, "--reviewer", "Dr Li").stdout.strip() == f"{CT_CHEST}: pending"
    accepted = ok(home, "qc", "accept", CT_CHEST, "--grade", "3", "--reviewer", "Dr Li")
    assert accepted.stdout.strip() == f"{CT_CHEST}: accepted, grade 3, by Dr Li"
    assert ok(home, "qc", "accept", CR_CHEST, "--grade", "乙", "--reviewer", "Dr Li").stdout.strip().endswith(
        "grade B, by Dr Li")
    everything = ok(home, "qc", "run").stdout.splitlines()
    assert len(everything) == 4 and all(": accepted" in line for line in everything)

    report = as_json(home, "qc", "report", "--json")
    assert set(report) == {"groups", "top_failing_checks"}
    assert report["groups"] == [{"institution": "CTY001", "checked": 4, "passed_checks": 4, "pass_rate": 1.0,
                                 "accepted": 4, "rejected": 0, "needs_fix": 0, "pending": 0}]
    modality_csv = list(csv.DictReader(io.StringIO(ok(home, "qc", "report", "--by", "modality", "--csv").stdout)))
    assert {r["modality"] for r in modality_csv} == {"CT", "DOC", "CR", "DX"}
    assert "top failing checks: none" in ok(home, "qc", "report").stdout

    out = tmp_path / "sheet.png"
    preview = ok(home, "qc", "preview", CT_CHEST, "-o", str(out), "--tile", "128")
    assert preview.stdout.strip() == f"wrote {out} (256x256, 3 series)"
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (256, 256)


# -- issue 12.3: a manual scope override is explicit and audited ------------------------------------
PVT_GEO = 'geo = "530102"'


def _override(home: Path, lines: str) -> None:
    path = home / "recognition.toml"
    text = path.read_text(encoding="utf-8")
    start = text.index(PVT_GEO)
    end = text.index("\n", start) + 1
    path.write_text(f"{text[:end]}{lines}\n{text[end:]}", encoding="utf-8")


def _override_events(home: Path) -> list[dict[str, Any]]:
    return [e for e in as_json(home, "audit", "--json") if e["action"] == "scope-override"]


def test_scope_override_is_explicit_shown_and_audited_once(home: Path) -> None:
    assert _override_events(home) == []
    before = as_json(home, "recognition", "explain", CT_CHEST, "--for", "PVT001", "--at", "2026-11-26", "--json")
    assert "out_of_scope" in before["failed"]  # Yunnan is outside 黔HR by geography
    _override(home, 'in_scope = true\nscope_override_reason = "consultation pilot, notice 2026-17"')
    after = as_json(home, "recognition", "explain", CT_CHEST, "--for", "PVT001", "--at", "2026-11-26", "--json")
    scope = {c["code"]: c for c in after["conditions"]}["out_of_scope"]
    assert scope["holds"] and scope["explanation"].endswith("by manual override: consultation pilot, notice 2026-17")
    events = _override_events(home)
    assert [(e["outcome"], json.loads(e["detail"])) for e in events] == [
        ("set", {"PVT001": {"geo": "530102", "in_scope": True, "reason": "consultation pilot, notice 2026-17"}})]
    path = home / "recognition.toml"
    path.write_text(path.read_text(encoding="utf-8").replace(
        'in_scope = true\nscope_override_reason = "consultation pilot, notice 2026-17"\n', ""), encoding="utf-8")
    assert [e["outcome"] for e in _override_events(home)] == ["set", "cleared"]


def test_contradictory_scope_setting_is_refused_in_one_line(home: Path) -> None:
    _override(home, "in_scope = true")
    result = run(home, "recognition", "explain", CT_CHEST, "--for", "PVT001")
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "in_scope = true contradicts geo 530102, which is outside scope_geo 520000" in result.output
    assert "scope_override_reason" in result.output
