"""QC through the node: ``Node.import_paths`` runs the checks, the status workflow moves with
stores and reviewer decisions, a rejected study disappears from peers, reports and previews.

Every test imports copies of ``sample_dicom/`` files (the county's folder: studies 2, 4, 5, 13)
into a node home in ``tmp_path`` that holds the shipped rule files, so the recognition rules
and the QC rules are the ones a real node runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from pacsnode.config import NodeConfig, parse_config
from pacsnode.dicom.query import parse_identifier
from pacsnode.errors import NotPermitted, PacsnodeError
from pacsnode.model import Caller, InformationModel, Peer, StoreResult
from pacsnode.node import Node
from support import REPO, SAMPLE_DIR

pytestmark = pytest.mark.skipif(not (SAMPLE_DIR / "CTY001").is_dir(), reason="sample_dicom/ is not generated")

UID_ROOT = "1.2.826.0.1.3680043.10.1078.1."
CT_CHEST = UID_ROOT + "2"  # CHEN^JIANGUO, P0815 @ CTY001: CT x5, CT x5, DOC x1
CR_CHEST = UID_ROOT + "4"  # ZHAO^LEI: CR x2
DX_CHEST = UID_ROOT + "13"  # ZHOU^MING: DX x1
COUNTY_STUDIES = {CT_CHEST, CR_CHEST, UID_ROOT + "5", DX_CHEST}
PROVINCIAL = Peer("provincial", "PRV_PACS", "127.0.0.1", 11112, "PRV001")
WORKSTATION = Peer("reading-room", "CTY_WS", "127.0.0.1", 11113, "CTY001")


# -- fixtures (node homes with the shipped rules; may move to conftest.py) ----------------------
def county_home(home: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    for name in ("recognition.toml", "qc_rules.toml"):
        shutil.copyfile(REPO / "config" / name, home / name)
    return home


@pytest.fixture
def open_node(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    """``open_node(qc={"auto_accept": False})``: a county node (CTY001) in a fresh home, closed in teardown."""
    opened: list[Node] = []

    def make(**tables: dict[str, Any]) -> Node:
        home = county_home(tmp_path / f"home{len(opened)}")
        settings = {"node": {"aet": "CTY_PACS", "institution": "CTY001"}} | tables
        config: NodeConfig = parse_config(settings, home)
        node = Node(config)
        opened.append(node)
        return node

    yield make
    for node in opened:
        node.close()


@pytest.fixture
def county(open_node: Callable[..., Node]) -> Node:
    node = open_node()
    node.add_peer(PROVINCIAL)
    node.add_peer(WORKSTATION)
    return node


def copy_study(study_uid: str, to: Path, change: Callable[[Dataset], None] | None = None) -> Path:
    """Copies of one sample study's files (changed by ``change``), in a folder of their own."""
    folder = to / study_uid
    for path in sorted(SAMPLE_DIR.rglob("*.dcm")):
        ds = dcmread(path)
        if ds.StudyInstanceUID != study_uid:
            continue
        if change is not None:
            change(ds)
        target = folder / path.relative_to(SAMPLE_DIR)
        target.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(target)
    assert folder.is_dir(), f"no sample files for {study_uid}"
    return folder


def copy_county(to: Path) -> Path:
    target = to / "CTY001"
    shutil.copytree(SAMPLE_DIR / "CTY001", target)
    return target


def status_of(node: Node, study_uid: str) -> str:
    return {row["study_uid"]: row["status"] for row in node.qc.listing()}[study_uid]


def study_query(**keys: str) -> Any:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = ""
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return parse_identifier(ds, InformationModel.STUDY_ROOT)


def found(node: Node, caller: Caller, **keys: str) -> set[str]:
    return {str(m.get("StudyInstanceUID") or m.get("_study_uid")) for m in node.find(study_query(**keys), caller)}


CHEN_AT_COUNTY = {"PatientID": "P0815", "IssuerOfPatientID": "CTY001"}


# -- import runs the checks ---------------------------------------------------------------------
def test_import_runs_the_checks_and_accepts_passing_studies(county: Node, tmp_path: Path) -> None:
    report = county.import_paths([copy_county(tmp_path)])
    assert (report.stored, report.rejected) == (19, [])
    assert report.qc == {uid: "accepted" for uid in COUNTY_STUDIES}
    for row in county.qc.listing():
        assert row["status"] == "accepted" and row["checked_at"] and row["failed_checks"] == []
        assert row["reviewer"] == "pacsnode-qc"
    detail = county.regional_store.qc_status(CT_CHEST)
    assert detail is not None and detail["ruleset_version"] == county.qc.rules.version
    assert detail["outcomes"] and all(o["passed"] or o["severity"] != "fail" for o in detail["outcomes"])
    audited = {(e.action, e.outcome, e.study_uid) for e in county.audit.events()}
    assert {("qc", "accepted", uid) for uid in COUNTY_STUDIES} <= audited


