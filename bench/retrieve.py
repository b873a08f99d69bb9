"""Issue 13's retrieve rows: C-MOVE to DCMTK storescp and C-GET by DCMTK getscu, each against a
direct storescu of the same files to the same receiver, with DCMTK's own Q/R SCP (dcmqrscp)
serving the same files in the same run as the ceiling.

The anchor rows answer "is the receiver the limit?": getscu pulling from dcmqrscp, and
movescu asking dcmqrscp to send to the same storescp, alternate with pacsnode run by run. When
dcmqrscp's ratio to the direct storescu is below the target too, the target is above what
DCMTK's own SCP reaches on this machine; pacsnode's ratio to dcmqrscp says how far we are
from it. The receivers' CPU per instance (getscu's, storescp's) shows whether one of them
costs more than the other.

Usage: python -m bench.retrieve [--runs N] [--count N] (bench.targets includes these rows).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

from pydicom.uid import ExplicitVRLittleEndian

from bench import query
from bench.common import (
    dcmtk,
    DCMTK_ENV,
    ct_corpus,
    free_port,
    median,
    print_table,
    stop,
    storescp_server,
    storescu,
    wait_for_port,
)
from bench.rows import Row


def warm(paths: list[Path]) -> None:
    """Read every file once: the page cache holds the sender's files, whoever sends them."""
    for path in paths:
        with open(path, "rb") as handle:
            while handle.read(1 << 20):
                pass


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a running process has used, its ended threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reaped_cpu(pid: int, timeout: float = 5.0) -> float:
    """CPU seconds of ``pid`` and of its children it has reaped, once it has no child left
    (dcmqrscp forks one per association and reaps it within about half a second)."""
    deadline = time.monotonic() + timeout
    children = Path(f"/proc/{pid}/task/{pid}/children")
    while children.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.02)
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def server_pid(port: int) -> int:
    """The pid of the process listening on ``port`` (the pacsnode serve or storescp under test)."""
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True).stdout
    marker = "pid="
    return int(out[out.index(marker) + len(marker):].split(",")[0]) if marker in out else 0


