"""Shared test helpers: a ``pacsnode serve`` subprocess that always stops, DCMTK runners, sample files.

The node is ``bench.node_process.NodeProcess`` (the one way tests and benchmarks start a node);
:class:`NodeProcess` here adds the DCMTK and CLI conveniences tests use: a test gets a real node
on a free loopback port, talks to it with real tools, and it is stopped whatever happens.
Nothing here asserts on log text: statuses come from the DIMSE responses DCMTK prints with
``-d`` (the wire values, not our logging), data from ``pacsnode studies --json`` and the index.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import generate_uid

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # bench/ (the node controller, shared harnesses) lives at the repository root
    sys.path.insert(0, str(REPO))

from bench import node_process  # noqa: E402
from bench.node_process import LOOPBACK, PACSNODE, NodeStartError, free_port, port_accepts, set_config  # noqa: E402,F401
SAMPLE_DIR = REPO / "sample_dicom"
SAMPLE_MANIFEST = REPO / "tests" / "data" / "sample_manifest.json"  # written by scripts/make_sample_dicom.py
# DCMTK by full path: an activated venv puts pynetdicom's own echoscu/findscu/storescu first on PATH.
DCMTK_BIN = Path(os.environ.get("PACSNODE_DCMTK_BIN", "/usr/bin"))
FALLBACK_TEST_FILES = ("CT_small.dcm", "MR_small.dcm")


# -- tools ------------------------------------------------------------------------------------
def dcmtk(name: str) -> str:
    """The full path of a DCMTK tool (``echoscu``, ``storescu``, ``findscu``, ...), never a PATH lookup."""
    return str(DCMTK_BIN / name)


def have_tool(name: str) -> bool:
    """A DCMTK tool is installed at :data:`DCMTK_BIN`; any other tool is on PATH."""
    return os.access(dcmtk(name), os.X_OK) or (shutil.which(name) is not None and not _is_dcmtk_name(name))


def _is_dcmtk_name(name: str) -> bool:
    return name in {"echoscu", "storescu", "findscu", "movescu", "getscu", "storescp", "dcmdump", "dcmodify"}


needs_dcmtk = pytest.mark.skipif(
    not (have_tool("echoscu") and have_tool("storescu")), reason="DCMTK (echoscu, storescu) is not installed")

_MESSAGE = re.compile(r"=+ (INCOMING|OUTGOING) DIMSE MESSAGE =+(.*?)=+ END DIMSE MESSAGE =+", re.S)
_FIELD = re.compile(r"^D:\s*([A-Za-z ]+?)\s*:\s*(.*)$", re.M)


@dataclass
class StoreResponse:
    """One C-STORE-RSP as DCMTK decoded it from the wire."""

    sop_instance_uid: str
    status: int


@dataclass
class ToolResult:
    """What a command-line tool did."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def store_responses(self) -> list[StoreResponse]:
        """The C-STORE responses of a ``storescu -d`` run, in order, each with the UID its request sent.

        Requests and responses are paired by Message ID: the response's own Affected SOP
        Instance UID is whatever the SCP could make of a malformed one.
        """
        requested: dict[str, str] = {}
        found = []
        for direction, block in _MESSAGE.findall(self.output):
            fields = {k.strip(): v.strip() for k, v in _FIELD.findall(block)}
            kind = fields.get("Message Type", "")
            if direction == "OUTGOING" and kind == "C-STORE RQ":
                requested[fields.get("Message ID", "")] = fields.get("Affected SOP Instance UID", "")
            elif direction == "INCOMING" and kind == "C-STORE RSP":
                status = re.match(r"0x([0-9a-fA-F]{4})", fields.get("DIMSE Status", ""))
                assert status, f"no DIMSE status in response block:\n{block}"
                uid = requested.get(fields.get("Message ID Being Responded To", ""),
                                    fields.get("Affected SOP Instance UID", ""))
                found.append(StoreResponse(uid, int(status.group(1), 16)))
        return found

    def status_of(self, sop_instance_uid: str) -> int:
        matches = [r.status for r in self.store_responses if r.sop_instance_uid == sop_instance_uid]
        assert matches, f"no C-STORE response for {sop_instance_uid}:\n{self.output[-4000:]}"
        return matches[-1]

    def explain(self) -> str:
        return f"$ {' '.join(self.args)}\nexit {self.returncode}\n--- stdout\n{self.stdout[-4000:]}\n" \
               f"--- stderr\n{self.stderr[-4000:]}"


