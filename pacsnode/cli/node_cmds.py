"""Node life-cycle commands: init, serve, import, studies, study show, check."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from pacsnode.cli.app import home_of, main, open_node, print_json, print_table
from pacsnode.cli.output import print_fields, safe
from pacsnode.config import CONFIG_NAME, parse_config, render_config, validate_aet, validate_port
from pacsnode.defaults import RULE_FILES, default_text
from pacsnode.errors import ConfigError, HomeError
from pacsnode.model import Caller
from pacsnode.web.ohif_install import study_path


@main.command()
@click.option("--aet", default="PACSNODE", show_default=True, help="This node's AE title.")
@click.option("--port", default=11112, show_default=True, type=int, help="DICOM listening port.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Listening address (set the LAN address in production).")
@click.option("--institution", default="", help="Code of the hospital this node belongs to (as in recognition.toml).")
@click.option("--force", is_flag=True, help="Overwrite the configuration of an existing home (data is kept).")
@click.option("--web", is_flag=True, help="Also serve DICOMweb and the viewer ([web] enabled = true, 127.0.0.1:8042).")
@click.option("--index-url", default="", help="Keep the index in PostgreSQL: postgresql://user@host:port/db "
              "([index] url; the password from PGPASSWORD or ~/.pgpass). Default: index.sqlite in the home.")
@click.pass_context
def init(ctx: click.Context, aet: str, port: int, host: str, institution: str, force: bool, web: bool,
         index_url: str) -> None:
    """Create a node home: pacsnode.toml, the rule files, the index and the storage folder.

    \b
    Example:
      pacsnode --home /srv/pacsnode init --aet COUNTY_PACS --port 11112 --host 10.0.0.5 --institution CTY001
    """
    home = home_of(ctx)
    if (home / CONFIG_NAME).exists() and not force:
        raise HomeError(f"{home} already holds a node; use --force to rewrite its configuration")
    validate_aet(aet, "--aet")
    validate_port(port, "--port")
    if index_url:
        parse_config({"index": {"url": index_url}}, home, source="--index-url")
        if '"' in index_url:
            raise ConfigError("--index-url must not contain a double quote")
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    home.chmod(0o700)  # patient data: only the node's own user (a folder made before init included)
    (home / CONFIG_NAME).write_text(render_config(aet, host, port, institution, web_enabled=web,
                                                                  index_url=index_url), encoding="utf-8")
    for name in RULE_FILES:  # the shipped rules (package data), so an installed wheel has them too
        if force or not (home / name).exists():
            (home / name).write_text(default_text(name), encoding="utf-8")
    node = open_node(ctx)
    problem = node.own_institution_problem()
    try:
        if problem:
            click.echo(f"Warning: {problem}; `pacsnode serve` refuses to start until it is fixed", err=True)
        click.echo(f"initialised {home} as {aet} on {host}:{port}"
                   + (f" for institution {institution}" if institution else ""))
        if web:
            _first_admin(node, institution, problem)
    finally:
        node.close()


def _first_admin(node: Any, institution: str, problem: str) -> None:
    """The web side's first account, its generated password shown this once (issue 15)."""
    from pacsnode import accounts

    if not institution or problem:
        click.echo("No admin account created: it needs a known --institution; add one with "
                   "`pacsnode user add admin --institution CODE --role admin`", err=True)
        return
    made = accounts.first_admin(node, institution)
    if made is None:
        click.echo("admin account kept: an active admin exists and its password is unchanged")
        return
    name, password = made
    click.echo(f"admin account {name} ({institution}), password shown only this once: {password}")
    click.echo(f"change it after your first login: pacsnode user passwd {name}")


@main.command()
@click.option("--port", type=int, default=None, help="Override the configured port.")
@click.option("--aet", default=None, help="Override the configured AE title.")
@click.option("--host", default=None, help="Override the configured listening address.")
@click.option("--workers", type=int, default=None, help="Processes sharing the port (default: [network] workers).")
@click.option("--worker-of", "worker_of", type=int, default=None, hidden=True,
              help="Internal: run as a worker of the serving process with this pid.")
