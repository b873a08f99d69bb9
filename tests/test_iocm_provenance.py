"""Who may reject what, and whose delivery vouches for a producer: the rules behind the wire tests.

The wire behaviour (storescu, findscu, movescu across three nodes) is proven in
``test_regional_e2e.py``; here the node's store path is driven directly with the callers a
hostile or careless party would be (a peer of another institution, a repeated note, a KOS that
is no rejection), and the pure provenance rule is checked as a table.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import pytest
from pydicom import dcmread

from iocm_factory import rejection_note
from pacsnode.errors import InvalidInstance
from pacsnode.model import Caller, DeliveryKind, StoreResult
from pacsnode.node import Node
from pacsnode.recognition.provenance import Delivery, Vouch, producer_vouched
from test_qc_node import CT_CHEST, PROVINCIAL, WORKSTATION, copy_county, county, open_node  # noqa: F401

pytestmark = pytest.mark.skipif(not (Path(__file__).parent.parent / "sample_dicom" / "CTY001").is_dir(),
                                reason="sample_dicom/ is not generated")


# -- the pure rule ----------------------------------------------------------------------------------
T0, T1, T2 = "2026-11-01T00:00:00+00:00", "2026-11-02T00:00:00+00:00", "2026-11-03T00:00:00+00:00"
CASES = [
    ("admin import", [Delivery("import", "", "", T0)], [], True),
    ("producer's own peer", [Delivery("peer", "PRV001", "provincial", T0)], [], True),
    ("own modality of the producer", [Delivery("own", "PRV001", "ct1", T0)], [], True),
    ("retrieved from the producer", [Delivery("retrieved", "PRV001", "provincial", T0)], [], True),
    ("unregistered AE", [Delivery("unregistered", "", "FORGER", T0)], [], False),
    ("peer of another institution", [Delivery("peer", "CTY001", "county", T0)], [], False),
    ("one forged instance taints the study", [Delivery("peer", "PRV001", "p", T0),
                                              Delivery("unregistered", "", "X", T1)], [], False),
    ("stored before provenance", [Delivery("unknown", "", "", T0)], [], False),
    ("nothing delivered", [], [], False),
    ("vouched after the copy arrived", [Delivery("unregistered", "", "X", T0)], [Vouch("PRV001", T1)], True),
    ("a vouch does not cover later copies", [Delivery("unregistered", "", "X", T2)], [Vouch("PRV001", T1)], False),
    ("a vouch for another producer", [Delivery("unregistered", "", "X", T0)], [Vouch("CTY001", T1)], False),
]


@pytest.mark.parametrize("deliveries, vouches, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_producer_vouched_table(deliveries: list[Delivery], vouches: list[Vouch], expected: bool) -> None:
    vouched, why = producer_vouched("PRV001", deliveries, vouches)
    assert vouched is expected, why
    assert why


# -- rejection notes through Node.store_file --------------------------------------------------------
def _images(node: Node, study_uid: str) -> list[tuple[str, str, str, Path]]:
    """(series UID, SOP class, SOP instance, file) of a study's images, as the index holds them."""
    out = []
    for series in node.study(study_uid)[1]:
        for inst in series["instances"]:  # type: ignore[union-attr]
            path = node.storage.absolute(inst["path"])  # type: ignore[index]
            out.append((str(series["series_uid"]), str(inst["sop_class_uid"]), str(inst["sop_instance_uid"]), path))
    return out


def _send(node: Node, path: Path, caller: Caller, tmp_path: Path) -> StoreResult:
    temp = node.new_temp_file()
    shutil.copyfile(path, temp)
    return node.store_file(temp, caller).result


def _hidden(node: Node, study_uid: str) -> dict[str, str]:
    return {uid: why["hidden"] for uid, why in node.regional_store.hidden_instances(study_uid).items()}


def test_who_may_reject_what(county: Node, tmp_path: Path) -> None:  # noqa: F811
    county.import_paths([copy_county(tmp_path)])
    image = [i for i in _images(county, CT_CHEST) if i[1] != "1.2.840.10008.5.1.4.1.1.104.1"][0]
    note = rejection_note(image[3], [image[:3]], tmp_path / "note.dcm")
    provincial = Caller.registered(PROVINCIAL, "127.0.0.1")
    workstation = Caller.registered(WORKSTATION, "127.0.0.1")
    note_uid = str(dcmread(note).SOPInstanceUID)

    assert _send(county, note, provincial, tmp_path) is StoreResult.STORED  # stored, but PRV001 did not deliver it
    assert _hidden(county, CT_CHEST) == {note_uid: "rejection-note"}
    events = [e for e in county.audit.events(study_uid=CT_CHEST) if e.action == "iocm-reject"]
    assert [e.outcome for e in events] == ["refused"]

    second = rejection_note(image[3], [image[:3]], tmp_path / "note2.dcm")
    assert _send(county, second, workstation, tmp_path) is StoreResult.STORED  # this hospital's own workstation
    assert _hidden(county, CT_CHEST)[image[2]] == "rejected"
    assert _send(county, second, workstation, tmp_path) is StoreResult.DUPLICATE  # a retry adds no row
    rows = county.index.query("SELECT COUNT(*) FROM rejections WHERE sop_instance_uid=?", (image[2],))
    assert rows[0][0] == 2  # one per note


