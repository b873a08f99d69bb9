"""The SIGKILL harness in PostgreSQL + S3 mode (issue 16, reliability): nothing acknowledged is lost.

A node serves with ``[index] url`` on a real PostgreSQL (durable settings) and ``[storage] url``
on a real SeaweedFS. Each cycle, ``--senders`` threads store fresh instances (bench.soak_crash's
sender: every C-STORE-RSP recorded) and, after a random moment, one fault is injected in turn:

* ``node``: the node gets SIGKILL (as bench.soak_crash);
* ``s3``: the S3 server gets SIGKILL; the node keeps running (stores meanwhile must fail), then the
  node is killed too and SeaweedFS is started again on its data folder;
* ``postgres``: PostgreSQL gets SIGKILL (every backend) and is restarted (crash recovery) while the
  node keeps running; then the node is killed.

Then the node is restarted and, read through pacsnode's own index and storage seams, every instance
ever acknowledged must be in the index with its object present and its dataset bytes identical to
what was sent; ``check --repair`` must leave ``check`` clean.

    .venv/bin/python -m bench.soak_cluster --cycles 12 --seed 1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.node_process import NodeProcess
from bench.soak_crash import (UID_ROOT, Sent, chunked_send, configure, dataset_digest, echo, free_port,
                              init_home, quiet_pynetdicom, run_check, sender)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from engines import S3Server, start_postgres, start_seaweedfs  # noqa: E402

FAULTS = ("node", "s3", "postgres")


def _dataset_digest(data: bytes) -> str:
    """SHA-256 of the dataset after the File Meta group of stored bytes (soak_crash.dataset_digest)."""
    with tempfile.NamedTemporaryFile(suffix=".dcm") as handle:
        handle.write(data)
        handle.flush()
        return dataset_digest(Path(handle.name))


def verify(home: Path, sent: dict[str, Sent]) -> tuple[list[str], set[str]]:
    """Problems in the index and the object store, read through the Node's seams; and the indexed UIDs."""
    from pacsnode.node import Node

    node = Node.open(home)
    problems: list[str] = []
    try:
        rows = dict(node.index.instance_files(list(sent)))
        for uid, row in rows.items():
            try:
                with node.storage.open(row["path"]) as handle:
                    data = handle.read()
            except FileNotFoundError:
                problems.append(f"row without an object: {uid} -> {row['path']}")
                continue
            if len(data) != row["size"]:
                problems.append(f"size differs from the index: {uid}")
            elif sent[uid].digest != _dataset_digest(data):
                problems.append(f"dataset bytes differ from what was sent: {uid}")
        for uid, record in sent.items():
            if record.acked and uid not in rows:
                problems.append(f"LOST: {uid} was acknowledged with Success but is not in the index")
    finally:
        node.close()
    return problems, set(rows)


class Engines:
    """PostgreSQL and SeaweedFS for the harness; the S3 server can be killed and brought back."""

    def __init__(self, workdir: Path) -> None:
        self.pg = start_postgres(fsync=True)
        self.s3_folder = workdir / "seaweedfs"
        self.s3: S3Server = start_seaweedfs(self.s3_folder)
        self.url = self.pg.create_database("soak")

    def use_s3_env(self) -> None:
        os.environ.update(self.s3.env())  # serve and check inherit the credentials

    def restart_s3(self, home: Path) -> None:
        self.s3.kill()
        self.s3 = start_seaweedfs(self.s3_folder)  # same data folder, new ports and keys
        self.use_s3_env()
        configure(home, {"storage": {"url": self.s3.url("soak")}})

    def stop(self) -> None:
        self.s3.stop()
        self.pg.stop()


def one_cycle(cycle: int, fault: str, server: NodeProcess, engines: Engines, scratch: Path,
              sent: dict[str, Sent], rng: random.Random, senders: int, max_run: float, seed: int) -> dict[str, Any]:
    stop = threading.Event()
    lists: list[list[Sent]] = [[] for _ in range(senders)]
    threads = [threading.Thread(target=sender, args=(server.port, scratch, f"{UID_ROOT}.9{seed}.{cycle}.{i + 1}",
                                                    random.Random(rng.random()), stop, lists[i], 0.3), daemon=True)
               for i in range(senders)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while not any(lists) and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, max_run))
    if fault == "s3":
        engines.s3.kill()
        time.sleep(rng.uniform(0.2, 1.0))  # stores meanwhile must fail, not succeed
    elif fault == "postgres":
        engines.pg.kill()
        time.sleep(rng.uniform(0.2, 1.0))
        engines.pg.restart()
        time.sleep(rng.uniform(0.0, 1.0))
    server.kill()
    stop.set()
    for thread in threads:
        thread.join(90)
    if fault == "s3":
        engines.restart_s3(server.home)
    attempts = [r for records in lists for r in records]
    sent.update((r.sop_uid, r) for r in attempts)
    server.start()
    problems, indexed = verify(server.home, sent)
    repaired = run_check(server.home, repair=True)
    if repaired.missing or repaired.changed:
        problems.append(f"check --repair: {repaired.text.strip()[-400:]}")
    final = run_check(server.home)
    if final.missing or final.changed or final.temporary:  # young orphans stay (shared store): in flight
        problems.append(f"check not clean after repair: {final.text.strip()[-400:]}")
    if not echo(server.port):
        problems.append("restarted node does not answer C-ECHO")
    return {"cycle": cycle, "fault": fault, "attempted": len(attempts), "acked": sum(r.acked for r in attempts),
            "failed_status": sum(1 for r in attempts if r.status not in (None, 0)),
            "unacked_stored": sum(1 for r in attempts if not r.acked and r.sop_uid in indexed),
            "problems": problems}


def run(cycles: int, senders: int, seed: int, max_run: float) -> list[dict[str, Any]]:
    quiet_pynetdicom()
    rng = random.Random(seed)
    workdir = Path(tempfile.mkdtemp(prefix="soak-cluster-"))
    engines = Engines(workdir)
    results: list[dict[str, Any]] = []
    server: NodeProcess | None = None
    try:
        engines.use_s3_env()
        home, scratch = workdir / "home", workdir / "sent"
        scratch.mkdir()
        port = free_port()
        init_home(home, port, settings={"index": {"url": engines.url}, "storage": {"url": engines.s3.url("soak")},
                                        "node": {"name": "soak-node"}, "qc": {"watch_stable": False}})
        server = NodeProcess(home, port=port, log_path=workdir / "serve.log", ready="echo", start_timeout=60)
        server.start()
        sent: dict[str, Sent] = {}
        with chunked_send():
            for cycle in range(1, cycles + 1):
                result = one_cycle(cycle, FAULTS[(cycle - 1) % len(FAULTS)], server, engines, scratch, sent, rng,
                                   senders, max_run, seed)
                results.append(result)
                print(json.dumps(result), flush=True)
                if result["problems"]:
                    break
    finally:
        if server is not None:
            server.stop()
        engines.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=12)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-run", type=float, default=2.0)
    args = parser.parse_args(argv)
    results = run(args.cycles, args.senders, args.seed, args.max_run)
    totals = {key: sum(r[key] for r in results) for key in ("attempted", "acked", "failed_status", "unacked_stored")}
    totals["cycles"] = len(results)
    totals["problems"] = sum(len(r["problems"]) for r in results)
    print(f"\nsoak (PostgreSQL + S3): {json.dumps(totals)}")
    print("RESULT:", "FAIL" if totals["problems"] else "PASS (no acknowledged instance lost, check clean)")
    return 1 if totals["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
