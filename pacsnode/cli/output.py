"""Human output of the CLI: one table formatter, terminal-safe text, and faithful JSON.

Values printed by the CLI come from DICOM files and peers: a Patient Name may hold an escape
sequence (``ESC ] 0 ; title BEL`` retitles the terminal, others move the cursor or rewrite
the screen) or a newline that fakes a line of output. Everything human-readable is therefore
passed through :func:`safe`, which shows control characters (C0, DEL, C1, the Unicode line
separators and bidirectional overrides) as visible escapes such as ``\\x1b`` and ``\\n``.
JSON stays faithful: JSON's own escaping carries every character, and DEL/C1 are written
as ``\\u00XX`` so that a terminal never sees them raw.

Tables align by display width, not by characters: East Asian wide and fullwidth characters
(``王^小明``) take two terminal columns, combining marks none.

:class:`TerminalSafeStdout` is the second line of defence: while a command runs, stdout
escapes ESC, C1 and the other C0 controls that no command prints on purpose, so a line a
command forgot to pass through :func:`safe` still cannot drive the terminal.
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from typing import Any, TextIO

import click

MAX_CELL_WIDTH = 64
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# C0, DEL, C1, line/paragraph separators, bidirectional embeddings, overrides and isolates.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# What stdout lets through unescaped: newline, tab, and CR only as part of CRLF (CSV output).
_STREAM_CONTROL = re.compile("[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]|\r(?!\n)")
_JSON_RAW = re.compile("[\x7f-\x9f\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def safe(value: Any) -> str:
    """``value`` as text with every control character shown as an escape (one line, inert)."""
    text = "" if value is None else str(value)
    return _CONTROL.sub(_escape, text)


def char_width(char: str) -> int:
    """Terminal columns of one character: 2 for East Asian wide/fullwidth, 0 for combining marks."""
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def display_width(text: str) -> int:
    """Terminal columns ``text`` takes (after :func:`safe`, so it has no control characters)."""
    return sum(char_width(c) for c in text)


def pad(text: str, width: int) -> str:
    """Left-align ``text`` in ``width`` terminal columns."""
    return text + " " * max(0, width - display_width(text))


def truncate(text: str, width: int = MAX_CELL_WIDTH) -> str:
    """Cut ``text`` to ``width`` columns, ending in ``...`` when cut (never half a wide character)."""
    if display_width(text) <= width:
        return text
    out, used = [], 0
    for char in text:
        w = char_width(char)
        if used + w > width - 3:
            break
        out.append(char)
        used += w
    return "".join(out) + "..."


def cell(value: Any) -> str:
    """One table cell: lists joined with commas, control characters escaped, long text cut."""
    if isinstance(value, (list, tuple)):
        value = ",".join("" if v is None else str(v) for v in value)
    return truncate(safe(value))


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    """The lines of a plain table whose columns line up in a terminal, CJK included."""
    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(display_width(c), *(display_width(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(pad(c, w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(pad(v, w) for v, w in zip(r, widths)).rstrip() for r in cells]
    return lines


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Print ``rows`` as an aligned table (``(none)`` when empty); the one table of the CLI."""
    if not rows:
        click.echo("(none)")
        return
    for line in format_table(rows, columns):
        click.echo(line)


def print_fields(pairs: list[tuple[str, Any]], indent: str = "") -> None:
    """``key  value`` lines with the values made safe, keys aligned by display width."""
    width = max((display_width(k) for k, _ in pairs), default=0)
    for key, value in pairs:
        click.echo(f"{indent}{pad(key, width)} {safe(value)}".rstrip())


def to_json(value: Any) -> str:
    """JSON text of ``value``: every character kept, DEL/C1/line separators as ``\\u`` escapes."""
    text = json.dumps(value, ensure_ascii=False, indent=2, default=str)
    return _JSON_RAW.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text)


def print_json(value: Any) -> None:
    click.echo(to_json(value))


class TerminalSafeStdout:
    """A text stream that escapes terminal controls before they reach the real stdout."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(_STREAM_CONTROL.sub(_escape, text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:  # flush, isatty, encoding, buffer (binary output passes)
        return getattr(self._stream, name)


def guard_stdout(ctx: click.Context) -> None:
    """Make ``sys.stdout`` terminal-safe for this command; the original comes back when it ends."""
    original = sys.stdout
    if isinstance(original, TerminalSafeStdout) or original is None:
        return
    sys.stdout = TerminalSafeStdout(original)

    def restore() -> None:
        if isinstance(sys.stdout, TerminalSafeStdout):
            sys.stdout = original

    ctx.call_on_close(restore)
