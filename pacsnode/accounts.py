"""People who log in to the web side: accounts (argon2id), sessions, and the Caller they become.

A service, not a page: ``pacsnode user ...``, ``init`` (the first admin), the admin pages and
the login all call these functions, and account changes are audited here (issue 13 item 7: no
adapter records its own events). A minimal account model (the physician workspace builds the
full one): a name, an institution and a role. Passwords are hashed with argon2-cffi's
``PasswordHasher`` (argon2id, its maintained defaults). A session id is 256 random bits handed
to the browser in a cookie; the index keeps its SHA-256 and an expiry. Failed logins are
counted per user name and per address, and refused for a while once too many (the login
audits that through ``node.web_events``).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta, timezone
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from pacsnode.errors import ConfigError
from pacsnode.index.web_store import WebStore
from pacsnode.model import Caller
from pacsnode.node import Node
from pacsnode.access_tokens import NAME_PATTERN

ROLES: dict[str, frozenset[str]] = {  # what each role may do over DICOMweb
    "admin": frozenset({"find", "get", "store", "metrics"}),
    "physician": frozenset({"find", "get"}),
    "viewer": frozenset({"find", "get"}),
    "qc": frozenset({"find", "get"}),  # QC staff review studies (issue 15)
    "programme": frozenset(),  # the programme office reads reports, not images
}
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
SESSION_HOURS = 8
FAILURES_ALLOWED = 5
FAILURE_WINDOW_S = 900.0
_HASHER = PasswordHasher()
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))  # an unknown user costs the same time as a known one


def add(node: Node, name: str, institution: str, role: str, password: str) -> None:
    """Create an account; the password is hashed here and never stored or logged in clear."""
    if not NAME_PATTERN.match(name):
        raise ConfigError(f"user name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
    if role not in ROLES:
        raise ConfigError(f"--role {role!r}: use one of {', '.join(ROLES)}")
    if not institution:
        raise ConfigError("--institution is required: a user acts for one institution")
    node.require_known_institution(institution, "--institution")
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ConfigError(f"the password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    WebStore(node.index).add_user(name, _HASHER.hash(password), institution, role)
    node.audit.record("user-add", "done", peer_name=f"user:{name}", detail={"institution": institution, "role": role})


class Throttle:
    """Failed logins per key (user name, address) in a sliding window, counted in the index.

    Kept in the index, not in the process: with ``serve --workers N`` each worker takes logins,
    and a per-process count gave an attacker N x FAILURES_ALLOWED tries. An attempt is counted
    before its password is checked and forgiven when it succeeds (``WebStore.claim_login_attempt``).
    """

    def __init__(self, store: WebStore) -> None:
        self.store = store

    def claim(self, *keys: str) -> list[int] | None:
        """The attempt's claim, or None when one of ``keys`` is locked out."""
        since = (datetime.now(timezone.utc) - timedelta(seconds=FAILURE_WINDOW_S)).isoformat(timespec="microseconds")
        return self.store.claim_login_attempt(tuple(k[:200] for k in keys), since, FAILURES_ALLOWED)

    def succeeded(self, claim: list[int]) -> None:
        self.store.forgive_login_attempt(claim)


def listing(node: Node) -> list[dict[str, Any]]:
    """Every user, without password hashes (``pacsnode user list``)."""
    return WebStore(node.index).users()


def verify(store: WebStore, name: str, password: str) -> bool:
    """Whether ``password`` is ``name``'s; the same work whether or not the user exists."""
    row = store.user(name) if NAME_PATTERN.match(name) else None
    try:
        _HASHER.verify(row["password_hash"] if row else _DUMMY_HASH, password[:MAX_PASSWORD])
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    if row is None:
        return False
    if _HASHER.check_needs_rehash(row["password_hash"]):
        store.set_password_hash(name, _HASHER.hash(password))
    return True


def digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("ascii", "replace")).hexdigest()


def open_session(store: WebStore, name: str) -> str:
    session_id = secrets.token_urlsafe(32)
    expires = datetime.now(timezone.utc) + timedelta(hours=SESSION_HOURS)
    store.add_session(digest(session_id), name, expires.isoformat(timespec="microseconds"))
    return session_id


def session_caller(store: WebStore, session_id: str, host: str = "") -> Caller | None:
    if not session_id or len(session_id) > 100:
        return None
    row = store.session_user(digest(session_id))
    if row is None:
        return None
    return Caller.web_user(row["name"], row["institution"], row["role"], ROLES.get(row["role"], frozenset()), host)


def disable(node: Node, name: str) -> None:
    """Disable an account: its sessions stop working at once (``session_user`` checks), audited."""
    WebStore(node.index).disable_user(name)
    node.audit.record("user-disable", "done", peer_name=f"user:{name}")


def set_password(node: Node, name: str, password: str) -> None:
    """Replace a password (hashed here) and end the user's sessions, audited."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ConfigError(f"the password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    store = WebStore(node.index)
    if store.user(name) is None:
        from pacsnode.errors import NotFound
        raise NotFound(f"no active user named {name!r}")
    store.set_password_hash(name, _HASHER.hash(password))
    store.end_sessions_of(name)
    node.audit.record("user-passwd", "done", peer_name=f"user:{name}")


FIRST_ADMIN = "admin"


def first_admin(node: Node, institution: str) -> tuple[str, str] | None:
    """Create the node's first ``admin`` account with a generated password, once.

    ``init`` never prompts (scripts and tests run it), so the password is generated here and
    returned for the caller to print once; only its argon2 hash is stored. Returns None when an
    active admin already exists (``init --force`` must not reset a password someone uses). When
    the name ``admin`` is taken by another role or a disabled account, ``admin-2``, ``admin-3``…
    is used instead of touching it.
    """
    store = WebStore(node.index)
    accounts = store.users()
    if any(a["role"] == "admin" and not a["disabled_at"] for a in accounts):
        return None
    taken = {a["name"] for a in accounts}
    name = next(n for n in (FIRST_ADMIN, *(f"{FIRST_ADMIN}-{i}" for i in range(2, len(taken) + 3)))
                if n not in taken)
    password = secrets.token_urlsafe(18)  # 24 characters, 144 bits
    add(node, name, institution, "admin", password)
    return name, password
