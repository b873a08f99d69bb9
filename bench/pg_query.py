"""C-FIND on a PostgreSQL index at 1M instances against Orthanc on SQLite (issue 16 targets), same run.

    .venv/bin/python -m bench.pg_query [--studies 100000] [--per-study 10] [--runs 9] [--warmup 10]
                                       [--orthanc-data /tmp/query-bench/orthanc100k] [--url URL]

1. A throw-away PostgreSQL (``tests/engines.start_postgres``, durable settings) gets ``--studies`` ×
   ``--per-study`` instances of bench.query's synthetic region through ``bench.pg_load`` (COPY into
   pacsnode's own schema: bench data, not ingest). ``--url`` uses an already loaded database instead.
2. ``pacsnode serve`` on it (a workstation of the same hospital asks, as in bench.query), and
   Orthanc on SQLite holding the same studies (one instance each) from ``--orthanc-data`` (a folder
   ``bench.query --orthanc-data`` filled through REST; 100k studies take ~30 min, so it is reused,
   never loaded here). Orthanc's size is what that folder holds.
3. For each figure both servers answer ``--runs`` times, alternating (a load spike on this shared
   machine hits both); the median wall time of the DCMTK process is reported: ``echoscu`` (the
   floor: process start, association, release), an exact Patient ID, a Patient Name prefix
   (``WANGAN*``: 1% of the patients, ~1000 studies at 100k studies). Each figure first runs
   ``--warmup`` times on every server, untimed (a node started seconds ago plans each statement at
   each of its first ten uses on a pool connection; a node in service has long done so).
   The DCMTK client's CPU per run is taken too (rusage: no waiting for a core in it, though
   contention still inflates it: at load 10-13 findscu − echoscu ranged +1.6 to +8 ms).

4. Per request: ``findscu --repeat N`` minus ``echoscu --repeat N`` on one association, divided by N:
   the server's own cost of a C-FIND over a C-ECHO, without the process start-up noise.
5. The client's own share of the single-shot difference: the same findscu and echoscu against
   DCMTK's ``dcmqrscp`` on an empty database (a C-FIND that costs its server next to nothing),
   alternating with the others. ``findscu`` starts and negotiates more than ``echoscu`` (~20-50 ms
   here under load): that part of "pacsnode − its floor" is the client's, not the server's, and the
   last column takes it out. At a load average of 8-10 on 2 cores both single-shot columns swing
   by tens of ms; the client's CPU difference plus the server's CPU per request (4.) is what the
   single-shot difference comes to on an idle machine, and the bench prints that sum last.

6. Raw-socket single shots (``--raw N``): the same C-ECHO and exact Patient ID C-FIND as whole
   associations from this process's own socket, no client process to start, alternating: the
   server's part of the single-shot difference in wall time.

Targets: exact Patient ID ≤ echo floor + 5 ms; the name prefix ≤ 0.5 × Orthanc.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable, Iterator

from bench.common import ROOT, dcmtk, free_port, median, orthanc_server, print_table
from bench.node_process import NodeProcess
from bench.query import (FAMILIES, INSTITUTION, RETURN_KEYS, cli, count_matches, findscu_args, orthanc_loaded,
                         run_timed, set_toml, study)

sys.path.insert(0, str(ROOT / "tests"))
from engines import start_postgres  # noqa: E402

DEFAULT_ORTHANC = Path("/tmp/query-bench/orthanc100k")


def figures(studies: int) -> list[tuple[str, list[str] | None]]:
    target = study(studies // 2)
    return [("echoscu (floor)", None), ("exact Patient ID", [f"PatientID={target['patient_id']}"]),
            ("Patient Name prefix", [f"PatientName={FAMILIES[0]}*"])]


def pg_home(folder: Path, url: str) -> tuple[Path, int]:
    """A node home on ``url`` configured as bench.query's (workstations FINDSCU/ECHOSCU registered)."""
    port = free_port()
    home = folder / "home"
    cli(home, "init", "--port", str(port), "--institution", INSTITUTION, "--index-url", url)
    for key, value in (("max_results", "0"), ("case_sensitive_pn", "false"), ("watch_stable", "false"),
                       ("acse_timeout", "2"), ("dimse_timeout", "15")):
        set_toml(home, key, value)
    for name in ("FINDSCU", "ECHOSCU"):  # workstations of this hospital: they see everything
        cli(home, "peer", "add", name.lower(), "--aet", name, "--host", "127.0.0.1", "--port", "1",
            "--institution", INSTITUTION, "--replace")
    return home, port


