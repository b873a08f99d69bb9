"""Registering peers and checking institution codes: the ``peer add`` side of ``Node``.

Moved out of ``node.py`` (module size): ``Node.add_peer``, ``known_institutions``,
``own_institution_problem``, ``require_known_institution`` and ``resolve_peer`` delegate
here. What a typo would turn into a hole (AE title, host, port, an institution the rules do
not know) is refused before anything is written.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import TYPE_CHECKING

from pacsnode.config import validate_aet, validate_host, validate_port
from pacsnode.errors import ConfigError, PeerNotFound
from pacsnode.model import Peer

if TYPE_CHECKING:
    from pacsnode.node import Node


def add_peer(node: Node, peer: Peer, replace: bool = False) -> None:
    """Register a peer once what a typo would turn into a hole is checked: AE title, host,
    port, institution (known to recognition.toml or this node's own); AE titles unique.
    Leading/trailing spaces are not part of an AE title (PS3.5 6.2): " CTY_PACS" was stored
    as a second peer next to CTY_PACS, passing the uniqueness check."""
    peer = dataclasses.replace(peer, aet=peer.aet.strip(" "))
    validate_aet(peer.aet, "--aet")
    validate_host(peer.host, "--host")
    validate_port(peer.port, "--port")
    node.require_known_institution(peer.institution, "--institution")
    node.peers.add(peer, replace=replace)


def known_institutions(node: Node) -> list[str]:
    """Institution codes this node can decide for: recognition.toml's, and its own."""
    codes = [i.code for i in node.regional.region.institutions] if node.regional.region else []
    if node.config.institution and node.config.institution not in codes:
        codes.append(node.config.institution)
    return codes


def own_institution_problem(node: Node) -> str:
    """Why ``[node] institution`` is not one recognition.toml knows ("" when it is, or no rules).

    A node whose own institution the rules do not know would decide every peer's access
    and every recognition as if it belonged to nobody; ``serve`` refuses it, ``init`` warns.
    """
    code, region = node.config.institution, node.regional.region
    if not code or region is None or region.institution(code) is not None:
        return ""
    codes = [i.code for i in region.institutions]
    close = difflib.get_close_matches(code, codes, n=1, cutoff=0.5)
    return (f"{node.config.home / 'pacsnode.toml'}: [node].institution = {code!r} is not an institution of "
            f"{node.config.recognition_path}" + (f"; did you mean {close[0]!r}?" if close else
                                                 f"; known: {', '.join(codes)}"))


def require_known_institution(node: Node, code: str, where: str) -> None:
    """Refuse an institution code the rules do not know (empty = none, allowed)."""
    known = node.known_institutions()
    if code and code not in known:
        close = difflib.get_close_matches(code, known, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}?" if close else (
            f"known: {', '.join(known)}" if known else f"{node.config.recognition_path.name} lists none")
        raise ConfigError(f"{where}: institution {code!r} is not in {node.config.recognition_path.name}; {hint}")


def resolve_peer(node: Node, spec: str) -> Peer:
    """A registered peer name, or an ad-hoc ``AET@HOST:PORT``."""
    if "@" in spec:
        aet, _, address = spec.partition("@")
        host, _, port = address.rpartition(":")
        if not (aet and host and port.isdigit()):
            raise PeerNotFound(f"{spec!r} is neither a peer name nor AET@HOST:PORT")
        return Peer(name=spec, aet=aet, host=host, port=int(port))
    return node.peers.get(spec)
