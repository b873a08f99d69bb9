"""Shared fixtures: a node home, an in-process Node, a served node in a subprocess, sample files.

Helpers that are not fixtures (tool runners, instance writers) live in ``tests/support.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
if str(REPOSITORY) not in sys.path:  # the bench package (shared harnesses) lives at the repository root
    sys.path.insert(0, str(REPOSITORY))

from pacsnode.config import NodeConfig, parse_config
from pacsnode.node import Node
from support import NodeProcess, a_ct_file, sample_files

if TYPE_CHECKING:
    from engines import PostgresServer


@pytest.fixture
def node_home(tmp_path: Path) -> Path:
    """An empty folder to use as a node home (nothing initialised)."""
    home = tmp_path / "home"
    home.mkdir()
    return home


@pytest.fixture
def make_config(node_home: Path) -> Callable[..., NodeConfig]:
    """``make_config(store={"duplicates": "replace"}, ...)``: a validated config for ``node_home``."""

    def make(**tables: dict[str, object]) -> NodeConfig:
        return parse_config({name: dict(table) for name, table in tables.items()}, node_home)

    return make


@pytest.fixture
def node(make_config: Callable[..., NodeConfig]) -> Iterator[Node]:
    """An in-process Node with default settings in a fresh home."""
    opened = Node(make_config())
    yield opened
    opened.close()


@pytest.fixture
def node_process(tmp_path: Path) -> Iterator[Callable[..., NodeProcess]]:
    """Factory of ``pacsnode serve`` subprocesses, each in its own home; all stopped in teardown.

    ``node_process()`` initialises a home and returns an unstarted controller, so a test can
    ``configure`` it before ``start``.
    """
    made: list[NodeProcess] = []

    def make(name: str = "node", aet: str = "PACSNODE", institution: str = "") -> NodeProcess:
        controller = NodeProcess(tmp_path / name, aet=aet, institution=institution)
        made.append(controller)
        return controller.init()

    yield make
    for controller in made:
        controller.stop()


@pytest.fixture
def served(node_process: Callable[..., NodeProcess]) -> NodeProcess:
    """A started node with default settings."""
    return node_process().start()


@pytest.fixture(scope="session")
def samples() -> list[Path]:
    return sample_files()


@pytest.fixture(scope="session")
def ct_template() -> Path:
    return a_ct_file()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator["PostgresServer"]:
    """One real PostgreSQL for the whole session (tests/engines.py), stopped at the end."""
    from engines import EngineMissing, start_postgres

    try:
        server = start_postgres()
    except EngineMissing as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: "PostgresServer") -> str:
    """The URL of a new empty database on the session's PostgreSQL: each test its own."""
    return postgres_server.create_database()


class IndexFactory:
    """Opens indexes on one backend: ``sqlite`` (a file in the folder) or ``postgres`` (a new database)."""

    def __init__(self, backend: str, request: pytest.FixtureRequest) -> None:
        self.backend = backend
        self._request = request
        self._opened: list[Any] = []

    def url(self) -> str:
        """``[index] url`` for a node on this backend: "" (SQLite in the home) or a new database's URL."""
        if self.backend == "sqlite":
            return ""
        return self._request.getfixturevalue("postgres_server").create_database()

    def index(self, folder: Path, synchronous: str = "NORMAL") -> Any:
        """A new empty index, closed when the fixture ends."""
        from pacsnode.index.postgres import PostgresIndex
        from pacsnode.index.sqlite import SqliteIndex

        opened = (SqliteIndex(folder / "index.sqlite", synchronous=synchronous) if self.backend == "sqlite"
                  else PostgresIndex(self.url()))
        self._opened.append(opened)
        return opened

    def close(self) -> None:
        for index in self._opened:
            index.close()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def index_factory(request: pytest.FixtureRequest) -> Iterator[IndexFactory]:
    """Every test that takes it runs on both index backends (issue 16: matching identical on both)."""
    factory = IndexFactory(request.param, request)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator["object"]:
    """One SeaweedFS S3 server for the session (``tests/engines.py``), stopped at the end."""
    from engines import start_seaweedfs

    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        server.stop()


# -- the order modules are handed out in ---------------------------------------------------------
# `make test` runs pytest-xdist with --dist loadscope --no-loadscope-reorder: each module goes whole to
# one worker, in collection order, and a worker takes the next module when it runs low. Modules that take
# minutes go first so that they overlap with everything else; the suite's tail is then short modules
# on both workers rather than one worker finishing a long module alone. Keep the slowest first, and
# re-measure after a change that moves a module's time: `--junitxml` of a full run, summed per module.
# The two regional modules left this list when their CLI calls went in process (~12 s each now).
LONG_POLES = (  # worker-seconds in a full make test at a load average of ~5 (2026-12-02), longest first
    "test_cluster.py",  # 120 s: two served pairs (files; PostgreSQL + SeaweedFS)
    "test_backup_safety.py",  # 118 s: backup/restore/check/serve subprocesses
    "test_admin_web.py",  # 97 s: the CLI as subprocesses next to a served node
    "test_backup.py",  # 73 s
    "test_repair_under_load.py",  # 71 s: repairs during 300-instance stores
    "test_tls_outgoing.py",  # 70 s: every outgoing CLI command against a TLS peer
    "test_crash.py",  # 66 s: SIGKILL cycles
    "test_qr_interop.py",  # 60 s
    "test_admin_browser.py",  # 51 s: chromium
    "test_workspace_browser.py",  # 45 s: chromium
)


# -- the cluster run (make test-cluster, tests/cluster_node.py) --------------------------------
@pytest.fixture(scope="session", autouse=True)
def _cluster_engines() -> Iterator[None]:
    """Under ``PACSNODE_TEST_ARCHIVE=postgres+s3`` the PostgreSQL and SeaweedFS the cluster nodes share
    are started by the first node and stopped here, when the session ends."""
    yield
    from cluster_node import Engines

    Engines.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slowest modules first (:data:`LONG_POLES`); in the cluster run, a test about one process or one home
    by nature (``one_node``) is skipped."""
    from cluster_node import cluster_mode

    rank = {name: n for n, name in enumerate(LONG_POLES)}
    items[:] = sorted(items, key=lambda item: rank.get(item.path.name, len(rank)))  # stable: tests keep their order

    if not cluster_mode():
        return
    for item in items:
        marker = item.get_closest_marker("one_node")
        if marker is not None:
            item.add_marker(pytest.mark.skip(reason=f"one node by nature: {marker.args[0] if marker.args else ''}"))


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Three served nodes of one region (regional_support.serve_region), once per module that asks:
    the two regional modules each get their own, on their own xdist worker."""
    from regional_support import serve_region

    with serve_region(tmp_path_factory.mktemp("region")) as started:
        yield started
