"""A node that stores what modalities send: real DCMTK tools against ``pacsnode serve`` in a subprocess.

Statuses are the C-STORE responses as DCMTK decodes them from the wire (``storescu -d``); data is
what ``pacsnode studies --json``, the index and the stored files say. pynetdicom sends only what
DCMTK cannot: a dataset cut short, garbage with a valid context, a dataset whose SOP Class differs
from its presentation context (storescu reads and re-encodes files, and proposes contexts from the
dataset itself, so it can produce none of these).
"""

from __future__ import annotations

import io
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

import pynetdicom
import pytest
from pydicom import dcmread
from pydicom.filewriter import dcmwrite
from pydicom.uid import generate_uid
from pynetdicom import AE

from support import (
    SAMPLE_DIR,
    NodeProcess,
    ToolResult,
    dataset_bytes,
    expected_studies,
    make_series,
    needs_dcmtk,
    sample_files,
    storescu_args,
    write_instance,
)

pytestmark = [pytest.mark.interop, pytest.mark.cluster, needs_dcmtk]

SUCCESS, NOT_AUTHORIZED, DATASET_MISMATCH, CANNOT_UNDERSTAND = 0x0000, 0x0124, 0xA900, 0xC000
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
STUDY_KEYS = {"study_uid", "patient_id", "issuer_of_patient_id", "patient_name", "study_date", "accession_number",
              "modalities", "series_count", "instance_count", "institution_name"}


def is_failure(status: int) -> bool:
    """PS3.7 C: failures are 0xA000-0xAFFF, 0xC000-0xCFFF and the 01xx/02xx general failures."""
    return 0xA000 <= status <= 0xAFFF or 0xC000 <= status <= 0xCFFF or 0x0100 <= status <= 0x02FF


def uid_of(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def assert_all_stored(result: ToolResult, count: int) -> None:
    responses = result.store_responses
    assert len(responses) == count, result.explain()
    assert [r for r in responses if r.status != SUCCESS] == [], result.explain()


# -- all the sample data, stored once per module ------------------------------------------------
@pytest.fixture(scope="module")
def sample_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess, list[Path], ToolResult]]:
    files = sample_files()
    node = NodeProcess(tmp_path_factory.mktemp("samples") / "home").init()
    node.start()
    try:
        if all(SAMPLE_DIR in f.parents for f in files):
            sent = node.store([SAMPLE_DIR], extra=("+sd", "+r", "+sp", "*.dcm"), timeout=120)
        else:
            sent = node.store(files, timeout=120)
        yield node, files, sent
    finally:
        node.stop()


def test_echoscu_succeeds(served: NodeProcess) -> None:
    result = served.echo()
    assert result.returncode == 0, result.explain()


def test_storescu_stores_every_sample_and_studies_lists_them(sample_node: tuple[NodeProcess, list[Path],
                                                                                ToolResult]) -> None:
    node, files, sent = sample_node
    assert sent.returncode == 0, sent.explain()
    assert_all_stored(sent, len(files))
    expected = expected_studies(files)
    listed = {s["study_uid"]: s for s in node.studies()}
    assert set(listed) == set(expected)
    for uid, want in expected.items():
        got = listed[uid]
        assert STUDY_KEYS <= set(got), sorted(STUDY_KEYS - set(got))
        assert isinstance(got["modalities"], list)
        assert (got["patient_id"], got["issuer_of_patient_id"], got["patient_name"], got["study_date"],
                got["accession_number"], got["institution_name"]) == (
            want.patient_id, want.issuer_of_patient_id, want.patient_name, want.study_date,
            want.accession_number, want.institution_name), uid
        assert (sorted(got["modalities"]), got["series_count"], got["instance_count"]) == (
            sorted(want.modalities), len(want.series), len(want.instances)), uid
    assert node.index_rows("SELECT COUNT(*) FROM instances")[0][0] == len(files)


