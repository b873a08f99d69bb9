"""Query benchmark: study-level C-FIND (findscu) and C-MOVE (movescu → storescp), pacsnode vs Orthanc.

Usage: python -m bench.query [--quick] [--sizes N,N,...] [--orthanc-sizes N,N,...] [--[no-]million]
                             [--orthanc-budget SECONDS] [--runs R] [--move-count N] [--move-runs R]
                             [--orthanc-data DIR]

Default: pacsnode 10k and 100k studies (plus the Orthanc sizes, for side-by-side rows), then
1M instances (10 per study); Orthanc 5k and 20k. ``--quick``: pacsnode 2k and 10k, Orthanc 2k.

The same deterministic synthetic studies (one CT instance each, fixed seed) go into both
servers in the same order, so at a common size both hold exactly the same studies:

* pacsnode: straight into the index with ``SqliteIndex.record_instance`` (synthetic
  ``InstanceFacts`` + ``StoredFile``; C-FIND never opens the files, so none are written);
* Orthanc: tiny generated DICOM files POSTed to ``/instances`` by a thread pool (it has no
  faster public way in); a size whose projected load time passes ``--orthanc-budget`` is
  skipped, and the notes say so. ``--orthanc-data DIR`` keeps Orthanc's storage and index in
  DIR and records there how many of the synthetic studies it holds (``bench-studies.txt``): a
  later run reuses them and loads only the rest (100k studies take 8-13 min through REST, by the
  machine's load). A size smaller than what DIR holds has no Orthanc column (the data would differ).

At each size pacsnode is restarted (its start-up time, ``serve`` until the port accepts, is
measured there, median of 3 in full mode), then for each query both servers answer ``--runs``
times, alternating (this machine is shared: a load spike then hits both), and the median wall
time of the ``findscu`` process is reported next to ``echoscu`` alone (the floor: process
start, association, release). Each query also runs once with ``-X`` to count the responses:
the "matches" column shows one number when both servers agree.

Last, one 200-instance CT study (0.5 MB images, ``bench.common.ct_corpus``) held by both is
moved by ``movescu`` to a DCMTK ``storescp``, alternating servers, median of ``--move-runs``.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Iterator

from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from bench.common import (
    DCMTK_ENV,
    dcmtk,
    PACSNODE,
    UID_ROOT,
    ct_corpus,
    free_port,
    median,
    orthanc_binary,
    orthanc_server,
    print_table,
    storescp_server,
)
from bench.node_process import NodeProcess

SEED = 20261126
STUDY_ROOT = f"{UID_ROOT}.5"
INSTITUTION = "PRV001"
FIRST_DAY, LAST_DAY = date(2020, 1, 1), date(2026, 11, 26)
MODALITIES = ("CT", "MR", "CR", "DX", "US", "MG")
# 100 family names, none a prefix of another, so "WANG*" matches exactly the WANG patients.
FAMILIES = tuple(f"{a}{b}" for a in ("WANG", "LI", "ZHANG", "LIU", "CHEN", "YANG", "HUANG", "ZHAO", "WU", "ZHOU")
                 for b in ("AN", "BO", "CE", "DU", "FE", "GU", "HO", "JI", "KO", "LU"))
assert not any(a != b and b.startswith(a) for a in FAMILIES for b in FAMILIES)
GIVENS = ("WEI", "FANG", "NA", "MIN", "JING", "LEI", "QIANG", "JUN", "YAN", "TAO", "MING", "CHAO", "XIU", "PING",
          "GANG", "HUA", "HONG", "LING", "BIN", "YU")
RETURN_KEYS = ("PatientName", "PatientID", "StudyDate", "StudyInstanceUID", "AccessionNumber",
               "ModalitiesInStudy", "StudyDescription", "NumberOfStudyRelatedInstances")
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy


# -- the synthetic region ----------------------------------------------------------------------
def study(i: int) -> dict[str, Any]:
    """Study ``i`` (0-based): the same attributes whichever server it is loaded into.

    Two studies per patient; the patient's name depends on the patient only, the date and
    modality on the study only (``random.Random`` seeded with a string is stable across runs).
    """
    patient = i // 2
    prng = random.Random(f"{SEED}-patient-{patient}")
    srng = random.Random(f"{SEED}-study-{i}")
    day = FIRST_DAY + timedelta(days=srng.randrange((LAST_DAY - FIRST_DAY).days + 1))
    modality = srng.choice(MODALITIES)
    return {
        "study_uid": f"{STUDY_ROOT}.{i}", "series_uid": f"{STUDY_ROOT}.{i}.1",
        "patient_id": f"BP{patient:07d}", "issuer": "BENCH",
        "patient_name": f"{prng.choice(FAMILIES)}^{prng.choice(GIVENS)}",
        "birth_date": f"{prng.randrange(1930, 2020)}{prng.randrange(1, 13):02d}{prng.randrange(1, 29):02d}",
        "sex": prng.choice("MF"), "study_date": day.strftime("%Y%m%d"),
        "study_time": f"{srng.randrange(7, 20):02d}{srng.randrange(60):02d}00", "accession": f"ACC{i:08d}",
        "modality": modality, "description": f"{modality} study", "institution": "Bench Hospital",
    }


def instance_uid(i: int, k: int) -> str:
    return f"{STUDY_ROOT}.{i}.1.{k}"


def facts_of(s: dict[str, Any], k: int) -> Any:
    from pacsnode.model import InstanceFacts

    return InstanceFacts(
        sop_instance_uid=instance_uid(int(s["study_uid"].rsplit(".", 1)[1]), k), sop_class_uid=CTImageStorage,
        study_uid=s["study_uid"], series_uid=s["series_uid"], transfer_syntax=ExplicitVRLittleEndian,
        patient_id=s["patient_id"], issuer_of_patient_id=s["issuer"], patient_name=s["patient_name"],
        patient_birth_date=s["birth_date"], patient_sex=s["sex"], study_date=s["study_date"],
        study_time=f"{s['study_time']}.000000", accession_number=s["accession"], study_description=s["description"],
        institution_name=s["institution"], modality=s["modality"], series_number=1, instance_number=k)


def dicom_bytes(s: dict[str, Any], k: int) -> bytes:
    """A tiny Part 10 file (no pixel data) carrying exactly the attributes pacsnode indexes."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = instance_uid(int(s["study_uid"].rsplit(".", 1)[1]), k)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = s["study_uid"], s["series_uid"]
    ds.PatientID, ds.IssuerOfPatientID, ds.PatientName = s["patient_id"], s["issuer"], s["patient_name"]
    ds.PatientBirthDate, ds.PatientSex = s["birth_date"], s["sex"]
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = s["study_date"], s["study_time"], s["accession"]
    ds.StudyDescription, ds.InstitutionName, ds.Modality = s["description"], s["institution"], s["modality"]
    ds.SeriesNumber, ds.InstanceNumber = 1, k
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def queries(size: int) -> list[tuple[str, list[str]]]:
    """The four study-level queries of the issue, aimed at studies that exist at ``size``."""
    target = study(size // 2)
    return [
        ("exact Patient ID", [f"PatientID={target['patient_id']}"]),
        ("Patient Name wildcard", [f"PatientName={FAMILIES[0]}*"]),
        ("Study Date, one month", ["StudyDate=20260101-20260131"]),
        ("Accession Number", [f"AccessionNumber={study(size // 3)['accession']}"]),
    ]


# -- loading ------------------------------------------------------------------------------------
def load_pacsnode(index_path: Path, start: int, end: int, instances: range = range(1, 2)) -> float:
    """Record studies [start, end) (instances ``instances`` of each) in the index; returns seconds."""
    from pacsnode.index.sqlite import SqliteIndex
    from pacsnode.model import DuplicatePolicy, StoredFile

    index = SqliteIndex(index_path, synchronous="OFF")  # a bulk load, not the store path
    began = time.perf_counter()
    try:
        for i in range(start, end):
            s = study(i)
            for k in instances:
                stored = StoredFile(f"bench/{i}/{k}.dcm", 1024, "0" * 64)
                index.record_instance(facts_of(s, k), stored, "BENCH", DuplicatePolicy.KEEP_FIRST)
    finally:
        index.close()
    return time.perf_counter() - began


def load_orthanc(http_port: int, start: int, end: int, workers: int = 8) -> float:
    """POST studies [start, end) to Orthanc's /instances; returns seconds."""

    def post(i: int) -> None:
        request = urllib.request.Request(f"http://127.0.0.1:{http_port}/instances", data=dicom_bytes(study(i), 1),
                                         method="POST")
        with OPENER.open(request, timeout=120) as answer:
            answer.read()

    began = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(post, range(start, end)))
    return time.perf_counter() - began


