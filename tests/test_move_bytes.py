"""Issue 13: C-MOVE of pydicom's own test files (every transfer syntax they carry) from a real
``pacsnode serve`` to DCMTK ``storescp``, compared byte for byte with what the node stored.

DCMTK ``movescu`` asks, our engine moves on its own outgoing association (``outgoing.py``,
stored bytes streamed by ``sending.py``), ``storescp +B +xa`` writes each dataset exactly as it
arrived. The comparison ignores only what issue 13 allows: group lengths and trailing padding
(here: the one pad byte an odd deflated bitstream gets on the wire).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
from pydicom import dcmread

from pacsnode.dimse import sending
from pydicom.uid import generate_uid

from support import LOOPBACK, NodeProcess, dataset_bytes, run_tool, write_instance
from test_outgoing import EVERY_SYNTAX, PYDICOM_FILES, StoreSCP, storescp  # noqa: F401

pytestmark = [pytest.mark.interop, pytest.mark.cluster]
INSTITUTION = "PRV001"


def _comparable(data: bytes, syntax: str) -> bytes:
    return data.rstrip(b"\0") if syntax == sending.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN else data


def test_c_move_of_every_transfer_syntax_reaches_storescp_byte_for_byte(
        node_process: Callable[..., NodeProcess], storescp, tmp_path: Path) -> None:  # noqa: F811
    scp: StoreSCP = storescp("+xa")
    node = node_process(institution=INSTITUTION)
    node.cli("peer", "add", "storescp", "--aet", "STORESCP", "--host", LOOPBACK, "--port", str(scp.port),
             "--institution", INSTITUTION)
    node.cli("peer", "add", "mover", "--aet", "MOVESCU", "--host", LOOPBACK, "--port", "1",
             "--institution", INSTITUTION)
    study_uid = generate_uid()  # some test files have no study: one study holds them all
    files = [write_instance(PYDICOM_FILES / name, tmp_path / "originals" / name, study_uid=study_uid,
                            series_uid=generate_uid(), PatientID="MOVE1", IssuerOfPatientID=INSTITUTION)
             for name in EVERY_SYNTAX]
    imported = node.cli("import", *map(str, files))
    assert imported.returncode == 0, imported.explain()
    node.start()
    moved = run_tool(["/usr/bin/movescu", "-S", "-aet", "MOVESCU", "-aec", "PACSNODE", "-aem", "STORESCP",
                      "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
                      LOOPBACK, str(node.port)], timeout=120)
    assert moved.returncode == 0, moved.explain()
    scp.stop()
    for original in files:
        ds = dcmread(original, stop_before_pixels=True)
        uid, syntax = str(ds.SOPInstanceUID), str(ds.file_meta.TransferSyntaxUID)
        stored, received = node.stored_bytes(uid), scp.received(uid)
        assert stored is not None and received is not None, f"{original.name}: stored {stored}, received {received}"
        assert dcmread(received, stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax, original.name
        assert _comparable(dataset_bytes(received), syntax) == _comparable(dataset_bytes(stored), syntax), \
            f"{original.name}: the moved dataset differs from the stored one"


def test_a_stored_file_cut_short_behind_the_index_is_a_failed_sub_operation_not_a_smaller_instance(
        node_process: Callable[..., NodeProcess], storescp, tmp_path: Path) -> None:  # noqa: F811
    """A stored file cut at an element boundary (here: just before its Pixel Data) still parses:
    it used to go out as a whole, smaller dataset and the destination answered Success for a
    damaged instance. Its size no longer matches the indexed one, so that sub-operation fails,
    nothing of it is sent, and the move goes on with the next instance."""
    scp: StoreSCP = storescp("+xa")
    node = node_process(institution=INSTITUTION)
    node.cli("peer", "add", "storescp", "--aet", "STORESCP", "--host", LOOPBACK, "--port", str(scp.port),
             "--institution", INSTITUTION)
    study_uid = generate_uid()
    files = [write_instance(PYDICOM_FILES / "CT_small.dcm", tmp_path / f"ct{i}.dcm", study_uid=study_uid,
                            PatientID="MOVE2", IssuerOfPatientID=INSTITUTION) for i in range(2)]
    imported = node.cli("import", *map(str, files))
    assert imported.returncode == 0, imported.explain()
    node.start()
    damaged, intact = (str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files)
    stored = node.stored_bytes(damaged)
    assert stored is not None
    node.replace_stored(damaged, stored[:stored.rindex(b"\xe0\x7f\x10\x00")])  # Pixel Data (7FE0,0010) gone
    moved = run_tool(["/usr/bin/movescu", "-v", "-S", "-aet", "STORESCP", "-aec", "PACSNODE", "-aem", "STORESCP",
                      "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
                      LOOPBACK, str(node.port)], timeout=120)
    scp.stop()
    assert scp.received(damaged) is None, "a damaged file went out as a whole instance"
    received = scp.received(intact)
    assert received is not None and dataset_bytes(received) == dataset_bytes(node.stored_bytes(intact) or b"")
    assert "Final Move Response (Warning: SubOperationsCompleteOneOrMoreFailures)" in moved.output, moved.explain()