def test_stored_files_are_byte_identical_and_valid_part10(sample_node: tuple[NodeProcess, list[Path],
                                                                             ToolResult]) -> None:
    node, files, _sent = sample_node
    for source in files:
        original = dcmread(source, stop_before_pixels=True)
        stored = node.stored_bytes(str(original.SOPInstanceUID))
        assert stored is not None, source
        copy = dcmread(io.BytesIO(stored))  # a valid Part 10 file, pixel data and all
        assert copy.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
        assert copy.file_meta.MediaStorageSOPClassUID == original.SOPClassUID
        assert copy.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert dataset_bytes(stored) == dataset_bytes(source), f"{source} changed on the way in"


def test_data_survives_a_restart(sample_node: tuple[NodeProcess, list[Path], ToolResult]) -> None:
    node, files, _sent = sample_node
    before = node.studies()
    node.restart()
    assert node.studies() == before
    checked = node.check()
    assert checked.returncode == 0, checked.explain()
    assert node.echo().returncode == 0
    assert node.temp_files() == []


# -- refusing what is not a whole, consistent instance ------------------------------------------
def _cut_in_header(template: Path, out: Path) -> Path:
    write_instance(template, out, StudyDescription="x" * 60)
    data = out.read_bytes()
    out.write_bytes(data[:data.index(b"x" * 60) + 30])
    return out


def _not_dicom(template: Path, out: Path) -> Path:
    """A valid file meta (so the SCU can pick a context) followed by bytes that are not a dataset."""
    write_instance(template, out)
    meta_length = len(out.read_bytes()) - len(dataset_bytes(out))
    out.write_bytes(out.read_bytes()[:meta_length] + b"this is not a DICOM dataset, just text\n" * 40)
    return out


def _wrong_class(template: Path, out: Path) -> Path:
    """File meta says CT (so the CT context carries it); the dataset says MR."""
    ds = dcmread(template)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = MR
    ds.file_meta.MediaStorageSOPClassUID = CT
    dcmwrite(out, ds, enforce_file_format=False)
    return out


def _other_instance(template: Path, out: Path) -> Path:
    """The request's Affected SOP Instance UID (from the meta) differs from the dataset's."""
    ds = dcmread(template)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dcmwrite(out, ds, enforce_file_format=False)
    return out


def test_malformed_files_are_refused_and_the_next_good_file_on_the_same_association_is_stored(
        served: NodeProcess, tmp_path: Path, ct_template: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = make_series(ct_template, tmp_path / "good", 6)
    bad = tmp_path / "bad"
    bad.mkdir()
    whole = write_instance(ct_template, bad / "whole.dcm")
    cut_in_pixels = bad / "cut-pixels.dcm"
    cut_in_pixels.write_bytes(whole.read_bytes()[:-100])
    cases = [
        ("cut in the pixel data", cut_in_pixels, CANNOT_UNDERSTAND),
        ("cut in the header", _cut_in_header(ct_template, bad / "cut-header.dcm"), CANNOT_UNDERSTAND),
        ("not DICOM", _not_dicom(ct_template, bad / "text.dcm"), CANNOT_UNDERSTAND),
        ("wrong SOP class for the context", _wrong_class(ct_template, bad / "wrong-class.dcm"), DATASET_MISMATCH),
        ("SOP Instance UID differs from the request", _other_instance(ct_template, bad / "other.dcm"),
         CANNOT_UNDERSTAND),
    ]
    # Send the files' bytes as they are (no decoding, no re-encoding): the only way to put a cut
    # dataset on the wire. pynetdicom documents this switch; monkeypatch restores it.
    monkeypatch.setattr(pynetdicom._config, "STORE_SEND_CHUNKED_DATASET", True)
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CT, [str(dcmread(ct_template, stop_before_pixels=True).file_meta.TransferSyntaxUID)])
    assoc = ae.associate("127.0.0.1", served.port, ae_title=served.aet)
    assert assoc.is_established
    try:
        first = assoc.send_c_store(good[0])
        assert first.Status == SUCCESS
        for (label, path, status), next_good in zip(cases, good[1:]):
            refused = assoc.send_c_store(path)
            assert refused.Status == status, f"{label}: 0x{int(refused.Status):04X}"
            assert assoc.is_established, f"{label}: the association did not survive"
            accepted = assoc.send_c_store(next_good)
            assert accepted.Status == SUCCESS, f"the good file after '{label}': 0x{int(accepted.Status):04X}"
    finally:
        assoc.release()
    stored = {r[0] for r in served.index_rows("SELECT sop_instance_uid FROM instances")}
    assert stored == {uid_of(g) for g in good}
    assert served.temp_files() == []
    checked = served.check()
    assert checked.returncode == 0, checked.explain()


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_invalid_uid_characters_are_refused_and_nothing_escapes_the_storage_folder(
        served: NodeProcess, tmp_path: Path, ct_template: Path) -> None:
    good = make_series(ct_template, tmp_path / "good", 4)
    hostile = ["../../etc/x", "1.2/../../3", "1.2.3.abc", "..\\..\\x"]
    bad = [write_instance(ct_template, tmp_path / "bad" / f"{n}.dcm", sop_instance_uid=uid)
           for n, uid in enumerate(hostile)]
    interleaved = [f for pair in zip(good, bad) for f in pair]
    before = {p for p in tmp_path.rglob("*") if p.is_file()}

    result = served.store(interleaved)

    for path, uid in zip(bad, hostile):
        assert is_failure(result.status_of(uid)), (uid, result.explain())
        assert result.status_of(uid) == CANNOT_UNDERSTAND
    for path in good:
        assert result.status_of(uid_of(path)) == SUCCESS
    new_files = {p for p in tmp_path.rglob("*") if p.is_file()} - before
    homes = {served.home, served.home.parent / f"{served.home.name}-node2"}  # the cluster run's second node
    outside = sorted(p for p in new_files if not any(h / "storage" in p.parents or p.parent == h for h in homes)
                     and not p.name.endswith(".err"))
    assert outside == []
    stored = served.stored_files()  # through the storage seam: the folder, or the S3 prefix
    assert len(stored) == len(good), stored
    assert not any(part in ("etc", "..", "") or "\\" in part for p in stored for part in p.split("/")), stored
    assert served.temp_files() == []
    assert served.index_rows("SELECT COUNT(*) FROM instances")[0][0] == len(good)
    assert served.check().returncode == 0


