"""A power cut's lost WAL tail (``fsync = true``: rows commit without their own fsync): nothing acknowledged is lost.

``pacsnode serve`` stores instances (each acknowledged with Success), replaces one, and is
killed (SIGKILL). The power cut is then simulated on the index: the WAL is cut back to what it
held before the first store (a prefix, as SQLite's checksums would keep after a cut) and the
replaced copy's unlink is undone (hard link kept aside, mtime as it was). ``check --repair``
runs first, offline: it must bring back every acknowledged instance from its file (the replaced
copy must *not* come back) and delete none of them; a restarted ``serve`` then finds nothing to
recover. (``serve`` recovering first is covered by ``test_crash.py``'s soak, which cuts the WAL
at every kill.)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from bench.node_process import NodeProcess
from bench.soak_crash import dataset_digest, free_port, index_rows, init_home, run_check, write_instance
from support import home_index_rows

pytestmark = pytest.mark.timeout(120)

UID = "1.2.826.0.1.3680043.10.1078.77"


def _send(port: int, paths: list[Path]) -> list[int]:
    ae = AE(ae_title="WALSCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSNODE")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(path).Status) for path in paths]
    finally:
        assoc.release()


def _provenance(home: Path) -> dict[str, tuple[str, str]]:
    return {uid: (by, peer) for uid, by, peer in home_index_rows(
        home, "SELECT sop_instance_uid, delivered_by, delivered_peer FROM instances")}


def test_lost_wal_tail_is_recovered_from_the_files_before_repair(tmp_path: Path) -> None:
    port = free_port()
    home = init_home(tmp_path / "home", port, settings={"store": {"fsync": True, "duplicates": "replace"}})
    server = NodeProcess(home, port=port, log_path=tmp_path / "serve.log", ready="echo", start_timeout=30).start()
    wal = home / "index.sqlite-wal"
    try:
        assert list((home / "index.sqlite-unclean").glob("*.json")), "serve writes its unclean-stop marker"
        before = wal.stat().st_size if wal.exists() else 0
        sent = [write_instance(tmp_path / f"s{n}.dcm", f"{UID}.1", f"{UID}.1.1", f"{UID}.1.1.{n}", "WALTAIL",
                               number=n, seed=n) for n in range(1, 9)]
        replaced = write_instance(tmp_path / "x1.dcm", f"{UID}.1", f"{UID}.1.1", f"{UID}.1.1.99", "WALTAIL", seed=1)
        assert _send(port, [*sent, replaced]) == [0] * 9
        row = {r["sop_instance_uid"]: r for r in index_rows(home)}[f"{UID}.1.1.99"]
        old_file = home / "storage" / row["path"]
        kept = tmp_path / "old-copy.dcm"
        os.link(old_file, kept)  # the replaced copy, to undo its unlink after the "power cut"
        old_mtime = old_file.stat().st_mtime_ns
        newer = write_instance(tmp_path / "x2.dcm", f"{UID}.1", f"{UID}.1.1", f"{UID}.1.1.99", "WALTAIL", seed=2)
        assert _send(port, [newer]) == [0]
        assert not old_file.exists()
    finally:
        server.kill()
    # the power cut: the WAL tail with every row of this run is gone, the replaced copy's unlink too
    with open(wal, "r+b") as handle:
        handle.truncate(before)
    (home / "index.sqlite-shm").unlink(missing_ok=True)
    os.link(kept, old_file)
    os.utime(old_file, ns=(old_mtime, old_mtime))
    assert {r["sop_instance_uid"] for r in index_rows(home)}.isdisjoint({f"{UID}.1.1.{n}" for n in range(1, 9)})

    repaired = run_check(home, repair=True)
    assert repaired.returncode == 0, repaired.text
    assert not list((home / "index.sqlite-unclean").glob("*.json")), "the recovery is done: its marker is gone"
    rows = {r["sop_instance_uid"]: r for r in index_rows(home)}
    for path in sent:
        uid = dcmread(path, stop_before_pixels=True).SOPInstanceUID
        assert uid in rows, f"acknowledged {uid} lost"
        assert dataset_digest(home / "storage" / rows[uid]["path"]) == dataset_digest(path)
    x = rows[f"{UID}.1.1.99"]
    assert dataset_digest(home / "storage" / x["path"]) == dataset_digest(newer), "the replaced copy came back"
    assert not old_file.exists(), "the replaced copy's file is removed by recovery"
    # who delivered a recovered instance is not proven by its file: recorded as unknown, with its AE
    assert _provenance(home)[f"{UID}.1.1.1"] == ("unknown", "WALSCU")
    final = run_check(home)
    assert final.clean and final.returncode == 0, final.text
