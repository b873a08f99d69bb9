"""The command line through click's CliRunner: help with examples, one-line errors, round trips."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import click
import pytest
from click.testing import CliRunner, Result

from pacsnode.cli import main
from support import make_series


def leaf_commands(command: click.Command = main, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command and group below ``main``, as its argv path (groups get help examples too)."""
    if path:
        yield path
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from leaf_commands(sub, path + (name,))


def invoke(home: Path | None, *args: str) -> Result:
    argv = (["--home", str(home)] if home is not None else []) + list(args)
    return CliRunner().invoke(main, argv, catch_exceptions=True)


def assert_one_line_error(result: Result) -> str:
    """Exit code != 0, one line on stderr, nothing on stdout, no traceback."""
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    return lines[0]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    result = invoke(path, "init", "--aet", "TEST_PACS", "--port", "11112", "--institution", "PRV001")
    assert result.exit_code == 0, result.output
    return path


# -- help ---------------------------------------------------------------------------------------
def test_the_main_help_has_an_example() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "Example" in result.output


@pytest.mark.parametrize("path", [" ".join(p) for p in leaf_commands()])
def test_every_command_has_help_with_an_example(path: str) -> None:
    result = CliRunner().invoke(main, [*path.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output, f"`pacsnode {path} --help` shows no example"


def test_the_node_commands_are_all_there() -> None:
    names = {" ".join(p) for p in leaf_commands()}
    assert {"init", "serve", "import", "studies", "study show", "check", "peer add", "peer list", "peer remove",
            "echo"} <= names


# -- init ---------------------------------------------------------------------------------------
def test_init_creates_the_home(tmp_path: Path) -> None:
    home = tmp_path / "new"
    result = invoke(home, "init", "--aet", "CTY_PACS", "--port", "4242", "--institution", "CTY001")
    assert result.exit_code == 0, result.output
    assert {"pacsnode.toml", "index.sqlite", "storage", "tmp"} <= {p.name for p in home.iterdir()}
    text = (home / "pacsnode.toml").read_text(encoding="utf-8")
    assert 'aet = "CTY_PACS"' in text and "port = 4242" in text and 'institution = "CTY001"' in text


def test_init_refuses_an_existing_home_without_force(home: Path, tmp_path: Path, ct_template: Path) -> None:
    files = make_series(ct_template, tmp_path / "files", 2)
    assert invoke(home, "import", str(files[0].parent)).exit_code == 0
    before = (home / "pacsnode.toml").read_text(encoding="utf-8")
    message = assert_one_line_error(invoke(home, "init", "--aet", "OTHER"))
    assert "--force" in message
    assert (home / "pacsnode.toml").read_text(encoding="utf-8") == before
    forced = invoke(home, "init", "--aet", "OTHER", "--force")
    assert forced.exit_code == 0, forced.output
    assert 'aet = "OTHER"' in (home / "pacsnode.toml").read_text(encoding="utf-8")
    studies = json.loads(invoke(home, "studies", "--json").stdout)
    assert [s["instance_count"] for s in studies] == [2]  # --force rewrites configuration, keeps data


@pytest.mark.parametrize("args", [("--aet", "WAY_TOO_LONG_AE_TITLE"), ("--aet", "BAD\\AE"), ("--port", "0"),
                                  ("--port", "70000")])
def test_init_refuses_bad_values_with_one_line(tmp_path: Path, args: tuple[str, str]) -> None:
    message = assert_one_line_error(invoke(tmp_path / "h", "init", *args))
    assert args[0] in message
    assert not (tmp_path / "h" / "pacsnode.toml").exists()


# -- errors -------------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [("studies",), ("studies", "--json"), ("check",), ("peer", "list"),
                                  ("study", "show", "1.2.3"), ("import", ".")])
def test_commands_on_a_missing_home_fail_with_one_line(tmp_path: Path, args: tuple[str, ...]) -> None:
    missing = tmp_path / "nosuch"
    message = assert_one_line_error(invoke(missing, *args))
    assert "init" in message
    assert not missing.exists()  # a typo in --home must not create a node


@pytest.mark.parametrize("args", [("peer", "remove", "nosuch"), ("study", "show", "1.2.3.4"), ("echo", "nosuch"),
                                  ("echo", "BAD@nohostport")])
def test_domain_errors_are_one_line(home: Path, args: tuple[str, ...]) -> None:
    message = assert_one_line_error(invoke(home, *args))
    assert message.startswith("Error:")