@contextmanager
def reference_scp(folder: Path) -> Iterator[tuple[str, int, str]]:
    """DCMTK's dcmqrscp on an empty database: the client-side floor of findscu against echoscu."""
    port = free_port()
    database = folder / "dcmqrscp-db"
    database.mkdir(parents=True)
    config = folder / "dcmqrscp.cfg"
    config.write_text(f"NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 16\n"
                      "HostTable BEGIN\nHostTable END\nVendorTable BEGIN\nVendorTable END\n"
                      f"AETable BEGIN\nREFQR {database} RW (10, 10mb) ANY\nAETable END\n")
    proc = subprocess.Popen([dcmtk("dcmqrscp"), "-c", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                run_timed(echo_args(port, "REFQR"))
                break
            except RuntimeError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        yield ("dcmqrscp", port, "REFQR")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def echo_args(port: int, aec: str) -> list[str]:
    return [dcmtk("echoscu"), "-aet", "ECHOSCU", "-aec", aec, "127.0.0.1", str(port)]


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's waited-for children: the DCMTK clients run so far."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def measure(servers: list[tuple[str, int, str]], studies: int, runs: int,
            warmup: int) -> tuple[list[list[object]], list[list[object]]]:
    """One row per figure: median ms per server (alternating runs) and the match counts; and one row per
    figure of the DCMTK client process's CPU ms (median, per server).

    Each figure first runs ``warmup`` times on every server, untimed: a node started seconds ago plans
    each statement at each of its first ten uses on a pool connection (psycopg prepares it at the
    fifth, PostgreSQL plans it generically after five more), which a node in service has long done.
    """
    rows: list[list[object]] = []
    cpu_rows: list[list[object]] = []
    for figure, keys in figures(studies):
        counts = {name: count_matches(port, aec, keys) if keys else 0 for name, port, aec in servers
                  if name != "dcmqrscp"}  # an empty database: no matches, the client's floor
        samples: dict[str, list[float]] = {name: [] for name, _, _ in servers}
        clients: dict[str, list[float]] = {name: [] for name, _, _ in servers}
        for attempt in range(warmup + runs):
            for name, port, aec in servers:
                before = children_cpu()
                wall = run_timed(findscu_args(port, aec, keys) if keys else echo_args(port, aec))
                if attempt >= warmup:
                    samples[name].append(wall)
                    clients[name].append(children_cpu() - before)
        rows.append([figure, "/".join(dict.fromkeys(str(c) for c in counts.values())) if keys else "",
                     *(median(samples[name]) * 1000 for name, _, _ in servers)])
        cpu_rows.append([figure, *(median(clients[name]) * 1000 for name, _, _ in servers)])
    return rows, cpu_rows


def raw_association(port: int, aec: str, identifier: bytes | None) -> float:
    """Seconds of one whole association from a raw socket (no client process): connect, A-ASSOCIATE,
    one C-ECHO (``identifier`` None, calling ECHOSCU) or one Study Root C-FIND with ``identifier``
    (calling FINDSCU), every response, release. What is left of a single shot without DCMTK's start-up."""
    from pacsnode.dimse import pdu

    find = identifier is not None
    abstract = "1.2.840.10008.5.1.4.1.2.2.1" if find else "1.2.840.10008.1.1"
    rq = pdu.AssociateRQ(aec, "FINDSCU" if find else "ECHOSCU",
                         (pdu.PresentationContextRQ(1, abstract, ("1.2.840.10008.1.2.1",)),),
                         pdu.UserInformation(maximum_length=16384, implementation_class_uid="1.2.826.0.1.3680043.10.1078"))
    command = pdu.encode_command({pdu.AFFECTED_SOP_CLASS_UID: abstract, pdu.MESSAGE_ID: 1,
                                  pdu.COMMAND_FIELD: pdu.C_FIND_RQ if find else pdu.C_ECHO_RQ, pdu.PRIORITY: 0,
                                  pdu.COMMAND_DATASET_TYPE: 1 if find else pdu.NO_DATASET})
    request = pdu.encode_message(1, command, identifier, 16384)
    began = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def read() -> pdu.PDU:
            header = sock.recv(pdu.HEADER_SIZE, socket.MSG_WAITALL)
            body = sock.recv(pdu.HEADER.unpack(header)[1], socket.MSG_WAITALL) if len(header) == 6 else b""
            return pdu.decode(header + body)

        sock.sendall(rq.encode())
        if not isinstance(read(), pdu.AssociateAC):
            raise RuntimeError(f"{aec} on port {port} did not accept the association")
        sock.sendall(request)
        while True:  # until the final response (a command whose status is not Pending)
            message = read()
            if not isinstance(message, pdu.PDataTF):
                raise RuntimeError(f"unexpected {type(message).__name__} from port {port}")
            finals = [pdv for pdv in message.pdvs if pdv.is_command and pdv.is_last
                      and pdu.decode_command(pdv.data).us(pdu.STATUS) not in (0xFF00, 0xFF01)]
            if finals:
                break
        sock.sendall(pdu.ReleaseRQ().encode())
        read()
    return time.perf_counter() - began


def raw_single_shots(port: int, aec: str, studies: int, runs: int) -> tuple[float, float]:
    """Median seconds of ``runs`` raw-socket associations each, alternating: C-ECHO, and the exact
    Patient ID C-FIND with findscu's keys (bench.query's return keys), Explicit VR Little Endian."""
    from pydicom.dataset import Dataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    keys = figures(studies)[1][1]
    assert keys is not None
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for key in [*keys, *(k for k in RETURN_KEYS if k not in {x.partition("=")[0] for x in keys})]:
        name, _, value = key.partition("=")
        setattr(ds, name, value)
    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = False, True
    write_dataset(buffer, ds)
    echo: list[float] = []
    find: list[float] = []
    for _ in range(runs):
        echo.append(raw_association(port, aec, None))
        find.append(raw_association(port, aec, buffer.getvalue()))
    return median(echo), median(find)


def tree_cpu(pid: int | None) -> float | None:
    """CPU seconds (user + system) of process ``pid`` and all its descendants, living and reaped."""
    if pid is None:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stats[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
    children: dict[int, list[int]] = {}
    for child, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(child)
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        fields = stats.get(current)
        if fields is not None:  # utime stime cutime cstime (fields 14-17 of stat)
            total += sum(int(v) for v in fields[11:15]) / tick
        todo += children.get(current, [])
    return total


def per_request(servers: list[tuple[str, int, str]], studies: int, runs: int, repeat: int,
                pids: dict[str, list[int | None]]) -> list[list[object]]:
    """Per request on one association: (findscu --repeat N − echoscu --repeat N) / N, median of ``runs``.

    Process start and association set-up, which dominate the single-shot times and their noise on
    a shared machine, cancel out: what is left is what the server adds to answer a C-FIND
    instead of a C-ECHO. The same difference in CPU seconds of the server's processes (``pids``:
    the node and its PostgreSQL) is what it would add on an idle machine, where a wake-up does
    not wait for a core.
    """
    walls: dict[str, list[float]] = {name: [] for name, _, _ in servers}
    cpus: dict[str, list[float]] = {name: [] for name, _, _ in servers}
    keys = figures(studies)[1][1]  # the exact Patient ID (the floor target)
    assert keys is not None

    def cpu(name: str) -> float | None:
        used = [tree_cpu(pid) for pid in pids.get(name, [None])]
        return None if None in used else sum(u for u in used if u is not None)

    for _ in range(runs):
        for name, port, aec in servers:
            cpu0 = cpu(name)
            echo = run_timed([*echo_args(port, aec)[:1], "--repeat", str(repeat), *echo_args(port, aec)[1:]])
            cpu1 = cpu(name)
            find = run_timed(findscu_args(port, aec, keys, ("--repeat", str(repeat))))
            cpu2 = cpu(name)
            walls[name].append((find - echo) / repeat)
            if cpu0 is not None and cpu1 is not None and cpu2 is not None:
                cpus[name].append(((cpu2 - cpu1) - (cpu1 - cpu0)) / repeat)
    return [[f"exact Patient ID minus echo, wall per request (--repeat {repeat})",
             *(median(walls[name]) * 1000 for name, _, _ in servers)],
            ["  the same in server CPU (node + PostgreSQL; Orthanc: -)",
             *((median(cpus[name]) * 1000 if cpus[name] else None) for name, _, _ in servers)]]


def report(rows: list[list[object]], names: list[str], runs: int, notes: list[str]) -> None:
    floor = {name: float(rows[0][2 + n]) for n, name in enumerate(names)}  # type: ignore[arg-type]
    orthanc = names.index("Orthanc") if "Orthanc" in names else None
    reference = names.index("dcmqrscp") if "dcmqrscp" in names else None
    table = []
    for row in rows:
        ours = float(row[2])  # type: ignore[arg-type]
        cells = [row[0], row[1], *(f"{float(v):.1f}" for v in row[2:])]  # type: ignore[arg-type]
        cells.append(f"{ours - floor['pacsnode']:+.1f}" if row is not rows[0] else "")
        if reference is not None:  # the client's own find − echo difference taken out
            client = float(row[2 + reference]) - floor["dcmqrscp"]  # type: ignore[arg-type]
            cells.append(f"{ours - floor['pacsnode'] - client:+.1f}" if row is not rows[0] else "")
        if orthanc is not None:
            cells.append(f"{ours / float(row[2 + orthanc]):.2f}")  # type: ignore[arg-type]
        table.append(cells)
    header = ["figure", "matches", *(f"{n} ms" for n in names), "pacsnode − its floor (ms)"]
    if reference is not None:
        header.append("the same − dcmqrscp's (ms)")
    if orthanc is not None:
        header.append("pacsnode / Orthanc")
    print_table(f"Study-level C-FIND, DCMTK wall time, median of {runs}", header, table)
    print("\nNotes:")
    for note in notes:
        print(f"- {note}")


def report_cpu(rows: list[list[object]], names: list[str], server: float | None) -> None:
    """The DCMTK client's CPU per single shot (rusage: no waiting for a core in it; contention still inflates it), and
    what the exact Patient ID's single shot would take over the echo on an idle machine: the client's
    CPU difference plus the server's (node and PostgreSQL, per request on one association: the
    association itself costs a C-FIND's and a C-ECHO's alike)."""
    table = [[row[0], *(f"{float(v):.2f}" if row is rows[0] else f"{float(v):.2f} ({float(v) - float(b):+.2f})"  # type: ignore[arg-type]
                        for v, b in zip(row[1:], rows[0][1:]))] for row in rows]
    print_table("Single shot, the DCMTK client's CPU ms (median; in brackets: minus echoscu's)",
                ["figure", *(f"{n} client" for n in names)], table)
    if server is not None:
        client = float(rows[1][1]) - float(rows[0][1])  # type: ignore[arg-type]
        print(f"\nexact Patient ID − echo in CPU, pacsnode: client {client:+.2f} ms + server {server:+.2f} ms "
              f"= {client + server:+.2f} ms (target: ≤ +5 ms of wall time)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--per-study", type=int, default=10)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--url", default="", help="an already loaded PostgreSQL index (skips the load)")
    parser.add_argument("--orthanc-data", type=Path, default=DEFAULT_ORTHANC)
    parser.add_argument("--pg-pid", type=int, default=None, help="with --url: the postmaster's pid (its CPU)")
    parser.add_argument("--no-orthanc", action="store_true")
    parser.add_argument("--no-reference", action="store_true", help="no dcmqrscp column (client-side floor)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs of each figure on each server first "
                                                                 "(a fresh node plans a statement at its first ten uses)")
    parser.add_argument("--raw", type=int, default=100, help="raw-socket single-shot associations of each kind "
                                                              "(no client process; 0: skip them)")
    parser.add_argument("--repeat", type=int, default=50, help="requests per association for the per-request "
                                                                "figures (0: skip them)")
    args = parser.parse_args(argv)
    from bench import pg_load

    notes: list[str] = []
    started = time.perf_counter()
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-pgquery-") as folder:
        url, pg_pid = args.url, args.pg_pid
        if not url:
            pg = stack.enter_context(start_postgres(fsync=True))
            url, pg_pid = pg.create_database("find"), pg.process.pid
            seconds = pg_load.load(url, args.studies, args.per_study)
            notes.append(f"PostgreSQL: {args.studies * args.per_study:,} instances ({args.studies:,} studies, "
                         f"{args.per_study} each) loaded by COPY in {seconds:.0f} s")
        else:
            notes.append(f"PostgreSQL: the database given by --url ({args.studies:,} studies assumed)")
        home, port = pg_home(Path(folder), url)
        node = stack.enter_context(NodeProcess(home, port=port, start_timeout=120))
        servers = [("pacsnode", port, "PACSNODE")]
        held = orthanc_loaded(args.orthanc_data) if not args.no_orthanc else 0
        if held:
            oport, _http = stack.enter_context(orthanc_server(data_dir=args.orthanc_data))
            servers.append(("Orthanc", oport, "ORTHANC"))
            notes.append(f"Orthanc on SQLite: {held:,} of the same studies (1 instance each) in {args.orthanc_data}")
        else:
            notes.append("Orthanc: no loaded --orthanc-data folder; its column is absent")
        if not args.no_reference:
            servers.append(stack.enter_context(reference_scp(Path(folder))))
            notes.append("dcmqrscp: DCMTK's Q/R SCP on an empty database, the client's own findscu − echoscu")
        pids = {"pacsnode": [node.proc.pid if node.proc else None, pg_pid]}

        rows, cpu_rows = measure(servers, args.studies, args.runs, args.warmup)
        notes.append(f"each figure ran {args.warmup} times on every server before the {args.runs} timed runs")
        measured = [server for server in servers if server[0] != "dcmqrscp"]
        extra = per_request(measured, args.studies, max(3, args.runs // 2), args.repeat, pids) if args.repeat else []
        raw = raw_single_shots(port, "PACSNODE", args.studies, args.raw) if args.raw else None
    notes.append(f"total bench time {time.perf_counter() - started:.0f} s")
    report(rows, [name for name, _, _ in servers], args.runs, notes)
    if raw is not None:
        print(f"\nRaw-socket single shots against pacsnode (no client process; median of {args.raw} each): echo "
              f"{raw[0] * 1000:.2f} ms, exact Patient ID {raw[1] * 1000:.2f} ms, find − echo {(raw[1] - raw[0]) * 1000:+.2f} ms")
    server = extra[1][1] if extra else None
    report_cpu(cpu_rows, [name for name, _, _ in servers], float(server) if server is not None else None)  # type: ignore[arg-type]
    if extra:
        names = [name for name, _, _ in measured]
        print_table("C-FIND minus C-ECHO, per request on one association (ms, median)", ["figure", *names],
                    [[row[0], *("-" if v is None else f"{float(v):.1f}" for v in row[1:])] for row in extra])  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