@click.pass_context
def serve(ctx: click.Context, port: int | None, aet: str | None, host: str | None, workers: int | None,
          worker_of: int | None) -> None:
    """Serve DICOM in the foreground until SIGINT or SIGTERM.

    With more than one worker, the workers are processes sharing the listening port
    (SO_REUSEPORT) and the index (SQLite WAL): associations spread over the cores. The
    parent also watches for stable studies to run QC on.

    \b
    Example:
      pacsnode --home ./pacsnode-data serve --port 11112
      pacsnode --home ./pacsnode-data serve --workers 2
    """
    from pacsnode.config import load_config
    from pacsnode.dimse.server import DicomServer
    from pacsnode.node import Node
    from pacsnode.qc_service import StableStudyWatcher

    level = {0: logging.WARNING, 1: logging.INFO}.get(ctx.obj["verbose"], logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pynetdicom").setLevel(max(level, logging.WARNING))
    worker = worker_of is not None
    config = load_config(home_of(ctx))
    from pacsnode import logformat

    logformat.configure(level, config.log.format)  # [log] format = "json": one JSON object per line
    if aet is not None:
        validate_aet(aet, "--aet")
    config = config.with_overrides(port=port, aet=aet, host=host)
    count = workers if workers is not None else config.network.workers
    if count < 1:
        raise click.BadParameter("--workers must be at least 1")
    node = Node(config)
    if not worker:  # rows an unclean stop lost come back from their files before anyone is served
        from pacsnode.recovery import recover_if_alone

        recover_if_alone(node)
    node.home_lock.share(wait_seconds=5)  # held by every worker: restore refuses while we serve
    from pacsnode.durability import start_syncer

    syncer = start_syncer(node)  # fsync = true: one flush per instance (pacsnode.durability)
    problem = node.own_institution_problem()
    if problem:
        node.close()
        raise ConfigError(problem)
    if config.store.accept_from == "any" and config.host not in ("127.0.0.1", "::1", "localhost"):
        logging.getLogger(__name__).warning(
            "[store] accept_from = \"any\" on %s: any calling AE may store (never query or retrieve); "
            "set \"registered\" once the modalities are registered peers", config.host)
    server = DicomServer(node, reuse_port=count > 1 or worker, clean_temp=not worker)
    # The web side first: it installs the metrics observers on the node, and a worker's DIMSE
    # listener takes associations the moment it is bound (stores before then went uncounted).
    web = _start_web(node, reuse_port=count > 1 or worker)
    server.start()
    children = [] if worker else _spawn_workers(ctx, config.home, server.port, count - 1)
    watcher = None
    if not worker and config.qc.watch_stable:
        watcher = StableStudyWatcher(node.qc, config.store.stable_seconds)
        watcher.start()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    if not worker:
        logformat.status(f"pacsnode {config.aet} listening on {config.host}:{server.port} (home {config.home}"
                         + (f", {count} workers" if count > 1 else "") + ")", config.log.format)
        if web is not None:
            site = f"http://{config.web.host}:{web.port}"
            logformat.status(f"DICOMweb on {site}/dicom-web", config.log.format)
            logformat.status(f"workspace: {site}/patients  viewer: {site}/viewer/", config.log.format)
    while not stop.wait(0.5):
        if children and any(child.poll() is not None for child in children):
            logging.getLogger(__name__).error("a worker process exited; stopping")
            break
        if worker and os.getppid() != worker_of:  # the serving parent died (even by SIGKILL): stop too
            break
    if not worker:
        logformat.status("shutting down", config.log.format)
    if watcher is not None:
        watcher.stop()
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    if web is not None:
        web.stop()
    server.stop()
    for child in children:
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
    if syncer is not None:
        syncer.stop()
    node.close()


def _start_web(node: Any, reuse_port: bool) -> Any:
    """DICOMweb beside DIMSE when ``[web] enabled`` (every worker serves HTTP too)."""
    if not node.config.web.enabled:
        return None
    from pacsnode.web import metrics_dir

    metrics_dir.prepare(node.config.home, clean=not reuse_port or os.environ.get(metrics_dir.ENV) is None)
    from pacsnode.web.server import WebServer

    web = WebServer(node, reuse_port=reuse_port)
    web.start()
    if node.config.web.host not in ("127.0.0.1", "::1", "localhost") and not reuse_port:
        click.echo(f"Warning: DICOMweb listens on {node.config.web.host} in plain HTTP; tokens and cookies "
                   "cross the network in clear unless a TLS proxy is in front", err=True)
    return web


def _spawn_workers(ctx: click.Context, home: Path, port: int, count: int) -> list[subprocess.Popen[bytes]]:
    """Start ``count`` more serving processes on the same port (the parent's listener is bound)."""
    args = [sys.executable, "-m", "pacsnode", "--home", str(home)] + ["-v"] * ctx.obj["verbose"]
    return [subprocess.Popen([*args, "serve", "--worker-of", str(os.getpid()), "--port", str(port)])
            for _ in range(count)]


@main.command(name="import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.pass_context
def import_(ctx: click.Context, paths: tuple[Path, ...]) -> None:
    """Import DICOM files and folders (recursive) into the node.

    \b
    Example:
      pacsnode import sample_dicom/ /media/cdrom/DICOM
    """
    from pacsnode.node import iter_files

    node = open_node(ctx)
    files = list(iter_files(paths))
    with click.progressbar(length=len(files), label="importing", file=sys.stderr) as bar:
        report = node.import_paths(files, progress=lambda _p: bar.update(1), caller=Caller.local_admin())
    node.close()
    click.echo(f"stored {report.stored}, duplicate {report.duplicate}, replaced {report.replaced}, "
               f"rejected {len(report.rejected)}")
    for path, reason in report.rejected:
        click.echo(f"rejected {safe(path)}: {safe(reason)}")


@main.command()
@click.option("--patient-id", default=None, help="Only this Patient ID.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.pass_context
def studies(ctx: click.Context, patient_id: str | None, as_json: bool) -> None:
    """List studies, one row each.

    \b
    Example:
      pacsnode studies --patient-id P0001 --json
    """
    node = open_node(ctx)
    rows = [{**asdict(s), "viewer_url": study_path(s.study_uid)} for s in node.studies(patient_id=patient_id)]
    node.close()
    if as_json:
        print_json(rows)
    else:
        print_table(rows, ["study_uid", "patient_id", "issuer_of_patient_id", "patient_name", "study_date",
                           "modalities", "series_count", "instance_count", "institution_name"])


@main.group()
def study() -> None:
    """Look at one study.

    \b
    Example:
      pacsnode study show 1.2.826.0.1.3680043.10.1078.1.2
    """


@study.command(name="show")
@click.argument("uid")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def study_show(ctx: click.Context, uid: str, as_json: bool) -> None:
    """Show a study with its series and instances.

    \b
    Example:
      pacsnode study show 1.2.826.0.1.3680043.10.1078.1.1 --json
    """
    node = open_node(ctx)
    summary, series = node.study(uid)
    node.close()
    data: dict[str, Any] = asdict(summary)
    data["series"] = series
    data["viewer_url"] = study_path(summary.study_uid)
    web = node.config.web
    if as_json:
        print_json(data)
        return
    keys = ("study_uid", "patient_id", "issuer_of_patient_id", "patient_name", "study_date", "study_time",
            "accession_number", "study_description", "institution_name", "modalities")
    print_fields([(key, data[key]) for key in keys])
    if web.enabled:
        click.echo(f"viewer {safe(f'http://{web.host}:{web.port}' + data['viewer_url'])}")
    else:
        click.echo(f"viewer {safe(data['viewer_url'])} (served when [web] enabled = true)")
    for item in series:
        click.echo(f"series {safe(item['series_number'])} {safe(item['modality'])} "
                   f"'{safe(item['series_description'])}' {safe(item['series_uid'])} ({item['instance_count']} instances)")
        for inst in item["instances"]:
            rejected = inst.get("rejected") or {}
            flag = (f" REJECTED {safe(rejected['reason_code'])} {safe(rejected['reason_meaning'])} "
                    f"(sent by {safe(rejected['sent_by'])})" if rejected.get("hidden") == "rejected" else
                    " REJECTION NOTE" if rejected.get("hidden") else "")  # hidden from peers
            click.echo(f"  #{safe(inst['instance_number'])} {safe(inst['sop_instance_uid'])} {inst['size']} B "
                       f"{safe(inst['transfer_syntax'])}{flag}")


@main.command()
@click.option("--repair", is_flag=True, help="Remove orphan and temporary files, drop rows whose file is gone "
              "(safe next to a running server: each is re-checked at the moment it is removed).")
@click.option("--quick", is_flag=True, help="Compare sizes only, skip checksums.")
@click.pass_context
def check(ctx: click.Context, repair: bool, quick: bool) -> None:
    """Compare the index with the files on disk.

    Exit code 0 when consistent (or repaired), 1 when problems remain. Safe next to a running
    server: files a store has not committed yet (younger than 5 minutes) and the temporary
    files of running processes are left alone; with no server running, --repair removes
    orphans at once. After an unclean stop (a serving process killed, a power cut), --repair
    first indexes again the files whose rows the stop lost (as serve does when it starts);
    next to a running server it removes no orphan until that has run. Until then check lists
    those files as "unindexed file awaiting recovery" (exit code 1): do not delete them.

    \b
    Example:
      pacsnode check --repair
    """
    node = open_node(ctx)
    report = node.check(repair=repair, verify_checksums=not quick)
    node.close()
    for label, items in (("orphan file", report.orphan_files), ("missing file", report.missing_files),
                         ("changed file", report.changed_files), ("temporary file", report.temp_files)):
        for item in items:
            click.echo(f"{label}: {safe(item)}")
    for item in report.awaiting_recovery:
        click.echo(f"unindexed file awaiting recovery: {safe(item)}")
    if report.awaiting_recovery:  # rows an unclean stop lost: re-indexed from these files, never deleted
        click.echo(f"{len(report.awaiting_recovery)} file(s) without a row after an unclean stop: do not delete "
                   "them (acknowledged instances may be among them); the next start of serve, or check --repair "
                   "with no server running, indexes them again", err=True)
    if report.in_flight or report.temp_in_use:  # a server is storing: not problems, left alone
        click.echo(f"left alone: {len(report.in_flight)} unindexed file(s) younger than "
                   f"{int(node.REPAIR_GRACE_SECONDS)} s (a store may be committing them), "
                   f"{report.temp_in_use} temporary file(s) of running processes", err=True)
    if report.clean:
        click.echo("index and files agree")
    elif report.repaired:
        click.echo("repaired (changed files are reported, never deleted)")
        if report.changed_files or report.awaiting_recovery:
            ctx.exit(1)
    elif report.awaiting_recovery and not (report.orphan_files or report.missing_files or report.changed_files
                                           or report.temp_files):
        click.echo("files await recovery after an unclean stop; nothing else found")
        ctx.exit(1)
    else:
        click.echo("problems found; run with --repair to fix orphans and missing rows")
        ctx.exit(1)
