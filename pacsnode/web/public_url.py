"""``[web] public_url``: the address clients reach DICOMweb at, when that is not the node's own.

Behind an HTTP load balancer (docs/deployment.md) the node cannot know the address users were
given: the Host header may lack the port (dicomweb-client sends the bare host name), and the
node's own port is not the balancer's. RetrieveURL and BulkDataURI then named the node's
private port. When an admin sets ``public_url`` every such URI starts with it; unset, the
request's own address is used as before (one node, no balancer).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pacsnode.errors import ConfigError


def checked_web(web: dict[str, Any], source: str) -> dict[str, Any]:
    """The ``[web]`` table with ``public_url`` checked (config.parse_config)."""
    return {**web, "public_url": checked_public_url(web["public_url"], source)}


def checked_public_url(value: str, source: str) -> str:
    """``value`` without a trailing slash, or ConfigError: http(s), a host, no credentials, query or fragment."""
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc \
            or parts.query or parts.fragment or any(c.isspace() or not c.isprintable() for c in value):
        raise ConfigError(f"{source}: [web] public_url {value[:120]!r} must be an http:// or https:// address "
                          "with a host and no user, query or fragment (e.g. https://pacs.example.org)")
    try:
        parts.port  # noqa: B018 (a port out of range raises here)
    except ValueError as exc:
        raise ConfigError(f"{source}: [web] public_url has a bad port: {exc}") from exc
    return value.rstrip("/")