@contextlib.contextmanager
def dcmqrscp_server(files: list[Path], folder: Path, destination_port: int) -> Iterator[tuple[int, int]]:
    """DCMTK's Q/R SCP serving ``files`` where they are (dcmqridx indexes them in place), with
    STORESCP on ``destination_port`` as its one move destination; yields (port, pid). It forks
    one process per association (its ``--single-process`` exits after the first): see
    :func:`reaped_cpu`."""
    db = folder / "dcmqrscp-db"
    db.mkdir()
    port = free_port()
    config = folder / "dcmqrscp.cfg"
    config.write_text(f"NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 16\n"
                      f"HostTable BEGIN\nstorescp = (STORESCP, 127.0.0.1, {destination_port})\nHostTable END\n"
                      "VendorTable BEGIN\nVendorTable END\n"
                      f"AETable BEGIN\nDCMQRSCP {db} RW ({len(files) + 10}, 4096mb) ANY\nAETable END\n")
    subprocess.run([dcmtk("dcmqridx"), str(db), *map(str, files)], env=DCMTK_ENV, check=True, capture_output=True)
    # its own session as pacsnode serve has (NodeProcess): with the kernel's autogroup scheduling on a
    # loaded machine, a session is what gets a fair share of the CPU, so both servers get the same treatment
    proc = subprocess.Popen([dcmtk("dcmqrscp"), "-c", str(config), str(port)], env=DCMTK_ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_port(port, proc=proc)
        yield port, proc.pid
    finally:
        stop(proc)


def getscu(port: int, aec: str, study_uid: str, tmp: Path, expected: int) -> float:
    """Seconds for getscu to pull the study from ``aec``, writing with +B as storescp does."""
    out = Path(tempfile.mkdtemp(dir=tmp))
    began = time.perf_counter()
    subprocess.run([dcmtk("getscu"), "-S", "+B", "-aet", "GETSCU", "-aec", aec, "-od", str(out), "-k",
                    "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}", "127.0.0.1", str(port)],
                   env=DCMTK_ENV, check=True, capture_output=True, timeout=900)
    elapsed = time.perf_counter() - began
    got = sum(1 for _ in out.iterdir())
    shutil.rmtree(out, ignore_errors=True)
    if got != expected:
        raise RuntimeError(f"getscu from {aec}: {got} files of {expected}")
    return elapsed


def movescu(port: int, aec: str, study_uid: str, expected: int) -> float:
    elapsed, completed, failed, status = query.movescu(port, aec, study_uid)
    if (completed, failed, status) != (expected, 0, 0):
        raise RuntimeError(f"C-MOVE from {aec}: {completed} completed, {failed} failed, status 0x{status:04x}")
    return elapsed


class Samples:
    """Per figure, the wall times and CPU seconds of every run."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}

    def measure(self, figure: str, run: Callable[[], float], cpu: dict[str, Callable[[], float]]) -> None:
        """Time ``run`` (it returns its own wall time) and the CPU of each ``cpu`` meter around it."""
        before = {name: meter() for name, meter in cpu.items()}
        self.times.setdefault(figure, []).append(run())
        for name, meter in cpu.items():
            self.cpu.setdefault(f"{figure}: {name}", []).append(meter() - before[name])

    def time(self, figure: str) -> float:
        return median(self.times[figure])

    def ms(self, key: str, count: int) -> float:
        return median(self.cpu[key]) * 1000 / count


def retrieve_figures(files: list[Path], runs: int = 5) -> list[Row]:
    """C-MOVE and C-GET vs a direct storescu of the same files to the same storescp, and
    dcmqrscp doing the same from the same files as the ceiling.

    The five alternate run by run (a load change on the shared machine hits all of them), the
    sender's files are read into the page cache before each, and the medians of ``runs`` are
    compared. CPU per instance (start-up included) moves less than wall time on a loaded machine."""
    count = len(files)
    with tempfile.TemporaryDirectory(prefix="bench-targets-move-") as t, storescp_server() as scp_port:
        tmp = Path(t)
        home, port = tmp / "home", free_port()
        query.init_home(home, port)
        query.cli(home, "peer", "add", "storescp", "--aet", "STORESCP", "--host", "127.0.0.1", "--port",
                  str(scp_port), "--institution", query.INSTITUTION)
        query.cli(home, "peer", "add", "getscu", "--aet", "GETSCU", "--host", "127.0.0.1", "--port", "1",
                  "--institution", query.INSTITUTION)
        query.cli(home, "import", *map(str, files))
        study = query._study_uid(files[0])
        stored = sorted(p for p in (home / "storage").rglob("*") if p.is_file())
        samples = Samples()
        with dcmqrscp_server(files, tmp, scp_port) as (qr_port, qr_pid), query.serving(home, port):
            node_pid, scp_pid = server_pid(port), server_pid(scp_port)
            node, qr = (lambda: process_cpu(node_pid)), (lambda: reaped_cpu(qr_pid))
            receiver = lambda: process_cpu(scp_pid)  # noqa: E731
            for _ in range(runs):
                plan: list[tuple[str, list[Path], Callable[[], float], dict[str, Callable[[], float]]]] = [
                    ("direct", files, lambda: storescu(scp_port, files, "STORESCP"),
                     {"sender": children_cpu, "receiver": receiver}),
                    ("C-MOVE", stored, lambda: movescu(port, "PACSNODE", study, count),
                     {"sender": node, "receiver": receiver}),
                    ("C-MOVE dcmqrscp", files, lambda: movescu(qr_port, "DCMQRSCP", study, count),
                     {"sender": qr, "receiver": receiver}),
                    ("C-GET", stored, lambda: getscu(port, "PACSNODE", study, tmp, count),
                     {"sender": node, "receiver": children_cpu}),
                    ("C-GET dcmqrscp", files, lambda: getscu(qr_port, "DCMQRSCP", study, tmp, count),
                     {"sender": qr, "receiver": children_cpu}),
                ]
                for figure, sent, run, cpu in plan:
                    warm(sent)
                    samples.measure(figure, run, cpu)
    return retrieve_rows(samples, count, runs)


def retrieve_rows(s: Samples, count: int, runs: int) -> list[Row]:
    direct = s.time("direct")
    rate = lambda seconds: f"{count / seconds:.0f} inst/s"  # noqa: E731
    anchor = f"direct storescu {rate(direct)}"
    rows = []
    for what, to in (("C-MOVE", "to storescp"), ("C-GET", "(getscu)")):
        ours, ceiling = s.time(what), s.time(f"{what} dcmqrscp")
        node_ms, qr_ms = s.ms(f"{what}: sender", count), s.ms(f"{what} dcmqrscp: sender", count)
        scu_ms = s.ms("direct: sender", count)
        rows += [Row(f"{what} of {count} x 0.5 MB CT {to} (median of {runs}, alternating)", rate(ours), anchor,
                     direct / ours, ">= 0.9", direct / ours >= 0.9),
                 Row(f"{what}: the same by DCMTK dcmqrscp from the same files (the ceiling)", f"dcmqrscp {rate(ceiling)}",
                     anchor, direct / ceiling, "-", None),
                 Row(f"{what}: pacsnode vs dcmqrscp", rate(ours), f"dcmqrscp {rate(ceiling)}", ceiling / ours, "-",
                     None),
                 Row(f"{what}: serving node's CPU per instance vs storescu's (start-up included)", f"{node_ms:.2f} ms",
                     f"storescu {scu_ms:.2f} ms, dcmqrscp {qr_ms:.2f} ms", node_ms / scu_ms if scu_ms else None, "-",
                     None)]
    getscu_ms, storescp_ms = s.ms("C-GET: receiver", count), s.ms("direct: receiver", count)
    rows.append(Row("receivers: getscu's CPU per instance (from pacsnode) vs storescp's (from storescu)",
                    f"getscu {getscu_ms:.2f} ms", f"storescp {storescp_ms:.2f} ms",
                    getscu_ms / storescp_ms if storescp_ms else None, "-", None))
    return rows


def send_figure(files: list[Path]) -> list[Row]:
    """Our requestor association (``pacsnode send``, C-MOVE's sibling): the same files sent by
    ``send_files.send_instances`` in this process and by a direct storescu, to the same storescp.
    Informative (no target in the issue); the CLI's ~0.6 s interpreter start-up is not inside."""
    from pacsnode.dimse import sending
    from pacsnode.dimse.send_files import send_instances
    from pacsnode.model import Peer

    locations = [sending.location_of_file(str(p), "1.2.840.10008.5.1.4.1.1.2", str(ExplicitVRLittleEndian))
                 for p in files]
    with storescp_server() as scp_port:
        peer = Peer("storescp", "STORESCP", "127.0.0.1", scp_port)
        direct = median([storescu(scp_port, files, "STORESCP") for _ in range(3)])
        sent = []
        for _ in range(3):
            began = time.perf_counter()
            outcome = send_instances(peer, "PACSNODE", locations, None)
            sent.append(time.perf_counter() - began)
            if outcome.sent != len(files):
                raise RuntimeError(f"send_instances stored {outcome.sent} of {len(files)}")
        took = median(sent)
    return [Row(f"send of {len(files)} x 0.5 MB CT to storescp on our association (send_files)",
                f"{len(files) / took:.0f} inst/s", f"direct storescu {len(files) / direct:.0f} inst/s",
                direct / took, "-", None)]


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="alternating runs; medians are compared (default 7)")
    parser.add_argument("--count", type=int, default=100, help="0.5 MB CT instances in the study (default 100)")
    args = parser.parse_args(argv)
    rows = retrieve_figures(ct_corpus(args.count), args.runs)
    print(f"(load average {os.getloadavg()[0]:.2f} at the end)")
    print_table("retrieve", ["figure", "pacsnode", "anchor", "ratio", "target", "met"], [r.cells() for r in rows])
    return rows


if __name__ == "__main__":
    main()
