"""What DICOMweb keeps in the index: bearer tokens and the per-instance metadata built at ingest.

The only SQL the web side needs (STYLE: no SQL outside ``pacsnode/index/``). Tokens are stored
as the SHA-256 of the token (a token is 256 random bits: a fast hash is enough and a stolen
index gives nobody a usable token). Metadata rows are written by ``SqliteIndex.record_instance``
in the instance's own transaction; here they are only read.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from pacsnode.errors import NotFound, PacsnodeError
from pacsnode.index.schema import utc_now
from pacsnode.index.base import Index


@dataclass(frozen=True)
class TokenRecord:
    """One bearer token as ``token list`` shows it (never the token itself)."""

    name: str
    institution: str
    peer_name: str
    permissions: frozenset[str]
    created_at: str
    revoked_at: str

    @property
    def active(self) -> bool:
        return not self.revoked_at


@dataclass(frozen=True)
class InstanceRow:
    """One stored instance as WADO needs it: where it is and what DICOMweb built for it."""

    sop_instance_uid: str
    sop_class_uid: str
    series_uid: str
    study_uid: str
    transfer_syntax: str
    path: str
    size: int
    metadata: str  # DICOM JSON of the instance, "" when it predates migration 0010
    frames: str  # JSON frame table, "" when none


def _token(row: sqlite3.Row) -> TokenRecord:
    perms = frozenset(p for p in row["permissions"].split(",") if p)
    return TokenRecord(row["name"], row["institution"], row["peer_name"], perms, row["created_at"],
                       row["revoked_at"])


class WebStore:
    """Tokens and DICOMweb instance metadata over the node's SqliteIndex."""

    def __init__(self, index: Index) -> None:
        self.index = index

    # -- tokens --------------------------------------------------------------------------
    def add_token(self, name: str, token_sha256: str, institution: str, peer_name: str,
                  permissions: frozenset[str]) -> None:
        with self.index.write() as conn:
            if conn.execute("SELECT 1 FROM web_tokens WHERE name = ?", (name,)).fetchone():
                raise PacsnodeError(f"a token named {name!r} exists; revoke it or choose another name")
            conn.execute("INSERT INTO web_tokens (name, token_sha256, institution, peer_name, permissions, "
                         "created_at) VALUES (?,?,?,?,?,?)",
                         (name, token_sha256, institution, peer_name, ",".join(sorted(permissions)), utc_now()))

    def tokens(self) -> list[TokenRecord]:
        return [_token(r) for r in self.index.query("SELECT * FROM web_tokens ORDER BY name")]

    def token_by_hash(self, token_sha256: str) -> TokenRecord | None:
        rows = self.index.query("SELECT * FROM web_tokens WHERE token_sha256 = ?", (token_sha256,))
        return _token(rows[0]) if rows else None

    def revoke_token(self, name: str) -> None:
        with self.index.write() as conn:
            cursor = conn.execute("UPDATE web_tokens SET revoked_at = ? WHERE name = ? AND revoked_at = ''",
                                  (utc_now(), name))
            if cursor.rowcount == 0:
                known = conn.execute("SELECT revoked_at FROM web_tokens WHERE name = ?", (name,)).fetchone()
                raise NotFound(f"no active token named {name!r}" + (" (already revoked)" if known else ""))

    # -- users and sessions --------------------------------------------------------------
    def add_user(self, name: str, password_hash: str, institution: str, role: str) -> None:
        with self.index.write() as conn:
            if conn.execute("SELECT 1 FROM web_users WHERE name = ?", (name,)).fetchone():
                raise PacsnodeError(f"a user named {name!r} exists")
            conn.execute("INSERT INTO web_users (name, password_hash, institution, role, created_at) "
                         "VALUES (?,?,?,?,?)", (name, password_hash, institution, role, utc_now()))

    def user(self, name: str) -> sqlite3.Row | None:
        rows = self.index.query("SELECT * FROM web_users WHERE name = ? AND disabled_at = ''", (name,))
        return rows[0] if rows else None

    def users(self) -> list[dict[str, Any]]:
        return [{"name": r["name"], "institution": r["institution"], "role": r["role"],
                 "created_at": r["created_at"], "disabled_at": r["disabled_at"]}
                for r in self.index.query("SELECT * FROM web_users ORDER BY name")]

    def disable_user(self, name: str) -> None:
        with self.index.write() as conn:
            cursor = conn.execute("UPDATE web_users SET disabled_at = ? WHERE name = ? AND disabled_at = ''",
                                  (utc_now(), name))
            if cursor.rowcount == 0:
                raise NotFound(f"no active user named {name!r}")
            conn.execute("DELETE FROM web_sessions WHERE user_name = ?", (name,))

    def end_sessions_of(self, name: str) -> None:
        with self.index.write() as conn:
            conn.execute("DELETE FROM web_sessions WHERE user_name = ?", (name,))

    def set_password_hash(self, name: str, password_hash: str) -> None:
        with self.index.write() as conn:
            conn.execute("UPDATE web_users SET password_hash = ? WHERE name = ?", (password_hash, name))

    def add_session(self, session_sha256: str, user_name: str, expires_at: str) -> None:
        with self.index.write() as conn:
            conn.execute("DELETE FROM web_sessions WHERE expires_at < ?", (utc_now(),))
            conn.execute("INSERT INTO web_sessions (session_sha256, user_name, created_at, expires_at) "
                         "VALUES (?,?,?,?)", (session_sha256, user_name, utc_now(), expires_at))

    def session_user(self, session_sha256: str) -> sqlite3.Row | None:
        rows = self.index.query(
            "SELECT u.* FROM web_sessions s JOIN web_users u ON u.name = s.user_name "
            "WHERE s.session_sha256 = ? AND s.expires_at > ? AND u.disabled_at = ''", (session_sha256, utc_now()))
        return rows[0] if rows else None

    def end_session(self, session_sha256: str) -> None:
        with self.index.write() as conn:
            conn.execute("DELETE FROM web_sessions WHERE session_sha256 = ?", (session_sha256,))

    # -- instances -----------------------------------------------------------------------
    def instances(self, study_uid: str, series_uid: str | None = None,
                  sop_instance_uid: str | None = None) -> list[InstanceRow]:
        """Instances of one study (or series, or one instance), in series/instance number order."""
        sql = ("SELECT i.sop_instance_uid, i.sop_class_uid, se.series_uid, s.study_uid, i.transfer_syntax, i.path, "
               "i.size, COALESCE(m.metadata, ''), COALESCE(m.frames, '') FROM instances i "
               "JOIN series se ON se.pk = i.series_pk JOIN studies s ON s.pk = se.study_pk "
               "LEFT JOIN instance_metadata m ON m.sop_instance_uid = i.sop_instance_uid WHERE s.study_uid = ?")
        params: list[Any] = [study_uid]
        if series_uid is not None:
            sql += " AND se.series_uid = ?"
            params.append(series_uid)
        if sop_instance_uid is not None:
            sql += " AND i.sop_instance_uid = ?"
            params.append(sop_instance_uid)
        sql += " ORDER BY se.series_number, se.series_uid, i.instance_number, i.sop_instance_uid"
        return [InstanceRow(*tuple(r)) for r in self.index.query(sql, params)]

    def save_metadata(self, sop_instance_uid: str, metadata: str, frames: str) -> None:
        """Fill in the metadata of an instance indexed before migration 0010 (built once, then kept)."""
        with self.index.write() as conn:
            conn.execute("INSERT OR REPLACE INTO instance_metadata (sop_instance_uid, metadata, frames) "
                         "VALUES (?,?,?)", (sop_instance_uid, metadata, frames))

    # -- failed logins (shared by every worker) -------------------------------------------
    def claim_login_attempt(self, keys: tuple[str, ...], since: str, allowed: int) -> list[int] | None:
        """Count an attempt against each key before its password is checked, or None when a key
        already has ``allowed`` attempts since ``since`` (ISO UTC).

        Counting first, in one write transaction, is what makes the limit hold under parallel
        requests to several workers: a check-then-count would let every request in flight pass.
        Rows older than ``since`` are deleted here (the table stays small).
        """
        now = utc_now()
        with self.index.write() as conn:
            conn.execute("DELETE FROM web_login_failures WHERE at < ?", (since,))
            for key in keys:
                row = conn.execute("SELECT COUNT(*) FROM web_login_failures WHERE failure_key = ? AND at >= ?",
                                   (key, since)).fetchone()
                if int(row[0]) >= allowed:
                    return None
            claimed = []
            for key in keys:
                cursor = conn.execute("INSERT INTO web_login_failures (failure_key, at) VALUES (?, ?)", (key, now))
                claimed.append(int(cursor.lastrowid or 0))
            return claimed

    def forgive_login_attempt(self, claimed: list[int]) -> None:
        """A claimed attempt that succeeded is not a failure: its rows go."""
        with self.index.write() as conn:
            for pk in claimed:
                conn.execute("DELETE FROM web_login_failures WHERE pk = ?", (pk,))
