"""Load: many associations storing while others query and retrieve; then one very large instance.

* ``--stores`` (20) DCMTK ``storescu`` associations each C-STORE ``--per-store`` fresh instances of their own study,
  while ``--queriers`` (5) associations C-FIND (3), C-MOVE to a registered DCMTK ``storescp``
  (1) and C-GET (1) a fixed set of studies imported beforehand, in a loop. Every store must
  succeed, every query must return exactly the imported counts, every retrieve must complete
  all its sub-operations, the server's stderr must never say "database is locked", and its
  resident memory (VmRSS from /proc) is sampled throughout.
* A ``--big-mb`` multi-frame instance (written in chunks, never whole in memory, deleted
  afterwards) is C-STOREd while the server's RSS is sampled every 20 ms: its growth must stay
  far below the instance size (< 50 MB).

Usage::

    python -m bench.load                       # 20 + 5 associations, 500 MB instance
    python -m bench.load --rounds 3 --big-mb 100
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from bench.common import dcmtk
from bench.node_process import NodeProcess
from bench.soak_crash import (
    RssSampler,
    chunked_send,
    dataset_digest,
    free_port,
    index_rows,
    init_home,
    pacsnode,
    quiet_pynetdicom,
    run_check,
    write_instance,
)

UID_ROOT = "1.2.826.0.1.3680043.10.1078.69"
BASE_PATIENT = "LOADBASE"
BASE_STUDIES, BASE_INSTANCES = 6, 3
QUERY_AET, MOVE_AET = "LOADSCU", "MOVEDEST"
MB = 1 << 20


@dataclass
class LoadReport:
    rounds: int = 0
    stores_ok: int = 0
    stores_failed: list[str] = field(default_factory=list)
    finds: int = 0
    find_mismatches: list[str] = field(default_factory=list)
    moves: int = 0
    gets: int = 0
    client_drops: int = 0  # responses pynetdicom's SCU lost to its own reactor (not counted as failures)
    retrieve_failures: list[str] = field(default_factory=list)
    index_mismatches: list[str] = field(default_factory=list)
    locked_lines: list[str] = field(default_factory=list)
    rss_idle_mb: float = 0.0
    rss_peak_mb: list[float] = field(default_factory=list)  # per round
    store_seconds: list[float] = field(default_factory=list)
    big_mb: int = 0
    big_status: int | None = None
    big_rss_before_mb: float = 0.0
    big_rss_peak_mb: float = 0.0
    big_seconds: float = 0.0
    big_problems: list[str] = field(default_factory=list)
    check_clean: bool = False

    @property
    def big_growth_mb(self) -> float:
        return self.big_rss_peak_mb - self.big_rss_before_mb

    @property
    def problems(self) -> list[str]:
        return (self.stores_failed + self.find_mismatches + self.retrieve_failures + self.index_mismatches
                + self.locked_lines + self.big_problems + ([] if self.check_clean else ["check not clean"]))


def mb(value: int) -> float:
    return round(value / MB, 1)


# -- the big instance ------------------------------------------------------------------------
def write_big_instance(path: Path, size_mb: int, uid: str) -> Path:
    """A multi-frame 16-bit instance of about ``size_mb`` MB, pixel data streamed frame by frame."""
    rows = cols = 512
    frame_bytes = rows * cols * 2
    frames = max(1, size_mb * MB // frame_bytes)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = f"{uid}.1.1"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid, f"{uid}.1"
    ds.PatientID, ds.IssuerOfPatientID, ds.PatientName = "LOADBIG", "SOAK", "BIG^INSTANCE"
    ds.StudyDate, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "20260301", "OT", 1, 1
    ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.save_as(path, enforce_file_format=True)
    frame = np.random.default_rng(7).integers(0, 4096, (rows, cols), dtype=np.uint16)
    with open(path, "ab") as handle:  # (7FE0,0010) OW, explicit length, then the frames
        handle.write(b"\xe0\x7f\x10\x00OW\x00\x00" + (frames * frame_bytes).to_bytes(4, "little"))
        for i in range(frames):
            handle.write((frame + i).astype(np.uint16).tobytes())
    return path


def store_big(server: NodeProcess, size_mb: int, scratch: Path, report: LoadReport) -> None:
    """C-STORE one ``size_mb`` instance; record the server's RSS growth while it is received."""
    uid = f"{UID_ROOT}.{int(time.time())}.{size_mb}"
    path = write_big_instance(scratch / "big.dcm", size_mb, uid)
    try:
        report.big_mb = size_mb
        time.sleep(0.5)
        report.big_rss_before_mb = mb(server.rss_bytes())
        ae = AE(ae_title="BIGSCU")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 600
        ae.add_requested_context(MultiFrameGrayscaleWordSecondaryCaptureImageStorage, ExplicitVRLittleEndian)
        started = time.monotonic()
        with RssSampler(server, interval=0.02) as sampler, chunked_send():
            assoc = ae.associate("127.0.0.1", server.port, ae_title="PACSNODE")
            if not assoc.is_established:
                report.big_problems.append("big instance: association refused")
                return
            rsp = assoc.send_c_store(path)
            assoc.release()
        report.big_seconds = round(time.monotonic() - started, 1)
        report.big_rss_peak_mb = mb(sampler.peak)
        report.big_status = int(rsp.Status) if rsp is not None and "Status" in rsp else None
        if report.big_status != 0:
            report.big_problems.append(f"big instance: status {report.big_status}")
            return
        rows = [r for r in index_rows(server.home) if r["sop_instance_uid"] == f"{uid}.1.1"]
        if not rows:
            report.big_problems.append("big instance: acknowledged but not indexed")
        elif dataset_digest(server.home / "storage" / rows[0]["path"]) != dataset_digest(path):
            report.big_problems.append("big instance: stored dataset differs from what was sent")
        if report.big_growth_mb >= 50:
            report.big_problems.append(f"big instance: RSS grew by {report.big_growth_mb:.0f} MB (limit 50)")
    finally:
        path.unlink(missing_ok=True)


