"""Bearer tokens for machine clients: issue, list, revoke, and turn a presented token into a Caller.

A service, not a page: ``pacsnode token ...``, the admin pages and every DICOMweb request
(``web/app.py``) call these functions; issuing and revoking are audited here. A token is 32
random bytes (``secrets``), shown once; the index keeps only its SHA-256. A token of another
institution is decided like a registered peer of that institution (``Caller.web_token``), so
it needs patient context and a relationship exactly as on DIMSE.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from pacsnode.errors import ConfigError
from pacsnode.index.web_store import TokenRecord, WebStore
from pacsnode.model import Caller
from pacsnode.node import Node

TOKEN_PREFIX = "pn_"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
PERMISSIONS = frozenset({"find", "get", "store", "metrics"})  # metrics: read /metrics (operations)
TOKEN_PATTERN = re.compile(r"^pn_[A-Za-z0-9_-]{43}$")


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def parse_permissions(text: str) -> frozenset[str]:
    """``find,get`` → frozenset; an unknown word is refused (a typo must not widen or narrow silently)."""
    words = frozenset(w.strip() for w in text.split(",") if w.strip())
    unknown = words - PERMISSIONS
    if not words or unknown:
        raise ConfigError(f"--permissions {text!r}: use a comma list of {', '.join(sorted(PERMISSIONS))}")
    return words


def create(node: Node, name: str, institution: str, peer_name: str = "",
           permissions: frozenset[str] = frozenset({"find", "get"})) -> str:
    """Issue a token (returned once, never stored in clear)."""
    if not NAME_PATTERN.match(name):
        raise ConfigError(f"token name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
    if peer_name:
        peer = node.peers.get(peer_name)
        if institution and peer.institution and institution != peer.institution:
            raise ConfigError(f"--institution {institution!r} differs from peer {peer_name!r}'s "
                              f"institution {peer.institution!r}")
        institution = institution or peer.institution
    if not institution:
        raise ConfigError("--institution is required: a token acts for one institution")
    node.require_known_institution(institution, "--institution")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    WebStore(node.index).add_token(name, digest(token), institution, peer_name, permissions)
    node.audit.record("token-create", "done", peer_name=f"token:{name}",
                      detail={"institution": institution, "peer": peer_name, "permissions": sorted(permissions)})
    return token


def revoke(node: Node, name: str) -> None:
    WebStore(node.index).revoke_token(name)
    node.audit.record("token-revoke", "done", peer_name=f"token:{name}")


def listing(node: Node) -> list[TokenRecord]:
    return WebStore(node.index).tokens()


def rows(node: Node) -> list[dict[str, str]]:
    """Tokens as ``token list --json`` prints them (and ``/api/admin/tokens`` returns them)."""
    return [{"name": t.name, "institution": t.institution, "peer": t.peer_name,
             "permissions": ",".join(sorted(t.permissions)), "created_at": t.created_at,
             "revoked_at": t.revoked_at} for t in listing(node)]


def caller_for(node: Node, presented: str, host: str = "") -> tuple[Caller | None, str, str]:
    """(Caller, token name, why refused) for the token an HTTP client presented."""
    if not TOKEN_PATTERN.match(presented):
        return None, "", "malformed bearer token"
    record = WebStore(node.index).token_by_hash(digest(presented))
    if record is None:  # looked up by digest: no timing leak about the token itself
        return None, "", "unknown bearer token"
    if not record.active:
        return None, record.name, f"token {record.name} was revoked"
    peer = None
    if record.peer_name:
        try:
            peer = node.peers.get(record.peer_name)
        except Exception:  # the peer was removed: its tokens act for nobody
            return None, record.name, f"token {record.name}: peer {record.peer_name} is no longer registered"
    return Caller.web_token(record.name, record.institution, record.permissions, peer=peer, host=host), record.name, ""
