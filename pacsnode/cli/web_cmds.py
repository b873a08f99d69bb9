"""DICOMweb credentials: ``token create/list/revoke`` and ``user add/list/disable/passwd`` (click glue over
the ``pacsnode.access_tokens`` and ``pacsnode.accounts`` services)."""

from __future__ import annotations

import sys

import click

from pacsnode.cli.app import main, open_node
from pacsnode.cli.output import print_json, print_table


@main.group()
def token() -> None:
    """Bearer tokens for DICOMweb clients (QIDO/WADO/STOW-RS).

    \b
    Example:
      pacsnode token create viewer-cty --institution CTY001
      pacsnode token list
      pacsnode token revoke viewer-cty
    """


@token.command(name="create")
@click.argument("name")
@click.option("--institution", default="", help="Institution the token acts for (as in recognition.toml).")
@click.option("--peer", "peer_name", default="", help="Registered peer the token acts as (its institution).")
@click.option("--permissions", default="find,get", show_default=True,
              help="Comma list of find (QIDO), get (WADO), store (STOW).")
@click.pass_context
def token_create(ctx: click.Context, name: str, institution: str, peer_name: str, permissions: str) -> None:
    """Issue a token; it is printed once, alone on the last line, and only its hash is kept.

    A token of another institution is decided like a peer of that institution: it needs
    patient context and a relationship, exactly as on DIMSE.

    \b
    Example:
      TOKEN=$(pacsnode token create ohif --institution PROV001 --permissions find,get | tail -1)
    """
    from pacsnode import access_tokens

    node = open_node(ctx)
    try:
        value = access_tokens.create(node, name, institution, peer_name, access_tokens.parse_permissions(permissions))
    finally:
        node.close()
    click.echo(f"token {name} created; it is shown once, keep it secret:", err=True)
    click.echo(value)


@token.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def token_list(ctx: click.Context, as_json: bool) -> None:
    """List tokens (never the tokens themselves).

    \b
    Example:
      pacsnode token list --json
    """
    from pacsnode import access_tokens

    node = open_node(ctx)
    rows = access_tokens.rows(node)
    node.close()
    if as_json:
        print_json(rows)
    else:
        print_table(rows, ["name", "institution", "peer", "permissions", "created_at", "revoked_at"])


@token.command(name="revoke")
@click.argument("name")
@click.pass_context
def token_revoke(ctx: click.Context, name: str) -> None:
    """Revoke a token: the next request that shows it gets 401.

    \b
    Example:
      pacsnode token revoke ohif
    """
    from pacsnode import access_tokens

    node = open_node(ctx)
    try:
        access_tokens.revoke(node, name)
    finally:
        node.close()
    click.echo(f"token {name} revoked")


@main.group()
def user() -> None:
    """People who log in to the web side (minimal accounts; the workspace builds the full ones).

    \b
    Example:
      printf '%s\\n' "$PASSWORD" | pacsnode user add dr-li --institution PRV001 --role physician
    """


@user.command(name="add")
@click.argument("name")
@click.option("--institution", required=True, help="Institution the user belongs to (as in recognition.toml).")
@click.option("--role", required=True, type=click.Choice(["admin", "physician", "qc", "programme", "viewer"]),
              help="admin may also STOW; physician, qc and viewer read; programme reads reports only.")
@click.pass_context
def user_add(ctx: click.Context, name: str, institution: str, role: str) -> None:
    """Create a user; the password is read from standard input (one line), never from an option.

    \b
    Example:
      printf '%s\\n' "$PASSWORD" | pacsnode user add dr-li --institution PRV001 --role physician
    """
    from pacsnode import accounts

    data = sys.stdin.readline()  # click swaps sys.stdin under CliRunner too; get_text_stream is deprecated
    password = data[:-1] if data.endswith("\n") else data
    node = open_node(ctx)
    try:
        accounts.add(node, name, institution, role, password)
    finally:
        node.close()
    click.echo(f"user {name} added ({role}, {institution})")


@user.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def user_list(ctx: click.Context, as_json: bool) -> None:
    """List users (never their password hashes).

    \b
    Example:
      pacsnode user list --json
    """
    from pacsnode import accounts

    node = open_node(ctx)
    rows = accounts.listing(node)
    node.close()
    if as_json:
        print_json(rows)
    else:
        print_table(rows, ["name", "institution", "role", "created_at", "disabled_at"])


@user.command(name="disable")
@click.argument("name")
@click.pass_context
def user_disable(ctx: click.Context, name: str) -> None:
    """Disable a user: the account can no longer log in and its open sessions end.

    \b
    Example:
      pacsnode user disable dr-li
    """
    from pacsnode import accounts

    node = open_node(ctx)
    try:
        accounts.disable(node, name)
    finally:
        node.close()
    click.echo(f"user {name} disabled")


@user.command(name="passwd")
@click.argument("name")
@click.pass_context
def user_passwd(ctx: click.Context, name: str) -> None:
    """Set a new password, read from standard input (one line); the user's sessions end.

    \b
    Example:
      printf '%s\\n' "$PASSWORD" | pacsnode user passwd dr-li
    """
    from pacsnode import accounts

    data = sys.stdin.readline()  # click swaps sys.stdin under CliRunner too; get_text_stream is deprecated
    password = data[:-1] if data.endswith("\n") else data
    node = open_node(ctx)
    try:
        accounts.set_password(node, name, password)
    finally:
        node.close()
    click.echo(f"password of {name} changed")
