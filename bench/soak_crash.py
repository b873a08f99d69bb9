"""Crash-safety soak: senders store, the server is SIGKILLed at a random moment, nothing acknowledged is lost.

One cycle: ``pacsnode serve`` runs on a home that persists across cycles; ``--senders`` threads
each open pynetdicom associations and C-STORE freshly generated instances (some small, some
512x512), recording for every instance whether a Success C-STORE-RSP came back; after a
random delay (seeded RNG) the server gets SIGKILL. Then, with the server dead,
``pacsnode check`` may report only leftovers of unacknowledged stores (orphan files, temporary
files), never a missing or changed file; the server is restarted; every instance ever
acknowledged must be in the index, its file present, readable by pydicom and byte-identical in
the dataset part to what was sent; no row may point to a missing file; ``check --repair``
removes the leftovers and ``check`` is clean afterwards.

``--cut-wal`` simulates a power cut on top of the kill: the index's WAL is cut back to what it
held when the cycle began (a prefix, as SQLite keeps after a cut: every row of the cycle is
lost, more than a real cut loses since the WAL is synced every 2 s), unless a checkpoint copied
frames of the cycle into the database meanwhile (a real cut cannot lose frames a checkpoint
used: it syncs the WAL first), and then the cycle is not cut. The restarted server must index
every acknowledged instance again from its file (``pacsnode.recovery``).

The machinery here (home set-up, instance writer; the node itself is ``bench.node_process.NodeProcess``) is shared
with ``bench/load.py``, ``bench/fuzz.py`` and their short versions in ``tests/``, which drive
the server only from outside (subprocess and network), whatever listener it runs.

Usage::

    python -m bench.soak_crash --cycles 50 --seed 1
    python -m bench.soak_crash --seconds 300          # as many cycles as fit in 5 minutes
    python -m bench.soak_crash --cycles 10 --cut-wal  # and lose the WAL tail at each kill
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from pydicom import dcmread
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID
from pynetdicom import AE, _config
from pynetdicom.dsutils import split_dataset
from pynetdicom.sop_class import Verification

from bench.node_process import NodeProcess

VENV_BIN = Path(sys.executable).parent
_SCRIPT = VENV_BIN / "pacsnode"
PACSNODE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-c", "from pacsnode.cli import main; main()"]
UID_ROOT = "1.2.826.0.1.3680043.10.1078.66"
SUCCESS = 0x0000


# -- processes -------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pacsnode(home: Path, *args: str, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run one ``pacsnode --home HOME ...`` command, output captured as text."""
    result = subprocess.run([*PACSNODE, "--home", str(home), *args], capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"pacsnode {' '.join(args)} failed ({result.returncode}): "
                           f"{result.stderr.strip()[-800:]}")
    return result


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


def configure(home: Path, settings: dict[str, dict[str, Any]]) -> None:
    """Set ``[section] key = value`` in ``home/pacsnode.toml`` (replacing the line ``init`` wrote)."""
    path = home / "pacsnode.toml"
    lines = path.read_text(encoding="utf-8").splitlines()
    for section, values in settings.items():
        for key, value in values.items():
            current, done = "", False
            for i, line in enumerate(lines):
                stripped = line.strip()
                if stripped.startswith("["):
                    current = stripped.strip("[]")
                elif current == section and stripped.split("=")[0].strip() == key:
                    lines[i] = f"{key} = {toml_value(value)}"
                    done = True
                    break
            if not done:
                if f"[{section}]" not in lines:
                    lines.append(f"[{section}]")
                lines.insert(lines.index(f"[{section}]") + 1, f"{key} = {toml_value(value)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def init_home(home: Path, port: int, institution: str = "PRV001",
              settings: dict[str, dict[str, Any]] | None = None) -> Path:
    pacsnode(home, "init", "--port", str(port), "--institution", institution, check=True)
    if settings:
        configure(home, settings)
    return home


