"""Shared benchmark machinery: corpora, peer processes (pacsnode, storescp, Orthanc), tables.

Corpora are generated deterministically into ``bench/corpus/`` (git-ignored). Every server
listens on 127.0.0.1 on a free port and is stopped when its context exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

from bench.node_process import NodeProcess, set_config

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "bench" / "corpus"
VENV_BIN = Path(sys.executable).parent
PACSNODE = str(VENV_BIN / "pacsnode")
# DCMTK by full path: the venv's bin/ has pynetdicom's own storescu/findscu/echoscu with other options.
DCMTK_BIN = Path(os.environ.get("PACSNODE_DCMTK_BIN", "/usr/bin"))


def dcmtk(tool: str) -> str:
    """Full path of a DCMTK tool."""
    return str(DCMTK_BIN / tool)
UID_ROOT = "1.2.826.0.1.3680043.10.1078.9"
# DCMTK (and Orthanc, built on it) leave Nagle on unless TCP_NODELAY is set in the environment;
# the anchors were measured with it set, so every DCMTK/Orthanc process here gets it.
DCMTK_ENV = dict(os.environ, TCP_NODELAY="1")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port} after {timeout}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ct_corpus(count: int, rows: int = 512, cols: int = 512, name: str = "ct") -> list[Path]:
    """``count`` CT instances of rows×cols 16-bit (512×512 ≈ 0.5 MB), one study, cached on disk."""
    folder = CORPUS / f"{name}_{count}_{rows}x{cols}"
    files = sorted(folder.glob("*.dcm")) if folder.is_dir() else []
    if len(files) == count:
        return files
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    yy, xx = np.mgrid[0:rows, 0:cols]
    base = ((xx + yy) % 2048).astype(np.uint16)
    study = f"{UID_ROOT}.{rows}.{count}.1"
    series = f"{study}.1"
    for i in range(count):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = f"{series}.{i + 1}"
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.PatientID = f"BENCH{count}"
        ds.IssuerOfPatientID = "BENCH"
        ds.PatientName = "BENCH^CT"
        ds.StudyDate = "20261101"
        ds.StudyTime = "101010"
        ds.AccessionNumber = f"B{count}"
        ds.Modality = "CT"
        ds.SeriesNumber = 1
        ds.InstanceNumber = i + 1
        ds.Rows, ds.Columns = rows, cols
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation = 0
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = ((base + i) % 4096).astype(np.uint16).tobytes()
        ds.save_as(folder / f"{i + 1:06d}.dcm", enforce_file_format=True)
    return sorted(folder.glob("*.dcm"))


def set_setting(home: Path, key: str, value: str) -> None:
    """Rewrite ``key = ...`` in the pacsnode.toml that ``init`` wrote (every key is there once)."""
    path = home / "pacsnode.toml"
    lines = path.read_text(encoding="utf-8").splitlines()
    found = False
    for i, line in enumerate(lines):
        if line.split("=")[0].strip() == key:
            lines[i], found = f"{key} = {value}", True
    if not found:
        raise KeyError(f"{key} is not in {path}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@contextlib.contextmanager
def pacsnode_server(extra_toml: str = "", home: Path | None = None, settings: dict[str, str] | None = None,
                    sections: dict[tuple[str, str], Any] | None = None) -> Iterator[tuple[int, Path]]:
    """A fresh pacsnode home served on a free port; yields (port, home). ``sections`` sets
    ``[section] key`` (for a key several tables share, such as ``url``)."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-pacsnode-"))
    home = home or tmp / "home"
    node = NodeProcess(home, start_timeout=30, log_path=tmp / "serve.log")
    if not (home / "pacsnode.toml").exists():
        node.init()
    else:
        node.port = free_port()
    if extra_toml:
        with open(home / "pacsnode.toml", "a", encoding="utf-8") as handle:
            handle.write("\n" + extra_toml)
    for key, value in (settings or {}).items():
        set_setting(home, key, value)
    for (section, key), value in (sections or {}).items():
        set_config(home, section, key, value)
    try:
        with node:
            yield node.port, home
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def storescp_server() -> Iterator[int]:
    """DCMTK storescp writing to a temp folder (fsync'ing like pacsnode is not its default)."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-storescp-"))
    port = free_port()
    proc = subprocess.Popen([dcmtk("storescp"), "--output-directory", str(tmp), "+B", "-aet", "STORESCP", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=DCMTK_ENV, start_new_session=True)
    try:
        wait_for_port(port, proc=proc)
        yield port
    finally:
        stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if os.path.exists("/usr/sbin/Orthanc") else None)


@contextlib.contextmanager
def orthanc_server(modalities: dict[str, list[object]] | None = None,
                   extra: dict[str, object] | None = None,
                   data_dir: Path | None = None) -> Iterator[tuple[int, int]]:
    """Orthanc with its own config on free ports; yields (dicom_port, http_port).

    ``data_dir``: keep Orthanc's storage and index there (created if missing) instead of a
    temporary folder, so a long load (100k studies through REST, ~8 min) is reused by later runs.
    """
    binary = orthanc_binary()
    if binary is None:
        raise RuntimeError("Orthanc is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="bench-orthanc-"))
    db = tmp / "db" if data_dir is None else Path(data_dir).resolve()
    db.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = free_port(), free_port()
    config = {
        "Name": "bench", "StorageDirectory": str(db), "IndexDirectory": str(db),
        "DicomAet": "ORTHANC", "DicomPort": dicom_port, "HttpPort": http_port, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "DicomModalities": modalities or {}, "Plugins": [],
        "DicomAlwaysAllowFind": True, "DicomAlwaysAllowMove": True, "DicomAlwaysAllowGet": True,
        "DicomCheckCalledAet": False, "StableAge": 3600, "LimitFindResults": 0,
    }
    config.update(extra or {})  # plugins (bench/web.py: orthanc-dicomweb)
    (tmp / "orthanc.json").write_text(json.dumps(config))
    proc = subprocess.Popen([binary, str(tmp / "orthanc.json")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=DCMTK_ENV, start_new_session=True)
    try:
        wait_for_port(dicom_port, timeout=60, proc=proc)
        wait_for_port(http_port, timeout=60, proc=proc)
        yield dicom_port, http_port
    finally:
        stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def storescu(port: int, files: list[Path], aec: str, aet: str = "STORESCU", extra: tuple[str, ...] = ()) -> float:
    """Send ``files`` over one association with storescu (TCP_NODELAY on); return seconds.

    ``extra``: more storescu options, e.g. ``+tls KEY CRT +cf CA`` for the TLS figure.
    """
    env = DCMTK_ENV
    listing = Path(tempfile.mkstemp(suffix=".txt")[1])
    started = time.perf_counter()
    result = subprocess.run([dcmtk("storescu"), *extra, "-aet", aet, "-aec", aec, "--max-pdu", "131072",
                             "127.0.0.1", str(port), *map(str, files)], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    listing.unlink(missing_ok=True)
    if result.returncode != 0:
        raise RuntimeError(f"storescu failed: {result.stderr.strip()[:500]}")
    return elapsed


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def print_table(title: str, header: list[str], rows: list[list[object]]) -> None:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    print(f"\n## {title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
