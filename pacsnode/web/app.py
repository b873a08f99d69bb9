"""The Starlette application: routes, authentication, and the mapping of errors to HTTP statuses.

Every DICOMweb route first turns the request into a ``Caller`` (a bearer token; nothing else
yet) and refuses (401, audited) when there is none. Then it asks the ``Node`` exactly what
DIMSE asks: ``find`` for QIDO, ``retrieve`` for WADO, ``store_file`` for STOW. A study the
caller may not see answers 404 like a study that does not exist (hidden equals absent).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from pacsnode.errors import InvalidQuery, MissingPatientContext, NotPermitted, PacsnodeError, TooManyResults
from pacsnode.index.web_store import InstanceRow, WebStore
from pacsnode.model import Caller, InformationModel, Level, Query, QueryKey
from pacsnode.node import Node
from pacsnode.read_audit import ReadAudit
from pacsnode import access_tokens, accounts
from pacsnode.web import frames, qido, rendered, stow, wado
from pacsnode.web.access_cache import AccessCache
from pacsnode.web.stow import Part as StowPart  # inside the class ``stow`` is the STOW route method

LOGGER = logging.getLogger(__name__)
BASE = "/dicom-web"
DICOM_JSON = "application/dicom+json; charset=utf-8"
SESSION_COOKIE = "pacsnode_session"
AUTH_AUDIT_INTERVAL = 10.0  # seconds between two audited 401s of one address and reason
# Viewer reads: audited per caller, study and minute (read_audit.py), their access kept a few seconds.
VIEWER_READS = frozenset({"wado-frames", "wado-rendered", "wado-metadata"})
class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _fail(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status,
                        headers={"WWW-Authenticate": 'Bearer realm="pacsnode"'} if status == 401 else None)


class Web:
    """The routes of one node's DICOMweb service."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.store = WebStore(node.index)
        self._refusals: dict[tuple[str, str], tuple[float, int]] = {}
        self._refusal_lock = threading.Lock()
        self._base_urls: dict[tuple[Any, ...], str] = {}
        self.access = AccessCache(node.config.web.access_cache_seconds)
        self.reads = ReadAudit(node.audit, float(node.config.web.read_audit_window_seconds))
        self.inline_reads = frames.reads_never_block(node)

    # -- who is asking -------------------------------------------------------------------
    def caller(self, request: Request) -> Caller:
        """The Caller of a request, or HttpError 401 (audited with the reason)."""
        host = request.client.host if request.client else ""
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        reason = "no credentials"
        cookie = request.cookies.get(SESSION_COOKIE, "")
        if not header and cookie:
            if request.method not in ("GET", "HEAD"):  # no CSRF: a cookie never authorises a change
                reason = "a session cookie authorises reading only; STOW-RS needs a bearer token"
            else:
                found_user = accounts.session_caller(self.store, cookie, host)
                if found_user is not None:
                    return found_user
                reason = "unknown or expired session"
        elif header:
            if scheme.lower() != "bearer":
                reason = f"unsupported authorization scheme {scheme[:20]!r}"
            else:
                found, name, reason = access_tokens.caller_for(self.node, presented.strip(), host)
                if found is not None:
                    return found
        self._audit_unauthenticated(host, reason, request)
        raise HttpError(401, f"authentication required: {reason}")

    def _audit_unauthenticated(self, host: str, reason: str, request: Request) -> None:
        """Audit a 401 at most once per address and reason per interval, with how many were
        skipped since: a flood of unauthenticated requests must not become a flood of writes."""
        kind = next((k for k in ("token ", "unsupported authorization scheme") if reason.startswith(k)), reason)
        key, now = (host, kind), time.monotonic()  # the kind, not the client's words (a new scheme per request)
        with self._refusal_lock:
            last, skipped = self._refusals.get(key, (-AUTH_AUDIT_INTERVAL, 0))
            if now - last < AUTH_AUDIT_INTERVAL:
                self._refusals[key] = (last, skipped + 1)
                return
            if len(self._refusals) > 10_000:  # many addresses: forget the old ones
                self._refusals.clear()
            self._refusals[key] = (now, 0)
        self.node.web_events.auth_refused(reason, host, request.method, request.url.path, skipped)

    def base_url(self, request: Request) -> str:
        """Where this service is, as the client addressed it (for RetrieveURL and BulkDataURI).

        Some clients send a Host header without the port (dicomweb-client does); then the
        port the request arrived on is the one to name. Starlette builds ``base_url`` through
        URL parsing (a tenth of a small QIDO's time); the answer depends only on the scheme,
        Host header, server address and root path, so it is kept per those (a bounded cache:
        the Host header is the client's to choose).
        """
        scope = request.scope
        key = (scope.get("scheme"), request.headers.get("host", ""), scope.get("server"), scope.get("root_path", ""))
        found = self._base_urls.get(key)
        if found is None:
            found = self._base_url(request)
            if len(self._base_urls) >= 256:
                self._base_urls.clear()
            self._base_urls[key] = found
        return found

    def _base_url(self, request: Request) -> str:
        public = self.node.config.web.public_url  # behind a load balancer (web/public_url.py)
        if public:
            return public + request.scope.get("root_path", "").rstrip("/") + BASE
        url = request.base_url
        host = request.headers.get("host", "")
        server = request.scope.get("server")
        if host and ":" not in host.rsplit("]", 1)[-1] and server and server[1] not in (80, 443):
            url = url.replace(port=server[1])
        return str(url).rstrip("/") + BASE

    def _audit(self, caller: Caller, action: str, outcome: str, study_uid: str = "", **detail: Any) -> None:
        self.node.web_events.caller_did(caller, action, outcome, study_uid, **detail)

    # -- QIDO-RS -------------------------------------------------------------------------
    def search(self, request: Request) -> Response:
        params = request.path_params
        level = {"studies": Level.STUDY, "series": Level.SERIES, "instances": Level.IMAGE}.get(params["level"])
        allowed_levels = {0: (Level.STUDY, Level.SERIES, Level.IMAGE), 1: (Level.SERIES, Level.IMAGE),
                          2: (Level.IMAGE,)}[("study" in params) + ("series" in params)]
        if level not in allowed_levels:
            raise HttpError(404, "no such resource")
        caller = self.caller(request)
        fixed = {k: v for k, v in (("StudyInstanceUID", params.get("study")),
                                   ("SeriesInstanceUID", params.get("series"))) if v}
        try:
            parsed = qido.parse(request.query_params.multi_items(), level, fixed, self.node.config.web.max_results,
                                not self.node.config.query.case_sensitive_pn)
        except InvalidQuery as exc:
            self._audit(caller, "qido", "refused", reason=str(exc), query=str(request.query_params)[:500])
            raise HttpError(400, str(exc)) from None
        try:
            matches = list(self.node.find(parsed.query, caller, page_limit=parsed.limit,  # audited
                                          page_offset=parsed.offset))
        except MissingPatientContext as exc:
            raise HttpError(400, str(exc)) from None
        except NotPermitted as exc:
            raise HttpError(403, str(exc)) from None
        except (InvalidQuery, TooManyResults) as exc:
            raise HttpError(400, str(exc)) from None
        page = matches[:parsed.limit]  # the page itself (find skipped the offset, and read one more)
        base = self.base_url(request)
        plan = qido.JsonPlan(parsed.query)
        body = [plan.object(match, base) for match in page]
        if not body:
            return Response(status_code=204)
        headers = {}
        if len(matches) > parsed.limit:
            headers["Warning"] = '299 pacsnode "There are additional results that can be requested"'
        return Response(json.dumps(body, ensure_ascii=False).encode("utf-8"), media_type=DICOM_JSON,
                        headers=headers)

    # -- WADO-RS -------------------------------------------------------------------------
    def rows(self, caller: Caller, study: str, series: str | None = None, sop: str | None = None,
             action: str = "wado") -> list[InstanceRow]:
        """The instances a WADO request names, if the caller may have them (else 404, audited).

        Viewer reads (``VIEWER_READS``) take their access from ``frames.allowed_instances`` and are
        audited per caller, study and window (``read_audit``); refusals are audited at once.
        """
        if action in VIEWER_READS:
            kept = frames.allowed_instances(self, caller, study)
            rows = [r for r in self.store.instances(study, series, sop) if r.sop_instance_uid in kept]
            if not rows:
                self._audit(caller, action, "refused", study_uid=study[:64], reason="not found",
                            series=series or "", instance=sop or "")
                raise HttpError(404, "no such study, series or instance")
            self.reads.record(caller, study, action, series=series or "", instance=sop or "", instances=len(rows))
            return rows
        keys = [QueryKey("StudyInstanceUID", "UI", study)]
        level = Level.STUDY
        if series:
            keys.append(QueryKey("SeriesInstanceUID", "UI", series))
            level = Level.SERIES
        if sop:
            keys.append(QueryKey("SOPInstanceUID", "UI", sop))
            level = Level.IMAGE
        query = Query(level, InformationModel.STUDY_ROOT, tuple(keys))
        try:
            allowed = {loc.sop_instance_uid for loc in self.node.retrieve(query, caller, "get")}
        except PacsnodeError:  # refused: audited by Node.retrieve; the answer is that of absence
            raise HttpError(404, "no such study, series or instance") from None
        rows = [r for r in self.store.instances(study, series, sop) if r.sop_instance_uid in allowed]
        if not rows:
            self._audit(caller, action, "refused", study_uid=study[:64], reason="not found",
                        series=series or "", instance=sop or "")
            raise HttpError(404, "no such study, series or instance")
        self._audit(caller, action, "answered", study_uid=study, series=series or "", instance=sop or "",
                    instances=len(rows))
        return rows

    def retrieve(self, request: Request) -> Response:
        caller = self.caller(request)
        p = request.path_params
        accept = request.headers.get("accept", "")
        if accept and not wado.accepts(accept, "application/dicom"):
            raise HttpError(406, 'WADO-RS retrieval here answers multipart/related; type="application/dicom"')
        rows = self.rows(caller, p["study"], p.get("series"), p.get("sop"))
        wanted = wado.requested_syntaxes(accept)
        transcode = [wanted is not None and r.transfer_syntax not in wanted for r in rows]
        if any(transcode) and (wado.EXPLICIT_LE not in (wanted or ())
                               or not all(wado.can_transcode(r.transfer_syntax) for r, t in zip(rows, transcode) if t)):
            raise HttpError(406, "instances go in their stored transfer syntax or as Explicit VR Little Endian "
                                 f"({wado.EXPLICIT_LE}); stored: {', '.join(sorted({r.transfer_syntax for r in rows}))}")
        boundary = wado.new_boundary()
        return StreamingResponse(wado.multipart_files(self.node.storage, [r.path for r in rows], boundary,
                                                      transcode=transcode),
                                 media_type=f'multipart/related; type="application/dicom"; boundary={boundary}')

    def metadata(self, request: Request) -> Response:
        caller = self.caller(request)
        p = request.path_params
        rows = self.rows(caller, p["study"], p.get("series"), p.get("sop"), action="wado-metadata")
        body = wado.metadata_json(self.store, rows, self.node.storage, self.base_url(request))
        return Response(body, media_type=DICOM_JSON)

    async def frames(self, request: Request) -> Response:
        """Frames of one instance: a viewer's usual request on the event loop (``frames.inline``),
        anything else the full way in a worker thread, where it may wait on the index or network."""
        answer = frames.inline(self, request)
        if answer is not None:
            return answer
        return await run_in_threadpool(self._frames_in_thread, request)

    def _frames_in_thread(self, request: Request) -> Response:
        caller = self.caller(request)
        p = request.path_params
        rows = self.rows(caller, p["study"], p["series"], p["sop"], action="wado-frames")
        return frames.response(self, rows[0], frames.plan(self, request, rows))

    def bulkdata(self, request: Request) -> Response:
        caller = self.caller(request)
        p = request.path_params
        rows = self.rows(caller, p["study"], p["series"], p["sop"], action="wado-bulkdata")
        with self.node.storage.open(rows[0].path) as handle:
            value = wado.bulk_value(handle, p["tag"])
        if value is None:
            raise HttpError(404, f"no bulk data {p['tag']!r} in this instance")
        boundary = wado.new_boundary()
        body = (f"--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n").encode("ascii") + value + \
            f"\r\n--{boundary}--\r\n".encode("ascii")
        return Response(body, media_type=f'multipart/related; type="application/octet-stream"; boundary={boundary}')

    def rendered(self, request: Request) -> Response:
        """``/rendered`` and ``/thumbnail`` of an instance or frame; a study/series thumbnail is its middle image."""
        caller = self.caller(request)
        p = request.path_params
        thumbnail = request.url.path.endswith("/thumbnail")
        kind = rendered.media_type(request.headers.get("accept", ""))
        if kind is None:
            raise HttpError(406, "rendered resources are image/jpeg or image/png")
        q = request.query_params
        try:
            window = rendered.parse_window(q.get("window", ""))
            viewport = rendered.parse_viewport(q.get("viewport", ""), rendered.THUMBNAIL_SIDE if thumbnail else None)
            quality = int(q.get("quality", "90")) if q.get("quality", "90").isdigit() else 90
        except InvalidQuery as exc:
            raise HttpError(400, str(exc)) from None
        rows = self.rows(caller, p["study"], p.get("series"), p.get("sop"), action="wado-rendered")
        images = [r for r in rows if '"7FE00010"' in r.metadata] or rows
        row = images[(len(images) - 1) // 2]
        frame = None
        if "frames" in p:
            numbers = wado.parse_frame_list(p["frames"], 1 << 20)
            if not numbers:
                raise HttpError(404, "no such frame")
            frame = numbers[0] - 1
        try:
            with self.node.storage.local_file(row.path) as path:
                body = rendered.render(path, kind, frame, window, viewport, quality)
        except (rendered.RenderError, IndexError, ValueError) as exc:
            raise HttpError(400 if not isinstance(exc, IndexError) else 404, f"cannot render: {exc}") from None
        return Response(body, media_type=kind)

    # -- WADO-URI ------------------------------------------------------------------------
    def wado_uri(self, request: Request) -> Response:
        caller = self.caller(request)
        q = request.query_params
        if q.get("requestType") != "WADO":
            raise HttpError(400, "requestType=WADO is required")
        study, series, sop = q.get("studyUID", ""), q.get("seriesUID", ""), q.get("objectUID", "")
        if not (study and series and sop):
            raise HttpError(400, "studyUID, seriesUID and objectUID are required")
        content_type = q.get("contentType", "application/dicom")
        if content_type != "application/dicom":
            raise HttpError(406, "contentType: only application/dicom is served")
        rows = self.rows(caller, study, series, sop, action="wado-uri")
        path, size = rows[0].path, self.node.storage.size(rows[0].path)
        return StreamingResponse(wado.file_chunks(self.node.storage.open(path)), media_type="application/dicom",
                                 headers={"Content-Length": str(size)})

    # -- STOW-RS -------------------------------------------------------------------------
    async def stow(self, request: Request) -> Response:
        caller = await run_in_threadpool(self.caller, request)
        limit = self.node.config.web.max_body_bytes
        declared = request.headers.get("content-length", "")
        try:
            boundary = stow.boundary_of(request.headers.get("content-type", ""))
            if declared and (not declared.isdigit() or int(declared) > limit):
                raise HttpError(413, f"Content-Length {declared[:20]} is over [web] max_body_bytes = {limit}")
            await run_in_threadpool(self.node.require_permission, caller, "store")
        except (stow.BadBody, HttpError, NotPermitted) as exc:
            status = 400 if isinstance(exc, stow.BadBody) else 403 if isinstance(exc, NotPermitted) else exc.status
            await run_in_threadpool(self._audit, caller, "stow", "refused", reason=str(exc))
            raise HttpError(status, str(exc)) from None
        reader = stow.BodyReader(boundary, self.node.new_temp_file)
        received = 0
        try:
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise HttpError(413, f"body is over [web] max_body_bytes = {limit}")
                reader.feed(chunk)
            parts = reader.finish()
        except (stow.BadBody, HttpError) as exc:
            reader.discard()
            await run_in_threadpool(self._audit, caller, "stow", "refused", reason=str(exc))
            raise HttpError(exc.status if isinstance(exc, HttpError) else 400, str(exc)) from None
        except BaseException:
            reader.discard()
            raise
        return await run_in_threadpool(self._store_parts, request, caller, parts.parts)

    def _store_parts(self, request: Request, caller: Caller, parts: list[StowPart]) -> Response:
        study_in_url = request.path_params.get("study", "")
        base = self.base_url(request)
        referenced: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        reasons: list[str] = []
        for part in parts:
            assert part.path is not None
            entry: dict[str, Any] = {}
            try:
                kind = part.content_type.split(";")[0].strip().lower()
                if kind != "application/dicom":
                    raise stow.BadBody(f"part Content-Type {kind or 'missing'!r} is not application/dicom")
                declared_class, declared_instance = stow.declared_uids(part.path)
                entry = {"sop_class": declared_class, "sop_instance": declared_instance}
                outcome = self.node.store_file(part.path, caller, declared_class, declared_instance,
                                               received=part.received(),
                                               check=stow.in_study(study_in_url) if study_in_url else None)
                entry["url"] = f"{base}/studies/{outcome.study_uid}"
                referenced.append(entry)
            except (PacsnodeError, OSError) as exc:
                part.path.unlink(missing_ok=True)
                reason = stow.failure_reason(exc)
                failed.append({**entry, "reason": reason})
                reasons.append(str(exc))
        self._audit(caller, "stow", "answered" if referenced else "refused", study_uid=study_in_url,
                    stored=len(referenced), failed=len(failed), reasons=reasons[:20])
        status = 200 if not failed else 202 if referenced else 409
        headers = {"Warning": f'299 pacsnode "{_header_safe(reasons[0])}"'} if reasons else {}
        body = stow.response(referenced, failed, f"{base}/studies/{study_in_url}" if study_in_url else "")
        return Response(json.dumps(body).encode("utf-8"), status_code=status, media_type=DICOM_JSON,
                        headers=headers)

    # -- operations ----------------------------------------------------------------------
    def metrics(self, request: Request) -> Response:
        """Prometheus exposition: a token with the ``metrics`` permission or an admin's session.

        Counts and latencies tell an outsider how busy the node is and which rules refuse whom,
        so a physician's session or a find/get token is not enough (403, audited).
        """
        from pacsnode.web import metrics

        caller = self.caller(request)
        if caller.peer is None or "metrics" not in caller.peer.permissions:
            self._audit(caller, "metrics", "refused", reason="needs the metrics permission (admin)")
            raise HttpError(403, "/metrics needs a token with the metrics permission or an admin session")
        body, content_type = metrics.exposition(self.node)
        return Response(body, media_type=content_type)

    def healthz(self, _request: Request) -> Response:
        return PlainTextResponse("ok\n")

    def readyz(self, _request: Request) -> Response:
        """Anyone may ask, so the answer names the part, never the error (a PostgreSQL error names host and user)."""
        try:
            self.node.index.check_readable()
        except Exception:
            LOGGER.warning("readiness: the index does not answer", exc_info=True)
            return PlainTextResponse("not ready: index unreachable\n", status_code=503)
        if not self.node.storage.available():
            return PlainTextResponse("not ready: storage area unreachable\n", status_code=503)
        return PlainTextResponse("ready\n")


def _header_safe(text: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 and c != '"' else "?" for c in text)[:300]


def _guard(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
    """Turn HttpError into its status; any other error is a 500 with nothing internal in it."""
    import asyncio
    import functools

    if asyncio.iscoroutinefunction(handler):
        @functools.wraps(handler)
        async def run_async(request: Request) -> Response:
            try:
                return await handler(request)
            except HttpError as exc:
                return _fail(exc.status, exc.message)
        return run_async

    @functools.wraps(handler)
    def run(request: Request) -> Response:
        try:
            return handler(request)
        except HttpError as exc:
            return _fail(exc.status, exc.message)
    return run


from pacsnode.web.login import Login  # noqa: E402  (it builds on Web and HttpError above)


def create_app(node: Node) -> Starlette:
    """The ASGI application serving ``node`` (DICOMweb under ``/dicom-web``)."""
    web = Web(node)
    login = Login(web)
    g = _guard
    uid = "{study:str}"
    series, sop = "{series:str}", "{sop:str}"
    instance = f"{BASE}/studies/{uid}/series/{series}/instances/{sop}"
    routes = [  # specific paths first: the generic QIDO paths below would match /metadata too
        # frames first: a viewer asks for them hundreds of times per study, and every route tried
        # before is a regex match ({frames:str} stops at "/", so .../frames/N/rendered is not this)
        Route(instance + "/frames/{frames:str}", g(web.frames), methods=["GET"]),
        Route("/healthz", web.healthz), Route("/readyz", web.readyz), Route("/metrics", g(web.metrics)),
        Route("/login", login.form, methods=["GET"]), Route("/login", g(login.submit), methods=["POST"]),
        Route("/logout", g(login.logout), methods=["POST"]),
        Route("/wado", g(web.wado_uri)), Route(f"{BASE}/wado", g(web.wado_uri)),
        Route(f"{BASE}/studies", g(web.stow), methods=["POST"]),
        Route(f"{BASE}/studies/{uid}", g(web.stow), methods=["POST"]),
        Route(f"{BASE}/studies/{uid}", g(web.retrieve), methods=["GET"]),
        Route(f"{BASE}/studies/{uid}/metadata", g(web.metadata), methods=["GET"]),
        Route(f"{BASE}/studies/{uid}/series/{series}", g(web.retrieve), methods=["GET"]),
        Route(f"{BASE}/studies/{uid}/series/{series}/metadata", g(web.metadata), methods=["GET"]),
        Route(instance, g(web.retrieve), methods=["GET"]),
        Route(f"{instance}/metadata", g(web.metadata), methods=["GET"]),
        Route(instance + "/bulkdata/{tag:str}", g(web.bulkdata), methods=["GET"]),
        Route(f"{instance}/rendered", g(web.rendered), methods=["GET"]),
        Route(f"{instance}/thumbnail", g(web.rendered), methods=["GET"]),
        Route(instance + "/frames/{frames:str}/rendered", g(web.rendered), methods=["GET"]),
        Route(f"{BASE}/studies/{uid}/series/{series}/thumbnail", g(web.rendered), methods=["GET"]),
        Route(f"{BASE}/studies/{uid}/thumbnail", g(web.rendered), methods=["GET"]),
        Route(BASE + "/{level:str}", g(web.search), methods=["GET"]),
        Route(f"{BASE}/studies/{uid}/{{level:str}}", g(web.search), methods=["GET"]),
        Route(f"{BASE}/studies/{uid}/series/{series}/{{level:str}}", g(web.search), methods=["GET"]),
    ]
    from pacsnode.web import metrics, viewer

    routes += viewer.routes(web)  # OHIF at /viewer/ (issue 14 item 7)
    from pacsnode.web import node_metrics

    node_metrics.install(node)  # DIMSE and service metrics through Node.observers
    node.after_store.append(metrics.on_store)
    from pacsnode.web import workspace

    routes += workspace.routes(web)  # the recognition workspace (issue 15)
    from pacsnode.web import programme

    routes += programme.routes(web)  # the programme report (issue 15 item 5)

    from pacsnode.web import admin

    routes += admin.routes(web)  # the admin pages (issue 15 item 6)
    app = Starlette(routes=routes, middleware=[Middleware(metrics.MetricsMiddleware)])
    app.state.web = web  # WebServer.stop writes the read audit's open windows (web.reads.stop)
    from pacsnode.web.default_headers import DefaultHeaders

    # no-store and nosniff on every answer whose route set none (PHI is never cached: default_headers.py)
    return DefaultHeaders(frames.FramesFastPath(app, web))  # type: ignore[return-value]  # ASGI like the app
