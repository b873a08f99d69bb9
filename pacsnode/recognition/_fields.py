"""Typed reading of one TOML table, with errors that name the file, the key and the fix.

``recognition.toml`` is edited by hand by an administrator, so a typo must fail at start
with a message that says where it is and what to write instead, never deeper at the first
query. :class:`Table` wraps one table (a ``dict`` from :mod:`tomllib`) with its path inside
the file (``institutions[1]``) and offers one reader per value type.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

from pacsnode.errors import ConfigError

_MISSING: Any = object()


class Table:
    """One TOML table and where it is: ``source`` (the file) and ``path`` (the key path).

    Readers raise :class:`ConfigError`; ``default=_MISSING`` (the default) makes a key
    required.
    """

    def __init__(self, data: Any, source: str, path: str) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: {path or 'the file'} must be a table, not {_kind(data)}")
        self.data: Mapping[str, Any] = data
        self.source = source
        self.path = path

    def where(self, key: str) -> str:
        """``file: path.key`` for messages."""
        dotted = f"{self.path}.{key}" if self.path else key
        return f"{self.source}: {dotted}"

    def fail(self, key: str, problem: str, fix: str) -> ConfigError:
        """An error naming the key, what is wrong and the fix (returned so callers ``raise`` it)."""
        return ConfigError(f"{self.where(key)} {problem}; {fix}")

    def reject_unknown(self, known: Iterable[str]) -> None:
        """Unknown keys are typos until proven otherwise: refuse them, listing the known ones."""
        allowed = sorted(known)
        for key in self.data:
            if key not in allowed:
                raise self.fail(key, "is not a known key", f"use one of {', '.join(allowed)}")

    def _get(self, key: str, default: Any) -> Any:
        if key in self.data:
            return self.data[key]
        if default is _MISSING:
            raise ConfigError(f"{self.where(key)} is missing; add it to the table")
        return default

    def text(self, key: str, default: Any = _MISSING, *, non_empty: bool = True) -> str:
        """A string, trimmed; required non-empty unless ``non_empty`` is false."""
        value = self._get(key, default)
        if not isinstance(value, str):
            raise self.fail(key, f"= {value!r} is {_kind(value)}", 'write it as a quoted string, e.g. "ABC"')
        value = value.strip()
        if non_empty and not value:
            raise self.fail(key, "is empty", "give it a value")
        return value

    def choice(self, key: str, choices: Iterable[str], default: Any = _MISSING, *, noun: str = "value") -> str:
        """One of a fixed set of strings (compared exactly after trimming)."""
        options = list(choices)
        value = self.text(key, default)
        if value not in options:
            raise self.fail(key, f"{value!r} is not a {noun}", f"use one of {', '.join(options)}")
        return value

    def flag(self, key: str, default: Any = _MISSING) -> bool:
        """A TOML boolean (``true``/``false``, unquoted)."""
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, f"= {value!r} is {_kind(value)}", "write true or false (no quotes)")
        return value

    def whole(self, key: str, default: Any = _MISSING, *, minimum: int = 0) -> int:
        """A whole number >= ``minimum`` (booleans are refused: ``true`` is not 1 day)."""
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(key, f"= {value!r} is not a whole number >= {minimum}", f"write e.g. {max(minimum, 30)}")
        return value

    def day(self, key: str, default: Any = _MISSING) -> date | None:
        """A date: a TOML date (``2026-01-01``, unquoted) or an ISO string; None when absent."""
        value = self._get(key, default)
        if value is None or isinstance(value, date) and not isinstance(value, datetime):
            return value
        if isinstance(value, str):
            try:
                return date.fromisoformat(value.strip())
            except ValueError:
                pass
        raise self.fail(key, f"= {value!r} is not a date", "write it as YYYY-MM-DD, e.g. 2026-01-01")

    def strings(self, key: str, default: Any = _MISSING, *, upper: bool = False) -> tuple[str, ...]:
        """A list of non-empty strings (trimmed, optionally upper-cased), duplicates refused."""
        value = self._get(key, default)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise self.fail(key, f"= {value!r} is {_kind(value)}", 'write a list, e.g. ["A", "B"]')
        out: list[str] = []
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise self.fail(f"{key}[{index}]", f"= {item!r} is not a non-empty string", "quote it")
            text = item.strip().upper() if upper else item.strip()
            if text in out:
                raise self.fail(f"{key}[{index}]", f"{text!r} is listed twice", "remove the repeat")
            out.append(text)
        return tuple(out)

    def tables(self, key: str) -> list[Table]:
        """An array of tables (``[[key]]``); absent means empty."""
        value = self._get(key, [])
        if not isinstance(value, list):
            raise self.fail(key, f"is {_kind(value)}", f"write each entry as a [[{key}]] table")
        prefix = f"{self.path}." if self.path else ""
        return [Table(item, self.source, f"{prefix}{key}[{i}]") for i, item in enumerate(value)]

    def table(self, key: str) -> Table:
        """A sub-table (``[key]``); absent means empty."""
        return Table(self._get(key, {}), self.source, f"{self.path}.{key}" if self.path else key)


def _kind(value: Any) -> str:
    """A TOML-ish name for a Python value's type, for messages."""
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list", dict: "a table"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    if isinstance(value, date):
        return "a date"
    return type(value).__name__
