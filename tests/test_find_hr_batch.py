"""The PACSNODE HR block of a C-FIND is computed for all matches in one batch (issue 13 item 7).

A node with the shipped region (``recognition.toml``) serves a Listener on a free port; DCMTK
``findscu`` asks for the block over patients with 3 and with 40 studies. The index queries the
node runs for the whole C-FIND (access, matching, advice for every match) are counted: they must
not grow with the number of matches (before, each match cost eight more). Each response's block
must equal what the one-study path (``Node.hr_values``) says for that study.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from pacsnode.config import IndexSettings, NodeConfig, QuerySettings, StoreSettings
from pacsnode.dicom.private_hr import read_hr_block
from pacsnode.dimse.listener import Listener
from pacsnode.model import DuplicatePolicy, InstanceFacts, Peer, StoredFile
from pacsnode.node import Node
from support import dcmtk, have_tool

pytestmark = pytest.mark.skipif(not have_tool("findscu"), reason="DCMTK findscu is not installed")
ROOT = "1.2.826.0.1.3680043.10.1078.79"
CT = "1.2.840.10008.5.1.4.1.1.2"
INSTITUTION = "PRV001"
SIZES = {"FEW": 3, "MANY": 40}


def facts(patient: str, i: int) -> InstanceFacts:
    study = f"{ROOT}.{len(patient)}{i}.{sum(map(ord, patient))}"
    return InstanceFacts(
        sop_instance_uid=f"{study}.1.1", sop_class_uid=CT, study_uid=study, series_uid=f"{study}.1",
        transfer_syntax="1.2.840.10008.1.2.1", patient_id=patient, issuer_of_patient_id="HOSP_A", patient_name="Hr^Batch",
        study_date=f"202401{1 + i % 28:02d}", modality="CT", body_part="HEAD", series_number=1, instance_number=1,
        institution_name="Qianzhong Provincial People's Hospital")


class CountingNode(Node):
    """A node that counts the SQL statements its index runs (the test's own object, nothing patched)."""

    statements = 0

    def __init__(self, config: NodeConfig) -> None:
        super().__init__(config)
        query = self.index.query

        def counted(sql: str, params: Any = ()) -> Any:
            type(self).statements += 1
            return query(sql, params)

        self.index.query = counted  # type: ignore[method-assign]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, index_factory: Any) -> Iterator[tuple[CountingNode, Listener]]:
    home = tmp_path_factory.mktemp("hrbatch") / "home"
    home.mkdir()
    shutil.copy(Path(__file__).resolve().parent.parent / "pacsnode" / "defaults" / "recognition.toml",
                home / "recognition.toml")
    config = NodeConfig(home=home, port=0, institution=INSTITUTION, store=StoreSettings(fsync=False),
                        query=QuerySettings(max_results=0), index=IndexSettings(url=index_factory.url()))
    node = CountingNode(config)
    node.add_peer(Peer("findscu", "FINDSCU", "127.0.0.1", 1, institution=INSTITUTION))
    for patient, count in SIZES.items():
        for i in range(count):
            node.index.record_instance(facts(patient, i), StoredFile(f"{patient}/{i}.dcm", 1, "0" * 64), "TEST",
                                       DuplicatePolicy.KEEP_FIRST)
    assert node.regional.region is not None
    listener = Listener(node, host="127.0.0.1", port=0)
    listener.start()
    try:
        yield node, listener
    finally:
        listener.stop(grace=1.0)
        node.close()


def find_with_hr(listener: Listener, patient: str, out: Path) -> list[Dataset]:
    out.mkdir()
    args = [dcmtk("findscu"), "-S", "-aet", "FINDSCU", "-aec", "PACSNODE", "-X", "-od", str(out),
                   "-k", "QueryRetrieveLevel=STUDY", "-k", f"PatientID={patient}", "-k", "IssuerOfPatientID=HOSP_A",
                   "-k", "StudyInstanceUID", "-k", "(0011,0010)=PACSNODE HR", "-k", "(0011,1001)",
                   "-k", "(0011,1002)", "-k", "(0011,1003)", "-k", "(0011,1004)", "-k", "(0011,1005)",
                   "-k", "(0011,1006)", "127.0.0.1", str(listener.port)]
    done = subprocess.run(args, capture_output=True, timeout=60)
    assert done.returncode == 0, (done.stdout + done.stderr).decode("utf-8", "replace")
    return [dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]


def test_hr_block_costs_the_same_index_queries_for_3_and_for_40_matches(
        served: tuple[CountingNode, Listener], tmp_path: Path) -> None:
    node, listener = served
    cost = {}
    for patient, count in SIZES.items():
        before = CountingNode.statements
        responses = find_with_hr(listener, patient, tmp_path / patient)
        cost[patient] = CountingNode.statements - before
        assert len(responses) == count
        caller = node.identify("FINDSCU", "127.0.0.1")
        for response in responses:
            block = read_hr_block(response)
            single = node.hr_values(str(response.StudyInstanceUID), caller)
            assert block["status"] == single["status"] and block["status"] in ("HR_ELIGIBLE", "NOT_ELIGIBLE")
            assert block["scope"] == single["scope"] and block["producer"] == single["producer"] == INSTITUTION
            assert list(block["failed"]) == single["failed"] and block["item"] == single["item"]
    assert cost["MANY"] == cost["FEW"], f"index statements per C-FIND: {cost}"
