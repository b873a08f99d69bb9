"""What an operator asks first: is this node well? (``pacsnode status``, ``/api/admin/health``).

One function gathers what ``/readyz`` and ``check`` know, so the command line and the admin
page say the same thing: free space where instances are stored, whether the index answers,
whether the DICOM port accepts associations, how many serving processes are alive, and the
latest refusals and failures from the audit trail. Reading only: nothing here repairs.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from typing import Any

from pacsnode.index import audit_store
from pacsnode.node import Node
from pacsnode.storage.home_lock import LOCK_NAME

PROBLEM_OUTCOMES = ("refused", "rejected", "failed", "error", "undelivered")
LOW_FREE_PERCENT = 5.0  # below this the storage is reported as not ok
LAST_ERRORS = 10


def _storage(node: Node) -> dict[str, Any]:
    if node.storage.free_bytes() is None:  # an object store ([storage] url): reachable or not, no disk to measure
        ok = node.storage.available()
        return {"path": node.storage.describe(), "ok": ok, "error": "" if ok else "storage area unreachable",
                "free_bytes": 0, "total_bytes": 0, "free_percent": 0.0, "quota_bytes": node.config.store.quota_bytes}
    path = Path(node.config.storage_path)
    try:
        usage = shutil.disk_usage(path)
    except OSError as exc:
        return {"path": str(path), "ok": False, "error": str(exc), "free_bytes": 0, "total_bytes": 0,
                "free_percent": 0.0, "quota_bytes": node.config.store.quota_bytes}
    percent = round(100.0 * usage.free / usage.total, 1) if usage.total else 0.0
    return {"path": str(path), "ok": path.is_dir() and percent >= LOW_FREE_PERCENT, "error": "",
            "free_bytes": usage.free, "total_bytes": usage.total, "free_percent": percent,
            "quota_bytes": node.config.store.quota_bytes}


def _index(node: Node) -> dict[str, Any]:
    try:
        node.index.check_readable()
    except Exception as exc:  # any backend's error: the answer is "not ok, because ..."
        return {"ok": False, "error": str(exc)[:300]}
    return {"ok": True, "error": ""}


def _listener(node: Node) -> dict[str, Any]:
    host = node.config.host if node.config.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    try:
        with socket.create_connection((host, node.config.port), timeout=1.0):
            accepting = True
    except OSError:
        accepting = False
    return {"aet": node.config.aet, "host": node.config.host, "port": node.config.port, "accepting": accepting}


def _workers(node: Node) -> dict[str, Any]:
    """Configured workers, and the processes serving the home now: each ``serve`` process (the
    parent and every worker) holds a shared flock on ``serve.lock`` while it runs, and Linux
    lists flock holders in /proc/locks (None where it cannot be read)."""
    return {"configured": node.config.network.workers, "running": _lock_holders(node.config.home / LOCK_NAME)}


def _lock_holders(path: Path) -> int | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return 0  # never served
    except OSError:
        return None
    try:
        text = Path("/proc/locks").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = set()
    for line in text.splitlines():
        fields = line.split()
        if "->" in fields or "FLOCK" not in fields or len(fields) < 6:
            continue  # a waiter, or not a flock
        at = fields.index("FLOCK")
        if len(fields) > at + 4 and fields[at + 4] == wanted and fields[at + 3].isdigit():
            pids.add(int(fields[at + 3]))
    return len(pids)


def _last_errors(node: Node) -> list[dict[str, Any]]:
    rows = audit_store.recent_with_outcomes(node.index, PROBLEM_OUTCOMES, LAST_ERRORS)
    return [{"at": r["at"], "action": r["action"], "outcome": r["outcome"], "peer_name": r["peer_name"],
             "peer_aet": r["peer_aet"], "study_uid": r["study_uid"], "detail": r["detail"][:300]} for r in rows]


def node_health(node: Node) -> dict[str, Any]:
    """The node's health as JSON-ready data; ``ready`` is what ``/readyz`` answers."""
    storage, index = _storage(node), _index(node)
    return {"aet": node.config.aet, "institution": node.config.institution, "home": str(node.config.home),
            "ready": index["ok"] and node.storage.available(), "storage": storage, "index": index,
            "listener": _listener(node), "workers": _workers(node), "last_errors": _last_errors(node)}
