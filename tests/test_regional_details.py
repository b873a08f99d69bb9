"""Recognition details across the sample region: every condition code whole on the wire (issues 12 and 10),
provenance over claims (issue 10 item 8) and IOCM rejection notes (issue 12 item 4).

Its own three-node region (``tests/regional_support.py``), apart from ``test_regional_e2e.py``'s, so the
two modules run on different pytest-xdist workers: the studies made and stored here never show up in
that module's priors or audit trail, and its moves and decisions never show up here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from iocm_factory import rejection_note
from regional_support import (MARKS, HR_KEYS, PRV_MR, RESIDENT_ISSUER, RULES, STUDIES, TWN_DX, VIEWER_AET, Region,
                              audit_events, expected_advice, findscu, hr_block, movescu, ok, patient_keys,
                              today)
from support import LOOPBACK, REPO, SAMPLE_DIR, NodeProcess, dcmtk, run_tool, write_instance

pytestmark = MARKS


# -- issues 12 and 10: recognition details, on the wire --------------------------------------------
# Studies made here (with make_sample_dicom's builders, not new files in sample_dicom/) for one
# test patient of the county, imported at the county node; the township (in the county's
# alliance, a lower level) asks for them with DCMTK findscu and with `pacsnode priors`.
MADE_RESIDENT_ID = "520121199505050099"
MADE = {  # study number -> (what it is, the failed conditions it must show the township)
    90: ("pdf-only report coded CT-CHEST-PLAIN", {"no_images"}),
    91: ("de-identified CT chest", {"incomplete"}),
    92: ("CT chest coded plain with a Contrast/Bolus Agent", {"item_mismatch"}),
    93: ("JPEG 2000 (.91) CT chest with Lossy Image Compression 00", {"lossy"}),
    94: ("MR brain from the county, which holds no MR qualification", {"producer_not_qualified"}),
    95: ("an unlisted PET study with no date and an unknown institution",
         {"item_not_listed", "item_mismatch", "no_images", "producer_unknown", "producer_not_qualified",
          "no_study_date", "outside_window", "level_rule"}),
}


def _builders() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_sample_dicom", REPO / "scripts" / "make_sample_dicom.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_sample_dicom", module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _write(path: Path, ds: Dataset, syntax: str) -> None:
    from pydicom.dataset import FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.filewriter import dcmwrite
    from pydicom.uid import UID

    if syntax != "1.2.840.10008.1.2.1":
        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(62)])  # the header decides; never decoded here
        ds["PixelData"].VR = "OB"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(syntax)
    ds.file_meta, ds.preamble = meta, b"\x00" * 128
    path.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(path, ds, enforce_file_format=True)


def make_studies(out: Path) -> dict[int, str]:
    """Write the MADE studies under ``out``; returns study number -> Study Instance UID."""
    sample = _builders()
    day = today().strftime("%Y%m%d")
    chest = {"region": "chest", "kernel": "B30f", "wc": "40", "ww": "400"}
    plans: dict[int, tuple[str, tuple[Any, ...], str]] = {
        90: ("CT-CHEST-PLAIN", (sample.SeriesSpec(100, "DOC", "report", 1, "CHEST",
                                                  {"source_ae": "CTY_PACS", "title": "CT Chest Report"}),), ""),
        91: ("CT-CHEST-PLAIN", (sample.SeriesSpec(1, "CT", "chest", 2, "CHEST", chest),), ""),
        92: ("CT-CHEST-PLAIN", (sample.SeriesSpec(1, "CT", "chest", 2, "CHEST", {**chest, "contrast": True}),), ""),
        93: ("CT-CHEST-PLAIN", (sample.SeriesSpec(1, "CT", "chest", 2, "CHEST", chest),), "1.2.840.10008.1.2.4.91"),
        94: ("MR-BRAIN-PLAIN", (sample.SeriesSpec(1, "MR", "brain", 2, "BRAIN", {"weighting": "T2"}),), ""),
        95: ("CT-CHEST-PLAIN", (sample.SeriesSpec(1, "CT", "pet", 2, "WHOLEBODY", chest),), ""),
    }
    uids = {}
    for sid, (procedure, series, syntax) in plans.items():
        study = sample.StudySpec(sid, "CTY001", "zhao", day, "090000", procedure, "rules", "CTY_CT", "AN^JING", series)
        for spec in series:
            device = sample.DEVICES[spec.options.get("source_ae", "CTY_CT")]
            for n in range(1, spec.count + 1):
                ds = sample.BUILDERS[spec.kind](study, spec, n, device)
                ds.PatientID, ds.PatientName = "T0099", "TEST^RULES"
                resident = Dataset()
                resident.PatientID, resident.IssuerOfPatientID = MADE_RESIDENT_ID, RESIDENT_ISSUER
                ds.OtherPatientIDsSequence = [resident]
                if sid == 91:
                    ds.PatientIdentityRemoved = "YES"
                    ds.DeidentificationMethod = "DICOM PS3.15 Basic Profile"
                if sid == 93:
                    ds.LossyImageCompression = "00"
                if sid == 95:
                    ds.Modality = "PT"
                    ds.InstitutionName = "Nowhere Imaging"
                    for keyword in ("StudyDate", "InstitutionCodeSequence", "ProcedureCodeSequence"):
                        delattr(ds, keyword)
                _write(out / f"{sid}" / f"{spec.number}-{n}.dcm", ds, syntax or "1.2.840.10008.1.2.1")
        uids[sid] = study.study_uid
    return uids


@pytest.fixture(scope="module")
def made(region: Region, tmp_path_factory: pytest.TempPathFactory) -> dict[int, str]:
    out = tmp_path_factory.mktemp("made")
    uids = make_studies(out)
    ok(region.cli("CTY001", "import", str(out)))
    return uids


def made_keys() -> list[str]:
    return patient_keys(MADE_RESIDENT_ID)


def test_recognition_details_reach_a_peer_with_every_code_whole(region: Region, made: dict[int, str],
                                                                tmp_path: Path) -> None:
    """Issue 12.1, 12.2, 12.5 and both details of issue 10, as DCMTK findscu sees them."""
    answer = findscu(region.nodes["CTY001"], "TWN_PACS", made_keys() + HR_KEYS, tmp_path)
    assert answer.status == 0x0000 and answer.study_uids == set(made.values()), answer.result.explain()
    blocks = {uid: hr_block(r) for uid, r in answer.by_uid().items()}
    for sid, (what, expected) in MADE.items():
        block = blocks[made[sid]]
        assert block["status"] == "NOT_ELIGIBLE", what
        assert expected <= block["failed"], (what, block["failed"])
        explained = region.explain(made[sid], "TWN001", "CTY001")
        assert set(explained["failed"]) == block["failed"], what
    raw = b"".join(p.read_bytes() for p in sorted(tmp_path.glob("rsp*.dcm")))  # the bytes DCMTK received
    assert raw.count(b"PRODUCER_NOT_QUALIFIED") == 2  # studies 94 and 95: whole, not PRODUCER_NOT_QUA
    assert b"PRODUCER_NOT_QUA\\" not in raw and not raw.count(b"PRODUCER_NOT_QUA") - 2


def test_a_pdf_only_study_is_accepted_by_qc_on_arrival_but_never_eligible(region: Region,
                                                                         made: dict[int, str]) -> None:
    """Issue 12.1 with [qc] auto_accept on (the default): QC may accept a report; recognition needs images."""
    statuses = {row["study_uid"]: row["status"] for row in region.json("CTY001", "qc", "list", "--json")}
    assert statuses[made[90]] == "accepted"
    explained = region.explain(made[90], "TWN001", "CTY001")
    assert explained["failed"] == ["no_images"]
    why = {c["code"]: c for c in explained["conditions"]}["no_images"]
    assert "needs CT images" in why["explanation"] and "DOC" in why["explanation"]
    assert why["decline_reason"] == "X1"


def test_one_lossiness_answer_for_qc_and_recognition_on_a_node(region: Region, made: dict[int, str]) -> None:
    """Issue 12.5: the .91 study with Lossy Image Compression 00 is lossy to QC and to the rules."""
    shown = region.json("CTY001", "qc", "show", made[93], "--json")
    lossy = [o for o in shown["outcomes"] if o["code"] == "QC-LOSSY"]
    assert lossy and not any(o["passed"] for o in lossy)
    assert "lossy" in region.explain(made[93], "TWN001", "CTY001")["failed"]


def test_priors_across_nodes_read_every_code_back_whole(region: Region, made: dict[int, str]) -> None:
    """Issue 10: `pacsnode priors` at the township reads the county's codes as the county explains them."""
    result = region.json("TWN001", "priors", "--resident-id", MADE_RESIDENT_ID, "--json")
    found = {p["study_uid"]: p for p in result["priors"]}
    assert set(found) == set(made.values())
    seen: set[str] = set()
    for sid, (what, expected) in MADE.items():
        prior = found[made[sid]]
        assert prior["source"] == "county" and prior["status"] == "NOT_ELIGIBLE", what
        assert set(prior["failed"]) == set(region.explain(made[sid], "TWN001", "CTY001")["failed"]), what
        assert expected <= set(prior["failed"]), what
        seen |= set(prior["failed"])
    from pacsnode.recognition import CONDITION_CODES

    # every code a peer can be sent, whole: viewer_unknown alone never leaves a node (an unknown
    # institution is refused at the door before any advice is computed); producer_not_vouched goes
    # on the wire in test_a_producer_claim_is_trusted_only_when_the_deliverer_vouches_for_it
    assert set(CONDITION_CODES) - seen - {"out_of_scope", "qc_not_accepted", "producer_not_vouched"} == {
        "viewer_unknown"}


