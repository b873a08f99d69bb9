"""Writes at ingest that follow a stored instance into its own index transaction.

Who delivered the copy (provenance: recognition trusts a producer only as far as this vouches
for it) and any kept IOCM rejection note that names the instance. Both run inside the store's
transaction so that an instance is never visible, even for a moment, without them.
"""

from __future__ import annotations

import sqlite3

from pacsnode.index import rejections
from pacsnode.model import Provenance


def record_delivery(conn: sqlite3.Connection, instance_pk: int, provenance: Provenance | None) -> None:
    """Record who delivered this copy, then apply any kept rejection note that names it."""
    if provenance is not None:
        conn.execute("UPDATE instances SET delivered_by=?, delivered_peer=?, delivered_institution=? WHERE pk=?",
                     (provenance.kind.value, provenance.peer or provenance.aet, provenance.institution,
                      instance_pk))
    rejections.apply_on_arrival(conn, instance_pk)
