"""Query/Retrieve as an SCU: find, move, get, send."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pacsnode.cli.app import main, open_node, print_json, print_table
from pacsnode.cli.output import safe

if TYPE_CHECKING:  # pydicom is imported by the commands that need it (CLI start-up time)
    from pydicom.dataset import Dataset

LEVELS = click.Choice(["PATIENT", "STUDY", "SERIES", "IMAGE"], case_sensitive=False)
MODELS = click.Choice(["patient", "study"])


@main.command()
@click.argument("peer_spec", metavar="PEER")
@click.option("--model", type=MODELS, default="study", show_default=True, help="Information model.")
@click.option("--level", type=LEVELS, default="STUDY", show_default=True, help="Query/Retrieve level.")
@click.option("-k", "--key", "keys", multiple=True, help="KEY=VALUE (keyword or gggg,eeee); KEY alone asks for it back.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.pass_context
def find(ctx: click.Context, peer_spec: str, model: str, level: str, keys: tuple[str, ...], as_json: bool) -> None:
    """C-FIND on a peer and print the matches.

    \b
    Example:
      pacsnode find county --level STUDY -k PatientID=P0001 -k IssuerOfPatientID=CTY001
      pacsnode find ORTHANC@127.0.0.1:4242 -k "PatientName=ZHAO*" -k StudyDate=20261101-
    """
    from pacsnode.dicom.identifiers import DEFAULT_RETURN_KEYS, build_identifier, row_of
    from pacsnode.dimse import scu

    node = open_node(ctx)
    peer = node.resolve_peer(peer_spec)
    local = scu.LocalAE.of(node.config)
    node.close()
    identifier = build_identifier(level, keys)
    rows = [row_of(match) for match in scu.find(peer, local, identifier, model)]
    if as_json:
        print_json(rows)
        return
    columns = list(DEFAULT_RETURN_KEYS[level.upper()])
    for key in keys:
        name = key.partition("=")[0]
        if name in rows[0] if rows else False:
            columns.append(name) if name not in columns else None
    print_table(rows, columns)
    click.echo(f"{len(rows)} match(es)", err=True)


def _retrieve_identifier(level_uids: dict[str, str | None], model: str, patient_id: str | None) -> Dataset:
    from pacsnode.dicom.identifiers import build_identifier

    keys = [f"{k}={v}" for k, v in level_uids.items() if v]
    level = "SERIES" if level_uids.get("SeriesInstanceUID") else "STUDY"
    if model == "patient" and patient_id:
        keys.append(f"PatientID={patient_id}")
    return build_identifier(level, keys, with_defaults=False)


def _progress_line(state: object) -> None:
    s = state  # RetrieveProgress
    click.echo(f"\rremaining {s.remaining}  completed {s.completed}  failed {s.failed}  warning {s.warning}",  # type: ignore[attr-defined]
               nl=False, err=True)


def _finish(ctx: click.Context, state: object, what: str) -> None:
    s = state
    click.echo("", err=True)
    outcome = {0x0000: "Success", 0xB000: "Warning (some sub-operations failed)", 0xFE00: "Cancelled"}.get(
        s.status, f"Failure 0x{s.status:04X}")  # type: ignore[attr-defined]
    click.echo(f"{what}: {outcome}; completed {s.completed}, failed {s.failed}, warning {s.warning}"  # type: ignore[attr-defined]
               + (f" ({safe(s.comment)})" if s.comment else ""))  # type: ignore[attr-defined]
    for uid in s.failed_uids:  # type: ignore[attr-defined]
        click.echo(f"failed: {safe(uid)}")  # the peer's words: shown, never obeyed by the terminal
    if s.status not in (0x0000,):  # type: ignore[attr-defined]
        ctx.exit(1 if s.status != 0xB000 else 2)  # type: ignore[attr-defined]


@main.command()
@click.argument("peer_spec", metavar="PEER")
@click.option("--study", "study_uid", required=True, help="Study Instance UID.")
@click.option("--series", "series_uid", default=None, help="Only this Series Instance UID.")
@click.option("--dest", default=None, help="Destination AE title (default: this node, which must be running).")
@click.option("--model", type=MODELS, default="study", show_default=True)
@click.option("--patient-id", default=None, help="Patient ID (needed by the patient root model).")
@click.pass_context
def move(ctx: click.Context, peer_spec: str, study_uid: str, series_uid: str | None, dest: str | None, model: str,
         patient_id: str | None) -> None:
    """C-MOVE a study (or series) from a peer to a destination.

    \b
    Example:
      pacsnode move county --study 1.2.826.0.1.3680043.10.1078.2.1
      pacsnode move county --study 1.2.3 --dest WORKSTATION1
    """
    from pacsnode.dimse import scu

    node = open_node(ctx)
    peer = node.resolve_peer(peer_spec)
    local = scu.LocalAE.of(node.config)
    node.close()
    identifier = _retrieve_identifier({"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid}, model,
                                      patient_id)
    state = scu.move(peer, local, identifier, dest or local.aet, model, progress=_progress_line)
    _finish(ctx, state, "C-MOVE")


@main.command()
@click.argument("peer_spec", metavar="PEER")
@click.option("--study", "study_uid", required=True, help="Study Instance UID.")
@click.option("--series", "series_uid", default=None, help="Only this Series Instance UID.")
@click.option("--model", type=MODELS, default="study", show_default=True)
@click.option("--patient-id", default=None, help="Patient ID (needed by the patient root model).")
@click.pass_context
def get(ctx: click.Context, peer_spec: str, study_uid: str, series_uid: str | None, model: str,
        patient_id: str | None) -> None:
    """C-GET a study (or series) from a peer into this node's index.

    \b
    Example:
      pacsnode get county --study 1.2.826.0.1.3680043.10.1078.2.1
    """
    from pacsnode.dimse import scu
    from pacsnode.dimse.scu_receive import store_received

    node = open_node(ctx)
    peer = node.resolve_peer(peer_spec)
    identifier = _retrieve_identifier({"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid}, model,
                                      patient_id)
    try:
        state = scu.get(peer, scu.LocalAE.of(node.config), identifier, lambda event: store_received(event, node, peer),
                        model, progress=_progress_line)
    finally:
        node.close()
    _finish(ctx, state, "C-GET")


@main.command()
@click.argument("peer_spec", metavar="PEER")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--study", "study_uid", default=None, help="Send this study from the node.")
@click.option("--commit", is_flag=True, help="Then ask the peer for storage commitment and wait for its report.")
@click.option("--commit-timeout", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
              help="Seconds to wait for the storage commitment report.")
@click.pass_context
def send(ctx: click.Context, peer_spec: str, paths: tuple[Path, ...], study_uid: str | None, commit: bool,
         commit_timeout: float) -> None:
    """C-STORE a study of this node, or files, to a peer (TLS if the peer is registered so).

    \b
    Example:
      pacsnode send county --study 1.2.826.0.1.3680043.10.1078.2.1
      pacsnode send ORTHANC@127.0.0.1:4242 sample_dicom/CTY001
      pacsnode send county --study 1.2.3 --commit --commit-timeout 30
    """
    from pacsnode.dimse import commit_scu, sending
    from pacsnode.dimse.send_files import send_instances

    if bool(paths) == bool(study_uid):
        raise click.UsageError("give either --study UID or PATH..., not both")
    node = open_node(ctx)
    peer = node.resolve_peer(peer_spec)
    config = node.config
    files = node.files_to_send(None, list(paths)) if paths else []
    locations, unreadable = (node.study_to_send(study_uid) if study_uid else []), 0
    node.close()
    for path, sop_class, syntax in files:
        try:
            locations.append(sending.location_of_file(path, sop_class, syntax))
        except sending.CannotSend as exc:
            unreadable += 1
            click.echo(f"{'failed':8} {path} ({exc})")

    def report(path: str, code: int | None, comment: str) -> None:
        text = "Success" if code == 0 else (f"0x{code:04X}" if code is not None else "failed")
        click.echo(f"{text:8} {path}" + (f" ({comment})" if comment and code != 0 else ""))

    outcome = send_instances(peer, config.aet, locations, config, progress=report, commit=commit,
                             commit_timeout=commit_timeout)
    click.echo(f"sent {outcome.sent}, warning {outcome.warning}, failed {outcome.failed + unreadable}")
    failed = bool(outcome.failed or unreadable)
    if commit:
        result = outcome.commitment
        if result is None:
            click.echo(f"storage commitment: no report ({outcome.commitment_error})")
            failed = True
        else:
            click.echo(f"storage commitment {result.transaction_uid}: committed {len(result.committed)}, "
                       f"failed {len(result.failed)}")
            for _cls, uid, reason in result.failed:
                click.echo(f"not committed: {uid} (0x{reason:04X} {commit_scu.FAILURE_REASONS.get(reason, '')})")
            failed = failed or bool(result.failed) or len(result.committed) < len(outcome.stored)
    if failed:
        ctx.exit(1)