def run_tool(args: Sequence[str | os.PathLike[str]], timeout: float = 60.0, cwd: Path | None = None) -> ToolResult:
    """Run a tool, capture its output, and fail the test (not hang) when it overruns ``timeout``."""
    argv = [str(a) for a in args]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                              encoding="utf-8", errors="replace")
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(argv)} did not finish within {timeout} s\n{exc.stdout or ''}\n{exc.stderr or ''}")
    return ToolResult(argv, done.returncode, done.stdout, done.stderr)


_CLI_RUNNER = threading.Lock()  # CliRunner swaps sys.stdout and sys.stderr: one command at a time


def cli_in_process(*args: str) -> ToolResult:
    """``pacsnode <args>`` run in this process through click's CliRunner (the same command code as the
    console script; exit code, stdout and stderr kept apart). An exception the CLI edge let through
    (it turns every other one into a one-line error) is added to stderr with its traceback. A hang is
    caught by pytest-timeout, not by a per-call timeout."""
    import traceback

    from click.testing import CliRunner

    from pacsnode.cli import main

    with _CLI_RUNNER:
        result = CliRunner().invoke(main, list(args), prog_name="pacsnode")
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return ToolResult(["pacsnode", *args], result.exit_code, result.stdout, stderr)


def echoscu(port: int, aec: str = "PACSNODE", aet: str = "ECHOSCU", timeout: float = 30.0) -> ToolResult:
    return run_tool([dcmtk("echoscu"), "-v", "-to", "10", "-aet", aet, "-aec", aec, LOOPBACK, str(port)], timeout=timeout)


def storescu_args(port: int, paths: Iterable[Path | str], aec: str = "PACSNODE", aet: str = "STORESCU",
                  extra: Sequence[str] = ()) -> list[str]:
    return [dcmtk("storescu"), "-d", "-nh", "-to", "20", "-aet", aet, "-aec", aec, *extra, LOOPBACK, str(port),
            *[str(p) for p in paths]]


def storescu(port: int, paths: Iterable[Path | str], aec: str = "PACSNODE", aet: str = "STORESCU",
             extra: Sequence[str] = (), timeout: float = 60.0) -> ToolResult:
    """C-STORE files (or, with ``extra=("+sd", "+r")``, folders) on one association, decoding every response."""
    return run_tool(storescu_args(port, paths, aec, aet, extra), timeout=timeout)


# -- sample data --------------------------------------------------------------------------------
def sample_files() -> list[Path]:
    """The sample .dcm files (sample_dicom/ when generated, else pydicom's bundled test files)."""
    if SAMPLE_DIR.is_dir():
        files = sorted(p for p in SAMPLE_DIR.rglob("*.dcm") if p.is_file())
        if files:
            return files
    from pydicom.data import get_testdata_file

    return [Path(str(get_testdata_file(name))) for name in FALLBACK_TEST_FILES]


def open_files(pid: int, needle: str) -> list[str]:
    """The files process ``pid`` has open whose path contains ``needle``."""
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if needle in target:
            found.append(target)
    return found


def a_ct_file() -> Path:
    """One uncompressed CT image file to derive test instances from."""
    for path in sample_files():
        ds = dcmread(path, stop_before_pixels=True)
        if ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and not ds.file_meta.TransferSyntaxUID.is_compressed:
            return path
    from pydicom.data import get_testdata_file

    return Path(str(get_testdata_file("CT_small.dcm")))


@dataclass
class ExpectedStudy:
    """A study as the files describe it, to compare with ``pacsnode studies --json``."""

    study_uid: str
    patient_id: str = ""
    issuer_of_patient_id: str = ""
    patient_name: str = ""
    study_date: str = ""
    accession_number: str = ""
    institution_name: str = ""
    modalities: set[str] = field(default_factory=set)
    series: set[str] = field(default_factory=set)
    instances: set[str] = field(default_factory=set)


