"""``[node] name``: who served, on every audit row of an archive several nodes share (issue 16 item 3)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pacsnode.config import parse_config
from pacsnode.errors import ConfigError
from pacsnode.node import Node


def test_the_default_name_is_host_ae_title_and_port_and_follows_a_port_override(tmp_path: Path) -> None:
    config = parse_config({"node": {"aet": "CTY_PACS", "port": 104}}, tmp_path)
    host = socket.gethostname().split(".")[0]
    assert config.node_name == f"{host}/CTY_PACS:104"
    assert config.with_overrides(port=11113).node_name == f"{host}/CTY_PACS:11113"
    assert parse_config({"node": {"name": "pacs-a"}}, tmp_path).node_name == "pacs-a"


@pytest.mark.parametrize("name", ["node\x00one", "node\none", " padded", "x" * 65, "\x1b[31mred"])
def test_a_name_that_would_forge_or_break_an_audit_row_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match=r"\[node\]\.name"):
        parse_config({"node": {"name": name}}, tmp_path)


def test_every_audit_row_a_node_writes_carries_its_name(tmp_path: Path) -> None:
    node = Node(parse_config({"node": {"name": "pacs-a"}}, tmp_path))
    node.audit.record("connection", "refused", detail={"host": "192.0.2.1"})
    other = Node(parse_config({"node": {"name": "pacs-b"}}, tmp_path))  # the same home, index and audit
    other.audit.record("connection", "refused", detail={"host": "192.0.2.2"})
    events = node.audit.events()
    assert [(e.node, e.detail) for e in events if e.action == "connection"] == [
        ("pacs-a", '{"host": "192.0.2.1"}'), ("pacs-b", '{"host": "192.0.2.2"}')]
    assert [e.node for e in node.audit.events(node="pacs-b")] == ["pacs-b"]
    node.close()
    other.close()
