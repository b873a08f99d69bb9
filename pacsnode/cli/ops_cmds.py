"""Operations commands: backup and restore of a node home."""

from __future__ import annotations

from pathlib import Path

import click

from pacsnode.cli.app import home_of, main, open_node


@main.command(name="backup")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.pass_context
def backup_cmd(ctx: click.Context, dest: Path) -> None:
    """Back up the node into DEST, a new folder, while it keeps serving.

    Copies a consistent snapshot of the index (SQLite online backup), every instance file
    that snapshot points to (checksums verified, fsync'ed), pacsnode.toml and the rule files,
    and writes DEST/manifest.json last. Instances stored after the snapshot are not included.
    TLS files outside the home are copied too (the backup's pacsnode.toml points to the copies).
    An indexed file missing from the live storage is listed, the rest backed up, exit code 1.

    \b
    Example:
      pacsnode --home /srv/pacsnode backup /mnt/backup/pacsnode-2026-03-01
    """
    from pacsnode.backup import backup

    node = open_node(ctx)
    try:
        report = backup(node, dest)
    finally:
        node.close()
    click.echo(f"backed up {report.instances} instance(s) in {report.studies} study(ies), {report.bytes} bytes, "
               f"to {dest} in {report.seconds:.1f}s")
    if report.missing:  # the rest is backed up (and restorable); the live node has lost these
        for relative in report.missing:
            click.echo(f"missing file: {relative}", err=True)
        click.echo(f"{len(report.missing)} indexed file(s) are missing from the live storage and are not in the "
                   "backup (listed above, and in manifest.json); run pacsnode check", err=True)
        ctx.exit(1)


@main.command(name="restore")
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--force", is_flag=True,
              help="Restore into a home that is not empty, replacing its index, storage and configuration "
                   "(stop its server first).")
@click.option("--storage-url", default="", metavar="URL",
              help="Keep the restored node's files in this S3 bucket/prefix (s3://bucket/prefix?endpoint=...) "
                   "instead of the one the backup's pacsnode.toml names; the restored pacsnode.toml names it.")
@click.pass_context
def restore_cmd(ctx: click.Context, src: Path, force: bool, storage_url: str) -> None:
    """Restore a backup made by `pacsnode backup` into the home given by --home.

    Every checksum in the backup's manifest is verified before the home is touched; then
    `check` runs on the restored home. Exit code 1 when the check finds problems. Nothing is
    written outside the home (but into the S3 bucket the restored pacsnode.toml names: the
    files go there), and a home a server is running on is refused. Restoring an S3 node's
    backup next to the live node, give it its own prefix with --storage-url.

    \b
    Example:
      pacsnode --home /srv/pacsnode-restored restore /mnt/backup/pacsnode-2026-03-01
    """
    from pacsnode.backup import restore

    home = home_of(ctx)
    report = restore(src, home, force=force, storage_url=storage_url)
    click.echo(f"restored {report.instances} instance(s) in {report.studies} study(ies), {report.bytes} bytes, "
               f"into {home}")
    for problem in report.problems:
        click.echo(problem)
    if report.check_clean:
        click.echo("check: index and files agree")
    else:
        click.echo("check: problems found (see above); run pacsnode check", err=True)
        ctx.exit(1)
