"""Real database engines for tests and benchmarks: a throw-away PostgreSQL from the distribution.

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
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
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
    server = PostgresServer(folder=folder, port=port, process=process, bin=binaries)
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
