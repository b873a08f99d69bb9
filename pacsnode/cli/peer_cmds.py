"""Peer registry commands and C-ECHO."""

from __future__ import annotations

import click

from pacsnode.cli.app import main, open_node, print_json, print_table
from pacsnode.model import ALL_PERMISSIONS


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
@click.option("--aet", required=True, help="The peer's AE title (unique among peers).")
@click.option("--host", required=True, help="The peer's address: an IP address or a resolvable name.")
@click.option("--port", required=True, type=int, help="The peer's DICOM port.")
@click.option("--institution", default="", help="Institution code (recognition.toml, or this node's own).")
@click.option("--permissions", default=",".join(ALL_PERMISSIONS), show_default=True,
              help="Comma-separated subset of echo,store,find,move,get.")
@click.option("--any-host", is_flag=True,
              help="Accept this AE title from any address (default: only from --host).")
@click.option("--check-host", is_flag=True, hidden=True, help="The default now; kept for old scripts.")
@click.option("--tls", is_flag=True, help="Talk DICOM TLS to this peer (our [tls] CA verifies its certificate).")
@click.option("--cert-fingerprint", default="", metavar="SHA256HEX",
              help="Bind the AE title to this TLS certificate (SHA-256 of its DER, colons allowed).")
@click.option("--cert-subject", default="", metavar="CN",
              help="Bind the AE title to certificates whose subject CN is this.")
@click.option("--replace", is_flag=True, help="Replace a peer of the same name.")
@click.pass_context
def peer_add(ctx: click.Context, name: str, aet: str, host: str, port: int, institution: str, permissions: str,
             any_host: bool, check_host: bool, tls: bool, cert_fingerprint: str, cert_subject: str,
             replace: bool) -> None:
    """Register a peer.

    An association claiming the peer's AE title is the peer only from --host (unless
    --any-host) and, when bound with --cert-fingerprint/--cert-subject, only over TLS with
    that certificate; otherwise it is nobody (echo, and store if accept_from = "any").

    \b
    Example:
      pacsnode peer add county --aet CTY_PACS --host 10.0.0.7 --port 11112 --institution CTY001
      pacsnode peer add county --aet CTY_PACS --host 10.0.0.7 --port 2762 --institution CTY001 \\
          --tls --cert-subject cty-pacs.example.org --replace
    """
    from pacsnode.peer_spec import PeerSpec, PeerSpecError, build_peer

    try:
        built = build_peer(PeerSpec(name, aet, host, port, institution, permissions, any_host, check_host, tls,
                                    cert_fingerprint, cert_subject))
    except PeerSpecError as exc:
        raise click.BadParameter(str(exc), param_hint=exc.option or None) from None
    node = open_node(ctx)
    try:
        node.add_peer(built, replace=replace)
    finally:
        node.close()
    click.echo(f"peer {name} = {aet}@{host}:{port}")
    if tls and not (built.cert_fingerprint or built.cert_subject):
        click.echo("Warning: any certificate our CA signed may claim this AE title; bind it with "
                   "--cert-fingerprint or --cert-subject", err=True)


@peer.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def peer_list(ctx: click.Context, as_json: bool) -> None:
    """List registered peers.

    \b
    Example:
      pacsnode peer list --json
    """
    from pacsnode.peer_spec import peer_rows

    node = open_node(ctx)
    rows = peer_rows(node.peers.list())
    node.close()
    if as_json:
        print_json(rows)
    else:
        for row in rows:
            row["host_check"] = "on" if row["check_host"] else "any host"
            row["bound_to"] = ("sha256 " + row["cert_fingerprint"][:12] + "…") if row["cert_fingerprint"] else (
                f"CN={row['cert_subject']}" if row["cert_subject"] else "")
        print_table(rows, ["name", "aet", "host", "port", "institution", "permissions", "tls", "host_check",
                           "bound_to"])


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
