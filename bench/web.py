"""``python -m bench.web [--quick] [--studies N]``: issue 14's DICOMweb targets against Orthanc + orthanc-dicomweb.

Same run, same data: one CT series (``--series-size``, 600 by default) and N one-instance studies of
distinct patients are imported into pacsnode (``[web] enabled``, so metadata and frame offsets are built
at ingest) and uploaded to Orthanc (REST ``/instances``) with its DICOMweb plugin. Then:

- ``/metadata`` of the series: median of 5 after one warm-up, pacsnode / Orthanc (target ≤ 0.2);
- WADO-RS ``/frames/1`` of every instance of the series, sequential over one keep-alive connection (as a
  viewer fetches), frames/s, median of 5 runs alternating between the servers (target ≥ 2× Orthanc);
- QIDO-RS ``/studies?PatientID=…`` among N studies: median of 20 (target ≤ 0.5× Orthanc; the issue names
  100k studies, the default here is 2,000 to keep a run in minutes: pass ``--studies 100000`` for it);
- STOW-RS of 0.5 MB CT instances (10 per request) against pacsnode's own C-STORE rate of the same files
  into a fresh home with storescu (target ≥ 0.8).

``--qido-only --studies 100000`` measures the QIDO target alone at the issue's size, on the synthetic
region of ``bench.query`` (two one-instance studies per patient): pacsnode's index is loaded directly
(``bench.query.load_pacsnode``), Orthanc through REST. Loading takes long (Orthanc ~8 min per 100k on an
idle machine), so ``--orthanc-data DIR`` keeps Orthanc's data (the same folder ``bench.query
--orthanc-data`` fills: one load serves both benches) and ``--pacsnode-data DIR`` keeps a copy of the
loaded index; later runs reuse both. Requests alternate between the servers (median of ``--runs``).
"""

from __future__ import annotations

import argparse
from http.client import HTTPConnection
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

from bench.common import CORPUS, PACSNODE, ct_corpus, free_port, median, orthanc_server, print_table, storescu
from bench.node_process import NodeProcess

PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"'
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> bytes:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with OPENER.open(request, timeout=600) as answer:
        return answer.read()


def timed(method: str, url: str, headers: dict[str, str] | None = None, body: bytes | None = None) -> float:
    started = time.perf_counter()
    http(method, url, body, headers)
    return time.perf_counter() - started


def study_corpus(count: int) -> list[Path]:
    """``count`` studies of one small CT instance each, every one of another patient (cached)."""
    folder = CORPUS / f"web_studies_{count}"
    files = sorted(folder.glob("*.dcm")) if folder.is_dir() else []
    if len(files) == count:
        return files
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    pixels = np.zeros((8, 8), dtype=np.uint16).tobytes()
    for i in range(count):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.3680043.10.1078.77.{i + 1}.1.1"
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = f"1.2.826.0.1.3680043.10.1078.77.{i + 1}"
        ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.10.1078.77.{i + 1}.1"
        ds.PatientID, ds.IssuerOfPatientID, ds.PatientName = f"W{i:07d}", "BENCH", f"WEB^P{i}"
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.Modality = "20261101", "101010", f"W{i}", "CT"
        ds.SeriesNumber = ds.InstanceNumber = 1
        ds.Rows = ds.Columns = 8
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.PixelData = pixels
        ds.save_as(folder / f"{i:07d}.dcm", enforce_file_format=True)
    return sorted(folder.glob("*.dcm"))


