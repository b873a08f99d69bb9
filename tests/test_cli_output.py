"""What the CLI prints for people: columns that line up with Chinese names, and no terminal control.

A served node receives the sample region plus one crafted study over DCMTK ``storescu``;
its Patient Name carries an OSC sequence that would retitle the terminal
(``ESC ] 0 ; pwned BEL``) and a newline followed by a fake ``study_uid`` line. Every human
view of it (``studies``, ``study show``, ``qc list``, ``qc show``, ``recognition explain``,
``audit``) must show those characters escaped, while ``--json`` keeps the exact value.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Iterator

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from pacsnode.cli.output import TerminalSafeStdout, display_width, format_table, safe, to_json, truncate
from support import SAMPLE_DIR, NodeProcess, ToolResult, needs_dcmtk

EVIL_NAME = "EVIL\x1b]0;pwned\x07^MALLORY\nstudy_uid  FAKE-LINE"
EVIL_NOTE = "bad\x1b]0;pwned\x07\nFAKE audit line"
EVIL_DESCRIPTION = "CT\x9b31mred\x7f\u202eevil"
CJK_RESIDENT_ID = "520102196503040013"  # 王^小明 (GB18030)
RAW_CONTROLS = ("\x1b", "\x07", "\x9b", "\x7f", "\u202e")


# -- the formatter ------------------------------------------------------------------------------
def test_wide_characters_count_two_columns() -> None:
    assert display_width("王^小明") == 7
    assert display_width("ＡＢ") == 4  # fullwidth Latin
    assert display_width("e\u0301") == 1  # a combining accent takes no column
    assert truncate("王" * 40, 10) == "王王王..."  # never half a wide character


def test_table_columns_line_up_by_display_width() -> None:
    rows = [{"name": "王^小明", "id": "P0002"}, {"name": "ZHAO^LEI", "id": "P0001"}, {"name": "李^华", "id": "T00017"}]
    lines = format_table(rows, ["name", "id"])
    starts = {_display_index(line, value) for line, value in zip(lines, ["id", "P0002", "P0001", "T00017"])}
    assert starts == {10}, lines


def test_safe_escapes_every_control_character_and_keeps_text() -> None:
    assert safe(EVIL_NAME) == "EVIL\\x1b]0;pwned\\x07^MALLORY\\nstudy_uid  FAKE-LINE"
    assert safe("a\tb\rc\x00\x85\u2028") == "a\\tb\\rc\\x00\\x85\\u2028"
    assert safe("王^小明") == "王^小明"


def test_json_escapes_controls_faithfully() -> None:
    text = to_json({"name": EVIL_NAME + "\x85"})
    assert not any(c in text for c in (*RAW_CONTROLS, "\x85", "\n study"))
    assert json.loads(text) == {"name": EVIL_NAME + "\x85"}


def test_stdout_guard_stops_escape_sequences_a_command_forgot() -> None:
    """The second line of defence: raw ESC/BEL/C1 never reach stdout; newlines, tabs and CSV's CRLF do."""
    sink = io.StringIO()
    TerminalSafeStdout(sink).write("a\x1b]0;pwned\x07\tb\r\nc\rd\x9b2J\n")
    assert sink.getvalue() == "a\\x1b]0;pwned\\x07\tb\r\nc\\rd\\x9b2J\n"


# -- a served node --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess, str]]:
    base = tmp_path_factory.mktemp("cli-output")
    evil = _crafted_file(base / "evil.dcm")
    node = NodeProcess(base / "home", institution="PRV001")
    with node:
        stored = node.store([SAMPLE_DIR, evil], extra=("+sd", "+r"), timeout=120)
        assert stored.returncode == 0, stored.explain()
        uid = str(dcmread(evil, stop_before_pixels=True).StudyInstanceUID)
        # the reviewer's note reaches `qc show` and `audit`
        _cli(node, "qc", "reject", uid, "--reviewer", "qa", "--note", EVIL_NOTE)
        yield node, uid


def _crafted_file(out: Path) -> Path:
    template = next(p for p in sorted(SAMPLE_DIR.rglob("*.dcm")) if "CTY001" in str(p) and "_CT" in str(p))
    ds = dcmread(template)
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: no ISO 2022 escape handling, the bytes stay as sent
    ds.PatientName = EVIL_NAME
    ds.PatientID = "EVIL0001"  # a new patient: the index keeps the first name it saw per patient
    ds.SeriesDescription = EVIL_DESCRIPTION
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(out, enforce_file_format=True)
    return out


