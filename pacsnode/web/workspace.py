"""The recognition workspace (issue 15): the physician's path in the browser.

``/patients`` shows a patient's priors across the region from the same engine as
``pacsnode priors`` (``gather_priors``: every peer in parallel plus the local index), with the
per-peer status; ``/decide`` records a decision through the same ``PhysicianDesk.decide`` as
``pacsnode recognition decide`` (same validation, append-only, audited). Each page has a JSON
twin under ``/api/``. Pages are server-rendered Jinja2 (autoescaped) with the strings in
``pacsnode.web.i18n``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from pacsnode.errors import NotFound, RecognitionError
from pacsnode.recognition import REASON_CODES, SUGGESTED_REASON, DecisionInput
from pacsnode.recognition.decisions import CONSENTS, INFORMED_HOW, INFORMED_PARTIES, hidden_character
from pacsnode.web import i18n, page_render
from pacsnode.web.app import HttpError, Web, _guard
from pacsnode.web.workspace_auth import (CSRF_FIELD, PageError, WorkspaceUser, audit_refusal, check_csrf,
                                         check_size, json_action, require)

PHYSICIAN = ("physician",)
PEER_TIMEOUT_S = 30  # scu.new_ae's connection timeout for each peer's C-FIND
METHODS = INFORMED_HOW  # how the patient was informed (RECOGNITION.md), a column of the decision
MAX_ID = 64
# where the language switch may send a user back to (a fixed list of our paths: no open redirect)
LANG_RETURN_PATHS = ("/patients", "/decide", "/qc", "/qc/study", "/report", "/login", "/admin/health", "/admin/peers",
                     "/admin/tokens", "/admin/users", "/admin/audit")
PAGE_HEADERS = page_render.PAGE_HEADERS
CSS = """body{font-family:"WenQuanYi Zen Hei",sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:.3em .6em;text-align:left}
.HR_ELIGIBLE{color:#060;font-weight:bold}.NOT_ELIGIBLE{color:#a00;font-weight:bold}
.error{background:#fee;border:1px solid #c00;padding:.5em}.ok{background:#efe;border:1px solid #0a0;padding:.5em}
nav a,nav form{margin-right:1em;display:inline}label{display:block;margin:.4em 0}
small,.detail{color:#666}.expired{color:#a00}fieldset{margin:.6em 0}img.thumbnail{max-width:128px}"""
_display_date = page_render.display_date  # the report page's month and day labels use it too


class Workspace:
    """The physician's pages over one node's web service."""

    def __init__(self, web: Web) -> None:
        self.web = web
        self.node = web.node

    # -- rendering -----------------------------------------------------------------------
    def render(self, request: Request, template: str, user: WorkspaceUser | None, status: int = 200,
               **context: Any) -> Response:
        return page_render.render(request, template, user, status, **context)

    def error_page(self, request: Request, user: WorkspaceUser | None, exc: HttpError) -> Response:
        """The refusal as a page: the catalog's words when the error names them, the English
        message under them as technical detail."""
        return self.render(request, "error.html", user, status=exc.status, message=exc.message,
                           message_id=getattr(exc, "message_id", ""))

    def page_user(self, request: Request, roles: tuple[str, ...] = PHYSICIAN) -> WorkspaceUser | Response:
        """The user (of one of ``roles``), or the response a browser should see instead (login, or a 403 page)."""
        try:
            return require(self.web, request, roles)
        except HttpError as exc:
            if exc.status == 401:
                return RedirectResponse("/login", status_code=303)
            from pacsnode.web.workspace_auth import session_user

            # the menu of the user's own pages (an admin's /admin) stays on the 403 page
            return self.error_page(request, session_user(self.web, request), exc)

    def css(self, _request: Request) -> Response:
        return Response(CSS, media_type="text/css", headers={"Cache-Control": "max-age=3600"})

    def switch_language(self, request: Request) -> Response:
        """Remember the chosen language and go back to the page the switch was on when it is one of
        ours (a fixed list of paths, the referer's query kept: no open redirect), else to the login
        form, which sends a signed-in person on to their own page."""
        lang = i18n.language(request.query_params.get("to"))
        referer = urlsplit(request.headers.get("referer", ""))
        same_site = referer.netloc == request.headers.get("host", "")
        back = "/login"
        if same_site and referer.path in LANG_RETURN_PATHS:
            back = referer.path + (f"?{referer.query}" if referer.query and len(referer.query) < 1000 else "")
        response = RedirectResponse(back, status_code=303)
        response.set_cookie(i18n.LANG_COOKIE, lang, max_age=365 * 86400, path="/", samesite="strict", httponly=True)
        return response

    # -- priors --------------------------------------------------------------------------
    def _patient(self, request: Request) -> tuple[str, str, str]:
        q = request.query_params
        values = tuple(q.get(k, "").strip()[:MAX_ID + 1] for k in ("patient_id", "issuer", "resident_id"))
        if any(len(v) > MAX_ID or any(ord(c) < 32 for c in v) for v in values):
            raise HttpError(400, f"identifiers are at most {MAX_ID} printable characters")
        return values  # type: ignore[return-value]

    def _gather(self, user: WorkspaceUser, patient_id: str, issuer: str, resident_id: str) -> dict[str, Any]:
        from pacsnode.priors import gather_priors

        result = gather_priors(self.node, patient_id or None, issuer or None, resident_id or None,
                               asked_by=f"user:{user.name}")  # audited there
        from pacsnode.web import thumbnails

        local = [p.study_uid for p in result.priors if p.source == "local"]
        rows = self.node.regional_store.studies_by_uid(local[:1]) if local else []
        return {"result": result, "peers": self._peer_status(result),
                "patient_name": rows[0].patient_name if rows else "",
                "thumbnails": thumbnails.visible(self.node, user.caller, result.priors)}

    def _peer_status(self, result: Any) -> list[dict[str, Any]]:
        own = self.node.config.institution
        rows = []
        for peer in self.node.peers.list():  # the peers gather_priors asks (same filter)
            if "find" in peer.permissions and peer.port > 0 and peer.institution and peer.institution != own:
                count = sum(1 for p in result.priors if p.source == peer.name or peer.name in p.also_at)
                rows.append({"name": peer.name, "institution": peer.institution, "error": result.errors.get(peer.name),
                             "count": count, "timeout": PEER_TIMEOUT_S})
        return rows

    def patients(self, request: Request) -> Response:
        user = self.page_user(request)
        if isinstance(user, Response):
            return user
        patient_id, issuer, resident_id = self._patient(request)
        context: dict[str, Any] = {"patient_id": patient_id, "issuer": issuer, "resident_id": resident_id,
                                   "searched": False, "missing": False}
        if patient_id or issuer or resident_id:
            if not (resident_id or (patient_id and issuer)):
                context["missing"] = True
            else:
                context.update(self._gather(user, patient_id, issuer, resident_id), searched=True)
        return self.render(request, "patients.html", user, suggested=SUGGESTED_REASON, **context)

    def api_patients(self, request: Request) -> Response:
        user = require(self.web, request, PHYSICIAN)
        patient_id, issuer, resident_id = self._patient(request)
        if not (resident_id or (patient_id and issuer)):
            raise HttpError(400, "name the patient: patient_id with issuer, or resident_id")
        gathered = self._gather(user, patient_id, issuer, resident_id)
        return JSONResponse(gathered["result"].as_json())

    # -- decisions -----------------------------------------------------------------------
    def _study(self, request: Request, user: WorkspaceUser, uid: str) -> Any:
        uid = uid.strip()
        snapshot = self.node.desk.snapshot(uid) if uid and len(uid) <= 64 else None
        if snapshot is None:
            audit_refusal(self.web, request, user.name, "study not in this node nor among the priors shown", uid)
            raise PageError(404, "no such study among this node's studies or the priors shown", "error.no_study")
        return snapshot

    def _decide_context(self, request: Request, user: WorkspaceUser, uid: str) -> dict[str, Any]:
        snapshot = self._study(request, user, uid)
        history = [d for d in self.node.regional_store.decisions() if d["study_uid"] == uid]
        return {"study_uid": uid, "snapshot": snapshot, "history": history, "reasons": list(REASON_CODES),
                "prior": self._window_of(uid), "rule": "",
                "consents": CONSENTS, "informed_parties": INFORMED_PARTIES, "methods": METHODS,
                "suggested": SUGGESTED_REASON, "form": {}, "error": "", "saved": None}

    def _window_of(self, uid: str) -> dict[str, str] | None:
        """Study date and last valid day of a study of this node (a peer's prior shows its window
        on the priors page: the advice it answered with is not kept with the study date)."""
        rows = self.node.regional_store.studies_by_uid([uid])
        if not rows or self.node.regional.region is None:
            return None
        advice = self.node.desk.explain(uid)
        until = advice.valid_until.strftime("%Y%m%d") if advice.valid_until else ""
        return {"study_date": rows[0].study_date, "valid_until": until}

    def decide_form(self, request: Request) -> Response:
        user = self.page_user(request)
        if isinstance(user, Response):
            return user
        try:
            context = self._decide_context(request, user, request.query_params.get("study", ""))
        except HttpError as exc:
            return self.error_page(request, user, exc)
        return self.render(request, "decide.html", user, **context)

    def _record(self, request: Request, user: WorkspaceUser, form: dict[str, Any]) -> int:
        """Record through ``PhysicianDesk.decide`` (the CLI's function); RecognitionError says why not."""
        uid = str(form.get("study_uid", "")).strip()
        self._study(request, user, uid)
        method = str(form.get("method", "")).strip()
        codes = tuple(c.strip() for item in form.get("reasons", []) for c in str(item).split(",") if c.strip())
        decision = DecisionInput(str(form.get("decision", "")), user.name, codes, str(form.get("consent", "")),
                                 str(form.get("informed", "")), str(form.get("note", "")), uid,
                                 self.node.config.institution, informed_how=method)
        try:
            decision_id = self.node.desk.decide(uid, decision)
        except (RecognitionError, NotFound) as exc:
            self.node.web_events.decide_refused(user.name, uid, str(exc))
            raise
        self.node.web_events.decided(user.name, uid, decision_id, decision.decision, method, user.caller.host)
        return decision_id

    async def decide_submit(self, request: Request) -> Response:
        user = await run_in_threadpool(require, self.web, request, PHYSICIAN)
        check_size(request)
        raw = await request.form(max_files=0, max_fields=40)
        check_csrf(self.web, request, user, str(raw.get(CSRF_FIELD, "")))
        form: dict[str, Any] = {k: str(raw.get(k, ""))[:1000] for k in ("study_uid", "decision", "consent", "informed", "method", "note")}
        form["reasons"] = [str(v)[:16] for v in raw.getlist("reasons")][:20]
        return await run_in_threadpool(self._submit, request, user, form)

    def _submit(self, request: Request, user: WorkspaceUser, form: dict[str, Any]) -> Response:
        try:
            context = self._decide_context(request, user, form["study_uid"])
        except HttpError as exc:
            return self.error_page(request, user, exc)
        try:
            context["saved"] = self._record(request, user, form)
            context["history"] = [d for d in self.node.regional_store.decisions() if d["study_uid"] == form["study_uid"]]
        except (RecognitionError, NotFound) as exc:
            # the form keeps what was typed, less what the rules refuse to show (control characters)
            shown = {**form, "note": "".join(c for c in form["note"] if not hidden_character(c))}
            context.update(error=str(exc), rule=getattr(exc, "rule", ""), form=shown)
            return self.render(request, "decide.html", user, status=400, **context)
        return self.render(request, "decide.html", user, **context)

    async def api_decide(self, request: Request) -> Response:
        user, body = await json_action(self.web, request, PHYSICIAN)
        reasons = body.get("reasons", [])
        form: dict[str, Any] = {"study_uid": str(body.get("study_uid", "")), "decision": str(body.get("decision", "")),
                "consent": str(body.get("consent", "") or ""), "informed": str(body.get("informed", "") or ""),
                "method": str(body.get("method", "") or ""), "note": str(body.get("note", "") or ""),
                "reasons": [str(r) for r in reasons] if isinstance(reasons, list) else [str(reasons)]}
        try:
            decision_id = await run_in_threadpool(self._record, request, user, form)
        except (RecognitionError, NotFound) as exc:
            raise HttpError(400, str(exc)) from None
        return JSONResponse({"decision_id": decision_id, "study_uid": form["study_uid"],
                             "decision": form["decision"].strip().lower(), "physician": user.name})

    def api_csrf(self, request: Request) -> Response:
        """This session's CSRF token, for a script that posts to ``/api/decisions`` (same-origin only:
        the response is JSON a cross-site page cannot read)."""
        user = require(self.web, request, PHYSICIAN)
        return JSONResponse({"csrf_token": user.csrf}, headers={"Cache-Control": "no-store"})


def routes(web: Web) -> list[Route]:
    """The workspace's routes, for ``create_app``."""
    from pacsnode.web.workspace_qc import qc_routes

    ws = Workspace(web)
    g = _guard
    return [*qc_routes(ws),
        Route("/workspace.css", ws.css), Route("/lang", ws.switch_language),
        Route("/patients", g(ws.patients), methods=["GET"]), Route("/api/patients", g(ws.api_patients), methods=["GET"]),
        Route("/decide", g(ws.decide_form), methods=["GET"]), Route("/decide", g(ws.decide_submit), methods=["POST"]),
        Route("/api/decisions", g(ws.api_decide), methods=["POST"]), Route("/api/csrf", g(ws.api_csrf), methods=["GET"]),
    ]