def expected_studies(paths: Iterable[Path]) -> dict[str, ExpectedStudy]:
    """Group files by study, read straight from their headers with pydicom."""
    studies: dict[str, ExpectedStudy] = {}
    for path in paths:
        ds = dcmread(path, stop_before_pixels=True)
        study = studies.setdefault(str(ds.StudyInstanceUID), ExpectedStudy(
            study_uid=str(ds.StudyInstanceUID), patient_id=str(ds.get("PatientID", "")),
            issuer_of_patient_id=str(ds.get("IssuerOfPatientID", "")), patient_name=str(ds.get("PatientName", "")),
            study_date=str(ds.get("StudyDate", "")), accession_number=str(ds.get("AccessionNumber", "")),
            institution_name=str(ds.get("InstitutionName", ""))))
        if ds.get("Modality"):
            study.modalities.add(str(ds.Modality))
        study.series.add(str(ds.SeriesInstanceUID))
        study.instances.add(str(ds.SOPInstanceUID))
    return studies


def dataset_bytes(path: Path | bytes) -> bytes:
    """The bytes of a Part 10 file (a path, or its bytes) after its preamble and file meta: the dataset
    as sent on the wire."""
    import io

    from pydicom.filereader import data_element_generator, read_preamble

    with (io.BytesIO(path) if isinstance(path, bytes) else open(path, "rb")) as handle:
        read_preamble(handle, False)
        for _ in data_element_generator(handle, False, True, stop_when=lambda tag, *_: tag.group != 2):
            pass
        return handle.read()


