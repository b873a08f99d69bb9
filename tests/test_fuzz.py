"""Hostile input, short and deterministic: the strategies of ``bench/fuzz.py`` with a fixed number of examples.

One ``pacsnode serve`` for the module; after every input the server must be alive and answer
C-ECHO, ``<home>/tmp`` must be empty once the association ended and no refused instance may
have a row (``FuzzTarget.after``); ``pacsnode check`` must be clean at the end. The long run is
``python -m bench.fuzz --count N``.
"""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import HealthCheck, given, settings

ROOT = Path(__file__).resolve().parents[1]

from bench.fuzz import (  # noqa: E402
    STORE_CONTEXTS,
    FindInput,
    FuzzTarget,
    PduInput,
    StoreInput,
    find_inputs,
    pdu_inputs,
    send_find,
    send_pdu,
    send_store,
    associate_rq,
    store_inputs,
)
from bench.node_process import NodeProcess  # noqa: E402
from bench.soak_crash import echo, free_port, init_home  # noqa: E402

pytestmark = [pytest.mark.timeout(300), pytest.mark.filterwarnings("ignore")]
DETERMINISTIC = dict(derandomize=True, deadline=None, database=None, print_blob=False,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                            HealthCheck.large_base_example, HealthCheck.filter_too_much])


def say(request: pytest.FixtureRequest, text: str) -> None:
    """A line on the terminal even when output is captured (the numbers are the point of these tests)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None:
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            reporter.write_line(text)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[FuzzTarget]:
    served = FuzzTarget(tmp_path_factory.mktemp("fuzz"))
    yield served
    served.stop()
    say(request, f"\nfuzz (short): {served.total} inputs tried, {len(served.failures)} failed: "
                 f"{dict(sorted(served.tried.items()))}")


@settings(max_examples=60, **DETERMINISTIC)  # type: ignore[arg-type]
@given(item=store_inputs())
def test_malformed_c_store_datasets(target: FuzzTarget, item: StoreInput) -> None:
    send_store(target, item)


@settings(max_examples=40, **DETERMINISTIC)  # type: ignore[arg-type]
@given(item=find_inputs())
def test_malformed_c_find_identifiers(target: FuzzTarget, item: FindInput) -> None:
    send_find(target, item)


@settings(max_examples=60, **DETERMINISTIC)  # type: ignore[arg-type]
@given(item=pdu_inputs())
def test_garbage_pdus_on_the_raw_socket(target: FuzzTarget, item: PduInput) -> None:
    send_pdu(target, item)


def test_cut_off_associate_requests_do_not_hold_the_server(tmp_path: Path) -> None:
    """A peer that sends part of an A-ASSOCIATE-RQ and hangs up is forgotten at once.

    (Before: the listener peeked at the unread bytes until the ACSE timeout, polling every 2 ms,
    and ``serve`` needed 5 s per such connection to stop.)
    """
    port = free_port()
    server = NodeProcess(init_home(tmp_path / "home", port), port=port, log_path=tmp_path / "serve.log", ready="echo",
                         start_timeout=30).start()
    try:
        for _ in range(4):
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(associate_rq(STORE_CONTEXTS)[:40])
        assert echo(port)
        time.sleep(0.3)
        started = time.monotonic()
        assert server.stop(timeout=30) == 0  # NodeProcess.stop returns serve's exit code
        assert time.monotonic() - started < 5, "serve took too long to stop"
    finally:
        server.stop()


def test_check_is_clean_after_all_inputs(target: FuzzTarget) -> None:
    assert target.total >= 150, "the fuzz tests above did not run"
    target.final_check()  # (failures of single inputs were reported by the tests above)
