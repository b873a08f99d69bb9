"""Several nodes, one archive (issue 16 item 3), proven with two real ``pacsnode serve`` and DCMTK.

Two homes, ``node-1`` and ``node-2``, point at one SQLite index and one storage folder outside
both (``[node] index_file`` / ``storage_dir`` absolute): what one node stores the other finds,
moves and serves over DICOMweb at once; peers and tokens registered through one are the other's;
each association and web request is audited with the name of the node that served it; a study
that went quiet is checked by one node only; a repair run from one home never removes a file
the other node has placed but not yet indexed.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pydicom
import pytest
import requests

from cluster_support import (SharedArchive, add_peer, create_token, find_study_uids, move_study,
                             wado_instance)
from support import NodeProcess, Storescp, a_ct_file, have_tool, make_series

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not all(have_tool(t) for t in ("storescu", "findscu", "movescu", "storescp")),
                       reason="DCMTK (storescu, findscu, movescu, storescp) is not installed"),
]


@dataclass
class Pair:
    one: NodeProcess
    two: NodeProcess
    dest: Storescp
    base: Path
    archive: SharedArchive
    s3: Any = None  # (client, bucket, prefix) on the postgres+s3 archive


@pytest.fixture(scope="module", params=["files", pytest.param("postgres+s3", marks=[pytest.mark.postgres,
                                                                                   pytest.mark.s3])])
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Two served nodes on one archive: SQLite + a folder, or PostgreSQL + SeaweedFS."""
    base = tmp_path_factory.mktemp("cluster")
    archive = SharedArchive(request.param, base / "archive")
    archive.folder.mkdir()
    s3 = None
    with pytest.MonkeyPatch.context() as env:
        if request.param != "files":
            from engines import s3_client

            server = request.getfixturevalue("s3_server")
            for key, value in server.env().items():  # serve and the CLI read the credentials from here
                env.setenv(key, value)
            archive.index_url = request.getfixturevalue("postgres_server").create_database()
            prefix = f"cluster-{secrets.token_hex(4)}"
            archive.storage_url = server.url(prefix)
            s3 = (s3_client(server), server.bucket, prefix)
        one = archive.node(base / "n1", "node-1", stable_seconds=1)
        two = archive.node(base / "n2", "node-2", stable_seconds=1)
        dest = Storescp(base / "dest", "DEST")
        try:
            dest.start()
            one.start()
            two.start()
            add_peer(one, "dest", "DEST", dest.port)  # through node 1 only: node 2 must know them too
            for aet in ("FINDSCU", "MOVESCU"):
                add_peer(one, aet.lower(), aet, 1)
            yield Pair(one, two, dest, base, archive, s3)
        finally:
            archive.stop()
            dest.stop()


def _diagnosis(pair: Pair) -> str:
    """What the archive recorded, and what each node wrote to stderr, for a failure message."""
    lines = [json.dumps(e) for e in _audit(pair.one)[-15:]]
    for node in (pair.one, pair.two):
        lines.append(f"--- {node.home.name} port {node.port} stderr:\n{node.stderr_text()[-3000:]}")
    return "\n".join(lines)


def _audit(node: NodeProcess) -> list[dict[str, object]]:
    result = node.cli("audit", "--json", "--limit", "100000")
    assert result.returncode == 0, result.explain()
    return list(json.loads(result.stdout))


