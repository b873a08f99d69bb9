"""WADO-RS frames: the byte runs recorded at ingest, and a viewer's usual request answered early.

A viewer asks for one frame at a time, hundreds per study, over a kept-alive connection. The
usual request (credentials valid, the study's access answered moments ago and kept in
``Web.access``, its read already audited in this window by ``Web.reads``, a small frame on the
local disk) needs only index reads and an ``os.pread`` of the page cache: :func:`inline` answers
it on the event loop, and :class:`FramesFastPath` (pure ASGI, in front of the Starlette app)
sends it without the router and exception layers, a third of such a request's time. Anything
else (the first read of a window, a refusal, a bad frame number, S3, PostgreSQL, an error)
goes the full way: the Starlette route, the recognition door and the audit, in a worker thread.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from pacsnode.errors import PacsnodeError
from pacsnode.index.web_store import InstanceRow
from pacsnode.model import Caller, InformationModel, Level, Query, QueryKey
from pacsnode import access_tokens, accounts
from pacsnode.web import wado

if TYPE_CHECKING:
    from pacsnode.node import Node
    from pacsnode.web.app import Web

FRAMES_IN_ONE_BODY = 16 << 20  # frames up to this many bytes go as one body, larger ones are streamed
INLINE_FRAME_BYTES = 1 << 20  # frames up to this size are read on the event loop when nothing else is needed
PATH = re.compile(r"^/dicom-web/studies/([^/]+)/series/([^/]+)/instances/([^/]+)/frames/([^/]+)$")
Plan = tuple[list[Any], str, str, str, int]  # byte runs of the asked frames, media type, syntax, boundary, bytes


def allowed_instances(web: "Web", caller: Caller, study: str) -> frozenset[str]:
    """The SOP Instance UIDs of ``study`` the caller may have (viewer reads: frames, rendered, metadata),
    from the door or, for a few seconds after it answered, from ``web.access``. A refusal is never
    kept: HttpError 404, audited by ``Node.retrieve`` (no "started" row: ``read_audit`` audits reads)."""
    from pacsnode.web.app import HttpError

    found = web.access.get((caller, study))
    if found is not None:
        return found
    query = Query(Level.STUDY, InformationModel.STUDY_ROOT, (QueryKey("StudyInstanceUID", "UI", study),))
    try:
        found = frozenset(loc.sop_instance_uid for loc in web.node.retrieve(query, caller, "get",
                                                                            audit_started=False))
    except PacsnodeError:  # refused: audited by Node.retrieve; the answer is that of absence
        raise HttpError(404, "no such study, series or instance") from None
    web.access.put((caller, study), found)
    return found


def known_caller(web: "Web", request: Request) -> Caller | None:
    """The Caller of a request whose credentials check out, else None (nothing audited: the full
    way then asks ``Web.caller``, which refuses and audits). Looked up on every request: a revoked
    token or ended session is refused at once, whatever ``web.access`` keeps."""
    from pacsnode.web.app import SESSION_COOKIE

    host = request.client.host if request.client else ""
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return access_tokens.caller_for(web.node, presented.strip(), host)[0]
    cookie = request.cookies.get(SESSION_COOKIE, "")
    if cookie and request.method in ("GET", "HEAD"):
        return accounts.session_caller(web.store, cookie, host)
    return None


def reads_never_block(node: "Node") -> bool:
    """Whether index reads and frame reads are local (SQLite, filesystem): then a cached frame
    request may be answered on the event loop; PostgreSQL and S3 go over a network."""
    from pacsnode.index.sqlite import SqliteIndex
    from pacsnode.storage.filesystem import FileStorage

    return type(node.index) is SqliteIndex and isinstance(node.storage, FileStorage)


def plan(web: "Web", request: Request, rows: list[InstanceRow]) -> Plan:
    """What to send for the asked frames of ``rows[0]``, or HttpError (404 no such frame, 406)."""
    from pacsnode.web.app import HttpError

    p = request.path_params
    table = wado.frame_table(web.store, rows[0], web.node.storage)
    frames = table.get("frames")
    runs: list[Any] = frames if isinstance(frames, list) else []
    if not runs:
        raise HttpError(404, "this instance has no frames pacsnode can serve without decoding")
    numbers = wado.parse_frame_list(p["frames"], len(runs))
    if numbers is None:
        raise HttpError(404, f"frame numbers must be 1..{len(runs)}, each at most once")
    syntax = str(table.get("transfer_syntax", ""))
    media = wado.frame_media_type(syntax)
    accept = request.headers.get("accept", "")
    wanted = wado.requested_syntaxes(accept)
    if not wado.accepts(accept, media) or (wanted is not None and syntax not in wanted):
        raise HttpError(406, f"frames of this instance are {media} (transfer syntax {syntax}); "
                             "pacsnode does not transcode")
    chosen = [runs[n - 1] for n in numbers]
    return chosen, media, syntax, wado.new_boundary(), sum(length for frame in chosen for _offset, length in frame)


def response(web: "Web", row: InstanceRow, planned: Plan) -> Response:
    chosen, media, syntax, boundary, size = planned
    parts = wado.multipart_frames(web.node.storage, row.path, chosen, boundary, media, syntax)
    content_type = f'multipart/related; type="{media}"; boundary={boundary}'
    if size <= FRAMES_IN_ONE_BODY:
        # One body, sent in one write: streaming cost a thread hop per chunk, more than the read.
        return Response(b"".join(parts), media_type=content_type)
    return StreamingResponse(parts, media_type=content_type)


def inline(web: "Web", request: Request) -> Response | None:
    """The answer to a viewer's usual frame request (module docstring), or None: go the full way.

    Nothing here writes: an unknown caller, an access not kept, a read that opens an audit
    window or any refusal returns None, and the full way decides and audits it.
    """
    from pacsnode.web.app import HttpError

    if not web.inline_reads:
        return None
    p = request.path_params
    caller = known_caller(web, request)
    allowed = web.access.get((caller, p["study"])) if caller is not None else None
    if caller is None or allowed is None or p["sop"] not in allowed:
        return None
    rows = [r for r in web.store.instances(p["study"], p["series"], p["sop"])
            if r.sop_instance_uid in allowed and r.frames]  # no frame table yet: built the full way
    try:
        planned = plan(web, request, rows) if rows else None
    except HttpError:  # answered (and its read audited) the full way
        return None
    if planned is None or planned[4] > INLINE_FRAME_BYTES or \
            not web.reads.counted(caller, p["study"], "wado-frames", p["sop"]):
        return None
    return response(web, rows[0], planned)


class FramesFastPath:
    """Pure ASGI in front of the application: :func:`inline` frame answers skip the router."""

    def __init__(self, app: Any, web: "Web") -> None:
        self.app = app
        self.web = web
        self.state = app.state  # WebServer.stop reaches the Web through it

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        found = PATH.match(scope["path"]) if scope["type"] == "http" and scope.get("method") == "GET" \
            and not scope.get("root_path") and self.web.inline_reads else None
        if found is not None:
            started = time.perf_counter()
            study, series, sop, frames = found.groups()
            scope["path_params"] = {"study": study, "series": series, "sop": sop, "frames": frames}
            try:
                answer = inline(self.web, Request(scope, receive))
            except Exception:  # noqa: BLE001 - the full way answers it, with its error handling
                answer = None
            if answer is not None:
                await answer(scope, receive, send)
                from pacsnode.web import metrics

                count, seconds = metrics.children("frames", "GET", answer.status_code)
                count.inc()
                seconds.observe(time.perf_counter() - started)
                return
            del scope["path_params"]
        await self.app(scope, receive, send)
