"""WADO-RS rendered resources (PS3.18 9.5 / 10.4.1.1.3): ``/rendered`` and ``/thumbnail``.

The pixels go through the same display chain as ``pacsnode qc preview`` (``qc.render``):
the instance's own window, or the one the query names (``window=center,width``), then
JPEG (default) or PNG as ``Accept`` asks. ``viewport=W,H`` fits the image in that box; a
thumbnail is at most 128 pixels a side unless ``viewport`` says otherwise.
"""

from __future__ import annotations

import io
from pathlib import Path

from pacsnode.errors import InvalidQuery
from pacsnode.qc.render import RenderError, render_instance

MAX_SIDE = 4096
THUMBNAIL_SIDE = 128


def media_type(accept: str) -> str | None:
    """image/jpeg or image/png from an Accept header (None: neither is acceptable)."""
    if not accept.strip():
        return "image/jpeg"
    for option in (o.split(";")[0].strip().lower() for o in accept.split(",")):
        if option in ("image/jpeg", "image/png"):
            return option
        if option in ("*/*", "image/*"):
            return "image/jpeg"
    return None


def parse_window(text: str) -> tuple[float, float] | None:
    if not text:
        return None
    parts = text.split(",")
    try:
        center, width = float(parts[0]), float(parts[1])
    except (ValueError, IndexError):
        raise InvalidQuery("window must be center,width[,function]") from None
    if width <= 0 or not all(abs(v) < 1e9 for v in (center, width)):
        raise InvalidQuery("window width must be positive and values finite")
    return center, width


def parse_viewport(text: str, default: int | None) -> tuple[int, int] | None:
    if not text:
        return (default, default) if default else None
    try:
        width, height = (int(p) for p in text.split(",")[:2])
    except ValueError:
        raise InvalidQuery("viewport must be width,height") from None
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise InvalidQuery(f"viewport sides must be 1..{MAX_SIDE}")
    return width, height


def render(path: Path, kind: str, frame: int | None, window: tuple[float, float] | None,
           viewport: tuple[int, int] | None, quality: int = 90) -> bytes:
    """The encoded image (RenderError when the pixels cannot be shown)."""
    image = render_instance(path, frame, window=window)
    if viewport is not None:
        image.thumbnail(viewport)
    out = io.BytesIO()
    if kind == "image/png":
        image.save(out, format="PNG")
    else:
        image.save(out, format="JPEG", quality=max(1, min(quality, 100)))
    return out.getvalue()


__all__ = ["RenderError", "media_type", "parse_viewport", "parse_window", "render"]