LOADED_MARK = "bench-studies.txt"  # in --orthanc-data: how many of study(0..) Orthanc holds


def orthanc_loaded(data_dir: Path | None) -> int:
    """How many synthetic studies (``study(0)``, ``study(1)``, ...) a kept Orthanc data folder holds."""
    mark = data_dir / LOADED_MARK if data_dir is not None else None
    return int(mark.read_text()) if mark is not None and mark.is_file() else 0


def mark_orthanc_loaded(data_dir: Path | None, count: int) -> None:
    if data_dir is not None:
        (data_dir / LOADED_MARK).write_text(str(count))


def rest(http_port: int, method: str, path: str, body: Any = None) -> Any:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{http_port}{path}", data=data, method=method)
    with OPENER.open(request, timeout=600) as answer:
        raw = answer.read()
    return json.loads(raw) if raw.strip() else None


# -- pacsnode -------------------------------------------------------------------------------------
def set_toml(home: Path, key: str, value: str) -> None:
    """Set ``key = value`` in the pacsnode.toml ``init`` wrote: in the first section that has it.

    ``[query]`` comes before ``[web]``, which has a ``max_results`` of its own (QIDO's).
    """
    path = home / "pacsnode.toml"
    text, count = re.subn(rf"(?m)^{re.escape(key)}\s*=.*$", f"{key} = {value}", path.read_text(encoding="utf-8"),
                          count=1)
    if count != 1:
        raise RuntimeError(f"{key} not found in {path}")
    path.write_text(text, encoding="utf-8")