def test_an_instance_stored_through_one_node_is_found_moved_and_served_by_the_other_at_once(
        pair: Pair) -> None:
    one, two, dest, base = pair.one, pair.two, pair.dest, pair.base
    # an odd-length UID (findscu prints its NUL padding inside the brackets): a random one
    # is odd about one time in ten, and the pattern of the helper missed it (CI failed on it)
    study_uid = pydicom.uid.generate_uid()[:63]
    files = make_series(a_ct_file(), base / "study-a", 3, study_uid=study_uid, PatientID="CLUSTER-A",
                        PatientName="CLUSTER^A")
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    stored = one.store(files)
    assert [r.status for r in stored.store_responses] == [0, 0, 0], stored.explain()
    # at once: no wait, no sync step between the nodes
    found = find_study_uids(two, "CLUSTER-A")
    assert found == [ds.StudyInstanceUID], _diagnosis(pair)
    dest.clear()
    moved = move_study(two, ds.StudyInstanceUID, "DEST")
    assert moved == {"status": 0, "completed": 3}
    assert set(dest.received()) == {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files}
    token = create_token(one, "cluster-viewer")  # a token made through node 1 ...
    answer = wado_instance(two, token, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert answer.status_code == 200, answer.text[:400]  # ... is honoured by node 2
    assert files[0].read_bytes()[132:][-512:] in answer.content


def test_each_node_audits_what_it_served_under_its_own_name(
        pair: Pair) -> None:
    one, two = pair.one, pair.two
    assert one.echo(aet="ECHO_ONE").returncode == 0
    assert two.echo(aet="ECHO_TWO").returncode == 0
    refused = requests.get(f"{two.web_url}/studies", headers={"Authorization": "Bearer forged-cluster"}, timeout=30)
    assert refused.status_code == 401
    token = create_token(one, "audit-viewer")
    answered = requests.get(f"{two.web_url}/studies?PatientID=NOBODY", headers={"Authorization": f"Bearer {token}"},
                            timeout=30)
    assert answered.status_code in (200, 204), answered.text[:300]
    events = _audit(one)  # one audit for the archive, read through either node
    later = _audit(two)  # a row may commit between the two reads (audit rows take no lock), none may vanish
    assert [e for e in events if e not in later] == []
    by_aet = {e["peer_aet"]: e["node"] for e in events if e["action"] == "association"}
    assert by_aet["ECHO_ONE"] == "node-1" and by_aet["ECHO_TWO"] == "node-2"
    refusals = [e for e in events if e["action"] == "web-auth"]
    assert refusals and {e["node"] for e in refusals} == {"node-2"}, refusals
    queries = [e for e in events if e["peer_name"] == "token:audit-viewer" and e["action"] == "find"]
    assert queries and {e["node"] for e in queries} == {"node-2"}, queries
    only_two = json.loads(two.cli("audit", "--json", "--node", "node-2").stdout)
    assert only_two and {e["node"] for e in only_two} == {"node-2"}


def test_studies_that_went_quiet_are_checked_by_exactly_one_of_the_nodes(
        pair: Pair) -> None:
    one, two, base = pair.one, pair.two, pair.base
    studies = []
    for n in range(6):
        files = make_series(a_ct_file(), base / f"quiet-{n}", 2, PatientID=f"QUIET-{n}")
        studies.append(str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID))
        stored = (one if n % 2 else two).store(files)
        assert [r.status for r in stored.store_responses] == [0, 0], stored.explain()
    rows: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        rows = {k: v for k, v in pair.archive.work_items().items() if k in studies}
        if len(rows) == len(studies) and all(r["state"] == "done" for r in rows.values()):
            break
        time.sleep(1)
    assert sorted(rows) == sorted(studies), rows
    assert {r["state"] for r in rows.values()} == {"done"}, rows
    assert {r["attempts"] for r in rows.values()} == {1}, f"a study was claimed twice: {rows}"
    assert {r["node"] for r in rows.values()} <= {"node-1", "node-2"}
    checked = [e for e in _audit(one) if e["action"] == "qc" and e["study_uid"] in studies]
    assert sorted(str(e["study_uid"]) for e in checked) == sorted(studies)  # one automatic decision each
    assert all(e["node"] == rows[str(e["study_uid"])]["node"] for e in checked)  # by the node that claimed it


def test_a_repair_from_one_home_leaves_a_file_the_other_node_is_indexing_alone(
        pair: Pair) -> None:
    """node 1 stopped, node 2 serving: node 1's home lock is free, the archive's is not. A file
    just placed in the shared storage (node 2 between "file placed" and "row committed") is in
    flight, not an orphan; a repair that thought itself offline would delete it, and node 2
    would then acknowledge an instance whose file is gone."""
    one = pair.one
    relative = "ff/ff/1.2.3.4.5.6.7.8.9.dcm"
    pair.archive.plant(relative, b"\0" * 200, pair.s3)
    one.stop()
    try:
        repaired = one.check("--repair")
        assert pair.archive.holds(relative, pair.s3), repaired.explain()
        assert "left alone: 1 unindexed file" in repaired.stderr, repaired.explain()
    finally:
        pair.archive.unplant(relative, pair.s3)
        one.start()
