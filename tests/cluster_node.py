"""The interop suites through a two-node archive on PostgreSQL + SeaweedFS (issue 16 "Done means").

``PACSNODE_TEST_ARCHIVE=postgres+s3`` (``make test-cluster``) makes every ``NodeProcess`` a test
builds a :class:`ClusterNodeProcess`: two ``pacsnode serve`` processes whose homes name the same
new PostgreSQL database (``[index] url``) and the same new S3 prefix (``[storage] url``) on one
PostgreSQL and one SeaweedFS per test process, behind :class:`node_router.Router` on the port
the test talks to. Stores go to the *store* node, queries, retrieves, DICOMweb and the CLI to
the *query* node, so a test that stores and then finds, moves or fetches crosses the archive.
Unset (the default), nothing here runs and a test gets one plain node.

Tests that reached into one home's files (``stored_path``, ``home / "storage"``) use the
storage seam instead (``stored_bytes``, ``stored_files``, ``replace_stored``), which both
classes answer; ``index_rows`` reads through the index seam. A test that is about one process
or one home by nature is marked ``one_node`` and skipped in the cluster run.
"""

from __future__ import annotations

import atexit
import os
import secrets
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

from node_router import Router

ARCHIVE_ENV = "PACSNODE_TEST_ARCHIVE"
CLUSTER = "postgres+s3"
# settings that are one node's own, never copied to the other home
PER_NODE = {("web", "port"), ("network", "port"), ("node", "name")}


def cluster_mode() -> bool:
    """Whether this run serves every test node as a two-node PostgreSQL + SeaweedFS archive."""
    value = os.environ.get(ARCHIVE_ENV, "")
    if value not in ("", CLUSTER):
        raise RuntimeError(f"{ARCHIVE_ENV}={value!r}: the only archive besides the default is {CLUSTER!r}")
    return value == CLUSTER


class Engines:
    """One PostgreSQL and one SeaweedFS for this test process, started at the first cluster node."""

    postgres: Any = None
    s3: Any = None

    @classmethod
    def get(cls) -> tuple[Any, Any]:
        from engines import start_postgres, start_seaweedfs

        if cls.postgres is None:
            cls.postgres = _twice(start_postgres)  # 30 s each: a loaded machine may need the second
            atexit.register(cls.stop)
        if cls.s3 is None:
            cls.s3 = start_seaweedfs(Path(tempfile.mkdtemp(prefix="pacsnode-s3-")), start_timeout=90)
            os.environ.update(cls.s3.env())  # serve and the CLI read the S3 credentials from the environment
        return cls.postgres, cls.s3

    @classmethod
    def stop(cls) -> None:
        server, cls.postgres = cls.postgres, None
        if server is not None:
            server.stop()
        store, cls.s3 = cls.s3, None
        if store is not None:
            store.stop()


def _single() -> type:
    import support

    return support.OneNodeProcess


