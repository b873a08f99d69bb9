"""The registry of peers (other nodes, modalities, workstations), kept in the index.

Kept in the index rather than pacsnode.toml so that ``peer add`` takes effect on a running
node without a restart: the server looks peers up per association.
"""

from __future__ import annotations

import builtins
import sqlite3

from pacsnode.errors import PacsnodeError, PeerNotFound
from pacsnode.index.base import Index
from pacsnode.model import ALL_PERMISSIONS, Peer

__all__ = ["ALL_PERMISSIONS", "PeerRegistry"]


def _peer(row: sqlite3.Row) -> Peer:
    permissions = frozenset(p for p in row["permissions"].split(",") if p)
    return Peer(name=row["name"], aet=row["aet"], host=row["host"], port=int(row["port"]),
                institution=row["institution"], permissions=permissions, check_host=bool(row["check_host"]),
                tls=bool(row["tls"]), cert_fingerprint=row["cert_fingerprint"], cert_subject=row["cert_subject"])


class PeerRegistry:
    """CRUD on the ``peers`` table."""

    def __init__(self, index: Index) -> None:
        self.index = index

    def add(self, peer: Peer, replace: bool = False) -> None:
        unknown = set(peer.permissions) - set(ALL_PERMISSIONS)
        if unknown:
            raise PacsnodeError(f"unknown permission(s) {', '.join(sorted(unknown))}; use {', '.join(ALL_PERMISSIONS)}")
        with self.index.write() as conn:
            exists = conn.execute("SELECT 1 FROM peers WHERE name=?", (peer.name,)).fetchone()
            if exists and not replace:
                raise PacsnodeError(f"peer {peer.name!r} already exists; remove it first or use --replace")
            twin = conn.execute("SELECT name FROM peers WHERE aet=? AND name<>? ORDER BY name",
                                (peer.aet, peer.name)).fetchone()
            if twin:  # one AE title, one peer: otherwise a second registration inherits the first's rights
                raise PacsnodeError(f"AE title {peer.aet!r} is already registered for peer {twin['name']!r}; "
                                    "AE titles are unique among peers")
            conn.execute(
                "INSERT OR REPLACE INTO peers (name, aet, host, port, institution, permissions, check_host, tls, "
                "cert_fingerprint, cert_subject) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (peer.name, peer.aet, peer.host, peer.port, peer.institution,
                 ",".join(p for p in ALL_PERMISSIONS if p in peer.permissions), int(peer.check_host), int(peer.tls),
                 peer.cert_fingerprint, peer.cert_subject))

    def remove(self, name: str) -> None:
        with self.index.write() as conn:
            if conn.execute("DELETE FROM peers WHERE name=?", (name,)).rowcount == 0:
                raise PeerNotFound(f"no peer named {name!r}; see: pacsnode peer list")

    def list(self) -> list[Peer]:
        return [_peer(r) for r in self.index.query("SELECT * FROM peers ORDER BY name")]

    def get(self, name: str) -> Peer:
        rows = self.index.query("SELECT * FROM peers WHERE name=?", (name,))
        if not rows:
            raise PeerNotFound(f"no peer named {name!r}; see: pacsnode peer list")
        return _peer(rows[0])

    def by_aet(self, aet: str) -> Peer | None:
        """The peer with this AE title; None when there is none, or several (an index from before
        AE titles were unique: ambiguous means nobody)."""
        found = self.all_by_aet(aet)
        return found[0] if len(found) == 1 else None

    def all_by_aet(self, aet: str) -> builtins.list[Peer]:  # ``list`` here is the method above
        """Every peer registered with exactly this AE title (leading/trailing spaces ignored)."""
        return [_peer(r) for r in self.index.query("SELECT * FROM peers WHERE aet=? ORDER BY name", (aet.strip(" "),))]