def cli(home: Path, *args: str) -> None:
    subprocess.run([PACSNODE, "--home", str(home), *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)


def init_home(home: Path, port: int) -> None:
    cli(home, "init", "--port", str(port), "--institution", INSTITUTION)
    for key, value in (("max_results", "0"),            # the month range returns > 1000 at 100k studies
                       ("case_sensitive_pn", "false"),  # like Orthanc's default
                       ("watch_stable", "false"),       # no QC passes over synthetic studies while timing
                       ("acse_timeout", "2"),           # the start-up probe (a bare connect) must not hold the stop
                       ("dimse_timeout", "15")):
        set_toml(home, key, value)
    for name in ("FINDSCU", "MOVESCU", "ECHOSCU"):  # workstations of this hospital: they see everything
        cli(home, "peer", "add", name.lower(), "--aet", name, "--host", "127.0.0.1", "--port", "1",
            "--institution", INSTITUTION)


@contextmanager
def serving(home: Path, port: int) -> Iterator[float]:
    """``pacsnode serve``; yields its start-up time (spawn → port accepts), in seconds."""
    began = time.perf_counter()
    with NodeProcess(home, port=port, start_timeout=120):
        yield time.perf_counter() - began


def startup_time(home: Path, port: int, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        with serving(home, port) as seconds:
            times.append(seconds)
    return median(times)


# -- DCMTK clients --------------------------------------------------------------------------------
def run_timed(args: list[str]) -> float:
    began = time.perf_counter()
    done = subprocess.run(args, env=DCMTK_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:8])}... failed: {done.stderr.decode(errors='replace')[-500:]}")
    return elapsed


