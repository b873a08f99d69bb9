"""QIDO-RS paging happens in SQL: ``offset`` is an SQL OFFSET, not a slice of everything read (issue 14).

A node holds 40 studies of one patient; a QIDO page (``limit=2&offset=30``) through ``Node.find``
must return exactly the matches 30..32 of the full ordered answer (two plus the one that says
more exist) while the index reads no more than those three study rows. Before, every match up
to offset + limit + 1 was read and the page sliced out of them.
"""

from __future__ import annotations

from typing import Any

from pacsnode.config import NodeConfig, StoreSettings
from pacsnode.model import Caller, DuplicatePolicy, InformationModel, InstanceFacts, Level, Query, QueryKey, StoredFile
from pacsnode.node import Node

ROOT = "1.2.826.0.1.3680043.10.1078.81"
CT = "1.2.840.10008.5.1.4.1.1.2"


class RowCountingNode(Node):
    """A node that records how many rows each index query returned (its own object, nothing patched)."""

    def __init__(self, config: NodeConfig) -> None:
        super().__init__(config)
        self.rows_read: list[int] = []
        query = self.index.query

        def counted(sql: str, params: Any = ()) -> Any:
            rows = query(sql, params)
            if sql.lstrip().upper().startswith("SELECT") and " FROM studies" in sql:
                self.rows_read.append(len(rows))
            return rows

        self.index.query = counted  # type: ignore[method-assign]


def test_a_qido_page_reads_only_its_rows_and_equals_the_slice_of_the_full_answer(tmp_path: Any) -> None:
    node = RowCountingNode(NodeConfig(home=tmp_path / "home", port=0, institution="PRV001",
                                      store=StoreSettings(fsync=False)))
    try:
        for i in range(40):
            study = f"{ROOT}.{i + 1}"
            facts = InstanceFacts(sop_instance_uid=f"{study}.1.1", sop_class_uid=CT, study_uid=study,
                                  series_uid=f"{study}.1", transfer_syntax="1.2.840.10008.1.2.1", patient_id="PAGE1",
                                  issuer_of_patient_id="PRV001", patient_name="Page^Test",
                                  study_date=f"2024{1 + i // 28:02d}{1 + i % 28:02d}", modality="CT",
                                  series_number=1, instance_number=1)
            node.index.record_instance(facts, StoredFile(f"{i}.dcm", 1, "0" * 64), "TEST", DuplicatePolicy.KEEP_FIRST)
        query = Query(Level.STUDY, InformationModel.STUDY_ROOT,
                      (QueryKey("PatientID", "LO", "PAGE1"), QueryKey("StudyInstanceUID", "UI")))
        admin = Caller.local_admin()
        everything = [m["StudyInstanceUID"] for m in node.find(query, admin, page_limit=1000)]
        assert len(everything) == 40
        node.rows_read.clear()
        page = [m["StudyInstanceUID"] for m in node.find(query, admin, page_limit=2, page_offset=30)]
        assert page == everything[30:33]  # the page and the one more that says "additional results"
        assert node.rows_read and max(node.rows_read) <= 3, node.rows_read
        assert [m["StudyInstanceUID"] for m in node.find(query, admin, page_limit=5, page_offset=38)] == everything[38:]
        assert list(node.find(query, admin, page_limit=5, page_offset=40)) == []
    finally:
        node.close()
