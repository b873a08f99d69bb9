"""Load and resource limits, short versions.

* 20 storing associations while 5 others C-FIND, C-MOVE (to DCMTK storescp) and C-GET, then a
  100 MB multi-frame instance (``bench/load.py`` is the long version: more rounds, 500 MB);
* the configured limits bite from outside: ``[network] max_associations`` refuses the extra
  association, ``[store] quota_bytes`` answers 0xA700 and leaves no file, ``[query]
  max_results`` answers 0xA700 and logs it, ``network_timeout`` closes an idle association;
* a full disk, simulated at the ``StorageArea`` seam (ENOSPC from ``place``) and in the index
  (SQLite's ``max_page_count``), is Out of Resources (0xA700) with nothing partial left.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
import time
from pathlib import Path
from typing import Iterator

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, Verification

ROOT = Path(__file__).resolve().parents[1]

from bench.load import run_load  # noqa: E402
from bench.node_process import NodeProcess  # noqa: E402
from bench.soak_crash import (  # noqa: E402
    chunked_send,
    configure,
    echo,
    free_port,
    index_rows,
    init_home,
    pacsnode,
    quiet_pynetdicom,
    run_check,
    write_instance,
)
from pacsnode.config import parse_config  # noqa: E402
from pacsnode.dimse.statuses import store_status  # noqa: E402
from pacsnode.errors import StorageFull  # noqa: E402
from pacsnode.model import Caller, StoredFile  # noqa: E402
from pacsnode.node import Node  # noqa: E402
from pacsnode.storage.filesystem import FileStorage  # noqa: E402
from support import have_tool

pytestmark = pytest.mark.timeout(300)
UID = "1.2.826.0.1.3680043.10.1078.70"
OUT_OF_RESOURCES = 0xA700
MAX_RESULTS = 3
NETWORK_TIMEOUT = 2.0


# -- load -------------------------------------------------------------------------------------
@pytest.mark.skipif(not have_tool("storescp"), reason="DCMTK storescp (the C-MOVE destination) is missing")
def say(request: pytest.FixtureRequest, text: str) -> None:
    """A line on the terminal even when output is captured (the numbers are the point of these tests)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None:
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            reporter.write_line(text)


def test_twenty_stores_while_five_query_and_retrieve_then_a_100_mb_instance(tmp_path: Path,
                                                                             request: pytest.FixtureRequest) -> None:
    lines: list[str] = []
    try:
        report = run_load(tmp_path, rounds=1, stores=20, per_store=8, size=64, big_mb=100, log=lines.append)
    finally:
        shutil.rmtree(tmp_path / "home", ignore_errors=True)  # the stored 100 MB copy too
    say(request, "\nload (short): " + "\n".join(lines))
    assert report.problems == []
    assert report.stores_ok == 160
    assert report.finds > 0 and report.moves > 0 and report.gets > 0
    assert report.locked_lines == []  # "database is locked" never reached the server's stderr
    assert report.rss_peak_mb[0] < report.rss_idle_mb + 200, "RSS under load is not bounded"
    assert report.big_status == 0 and report.big_growth_mb < 50


