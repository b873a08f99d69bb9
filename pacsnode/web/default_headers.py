"""Headers every web answer carries unless its route chose its own: PHI is never cached.

DICOMweb answers (QIDO JSON, instances, metadata, frames, rendered images, bulk data) hold
patient data. Without ``Cache-Control: no-store`` a browser keeps them on disk and a shared
proxy may hand them to the next user; without ``X-Content-Type-Options: nosniff`` a browser
may sniff a part or a bulk data value as HTML. Routes that know better (the viewer's
content-hashed static files, the workspace's CSS) set their own ``Cache-Control`` and keep it.

Pure ASGI and outermost (around ``frames.FramesFastPath``), so an answer made early on the
event loop and any route added later get the same default: what a route forgets is no-store.
"""

from __future__ import annotations

from typing import Any

DEFAULTS = ((b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"))


class DefaultHeaders:
    """Adds each of ``DEFAULTS`` to a response that does not carry that header already."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state = app.state  # WebServer.stop reaches the Web through it

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _value in headers}
                headers += [(name, value) for name, value in DEFAULTS if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, sending)