# -- workers ---------------------------------------------------------------------------------
def storer(port: int, folder: Path, study: str, count: int, size: int, results: list[tuple[str, int | None]],
           start: threading.Event) -> None:
    """One DCMTK storescu association sending ``count`` fresh instances of ``study``.

    storescu, not pynetdicom: pynetdicom's SCU can hand a response to its own reactor thread,
    which drops it ("Received unexpected ... service message"), and the association then waits
    for a response that will never come. storescu exits non-zero when any store is refused.
    """
    suffix = study.rsplit(".", 1)[-1]
    files = [write_instance(folder / f"{study}.{i}.dcm", study, f"{study}.1", f"{study}.1.{i}",
                            f"LOADPAT-{suffix}", rows=size, cols=size, number=i, seed=i)
             for i in range(1, count + 1)]
    start.wait()
    try:
        done = subprocess.run([dcmtk("storescu"), "-aet", f"LOADST{suffix}"[:16], "-aec", "PACSNODE", "127.0.0.1", str(port),
                               *map(str, files)], capture_output=True, text=True, timeout=600,
                              env=dict(os.environ, TCP_NODELAY="1"))
        code: int | None = done.returncode
    except subprocess.TimeoutExpired:
        code = None
    results.extend((f"{study}.1.{i}", code) for i in range(1, count + 1))
    for path in files:
        path.unlink(missing_ok=True)


