"""One key value → one SQL condition: C-FIND matching of a single attribute (PS3.4 C.2.2.2).

The rules, and the choices PS3.4 leaves to the implementation:

* Universal: an empty value, or ``*`` alone, for any VR (C.2.2.2.3 note 1).
* Single value: exact and case-sensitive. PN is case-sensitive unless
  ``query.case_insensitive_pn`` (then the ``*_folded`` column and :func:`fold` of the value).
  A PN value without ``=`` matches the whole name or any one component group, so ``王^小明``
  finds ``Wang^XiaoMing=王^小明`` (PN matching across groups is implementation dependent).
* Wild card: ``*`` and ``?`` only for AE, CS, LO, LT, PN, SH, ST, UC, UR, UT (C.2.2.2.4);
  in other VRs they are literal characters, i.e. a single value that matches nothing.
  SQLite GLOB is used, so ``%`` and ``_`` are literal; ``[`` is escaped as ``[[]``.
* A backslash list matches when any value matches (List of UID Matching for UI, C.2.2.2.2;
  the same "any of" reading for other VRs, e.g. ``Modality=CT\\MR``).
* Range (DA, TM): ``a-b``, ``a-``, ``-b``, inclusive. TM bounds are compared on the
  normalised ``HHMMSS.ffffff`` form: the lower bound is padded with zeros, the upper bound to
  the end of its precision (``-1200`` includes 12:00:59.999999), and a single TM value is the
  range of its precision (``1200`` = 12:00:00-12:00:59.999999), as dcm4che does. Stored empty
  values never match a range. With combined date-time negotiated (C.2.2.2.5.4) a DA/TM pair
  of the same range form is matched as one date-time (``20240101-20240102`` with
  ``2200-0600`` = 2024-01-01 22:00 to 2024-01-02 06:00:59.999999); otherwise independently.
* Unparseable DA/TM/IS values match nothing; unknown or unsupported keys are not matched
  and come back empty.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from pacsnode.dicom.nul import text_without_nul
from pacsnode.index.dialect import GlobPattern, JsonList
from pacsnode.index.sqlite import fold

WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
NEVER = "1 = 0"
TIME = re.compile(r"^(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?$")
DATE = re.compile(r"^\d{8}$")


@dataclass(frozen=True)
class Column:
    """Where a key lives: an alias-qualified SQL expression, its VR, its table alias."""

    expr: str
    vr: str
    alias: str
    folded: str = ""  # casefolded twin of a PN column
    special: str = ""  # matched by a dedicated rule, or "count" (return only)


class Where:
    """SQL conditions joined by AND, with their bound parameters in order."""

    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.params: list[Any] = []

    def add(self, clause: str | None, params: Sequence[Any] = ()) -> None:
        if clause:
            self.clauses.append(clause)
            self.params.extend(params)

    def sql(self) -> str:
        return " AND ".join(self.clauses) if self.clauses else "1 = 1"


Condition = tuple[str, list[Any]] | None


# -- value conditions ------------------------------------------------------------------------
def glob_pattern(value: str) -> GlobPattern:
    """A DICOM wild card value as a GLOB pattern: ``*``/``?`` kept, ``[`` made literal.

    Marked as a :class:`GlobPattern` so that PostgreSQL binds it as the equivalent LIKE pattern.
    """
    return GlobPattern(value.replace("[", "[[]"))


def time_bounds(value: str) -> tuple[str, str] | None:
    """``HH[MM[SS[.F]]]`` → (first, last) normalised ``HHMMSS.ffffff`` of its precision."""
    found = TIME.match(value.replace(":", "").strip())
    if not found:
        return None
    hh, mm, ss, frac = found.groups()
    low = f"{hh}{mm or '00'}{ss or '00'}.{(frac or '').ljust(6, '0')}"
    high = f"{hh}{mm or '59'}{ss or '59'}.{(frac or '').ljust(6, '9')}"
    return low, high


def split_range(value: str) -> tuple[str, str]:
    """``a-b`` → (a, b), either possibly empty."""
    low, _, high = value.partition("-")
    return low.strip(), high.strip()


def _bounds_condition(expr: str, low: str | None, high: str | None) -> Condition:
    """Inclusive bounds (either may be open); a stored empty value never falls in a range."""
    clauses, params = [f"{expr} <> ''"], []
    if low:
        clauses.append(f"{expr} >= ?")
        params.append(low)
    if high:
        clauses.append(f"{expr} <= ?")
        params.append(high)
    return " AND ".join(clauses), params


def _date_condition(expr: str, part: str) -> Condition:
    if "-" not in part:
        return (f"{expr} = ?", [part]) if DATE.match(part) else (NEVER, [])
    low, high = split_range(part)
    if any(v and not DATE.match(v) for v in (low, high)):
        return NEVER, []
    return _bounds_condition(expr, low, high)


def _time_condition(expr: str, part: str) -> Condition:
    low_text, high_text = split_range(part) if "-" in part else (part, part)
    low = time_bounds(low_text) if low_text else None
    high = time_bounds(high_text) if high_text else None
    if (low_text and low is None) or (high_text and high is None):
        return NEVER, []
    return _bounds_condition(expr, low[0] if low else None, high[1] if high else None)


def _pn_condition(column: Column, part: str, case_insensitive: bool) -> Condition:
    expr = column.folded if case_insensitive and column.folded else column.expr
    value = fold(part) if case_insensitive else part
    wild = any(ch in value for ch in "*?")
    pattern = glob_pattern(value)
    if "=" in value:
        return (f"{expr} GLOB ?", [pattern]) if wild else (f"{expr} = ?", [value])
    if value.endswith("*"):  # "P*" already matches "P*=*", and "*=P*" matches "*=P*=*": half the GLOBs per row
        return f"({expr} GLOB ? OR {expr} GLOB ?)", [pattern, glob_pattern("*=" + value)]
    first = f"{expr} GLOB ?" if wild else f"{expr} = ?"
    clause = f"({first} OR {expr} GLOB ? OR {expr} GLOB ? OR {expr} GLOB ?)"
    return clause, [pattern if wild else value, glob_pattern(value + "=*"), glob_pattern("*=" + value),
                    glob_pattern("*=" + value + "=*")]


def _part_condition(column: Column, part: str, case_insensitive: bool) -> Condition:
    vr, expr = column.vr, column.expr
    if vr == "DA":
        return _date_condition(expr, part)
    if vr == "TM":
        return _time_condition(expr, part)
    if vr == "IS":
        try:
            return f"{expr} = ?", [int(part)]
        except ValueError:
            return NEVER, []
    if vr == "PN":
        return _pn_condition(column, part, case_insensitive)
    if vr in WILDCARD_VRS and any(ch in part for ch in "*?"):
        return f"{expr} GLOB ?", [glob_pattern(part)]
    return f"{expr} = ?", [part]


def value_condition(column: Column, value: str | None, case_insensitive: bool = False) -> Condition:
    """The condition for one key value (None = universal), lists OR-ed. NUL is dropped from the value
    as it was from the values indexed (``dicom.nul``): PostgreSQL could not even compare it."""
    parts = [part.strip() for part in text_without_nul(value or "").split("\\") if part.strip()]
    if not parts or "*" in parts:
        return None
    if column.vr == "UI" and len(parts) > 1:
        return f"{column.expr} IN (SELECT value FROM json_each(?))", [JsonList.of(parts)]
    conditions = [c for c in (_part_condition(column, part, case_insensitive) for part in parts) if c]
    if len(conditions) == 1:
        return conditions[0]
    params = [p for _, ps in conditions for p in ps]
    return "(" + " OR ".join(f"({sql})" for sql, _ in conditions) + ")", params