def _cli(node: NodeProcess, *args: str) -> ToolResult:
    result = node.cli(*args)
    assert result.returncode == 0, result.explain()
    return result


@needs_dcmtk
@pytest.mark.interop
@pytest.mark.parametrize("command", [
    ("studies",), ("study", "show", "{uid}"), ("qc", "list"), ("qc", "show", "{uid}"),
    ("recognition", "explain", "{uid}", "--for", "CTY001"), ("audit", "--limit", "500"),
])
def test_human_output_escapes_control_characters(served: tuple[NodeProcess, str], command: tuple[str, ...]) -> None:
    node, uid = served
    out = _cli(node, *(a.format(uid=uid) for a in command)).stdout
    assert not any(c in out for c in RAW_CONTROLS), repr(out)
    lines = out.splitlines()
    assert not any(line.startswith(("study_uid  FAKE", "FAKE audit")) for line in lines), out
    if command[0] in ("studies", "study"):
        assert "EVIL\\x1b]0;pwned\\x07^MALLORY\\nstudy_uid  FAKE-LINE" in out
    if command[0] == "study":
        assert "CT\\x9b31mred\\x7f\\u202eevil" in out
    if command[:2] == ("qc", "show"):
        assert "bad\\x1b]0;pwned\\x07\\nFAKE audit line" in out
    if command[0] == "audit":
        assert "pwned" in out and "FAKE audit" in out  # shown, inert (the detail column is JSON-escaped)


@needs_dcmtk
@pytest.mark.interop
def test_json_output_keeps_the_exact_values(served: tuple[NodeProcess, str]) -> None:
    node, uid = served
    out = _cli(node, "study", "show", uid, "--json").stdout
    assert not any(c in out for c in RAW_CONTROLS)
    data = json.loads(out)
    assert data["patient_name"] == EVIL_NAME
    assert data["series"][0]["series_description"] == EVIL_DESCRIPTION


@needs_dcmtk
@pytest.mark.interop
@pytest.mark.parametrize("command,json_command,columns", [
    (("studies",), ("studies", "--json"), ["study_uid", "patient_id", "patient_name", "study_date"]),
    (("qc", "list"), ("qc", "list", "--json"), ["study_uid", "status", "study_date"]),
    (("priors", "--resident-id", CJK_RESIDENT_ID), None, ["study_date", "institution", "study_uid"]),
])
def test_tables_with_chinese_names_line_up(served: tuple[NodeProcess, str], command: tuple[str, ...],
                                           json_command: tuple[str, ...] | None, columns: list[str]) -> None:
    """Each value starts at the display column of its header, on every row, 王^小明 and 李^华 included."""
    node, _uid = served
    lines = _cli(node, *command).stdout.splitlines()
    header = lines[0]
    starts = {c: _display_index(header, c) for c in columns}
    if json_command is None:  # priors: rows come from the peers and this node; check the UID column
        assert len(lines) > 1
        assert all(_display_index(line, "1.2.826.0.1.3680043.10.1078.1.8") in (-1, starts["study_uid"])
                   for line in lines[1:])
        assert any("1.2.826.0.1.3680043.10.1078.1.8" in line for line in lines[1:])
        return
    rows: list[dict[str, Any]] = json.loads(_cli(node, *json_command).stdout)
    assert len(lines) == len(rows) + 1
    names = {str(r.get("patient_name")) for r in rows}
    if "patient_name" in columns:
        assert {"王^小明", "李^华"} <= names
    for line, row in zip(lines[1:], rows):
        for column in columns:
            value = safe(row[column])
            assert _text_at(line, starts[column], display_width(value)) == value, (column, line)


def _display_index(line: str, text: str) -> int:
    """The display column where ``text`` starts in ``line`` (-1 when absent)."""
    at = line.find(text)
    return -1 if at < 0 else display_width(line[:at])


def _text_at(line: str, column: int, width: int) -> str:
    """The characters of ``line`` that occupy display columns [column, column + width)."""
    out, used = [], 0
    for char in line:
        if used >= column + width:
            break
        if used >= column:
            out.append(char)
        used += display_width(char)
    return "".join(out)
