"""SSL contexts for DICOM TLS, built from ``[tls]`` in pacsnode.toml.

Server side: our certificate, TLS 1.2+ (BCP 195), and, when mutual authentication is
required, peer certificates verified against the configured CA. Client side: the peer's
certificate is always verified against the CA (an unverified TLS connection would only
look safe); ours is presented when configured.
"""

from __future__ import annotations

import ssl

from pacsnode.config import NodeConfig
from pacsnode.errors import ConfigError


def _load(context: ssl.SSLContext, config: NodeConfig) -> ssl.SSLContext:
    tls = config.tls
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if tls.certificate:
            context.load_cert_chain(str(config.home / tls.certificate), str(config.home / tls.private_key))
        if tls.ca_certificates:
            context.load_verify_locations(str(config.home / tls.ca_certificates))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"[tls]: cannot load certificates ({exc})") from None
    return context


def server_context(config: NodeConfig) -> ssl.SSLContext | None:
    """The listening side's context, or None when TLS is off."""
    if not config.tls.enabled:
        return None
    context = _load(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), config)
    if config.tls.require_client_certificate:
        context.verify_mode = ssl.CERT_REQUIRED
    elif config.tls.ca_certificates:
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def client_context(config: NodeConfig) -> ssl.SSLContext:
    """The context for an outgoing association to a peer registered with TLS."""
    if not config.tls.ca_certificates:
        raise ConfigError("[tls].ca_certificates is empty: a TLS peer's certificate cannot be verified")
    context = _load(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), config)
    context.check_hostname = config.tls.verify_peer_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    return context
