"""Prometheus metrics of the node's services, fed by ``Node.observers`` (``pacsnode.observe``).

DIMSE and DICOMweb alike: associations identified (registered peer or nobody), stores by
result with bytes and latency (C-STORE, STOW-RS and import share ``Node.store_file``), C-FIND
(and QIDO-RS) and C-MOVE/C-GET (and WADO-RS) latency by outcome, studies the recognition rules
withheld from a caller by reason, and at scrape time the QC status of the studies. Labels are
bounded: statuses are a handful of fixed words, access reasons come from the rule engine's fixed
reason codes, never from the caller's input.

Latency of a C-MOVE/C-GET here is the service layer's part (decide access, locate the files);
the sub-operations are the DIMSE engine's and are not timed here.
"""

from __future__ import annotations

from typing import Any, Iterator

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from pacsnode.observe import Event

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

ASSOCIATIONS = Counter("pacsnode_dimse_associations_total", "DIMSE associations by who the caller is", ["caller"])
STORES = Counter("pacsnode_store_total", "Instances offered to the store path by result", ["status"])
STORE_BYTES = Counter("pacsnode_store_bytes_total", "Bytes of instances stored (stored or replaced)")
STORE_SECONDS = Histogram("pacsnode_store_seconds", "Store latency by result", ["status"], buckets=LATENCY_BUCKETS)
SERVICE_SECONDS = Histogram("pacsnode_service_seconds", "Find/move/get latency in the service layer",
                            ["service", "status"], buckets=LATENCY_BUCKETS)
WITHHELD = Counter("pacsnode_recognition_withheld_studies_total",
                   "Studies the recognition/access rules withheld from a caller, by reason", ["reason"])


def observe(event: Event) -> None:
    """The ``Node.observers`` entry that turns service events into Prometheus samples."""
    if event.kind == "association":
        ASSOCIATIONS.labels(event.status).inc()
    elif event.kind == "store":
        STORES.labels(event.status).inc()
        STORE_SECONDS.labels(event.status).observe(event.seconds)
        if event.size:
            STORE_BYTES.inc(event.size)
    elif event.kind in ("find", "move", "get"):
        SERVICE_SECONDS.labels(event.kind, event.status).observe(event.seconds)
    elif event.kind == "withheld":
        WITHHELD.labels(event.status[:40]).inc(event.count)


def install(node: Any) -> None:
    """Watch ``node`` (once: a second app on the same node must not count twice)."""
    if observe not in node.observers:
        node.observers.append(observe)


class QcCollector:
    """At scrape time: studies by QC status (read through the QC desk, no SQL here)."""

    def __init__(self, node: Any) -> None:
        self.node = node

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("pacsnode_qc_studies", "Studies by QC status", labels=["status"])
        counts: dict[str, int] = {}
        for row in self.node.qc.listing():
            status = str(row.get("status", "") or "none")
            counts[status] = counts.get(status, 0) + 1
        for status, count in sorted(counts.items()):
            family.add_metric([status], count)
        yield family
