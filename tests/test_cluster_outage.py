"""An archive's engines fail under a serving node (issue 16, reliability): never a false Success.

PostgreSQL is killed (SIGKILL of the server and all its backends) under a serving node: a
C-STORE on an association opened before is answered with a failure status (0xA700 Out of
Resources or 0xC000 Cannot Understand), never Success, and leaves nothing behind; a new
association meanwhile is rejected as transient (who calls cannot be looked up); once PostgreSQL is back (crash recovery)
the node stores again without a restart, and ``check`` is clean.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from support import NodeProcess, a_ct_file, have_tool, make_series

pytestmark = [pytest.mark.postgres, pytest.mark.interop,
              pytest.mark.skipif(not have_tool("storescu"), reason="DCMTK storescu is not installed")]

FAILURES = (0xA700, 0xC000)


@contextmanager
def held_association(node: NodeProcess) -> Iterator[Any]:
    """A pynetdicom storage association to ``node``, released (or aborted) at the end."""
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage, Verification

    ae = AE(ae_title="OUTAGE")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.port, ae_title=node.aet)
    assert assoc.is_established
    try:
        yield assoc
    finally:
        assoc.release() if assoc.is_established else assoc.abort()


def test_a_store_while_postgresql_is_down_answers_a_failure_never_success(tmp_path: Path) -> None:
    from engines import EngineMissing, start_postgres

    try:
        server = start_postgres(fsync=True)  # its own server (this test kills it), durable: a commit survives the kill
    except EngineMissing as exc:
        pytest.skip(str(exc))
    node = NodeProcess(tmp_path / "home", institution="PRV001").init()
    try:
        node.configure("index", "url", server.create_database("outage")).configure("network", "acse_timeout", 3)
        node.start()
        files = make_series(a_ct_file(), tmp_path / "study", 3, PatientID="OUTAGE")
        uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
        first = node.store(files[:1])
        assert first.status_of(uids[0]) == 0, first.explain()

        with held_association(node) as assoc:  # opened (and audited) while PostgreSQL is up ...
            assert int(assoc.send_c_echo().Status) == 0
            server.kill()
            answer = assoc.send_c_store(pydicom.dcmread(files[1]))  # ... the store arrives while it is down
            status = int(answer.Status) if "Status" in answer else -1
            assert status in FAILURES, f"0x{status:04X} while PostgreSQL was down"
        down = node.store(files[1:2], timeout=90)  # a new association while it is down
        assert all(r.status != 0 for r in down.store_responses), down.explain()
        assert "Association Rejected" in down.output, down.explain()  # transient: the modality retries later

        server.restart()
        deadline = time.monotonic() + 90  # the pool reconnects with a back-off; a modality retries likewise
        while True:
            again = node.store(files[1:], timeout=90)
            if again.store_responses or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert [again.status_of(uid) for uid in uids[1:]] == [0, 0], again.explain()
        [study] = json.loads(node.cli("studies", "--json").stdout)
        assert study["instance_count"] == 3
        checked = node.check()
        assert checked.returncode == 0 and "index and files agree" in checked.stdout, checked.explain()
    finally:
        node.stop()
        server.stop()