class PacsnodeWeb:
    """A fresh pacsnode home with ``[web] enabled`` on free ports, served until ``stop``."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-web-"))
        self.home = self.tmp / "home"
        self.port, self.web_port = free_port(), free_port()
        subprocess.run([PACSNODE, "--home", str(self.home), "init", "--web", "--port", str(self.port),
                        "--institution", "PRV001"], check=True, stdout=subprocess.DEVNULL)
        toml = self.home / "pacsnode.toml"
        text = toml.read_text(encoding="utf-8")
        head, web = text.split("[web]", 1)
        toml.write_text(head + "[web]" + re.sub(r"\nport = \d+", f"\nport = {self.web_port}", web, count=1),
                        encoding="utf-8")
        self.node = NodeProcess(self.home, port=self.port, start_timeout=30)
        self.node.web_port = self.web_port  # start() waits for DICOMweb too
        self.token = ""

    def start(self) -> "PacsnodeWeb":
        self.node.start()
        made = subprocess.run([PACSNODE, "--home", str(self.home), "token", "create", f"bench{uuid.uuid4().hex[:6]}",
                               "--institution", "PRV001", "--permissions", "find,get,store"],
                              check=True, capture_output=True, text=True)
        self.token = made.stdout.strip().splitlines()[-1]
        return self

    def import_files(self, paths: list[Path]) -> None:
        folder = paths[0].parent
        subprocess.run([PACSNODE, "--home", str(self.home), "import", str(folder)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.web_port}/dicom-web"

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **extra}

    def stop(self) -> None:
        self.node.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def upload_to_orthanc(http_port: int, paths: list[Path]) -> None:
    for path in paths:
        http("POST", f"http://127.0.0.1:{http_port}/instances", path.read_bytes())


def multipart(paths: list[Path], boundary: str) -> bytes:
    out = bytearray()
    for path in paths:
        out += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + path.read_bytes() + b"\r\n"
    return bytes(out + f"--{boundary}--\r\n".encode())


def stow_seconds(root: str, headers: dict[str, str], paths: list[Path], per_request: int = 10) -> float:
    boundary = "BENCHBOUNDARY" + uuid.uuid4().hex
    bodies = [multipart(paths[i:i + per_request], boundary) for i in range(0, len(paths), per_request)]
    content = f'multipart/related; type="application/dicom"; boundary={boundary}'
    started = time.perf_counter()
    for body in bodies:
        http("POST", f"{root}/studies", body, {**headers, "Content-Type": content, "Accept": "application/dicom+json"})
    return time.perf_counter() - started


def frames_per_second(base: str, paths: list[str], headers: dict[str, str]) -> float:
    """Fetch every frame path over one keep-alive connection, as a viewer does (a browser keeps its
    connections open): what is measured is the server's cost per request, not the client's TCP set-up."""
    parsed = urllib.parse.urlsplit(base)
    connection = HTTPConnection(parsed.hostname, parsed.port, timeout=600)
    try:
        started = time.perf_counter()
        for path in paths:
            connection.request("GET", parsed.path + path, headers=headers)
            answer = connection.getresponse()
            body = answer.read()
            if answer.status != 200 or not body:
                raise RuntimeError(f"frame {path}: HTTP {answer.status}")
        return len(paths) / (time.perf_counter() - started)
    finally:
        connection.close()


def ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}" if theirs else "n/a"


def run(series_size: int, studies: int, stow_count: int) -> list[list[object]]:
    from pydicom import dcmread

    series = ct_corpus(series_size, 256, 256, name="web_series")
    patients = study_corpus(studies)
    stow_files = ct_corpus(stow_count, 512, 512, name="web_stow")
    first = dcmread(series[0], stop_before_pixels=True)
    study_uid, series_uid = first.StudyInstanceUID, first.SeriesInstanceUID
    sops = [dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in series]
    rows: list[list[object]] = []
    node = PacsnodeWeb()
    node.import_files(series)
    node.import_files(patients)
    node.start()
    extra = {"Plugins": [PLUGIN], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
    try:
        with orthanc_server(extra=extra) as (_dicom_port, orthanc_http):
            upload_to_orthanc(orthanc_http, series + patients)
            orthanc = f"http://127.0.0.1:{orthanc_http}/dicom-web"
            ours_h, theirs_h = node.headers(), {}
            # /metadata of the series
            meta = f"/studies/{study_uid}/series/{series_uid}/metadata"
            timed("GET", node.root + meta, ours_h), timed("GET", orthanc + meta, theirs_h)
            ours = median([timed("GET", node.root + meta, ours_h) for _ in range(5)])
            theirs = median([timed("GET", orthanc + meta, theirs_h) for _ in range(5)])
            rows.append([f"/metadata, {series_size}-instance series (s)", f"{ours:.3f}", f"{theirs:.3f}",
                         ratio(ours, theirs), "≤ 0.2"])
            # frames
            frame = f"/studies/{study_uid}/series/{series_uid}/instances/{{}}/frames/1"
            paths = [frame.format(s) for s in sops]
            frames_per_second(node.root, paths[:20], {**ours_h, "Accept": FRAME_ACCEPT})  # warm-up
            frames_per_second(orthanc, paths[:20], {"Accept": FRAME_ACCEPT})
            ours_rates: list[float] = []
            theirs_rates: list[float] = []
            for _ in range(5):  # alternating: on a shared machine a load spike then hits both servers
                ours_rates.append(frames_per_second(node.root, paths, {**ours_h, "Accept": FRAME_ACCEPT}))
                theirs_rates.append(frames_per_second(orthanc, paths, {"Accept": FRAME_ACCEPT}))
            ours_rate, theirs_rate = median(ours_rates), median(theirs_rates)
            rows.append([f"WADO-RS frames, {series_size} frames 256×256, keep-alive (frames/s)", f"{ours_rate:.0f}",
                         f"{theirs_rate:.0f}", ratio(ours_rate, theirs_rate), "≥ 2"])
            # QIDO by Patient ID
            qido = f"/studies?PatientID=W{studies // 2:07d}"
            timed("GET", node.root + qido, ours_h), timed("GET", orthanc + qido, theirs_h)
            ours = median([timed("GET", node.root + qido, ours_h) for _ in range(20)])
            theirs = median([timed("GET", orthanc + qido, theirs_h) for _ in range(20)])
            rows.append([f"QIDO studies by PatientID, {studies} studies (ms)", f"{ours * 1000:.1f}",
                         f"{theirs * 1000:.1f}", ratio(ours, theirs), "≤ 0.5"])
    finally:
        node.stop()
    # STOW-RS versus pacsnode's own C-STORE, each into a fresh home
    stow_node = PacsnodeWeb().start()
    try:
        stow_t = stow_seconds(stow_node.root, stow_node.headers(), stow_files)
    finally:
        stow_node.stop()
    store_node = PacsnodeWeb().start()
    try:
        store_t = storescu(store_node.port, stow_files, "PACSNODE")
    finally:
        store_node.stop()
    rows.append([f"STOW-RS {stow_count} × 0.5 MB CT (inst/s) vs own C-STORE", f"{stow_count / stow_t:.0f}",
                 f"{stow_count / store_t:.0f} (C-STORE)", ratio(store_t, stow_t), "≥ 0.8"])
    return rows


def load_pacsnode_copy(index_path: Path, studies: int, kept: Path | None) -> str:
    """Fill ``index_path`` with ``studies`` synthetic studies, from the kept copy when it has them."""
    import sqlite3

    from bench.query import LOADED_MARK, load_pacsnode

    mark = kept / LOADED_MARK if kept is not None else None
    if kept is not None and mark is not None and mark.is_file() and int(mark.read_text()) == studies:
        with sqlite3.connect(kept / "index.sqlite") as source, sqlite3.connect(index_path) as target:
            source.backup(target)
        return f"pacsnode: {studies:,} studies copied from {kept} (--pacsnode-data)"
    seconds = load_pacsnode(index_path, 0, studies)
    if kept is not None and mark is not None:
        kept.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(index_path) as source, sqlite3.connect(kept / "index.sqlite") as target:
            source.backup(target)
        mark.write_text(str(studies))
    return f"pacsnode: {studies:,} studies loaded into the index in {seconds:.0f} s"


def run_qido(studies: int, runs: int, orthanc_data: Path | None, pacsnode_data: Path | None,
             fsync: bool = True) -> list[list[object]]:
    """The QIDO target alone at ``studies`` studies (see the module docstring); prints what was loaded.

    ``fsync`` is pacsnode's ``[store] fsync``: with it (the default) every audit row, one per
    QIDO request, is on disk before the answer leaves.
    """
    from bench.query import load_orthanc, mark_orthanc_loaded, orthanc_loaded, set_toml, study

    node = PacsnodeWeb()
    set_toml(node.home, "fsync", "true" if fsync else "false")
    print(load_pacsnode_copy(node.home / "index.sqlite", studies, pacsnode_data))
    node.start()
    extra = {"Plugins": [PLUGIN], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
    try:
        with orthanc_server(extra=extra, data_dir=orthanc_data) as (_dicom_port, orthanc_http):
            held = orthanc_loaded(orthanc_data)
            if held > studies:
                raise SystemExit(f"{orthanc_data} holds {held:,} studies, more than --studies {studies:,}")
            if held < studies:
                seconds = load_orthanc(orthanc_http, held, studies)
                mark_orthanc_loaded(orthanc_data, studies)
                print(f"Orthanc: {studies - held:,} studies loaded through REST in {seconds:.0f} s")
            else:
                print(f"Orthanc: {studies:,} studies already in {orthanc_data} (--orthanc-data)")
            orthanc = f"http://127.0.0.1:{orthanc_http}/dicom-web"
            qido = f"/studies?PatientID={study(studies // 2)['patient_id']}"
            ours_h: dict[str, str] = node.headers()
            import json

            counts = {len(json.loads(http("GET", node.root + qido, None, ours_h) or b"[]")),
                      len(json.loads(http("GET", orthanc + qido, None, {}) or b"[]"))}
            if len(counts) != 1:
                raise SystemExit(f"the servers disagree on {qido}: {counts} studies")
            print(f"{qido}: {counts.pop()} studies on both servers")
            for _ in range(3):  # warm up both
                timed("GET", node.root + qido, ours_h), timed("GET", orthanc + qido, {})
            ours_t: list[float] = []
            theirs_t: list[float] = []
            for _ in range(runs):  # alternating: a load spike on this shared machine hits both
                ours_t.append(timed("GET", node.root + qido, ours_h))
                theirs_t.append(timed("GET", orthanc + qido, {}))
            ours, theirs = median(ours_t), median(theirs_t)
    finally:
        node.stop()
    label = f"QIDO studies by PatientID, {studies:,} studies, fsync={str(fsync).lower()} (ms)"
    return [[label, f"{ours * 1000:.1f}", f"{theirs * 1000:.1f}", ratio(ours, theirs), "≤ 0.5"]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.web")
    parser.add_argument("--quick", action="store_true", help="120-instance series, 500 studies, 40 STOW instances")
    parser.add_argument("--studies", type=int, default=None)
    parser.add_argument("--series-size", type=int, default=None)
    parser.add_argument("--qido-only", action="store_true", help="only the QIDO target, on bench.query's region")
    parser.add_argument("--runs", type=int, default=50, help="QIDO requests per server with --qido-only (median)")
    parser.add_argument("--orthanc-data", type=Path, default=None, help="keep/reuse Orthanc's data (--qido-only)")
    parser.add_argument("--pacsnode-data", type=Path, default=None, help="keep/reuse the loaded index (--qido-only)")
    parser.add_argument("--fsync", action=argparse.BooleanOptionalAction, default=True,
                        help="pacsnode's [store] fsync with --qido-only (default: as shipped, true)")
    args = parser.parse_args(argv)
    if args.qido_only:
        rows = run_qido(args.studies or 100_000, args.runs, args.orthanc_data, args.pacsnode_data, args.fsync)
        print_table("QIDO-RS: pacsnode against Orthanc + orthanc-dicomweb (same run, same data)",
                    ["measure", "pacsnode", "Orthanc", "ratio", "target"], rows)
        return
    series_size = args.series_size or (120 if args.quick else 600)
    studies = args.studies or (500 if args.quick else 2000)
    stow_count = 40 if args.quick else 100
    rows = run(series_size, studies, stow_count)
    print_table("DICOMweb: pacsnode against Orthanc + orthanc-dicomweb (same run, same data)",
                ["measure", "pacsnode", "Orthanc", "ratio", "target"], rows)


if __name__ == "__main__":
    main()
