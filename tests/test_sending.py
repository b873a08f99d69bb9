"""Sending stored instances (``pacsnode.dimse.sending``): the bytes that go on the wire.

The stream path must put exactly the stored dataset bytes on the wire (no decode, no
re-encode, no whole-file buffer); the transcode path must keep the pixels; an impossible
transcoding must be its own exception so a retrieve counts one failed sub-operation.
"""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset

from pacsnode.dimse import pdu, sending
from pacsnode.model import InstanceLocation
from support import a_ct_file, dataset_bytes, sample_files, write_instance

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
EXPLICIT, IMPLICIT = sending.EXPLICIT_VR_LITTLE_ENDIAN, sending.IMPLICIT_VR_LITTLE_ENDIAN


def _location(path: Path) -> InstanceLocation:
    ds = dcmread(path, stop_before_pixels=True)
    return InstanceLocation(str(ds.SOPInstanceUID), str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID),
                            str(path))


def _pydicom_files_with_meta() -> list[Path]:
    files = []
    for path in sorted(PYDICOM_FILES.glob("*.dcm")):
        try:
            ds = dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        if "TransferSyntaxUID" in ds.file_meta and "SOPInstanceUID" in ds and "SOPClassUID" in ds:
            files.append(path)
    return files


def _split(batches: list[bytes | bytearray]) -> list[bytes]:
    """The PDUs in the batches; a PDU never spans two batches (each is written as it comes)."""
    found = []
    for batch in batches:
        offset = 0
        while offset < len(batch):
            _type, length = pdu.HEADER.unpack_from(batch, offset)
            assert offset + pdu.HEADER_SIZE + length <= len(batch), "a PDU cut between two batches"
            found.append(bytes(batch[offset:offset + pdu.HEADER_SIZE + length]))
            offset += pdu.HEADER_SIZE + length
    return found


def _reassemble(pdus: list[bytes | bytearray], max_pdu: int) -> tuple[pdu.Command, bytes, set[int]]:
    """Decode the yielded batches of whole PDUs: (command, dataset bytes, context ids seen);
    checks each PDU's size."""
    command, dataset, contexts = b"", b"", set()
    last_command = last_dataset = False
    for raw in _split(pdus):
        assert len(raw) - pdu.HEADER_SIZE <= max_pdu, "a PDU exceeds the peer's maximum length"
        message = pdu.decode(bytes(raw))
        assert isinstance(message, pdu.PDataTF)
        for pdv in message.pdvs:
            contexts.add(pdv.context_id)
            if pdv.is_command:
                assert not last_command
                command += pdv.data
                last_command = pdv.is_last
            else:
                assert last_command and not last_dataset, "dataset before the whole command, or after its end"
                dataset += pdv.data
                last_dataset = pdv.is_last
    assert last_command and last_dataset
    return pdu.decode_command(command), dataset, contexts


@pytest.mark.parametrize("path", _pydicom_files_with_meta() + sample_files()[:3], ids=lambda p: p.name)
def test_the_stream_path_sends_the_stored_dataset_bytes_unchanged(path: Path) -> None:
    location = _location(path)
    max_pdu = 4096
    pdus = list(sending.iter_store_pdus(location, 5, location.transfer_syntax, 7, max_pdu,
                                        move_originator=("MOVER", 42)))
    command, dataset, contexts = _reassemble(pdus, max_pdu)
    stored = dataset_bytes(path)
    if location.transfer_syntax == sending.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN and len(stored) % 2:
        stored += b"\0"  # PS3.5 A.5: an odd deflated bitstream is sent with one trailing NUL
    assert dataset == stored
    assert contexts == {5}
    assert command.us(pdu.COMMAND_FIELD) == pdu.C_STORE_RQ and command.us(pdu.MESSAGE_ID) == 7
    assert command.text(pdu.AFFECTED_SOP_INSTANCE_UID) == location.sop_instance_uid
    assert command.text(pdu.AFFECTED_SOP_CLASS_UID) == location.sop_class_uid
    assert command.text(pdu.MOVE_ORIGINATOR_AET) == "MOVER" and command.us(pdu.MOVE_ORIGINATOR_MESSAGE_ID) == 42


