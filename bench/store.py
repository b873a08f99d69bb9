"""Ingest benchmark: storescu → pacsnode, DCMTK storescp and Orthanc, one association each.

Usage: python -m bench.store [--count N] [--small N] [--repeat R]
Prints instances/s and MB/s per receiver and the ratio of pacsnode to each anchor.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.common import (
    ct_corpus,
    median,
    orthanc_binary,
    orthanc_server,
    pacsnode_server,
    print_table,
    storescp_server,
    storescu,
)


def measure(files: list[Path], repeat: int) -> dict[str, float]:
    """Median seconds per receiver (fresh receiver each repetition: nothing is a duplicate)."""
    timings: dict[str, list[float]] = {"pacsnode": [], "pacsnode, fsync = false": [], "DCMTK storescp": [],
                                       "Orthanc": []}
    for _ in range(repeat):
        with pacsnode_server() as (port, _home):
            timings["pacsnode"].append(storescu(port, files, "PACSNODE"))
        with pacsnode_server(settings={"fsync": "false"}) as (port, _home):  # like storescp and Orthanc
            timings["pacsnode, fsync = false"].append(storescu(port, files, "PACSNODE"))
        with storescp_server() as port:
            timings["DCMTK storescp"].append(storescu(port, files, "STORESCP"))
        if orthanc_binary():
            with orthanc_server() as (port, _http):
                timings["Orthanc"].append(storescu(port, files, "ORTHANC"))
    return {name: median(values) for name, values in timings.items() if values}


def report(label: str, files: list[Path], seconds: dict[str, float]) -> list[list[object]]:
    megabytes = sum(f.stat().st_size for f in files) / 1e6
    rows = []
    ours = len(files) / seconds["pacsnode"]
    for name, elapsed in seconds.items():
        rate = len(files) / elapsed
        rows.append([label, name, f"{rate:.0f}", f"{megabytes / elapsed:.1f}",
                     "1.00" if name == "pacsnode" else f"{ours / rate:.2f}"])
    return rows


#: issue 13's ingest targets per corpus: (pacsnode variant, anchor, the ratio it must reach)
TARGETS = {"0.5 MB": (("pacsnode, fsync = false", "DCMTK storescp", 0.8), ("pacsnode", "Orthanc", 1.0)),
           "9 KB": (("pacsnode", "Orthanc", 1.0),)}


def target_rows(label: str, seconds: dict[str, float]) -> list[list[object]]:
    """The target ratios of one corpus (instances/s of the pacsnode variant ÷ the anchor's, same run)."""
    rows: list[list[object]] = []
    targets = next(wanted for corpus, wanted in TARGETS.items() if corpus in label)
    for ours, anchor, goal in targets:
        if ours in seconds and anchor in seconds:
            ratio = seconds[anchor] / seconds[ours]
            rows.append([label, f"{ours} ÷ {anchor}", f"{ratio:.2f}", f"{goal:.1f}", "met" if ratio >= goal else "not met"])
    return rows


def main(argv: list[str] | None = None) -> list[list[object]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=500, help="0.5 MB CT instances per run")
    parser.add_argument("--small", type=int, default=500, help="small (64x64) instances per run")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    rows: list[list[object]] = []
    targets: list[list[object]] = []
    for label, files in ((f"{args.count} x 0.5 MB CT", ct_corpus(args.count)),
                         (f"{args.small} x 9 KB CT", ct_corpus(args.small, 64, 64, name="small"))):
        seconds = measure(files, args.repeat)
        rows += report(label, files, seconds)
        targets += target_rows(label, seconds)
    if not orthanc_binary():
        print("(Orthanc not installed: its rows are skipped)")
    print("pacsnode (fsync = true) makes file and folder entry durable before the index row commits and Success\n"
          "is sent: one flush (the row's WAL is synced every 2 s; a row a power cut loses is re-indexed from its\n"
          "file). Orthanc 1.10 fdatasyncs the file only (SyncStorageArea; no folder fsync, index synced at\n"
          "checkpoints): one flush, and a power cut can lose what it acknowledged. storescp does not sync.")
    print_table("C-STORE ingest, one storescu association (median of %d)" % args.repeat,
                ["corpus", "receiver", "inst/s", "MB/s", "pacsnode ÷ receiver"], rows)
    print_table("Issue 13 ingest targets (same run)", ["corpus", "ratio", "measured", "target", ""], targets)
    return rows


if __name__ == "__main__":
    main()