class ClientDrops(logging.Handler):
    """Counts, per association thread, responses pynetdicom's SCU dropped itself.

    pynetdicom's requestor reactor can take a response off the queue before ``send_c_*``
    pauses it, and logs "Received unexpected C-FIND service message": a client-side race
    (pynetdicom issue 875), not an answer the server failed to send. A count that differs
    on such a query is reported as a client drop, not as a wrong server answer.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.by_thread: Counter[int | None] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        if "unexpected" in record.getMessage():
            self.by_thread[record.thread] += 1

    def install(self) -> "ClientDrops":
        logger = logging.getLogger("pynetdicom.association")
        logger.addHandler(self)
        logger.setLevel(logging.WARNING)
        logger.propagate = False
        return self


CLIENT_DROPS = ClientDrops()


def base_identifier(level: str, study: str | None = None) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    ds.PatientID = BASE_PATIENT
    ds.IssuerOfPatientID = "SOAK"
    ds.StudyInstanceUID = study or ""
    if level == "IMAGE":  # hierarchical: the series is named, the instances are asked for
        ds.SeriesInstanceUID = f"{study}.1"
        ds.SOPInstanceUID = ""
    return ds


def querier(role: str, port: int, stop: threading.Event, report: LoadReport, lock: threading.Lock) -> None:
    """Loop one kind of query/retrieve on one association until ``stop``."""
    ae = AE(ae_title=QUERY_AET)
    ae.acse_timeout = ae.network_timeout = 120
    ae.dimse_timeout = 20  # a response pynetdicom dropped itself (see ClientDrops) costs this much
    handlers: list[Any] = []
    ext_neg: list[Any] = []
    received: list[str] = []
    if role == "find":
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    elif role == "move":
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    else:
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        ext_neg = [build_role(CTImageStorage, scp_role=True)]

        def on_store(event: Any) -> int:
            received.append(str(event.request.AffectedSOPInstanceUID))
            return 0x0000

        handlers = [(evt.EVT_C_STORE, on_store)]
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSNODE", ext_neg=ext_neg, evt_handlers=handlers)
    if not assoc.is_established:
        with lock:
            report.retrieve_failures.append(f"{role}: association refused")
        return
    studies = [f"{UID_ROOT}.0.{s}" for s in range(1, BASE_STUDIES + 1)]
    n = 0
    try:
        while not stop.is_set():
            n += 1
            study = studies[n % len(studies)]
            if role == "find":
                for level, expected in (("STUDY", BASE_STUDIES), ("IMAGE", BASE_INSTANCES)):
                    drops = CLIENT_DROPS.by_thread[assoc.ident]
                    answers = list(assoc.send_c_find(base_identifier(level, study if level == "IMAGE" else None),
                                                     StudyRootQueryRetrieveInformationModelFind))
                    matches = sum(1 for status, _ds in answers if status and status.Status in (0xFF00, 0xFF01))
                    final = answers[-1][0] if answers else None
                    with lock:
                        report.finds += 1
                        if CLIENT_DROPS.by_thread[assoc.ident] != drops:
                            report.client_drops += 1
                        elif matches != expected or final is None or final.get("Status") != 0:
                            report.find_mismatches.append(
                                f"{level} find: {matches} matches, expected {expected}; final status "
                                f"{final.get('Status') if final else None} {final.get('ErrorComment', '') if final else ''}")
            else:
                received.clear()
                drops = CLIENT_DROPS.by_thread[assoc.ident]
                if role == "move":
                    responses = list(assoc.send_c_move(base_identifier("STUDY", study), MOVE_AET,
                                                       StudyRootQueryRetrieveInformationModelMove))
                else:
                    responses = list(assoc.send_c_get(base_identifier("STUDY", study),
                                                      StudyRootQueryRetrieveInformationModelGet))
                final = responses[-1][0] if responses and responses[-1][0] else None
                done = int(getattr(final, "NumberOfCompletedSuboperations", -1)) if final else -1
                with lock:
                    report.moves += role == "move"
                    report.gets += role == "get"
                    if CLIENT_DROPS.by_thread[assoc.ident] != drops:
                        report.client_drops += 1
                    elif final is None or final.Status != 0x0000 or done != BASE_INSTANCES \
                            or (role == "get" and len(received) != BASE_INSTANCES):
                        report.retrieve_failures.append(
                            f"{role}: status {getattr(final, 'Status', None)}, {done} completed, "
                            f"{len(received)} received")
            if not assoc.is_established:  # after a client-side drop pynetdicom aborts on its dimse_timeout
                if not CLIENT_DROPS.by_thread[assoc.ident]:
                    with lock:
                        report.retrieve_failures.append(f"{role}: association lost")
                return
    finally:
        if assoc.is_established:
            assoc.release()


# -- the run ---------------------------------------------------------------------------------
class MoveDestination:
    """DCMTK storescp as the registered C-MOVE destination (files to a temp folder)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([dcmtk("storescp"), "-aet", MOVE_AET, "--fork", "-od", str(folder), str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env=dict(os.environ, TCP_NODELAY="1"))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def prepare(workdir: Path, verbose: int = 0) -> tuple[NodeProcess, MoveDestination]:
    port = free_port()
    home = init_home(workdir / "home", port)
    seed = workdir / "seed"
    seed.mkdir(parents=True, exist_ok=True)
    for s in range(1, BASE_STUDIES + 1):
        for i in range(1, BASE_INSTANCES + 1):
            study = f"{UID_ROOT}.0.{s}"
            write_instance(seed / f"{s}-{i}.dcm", study, f"{study}.1", f"{study}.1.{i}", BASE_PATIENT, number=i)
    pacsnode(home, "import", str(seed), check=True)
    destination = MoveDestination(workdir / "moved")
    pacsnode(home, "peer", "add", "loadscu", "--aet", QUERY_AET, "--host", "127.0.0.1", "--port", "1",
             "--institution", "PRV001", check=True)
    pacsnode(home, "peer", "add", "movedest", "--aet", MOVE_AET, "--host", "127.0.0.1", "--port",
             str(destination.port), "--institution", "PRV001", check=True)
    server = NodeProcess(home, port=port, log_path=workdir / "serve.log", verbose=verbose, ready="echo", start_timeout=30)
    return server, destination


def load_round(server: NodeProcess, scratch: Path, report: LoadReport, round_no: int, stores: int, per_store: int,
               size: int) -> None:
    results: list[tuple[str, int | None]] = []
    start, stop, lock = threading.Event(), threading.Event(), threading.Lock()
    studies = [f"{UID_ROOT}.{round_no}.{i}" for i in range(1, stores + 1)]
    storers = [threading.Thread(target=storer, args=(server.port, scratch, study, per_store, size, results, start),
                                daemon=True) for study in studies]
    queriers = [threading.Thread(target=querier, args=(role, server.port, stop, report, lock), daemon=True)
                for role in ("find", "find", "find", "move", "get")]
    with RssSampler(server, interval=0.1) as sampler:
        for thread in queriers + storers:
            thread.start()
        time.sleep(1.0)  # files written, queriers running
        started = time.monotonic()
        start.set()
        for thread in storers:
            thread.join(600)
        report.store_seconds.append(round(time.monotonic() - started, 1))
        stop.set()
        for thread in queriers:
            thread.join(120)
    report.rss_peak_mb.append(mb(sampler.peak))
    report.stores_ok += sum(1 for _uid, status in results if status == 0)
    report.stores_failed += [f"store {uid}: storescu exit code {status}" for uid, status in results if status != 0]
    if len(results) != stores * per_store:
        report.stores_failed.append(f"{stores * per_store - len(results)} stores never attempted")
    counts: dict[str, int] = {}
    for row in index_rows(server.home):
        counts[row["study_uid"]] = counts.get(row["study_uid"], 0) + 1
    report.index_mismatches += [f"study {s}: {counts.get(s, 0)} instances indexed, {per_store} sent"
                                for s in studies if counts.get(s, 0) != per_store]


def run_load(workdir: Path, rounds: int = 1, stores: int = 20, per_store: int = 10, size: int = 64,
             big_mb: int = 100, log: Any = print, verbose: int = 0) -> LoadReport:
    quiet_pynetdicom()
    CLIENT_DROPS.install()
    report = LoadReport()
    server, destination = prepare(workdir, verbose)
    scratch = workdir / "scratch"
    scratch.mkdir(exist_ok=True)
    server.start()
    try:
        time.sleep(0.5)
        report.rss_idle_mb = mb(server.rss_bytes())
        for round_no in range(1, rounds + 1):
            load_round(server, scratch, report, round_no, stores, per_store, size)
            report.rounds = round_no
            log(f"round {round_no}: {report.stores_ok} stores ok so far, {report.finds} finds, {report.moves} moves, "
                f"{report.gets} gets ({report.client_drops} client-side drops); RSS peak {report.rss_peak_mb[-1]} MB "
                f"(idle {report.rss_idle_mb} MB); stores took {report.store_seconds[-1]}s; "
                f"problems so far {len(report.problems) - 1}")
        if big_mb:
            store_big(server, big_mb, scratch, report)
            log(f"big instance {big_mb} MB: status {report.big_status}, {report.big_seconds}s, RSS "
                f"{report.big_rss_before_mb} -> peak {report.big_rss_peak_mb} MB (growth {report.big_growth_mb:.1f} MB)")
        report.locked_lines = [line for line in server.log_text().splitlines() if "database is locked" in line]
    finally:
        server.stop()
        destination.stop()
    report.check_clean = run_check(server.home).clean
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="load rounds on the same server (default 3)")
    parser.add_argument("--stores", type=int, default=20, help="concurrent storing associations (default 20)")
    parser.add_argument("--per-store", type=int, default=25, help="instances per storing association (default 25)")
    parser.add_argument("--size", type=int, default=256, help="rows = columns of stored instances (default 256)")
    parser.add_argument("--big-mb", type=int, default=500, help="size of the large instance in MB (0: skip)")
    parser.add_argument("--verbose", "-v", action="count", default=0, help="serve with -v (info) or -vv (debug)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (printed)")
    args = parser.parse_args(argv)
    if not os.access(dcmtk("storescp"), os.X_OK):
        print("DCMTK storescp is required (the C-MOVE destination)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="load-"))
    try:
        report = run_load(workdir, rounds=args.rounds, stores=args.stores, per_store=args.per_store, size=args.size,
                          big_mb=args.big_mb, verbose=args.verbose)
    finally:
        if args.keep:
            print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    summary = {k: v for k, v in asdict(report).items() if not isinstance(v, list) or k in ("rss_peak_mb",
                                                                                            "store_seconds")}
    summary.update(stores_failed=len(report.stores_failed), find_mismatches=len(report.find_mismatches),
                   retrieve_failures=len(report.retrieve_failures), locked_lines=len(report.locked_lines),
                   big_growth_mb=round(report.big_growth_mb, 1))
    print("\nload:", json.dumps(summary))
    for problem in report.problems[:30]:
        print("  PROBLEM:", problem)
    print("RESULT:", "FAIL" if report.problems else "PASS")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
