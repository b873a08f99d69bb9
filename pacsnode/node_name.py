"""A node's name: which node of an archive served, on every audit row (issue 16 item 3).

Several nodes may share one archive (index and storage) and so one audit trail; ``[node] name``
tells them apart. Kept out of ``config.py`` (one job per module).
"""

from __future__ import annotations

import socket

from pacsnode.errors import ConfigError

NODE_NAME_MAX = 64


def default_node_name(aet: str, port: int) -> str:
    """``<host name>/<AE title>:<port>``: unique among the nodes of one archive without a setting (nodes
    behind one load balancer share the AE title; two nodes on one machine never share a port)."""
    return f"{socket.gethostname().split('.')[0] or 'localhost'}/{aet}:{port}"[:NODE_NAME_MAX]


def validate_node_name(name: str, where: str) -> str:
    """A node name: up to 64 printable characters (it is shown in every audit row), or "" for the default."""
    if len(name) > NODE_NAME_MAX or any(not c.isprintable() for c in name) or name != name.strip():
        raise ConfigError(f"{where}: node name {name[:80]!r} is not valid; use up to {NODE_NAME_MAX} printable characters")
    return name