def test_a_key_object_that_is_no_rejection_is_an_ordinary_instance(county: Node, tmp_path: Path) -> None:  # noqa: F811
    county.import_paths([copy_county(tmp_path)])
    image = _images(county, CT_CHEST)[0]
    of_interest = rejection_note(image[3], [image[:3]], tmp_path / "kos.dcm", code="113000")
    assert _send(county, of_interest, Caller.registered(WORKSTATION, "127.0.0.1"), tmp_path) is StoreResult.STORED
    assert _hidden(county, CT_CHEST) == {}


def test_a_rejection_note_cannot_reject_itself(county: Node, tmp_path: Path) -> None:  # noqa: F811
    county.import_paths([copy_county(tmp_path)])
    image = _images(county, CT_CHEST)[0]
    selfish = rejection_note(image[3], [(image[0], image[1], "1.2.3.4.5")], tmp_path / "self.dcm",
                             sop_instance_uid="1.2.3.4.5")
    with pytest.raises(InvalidInstance, match="itself"):
        _send(county, selfish, Caller.registered(WORKSTATION, "127.0.0.1"), tmp_path)
    assert not county.index.has_instance("1.2.3.4.5")


def test_provenance_of_each_caller(open_node: Callable[..., Node]) -> None:  # noqa: F811
    node = open_node()
    assert node.provenance_of(Caller.nobody("FORGER")).kind is DeliveryKind.UNREGISTERED
    assert node.provenance_of(Caller.registered(PROVINCIAL, "127.0.0.1")).institution == "PRV001"
    assert node.provenance_of(Caller.registered(WORKSTATION, "127.0.0.1")).kind is DeliveryKind.OWN
    assert node.provenance_of(Caller.registered(PROVINCIAL, "127.0.0.1"), retrieved=True).kind is \
        DeliveryKind.RETRIEVED


def _query(level: str, model: str, **keys: str) -> object:
    from pydicom.dataset import Dataset

    from pacsnode.dicom.query import parse_identifier
    from pacsnode.model import InformationModel

    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return parse_identifier(ds, InformationModel.PATIENT_ROOT if model == "patient" else InformationModel.STUDY_ROOT)


def test_peer_counts_leave_rejected_instances_out_at_every_level(county: Node, tmp_path: Path) -> None:  # noqa: F811
    county.import_paths([copy_county(tmp_path)])
    images = _images(county, CT_CHEST)
    note = rejection_note(images[0][3], [i[:3] for i in images[:2]], tmp_path / "note.dcm")
    assert _send(county, note, Caller.registered(WORKSTATION, "127.0.0.1"), tmp_path) is StoreResult.STORED
    peer = Caller.registered(PROVINCIAL, "127.0.0.1")
    admin = Caller.local_admin()
    patient = {"PatientID": "P0815", "IssuerOfPatientID": "CTY001"}
    counts = {"NumberOfPatientRelatedStudies": "", "NumberOfPatientRelatedInstances": "",
              "NumberOfPatientRelatedSeries": ""}
    seen = list(county.find(_query("PATIENT", "patient", **patient, **counts), peer))  # type: ignore[arg-type]
    local = list(county.find(_query("PATIENT", "patient", **patient, **counts), admin))  # type: ignore[arg-type]
    assert len(seen) == len(local) == 1
    assert int(local[0]["NumberOfPatientRelatedInstances"]) - int(seen[0]["NumberOfPatientRelatedInstances"]) == 3
    study = {"StudyInstanceUID": CT_CHEST, "NumberOfStudyRelatedInstances": "", "SOPClassesInStudy": ""}
    seen = list(county.find(_query("STUDY", "study", **study), peer))  # type: ignore[arg-type]
    local = list(county.find(_query("STUDY", "study", **study), admin))  # type: ignore[arg-type]
    assert int(local[0]["NumberOfStudyRelatedInstances"]) - int(seen[0]["NumberOfStudyRelatedInstances"]) == 3
    assert "1.2.840.10008.5.1.4.1.1.88.59" not in seen[0]["SOPClassesInStudy"]  # the note is hidden too
