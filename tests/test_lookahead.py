"""The next sub-operation's C-STORE-RQ is staged while the destination answers this one
(``dimse/lookahead.py``), and staging changes nothing a peer can see: a file that cannot be
staged is that instance's failed sub-operation, and a staged file never sent is closed."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Callable

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from pacsnode.dimse import pdu, sending
from pacsnode.dimse.lookahead import Lookahead, StagedStore
from pacsnode.model import InstanceLocation
from support import LOOPBACK, NodeProcess, a_ct_file, open_files, run_tool, write_instance
from test_outgoing import _accept_all, _FakeAcceptor, _location, _read_message

INSTITUTION = "PRV001"


def _stage(location: InstanceLocation, buffer: bytearray) -> StagedStore:
    prepared = sending.prepare_store(location, 1, location.transfer_syntax, 7, 16384)
    return StagedStore(prepared, buffer, 7, location)


def _copies(tmp_path: Path, count: int) -> list[InstanceLocation]:
    return [_location(write_instance(a_ct_file(), tmp_path / f"ct{i}.dcm")) for i in range(count)]


def test_a_file_that_cannot_be_staged_fails_on_its_turn_and_the_next_goes_out(tmp_path: Path) -> None:
    first, missing, last = _copies(tmp_path, 3)
    Path(missing.path).unlink()
    ahead = Lookahead([first, missing, last], _stage)
    with ahead.take(first) as staged:
        sent = b"".join(bytes(batch) for batch in staged.batches())
    assert sent == b"".join(sending.iter_store_pdus(first, 1, first.transfer_syntax, 7, 16384))
    ahead.prefetch()  # staging the missing file raises nothing yet
    with pytest.raises(sending.UnreadableInstance):
        ahead.take(missing)
    with ahead.take(last) as staged:
        assert b"".join(bytes(batch) for batch in staged.batches()) == \
            b"".join(sending.iter_store_pdus(last, 1, last.transfer_syntax, 7, 16384))
    ahead.close()


def test_a_staged_file_that_is_never_sent_is_closed(tmp_path: Path) -> None:
    first, second = _copies(tmp_path, 2)
    ahead = Lookahead([first, second], _stage)
    with ahead.take(first) as staged:
        for _batch in staged.batches():
            pass
    ahead.prefetch()
    assert open_files(os.getpid(), second.path), "the second instance was not staged"
    ahead.close()  # a cancel or a lost destination: the staged store is never taken
    assert open_files(os.getpid(), second.path) == []


def test_c_move_stages_the_next_instance_while_the_destination_answers(
        node_process: Callable[..., NodeProcess], tmp_path: Path) -> None:
    """The destination holds its first C-STORE-RSP back until the node has the second instance's file
    open: it was opened only after that response before, the destination idle meanwhile."""
    node = node_process(institution=INSTITUTION)
    study_uid = generate_uid()
    files = [write_instance(a_ct_file(), tmp_path / f"ct{i}.dcm", study_uid=study_uid, PatientID="LOOK1",
                            IssuerOfPatientID=INSTITUTION) for i in range(2)]
    uids = [str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    staged_early: list[bool] = []

    def serve(conn: socket.socket) -> None:
        for turn in range(2):
            context_id, command, _dataset = _read_message(conn)
            uid = command.text(pdu.AFFECTED_SOP_INSTANCE_UID)
            if turn == 0:
                other = next(u for u in uids if u != uid)
                deadline = time.monotonic() + 3
                while not open_files(node.pid, other) and time.monotonic() < deadline:
                    time.sleep(0.01)
                staged_early.append(bool(open_files(node.pid, other)))
            conn.sendall(pdu.encode_message(context_id, pdu.encode_command({
                pdu.AFFECTED_SOP_CLASS_UID: command.text(pdu.AFFECTED_SOP_CLASS_UID),
                pdu.COMMAND_FIELD: pdu.C_STORE_RSP, pdu.MESSAGE_ID_BEING_RESPONDED_TO: command.us(pdu.MESSAGE_ID),
                pdu.COMMAND_DATASET_TYPE: pdu.NO_DATASET, pdu.STATUS: 0, pdu.AFFECTED_SOP_INSTANCE_UID: uid}),
                None, 0))
        if conn.recv(6, socket.MSG_WAITALL)[:1] == bytes([pdu.RELEASE_RQ]):
            conn.recv(4, socket.MSG_WAITALL)
            conn.sendall(pdu.ReleaseRP().encode())

    destination = _FakeAcceptor(lambda rq: _accept_all(rq, 16384), serve)
    try:
        node.cli("peer", "add", "fake", "--aet", "FAKE", "--host", LOOPBACK, "--port", str(destination.port),
                 "--institution", INSTITUTION)
        node.cli("peer", "add", "mover", "--aet", "MOVESCU", "--host", LOOPBACK, "--port", "1",
                 "--institution", INSTITUTION)
        imported = node.cli("import", *map(str, files))
        assert imported.returncode == 0, imported.explain()
        node.start()
        moved = run_tool(["/usr/bin/movescu", "-v", "-S", "-aet", "MOVESCU", "-aec", "PACSNODE", "-aem", "FAKE",
                          "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
                          LOOPBACK, str(node.port)], timeout=60)
    finally:
        destination.close()
    assert "Final Move Response (Success)" in moved.output, moved.explain()
    assert staged_early == [True], "the second instance was opened only after the first one's C-STORE-RSP"
