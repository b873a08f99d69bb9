"""The admin pages (issue 15 item 6): peers, tokens, users, the audit trail and node health.

For the ``admin`` role of this node's institution only: anyone else gets 403 (audited by
``workspace_auth.require``). Each page has a JSON twin under ``/api/admin/`` returning what the
CLI's ``--json`` prints; changes go through ``admin_actions`` (the CLI's own functions), need
the session's CSRF token (a form field, or the ``X-CSRF-Token`` header for the JSON twin), and
are audited as ``web-admin`` with the admin's name, whether done or refused. A new token or a
generated password is shown once in the answer and never written to the audit.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from pacsnode import access_tokens, accounts
from pacsnode.errors import PacsnodeError
from pacsnode.model import ALL_PERMISSIONS
from pacsnode.web import admin_actions
from pacsnode.web.app import HttpError, Web, _guard
from pacsnode.web.workspace import Workspace
from pacsnode.web.workspace_auth import (CSRF_FIELD, WorkspaceUser, check_csrf, check_size, json_action,
                                         require)

ADMIN = ("admin",)
KINDS = tuple(admin_actions.ACTIONS)  # peers, tokens, users
JSON_TYPE = "application/json; charset=utf-8"


def cli_json(value: Any) -> Response:
    """JSON exactly as the CLI's ``--json`` prints it (same encoder), never cached."""
    from pacsnode.cli.output import to_json

    return Response(to_json(value), media_type=JSON_TYPE, headers={"Cache-Control": "no-store"})


class Admin:
    """The admin pages over the workspace's rendering and authentication."""

    def __init__(self, web: Web) -> None:
        self.web = web
        self.node = web.node
        self.ws = Workspace(web)

    def _kind(self, request: Request) -> str:
        kind = request.path_params.get("kind", "")
        if kind not in KINDS:
            raise HttpError(404, "no such admin page")
        return kind

    def _context(self, request: Request, kind: str) -> dict[str, Any]:
        peers = self.node.peers.list()
        context: dict[str, Any] = {"kind": kind, "rows": admin_actions.listing(self.node, kind),
                                   "institutions": self.node.known_institutions(), "peer_names": [p.name for p in peers],
                                   "peer_permissions": ALL_PERMISSIONS,
                                   "token_permissions": sorted(access_tokens.PERMISSIONS),
                                   "roles": list(accounts.ROLES), "edit": None, "done": "", "error": "",
                                   "secret": {}, "form": {}}
        wanted = request.query_params.get("edit", "")[:200]
        if kind == "peers" and wanted:
            context["edit"] = next((r for r in context["rows"] if r["name"] == wanted), None)
        return context

    # -- pages ---------------------------------------------------------------------------
    def home(self, request: Request) -> Response:
        user = self.ws.page_user(request, ADMIN)
        if isinstance(user, Response):
            return user
        return RedirectResponse("/admin/health", status_code=303)

    def page(self, request: Request) -> Response:
        kind = self._kind(request)
        user = self.ws.page_user(request, ADMIN)
        if isinstance(user, Response):
            return user
        return self.ws.render(request, f"admin_{kind}.html", user, **self._context(request, kind))

    async def submit(self, request: Request) -> Response:
        kind = self._kind(request)
        user = await run_in_threadpool(require, self.web, request, ADMIN)
        check_size(request)
        raw = await request.form(max_files=0, max_fields=40)
        check_csrf(self.web, request, user, str(raw.get(CSRF_FIELD, "")))
        fields: dict[str, Any] = {k: str(v)[:2000] for k, v in raw.items() if k != CSRF_FIELD}
        fields["permissions"] = ",".join(str(v)[:20] for v in raw.getlist("permissions")[:10])
        return await run_in_threadpool(self._submit_page, request, user, kind, fields)

    def _submit_page(self, request: Request, user: WorkspaceUser, kind: str, fields: dict[str, Any]) -> Response:
        try:
            result = self.act(request, user, kind, fields)
        except PacsnodeError as exc:
            context = self._context(request, kind)
            context.update(error=str(exc), form={k: v for k, v in fields.items() if k not in admin_actions.SECRETS})
            if kind == "peers" and fields.get("action") == "edit":
                context["edit"] = context["form"]
            return self.ws.render(request, f"admin_{kind}.html", user, status=400, **context)
        context = self._context(request, kind)
        context.update(done=f"{kind} {fields.get('action', '')} {fields.get('name', '')}",
                       secret={k: v for k, v in result.items() if k in admin_actions.SECRETS})
        return self.ws.render(request, f"admin_{kind}.html", user, **context)

    # -- JSON twins ----------------------------------------------------------------------
    def api_list(self, request: Request) -> Response:
        kind = self._kind(request)
        require(self.web, request, ADMIN)
        return cli_json(admin_actions.listing(self.node, kind))

    async def api_act(self, request: Request) -> Response:
        kind = self._kind(request)
        user, body = await json_action(self.web, request, ADMIN)
        try:
            result = await run_in_threadpool(self.act, request, user, kind, body)
        except PacsnodeError as exc:
            raise HttpError(400, str(exc)) from None
        return JSONResponse(result, headers={"Cache-Control": "no-store"})

    # -- the one place an admin's change happens -----------------------------------------
    def act(self, request: Request, user: WorkspaceUser, kind: str, fields: dict[str, Any]) -> dict[str, str]:
        """Run one action through the CLI's function; audited done or refused with the admin's name."""
        action = str(fields.get("action", ""))[:20]
        target = str(fields.get("name", ""))[:100]
        host = request.client.host if request.client else ""
        detail: dict[str, Any] = {"page": kind, "action": action, "target": target, "host": host}
        handler = admin_actions.ACTIONS[kind].get(action)
        try:
            if handler is None:
                raise PacsnodeError(f"action {action!r}: use one of {', '.join(admin_actions.ACTIONS[kind])}")
            result = handler(self.node, user.name, fields)
        except PacsnodeError as exc:
            self.node.web_events.admin_refused(user.name, detail, str(exc))
            raise
        shown = {k: v for k, v in result.items() if k not in admin_actions.SECRETS}
        self.node.web_events.admin_done(user.name, detail, shown)
        return result

    def api_session(self, request: Request) -> Response:
        """Who this session is and its CSRF token, for any logged-in user (a script logs out
        with it; a cross-site page cannot read this same-origin JSON)."""
        from pacsnode.web.workspace_auth import session_user

        user = session_user(self.web, request)
        if user is None:
            self.web.caller(request)  # audits the 401 and raises it
            raise HttpError(401, "authentication required")
        return JSONResponse({"name": user.name, "institution": user.institution, "role": user.role,
                             "csrf_token": user.csrf}, headers={"Cache-Control": "no-store"})


def routes(web: Web) -> list[Route]:
    """The admin routes, for ``create_app`` (additive: nothing else changes)."""
    from pacsnode.web.admin_audit import audit_routes

    admin = Admin(web)
    g = _guard
    return [*audit_routes(admin),
            Route("/admin", g(admin.home), methods=["GET"]),
            Route("/api/session", g(admin.api_session), methods=["GET"]),
            Route("/admin/{kind:str}", g(admin.page), methods=["GET"]),
            Route("/admin/{kind:str}", g(admin.submit), methods=["POST"]),
            Route("/api/admin/{kind:str}", g(admin.api_list), methods=["GET"]),
            Route("/api/admin/{kind:str}", g(admin.api_act), methods=["POST"])]