class RssSampler:
    """Samples a server's RSS every ``interval`` seconds in a thread; ``peak`` and ``samples``."""

    def __init__(self, server: NodeProcess, interval: float = 0.05) -> None:
        self.server, self.interval = server, interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self.server.rss_bytes()
            if rss:
                self.samples.append(rss)
            self._stop.wait(self.interval)

    @property
    def peak(self) -> int:
        return max(self.samples, default=0)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def chunked_send() -> Iterator[None]:
    """pynetdicom sends a C-STORE from a file path byte for byte (no decode, no re-encode)."""
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        yield
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous


def quiet_pynetdicom() -> None:
    """A killed server makes every sender log an error per association; keep the bench readable."""
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)


def echo(port: int, timeout: float = 10.0, aet: str = "ECHOSCU") -> bool:
    """C-ECHO the node; True only when it answered Success within ``timeout``."""
    ae = AE(ae_title=aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSNODE")
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return bool(status) and int(getattr(status, "Status", -1)) == SUCCESS
    finally:
        assoc.release() if assoc.is_established else assoc.abort()


# -- instances -------------------------------------------------------------------------------
def write_instance(path: Path, study_uid: str, series_uid: str, sop_uid: str, patient_id: str,
                   rows: int = 64, cols: int = 64, number: int = 1, seed: int = 0) -> Path:
    """A CT instance (Explicit VR Little Endian) with random 16-bit pixels."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientID = patient_id
    ds.IssuerOfPatientID = "SOAK"
    ds.PatientName = "SOAK^TEST"
    ds.StudyDate, ds.StudyTime = "20260301", "101010"
    ds.AccessionNumber = patient_id[-16:]
    ds.Modality = "CT"
    ds.BodyPartExamined = "CHEST"
    ds.InstitutionName = "Qianzhong Provincial Hospital"
    ds.SeriesNumber, ds.InstanceNumber = 1, number
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation, ds.SamplesPerPixel = 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = np.random.default_rng(seed).integers(0, 4096, (rows, cols), dtype=np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def dataset_digest(path: Path) -> str:
    """SHA-256 of the dataset part (after the File Meta group): what the wire carried."""
    _meta, offset = split_dataset(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        handle.seek(offset)
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def index_rows(home: Path) -> list[dict[str, Any]]:
    """Every instance row, read from the index read-only (safe while the server writes)."""
    conn = sqlite3.connect(f"file:{home / 'index.sqlite'}?mode=ro", uri=True, timeout=30)
    try:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT i.sop_instance_uid, i.path, i.size, i.sha256, s.study_uid FROM instances i "
                            "JOIN series se ON se.pk = i.series_pk JOIN studies s ON s.pk = se.study_pk").fetchall()
        return [dict(r) for r in rows]
    finally:
        conn.close()


def temp_files(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "tmp").glob("*") if p.is_file())


@dataclass
class CheckOutput:
    """``pacsnode check`` parsed: its exit code and the problems it listed, by kind."""

    returncode: int
    orphan: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    temporary: list[str] = field(default_factory=list)
    awaiting: list[str] = field(default_factory=list)  # unindexed while an unclean stop awaits recovery
    text: str = ""

    @property
    def clean(self) -> bool:
        return self.returncode == 0 and not (self.orphan or self.missing or self.changed or self.temporary
                                             or self.awaiting)


def run_check(home: Path, repair: bool = False) -> CheckOutput:
    result = pacsnode(home, "check", *(["--repair"] if repair else []))
    out = CheckOutput(result.returncode, text=result.stdout + result.stderr)
    kinds = {"orphan file": out.orphan, "missing file": out.missing, "changed file": out.changed,
             "temporary file": out.temporary, "unindexed file awaiting recovery": out.awaiting}
    for line in result.stdout.splitlines():
        label, _, item = line.partition(": ")
        if label in kinds:
            kinds[label].append(item)
    return out


# -- the soak --------------------------------------------------------------------------------
@dataclass
class Sent:
    """One C-STORE attempt: what was sent and whether Success came back."""

    sop_uid: str
    study_uid: str
    digest: str
    status: int | None = None  # None: no response (association aborted, server dead)

    @property
    def acked(self) -> bool:
        return self.status == SUCCESS


@dataclass
class CycleResult:
    cycle: int
    kill_after: float
    attempted: int
    acked: int
    unacked_stored: int
    unacked_absent: int
    refused: int
    orphans_after_kill: int
    temps_after_kill: int
    problems: list[str]
    wal_cut: int = 0  # bytes of WAL removed after the kill (--cut-wal)


_WAL_HEADER, _FRAME_HEADER = 32, 24


def wal_mark(home: Path) -> tuple[int, bytes]:
    """The WAL's size and salts now (the point a later cut returns to)."""
    wal = home / "index.sqlite-wal"
    if not wal.exists() or wal.stat().st_size < _WAL_HEADER:
        return 0, b""
    with open(wal, "rb") as handle:
        header = handle.read(_WAL_HEADER)
    return wal.stat().st_size, header[16:24]


def cut_wal(home: Path, mark: tuple[int, bytes]) -> int:
    """Cut the (dead server's) WAL back to ``mark`` when a power cut could have: bytes removed, or 0."""
    size, salt = mark
    wal, shm = home / "index.sqlite-wal", home / "index.sqlite-shm"
    if not salt or not wal.exists() or wal.stat().st_size <= size:
        return 0
    with open(wal, "rb") as handle:
        header = handle.read(_WAL_HEADER)
    if header[16:24] != salt:  # the WAL restarted after a checkpoint: frames of the cycle are in the database
        return 0
    page = int.from_bytes(header[8:12], "big")
    kept_frames = (size - _WAL_HEADER) // (_FRAME_HEADER + page)
    backfilled = int.from_bytes(shm.read_bytes()[96:100], sys.byteorder) if shm.exists() else 0
    if backfilled > kept_frames:  # a checkpoint copied frames past the cut into the database
        return 0
    removed = wal.stat().st_size - size
    with open(wal, "r+b") as handle:
        handle.truncate(size)
    shm.unlink(missing_ok=True)
    return removed


def sender(port: int, folder: Path, prefix: str, rng: random.Random, stop: threading.Event,
           results: list[Sent], big_share: float) -> None:
    """Open associations and store fresh instances until ``stop`` or the server dies."""
    study_uid = f"{prefix}.1"
    count = 0
    while not stop.is_set():
        ae = AE(ae_title="SOAKSCU")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", port, ae_title="PACSNODE")
        if not assoc.is_established:
            return
        try:
            for _ in range(rng.randint(1, 12)):
                if stop.is_set():
                    break
                count += 1
                sop_uid = f"{prefix}.1.{count}"
                size = 512 if rng.random() < big_share else 64
                path = write_instance(folder / f"{sop_uid}.dcm", study_uid, f"{prefix}.1", sop_uid,
                                      patient_id=f"SOAK-{prefix.rsplit('.', 2)[-2]}-{prefix.rsplit('.', 1)[-1]}",
                                      rows=size, cols=size, number=count, seed=rng.randrange(1 << 30))
                record = Sent(sop_uid, study_uid, dataset_digest(path))
                results.append(record)
                try:
                    rsp = assoc.send_c_store(path)
                except (RuntimeError, OSError, ValueError):
                    return
                finally:
                    path.unlink(missing_ok=True)
                record.status = int(rsp.Status) if rsp is not None and "Status" in rsp else None
                if not assoc.is_established:
                    return
        finally:
            if assoc.is_established:
                assoc.release()


def verify(home: Path, sent: dict[str, Sent]) -> tuple[list[str], set[str]]:
    """Problems found in the index and files; and the SOP Instance UIDs the index holds."""
    problems: list[str] = []
    storage = home / "storage"
    rows = {r["sop_instance_uid"]: r for r in index_rows(home)}
    for uid, row in rows.items():
        path = storage / row["path"]
        if not path.is_file():
            problems.append(f"row without a file: {uid} -> {row['path']}")
            continue
        if path.stat().st_size != row["size"]:
            problems.append(f"size differs from the index: {uid}")
        record = sent.get(uid)
        if record is not None:
            try:
                dcmread(path)  # the whole file, pixels included
            except Exception as exc:  # any pydicom failure is the finding
                problems.append(f"unreadable by pydicom: {uid}: {exc.__class__.__name__}: {exc}")
                continue
            if dataset_digest(path) != record.digest:
                problems.append(f"dataset bytes differ from what was sent: {uid}")
    for uid, record in sent.items():
        if record.acked and uid not in rows:
            problems.append(f"LOST: {uid} was acknowledged with Success but is not in the index")
    return problems, set(rows)


def run_soak(workdir: Path, cycles: int = 50, seconds: float | None = None, senders: int = 4, seed: int = 1,
             max_run: float = 2.0, big_share: float = 0.3, log: Any = print,
             lose_wal_tail: bool = False) -> list[CycleResult]:
    """Run the soak in ``workdir`` (a home and a scratch folder are made there); one result per cycle."""
    quiet_pynetdicom()
    rng = random.Random(seed)
    home, scratch = workdir / "home", workdir / "sent"
    scratch.mkdir(parents=True, exist_ok=True)
    port = free_port()
    init_home(home, port)
    server = NodeProcess(home, port=port, log_path=workdir / "serve.log", ready="echo", start_timeout=30)
    sent: dict[str, Sent] = {}
    results: list[CycleResult] = []
    started = time.monotonic()
    server.start()
    try:
        with chunked_send():
            for cycle in range(1, cycles + 1):
                if seconds is not None and time.monotonic() - started > seconds:
                    break
                results.append(_one_cycle(cycle, server, scratch, sent, rng, senders, max_run, big_share, seed,
                                          lose_wal_tail))
                log(_describe(results[-1]))
                if results[-1].problems:
                    break
    finally:
        server.stop()
    return results


def _one_cycle(cycle: int, server: NodeProcess, scratch: Path, sent: dict[str, Sent], rng: random.Random,
               senders: int, max_run: float, big_share: float, seed: int, lose_wal_tail: bool = False) -> CycleResult:
    home = server.home
    mark = wal_mark(home)
    stop = threading.Event()
    lists: list[list[Sent]] = [[] for _ in range(senders)]
    threads = [threading.Thread(target=sender, args=(server.port, scratch, f"{UID_ROOT}.{seed}.{cycle}.{i + 1}",
                                                    random.Random(rng.random()), stop, lists[i], big_share),
                                daemon=True) for i in range(senders)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while not any(lists) and time.monotonic() < deadline:  # the clock starts with the first C-STORE
        time.sleep(0.005)
    kill_after = rng.uniform(0.0, max_run)
    time.sleep(kill_after)
    server.kill()
    stop.set()
    for thread in threads:
        thread.join(60)
    removed = cut_wal(home, mark) if lose_wal_tail else 0
    attempts = [record for records in lists for record in records]
    sent.update((r.sop_uid, r) for r in attempts)
    problems: list[str] = ["sender thread still running after the kill" for t in threads if t.is_alive()]
    # 1. The server is dead: check may only find leftovers of unacknowledged stores.
    after_kill = run_check(home)
    problems += [f"missing file after kill: {p}" for p in after_kill.missing]
    problems += [f"changed file after kill: {p}" for p in after_kill.changed]
    # (an orphan is a file no row points to: whether an acknowledged one is among them, verify says)
    # 2. Restart, then every acknowledged instance must be there and intact.
    server.start()
    found, indexed = verify(home, sent)
    problems += found
    acked_now = [r for r in attempts if r.acked]
    if acked_now:
        study = rng.choice(acked_now).study_uid
        shown = pacsnode(home, "study", "show", study, "--json")
        if shown.returncode != 0:
            problems.append(f"study show {study} failed: {shown.stderr.strip()}")
        else:
            listed = {i["sop_instance_uid"] for s in json.loads(shown.stdout)["series"] for i in s["instances"]}
            problems += [f"study show misses acknowledged {r.sop_uid}" for r in acked_now
                         if r.study_uid == study and r.sop_uid not in listed]
    # 3. Leftovers are repairable, then check is clean.
    repaired = run_check(home, repair=True)
    if repaired.returncode != 0 or repaired.missing or repaired.changed:
        problems.append(f"check --repair did not succeed: {repaired.text.strip()[-500:]}")
    final = run_check(home)
    if not final.clean:
        problems.append(f"check not clean after repair: {final.text.strip()[-500:]}")
    if not echo(server.port):
        problems.append("restarted server does not answer C-ECHO")
    return CycleResult(
        cycle=cycle, kill_after=round(kill_after, 3), attempted=len(attempts), acked=len(acked_now),
        unacked_stored=sum(1 for r in attempts if not r.acked and r.sop_uid in indexed),
        unacked_absent=sum(1 for r in attempts if not r.acked and r.sop_uid not in indexed),
        refused=sum(1 for r in attempts if r.status not in (None, SUCCESS)),
        orphans_after_kill=len(after_kill.orphan) + len(after_kill.awaiting), temps_after_kill=len(after_kill.temporary), problems=problems,
        wal_cut=removed)


def _describe(result: CycleResult) -> str:
    text = (f"cycle {result.cycle:3d}: killed after {result.kill_after:5.2f}s; {result.attempted} sent, "
            f"{result.acked} acked, {result.unacked_stored} unacked-but-stored, {result.unacked_absent} "
            f"unacked-absent, {result.refused} refused; after kill: {result.orphans_after_kill} orphan(s), "
            f"{result.temps_after_kill} temp file(s)" + (f"; WAL cut by {result.wal_cut} bytes" if result.wal_cut else ""))
    if result.problems:
        text += "\n  PROBLEMS:\n  " + "\n  ".join(result.problems[:20])
    return text


def summary(results: list[CycleResult]) -> dict[str, int]:
    return {
        "cycles": len(results),
        "attempted": sum(r.attempted for r in results),
        "acked": sum(r.acked for r in results),
        "unacked_stored": sum(r.unacked_stored for r in results),
        "unacked_absent": sum(r.unacked_absent for r in results),
        "refused": sum(r.refused for r in results),
        "orphans_after_kill": sum(r.orphans_after_kill for r in results),
        "temps_after_kill": sum(r.temps_after_kill for r in results),
        "wal_cut_cycles": sum(1 for r in results if r.wal_cut),
        "problems": sum(len(r.problems) for r in results),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=50, help="kill/restart cycles (default 50)")
    parser.add_argument("--seconds", type=float, default=None, help="stop starting new cycles after this long")
    parser.add_argument("--senders", type=int, default=4, help="concurrent sender threads (default 4)")
    parser.add_argument("--seed", type=int, default=1, help="RNG seed (kill moments, sizes)")
    parser.add_argument("--max-run", type=float, default=2.0, help="longest sending time before the kill (s)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (printed)")
    parser.add_argument("--cut-wal", action="store_true", help="also lose the index's WAL tail at each kill")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="soak-crash-"))
    started = time.monotonic()
    try:
        results = run_soak(workdir, cycles=args.cycles, seconds=args.seconds, senders=args.senders,
                           seed=args.seed, max_run=args.max_run, lose_wal_tail=args.cut_wal)
    finally:
        if args.keep:
            print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    totals = summary(results)
    print(f"\nsoak: {json.dumps(totals)} in {time.monotonic() - started:.0f}s")
    print("RESULT:", "FAIL" if totals["problems"] else "PASS (no acknowledged instance lost, check clean)")
    return 1 if totals["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
