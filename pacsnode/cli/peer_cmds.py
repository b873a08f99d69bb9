"""Peer registry commands and C-ECHO."""

from __future__ import annotations

from dataclasses import asdict

import click

from pacsnode.cli.app import main, open_node, print_json, print_table
from pacsnode.config import validate_aet, validate_port
from pacsnode.index.peers import ALL_PERMISSIONS
from pacsnode.model import Peer


@main.group()
def peer() -> None:
    """The registry of peers: other nodes, modalities, workstations.

    \b
    Example:
      pacsnode peer add county --aet CTY_PACS --host 10.0.0.7 --port 11112 --institution CTY001
      pacsnode peer list
    """


@peer.command(name="add")
@click.argument("name")
@click.option("--aet", required=True, help="The peer's AE title.")
@click.option("--host", required=True, help="The peer's address.")
@click.option("--port", required=True, type=int, help="The peer's DICOM port.")
@click.option("--institution", default="", help="Institution code the peer belongs to.")
@click.option("--permissions", default=",".join(ALL_PERMISSIONS), show_default=True,
              help="Comma-separated subset of echo,store,find,move,get.")
@click.option("--check-host", is_flag=True, help="Refuse associations from this AE title from any other address.")
@click.option("--tls", is_flag=True, help="Talk DICOM TLS to this peer (our [tls] CA verifies its certificate).")
@click.option("--replace", is_flag=True, help="Replace a peer of the same name.")
@click.pass_context
def peer_add(ctx: click.Context, name: str, aet: str, host: str, port: int, institution: str, permissions: str,
             check_host: bool, tls: bool, replace: bool) -> None:
    """Register a peer.

    \b
    Example:
      pacsnode peer add county --aet CTY_PACS --host 10.0.0.7 --port 11112 --institution CTY001
    """
    validate_aet(aet, "--aet")
    validate_port(port, "--port")
    perms = frozenset(p.strip() for p in permissions.split(",") if p.strip())
    node = open_node(ctx)
    node.add_peer(Peer(name, aet, host, port, institution, perms, check_host, tls), replace=replace)
    node.close()
    click.echo(f"peer {name} = {aet}@{host}:{port}")


@peer.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def peer_list(ctx: click.Context, as_json: bool) -> None:
    """List registered peers.

    \b
    Example:
      pacsnode peer list --json
    """
    node = open_node(ctx)
    rows = []
    for p in node.peers.list():
        row = asdict(p)
        row["permissions"] = sorted(p.permissions)
        rows.append(row)
    node.close()
    if as_json:
        print_json(rows)
    else:
        print_table(rows, ["name", "aet", "host", "port", "institution", "permissions", "tls"])


@peer.command(name="remove")
@click.argument("name")
@click.pass_context
def peer_remove(ctx: click.Context, name: str) -> None:
    """Remove a peer.

    \b
    Example:
      pacsnode peer remove county
    """
    node = open_node(ctx)
    node.peers.remove(name)
    node.close()
    click.echo(f"removed peer {name}")


@main.command()
@click.argument("peer_spec", metavar="PEER")
@click.pass_context
def echo(ctx: click.Context, peer_spec: str) -> None:
    """C-ECHO a peer: a registered name, or AET@HOST:PORT.

    \b
    Example:
      pacsnode echo county
      pacsnode echo ORTHANC@127.0.0.1:4242
    """
    from pacsnode.dimse import scu

    node = open_node(ctx)
    target = node.resolve_peer(peer_spec)
    local = scu.LocalAE.of(node.config)
    node.close()
    status, seconds = scu.echo(target, local)
    text = "Success" if status == 0 else f"0x{status:04X}"
    click.echo(f"C-ECHO {target.aet}@{target.host}:{target.port}: {text} in {seconds * 1000:.1f} ms")
    if status != 0:
        ctx.exit(1)
