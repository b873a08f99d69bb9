"""``pacsnode status``: the node's health (click glue over ``pacsnode.health.node_health``)."""

from __future__ import annotations

import click

from pacsnode.cli.app import main, open_node
from pacsnode.cli.output import print_json, print_table, safe


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (what /api/admin/health returns).")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """The node's health: storage free, index, DICOM listener, workers, the latest refusals and failures.

    Exit code 0 when the node is ready (index answers, storage folder present), 1 otherwise.

    \b
    Example:
      pacsnode status --json
    """
    from pacsnode.health import node_health

    node = open_node(ctx)
    try:
        health = node_health(node)
    finally:
        node.close()
    if as_json:
        print_json(health)
    else:
        s, i, li, w = health["storage"], health["index"], health["listener"], health["workers"]
        click.echo(f"node {safe(health['aet'])} ({safe(health['institution'])}): "
                   f"{'ready' if health['ready'] else 'NOT READY'}")
        click.echo(f"storage {safe(s['path'])}: {s['free_bytes'] / 2**30:.1f} GiB free of "
                   f"{s['total_bytes'] / 2**30:.1f} GiB ({s['free_percent']}%){'' if s['ok'] else ' LOW'}")
        click.echo(f"index: {'ok' if i['ok'] else 'ERROR ' + safe(i['error'])}")
        click.echo(f"listener {safe(li['host'])}:{li['port']}: {'accepting' if li['accepting'] else 'not accepting'}")
        click.echo(f"workers: {w['running']} running, {w['configured']} configured")
        if health["last_errors"]:
            click.echo("latest refusals and failures:")
            print_table(health["last_errors"], ["at", "action", "outcome", "peer_name", "study_uid", "detail"])
    if not health["ready"]:
        ctx.exit(1)
