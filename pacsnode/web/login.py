"""The browser login: a form, a session cookie (Secure, HttpOnly, SameSite=Strict), logout.

The session authenticates reads only (``Web.caller`` refuses a cookie on anything but GET),
so no cross-site request can change data. Wrong passwords are audited and throttled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from pacsnode import accounts
from pacsnode.web import page_render
from pacsnode.web.app import SESSION_COOKIE, HttpError
from pacsnode.web.audit_throttle import AuditThrottle

if TYPE_CHECKING:
    from pacsnode.web.app import Web

MAX_LOGIN_BODY = 8192
_PAGE_HEADERS = {"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                 "Content-Security-Policy": "default-src 'none'; form-action 'self'; frame-ancestors 'none'"}


# Where a person lands after logging in: the page their work starts on. A viewer-only account
# (and any role without a page of its own) opens the viewer.
LANDING = {"physician": "/patients", "qc": "/qc", "programme": "/report", "admin": "/admin"}
# Pages a login may return to (?next= on the form's address): a fixed list, never a URL from the
# request, so the login form cannot be made into an open redirect.
RETURN_PAGES = frozenset({"/viewer/", *LANDING.values()})




class Login:
    """The login routes of one node's web service."""

    def __init__(self, web: "Web") -> None:
        self.web = web
        self.throttle = accounts.Throttle(web.store)
        self._refusals = AuditThrottle()

    def _refused(self, who: str, reason: str, host: str) -> None:
        """Audit a refusal that costs the client nothing (locked out, another origin, too large) at
        most once per address and reason per interval, with how many were not written: each is one
        request, and a flood of them must not become a flood of audit rows. A wrong password is
        always audited (the throttle allows a few per address and user)."""
        skipped = self._refusals.admit(host, reason)
        if skipped is not None:
            self.web.node.web_events.login_refused(who, reason, host, skipped)

    def form(self, request: Request) -> Response:
        """The login form in the user's language; a person already signed in goes on to their page."""
        from pacsnode.web.workspace_auth import session_user

        user = session_user(self.web, request)
        if user is not None:
            return RedirectResponse(LANDING.get(user.role, "/viewer/"), status_code=303, headers=_PAGE_HEADERS)
        return page_render.render(request, "login.html", None)

    async def submit(self, request: Request) -> Response:
        host = request.client.host if request.client else ""
        origin = request.headers.get("origin", "")
        refusal = None
        if origin and origin.split("://", 1)[-1] != request.headers.get("host", ""):
            refusal = HttpError(403, "login from another origin refused")  # a cross-site form (login CSRF)
        declared = request.headers.get("content-length", "")
        if refusal is None and (not declared.isdigit() or int(declared) > MAX_LOGIN_BODY):
            refusal = HttpError(413, "login form too large or without Content-Length")
        if refusal is not None:  # refused unread, and audited like every refusal (THREATS.md rule 10)
            await run_in_threadpool(self._refused, "", refusal.message, host)
            raise refusal
        form = await request.form(max_files=0, max_fields=4)
        name, password = str(form.get("username", "")), str(form.get("password", ""))
        browser = "text/html" in request.headers.get("accept", "")  # a form post, not a script
        back_to = request.query_params.get("next", "")  # the page that sent the person here (?next=, see viewer)
        try:
            return await run_in_threadpool(self._login, name, password, host, browser,
                                           back_to if back_to in RETURN_PAGES else "")
        except HttpError as exc:
            if not browser or exc.status not in (401, 429):
                raise
            # a person at the form sees why in their language, on the form, with the same status
            return page_render.render(request, "login.html", None, status=exc.status,
                                      error="login.wrong" if exc.status == 401 else "login.locked")

    def _login(self, name: str, password: str, host: str, browser: bool = False, back_to: str = "") -> Response:
        who = name[:64]
        claim = self.throttle.claim(f"user:{who}", f"host:{host}")
        if claim is None:
            self._refused(who, "too many failed logins", host)
            raise HttpError(429, "too many failed logins; try again later")
        if not accounts.verify(self.web.store, name, password):
            self.web.node.web_events.login_refused(who, "wrong user name or password", host)
            raise HttpError(401, "wrong user name or password")
        self.throttle.succeeded(claim)
        session_id = accounts.open_session(self.web.store, name)
        self.web.node.web_events.login_done(name, host)
        response: Response = Response("logged in\n", media_type="text/plain", headers=_PAGE_HEADERS)
        if browser:  # a person at the form goes on to the page of their role: a fixed local path (no open redirect)
            account = self.web.store.user(name)
            landing = back_to or LANDING.get(str(account["role"]) if account is not None else "", "/viewer/")
            response = RedirectResponse(landing, status_code=303, headers=_PAGE_HEADERS)
        response.set_cookie(SESSION_COOKIE, session_id, max_age=accounts.SESSION_HOURS * 3600, path="/",
                            secure=True, httponly=True, samesite="strict")
        return response

    async def logout(self, request: Request) -> Response:
        """End the session: a POST with this session's CSRF token (form field or X-CSRF-Token
        header), audited. Without the token it is refused (403, audited): a cross-site page
        must not be able to log a physician out in the middle of a decision."""
        from pacsnode.web.workspace_auth import CSRF_FIELD, CSRF_HEADER, check_csrf, check_size, session_user

        user = await run_in_threadpool(session_user, self.web, request)
        if user is None:
            response = Response("no session\n", media_type="text/plain", headers=_PAGE_HEADERS)
            response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
            return response
        presented = request.headers.get(CSRF_HEADER, "")
        if not presented and "form" in request.headers.get("content-type", ""):
            check_size(request)
            presented = str((await request.form(max_files=0, max_fields=4)).get(CSRF_FIELD, ""))
        await run_in_threadpool(check_csrf, self.web, request, user, presented)
        await run_in_threadpool(self._end, request, user.name)
        browser = "text/html" in request.headers.get("accept", "")
        response = (RedirectResponse("/login", status_code=303, headers=_PAGE_HEADERS) if browser else
                    Response("logged out\n", media_type="text/plain", headers=_PAGE_HEADERS))
        response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return response

    def _end(self, request: Request, name: str) -> None:
        self.web.store.end_session(accounts.digest(request.cookies.get(SESSION_COOKIE, "")))
        host = request.client.host if request.client else ""
        self.web.node.web_events.logout(name, host)
