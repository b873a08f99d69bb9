"""Prometheus ``/metrics`` (prometheus-client; multiprocess mode when ``serve`` runs workers).

What is counted here: HTTP requests by route and status with their latency, instances stored
by result and bytes (every store, DIMSE C-STORE and STOW-RS alike, through a ``Node.after_store``
hook), and at scrape time the free space of the storage filesystem and the number of studies.
DIMSE association and C-FIND/C-MOVE latency metrics belong in ``pacsnode/dimse`` and are not
here yet.

Multiprocess mode: ``serve`` calls ``metrics_dir.prepare(home)`` before anything imports
prometheus_client, so that every worker (they inherit the environment) writes its samples
under ``<home>/metrics`` and any worker's ``/metrics`` answers for all of them.
"""

from __future__ import annotations

import os
import time
from typing import Any, Iterator

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram,
                               generate_latest, multiprocess)
from prometheus_client.core import GaugeMetricFamily

from pacsnode.web.metrics_dir import ENV

HTTP_REQUESTS = Counter("pacsnode_http_requests_total", "HTTP requests answered", ["route", "method", "status"])
HTTP_SECONDS = Histogram("pacsnode_http_request_seconds", "HTTP request latency", ["route"])
STORED = Counter("pacsnode_instances_stored_total", "Instances stored (C-STORE, STOW-RS, import)", ["result"])


class NodeCollector:
    """Values read at scrape time: storage free bytes, studies indexed."""

    def __init__(self, node: Any) -> None:
        self.node = node

    def collect(self) -> Iterator[GaugeMetricFamily]:
        free_bytes = self.node.storage.free_bytes()  # None on S3: the bucket has no "free"
        if free_bytes is not None:
            free = GaugeMetricFamily("pacsnode_storage_free_bytes", "Free bytes on the storage filesystem")
            free.add_metric([], free_bytes)
            yield free
        studies = GaugeMetricFamily("pacsnode_studies", "Studies in the index")
        studies.add_metric([], self.node.index.study_count())
        yield studies


def on_store(outcome: Any, _facts: Any) -> None:
    """A ``Node.after_store`` hook counting what was stored, by result."""
    STORED.labels(outcome.result.value).inc()


def exposition(node: Any) -> tuple[bytes, str]:
    registry = CollectorRegistry()
    if os.environ.get(ENV):
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY
        registry = REGISTRY
    extra = CollectorRegistry()
    extra.register(NodeCollector(node))
    from pacsnode.web.node_metrics import QcCollector

    extra.register(QcCollector(node))
    return generate_latest(registry) + generate_latest(extra), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Pure ASGI: counts each HTTP request by the endpoint that answered it (bounded labels)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            endpoint = scope.get("endpoint")
            route = getattr(endpoint, "__name__", "unmatched") if endpoint else "unmatched"
            count, seconds = children(route, scope.get("method", ""), status["code"])
            count.inc()
            seconds.observe(time.perf_counter() - started)


_CHILDREN: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def children(route: str, method: str, status: int) -> tuple[Any, Any]:
    """The labelled counter and histogram of a route, kept: ``labels()`` took a tenth of a frame request's
    own time. Bounded: route names are the endpoints', methods and statuses few (a client's odd method
    is one more entry; past 1000 the memory starts over)."""
    key = (route, method, status)
    found = _CHILDREN.get(key)
    if found is None:
        if len(_CHILDREN) >= 1000:
            _CHILDREN.clear()
        found = _CHILDREN[key] = (HTTP_REQUESTS.labels(route, method, str(status)), HTTP_SECONDS.labels(route))
    return found
