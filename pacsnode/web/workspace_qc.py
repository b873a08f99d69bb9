"""QC review in the workspace (issue 15 item 4), for ``qc`` users of this node's institution.

The queue by status (``QcDesk.listing``, what ``qc list --json`` prints), a study's checks
(``qc show --json``) with its contact sheet (``QcDesk.preview``, as ``qc preview``), and
accept with a grade / reject with a reason (113001 ...) / restore through the same ``QcDesk``
methods as the CLI, with the session's user as the reviewer. Every POST needs the CSRF token.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pacsnode.errors import NotFound, PacsnodeError
from pacsnode.web.app import HttpError, _guard
from pacsnode.web.workspace_auth import CSRF_FIELD, PageError, WorkspaceUser, check_csrf, check_size, require

if TYPE_CHECKING:
    from pacsnode.web.workspace import Workspace

QC = ("qc",)
STATUSES = ("pending", "needs-fix", "accepted", "rejected")
REJECT_REASONS = ("113001", "113037", "113038", "113039", "needs-fix")
ACTIONS = ("accept", "reject", "restore")


class QcPages:
    """The QC reviewer's pages over the workspace's rendering and authentication."""

    def __init__(self, ws: "Workspace") -> None:
        self.ws = ws
        self.node = ws.node

    def _status(self, request: Request) -> str | None:
        status = request.query_params.get("status", "pending")
        if status not in (*STATUSES, "all"):
            raise HttpError(400, f"status: use one of {', '.join(STATUSES)} or all")
        return None if status == "all" else status

    def queue(self, request: Request) -> Response:
        user = self.ws.page_user(request, QC)
        if isinstance(user, Response):
            return user
        status = self._status(request)
        return self.ws.render(request, "qc.html", user, rows=self.node.qc.listing(status), current=status or "all",
                              statuses=STATUSES)

    def api_queue(self, request: Request) -> Response:
        require(self.ws.web, request, QC)
        return JSONResponse(self.node.qc.listing(self._status(request)))

    def _show(self, uid: str) -> dict[str, Any]:
        """What ``qc show --json`` prints; HttpError 404 for a study not in this node."""
        try:
            self.node.study(uid)
        except (NotFound, PacsnodeError):
            raise PageError(404, "no such study in this node", "error.no_study") from None
        return self.node.regional_store.qc_status(uid) or {"status": "pending", "outcomes": []}

    def study(self, request: Request) -> Response:
        user = self.ws.page_user(request, QC)
        if isinstance(user, Response):
            return user
        return self._study_page(request, user, request.query_params.get("study", "").strip()[:64], "", "")

    def _study_page(self, request: Request, user: WorkspaceUser, uid: str, done: str, error: str,
                    status: int = 200) -> Response:
        try:
            shown = self._show(uid)
        except HttpError as exc:
            return self.ws.error_page(request, user, exc)
        return self.ws.render(request, "qc_study.html", user, status=status, study_uid=uid, qc=shown, done=done,
                              error=error, reasons=REJECT_REASONS)

    def api_study(self, request: Request) -> Response:
        require(self.ws.web, request, QC)
        return JSONResponse(self._show(request.query_params.get("study", "").strip()[:64]))

    def preview(self, request: Request) -> Response:
        """The contact sheet PNG (one tile per series), rendered on demand like ``qc preview``."""
        require(self.ws.web, request, QC)
        uid = request.query_params.get("study", "").strip()[:64]
        self._show(uid)
        with tempfile.TemporaryDirectory(prefix="pacsnode-qc-") as folder:
            out = Path(folder) / "sheet.png"
            try:
                self.node.qc.preview(uid, out, 192)
            except (PacsnodeError, ValueError, OSError) as exc:
                raise HttpError(404, f"no preview: {exc}") from None
            body = out.read_bytes()
        return Response(body, media_type="image/png", headers={"Cache-Control": "no-store"})

    async def submit(self, request: Request) -> Response:
        user = await run_in_threadpool(require, self.ws.web, request, QC)
        check_size(request)
        raw = await request.form(max_files=0, max_fields=10)
        check_csrf(self.ws.web, request, user, str(raw.get(CSRF_FIELD, "")))
        form = {k: str(raw.get(k, ""))[:500] for k in ("study_uid", "action", "grade", "reason", "note")}
        return await run_in_threadpool(self._decide, request, user, form)

    def _decide(self, request: Request, user: WorkspaceUser, form: dict[str, str]) -> Response:
        uid, action = form["study_uid"].strip()[:64], form["action"]
        try:
            self._show(uid)
            if action == "accept":
                decision = self.node.qc.accept(uid, form["grade"].strip(), user.name, form["note"])
            elif action == "reject":
                decision = self.node.qc.reject(uid, form["reason"].strip() or "113001", user.name, form["note"])
            elif action == "restore":
                decision = self.node.qc.restore(uid, user.name, form["note"])
            else:
                raise PacsnodeError(f"action {action[:20]!r}: use one of {', '.join(ACTIONS)}")
        except HttpError as exc:
            return self.ws.error_page(request, user, exc)
        except PacsnodeError as exc:
            self.node.web_events.qc_refused(user.name, uid, action, str(exc))
            return self._study_page(request, user, uid, "", str(exc), status=400)
        self.node.web_events.qc_decided(user.name, uid, action, decision.status.value, form["grade"], form["reason"])
        return self._study_page(request, user, uid, decision.status.value, "")


def qc_routes(ws: "Workspace") -> list[Route]:
    pages = QcPages(ws)
    g = _guard
    return [Route("/qc", g(pages.queue), methods=["GET"]), Route("/api/qc", g(pages.api_queue), methods=["GET"]),
            Route("/qc/study", g(pages.study), methods=["GET"]), Route("/qc/study", g(pages.submit), methods=["POST"]),
            Route("/api/qc/study", g(pages.api_study), methods=["GET"]),
            Route("/qc/preview.png", g(pages.preview), methods=["GET"])]