def _no_issuer(ds: Dataset) -> None:
    del ds.IssuerOfPatientID


def _no_body_part(ds: Dataset) -> None:
    for keyword in ("BodyPartExamined", "ProcedureCodeSequence"):
        if keyword in ds:
            delattr(ds, keyword)


@pytest.mark.parametrize("change, check", [(_no_issuer, "QC-ID-ISSUER"), (_no_body_part, "QC-ID-BODY-PART")],
                         ids=["issuer-removed", "body-part-removed"])
def test_a_study_failing_a_check_goes_to_needs_fix(county: Node, tmp_path: Path,
                                                   change: Callable[[Dataset], None], check: str) -> None:
    report = county.import_paths([copy_study(DX_CHEST, tmp_path, change)])
    assert report.qc == {DX_CHEST: "needs-fix"}
    [row] = county.qc.listing("needs-fix")
    assert row["study_uid"] == DX_CHEST and check in row["failed_checks"]
    assert check in county.qc.current(DX_CHEST).note  # type: ignore[union-attr]
    assert "qc_not_accepted" in county.desk.explain(DX_CHEST).failed


def test_checks_never_override_a_reviewer(county: Node, tmp_path: Path) -> None:
    county.import_paths([copy_study(DX_CHEST, tmp_path, _no_issuer)])
    county.qc.accept(DX_CHEST, "B", "Dr Li", note="issuer known from the order")
    decision, outcomes = county.qc.run(DX_CHEST)
    assert decision.status.value == "accepted" and decision.reviewer == "Dr Li"
    assert any(o.code == "QC-ID-ISSUER" and not o.passed for o in outcomes)


# -- the status workflow through the node --------------------------------------------------------
def _new_instance_of(node: Node, study_uid: str, tmp_path: Path) -> Path:
    """A temporary file in the node's temp area: a new CR image of an existing study."""
    template = next(p for p in sorted((SAMPLE_DIR / "CTY001").rglob("*.dcm"))
                    if dcmread(p, stop_before_pixels=True).StudyInstanceUID == study_uid)
    ds = dcmread(template)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = 3
    temp = node.new_temp_file()
    ds.save_as(temp)
    return temp


def test_a_new_instance_sends_an_accepted_study_back_to_pending(county: Node, tmp_path: Path) -> None:
    county.import_paths([copy_study(CR_CHEST, tmp_path)])
    accepted = county.qc.accept(CR_CHEST, "a", "Dr Li")
    assert (accepted.status.value, accepted.grade) == ("accepted", "A")
    outcome = county.store_file(_new_instance_of(county, CR_CHEST, tmp_path), Caller.nobody("CTY_DR"))
    assert outcome.result is StoreResult.STORED and outcome.study_uid == CR_CHEST
    current = county.qc.current(CR_CHEST)
    assert current is not None and current.status.value == "pending" and "was grade A" in current.note
    assert "qc_not_accepted" in county.desk.explain(CR_CHEST).failed
    # a duplicate changes nothing; the checks (stable study) accept the grown study again
    again = county.import_paths([copy_study(CR_CHEST, tmp_path / "again")])
    assert again.duplicate == 2 and again.qc == {}
    assert status_of(county, CR_CHEST) == "pending"
    decision, _outcomes = county.qc.run(CR_CHEST)
    assert decision.status.value == "accepted"
    history = county.index.query("SELECT status FROM qc_history WHERE study_uid=? ORDER BY pk", (CR_CHEST,))
    assert [r[0] for r in history] == ["accepted", "accepted", "pending", "accepted"]


def test_rejected_study_is_hidden_from_another_institution_until_restored(county: Node, tmp_path: Path) -> None:
    county.import_paths([copy_county(tmp_path)])
    provincial = county.identify("PRV_PACS", "127.0.0.1")
    workstation = county.identify("CTY_WS", "127.0.0.1")
    assert provincial.peer == PROVINCIAL and workstation.peer == WORKSTATION
    assert found(county, provincial, **CHEN_AT_COUNTY) == {CT_CHEST}

    rejected = county.qc.reject(CT_CHEST, "113001", "Dr Li", note="motion artefact")
    assert rejected.status.value == "rejected"
    assert found(county, provincial, **CHEN_AT_COUNTY) == set()
    assert found(county, provincial, StudyInstanceUID=CT_CHEST) == set()
    assert found(county, workstation, **CHEN_AT_COUNTY) == {CT_CHEST}  # local staff still see it, to fix it
    assert CT_CHEST in found(county, Caller.local_admin())
    with pytest.raises(NotPermitted, match="no study matches") as refused:  # hidden equals absent on the wire
        county.retrieve(study_query(StudyInstanceUID=CT_CHEST), provincial, "move")
    assert refused.value.audit_reason.startswith("unavailable")  # the audit trail keeps the cause
    with pytest.raises(PacsnodeError, match="restore it first"):
        county.qc.accept(CT_CHEST, "3", "Dr Li")
    assert county.qc.run(CT_CHEST)[0].status.value == "rejected"  # re-running checks does not un-reject

    restored = county.qc.restore(CT_CHEST, "Dr Li")
    assert restored.status.value == "pending"
    assert found(county, provincial, **CHEN_AT_COUNTY) == {CT_CHEST}
    assert county.retrieve(study_query(StudyInstanceUID=CT_CHEST), provincial, "move")
    outcomes = [(e.action, e.outcome) for e in county.audit.events(study_uid=CT_CHEST)]
    assert ("qc", "rejected") in outcomes and ("qc", "pending") in outcomes
    assert ("move", "refused") in outcomes


