"""NUL (0x00) in the text the index records: removed, the same way for every index backend.

PostgreSQL refuses NUL in a ``text`` value outright (psycopg raises before the statement is
sent), while SQLite stores it and then compares, ``LIKE``s and sorts such values in ways of its
own. DICOM allows NUL only as the padding of a UI value; in any other text value it is a writer's
mistake (C-string padding, a truncated buffer). So the facts the index records (and the values a
query matches them with) never carry it: an instance with a NUL in, say, its Study Description
is stored as sent (the file is not touched) and indexed without the NUL on SQLite and PostgreSQL
alike, and a C-FIND finds it on both with the same keys.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from pacsnode.model import InstanceFacts

NUL = "\x00"
T = TypeVar("T")
_TEXT_FIELDS = tuple(f.name for f in dataclasses.fields(InstanceFacts) if f.type in ("str", str))
_NESTED_FIELDS = tuple(f.name for f in dataclasses.fields(InstanceFacts) if str(f.type).startswith("tuple["))


def without_nul(facts: InstanceFacts) -> InstanceFacts:
    """``facts`` with every NUL removed from its text (the same object when there is none: the usual case)."""
    changes: dict[str, Any] = {}
    for name in _TEXT_FIELDS:
        value = getattr(facts, name)
        if NUL in value:
            changes[name] = value.replace(NUL, "")
    for name in _NESTED_FIELDS:
        items = getattr(facts, name)
        if any(NUL in text for item in items for text in dataclasses.astuple(item) if isinstance(text, str)):
            changes[name] = tuple(_item_without_nul(item) for item in items)
    return dataclasses.replace(facts, **changes) if changes else facts


def _item_without_nul(item: T) -> T:
    return dataclasses.replace(item, **{  # type: ignore[type-var]
        f.name: getattr(item, f.name).replace(NUL, "") for f in dataclasses.fields(item)  # type: ignore[arg-type]
        if isinstance(getattr(item, f.name), str)})


def text_without_nul(value: str) -> str:
    """A query value as the index compares it (``without_nul`` removed NUL from what was stored)."""
    return value.replace(NUL, "") if NUL in value else value
