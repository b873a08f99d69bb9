"""The admin's audit trail (filters and paging) and node health pages, with their JSON twins.

``/admin/audit`` filters by time range (days, as ``audit --since`` takes them), actor (a peer
name such as ``user:dr-wang`` or ``token:ohif``, or an AE title), action, outcome and study,
newest first, 50 a page; ``/api/admin/audit`` returns the same rows as ``audit --json`` (the
next page is named in the ``X-Next-Page`` header). ``/admin/health`` shows
``pacsnode.health.node_health``, which ``pacsnode status --json`` prints.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pacsnode.web.app import HttpError, _guard
from pacsnode.web.workspace_auth import require

if TYPE_CHECKING:
    from pacsnode.web.admin import Admin

PAGE_SIZE = 50
MAX_PAGE = 10_000
FILTERS = ("from", "until", "actor", "action", "outcome", "study")


def _day(text: str, name: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise HttpError(400, f"{name}: a day as YYYY-MM-DD") from None


def parse_filters(request: Request) -> tuple[dict[str, str], dict[str, Any], int]:
    """(the filters as typed, the AuditLog.page arguments, the page number) or HttpError 400."""
    q = request.query_params
    typed = {k: q.get(k, "").strip() for k in FILTERS}
    if any(len(v) > 128 or any(ord(c) < 32 for c in v) for v in typed.values()):
        raise HttpError(400, "filters are at most 128 printable characters")
    start, end = _day(typed["from"], "from"), _day(typed["until"], "until")
    page_text = q.get("page", "1")
    if not page_text.isdigit() or not 1 <= int(page_text) <= MAX_PAGE:
        raise HttpError(400, f"page: a number from 1 to {MAX_PAGE}")
    page = int(page_text)
    upto_text = q.get("upto", "")
    if upto_text and (not upto_text.isdigit() or len(upto_text) > 18):
        raise HttpError(400, "upto: the number the first page gave")
    args = {"since": start.isoformat() if start else "",
            "until": (end + timedelta(days=1)).isoformat() if end else "",  # the until day is included
            "actor": typed["actor"], "action": typed["action"], "outcome": typed["outcome"],
            "study_uid": typed["study"], "upto": int(upto_text or 0), "offset": (page - 1) * PAGE_SIZE,
            "limit": PAGE_SIZE + 1}
    return typed, args, page


class AuditPages:
    def __init__(self, admin: "Admin") -> None:
        self.admin = admin
        self.node = admin.node

    def _rows(self, request: Request) -> tuple[dict[str, str], list[dict[str, Any]], int, bool]:
        typed, args, page = parse_filters(request)
        args["upto"] = args["upto"] or self.node.audit.last_pk()  # later pages start from the same row
        typed["upto"] = str(args["upto"])
        events = self.node.audit.page(**args)
        return typed, [asdict(e) for e in events[:PAGE_SIZE]], page, len(events) > PAGE_SIZE

    def audit(self, request: Request) -> Response:
        from pacsnode.web.admin import ADMIN

        user = self.admin.ws.page_user(request, ADMIN)
        if isinstance(user, Response):
            return user
        try:
            typed, rows, page, more = self._rows(request)
        except HttpError as exc:
            return self.admin.ws.error_page(request, user, exc)
        self._audit_read(user.name, request, "audit", typed)
        kept = urlencode({k: v for k, v in typed.items() if v})  # with upto: the next page continues this one
        return self.admin.ws.render(request, "admin_audit.html", user, kind="audit", rows=rows, filters=typed,
                                    page=page, more=more, filters_qs=kept + "&" if kept else "")

    def api_audit(self, request: Request) -> Response:
        from pacsnode.web.admin import ADMIN, cli_json

        user = require(self.admin.web, request, ADMIN)
        typed, rows, page, more = self._rows(request)
        self._audit_read(user.name, request, "audit", typed)
        response = cli_json(rows)
        if more:
            response.headers["X-Next-Page"] = str(page + 1)
            response.headers["X-Audit-Upto"] = typed["upto"]  # pass as ?upto= with the next page
        return response

    def _audit_read(self, who: str, request: Request, page: str, filters: dict[str, str]) -> None:
        """Reading the trail is itself audited (who looked for what)."""
        self.node.web_events.admin_shown(who, page, filters, request.client.host if request.client else "")

    async def health(self, request: Request) -> Response:
        from pacsnode.web.admin import ADMIN

        user = await run_in_threadpool(self.admin.ws.page_user, request, ADMIN)
        if isinstance(user, Response):
            return user
        health = await run_in_threadpool(self._health)
        return self.admin.ws.render(request, "admin_health.html", user, kind="health", health=health)

    async def api_health(self, request: Request) -> Response:
        from pacsnode.web.admin import ADMIN, cli_json

        await run_in_threadpool(require, self.admin.web, request, ADMIN)
        return cli_json(await run_in_threadpool(self._health))

    def _health(self) -> dict[str, Any]:
        from pacsnode.health import node_health

        return node_health(self.node)


def audit_routes(admin: "Admin") -> list[Route]:
    pages = AuditPages(admin)
    g = _guard
    return [Route("/admin/audit", g(pages.audit), methods=["GET"]),
            Route("/api/admin/audit", g(pages.api_audit), methods=["GET"]),
            Route("/admin/health", g(pages.health), methods=["GET"]),
            Route("/api/admin/health", g(pages.api_health), methods=["GET"])]
