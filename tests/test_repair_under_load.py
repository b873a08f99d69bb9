"""``check --repair`` next to a running server loses nothing (issue 10, item 4).

A real ``pacsnode serve`` receives 1000 new instances from DCMTK's ``storescu`` while
``pacsnode check --repair`` runs again and again: every instance storescu got Success for is
indexed afterwards with its file intact, no store failed because of the repair, and a plain
``check`` is clean. Before the fix, files linked between the check's index read and its walk
were deleted as "orphans" and a spare temp file of the open association was removed.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from pacsnode.storage.filesystem import sha256_of
from support import NodeProcess, ToolResult, make_series, needs_dcmtk, run_tool, storescu_args

pytestmark = [pytest.mark.interop, needs_dcmtk, pytest.mark.timeout(240)]
SUCCESS = 0x0000


def test_repair_during_a_1000_instance_storescu_run_loses_no_acknowledged_instance(
        node_process: Callable[..., NodeProcess], ct_template: Path, tmp_path: Path) -> None:
    node = node_process().start()
    files = make_series(ct_template, tmp_path / "send", 1000)  # ~2 s of sending: a repair takes ~0.5 s
    args = storescu_args(node.port, files)
    sent: dict[str, ToolResult] = {}

    def send() -> None:
        sent["result"] = run_tool(args, timeout=180)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    time.sleep(0.1)  # a few instances in: the repair starts while the association is storing
    repairs: list[ToolResult] = []
    started_while_sending = 0
    while sender.is_alive() or not repairs:
        started_while_sending += sender.is_alive()
        repairs.append(node.check("--repair", *(["--quick"] if len(repairs) % 2 else [])))
    sender.join(200)
    result = sent["result"]

    responses = result.store_responses
    assert len(responses) == len(files), result.explain()
    failed = [r for r in responses if r.status != SUCCESS]
    assert not failed, f"stores failed next to check --repair: {failed[:5]}\n{result.explain()}"
    assert result.returncode == 0, result.explain()
    # two repairs begun while storescu sent: the first ran whole next to the stores
    assert started_while_sending >= 2, f"the repair did not run while storescu was sending ({len(repairs)} runs)"
    acknowledged = {r.sop_instance_uid for r in responses if r.status == SUCCESS}
    indexed = dict(node.index_rows("SELECT sop_instance_uid, sha256 FROM instances"))
    lost = sorted(acknowledged - set(indexed))
    assert not lost, f"{len(lost)} acknowledged instance(s) lost their row: {lost[:5]}"
    for uid in acknowledged:
        stored = node.stored_path(uid)
        assert stored is not None and stored.is_file(), f"acknowledged {uid}: file deleted by the repair"
        assert sha256_of(stored) == indexed[uid]
    final = node.check()
    assert final.returncode == 0 and "index and files agree" in final.stdout, final.explain()


def test_spare_temp_file_of_an_open_association_is_neither_reported_nor_removed(
        node_process: Callable[..., NodeProcess], ct_template: Path, tmp_path: Path) -> None:
    from pydicom import dcmread
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage

    node = node_process().start()
    first, second = make_series(ct_template, tmp_path / "send", 2)
    ae = AE(ae_title="SPARESCU")
    ae.add_requested_context(CTImageStorage, dcmread(first).file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", node.port, ae_title=node.aet)
    assert assoc.is_established
    try:
        assert assoc.send_c_store(dcmread(first)).Status == SUCCESS
        deadline = time.monotonic() + 10
        while not node.temp_files() and time.monotonic() < deadline:
            time.sleep(0.02)
        spare = node.temp_files()
        assert spare, "the receiver made no spare temporary file"
        checked = node.check()
        assert checked.returncode == 0 and "temporary file" not in checked.stdout, checked.explain()
        repaired = node.check("--repair")
        assert repaired.returncode == 0, repaired.explain()
        assert all(p.exists() for p in spare), "check --repair removed a temp file an open association holds"
        assert assoc.send_c_store(dcmread(second)).Status == SUCCESS
    finally:
        assoc.release()
    assert len(node.index_rows("SELECT 1 FROM instances")) == 2
    assert node.check().returncode == 0


def test_online_repair_leaves_young_unindexed_files_and_removes_old_orphans(
        node_process: Callable[..., NodeProcess], monkeypatch: pytest.MonkeyPatch) -> None:
    from pacsnode.node import Node

    node = node_process().start()  # holds serve.lock shared: repair runs online
    orphan = node.home / "storage" / "ab" / "cd" / "1.2.3.4.dcm"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"no row will point here")
    young = node.check("--repair")
    assert young.returncode == 0 and orphan.exists(), young.explain()
    assert "1 unindexed file(s) younger than" in young.stderr
    monkeypatch.setattr(Node, "REPAIR_GRACE_SECONDS", 0.5)
    time.sleep(0.6)
    local = Node.open(node.home)
    try:
        report = local.check(repair=True)
    finally:
        local.close()
    assert report.orphan_files == ["ab/cd/1.2.3.4.dcm"] and not orphan.exists()
    assert node.echo().returncode == 0 and node.check().returncode == 0


def test_repair_while_instances_are_replaced_keeps_every_row(
        node_process: Callable[..., NodeProcess], ct_template: Path, tmp_path: Path) -> None:
    """duplicates = "replace": a replace moves the row to a new file and removes the old one; a repair
    that read the old path must not take the row for one whose file is gone."""
    node = node_process().configure("store", "duplicates", "replace").start()
    files = make_series(ct_template, tmp_path / "send", 150)
    first = node.store(files, timeout=120)
    assert first.returncode == 0, first.explain()
    sent: list[ToolResult] = []

    def resend() -> None:
        for _ in range(3):
            sent.append(run_tool(storescu_args(node.port, files), timeout=120))

    sender = threading.Thread(target=resend, daemon=True)
    sender.start()
    repairs = 0
    while sender.is_alive():
        node.check("--repair")
        repairs += 1
    sender.join(60)
    assert repairs >= 2
    for result in sent:
        assert [r.status for r in result.store_responses] == [SUCCESS] * len(files), result.explain()
    uids = {row[0] for row in node.index_rows("SELECT sop_instance_uid FROM instances")}
    assert len(uids) == len(files), f"{len(files) - len(uids)} replaced instance(s) lost their row"
    final = node.check()
    assert final.returncode == 0 and "index and files agree" in final.stdout, final.explain()