class ClusterNodeProcess(_single()):  # type: ignore[misc]
    """Two nodes of one PostgreSQL + S3 archive in the shape of one ``NodeProcess``.

    ``home`` is the store node's home; the query node's is ``<home>-node2`` beside it. ``port``
    and ``web_port`` are the routers'; each node serves on its own free ports behind them.
    """

    def __init__(self, home: Path, aet: str = "PACSNODE", institution: str = "", start_timeout: float = 20.0,
                 command: Sequence[str] | None = None, port: int = 0, log_path: Path | None = None,
                 verbose: int = 0, ready: str = "port", preexec_fn: Callable[[], Any] | None = None) -> None:
        super().__init__(home, aet, institution, start_timeout, command, port, log_path, verbose, ready, preexec_fn)
        single = _single()
        self.store_node = single(home, aet, institution, start_timeout, command, 0, log_path, verbose, ready,
                                 preexec_fn)
        self.query_node = single(home.parent / f"{home.name}-node2", aet, institution, start_timeout, command, 0,
                                 None, verbose, ready, preexec_fn)
        self.nodes = [self.store_node, self.query_node]
        self.dimse: Router | None = None
        self.http: Router | None = None
        self.index_url = self.storage_url = ""
        self._index: Any = None  # the test's own handle on the shared index (index_rows), opened once

    # -- life cycle -------------------------------------------------------------------------
    def init(self, *extra: str) -> "ClusterNodeProcess":
        postgres, s3 = Engines.get()
        self.dimse = self.dimse or Router.for_dimse([0, 0], port=self.port)
        self.port = self.dimse.open().port  # bound from here on: no other server can take the port
        self.index_url = self.index_url or postgres.create_database()
        self.storage_url = self.storage_url or s3.url(f"cluster-{secrets.token_hex(6)}")
        for number, node in enumerate(self.nodes, 1):
            node.init(*extra, "--index-url", self.index_url)
            node.configure("storage", "url", self.storage_url)
            node.configure("node", "name", f"node-{number}")
        return self

    def configure(self, section: str, key: str, value: Any) -> "ClusterNodeProcess":
        if (section, key) == ("node", "name"):
            for number, node in enumerate(self.nodes, 1):
                node.configure(section, key, f"{value}-{number}")
        elif (section, key) not in PER_NODE:
            for node in self.nodes:
                node.configure(section, key, value)
        return self

    def enable_web(self) -> "ClusterNodeProcess":
        if not (self.home / "pacsnode.toml").exists():
            self.init()
        for node in self.nodes:
            node.enable_web()
        self.http = self.http or Router.for_http([0, 0])
        self.web_port = self.http.open().port
        for node in self.nodes:  # as behind any load balancer: URIs in answers name the balancer
            node.configure("web", "public_url", f"http://127.0.0.1:{self.web_port}")
        return self

    def start(self) -> "ClusterNodeProcess":
        if not (self.home / "pacsnode.toml").exists():
            self.init()
        # init applied the migrations, so both start at once (half the wait on a loaded machine)
        failures: list[BaseException] = []
        starting = [threading.Thread(target=_start, args=(node, failures)) for node in self.nodes if not node.running]
        for thread in starting:
            thread.start()
        for thread in starting:
            thread.join()
        if failures:
            self.stop()
            raise failures[0]
        self.dimse = self.dimse or Router.for_dimse([0, 0], port=self.port)
        self.dimse.backends[:] = [self.store_node.port, self.query_node.port]
        self.port = self.dimse.open().port
        if self.http is not None:
            self.http.backends[:] = [self.store_node.web_port, self.query_node.web_port]
            self.web_port = self.http.open().port
        self.starts += 1
        return self

    def _close_routers(self) -> None:
        for router in (self.dimse, self.http):
            if router is not None:
                router.close()

    def stop(self, timeout: float = 20.0) -> int | None:
        self._close_routers()
        self._close_index()
        codes = [node.stop(timeout) for node in self.nodes]
        return next((code for code in codes if code not in (0, None)), codes[0])

    def kill(self) -> None:
        self._close_routers()
        self._close_index()
        for node in self.nodes:
            node.kill()

    @property
    def proc(self) -> Any:  # the store node's process (signals, exit codes)
        return self.store_node.proc

    @proc.setter
    def proc(self, value: Any) -> None:  # the base class's __init__ sets it
        pass

    @property
    def running(self) -> bool:
        return all(node.running for node in self.nodes)

    def log_text(self) -> str:
        return "".join(f"--- {node.home.name}\n{node.log_text()}" for node in self.nodes)

    # -- talking to it ----------------------------------------------------------------------
    def cli(self, *args: str, timeout: float = 60.0, in_process: bool | None = None) -> Any:
        """The CLI on the query node's home (the same archive as the store node's)."""
        return self.query_node.cli(*args, timeout=timeout, in_process=in_process)

    def index_rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` on the shared PostgreSQL index, through the index seam (``?`` placeholders)."""
        if self._index is None:
            from pacsnode.config import load_config
            from pacsnode.index.base import open_index

            self._index = open_index(load_config(self.home))
        return [tuple(row) for row in self._index.query(sql, params)]

    def _close_index(self) -> None:
        index, self._index = self._index, None
        if index is not None:
            index.close()

    def stored_path(self, sop_instance_uid: str) -> Path | None:
        raise AssertionError("a cluster archive's files are S3 objects, not paths: use stored_bytes/stored_files")

    def temp_files(self) -> list[Path]:
        return sorted(p for node in self.nodes for p in node.temp_files())


def _twice(start: Callable[[], Any]) -> Any:
    try:
        return start()
    except RuntimeError:
        return start()


def _start(node: Any, failures: list[BaseException]) -> None:
    try:
        node.start()
    except BaseException as exc:  # noqa: BLE001 (re-raised by the caller's thread)
        failures.append(exc)
