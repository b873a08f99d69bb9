"""What an admin may change from the browser: peers, tokens and users, through the CLI's own functions.

Each action takes the node, the admin's name and the submitted fields (text, from a form or a
JSON body) and calls exactly what the command does: ``build_peer`` + ``Node.add_peer`` like
``peer add``, ``access_tokens.create``/``revoke`` like ``token``, ``accounts.add``/``disable``/
``set_password`` like ``user``. So a value the CLI refuses is refused here with the same words.
An action returns what the page shows once (a new token, a generated password); errors are
``PacsnodeError`` for the page to show in the form.
"""

from __future__ import annotations

import secrets
from typing import Any, Callable

from pacsnode import access_tokens, accounts
from pacsnode.errors import NotFound, PacsnodeError
from pacsnode.node import Node
from pacsnode.peer_spec import PeerSpec, build_peer

Fields = dict[str, Any]
Action = Callable[[Node, str, Fields], dict[str, str]]


def _text(fields: Fields, key: str, limit: int = 1000) -> str:
    value = fields.get(key, "")
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    return str(value if value is not None else "")[:limit]


def _flag(fields: Fields, key: str) -> bool:
    value = fields.get(key, "")
    return value is True or str(value).strip().lower() in ("on", "true", "1", "yes")


def _name(fields: Fields) -> str:
    name = _text(fields, "name", 200).strip()
    if not name:
        raise PacsnodeError("name is missing")
    return name


# -- peers --------------------------------------------------------------------------------
def _peer_spec(fields: Fields) -> PeerSpec:
    return PeerSpec(_text(fields, "name", 200), _text(fields, "aet", 100), _text(fields, "host", 300),
                    _text(fields, "port", 20), _text(fields, "institution", 100), _text(fields, "permissions", 200),
                    any_host=_flag(fields, "any_host"), tls=_flag(fields, "tls"),
                    cert_fingerprint=_text(fields, "cert_fingerprint", 200),
                    cert_subject=_text(fields, "cert_subject", 200))


def peer_add(node: Node, _admin: str, fields: Fields) -> dict[str, str]:
    peer = build_peer(_peer_spec(fields))
    node.add_peer(peer, replace=False)
    return {"peer": peer.name}


def peer_edit(node: Node, _admin: str, fields: Fields) -> dict[str, str]:
    peer = build_peer(_peer_spec(fields))
    node.peers.get(peer.name)  # editing changes a peer that exists; it never creates one
    node.add_peer(peer, replace=True)
    return {"peer": peer.name}


def peer_remove(node: Node, _admin: str, fields: Fields) -> dict[str, str]:
    name = _name(fields)
    node.peers.remove(name)
    return {"peer": name}


# -- tokens -------------------------------------------------------------------------------
def token_create(node: Node, _admin: str, fields: Fields) -> dict[str, str]:
    name = _name(fields)
    permissions = access_tokens.parse_permissions(_text(fields, "permissions", 200))
    value = access_tokens.create(node, name, _text(fields, "institution", 100).strip(),
                                 _text(fields, "peer", 200).strip(), permissions)
    return {"name": name, "token": value}


def token_revoke(node: Node, _admin: str, fields: Fields) -> dict[str, str]:
    name = _name(fields)
    access_tokens.revoke(node, name)
    return {"name": name}


# -- users --------------------------------------------------------------------------------
def _password(fields: Fields) -> tuple[str, bool]:
    """The typed password, or a generated one (24 characters, 144 bits) to show once."""
    typed = _text(fields, "password", accounts.MAX_PASSWORD + 1)
    return (typed, False) if typed else (secrets.token_urlsafe(18), True)


def user_add(node: Node, _admin: str, fields: Fields) -> dict[str, str]:
    name = _name(fields)
    password, generated = _password(fields)
    accounts.add(node, name, _text(fields, "institution", 100).strip(), _text(fields, "role", 40).strip(), password)
    return {"name": name, **({"password": password} if generated else {})}


def user_disable(node: Node, admin: str, fields: Fields) -> dict[str, str]:
    name = _name(fields)
    if name == admin:  # an admin locking themselves out mid-session is a mistake, not an action
        raise PacsnodeError("you cannot disable your own account; ask another admin or use `pacsnode user disable`")
    accounts.disable(node, name)
    return {"name": name}


def user_passwd(node: Node, _admin: str, fields: Fields) -> dict[str, str]:
    name = _name(fields)
    if not any(u["name"] == name and not u["disabled_at"] for u in accounts.listing(node)):
        raise NotFound(f"no active user named {name!r}")
    password, generated = _password(fields)
    accounts.set_password(node, name, password)
    return {"name": name, **({"password": password} if generated else {})}


ACTIONS: dict[str, dict[str, Action]] = {
    "peers": {"add": peer_add, "edit": peer_edit, "remove": peer_remove},
    "tokens": {"create": token_create, "revoke": token_revoke},
    "users": {"add": user_add, "disable": user_disable, "passwd": user_passwd},
}
SECRETS = ("token", "password")  # shown once, never audited


def listing(node: Node, kind: str) -> list[dict[str, Any]]:
    """What ``peer list --json``, ``token list --json`` and ``user list --json`` print."""
    from pacsnode.peer_spec import peer_rows

    if kind == "peers":
        return peer_rows(node.peers.list())
    if kind == "tokens":
        return access_tokens.rows(node)
    return accounts.listing(node)
