"""Audit records are written without an fsync of their own, yet survive a crash of the process.

An fsync per audit record cost more than the WADO frame request it recorded (~12 ms on these
machines). The audit row is committed into SQLite's WAL without one: a SIGKILL of the node cannot
lose it; the next durable commit (an instance, a decision) takes it to the disk. What was
promised (an instance answered Success) keeps its fsync: every durable write commits with FULL
(the connection keeps the last setting between writes; a write that needs the other one sets it).
"""

from __future__ import annotations

import json
import signal
from typing import Callable

from pacsnode.node import Node
from support import NodeProcess, echoscu


def test_an_audited_association_survives_a_sigkill_of_the_node(node_process: Callable[..., NodeProcess]) -> None:
    served = node_process().start()
    answer = echoscu(served.port, aet="AUDITPROBE")
    assert answer.returncode == 0, answer.explain()
    assert served.proc is not None
    served.proc.send_signal(signal.SIGKILL)
    served.proc.wait(timeout=10)
    result = served.cli("audit", "--peer", "AUDITPROBE", "--json")
    assert result.returncode == 0, result.explain()
    events = json.loads(result.stdout)
    assert any(e["peer_aet"] == "AUDITPROBE" for e in events), events


def _synchronous_in(node: Node, durable: bool) -> int:
    """``PRAGMA synchronous`` inside a write transaction, i.e. what its COMMIT runs with."""
    with node.index.write(durable=durable) as conn:
        return int(conn.execute("PRAGMA synchronous").fetchone()[0])


def test_after_an_audit_record_the_index_commits_with_fsync_again(node: Node) -> None:
    assert _synchronous_in(node, durable=True) == 2  # FULL
    node.audit.record("wado-frames", "answered", peer_aet="VIEWER", study_uid="1.2.3")
    assert _synchronous_in(node, durable=False) == 1  # NORMAL: the audit row's commit
    assert _synchronous_in(node, durable=True) == 2
    assert node.audit.events(peer="VIEWER")[0].action == "wado-frames"


def test_a_failed_audit_write_leaves_the_connection_durable(node: Node) -> None:
    connection = node.index.connection()
    try:
        with node.index.write(durable=False) as conn:
            conn.execute("INSERT INTO no_such_table VALUES (1)")
    except Exception:
        pass
    else:
        raise AssertionError("an insert into a missing table went through")
    assert not connection.in_transaction
    assert _synchronous_in(node, durable=True) == 2