# -- duplicates ---------------------------------------------------------------------------------
def _two_copies(template: Path, folder: Path) -> tuple[Path, Path, str]:
    uid = generate_uid()
    study, series = generate_uid(), generate_uid()
    first = write_instance(template, folder / "first.dcm", sop_instance_uid=uid, study_uid=study, series_uid=series,
                           PatientName="FIRST^COPY")
    second = write_instance(template, folder / "second.dcm", sop_instance_uid=uid, study_uid=study,
                            series_uid=series, PatientName="SECOND^COPY", InstitutionName="Second Hospital")
    assert dataset_bytes(first) != dataset_bytes(second)
    return first, second, uid


def test_duplicates_keep_the_first_copy_by_default(served: NodeProcess, tmp_path: Path, ct_template: Path) -> None:
    first, second, uid = _two_copies(ct_template, tmp_path)
    assert served.store([first]).status_of(uid) == SUCCESS
    assert served.store([second]).status_of(uid) == SUCCESS  # the sender is told it is safe; nothing changes
    assert served.index_rows("SELECT COUNT(*) FROM instances WHERE sop_instance_uid = ?", (uid,)) == [(1,)]
    stored = served.stored_bytes(uid)
    assert stored is not None and dataset_bytes(stored) == dataset_bytes(first)
    assert served.stored_files() == [served.stored_relative(uid)]
    [study] = served.studies()
    assert (study["patient_name"], study["instance_count"]) == ("FIRST^COPY", 1)
    assert served.check().returncode == 0


def test_duplicates_replace_the_first_copy_when_configured(node_process: Callable[..., NodeProcess],
                                                           tmp_path: Path, ct_template: Path) -> None:
    node = node_process().configure("store", "duplicates", "replace").start()
    first, second, uid = _two_copies(ct_template, tmp_path)
    assert node.store([first]).status_of(uid) == SUCCESS
    assert node.store([second]).status_of(uid) == SUCCESS
    assert node.index_rows("SELECT COUNT(*) FROM instances WHERE sop_instance_uid = ?", (uid,)) == [(1,)]
    stored = node.stored_bytes(uid)
    assert stored is not None and dataset_bytes(stored) == dataset_bytes(second)
    assert node.stored_files() == [node.stored_relative(uid)]  # no orphan
    [study] = node.studies()
    assert study["instance_count"] == 1
    checked = node.check()
    assert checked.returncode == 0, checked.explain()


