"""With ``fsync = true``, Success is only sent once the instance is on disk, in the right order.

A SIGKILL leaves the page cache intact, so the crash harness (``test_crash.py``) cannot see a
missing or misplaced sync: only a power cut could. This test watches the syscalls of a real
``pacsnode serve`` under ``strace`` while DCMTK's storescu sends three instances on one
association, and checks for every instance, between linking its file into the storage tree
and sending its C-STORE-RSP:

1. the file's data is synced (``fdatasync``/``fsync``) and its folder is fsync'ed (the link),
   and so is the parent of any folder made for it (the folder's own name); the data is synced
   through the receiver's descriptor, not by opening the file again;
2. the index's WAL is written only after both completed (a row is never on disk before its
   file: a power cut in between would leave a row pointing at nothing, and a retry under
   ``keep-first`` would be answered "duplicate" with no file behind it);
3. one flush per instance: the storing thread does not sync the WAL (the row commits without
   its own fsync, ``pacsnode.durability``); instead the unclean-stop marker reached the disk
   before the first file was linked (so a power cut's lost rows are re-indexed from their
   files), and a clean stop syncs the WAL after the last response.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from bench.node_process import PACSNODE
from support import NodeProcess, a_ct_file, storescu

STRACE = shutil.which("strace")
pytestmark = pytest.mark.skipif(STRACE is None, reason="strace is not installed (make dcmtk installs it)")

LINE = re.compile(r"^(?P<pid>\d+)\s+(?P<ts>\d+\.\d+)\s+(?P<rest>.*)$")
RESUMED = re.compile(r"^<\.\.\. (?P<name>\w+) resumed>(?P<tail>.*)$")
DURATION = re.compile(r"<(?P<secs>\d+\.\d+)>\s*$")
FD_PATH = re.compile(r"^\w+\(\d+<(?P<path>[^>]*)>")


@dataclass
class Call:
    pid: str  # the thread (strace -f)
    name: str
    text: str  # the call with its arguments, as strace printed it
    start: float
    end: float

    @property
    def fd_path(self) -> str:
        match = FD_PATH.match(self.text)
        return match.group("path") if match else ""


def parse(trace: Path) -> list[Call]:
    """Completed calls with start and end times (``-f -ttt -T -y``), unfinished ones joined."""
    pending: dict[tuple[str, str], tuple[str, float]] = {}
    calls: list[Call] = []
    for line in trace.read_text(errors="replace").splitlines():
        match = LINE.match(line)
        if match is None:
            continue
        pid, ts, rest = match.group("pid"), float(match.group("ts")), match.group("rest")
        if rest.endswith("<unfinished ...>"):
            name = rest.split("(", 1)[0]
            pending[(pid, name)] = (rest[: -len("<unfinished ...>")], ts)
            continue
        resumed = RESUMED.match(rest)
        if resumed is not None:
            name = resumed.group("name")
            head, start = pending.pop((pid, name), (name + "(", ts))
            text = head + resumed.group("tail")
        else:
            name, text, start = rest.split("(", 1)[0], rest, ts
        duration = DURATION.search(text)
        end = start + float(duration.group("secs")) if duration else ts
        if resumed is not None:
            end = max(end, ts)
        calls.append(Call(pid, name, text, start, end))
    return sorted(calls, key=lambda c: c.start)


def stop_traced(node: NodeProcess) -> None:
    """SIGTERM the node strace runs (strace itself would only detach), then strace exits with it."""
    proc, node.proc = node.proc, None
    assert proc is not None
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    for pid in children.read_text().split() if children.exists() else []:
        os.kill(int(pid), signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # strace and the node: the session NodeProcess started
        proc.wait()


def instances(folder: Path, count: int) -> list[Path]:
    source = dcmread(a_ct_file())
    study = generate_uid()
    paths = []
    for number in range(count):
        source.StudyInstanceUID = study
        source.SOPInstanceUID = generate_uid()
        source.file_meta.MediaStorageSOPInstanceUID = source.SOPInstanceUID
        path = folder / f"{number}.dcm"
        source.save_as(path)
        paths.append(path)
    return paths


def test_success_is_sent_after_file_folder_then_index_reach_the_disk(tmp_path: Path) -> None:
    trace = tmp_path / "serve.strace"
    command = [str(STRACE), "-f", "--seccomp-bpf", "-ttt", "-T", "-y", "-qq", "-o", str(trace),
               "-e", "trace=link,linkat,mkdir,mkdirat,fsync,fdatasync,sendto,pwrite64,write,open,openat", *PACSNODE]
    node = NodeProcess(tmp_path / "home", command=command, start_timeout=60)
    node.init()
    node.configure("store", "fsync", True)
    files = instances(tmp_path, 3)
    node.start()
    try:
        result = storescu(node.port, files)
        assert result.returncode == 0, result.stderr
    finally:
        stop_traced(node)
    calls = parse(trace)
    storage = os.path.realpath(tmp_path / "home")
    links = [c for c in calls if c.name in ("link", "linkat") and c.text.count('"') >= 4 and "= 0" in c.text]
    links = [c for c in links if re.findall(r'"([^"]+)"', c.text)[-1].startswith(storage)]
    assert len(links) == len(files), [c.text for c in links]
    assert any(c.name in ("mkdir", "mkdirat") for c in calls), "a fresh home makes its aa/bb folders"
    previous_link = 0.0
    for link in sorted(links, key=lambda c: c.start):
        temp, final = re.findall(r'"([^"]+)"', link.text)[-2:]
        folder = os.path.dirname(final)
        response = next(c for c in calls if c.name == "sendto" and c.start > link.end and "socket:" in c.text)
        window = [c for c in calls if link.start <= c.start and c.end <= response.start]
        data = [c for c in window if c.name in ("fdatasync", "fsync") and c.fd_path in (temp, final)]
        dirs = [c for c in window if c.name == "fsync" and c.fd_path == folder]
        assert data, f"no sync of {final}'s data before its C-STORE-RSP"
        reopened = [c for c in window if c.name in ("open", "openat") and (temp in c.text or final in c.text)]
        assert not reopened, f"{final} was opened again to sync it: the receiver's descriptor was not used"
        assert dirs, f"no fsync of {folder} before the C-STORE-RSP of {final}"
        on_disk = max(min(c.end for c in data), min(c.end for c in dirs))
        made = [re.findall(r'"([^"]+)"', c.text)[0] for c in calls
                if c.name in ("mkdir", "mkdirat") and c.text.rstrip().split("= ")[-1].startswith("0")
                and previous_link < c.start < link.start
                and folder.startswith(re.findall(r'"([^"]+)"', c.text)[0])]
        for new in made:  # a folder made for this file: its name must be durable too (in its parent)
            parent = [c for c in calls if c.name == "fsync" and c.fd_path == os.path.dirname(new)
                      and c.start > link.start and c.end <= response.start]
            assert parent, f"{new} was created but its parent was not fsync'ed before the C-STORE-RSP"
            on_disk = max(on_disk, min(c.end for c in parent))
        previous_link = link.end  # a folder an earlier file made was made durable for that file
        wal = [c for c in window if c.fd_path.endswith("-wal")]
        wal_writes = [c for c in wal if c.name in ("pwrite64", "write")]
        assert wal_writes, "the index row was not written between the link and the response"
        assert min(c.start for c in wal_writes) >= on_disk, "the index row was written before its file was on disk"
        assert not any(c.name in ("fdatasync", "fsync") and c.pid == link.pid for c in wal), \
            "the storing thread synced the WAL: two flushes per instance"
    marker = os.path.join(storage, "index.sqlite-unclean")
    synced = [c for c in calls if c.name == "fsync" and c.fd_path == marker]
    assert synced and min(c.end for c in synced) <= min(c.start for c in links), \
        "the unclean-stop marker was not durable before the first store"
    last = max(c.end for c in calls if c.name == "sendto" and "socket:" in c.text)
    assert any(c.name in ("fdatasync", "fsync") and c.fd_path.endswith("-wal") and c.start >= last
               for c in calls), "a clean stop did not sync the WAL"