def test_out_of_scope_comes_from_geography_on_the_wire(region: Region, tmp_path: Path) -> None:
    """Issue 12.3: PVT001 (geo 530102, Yunnan) is outside 黔HR (520000) with no in_scope flag in the file."""
    assert all("in_scope" not in inst for inst in RULES["institutions"])
    explained = region.explain(TWN_DX, "PVT001")
    why = {c["code"]: c for c in explained["conditions"]}["out_of_scope"]
    assert not why["holds"] and "530102" in why["explanation"] and "520000" in why["explanation"]
    assert {c["code"]: c for c in region.explain(TWN_DX, "CTY001")["conditions"]}["out_of_scope"]["holds"]


# -- provenance over claims (issue 10 item 8); these run last: they add studies and moves -----------
def _copy_with_new_uids(study_uid: str, folder: Path) -> tuple[str, list[Path]]:
    """The sample study's files with new study, series and instance UIDs (the headers still claim PRV001)."""
    new_study = f"2.25.{int.from_bytes(folder.name.encode()[:12].ljust(12, b'0'), 'big')}{len(folder.parts)}"
    paths = []
    for n, series in enumerate(STUDIES[study_uid]["series"]):
        new_series = f"{new_study}.{n + 1}"
        for m, name in enumerate(series["files"]):
            paths.append(write_instance(SAMPLE_DIR / name, folder / f"{n}-{m}.dcm", study_uid=new_study,
                                        series_uid=new_series, sop_instance_uid=f"{new_series}.{m + 1}"))
    return new_study, paths


