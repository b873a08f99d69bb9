"""Who is on the other end of an association: the rules that turn what a peer claims into a Caller.

A peer sends a calling AE title; it arrives from an address; under TLS it shows a certificate.
None of these is an identity on its own. A registered peer is the caller only when all three
agree with its registration: the AE title names exactly one peer, the address matches its host
(unless it was registered with ``--any-host``) and the certificate is the one it is bound to
(when it was bound). Everything else is nobody, with the reason kept for the audit trail. The
local admin is never produced here: only the CLI builds it (``Caller.local_admin``).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
import socket
import time
from typing import Sequence

from pacsnode.model import Caller, Peer

PRINTABLE_AET = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE: 16 chars, no backslash, no control
FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
_CN_OID = bytes((0x55, 0x04, 0x03))  # 2.5.4.3 commonName


def calling_aet_problem(raw: str) -> str:
    """Why a calling AE title names nobody ("" when it is well formed).

    Leading and trailing spaces are not significant in an AE title (PS3.5 6.2), so they are
    ignored; what is left must be 1-16 printable characters. A blank title, NUL padding or a
    control character never reaches the peer registry.
    """
    text = raw.strip(" ")
    if not text:
        return "blank calling AE title"
    if not PRINTABLE_AET.match(text):
        return "calling AE title has NUL, control or non-ASCII characters"
    return ""


def identify(candidates: Sequence[Peer], calling_aet: str, host: str,
             peer_certificate: bytes | None) -> Caller:
    """The Caller for an association; ``candidates`` are the peers registered with that AE title."""
    claimed = calling_aet.strip(" ")
    problem = calling_aet_problem(calling_aet)
    if problem:
        return Caller.nobody(claimed, host, refused=problem)
    if not candidates:
        return Caller.nobody(claimed, host)  # simply unknown: not a refusal of a registered peer
    if len(candidates) > 1:  # only an index older than the uniqueness rule can hold this
        names = ", ".join(p.name for p in candidates)
        return Caller.nobody(claimed, host, refused=f"AE title {claimed} is registered for several peers ({names})")
    peer = candidates[0]
    if peer.check_host and not host_matches(peer.host, host):
        return Caller.nobody(claimed, host, refused=f"peer {peer.name} called from {host or 'an unknown address'}, "
                                                     f"registered host is {peer.host}")
    if peer.cert_bound:
        mismatch = certificate_mismatch(peer, peer_certificate)
        if mismatch:
            return Caller.nobody(claimed, host, refused=f"peer {peer.name}: {mismatch}")
    return Caller.registered(peer, host)


def certificate_mismatch(peer: Peer, der: bytes | None) -> str:
    """Why ``der`` is not the certificate ``peer`` is bound to ("" when it is)."""
    if not der:
        return "no TLS client certificate, and this peer is bound to one"
    if peer.cert_fingerprint and fingerprint(der) != peer.cert_fingerprint:
        return "TLS certificate fingerprint differs from the registered one"
    if peer.cert_subject and subject_common_name(der) != peer.cert_subject:
        return "TLS certificate subject CN differs from the registered one"
    return ""


def fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate, lowercase hex (``openssl x509 -fingerprint -sha256`` without colons)."""
    return hashlib.sha256(der).hexdigest()


def normalise_fingerprint(text: str) -> str:
    """``AB:CD:...`` or ``abcd...`` → 64 lowercase hex digits; ValueError otherwise."""
    value = text.replace(":", "").replace(" ", "").lower()
    if not FINGERPRINT.match(value):
        raise ValueError(f"{text!r} is not a SHA-256 fingerprint (64 hex digits, colons allowed)")
    return value


def host_matches(registered: str, address: str) -> bool:
    """Whether ``address`` (the peer's IP) is ``registered`` (an IP or a name resolving to it)."""
    if not address or not registered:
        return False
    try:
        seen = _ip(address)
    except ValueError:
        return False
    try:
        return _ip(registered) == seen
    except ValueError:
        pass
    return seen in _resolved(registered.lower(), int(time.monotonic() // RESOLVE_SECONDS))


RESOLVE_SECONDS = 60  # a peer registered by name is resolved at most once a minute, not per C-STORE


@functools.lru_cache(maxsize=256)
def _resolved(name: str, _period: int) -> frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses ``name`` resolves to (empty when it does not: then no address matches)."""
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return frozenset()
    found = set()
    for info in infos:
        try:
            found.add(_ip(str(info[4][0])))
        except ValueError:
            continue
    return frozenset(found)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def subject_common_name(der: bytes) -> str:
    """The subject CN of a DER X.509 certificate ("" when absent or unreadable).

    A small DER walk (Certificate → tbsCertificate → subject), so that binding a peer to its
    certificate needs no extra dependency.
    """
    try:
        _tag, start, end = _tlv(der, 0)  # Certificate
        _tag, start, end = _tlv(der, start)  # tbsCertificate
        fields = _children(der, start, end)
        if fields and fields[0][0] == 0xA0:  # explicit version
            fields = fields[1:]
        _tag, s_start, s_end = fields[4]  # serial, signature, issuer, validity, subject
        for _set_tag, set_start, set_end in _children(der, s_start, s_end):
            for _seq_tag, a_start, a_end in _children(der, set_start, set_end):
                parts = _children(der, a_start, a_end)
                if len(parts) == 2 and der[parts[0][1]:parts[0][2]] == _CN_OID:
                    tag, v_start, v_end = parts[1]
                    raw = der[v_start:v_end]
                    return raw.decode("utf-16-be") if tag == 0x1E else raw.decode("utf-8", "replace")
    except (IndexError, ValueError):
        return ""
    return ""


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    tag = data[pos]
    length = data[pos + 1]
    start = pos + 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(data[start:start + count], "big")
        start += count
    end = start + length
    if end > len(data):
        raise ValueError("DER value runs past the end")
    return tag, start, end


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    pos = start
    while pos < end:
        tag, child_start, child_end = _tlv(data, pos)
        out.append((tag, child_start, child_end))
        pos = child_end
    return out