# -- configured limits, seen from outside ------------------------------------------------------
@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node with 4 imported studies of patient LIMITS, then tight limits, served."""
    quiet_pynetdicom()
    tmp = tmp_path_factory.mktemp("limits")
    port = free_port()
    home = init_home(tmp / "home", port)
    seed = tmp / "seed"
    seed.mkdir()
    for s in range(1, 5):
        write_instance(seed / f"{s}.dcm", f"{UID}.{s}", f"{UID}.{s}.1", f"{UID}.{s}.1.1", "LIMITS")
    pacsnode(home, "import", str(seed), check=True)
    pacsnode(home, "peer", "add", "limits", "--aet", "LIMITSCU", "--host", "127.0.0.1", "--port", "1",
             "--institution", "PRV001", check=True)
    used = sum(r["size"] for r in index_rows(home))
    one = (seed / "1.dcm").stat().st_size
    configure(home, {"network": {"max_associations": 2, "network_timeout": NETWORK_TIMEOUT},
                     "query": {"max_results": MAX_RESULTS},
                     "store": {"quota_bytes": used + one + one // 2}})  # room for one more instance
    with NodeProcess(home, port=port, log_path=tmp / "serve.log", ready="echo", start_timeout=30) as server:
        yield server


def no_temp_files_soon(home: Path, seconds: float = 8.0) -> bool:
    """True once ``home/tmp`` is empty: the server side of a released association may still be
    closing (it lingers for the peer to hang up) and only then drops its spare temporary file."""
    deadline = time.monotonic() + seconds
    while list((home / "tmp").glob("*")):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def associate(port: int, *contexts: str) -> object:
    ae = AE(ae_title="LIMITSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    for context in contexts:
        ae.add_requested_context(context, ExplicitVRLittleEndian) if context == CTImageStorage \
            else ae.add_requested_context(context)
    return ae.associate("127.0.0.1", port, ae_title="PACSNODE")


def test_max_associations_refuses_the_extra_one(limited: NodeProcess) -> None:
    first = associate(limited.port, Verification)
    second = associate(limited.port, Verification)
    try:
        assert first.is_established and second.is_established  # type: ignore[attr-defined]
        third = associate(limited.port, Verification)
        assert third.is_rejected and not third.is_established  # type: ignore[attr-defined]
    finally:
        for assoc in (first, second):
            if assoc.is_established:  # type: ignore[attr-defined]
                assoc.release()  # type: ignore[attr-defined]
    time.sleep(0.3)
    again = associate(limited.port, Verification)
    assert again.is_established  # type: ignore[attr-defined]
    again.release()  # type: ignore[attr-defined]


def test_store_beyond_quota_is_out_of_resources_and_leaves_no_file(limited: NodeProcess, tmp_path: Path) -> None:
    files = [write_instance(tmp_path / f"q{i}.dcm", f"{UID}.9", f"{UID}.9.1", f"{UID}.9.1.{i}", "LIMITS", number=i)
             for i in range(1, 4)]
    assoc = associate(limited.port, CTImageStorage)
    assert assoc.is_established  # type: ignore[attr-defined]
    with chunked_send():
        statuses = [int(assoc.send_c_store(path).Status) for path in files]  # type: ignore[attr-defined]
    assoc.release()  # type: ignore[attr-defined]
    assert statuses == [0x0000, OUT_OF_RESOURCES, OUT_OF_RESOURCES]
    indexed = {r["sop_instance_uid"] for r in index_rows(limited.home)}
    assert f"{UID}.9.1.1" in indexed and not {f"{UID}.9.1.2", f"{UID}.9.1.3"} & indexed
    stored = [p for p in (limited.home / "storage").rglob("*") if p.is_file()]
    assert len(stored) == len(indexed)
    assert no_temp_files_soon(limited.home)
    assert run_check(limited.home).clean


def test_find_beyond_max_results_fails_with_a700_and_a_log_line(limited: NodeProcess) -> None:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = "LIMITS"
    query.IssuerOfPatientID = "SOAK"
    query.StudyInstanceUID = ""
    assoc = associate(limited.port, StudyRootQueryRetrieveInformationModelFind)
    assert assoc.is_established  # type: ignore[attr-defined]
    responses = list(assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))  # type: ignore
    assoc.release()  # type: ignore[attr-defined]
    statuses = [int(status.Status) for status, _identifier in responses]
    assert statuses == [OUT_OF_RESOURCES]  # no partial answer, one failure
    assert f"limit of {MAX_RESULTS}" in limited.log_text()  # the operator can see why


def test_an_idle_association_is_closed_after_network_timeout(limited: NodeProcess) -> None:
    assoc = associate(limited.port, Verification)
    assert assoc.is_established  # type: ignore[attr-defined]
    started = time.monotonic()
    while assoc.is_established and time.monotonic() - started < NETWORK_TIMEOUT + 10:  # type: ignore
        time.sleep(0.05)
    closed_after = time.monotonic() - started
    assert not assoc.is_established, "the idle association was not closed"  # type: ignore[attr-defined]
    assert NETWORK_TIMEOUT - 0.5 <= closed_after <= NETWORK_TIMEOUT + 5
    assert assoc.is_aborted or assoc.is_released  # type: ignore[attr-defined]


def test_file_descriptors_and_memory_do_not_grow_with_associations(limited: NodeProcess) -> None:
    """Each association runs in a new thread with its own index connection: those must not pile up."""
    def open_fds() -> int:
        return len(list(Path(f"/proc/{limited.pid}/fd").iterdir()))

    for _ in range(20):  # warm up: caches, first connections
        assert echo(limited.port)
    fds_before, rss_before = open_fds(), limited.rss_bytes()
    for _ in range(150):
        assert echo(limited.port)
    time.sleep(0.3)
    assert open_fds() <= fds_before + 10, f"{open_fds() - fds_before} file descriptors more after 150 associations"
    assert limited.rss_bytes() - rss_before < 15 << 20


# -- a full disk, in process ---------------------------------------------------------------------
class FullDisk(FileStorage):
    """A storage area on a disk with no space left (the ``StorageArea`` seam, no root tricks)."""

    def place(self, temp_path: Path, sop_instance_uid: str, *more: object, **options: object) -> StoredFile:
        raise OSError(errno.ENOSPC, "No space left on device")


def _received(node: Node, tmp_path: Path, n: int) -> Path:
    source = write_instance(tmp_path / f"d{n}.dcm", f"{UID}.8", f"{UID}.8.1", f"{UID}.8.1.{n}", "DISK", number=n)
    temp = node.new_temp_file()
    shutil.copyfile(source, temp)
    return temp


def test_disk_full_at_the_storage_seam_is_out_of_resources_with_nothing_left(tmp_path: Path) -> None:
    config = parse_config({}, tmp_path / "home")
    node = Node(config, storage=FullDisk(config.storage_path))
    try:
        temp = _received(node, tmp_path, 1)
        with pytest.raises(StorageFull) as refused:
            node.store_file(temp, Caller.nobody("MODALITY"))
        assert store_status(refused.value) == OUT_OF_RESOURCES
        assert not temp.exists() and not list(config.temp_path.iterdir())
        assert not list(node.storage.walk()) and node.index.all_instance_files() == []
        assert node.check().clean
    finally:
        node.close()


def test_index_full_is_out_of_resources_and_the_file_is_undone(tmp_path: Path) -> None:
    config = parse_config({}, tmp_path / "home")
    node = Node(config)
    try:
        conn = node.index.connection()  # store_file runs in this thread: this connection
        stored = 0
        conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
        with pytest.raises(StorageFull) as refused:
            for n in range(1, 200):
                node.store_file(_received(node, tmp_path, n), Caller.nobody("MODALITY"))
                stored += 1
        assert store_status(refused.value) == OUT_OF_RESOURCES
        assert len(node.index.all_instance_files()) == stored
        assert len(list(node.storage.walk())) == stored  # the refused instance's file is gone
        assert not list(config.temp_path.iterdir())
        conn.execute("PRAGMA max_page_count = 1073741823")  # room again: the same connection still writes
        node.store_file(_received(node, tmp_path, 500), Caller.nobody("MODALITY"))
        assert node.check().clean
    finally:
        node.close()