DELIVERERS = [("unregistered-ae", "FORGER", False), ("peer-of-another-institution", "CTY_PACS", False),
              ("peer-of-the-producer", "PRV_PACS", True)]


@pytest.mark.parametrize("case, aet, vouches", DELIVERERS, ids=[d[0] for d in DELIVERERS])
def test_a_producer_claim_is_trusted_only_when_the_deliverer_vouches_for_it(
        region: Region, tmp_path: Path, case: str, aet: str, vouches: bool) -> None:
    """A copy of the provincial MR study with new UIDs is stored at the township by ``aet``."""
    township = region.nodes["TWN001"]
    study_uid, paths = _copy_with_new_uids(PRV_MR, tmp_path / case)
    stored = township.store(paths, aet=aet)
    assert stored.returncode == 0 and {r.status for r in stored.store_responses} == {0}, stored.explain()
    assert f"{study_uid}: accepted" in ok(township.cli("qc", "run", study_uid)).stdout
    _status, expected_failed, _until = expected_advice(PRV_MR, "CTY001")
    explained = region.json("TWN001", "recognition", "explain", study_uid, "--for", "CTY001", "--json")
    condition = next(c for c in explained["conditions"] if c["code"] == "producer_not_vouched")
    if vouches:
        assert set(explained["failed"]) == expected_failed and condition["holds"]
        return
    assert explained["status"] == "NOT_ELIGIBLE"
    assert set(explained["failed"]) == expected_failed | {"producer_not_vouched"}
    assert aet in condition["explanation"] and "PRV001" in condition["explanation"]
    answer = findscu(township, "CTY_PACS", patient_keys() + HR_KEYS, tmp_path / "on-the-wire")
    assert hr_block(answer.by_uid()[study_uid])["failed"] == expected_failed | {"producer_not_vouched"}
    assert b"PRODUCER_NOT_VOUCHED" in b"".join(p.read_bytes() for p in (tmp_path / "on-the-wire").glob("rsp*"))
    finding = region.json("TWN001", "qc", "show", study_uid, "--json")
    assert [o["passed"] for o in finding["outcomes"] if o["code"] == "QC-PROVENANCE"] == [False]

    ok(township.cli("recognition", "vouch", study_uid, "--producer", "PRV001", "--note", "phoned PRV001 radiology",
                     "--by", "Dr Zhang"))
    vouched = region.json("TWN001", "recognition", "explain", study_uid, "--for", "CTY001", "--json")
    assert set(vouched["failed"]) == expected_failed
    events = audit_events(region, "TWN001", "--study", study_uid)
    assert [(e["outcome"], e["detail"]["producer"], e["detail"]["by"]) for e in events
            if e["action"] == "recognition-vouch"] == [("vouched", "PRV001", "Dr Zhang")]


