"""Crash safety, short: SIGKILL ``pacsnode serve`` under concurrent C-STOREs, nothing acknowledged is lost.

The long version is ``python -m bench.soak_crash`` (50 cycles by default); this runs 3 cycles
of the same code, plus one deterministic kill in the middle of a large transfer. The server is
driven only from outside (subprocess and network), so these tests do not care which listener
``serve`` runs.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

from bench.node_process import NodeProcess  # noqa: E402
from bench.soak_crash import (  # noqa: E402
    chunked_send,
    free_port,
    index_rows,
    init_home,
    quiet_pynetdicom,
    run_check,
    run_soak,
    summary,
    write_instance,
)
from pynetdicom import AE  # noqa: E402
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian  # noqa: E402

pytestmark = pytest.mark.timeout(180)


def say(request: pytest.FixtureRequest, text: str) -> None:
    """A line on the terminal even when output is captured (the numbers are the point of these tests)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None:
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            reporter.write_line(text)


def test_sigkill_cycles_lose_no_acknowledged_instance(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    lines: list[str] = []
    # each kill also loses the index's WAL tail (a power cut: rows commit without their own fsync)
    results = run_soak(tmp_path, cycles=3, senders=4, seed=7, max_run=1.5, log=lines.append, lose_wal_tail=True)
    totals = summary(results)
    say(request, "\n" + "\n".join(lines) + f"\ncrash soak (short): {totals}")
    problems = [p for r in results for p in r.problems]
    assert problems == []
    assert len(results) == 3
    assert totals["wal_cut_cycles"] >= 1, "no cycle lost its WAL tail: the recovery was not exercised"
    assert totals["acked"] > 0 and totals["attempted"] >= totals["acked"]


def test_kill_during_a_large_transfer_leaves_only_a_repairable_temp_file(tmp_path: Path) -> None:
    """The dataset is half received when the server dies: no row, a temp file check reports and repairs."""
    quiet_pynetdicom()
    port = free_port()
    home = init_home(tmp_path / "home", port)
    uid = "1.2.826.0.1.3680043.10.1078.66.9.1"
    big = write_instance(tmp_path / "big.dcm", f"{uid}.0", f"{uid}.0.1", f"{uid}.1", "KILLMID", rows=2048, cols=2048)
    server = NodeProcess(home, port=port, log_path=tmp_path / "serve.log", ready="echo", start_timeout=30).start()
    outcome: dict[str, object] = {}

    def send() -> None:
        ae = AE(ae_title="BIGSCU")
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        ae.maximum_pdu_size = 16384  # many small PDUs: the transfer takes a while
        assoc = ae.associate("127.0.0.1", port, ae_title="PACSNODE")
        try:
            rsp = assoc.send_c_store(big) if assoc.is_established else None
            outcome["status"] = int(rsp.Status) if rsp is not None and "Status" in rsp else None
        except (RuntimeError, OSError):
            outcome["status"] = None

    try:
        with chunked_send():
            thread = threading.Thread(target=send, daemon=True)
            thread.start()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                partial = [p for p in (home / "tmp").glob("*") if p.stat().st_size > 1 << 20]
                if partial:
                    break
                time.sleep(0.01)
            else:
                pytest.fail("no partial temporary file appeared")
            server.kill()
            thread.join(30)
        assert outcome.get("status") is None  # never acknowledged
        after_kill = run_check(home)
        assert after_kill.temporary and not (after_kill.missing or after_kill.changed or after_kill.orphan)
        assert index_rows(home) == []
        assert run_check(home, repair=True).returncode == 0
        assert run_check(home).clean
        server.start()  # and a restarted server answers again
        assert not list((home / "tmp").glob("*"))
    finally:
        server.stop()