# -- peers --------------------------------------------------------------------------------------
def test_peer_add_list_remove_round_trip(home: Path) -> None:
    added = invoke(home, "peer", "add", "county", "--aet", "CTY_PACS", "--host", "10.0.0.7", "--port", "11112",
                   "--institution", "CTY001", "--permissions", "echo,store,find", "--check-host")
    assert added.exit_code == 0, added.output
    assert invoke(home, "peer", "add", "ct", "--aet", "PRV_CT", "--host", "10.0.0.8", "--port", "104").exit_code == 0
    listed = invoke(home, "peer", "list", "--json")
    assert listed.exit_code == 0, listed.output
    peers = {p["name"]: p for p in json.loads(listed.stdout)}
    expected = {"name": "county", "aet": "CTY_PACS", "host": "10.0.0.7", "port": 11112, "institution": "CTY001",
                "permissions": ["echo", "find", "store"], "check_host": True}
    assert {k: peers["county"].get(k) for k in expected} == expected
    assert peers["ct"]["permissions"] == ["echo", "find", "get", "move", "store"]

    duplicate = assert_one_line_error(invoke(home, "peer", "add", "ct", "--aet", "X", "--host", "10.0.0.9", "--port", "1"))
    assert "--replace" in duplicate
    replaced = invoke(home, "peer", "add", "ct", "--aet", "PRV_CT2", "--host", "10.0.0.9", "--port", "105", "--replace")
    assert replaced.exit_code == 0, replaced.output

    assert invoke(home, "peer", "remove", "county").exit_code == 0
    remaining = json.loads(invoke(home, "peer", "list", "--json").stdout)
    assert [(p["name"], p["aet"], p["port"]) for p in remaining] == [("ct", "PRV_CT2", 105)]
    assert_one_line_error(invoke(home, "peer", "remove", "county"))


@pytest.mark.parametrize("args", [("--aet", "BAD\\AE", "--port", "104"), ("--aet", "OK", "--port", "0"),
                                  ("--aet", "OK", "--port", "104", "--permissions", "store,delete")])
def test_peer_add_refuses_bad_values_with_one_line(home: Path, args: tuple[str, ...]) -> None:
    assert_one_line_error(invoke(home, "peer", "add", "bad", "--host", "10.0.0.1", *args))
    assert json.loads(invoke(home, "peer", "list", "--json").stdout) == []


# -- import, studies, study show, check ---------------------------------------------------------
def test_import_prints_counts_and_a_reason_per_rejected_file(home: Path, tmp_path: Path, ct_template: Path) -> None:
    folder = tmp_path / "incoming"
    files = make_series(ct_template, folder / "series", 3, PatientID="P0815", IssuerOfPatientID="CTY001")
    (folder / "junk.dcm").write_bytes(b"this is not DICOM")
    (folder / "cut.dcm").write_bytes(files[0].read_bytes()[:-50])
    result = invoke(home, "import", str(folder))
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "stored 3, duplicate 0, replaced 0, rejected 2"
    rejected = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in lines[1:]}
    assert set(rejected) == {f"rejected {folder / 'cut.dcm'}", f"rejected {folder / 'junk.dcm'}"}
    assert all(reason for reason in rejected.values())
    again = invoke(home, "import", str(folder))
    assert again.stdout.splitlines()[0] == "stored 0, duplicate 3, replaced 0, rejected 2"


def test_studies_json_and_study_show(home: Path, tmp_path: Path, ct_template: Path) -> None:
    files = make_series(ct_template, tmp_path / "files", 2, PatientID="P0002", IssuerOfPatientID="PRV001",
                        PatientName="王^小明", SpecificCharacterSet="ISO_IR 192", AccessionNumber="ACC1",
                        InstitutionName="Provincial", StudyDate="20261125")
    assert invoke(home, "import", *map(str, files)).exit_code == 0
    result = invoke(home, "studies", "--json")
    assert result.exit_code == 0, result.output
    [study] = json.loads(result.stdout)
    assert {k: study[k] for k in ("patient_id", "issuer_of_patient_id", "patient_name", "study_date",
                                  "accession_number", "modalities", "series_count", "instance_count",
                                  "institution_name")} == {
        "patient_id": "P0002", "issuer_of_patient_id": "PRV001", "patient_name": "王^小明",
        "study_date": "20261125", "accession_number": "ACC1", "modalities": ["CT"], "series_count": 1,
        "instance_count": 2, "institution_name": "Provincial"}
    assert json.loads(invoke(home, "studies", "--json", "--patient-id", "nobody").stdout) == []
    table = invoke(home, "studies")
    assert table.exit_code == 0 and study["study_uid"] in table.stdout
    shown = invoke(home, "study", "show", study["study_uid"], "--json")
    assert shown.exit_code == 0, shown.output
    detail = json.loads(shown.stdout)
    assert detail["study_uid"] == study["study_uid"]
    assert [len(s["instances"]) for s in detail["series"]] == [2]


def test_check_exit_codes_and_repair(home: Path, tmp_path: Path, ct_template: Path) -> None:
    files = make_series(ct_template, tmp_path / "files", 2)
    invoke(home, "import", str(files[0].parent))
    assert invoke(home, "check").exit_code == 0
    orphan = home / "storage" / "00" / "00" / "1.2.3.dcm"
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"stray")
    found = invoke(home, "check")
    assert found.exit_code == 1
    assert "00/00/1.2.3.dcm" in found.stdout
    repaired = invoke(home, "check", "--repair")
    assert repaired.exit_code == 0, repaired.output
    assert not orphan.exists()
    assert invoke(home, "check", "--quick").exit_code == 0