def home_index_rows(home: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read a home's SQLite index directly (read-only; WAL lets us read next to the writer)."""
    import sqlite3

    conn = sqlite3.connect(f"file:{home / 'index.sqlite'}?mode=ro", uri=True, timeout=30)
    try:
        return [tuple(r) for r in conn.execute(sql, params).fetchall()]
    finally:
        conn.close()


def write_instance(template: Path | Dataset, out: Path, *, sop_instance_uid: str | None = None,
                   study_uid: str | None = None, series_uid: str | None = None, **attributes: Any) -> Path:
    """Write a copy of ``template`` with new UIDs (fresh ones unless given) and changed attributes."""
    ds = dcmread(template) if isinstance(template, Path) else template.copy()
    ds.SOPInstanceUID = sop_instance_uid or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if study_uid:
        ds.StudyInstanceUID = study_uid
    if series_uid:
        ds.SeriesInstanceUID = series_uid
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    out.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(out, ds, enforce_file_format=False)
    return out


def make_series(template: Path, folder: Path, count: int, study_uid: str | None = None,
                series_uid: str | None = None, **attributes: Any) -> list[Path]:
    """``count`` instances of one new series (one new study unless given), as small files."""
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    base = dcmread(template)
    return [write_instance(base, folder / f"{n:04d}.dcm", study_uid=study_uid, series_uid=series_uid,
                           InstanceNumber=n + 1, **attributes) for n in range(count)]


# -- the node under test ------------------------------------------------------------------------
class NodeProcess(node_process.NodeProcess):
    """``bench.node_process.NodeProcess`` (start, stop, kill, restart, web, logs) plus what tests ask of
    a served node: the CLI as a :class:`ToolResult`, DCMTK stores and echoes, the index read directly.

    Use as a context manager or through the ``node_process`` fixture, which stops it in teardown
    even when the test fails.
    """

    #: Run :meth:`cli` in this process (click's CliRunner) rather than as a ``pacsnode`` subprocess: for
    #: tests that use the CLI to set up or read a node, not to test the command line itself. The same
    #: command code runs; what is saved is an interpreter start and its imports per call (about 0.8 s of
    #: CPU, 4-15 s of wall time on a loaded machine, against ~0.05 s in process).
    cli_in_process = False

    # -- talking to it ----------------------------------------------------------------------
    def cli(self, *args: str, timeout: float = 60.0, in_process: bool | None = None) -> ToolResult:
        """Run ``pacsnode --home H <args>`` (the CLI works next to a running server); ``in_process``
        overrides :attr:`cli_in_process` for one call (a set-up step, or the command under test)."""
        wanted = self.cli_in_process if in_process is None else in_process
        if wanted and self.command == node_process.PACSNODE:
            return cli_in_process("--home", str(self.home), *args)
        return run_tool([*self.command, "--home", str(self.home), *args], timeout=timeout)

    def studies(self) -> list[dict[str, Any]]:
        """``pacsnode studies --json`` (in process: a read of what was stored, never the test's subject)."""
        result = self.cli("studies", "--json", in_process=True)
        assert result.returncode == 0, result.explain()
        return list(json.loads(result.stdout))

    def check(self, *extra: str) -> ToolResult:
        return self.cli("check", *extra)

    def store(self, paths: Iterable[Path | str], aet: str = "STORESCU", aec: str | None = None,
              extra: Sequence[str] = (), timeout: float = 60.0) -> ToolResult:
        return storescu(self.port, paths, aec=aec or self.aet, aet=aet, extra=extra, timeout=timeout)

    def echo(self, aet: str = "ECHOSCU", aec: str | None = None) -> ToolResult:
        return echoscu(self.port, aec=aec or self.aet, aet=aet)

    def index_rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return home_index_rows(self.home, sql, params)

    def stored_path(self, sop_instance_uid: str) -> Path | None:
        rows = self.index_rows("SELECT path FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,))
        return self.home / "storage" / rows[0][0] if rows else None

    def temp_files(self) -> list[Path]:
        return sorted(p for p in (self.home / "tmp").glob("*") if p.is_file())

    # -- the stored files, through the storage seam (a folder or S3 alike) ------------------
    def stored_relative(self, sop_instance_uid: str) -> str | None:
        """The storage path the index recorded for an instance (None when it is not indexed)."""
        rows = self.index_rows("SELECT path FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,))
        return str(rows[0][0]) if rows else None

    def storage_area(self) -> Any:
        """The node's ``StorageArea`` (``storage/area.py``), as ``pacsnode.toml`` names it (opened once)."""
        from pacsnode.config import load_config
        from pacsnode.storage.area import open_storage

        if getattr(self, "_storage_area", None) is None:
            self._storage_area = open_storage(load_config(self.home))
        return self._storage_area

    def stored_bytes(self, sop_instance_uid: str) -> bytes | None:
        """The stored file of an instance as the storage area holds it (None when not indexed)."""
        relative = self.stored_relative(sop_instance_uid)
        if relative is None:
            return None
        with self.storage_area().open(relative) as handle:
            return bytes(handle.read())

    def stored_files(self) -> list[str]:
        """Every file in the storage area, as relative paths (an orphan shows here, not in the index)."""
        return sorted(self.storage_area().walk())

    def replace_stored(self, sop_instance_uid: str, data: bytes) -> None:
        """Put other bytes where an instance's file is (damage behind the node's back)."""
        from pacsnode.storage.area import sha256_of

        relative = self.stored_relative(sop_instance_uid)
        assert relative is not None, sop_instance_uid
        area = self.storage_area()
        source = self.home.parent / f"{self.home.name}-replacement.bin"
        source.write_bytes(data)
        try:
            area.remove(relative)
            area.put(relative, source, sha256_of(source))
        finally:
            source.unlink(missing_ok=True)


# -- DCMTK storescp as a move destination ---------------------------------------------------
class Storescp:
    """``storescp`` on a free loopback port writing into its own folder; always stopped."""

    def __init__(self, folder: Path, aet: str, *options: str) -> None:
        self.folder, self.aet, self.options = folder, aet, options
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "Storescp":
        self.folder.mkdir(parents=True, exist_ok=True)
        for _attempt in range(3):
            self.port = free_port()
            self.proc = subprocess.Popen(
                [dcmtk("storescp"), "-aet", self.aet, "-od", str(self.folder), *self.options, str(self.port)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env={**os.environ, "TCP_NODELAY": "1"})
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None and not port_accepts(self.port):
                time.sleep(0.02)
            if self.proc.poll() is None and port_accepts(self.port):
                return self
            self.stop()
        pytest.fail(f"storescp {self.aet} did not start")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def clear(self) -> None:
        for path in self.folder.iterdir():
            path.unlink()

    def received(self) -> dict[str, Dataset]:
        """SOP Instance UID → the file storescp wrote (header and pixels)."""
        return {str(ds.SOPInstanceUID): ds for ds in (dcmread(p) for p in sorted(self.folder.iterdir()))}


# -- the cluster run ------------------------------------------------------------------------
# ``PACSNODE_TEST_ARCHIVE=postgres+s3`` (``make test-cluster``): every NodeProcess a test builds is two
# nodes of one PostgreSQL + SeaweedFS archive behind one port (tests/cluster_node.py). OneNodeProcess
# stays one node whatever the mode (the cluster's own nodes, SharedArchive).
OneNodeProcess = NodeProcess
from cluster_node import cluster_mode  # noqa: E402

if cluster_mode():
    from cluster_node import ClusterNodeProcess

    NodeProcess = ClusterNodeProcess  # type: ignore[misc]