def findscu_args(port: int, aec: str, keys: list[str], extra: tuple[str, ...] = ()) -> list[str]:
    args = [dcmtk("findscu"), "-S", "-aet", "FINDSCU", "-aec", aec, *extra, "-k", "QueryRetrieveLevel=STUDY"]
    named = {k.partition("=")[0] for k in keys}
    for key in [*keys, *(k for k in RETURN_KEYS if k not in named)]:
        args += ["-k", key]
    return [*args, "127.0.0.1", str(port)]


def count_matches(port: int, aec: str, keys: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-findscu-") as out:
        run_timed(findscu_args(port, aec, keys, ("-X", "-od", out)))
        return len(list(Path(out).glob("rsp*.dcm")))


Server = tuple[str, int, str]  # (name, DICOM port, called AE title)
Timings = dict[str, dict[str, tuple[float, int]]]  # server → figure → (median seconds, matches)


def time_queries(servers: list[Server], size: int, runs: int) -> Timings:
    """Median findscu wall seconds and match count per query and server, plus the echoscu floor.

    The servers run side by side and the runs alternate between them, so a load spike on
    this (shared) machine hits both rather than one.
    """
    samples: dict[str, dict[str, list[float]]] = {name: {} for name, _, _ in servers}
    matches: dict[str, dict[str, int]] = {name: {} for name, _, _ in servers}
    figures = [("echoscu (floor)", None), *queries(size)]
    for figure, keys in figures:
        for name, port, aec in servers:
            matches[name][figure] = count_matches(port, aec, keys) if keys is not None else 0  # also warms up
        for _ in range(runs):
            for name, port, aec in servers:
                args = (findscu_args(port, aec, keys) if keys is not None else
                        [dcmtk("echoscu"), "-aet", "ECHOSCU", "-aec", aec, "127.0.0.1", str(port)])
                samples[name].setdefault(figure, []).append(run_timed(args))
    return {name: {figure: (median(values), matches[name][figure]) for figure, values in per.items()}
            for name, per in samples.items()}


_FINAL = re.compile(r"Message Type\s*:\s*C-MOVE RSP.*?(?:Completed Suboperations\s*:\s*(\S+)).*?"
                    r"(?:Failed Suboperations\s*:\s*(\S+)).*?DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})", re.S)


def movescu(port: int, aec: str, study_uid: str) -> tuple[float, int, int, int]:
    """(seconds, completed, failed, final status) of one C-MOVE to STORESCP."""
    args = [dcmtk("movescu"), "-d", "-S", "-aet", "MOVESCU", "-aec", aec, "-aem", "STORESCP", "-k",
            "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}", "127.0.0.1", str(port)]
    began = time.perf_counter()
    done = subprocess.run(args, env=DCMTK_ENV, capture_output=True, text=True, errors="replace", timeout=900)
    elapsed = time.perf_counter() - began
    found = _FINAL.findall(done.stdout + done.stderr)
    if not found:
        raise RuntimeError(f"movescu gave no C-MOVE response: {(done.stdout + done.stderr)[-800:]}")
    completed, failed, status = found[-1]
    as_int = lambda text: int(text) if text.isdigit() else 0  # noqa: E731
    return elapsed, as_int(completed), as_int(failed), int(status, 16)


# -- the run --------------------------------------------------------------------------------------
def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def ratio(ours: float | None, theirs: float | None) -> str:
    return "-" if ours is None or theirs is None else f"{ours / theirs:.2f}"


def _study_uid(path: Path) -> str:
    from pydicom import dcmread

    return str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)


