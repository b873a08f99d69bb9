"""The facts read from the receiver's kept bytes are the facts read from the file.

The C-STORE receiver keeps the first ``header.SMALL_FILE`` bytes it writes (a small instance
whole) and ``header.scan`` reads them instead of opening the file (issue 13). Whatever those
bytes are (every sample and pydicom test file, cut at any point, a file larger than the
prefix whose header ends inside or past it, a declared length far past the end), the bytes
path gives the same scan, the same facts or the same exception as the file path.
"""

from __future__ import annotations

import io
import random
import resource
import struct
import subprocess
from pathlib import Path
from typing import Any, Callable

import pydicom
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE

from pacsnode.config import NodeConfig
from pacsnode.dicom import header
from pacsnode.dicom.extract import read_facts
from pacsnode.dimse.listener import Listener
from pacsnode.model import ReceivedFile, StoreOutcome
from pacsnode.node import Node
from support import NodeProcess as SupportNode
from support import dcmtk, have_tool
from test_header_scan import _candidates

SMALL = header.SMALL_FILE


def _outcome(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as exc:  # the same exception, with the same message, is the same outcome
        return type(exc), str(exc)


def _received(data: bytes, cut: int) -> ReceivedFile:
    return ReceivedFile("", len(data), head=data[:cut])


def _assert_same(path: Path, data: bytes, cuts: list[int], facts: bool = True) -> None:
    by_file = _outcome(lambda: header.scan(path))
    facts_by_file = _outcome(lambda: read_facts(path)) if facts else None
    for cut in cuts:
        head = data[:cut]
        assert _outcome(lambda: header.scan(path, head, len(data))) == by_file, (path, cut)
        if facts:
            assert _outcome(lambda: read_facts(path, _received(data, cut))) == facts_by_file, (path, cut)


def test_every_file_and_every_cut_of_its_head_gives_the_file_paths_scan_and_facts() -> None:
    chance = random.Random(13)
    files = _candidates()
    without_file = 0
    for path in files:
        data = path.read_bytes()
        whole = min(len(data), SMALL)
        _assert_same(path, data, [whole, chance.randint(0, whole)])  # as the receiver keeps it; cut short
        _assert_same(path, data, [chance.randint(0, whole), chance.randint(128, min(whole, 600))], facts=False)
        without_file += not isinstance(_outcome(lambda: header.scan(MISSING, data[:whole], len(data))), tuple)
    assert len(files) > 100 and without_file > 100  # most files were read from the kept bytes alone


MISSING = Path("/nonexistent/pacsnode/head-only.dcm")  # the scan of kept bytes that opens no file succeeds here


def _sample(implicit: bool = False) -> pydicom.Dataset:
    source = next(p for p in sorted(Path(__file__).resolve().parents[1].joinpath("sample_dicom").rglob("*.dcm"))
                  if "CT" in p.parent.name)
    ds = pydicom.dcmread(source)
    if implicit:
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    return ds


def _write(path: Path, ds: pydicom.Dataset, tail: bytes = b"") -> bytes:
    """``ds`` as a Part 10 file; ``tail`` (raw elements) in place of its pixel data."""
    if tail:
        del ds.PixelData
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    data = buffer.getvalue() + tail
    path.write_bytes(data)
    return data


CUTS = [SMALL, SMALL - 1, SMALL // 2, 1000, 131, 0, SMALL + 7]  # as the receiver keeps it, and cut anywhere


@pytest.mark.parametrize("implicit", [False, True])
def test_a_file_larger_than_the_prefix(tmp_path: Path, implicit: bool) -> None:
    path = tmp_path / "large.dcm"
    pixels = b"\xe0\x7f\x10\x00" + (b"" if implicit else b"OB\x00\x00")
    # the header inside the prefix, 200 KB of pixel data past it: read from the kept bytes alone
    data = _write(path, _sample(implicit), pixels + struct.pack("<L", 200_000) + bytes(200_000))
    assert header.scan(MISSING, data[:SMALL], len(data)) == header.scan(path)  # the file is not opened
    _assert_same(path, data, CUTS)
    # the same pixel data cut short: the walk on the prefix sees its length run past the file
    path.write_bytes(data[:-10])
    _assert_same(path, data[:-10], CUTS)
    # encapsulated (undefined length) pixel data past the prefix: the file is mapped, as before
    items = b"\xfe\xff\x00\xe0\x00\x00\x00\x00" + b"\xfe\xff\x00\xe0" + struct.pack("<L", 100_000) + bytes(100_000)
    undefined = pixels + b"\xff\xff\xff\xff" + items + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    data = _write(path, _sample(implicit), undefined)
    _assert_same(path, data, CUTS)
    with pytest.raises(FileNotFoundError):
        header.scan(MISSING, data[:SMALL], len(data))


@pytest.mark.parametrize("implicit", [False, True])
def test_a_header_past_the_prefix_and_a_huge_declared_length(tmp_path: Path, implicit: bool) -> None:
    path = tmp_path / "long.dcm"
    ds = _sample(implicit)
    ds.add_new(0x00091010, "OB", bytes(100_000))  # before Patient's Name: the indexed values lie past the prefix
    data = _write(path, ds)
    _assert_same(path, data, CUTS)
    with pytest.raises(FileNotFoundError):
        header.scan(MISSING, data[:SMALL], len(data))
    # a Patient ID declaring 100,000 bytes that are all there (only implicit VR can say so): ValueTooLong both ways
    ds = _sample(True)
    del ds[0x00091010:0x00091011]
    plain = _write(path, ds)
    at = plain.index(b"\x10\x00\x20\x00")  # (0010,0020) Patient ID, implicit VR
    length = struct.unpack_from("<L", plain, at + 4)[0]
    data = plain[:at + 4] + struct.pack("<L", 100_000) + bytes(100_000) + plain[at + 8 + length:]
    path.write_bytes(data)
    assert isinstance(_outcome(lambda: read_facts(path)), tuple)  # refused, not stored
    _assert_same(path, data, CUTS)
    # the same length declared with nothing behind it (a file far shorter than it says)
    data = plain[:at + 4] + struct.pack("<L", 0xFFFFFFF0) + plain[at + 8 + length:]
    path.write_bytes(data)
    _assert_same(path, data, CUTS)


def test_kept_bytes_that_cannot_be_the_files_head_are_not_used(tmp_path: Path) -> None:
    path = tmp_path / "one.dcm"
    data = _write(path, _sample())
    assert header.scan(path, data + b"\x00\x00", len(data)) == header.scan(path)  # longer than the file


class _Recording(Node):
    """A node that notes, for each C-STORE, whether the receiver's kept bytes are the file's head."""

    heads: list[tuple[int, bool]]

    def store_file(self, temp_path: Path, *args: Any, received: ReceivedFile | None = None,
                   **kwargs: Any) -> StoreOutcome:
        data = temp_path.read_bytes()
        assert received is not None
        self.heads.append((len(data), received.head == data[:SMALL] and received.size == len(data)))
        return super().store_file(temp_path, *args, received=received, **kwargs)


@pytest.mark.skipif(not have_tool("storescu"), reason="DCMTK not installed")
def test_the_receiver_keeps_exactly_the_head_it_wrote(tmp_path: Path) -> None:
    """storescu with 4 KB PDUs: the head is assembled from many fragments, behind our own meta."""
    small, large = tmp_path / "small.dcm", tmp_path / "large.dcm"
    _write(small, _sample())
    ds = _sample()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.10.1078.99.2"
    _write(large, ds, b"\xe0\x7f\x10\x00OB\x00\x00" + struct.pack("<L", 150_000) + bytes(150_000))
    node = _Recording(NodeConfig(home=tmp_path / "home", port=0))
    node.heads = []
    listener = Listener(node, host="127.0.0.1", port=0)
    listener.start()
    try:
        result = subprocess.run([dcmtk("storescu"), "--max-send-pdu", "4096", "-aec", "PACSNODE", "127.0.0.1",
                                 str(listener.port), str(small), str(large)], capture_output=True, text=True,
                                timeout=60)
    finally:
        listener.stop(grace=1.0)
        node.close()
    assert result.returncode == 0, result.stderr
    assert len(node.heads) == 2 and all(same for _size, same in node.heads), node.heads
    assert max(size for size, _same in node.heads) > SMALL


def _limit_file_size() -> None:
    """In the node's process: no file may grow past 1 MB (Python ignores SIGXFSZ: os.write fails with EFBIG)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


def test_a_failed_write_fails_the_store_whatever_the_kept_bytes_say(tmp_path: Path) -> None:
    """The receiver's head is the file's only while every write succeeded: a write that fails (here
    past 1 MB, after the head was kept) discards the file and answers Out of Resources, and the
    association goes on to store the next instance."""
    files = [tmp_path / f"{number}.dcm" for number in range(3)]
    for number, path in enumerate(files):
        ds = _sample()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.3680043.10.1078.99.3.{number}"
        pixels = bytes(2 << 20) if number == 1 else b""  # 2 MB: its write fails past the 1 MB limit
        _write(path, ds, pixels and b"\xe0\x7f\x10\x00OB\x00\x00" + struct.pack("<L", len(pixels)) + pixels)
    with SupportNode(tmp_path / "home", preexec_fn=_limit_file_size) as node:
        ae = AE(ae_title="STORESCU")
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="PACSNODE")
        assert assoc.is_established
        statuses = [int(assoc.send_c_store(path).Status) for path in files]
        assoc.release()
        stored = {row[0] for row in node.index_rows("SELECT sop_instance_uid FROM instances")}
        assert statuses == [0x0000, 0xA700, 0x0000]
        assert stored == {f"1.2.826.0.1.3680043.10.1078.99.3.{n}" for n in (0, 2)}
        assert node.temp_files() == []
