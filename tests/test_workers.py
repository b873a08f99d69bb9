"""``serve --workers N``: N processes share the port and the index; stopping stops them all."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Callable

from support import NodeProcess, sample_files


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def wait_gone(pids: list[int], seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not [p for p in pids if Path(f"/proc/{p}").exists() and "Z" not in
                Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]]:
            return True
        time.sleep(0.1)
    return False


def test_two_workers_share_the_port_and_stop_together(node_process: Callable[..., NodeProcess]) -> None:
    node = node_process().configure("network", "workers", 2).start()
    assert node.proc is not None
    deadline = time.monotonic() + 10
    while not children_of(node.proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    workers = children_of(node.proc.pid)
    assert len(workers) == 1
    files = [p for p in sample_files() if "CTY001" in str(p)]
    for _ in range(3):  # several associations: the kernel spreads them over both processes
        assert node.echo().returncode == 0
    sent = node.store(files)
    assert sent.returncode == 0, sent.explain()
    assert len(node.index_rows("SELECT 1 FROM instances")) == len(files)
    assert node.stop() == 0
    assert wait_gone(workers)


def test_a_worker_stops_when_its_parent_is_killed(node_process: Callable[..., NodeProcess]) -> None:
    node = node_process().configure("network", "workers", 2).start()
    assert node.proc is not None
    deadline = time.monotonic() + 10
    while not children_of(node.proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    workers = children_of(node.proc.pid)
    assert workers
    os.kill(node.proc.pid, signal.SIGKILL)
    node.proc.wait()
    assert wait_gone(workers)