@dataclass
class Results:
    queries: dict[str, Timings] = field(default_factory=dict)  # size label → timings
    startups: dict[str, float] = field(default_factory=dict)
    moves: dict[str, list[tuple[float, int, int, int]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@contextmanager
def maybe_orthanc(enabled: bool, data_dir: Path | None = None) -> Iterator[tuple[int, int] | None]:
    if not enabled:
        yield None
        return
    with orthanc_server(data_dir=data_dir) as ports:
        yield ports


def run(sizes: list[int], orthanc_sizes: list[int], runs: int, budget: float, million: bool,
        move_files: list[Path], move_runs: int, startup_repeat: int, orthanc_data: Path | None = None) -> Results:
    """Load both servers size by size, measuring at each checkpoint (see the module docstring)."""
    out = Results()
    checkpoints = sorted(set(sizes) | {s for s in orthanc_sizes if s <= max(sizes)})
    have_orthanc = orthanc_binary() is not None
    if not have_orthanc:
        out.notes.append("Orthanc is not installed: its columns are empty")
    tmp = Path(tempfile.mkdtemp(prefix="bench-query-"))
    try:
        home, port = tmp / "home", free_port()
        init_home(home, port)
        with maybe_orthanc(have_orthanc, orthanc_data) as orthanc, storescp_server() as scp_port:
            cli(home, "peer", "add", "storescp", "--aet", "STORESCP", "--host", "127.0.0.1", "--port",
                str(scp_port), "--institution", INSTITUTION)
            if move_files:
                cli(home, "import", str(move_files[0].parent))
            if orthanc:
                rest(orthanc[1], "PUT", "/modalities/storescp", {"AET": "STORESCP", "Host": "127.0.0.1",
                                                                 "Port": scp_port})
                for path in move_files:
                    rest(orthanc[1], "POST", "/instances", path.read_bytes())
            ours_loaded = ours_spent = theirs_spent = 0.0
            theirs_loaded = kept = float(orthanc_loaded(orthanc_data))
            if kept:
                out.notes.append(f"Orthanc: {kept:,.0f} studies already in {orthanc_data} (--orthanc-data)")
            for n, size in enumerate(checkpoints):
                ours_spent += load_pacsnode(home / "index.sqlite", int(ours_loaded), size)
                ours_loaded = size
                out.notes.append(f"pacsnode: {size:,} studies loaded in {ours_spent:.0f} s "
                                 f"({size / ours_spent:.0f} studies/s, straight into the index)")
                servers: list[Server] = [("pacsnode", port, "PACSNODE")]
                if orthanc and size in orthanc_sizes:
                    rate = (theirs_loaded - kept) / theirs_spent if theirs_spent else None
                    if theirs_loaded > size:
                        out.notes.append(f"Orthanc: {size:,} studies skipped, {orthanc_data} holds more")
                    elif rate and theirs_spent + (size - theirs_loaded) / rate > budget:
                        out.notes.append(f"Orthanc: {size:,} studies skipped, loading at {rate:.0f} studies/s "
                                         f"would pass the {budget:.0f} s budget (--orthanc-budget)")
                    else:
                        if size > theirs_loaded:
                            theirs_spent += load_orthanc(orthanc[1], int(theirs_loaded), size)
                            out.notes.append(f"Orthanc: {size - kept:,.0f} studies loaded through REST in "
                                             f"{theirs_spent:.0f} s ({(size - kept) / theirs_spent:.0f} studies/s)")
                        theirs_loaded = size
                        mark_orthanc_loaded(orthanc_data, size)
                        servers.append(("Orthanc", orthanc[0], "ORTHANC"))
                label = f"{size:,}"
                out.startups[label] = startup_time(home, port, startup_repeat)
                with serving(home, port):
                    out.queries[label] = time_queries(servers, size, runs)
                    if move_files and n == len(checkpoints) - 1:
                        movers: list[Server] = [("pacsnode", port, "PACSNODE")]
                        if orthanc:
                            movers.append(("Orthanc", orthanc[0], "ORTHANC"))
                        study_uid = _study_uid(move_files[0])
                        for _ in range(move_runs):
                            for name, server_port, aec in movers:
                                out.moves.setdefault(name, []).append(movescu(server_port, aec, study_uid))
            if million:
                size = checkpoints[-1]
                seconds = load_pacsnode(home / "index.sqlite", 0, size, range(2, 11))
                out.notes.append(f"pacsnode: grown to {size * 10:,} instances (10 per study) in {seconds:.0f} s "
                                 f"({size * 9 / seconds:.0f} instances/s)")
                label = f"{size:,} x10 inst"
                out.startups[label] = startup_time(home, port, startup_repeat)
                with serving(home, port):
                    out.queries[label] = time_queries([("pacsnode", port, "PACSNODE")], size, runs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def report(out: Results, runs: int, move_files: list[Path], move_runs: int) -> None:
    rows: list[list[object]] = []
    for label, timings in out.queries.items():
        ours, theirs = timings.get("pacsnode", {}), timings.get("Orthanc", {})
        for figure, (seconds, matches) in ours.items():
            other = theirs.get(figure)
            counted = "" if figure.startswith("echoscu") else "/".join(
                dict.fromkeys(str(m) for m in (matches, other[1] if other else None) if m is not None))
            rows.append([figure, label, counted, ms(seconds), ms(other[0] if other else None),
                         ratio(seconds, other[0] if other else None)])
        rows.append(["pacsnode start-up (serve until the port accepts)", label, "", ms(out.startups[label]), "-", "-"])
    print_table(f"Study-level C-FIND, findscu wall time, median of {runs} (ms; ratio = pacsnode / Orthanc; "
                "matches: one number when both servers agree)",
                ["figure", "size (studies)", "matches", "pacsnode ms", "Orthanc ms", "ratio"], rows)
    if move_files and out.moves:
        rates = {name: len(move_files) / median([m[0] for m in moves]) for name, moves in out.moves.items()}
        move_rows = [[name, f"{median([m[0] for m in moves]):.2f}", f"{rates[name]:.0f}",
                      ",".join(str(m[1]) for m in moves), ",".join(str(m[2]) for m in moves),
                      ",".join(f"0x{m[3]:04X}" for m in moves),
                      f"{rates['pacsnode'] / rates[name]:.2f}" if "pacsnode" in rates else "-"]
                     for name, moves in out.moves.items()]
        print_table(f"C-MOVE of one {len(move_files)}-instance CT study (0.5 MB images) to DCMTK storescp, "
                    f"movescu wall time, median of {move_runs}",
                    ["server", "seconds", "instances/s", "completed", "failed", "final status",
                     "pacsnode / server (inst/s)"], move_rows)
    print("\nNotes:")
    for note in out.notes:
        print(f"- {note}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="pacsnode 2k+10k studies, Orthanc 2k, 3 runs")
    parser.add_argument("--sizes", default=None, help="pacsnode study counts (comma-separated)")
    parser.add_argument("--orthanc-sizes", default=None, help="Orthanc study counts (each also a pacsnode size)")
    parser.add_argument("--orthanc-budget", type=float, default=None, help="seconds allowed for loading Orthanc")
    parser.add_argument("--million", action=argparse.BooleanOptionalAction, default=None,
                        help="grow pacsnode to 10 instances per study at the largest size")
    parser.add_argument("--runs", type=int, default=None, help="findscu runs per query (median)")
    parser.add_argument("--move-count", type=int, default=200, help="instances in the C-MOVE study (0: skip)")
    parser.add_argument("--move-runs", type=int, default=3)
    parser.add_argument("--orthanc-data", type=Path, default=None,
                        help="keep Orthanc's data in DIR and reuse the studies it already holds")
    args = parser.parse_args(argv)
    quick = args.quick
    sizes = [int(s) for s in (args.sizes or ("2000,10000" if quick else "10000,100000")).split(",")]
    orthanc_sizes = [int(s) for s in (args.orthanc_sizes or ("2000" if quick else "5000,20000")).split(",")]
    budget = args.orthanc_budget if args.orthanc_budget is not None else (60.0 if quick else 420.0)
    million = args.million if args.million is not None else not quick
    runs = args.runs or (3 if quick else 5)
    started = time.perf_counter()
    move_files = ct_corpus(args.move_count) if args.move_count else []
    out = run(sizes, orthanc_sizes, runs, budget, million, move_files, args.move_runs, 1 if quick else 3,
              args.orthanc_data)
    out.notes.append(f"total bench time {time.perf_counter() - started:.0f} s")
    report(out, runs, move_files, args.move_runs)


if __name__ == "__main__":
    main()
