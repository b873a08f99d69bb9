"""docs/conformance.md cannot drift from what the engine accepts (issue 13 item 6).

The SOP class and transfer syntax tables of the Conformance Statement are parsed and compared,
in both directions, with the acceptance policy (``pacsnode.dimse.policy``): every abstract syntax
and transfer syntax the node accepts is listed, nothing listed is refused, and each SOP class is
listed with exactly the transfer syntax set the policy grants it. A second test asks a served
node over the wire, so the policy module itself is what the engine uses.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from pynetdicom import AE

from pacsnode.dimse import policy
from tests.support import NodeProcess

DOC = Path(__file__).resolve().parent.parent / "docs" / "conformance.md"
UID_CELL = re.compile(r"^`([0-9.]+)`$")


def _table(name: str) -> list[list[str]]:
    """The rows (cells stripped) of the table after ``<!-- conformance-table: name -->``."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    start = lines.index(f"<!-- conformance-table: {name} -->") + 1
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if UID_CELL.match(cells[1]):
            rows.append(cells)
    assert rows, f"table {name} is empty"
    return rows


def _syntax_sets() -> dict[str, frozenset[str]]:
    """Column name ("storage", "uncompressed") -> the transfer syntax UIDs marked yes in it."""
    rows = _table("transfer-syntaxes")
    uids = [UID_CELL.match(row[1]).group(1) for row in rows]  # type: ignore[union-attr]
    assert len(uids) == len(set(uids)), "a transfer syntax is listed twice"
    return {column: frozenset(uid for uid, row in zip(uids, rows) if row[index] == "yes")
            for index, column in ((2, "storage"), (3, "uncompressed"))}


def test_transfer_syntax_table_is_what_the_policy_accepts() -> None:
    sets = _syntax_sets()
    assert sets["storage"] == policy.KNOWN_TRANSFER_SYNTAXES
    assert sets["uncompressed"] == policy.QUERY_TRANSFER_SYNTAXES
    accepted = {ts for uid in policy.SUPPORTED_ABSTRACT_SYNTAXES for ts in policy.transfer_syntaxes_for(uid)}
    assert sets["storage"] | sets["uncompressed"] == accepted


def test_sop_class_table_is_what_the_policy_accepts_with_its_syntaxes() -> None:
    sets = _syntax_sets()
    rows = _table("sop-classes-scp")
    listed = {UID_CELL.match(row[1]).group(1): row[2] for row in rows}  # type: ignore[union-attr]
    assert len(listed) == len(rows), "a SOP class is listed twice"
    missing = policy.SUPPORTED_ABSTRACT_SYNTAXES - listed.keys()
    extra = listed.keys() - policy.SUPPORTED_ABSTRACT_SYNTAXES
    assert not missing and not extra, f"accepted but not documented: {sorted(missing)}; documented, refused: {sorted(extra)}"
    for uid, column in listed.items():
        assert sets[column] == policy.transfer_syntaxes_for(uid), f"{uid}: the doc says {column!r}"


def test_served_node_accepts_exactly_the_documented_contexts(node_process: Callable[..., NodeProcess]) -> None:
    """Over the wire: documented SOP classes in a documented syntax are accepted, others rejected."""
    sets = _syntax_sets()
    rows = {UID_CELL.match(row[1]).group(1): row[2] for row in _table("sop-classes-scp")}  # type: ignore[union-attr]
    node = node_process().start()
    ae = AE(ae_title="CONFTEST")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    # A sample that fits one association (128 contexts): the non-storage classes, some storage ones.
    documented = [uid for uid, column in rows.items() if column == "uncompressed"] + ["1.2.840.10008.1.1"]
    documented += sorted(uid for uid, column in rows.items() if column == "storage")[:80]
    for uid in documented:
        syntax = sorted(sets[rows[uid]])[-1]
        ae.add_requested_context(uid, [syntax])
    ae.add_requested_context("1.2.840.10008.5.1.4.1.2.2.1", ["1.2.840.10008.1.2.4.50"])  # FIND in JPEG: not documented
    ae.add_requested_context("1.2.3.4.5.6.7.8.9", ["1.2.840.10008.1.2.1"])  # an unknown SOP class
    assoc = ae.associate("127.0.0.1", node.port, ae_title=node.aet)
    try:
        assert assoc.is_established
        accepted = {cx.abstract_syntax for cx in assoc.accepted_contexts}
        rejected = [(cx.abstract_syntax, cx.transfer_syntax) for cx in assoc.rejected_contexts]
        assert accepted == set(documented)
        assert sorted(str(a) for a, _ in rejected) == ["1.2.3.4.5.6.7.8.9", "1.2.840.10008.5.1.4.1.2.2.1"]
    finally:
        assoc.release()