# -- many senders -------------------------------------------------------------------------------
def test_five_storescu_processes_at_once_all_succeed(served: NodeProcess, tmp_path: Path, ct_template: Path) -> None:
    senders, per_sender = 5, 20
    sets = [make_series(ct_template, tmp_path / f"sender{n}", per_sender, PatientID=f"CONC{n}")
            for n in range(senders)]
    procs = [subprocess.Popen(storescu_args(served.port, files, aec=served.aet, aet=f"MODALITY{n}"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
             for n, files in enumerate(sets)]
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=90)
            results.append(ToolResult([str(a) for a in proc.args], proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for result in results:
        assert result.returncode == 0, result.explain()
        assert_all_stored(result, per_sender)
    stored = {r[0] for r in served.index_rows("SELECT sop_instance_uid FROM instances")}
    assert stored == {uid_of(f) for files in sets for f in files}
    assert sorted((s["patient_id"], s["instance_count"]) for s in served.studies()) == [
        (f"CONC{n}", per_sender) for n in range(senders)]
    assert served.check().returncode == 0


# -- who may store ------------------------------------------------------------------------------
def test_an_unknown_calling_ae_may_store_when_accept_from_any(served: NodeProcess, tmp_path: Path,
                                                              ct_template: Path) -> None:
    [path] = make_series(ct_template, tmp_path, 1)
    assert served.store([path], aet="NEVER_SEEN").status_of(uid_of(path)) == SUCCESS


def test_only_registered_peers_may_store_when_accept_from_registered(node_process: Callable[..., NodeProcess],
                                                                     tmp_path: Path, ct_template: Path) -> None:
    node = node_process().configure("store", "accept_from", "registered").start()
    files = make_series(ct_template, tmp_path, 3)
    assert node.store([files[0]], aet="STRANGER").status_of(uid_of(files[0])) == NOT_AUTHORIZED
    assert node.echo(aet="STRANGER").returncode == 0  # unknown AEs may still echo
    added = node.cli("peer", "add", "ct", "--aet", "PRV_CT", "--host", "127.0.0.1", "--port", "104",
                     "--permissions", "echo,store")
    assert added.returncode == 0, added.explain()
    viewer = node.cli("peer", "add", "viewer", "--aet", "VIEWER", "--host", "127.0.0.1", "--port", "104",
                      "--permissions", "echo,find")
    assert viewer.returncode == 0, viewer.explain()
    # peers are looked up per association: no restart needed
    assert node.store([files[1]], aet="PRV_CT").status_of(uid_of(files[1])) == SUCCESS
    assert node.store([files[2]], aet="VIEWER").status_of(uid_of(files[2])) == NOT_AUTHORIZED
    assert {r[0] for r in node.index_rows("SELECT sop_instance_uid FROM instances")} == {uid_of(files[1])}
    assert node.temp_files() == []


def test_strict_called_ae_check_refuses_a_wrong_called_ae(node_process: Callable[..., NodeProcess]) -> None:
    node = node_process(aet="STRICT_PACS").configure("network", "strict_called_aet", True).start()
    refused = node.echo(aec="SOMEONE_ELSE")
    assert refused.returncode != 0
    assert "Called AE Title Not Recognized" in refused.output  # DCMTK's reading of the A-ASSOCIATE-RJ reason
    assert node.echo(aec="STRICT_PACS").returncode == 0


def test_without_strict_check_a_wrong_called_ae_is_accepted(served: NodeProcess) -> None:
    assert served.echo(aec="ANY_NAME").returncode == 0


def test_serve_stops_promptly_on_sigterm_after_a_bare_tcp_connection(served: NodeProcess) -> None:
    """A port probe or health check (connect, close, no A-ASSOCIATE) must not hold up a shutdown."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=5):
        pass
    time.sleep(0.2)
    started = time.monotonic()
    assert served.stop(timeout=8) == 0
    assert time.monotonic() - started < 5