# -- IOCM rejection notes (issue 12 item 4) ---------------------------------------------------------
def _find_at(node: NodeProcess, calling: str, level: str, keys: list[str], out: Path) -> list[Dataset]:
    out.mkdir(parents=True, exist_ok=True)
    args = [dcmtk("findscu"), "-S", "-to", "20", "-aet", calling, "-aec", node.aet, "-X", "-od", out,
            "-k", f"QueryRetrieveLevel={level}"]
    for key in keys:
        args += ["-k", key]
    result = run_tool([*args, LOOPBACK, str(node.port)], timeout=60)
    assert result.returncode == 0, result.explain()
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def test_a_rejection_note_hides_images_from_peers_but_not_from_the_local_admin(region: Region, tmp_path: Path) -> None:
    provincial = region.nodes["PRV001"]
    ok(provincial.cli("peer", "add", "prv-mr", "--aet", "PRV_MR1", "--host", LOOPBACK, "--port", "104",
                       "--institution", "PRV001", "--permissions", "echo,store,find"))  # the provincial MR modality
    files = [SAMPLE_DIR / name for series in STUDIES[PRV_MR]["series"] for name in series["files"]]
    headers = {str(h.SOPInstanceUID): h for h in (dcmread(f, stop_before_pixels=True) for f in files)}
    images = [h for h in headers.values() if h.Modality == "MR"]
    series_uid = str(images[0].SeriesInstanceUID)
    in_series = {str(h.SOPInstanceUID) for h in headers.values() if str(h.SeriesInstanceUID) == series_uid}
    two = sorted(in_series)[:2]
    late_uid = f"{series_uid}.9999"
    template = next(f for f in files if str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) == two[0])
    late = write_instance(template, tmp_path / "late.dcm", sop_instance_uid=late_uid, series_uid=series_uid,
                          InstanceNumber=99)
    refs = [(series_uid, str(headers[uid].SOPClassUID), uid) for uid in two]
    refs.append((series_uid, str(headers[two[0]].SOPClassUID), late_uid))  # not held yet: kept, applied on arrival
    keys = [f"StudyInstanceUID={PRV_MR}", f"SeriesInstanceUID={series_uid}", "SOPInstanceUID"]

    forged = rejection_note(template, refs[:1], tmp_path / "forged.dcm")
    assert provincial.store([forged], aet="NOBODY").returncode == 0
    seen = {str(r.SOPInstanceUID) for r in _find_at(provincial, "CTY_PACS", "IMAGE", keys, tmp_path / "f0")}
    assert two[0] in seen  # an unregistered AE's note rejects nothing

    note = rejection_note(template, refs, tmp_path / "kos.dcm")
    sent = provincial.store([note, late], aet="PRV_MR1")
    assert {r.status for r in sent.store_responses} == {0} and len(sent.store_responses) == 2, sent.explain()

    seen = {str(r.SOPInstanceUID) for r in _find_at(provincial, "CTY_PACS", "IMAGE", keys, tmp_path / "f1")}
    assert seen == in_series - set(two)
    series = _find_at(provincial, "CTY_PACS", "SERIES", [f"StudyInstanceUID={PRV_MR}", "SeriesInstanceUID",
                                                         "NumberOfSeriesRelatedInstances"], tmp_path / "f2")
    counts = {str(r.SeriesInstanceUID): int(r.NumberOfSeriesRelatedInstances) for r in series}
    assert counts == {  # recounted without the two images; the notes' own series are hidden too
        uid: len([h for h in headers.values() if str(h.SeriesInstanceUID) == uid]) - (2 if uid == series_uid else 0)
        for uid in {str(h.SeriesInstanceUID) for h in headers.values()}}
    study = _find_at(provincial, "CTY_PACS", "STUDY", [f"StudyInstanceUID={PRV_MR}", "NumberOfStudyRelatedInstances",
                                                       "NumberOfStudyRelatedSeries"], tmp_path / "f3")
    assert [(int(r.NumberOfStudyRelatedInstances), int(r.NumberOfStudyRelatedSeries)) for r in study] == [
        (len(headers) - 2, len(counts))]

    status, comment, received = movescu(provincial, "CTY_PACS", VIEWER_AET, region.viewer_port, PRV_MR,
                                        tmp_path / "moved")
    assert (status, comment) == (0x0000, "")
    assert received == set(headers) - set(two)

    shown = ok(provincial.cli("study", "show", PRV_MR)).stdout
    for uid in (*two, late_uid):
        line = next(line for line in shown.splitlines() if uid in line)
        assert "REJECTED 113001 Rejected for Quality Reasons (sent by prv-mr)" in line
    data = region.json("PRV001", "study", "show", PRV_MR, "--json")
    flagged = {i["sop_instance_uid"]: i["rejected"].get("hidden") for s in data["series"] for i in s["instances"]
               if i["rejected"]}
    assert flagged == {two[0]: "rejected", two[1]: "rejected", late_uid: "rejected",
                       str(dcmread(note).SOPInstanceUID): "rejection-note",
                       str(dcmread(forged).SOPInstanceUID): "rejection-note"}
    outcomes = {(e["outcome"], e["peer_aet"]) for e in audit_events(region, "PRV001", "--study", PRV_MR)
                if e["action"] == "iocm-reject"}
    assert {("refused", "NOBODY"), ("applied", "PRV_MR1")} <= outcomes
    local = _find_at(provincial, "PRV_MR1", "IMAGE", [*keys, "InstanceAvailability"], tmp_path / "local")
    availability = {str(r.SOPInstanceUID): str(r.InstanceAvailability) for r in local}
    assert availability == {uid: ("UNAVAILABLE" if uid in (*two, late_uid) else "ONLINE")
                            for uid in in_series | {late_uid}}  # this hospital still sees them, flagged

    qc = region.json("PRV001", "qc", "show", PRV_MR, "--json")
    assert qc["status"] == "pending"  # the accepted study goes back to QC without the rejected images
    rerun = ok(provincial.cli("qc", "run", PRV_MR)).stdout
    checked = region.json("PRV001", "qc", "show", PRV_MR, "--json")
    assert f"{PRV_MR}: {checked['status']}" in rerun
    assert checked["status"] == "accepted", checked  # judged on what peers see
    status, failed, _until = expected_advice(PRV_MR, "CTY001")
    explained = region.explain(PRV_MR, "CTY001")
    assert (explained["status"], set(explained["failed"])) == (status, failed)