def test_without_a_move_originator_the_command_carries_none() -> None:
    location = _location(a_ct_file())
    command, _dataset, _ = _reassemble(list(sending.iter_store_pdus(location, 1, location.transfer_syntax, 1, 0)),
                                       1 << 30)
    assert pdu.MOVE_ORIGINATOR_AET not in command and pdu.MOVE_ORIGINATOR_MESSAGE_ID not in command


def test_a_large_file_is_streamed_in_pdu_sized_reads_not_loaded(tmp_path: Path) -> None:
    template = dcmread(a_ct_file())
    template.PixelData = bytes(40 * 1024 * 1024)  # 40 MB
    template.Rows, template.Columns, template.BitsAllocated, template.BitsStored = 4096, 5120, 16, 16
    path = write_instance(template, tmp_path / "big.dcm")
    location = _location(path)
    tracemalloc.start()
    sent = 0
    for raw in sending.iter_store_pdus(location, 1, location.transfer_syntax, 1, 65536):
        sent += len(raw)
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert sent > 40 * 1024 * 1024
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes while streaming a 40 MB file"


def _decoded(dataset: bytes, syntax: str) -> pydicom.Dataset:
    ds = read_dataset(DicomBytesIO(dataset), syntax == IMPLICIT, True)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    return ds


@pytest.mark.parametrize("name", ["SC_rgb_dcmtk_+eb+cr.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm",
                                  "MR_small_bigendian.dcm", "image_dfl.dcm", "MR_small_implicit.dcm",
                                  "CT_small.dcm"])
@pytest.mark.parametrize("syntax", [EXPLICIT, IMPLICIT])
def test_the_transcode_path_keeps_the_pixels(name: str, syntax: str) -> None:
    path = PYDICOM_FILES / name
    location = _location(path)
    if location.transfer_syntax == syntax:
        pytest.skip("stored in this syntax: the stream path")
    _command, dataset, _ = _reassemble(list(sending.iter_store_pdus(location, 3, syntax, 1, 16384)), 16384)
    received = _decoded(dataset, syntax)
    assert received.SOPInstanceUID == location.sop_instance_uid
    assert np.array_equal(received.pixel_array, dcmread(path).pixel_array)


@pytest.mark.parametrize("name", ["MR_small_jpeg_ls_lossless.dcm", "SC_rgb_jpeg_gdcm.dcm"])
def test_a_syntax_no_installed_codec_can_decode_raises_transcode_error_before_sending(name: str) -> None:
    location = _location(PYDICOM_FILES / name)
    stream = sending.iter_store_pdus(location, 1, EXPLICIT, 1, 16384)
    with pytest.raises(sending.TranscodeError):
        next(stream)


def test_a_missing_file_is_unreadable_not_a_transcoding_failure(tmp_path: Path) -> None:
    location = InstanceLocation("1.2.3", "1.2.840.10008.5.1.4.1.1.2", EXPLICIT, str(tmp_path / "gone.dcm"))
    with pytest.raises(sending.UnreadableInstance):
        next(sending.iter_store_pdus(location, 1, EXPLICIT, 1, 16384))


def test_a_file_cut_short_after_inspection_is_never_sent_as_whole(tmp_path: Path) -> None:
    path = write_instance(a_ct_file(), tmp_path / "cut.dcm")
    location = _location(path)
    with sending.prepare_store(location, 1, location.transfer_syntax, 1, 1024) as prepared:  # open, inspected
        with open(path, "r+b") as handle:
            handle.truncate(path.stat().st_size - 100)
        with pytest.raises(sending.UnreadableInstance, match="early"):
            list(prepared.batches())


