"""A peer from what a person typed: the checks of ``pacsnode peer add``, for the CLI and the admin page.

One function so that the command line and the browser refuse exactly the same things with the
same words: contradicting host options, a certificate binding without TLS, a malformed
fingerprint, a port that is not a number, permissions outside echo/store/find/move/get. What
needs the index (AE title uniqueness, known institution, host and port ranges) is checked by
``Node.add_peer``, which both then call.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pacsnode.errors import ConfigError
from pacsnode.identity import normalise_fingerprint
from pacsnode.model import ALL_PERMISSIONS, Peer

MAX_NAME = 64


class PeerSpecError(ConfigError):
    """A peer description a person must fix; ``option`` names the CLI option it is about."""

    def __init__(self, message: str, option: str = "") -> None:
        super().__init__(message)
        self.option = option


@dataclass(frozen=True)
class PeerSpec:
    """What ``peer add`` takes, as text (a form gives text; the CLI's click types convert first)."""

    name: str
    aet: str
    host: str
    port: str | int
    institution: str = ""
    permissions: str = ",".join(ALL_PERMISSIONS)
    any_host: bool = False
    check_host: bool = False
    tls: bool = False
    cert_fingerprint: str = ""
    cert_subject: str = ""


def build_peer(spec: PeerSpec) -> Peer:
    """The Peer ``spec`` describes, or PeerSpecError saying what to fix."""
    name = spec.name.strip()
    if not name or len(name) > MAX_NAME or any(ord(c) < 32 or c in "\x7f" for c in name):
        raise PeerSpecError(f"peer name {spec.name[:80]!r}: use 1-{MAX_NAME} printable characters", "NAME")
    if spec.any_host and spec.check_host:
        raise PeerSpecError("--any-host and --check-host contradict each other", "--any-host")
    if (spec.cert_fingerprint or spec.cert_subject) and not spec.tls:
        raise PeerSpecError("--cert-fingerprint/--cert-subject need --tls (a certificate only comes over TLS)",
                            "--cert-fingerprint")
    try:
        fingerprint = normalise_fingerprint(spec.cert_fingerprint) if spec.cert_fingerprint else ""
    except ValueError as exc:
        raise PeerSpecError(str(exc), "--cert-fingerprint") from None
    port_text = str(spec.port).strip()
    if not port_text.lstrip("-").isdigit() or len(port_text) > 7:
        raise PeerSpecError(f"--port {port_text[:20]!r} is not a number", "--port")
    perms = frozenset(p.strip() for p in spec.permissions.split(",") if p.strip())
    unknown = perms - set(ALL_PERMISSIONS)
    if unknown:
        raise PeerSpecError(f"unknown permission(s) {', '.join(sorted(unknown))[:200]}; "
                            f"use {', '.join(ALL_PERMISSIONS)}", "--permissions")
    return Peer(name, spec.aet, spec.host.strip(), int(port_text), spec.institution.strip(), perms,
                check_host=not spec.any_host, tls=spec.tls, cert_fingerprint=fingerprint,
                cert_subject=spec.cert_subject.strip())


def peer_rows(peers: list[Peer]) -> list[dict[str, Any]]:
    """Peers as ``peer list --json`` prints them (and ``/api/admin/peers`` returns them)."""
    rows = []
    for p in peers:
        row = asdict(p)
        row["permissions"] = sorted(p.permissions)
        rows.append(row)
    return rows