def test_auto_accept_off_leaves_studies_pending(open_node: Callable[..., Node], tmp_path: Path) -> None:
    node = open_node(qc={"auto_accept": False})
    report = node.import_paths([copy_county(tmp_path), copy_study(UID_ROOT + "9", tmp_path, _no_issuer)])
    assert report.qc == {uid: "pending" for uid in COUNTY_STUDIES} | {UID_ROOT + "9": "needs-fix"}
    assert {row["status"] for row in node.qc.listing() if row["study_uid"] in COUNTY_STUDIES} == {"pending"}
    assert node.qc.run(CT_CHEST)[0].status.value == "pending"
    assert node.qc.accept(CT_CHEST, "3", "Dr Li").status.value == "accepted"


# -- report and preview ------------------------------------------------------------------------------
def test_qc_report_gives_pass_rates_and_failing_checks(county: Node, tmp_path: Path) -> None:
    county.import_paths([copy_county(tmp_path), copy_study(UID_ROOT + "9", tmp_path, _no_issuer)])
    report = county.qc.report()
    groups = {g["institution"]: g for g in report["groups"]}
    assert groups["CTY001"] == {"institution": "CTY001", "checked": 4, "passed_checks": 4, "pass_rate": 1.0,
                                "accepted": 4, "rejected": 0, "needs_fix": 0, "pending": 0}
    assert groups["TWN001"] == {"institution": "TWN001", "checked": 1, "passed_checks": 0, "pass_rate": 0.0,
                                "accepted": 0, "rejected": 0, "needs_fix": 1, "pending": 0}
    assert report["top_failing_checks"] == [{"code": "QC-ID-ISSUER", "studies": 1}]
    by_modality = {g["modality"]: g for g in county.qc.report(by="modality")["groups"]}
    assert by_modality["CT"]["checked"] == 2 and by_modality["US"]["pass_rate"] == 0.0
    assert county.qc.report(since="2999-01-01")["groups"] == []


def test_preview_writes_one_tile_per_series(county: Node, tmp_path: Path) -> None:
    county.import_paths([copy_study(CT_CHEST, tmp_path)])
    out = tmp_path / "sheet.png"
    info = county.qc.preview(CT_CHEST, out, tile=128)
    assert [(t.series_number, t.kind) for t in info.tiles] == [(1, "image"), (2, "image"), (100, "placeholder")]
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (info.width, info.height) == (256, 256)
        pixels = np.asarray(image.convert("L"))
        for tile in info.tiles:
            if tile.kind == "image":
                assert tile.image_box is not None
                left, top, right, bottom = tile.image_box
                area = pixels[top:bottom, left:right]
                assert area.size and area.std() > 1.0, f"series {tile.series_number} tile is blank"
    with pytest.raises(PacsnodeError, match="no study"):
        county.qc.preview(UID_ROOT + "999", tmp_path / "none.png")


def test_a_study_that_went_quiet_is_checked_once_by_the_stable_study_pass(county: Node, tmp_path: Path) -> None:
    """Stored over the network (no import), a study is checked when stable, then not again."""
    county.import_paths([copy_study(CR_CHEST, tmp_path)])
    county.store_file(_new_instance_of(county, CR_CHEST, tmp_path), Caller.nobody("CTY_DR"))
    assert county.regional_store.qc_status(CR_CHEST)["checked_at"] < \
        county.index.query("SELECT updated_at FROM studies WHERE study_uid=?", (CR_CHEST,))[0][0]
    assert county.qc.run_stable(stable_seconds=3600) == []  # not quiet for an hour yet
    assert county.qc.run_stable(stable_seconds=0) == [CR_CHEST]
    assert status_of(county, CR_CHEST) == "accepted"
    assert county.qc.run_stable(stable_seconds=0) == []  # checked since its last instance
