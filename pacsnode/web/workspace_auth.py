"""Who is at the workspace, and whether a form really comes from our page (CSRF).

A workspace page authenticates with the login's session cookie. ``Web.caller`` lets a cookie
read only; a workspace form may change data, so every POST must also carry a CSRF token that
only our own page could have put there. The token is derived from the session id
(SHA-256 of a fixed label and the id): the session id is 256 secret bits in an HttpOnly
cookie, the index keeps only another hash of it, so neither a cross-site page nor a stolen
index can compute the token. The same value works in every worker process (nothing to share).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from pacsnode import accounts
from pacsnode.model import Caller
from pacsnode.web.app import SESSION_COOKIE, HttpError, Web

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
MAX_FORM_BODY = 16384


class PageError(HttpError):
    """An HttpError a page shows in the user's language: ``message_id`` names the catalog's words,
    the English message stays the JSON twin's answer and the technical detail under them."""

    def __init__(self, status: int, message: str, message_id: str) -> None:
        super().__init__(status, message)
        self.message_id = message_id


@dataclass(frozen=True)
class WorkspaceUser:
    """A logged-in person: account name, institution and role, the Caller the door decides for,
    and the CSRF token of this session."""

    name: str
    institution: str
    role: str
    caller: Caller
    csrf: str


def csrf_for(session_id: str) -> str:
    return hashlib.sha256(b"pacsnode-csrf\0" + session_id.encode("ascii", "replace")).hexdigest()


def session_user(web: Web, request: Request) -> WorkspaceUser | None:
    """The user of the request's session cookie, or None (no, forged, expired or disabled)."""
    cookie = request.cookies.get(SESSION_COOKIE, "")
    if not cookie or len(cookie) > 100:
        return None
    row = web.store.session_user(accounts.digest(cookie))
    if row is None:
        return None
    host = request.client.host if request.client else ""
    caller = Caller.web_user(row["name"], row["institution"], row["role"], accounts.ROLES.get(row["role"], frozenset()),
                             host)
    return WorkspaceUser(row["name"], row["institution"], row["role"], caller, csrf_for(cookie))


def audit_refusal(web: Web, request: Request, who: str, reason: str, study_uid: str = "") -> None:
    host = request.client.host if request.client else ""
    web.node.web_events.workspace_refused(who, reason, host, request.method, request.url.path, study_uid)


def require(web: Web, request: Request, roles: tuple[str, ...]) -> WorkspaceUser:
    """The session's user if its role is one of ``roles`` and it acts for this node's
    institution; else HttpError 401/403, audited.

    The workspace's advice and decisions are those of this node's institution (the priors
    engine computes advice for it and a decision is recorded in its name), so a user of
    another institution has no workspace here: it reads through DICOMweb and the viewer,
    where the door decides study by study.
    """
    user = session_user(web, request)
    if user is None:
        web.caller(request)  # audits the 401 (throttled) and raises it
        raise HttpError(401, "authentication required")
    if user.role not in roles:
        audit_refusal(web, request, user.name, f"role {user.role} may not use this page")
        raise PageError(403, f"the role {user.role} may not use this page", "error.role")
    if user.institution != web.node.config.institution:
        audit_refusal(web, request, user.name, f"institution {user.institution} has no workspace on this node")
        raise PageError(403, "this workspace decides for another institution", "error.institution")
    return user


def check_csrf(web: Web, request: Request, user: WorkspaceUser, presented: str) -> None:
    """Refuse (403, audited) a change without this session's CSRF token or from another origin."""
    origin = request.headers.get("origin", "")
    if origin and origin.split("://", 1)[-1] != request.headers.get("host", ""):
        audit_refusal(web, request, user.name, "request from another origin")
        raise PageError(403, "request from another origin refused", "error.origin")
    if not presented or not hmac.compare_digest(presented.encode("ascii", "replace"), user.csrf.encode("ascii")):
        audit_refusal(web, request, user.name, "missing or wrong CSRF token")
        raise PageError(403, "missing or wrong CSRF token; reload the page and submit again", "error.csrf")


def check_size(request: Request) -> None:
    declared = request.headers.get("content-length", "")
    if not declared.isdigit() or int(declared) > MAX_FORM_BODY:
        raise HttpError(413, "form too large or without Content-Length")


async def json_action(web: Web, request: Request, roles: tuple[str, ...]) -> tuple[WorkspaceUser, dict[str, Any]]:
    """The user and JSON object body of an ``/api/`` change: the role, the size and the CSRF
    header are checked before the body is read (one door for every JSON twin of a form)."""
    user = await run_in_threadpool(require, web, request, roles)
    check_size(request)
    check_csrf(web, request, user, request.headers.get(CSRF_HEADER, ""))
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise HttpError(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise HttpError(400, "the body is a JSON object")
    return user, body