def test_proposed_contexts_offer_the_stored_syntax_alone_then_uncompressed() -> None:
    jpeg = InstanceLocation("1", "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.4.50", "/x")
    plain = InstanceLocation("2", "1.2.840.10008.5.1.4.1.1.4", EXPLICIT, "/y")
    contexts = sending.proposed_contexts([jpeg, jpeg, plain])
    assert [(c.context_id, c.abstract_syntax, c.transfer_syntaxes) for c in contexts] == [
        (1, jpeg.sop_class_uid, ("1.2.840.10008.1.2.4.50",)),
        (3, jpeg.sop_class_uid, (EXPLICIT, IMPLICIT)),
        (5, plain.sop_class_uid, (EXPLICIT,)),
        (7, plain.sop_class_uid, (EXPLICIT, IMPLICIT)),
    ]
    many = [InstanceLocation(str(i), f"1.2.3.{i}", EXPLICIT, "/z") for i in range(200)]
    capped = sending.proposed_contexts(many)
    assert len(capped) == 128 and capped[-1].context_id == 255


def test_choose_context_prefers_the_stored_syntax_then_uncompressed() -> None:
    ct = "1.2.840.10008.5.1.4.1.1.2"
    accepted = {1: (ct, IMPLICIT), 3: (ct, EXPLICIT), 5: (ct, "1.2.840.10008.1.2.4.50")}
    assert sending.choose_context(ct, "1.2.840.10008.1.2.4.50", accepted) == (5, "1.2.840.10008.1.2.4.50")
    assert sending.choose_context(ct, "1.2.840.10008.1.2.4.80", accepted) == (3, EXPLICIT)
    assert sending.choose_context("1.2.3", EXPLICIT, accepted) is None


def test_store_response_reads_status_and_comment() -> None:
    raw = pdu.encode_command({pdu.AFFECTED_SOP_CLASS_UID: "1.2", pdu.COMMAND_FIELD: pdu.C_STORE_RSP,
                              pdu.MESSAGE_ID_BEING_RESPONDED_TO: 9, pdu.COMMAND_DATASET_TYPE: pdu.NO_DATASET,
                              pdu.STATUS: 0xA700, pdu.ERROR_COMMENT: "full", pdu.AFFECTED_SOP_INSTANCE_UID: "1.2.3"})
    response = sending.store_response(pdu.decode_command(raw))
    assert response == sending.StoreResponse(9, 0xA700, "full", "1.2.3")
    assert sending.store_outcome(0xA700) == "failure" and sending.store_outcome(0xB007) == "warning"
    echo = pdu.encode_command({pdu.COMMAND_FIELD: pdu.C_ECHO_RSP, pdu.STATUS: 0})
    with pytest.raises(pdu.PDUError):
        sending.store_response(pdu.decode_command(echo))


@pytest.mark.parametrize("max_pdu", [1024, 16384, 4 * 1024 * 1024])
@pytest.mark.parametrize("opener", ["file", "spooled"])
def test_batches_of_a_file_larger_than_the_buffer_carry_its_bytes_unchanged(tmp_path: Path, max_pdu: int,
                                                                            opener: str) -> None:
    """Across batch boundaries, for a real file (preadv) and an S3 object's in-memory spool
    (readinto), with one buffer reused for two instances: the dataset bytes exactly, each PDU
    within the peer's maximum, no PDU cut between two writes."""
    template = dcmread(a_ct_file())
    template.PixelData = bytes(range(256)) * (3 * sending.WIRE_BATCH // 256 + 7)
    template.Rows, template.Columns = len(template.PixelData) // 1024, 512
    path = write_instance(template, tmp_path / "wide.dcm")
    location = _location(path)
    if opener == "spooled":
        location = InstanceLocation(location.sop_instance_uid, location.sop_class_uid, location.transfer_syntax,
                                    location.path, opener=lambda: io.BytesIO(path.read_bytes()))
    buffer = bytearray(sending.WIRE_BATCH)
    for _ in range(2):
        with sending.prepare_store(location, 3, location.transfer_syntax, 9, max_pdu) as prepared:
            batches = [bytes(batch) for batch in prepared.batches(buffer)]
        assert len(batches) >= 3
        command, dataset, contexts = _reassemble(batches, max_pdu)
        assert dataset == dataset_bytes(path) and contexts == {3}
        assert command.text(pdu.AFFECTED_SOP_INSTANCE_UID) == location.sop_instance_uid
