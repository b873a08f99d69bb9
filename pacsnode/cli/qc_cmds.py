"""Quality-control commands: qc run/list/show/accept/reject/restore/report/preview."""

from __future__ import annotations

from pathlib import Path

import click

from pacsnode.cli.app import main, open_node, print_json, print_table
from pacsnode.cli.output import safe


@main.group()
def qc() -> None:
    """Quality control of stored studies: checks, review, previews, pass rates.

    \b
    Example:
      pacsnode qc list --status pending
      pacsnode qc accept 1.2.3 --grade 3 --reviewer "Dr Li"
    """


@qc.command(name="run")
@click.argument("study_uid", required=False)
@click.pass_context
def qc_run(ctx: click.Context, study_uid: str | None) -> None:
    """Run the automatic checks on one study, or on every study.

    \b
    Example:
      pacsnode qc run 1.2.826.0.1.3680043.10.1078.1.2
      pacsnode qc run
    """
    node = open_node(ctx)
    uids = [study_uid] if study_uid else [s.study_uid for s in node.studies()]
    for uid in uids:
        decision, outcomes = node.qc.run(uid)
        failed = sorted({o.code for o in outcomes if not o.passed and o.severity == "fail"})
        warned = sorted({o.code for o in outcomes if not o.passed and o.severity == "warn"})
        click.echo(f"{uid}: {decision.status.value}" + (f"; failed {', '.join(failed)}" if failed else "")
                   + (f"; warnings {', '.join(warned)}" if warned else ""))
    node.close()


@qc.command(name="list")
@click.option("--status", type=click.Choice(["pending", "accepted", "rejected", "needs-fix"]), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def qc_list(ctx: click.Context, status: str | None, as_json: bool) -> None:
    """List studies with their QC status.

    \b
    Example:
      pacsnode qc list --status pending
    """
    node = open_node(ctx)
    rows = node.qc.listing(status)
    node.close()
    if as_json:
        print_json(rows)
    else:
        print_table(rows, ["study_uid", "status", "grade", "study_date", "modalities", "institution_name",
                           "failed_checks", "warnings"])


@qc.command(name="show")
@click.argument("study_uid")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def qc_show(ctx: click.Context, study_uid: str, as_json: bool) -> None:
    """Each check of a study and its outcome, and the current status.

    \b
    Example:
      pacsnode qc show 1.2.826.0.1.3680043.10.1078.1.2
    """
    node = open_node(ctx)
    node.study(study_uid)  # NotFound for an unknown study
    row = node.regional_store.qc_status(study_uid) or {"status": "pending", "outcomes": []}
    node.close()
    if as_json:
        print_json(row)
        return
    click.echo(f"status: {safe(row['status'])}" + (f"  grade {safe(row.get('grade'))}" if row.get("grade") else "")
               + (f"  by {safe(row.get('reviewer'))}" if row.get("reviewer") else "")
               + (f"  ({safe(row.get('note'))})" if row.get("note") else ""))
    if not row["outcomes"]:
        click.echo("not checked yet: run `pacsnode qc run STUDY`")
    for outcome in row["outcomes"]:
        mark = "pass" if outcome["passed"] else outcome["severity"].upper()
        click.echo(f"  {mark:5} {safe(outcome['code']):20} {safe(outcome['message'])}")


@qc.command(name="accept")
@click.argument("study_uid")
@click.option("--grade", required=True, help="X-ray A/B/C/D (A best); CT/MR and others 3/2/1/0 (3 best).")
@click.option("--reviewer", required=True, help="Who reviewed.")
@click.option("--note", default="", help="Free text.")
@click.pass_context
def qc_accept(ctx: click.Context, study_uid: str, grade: str, reviewer: str, note: str) -> None:
    """Accept a study's quality with a grade.

    \b
    Example:
      pacsnode qc accept 1.2.3 --grade 3 --reviewer "Dr Li"
    """
    node = open_node(ctx)
    decision = node.qc.accept(study_uid, grade, reviewer, note)
    node.close()
    click.echo(f"{study_uid}: accepted, grade {decision.grade}, by {decision.reviewer}")


@qc.command(name="reject")
@click.argument("study_uid")
@click.option("--reason", "reason_code", default="113001", show_default=True,
              help="113001 Rejected for Quality Reasons, 113037/113038/113039, or needs-fix.")
@click.option("--reviewer", required=True, help="Who reviewed.")
@click.option("--note", default="", help="Free text.")
@click.pass_context
def qc_reject(ctx: click.Context, study_uid: str, reason_code: str, reviewer: str, note: str) -> None:
    """Reject a study (hidden from peers, kept, restorable).

    \b
    Example:
      pacsnode qc reject 1.2.3 --reason 113001 --reviewer "Dr Li" --note "motion artefact"
    """
    node = open_node(ctx)
    decision = node.qc.reject(study_uid, reason_code, reviewer, note)
    node.close()
    click.echo(f"{study_uid}: {decision.status.value} ({decision.reason_code}) by {decision.reviewer}")


@qc.command(name="restore")
@click.argument("study_uid")
@click.option("--reviewer", required=True, help="Who restores.")
@click.option("--note", default="", help="Free text.")
@click.pass_context
def qc_restore(ctx: click.Context, study_uid: str, reviewer: str, note: str) -> None:
    """Restore a rejected study to pending.

    \b
    Example:
      pacsnode qc restore 1.2.3 --reviewer "Dr Li"
    """
    node = open_node(ctx)
    decision = node.qc.restore(study_uid, reviewer, note)
    node.close()
    click.echo(f"{study_uid}: {decision.status.value}")


@qc.command(name="report")
@click.option("--from", "since", default="", help="From date (YYYY-MM-DD), by check time.")
@click.option("--to", "until", default="", help="Until date (YYYY-MM-DD), exclusive.")
@click.option("--by", type=click.Choice(["institution", "modality"]), default="institution", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--csv", "as_csv", is_flag=True)
@click.pass_context
def qc_report(ctx: click.Context, since: str, until: str, by: str, as_json: bool, as_csv: bool) -> None:
    """Pass rates and the checks that fail most.

    \b
    Example:
      pacsnode qc report --by modality --from 2026-11-01 --csv
    """
    from pacsnode.qc_service import rows_csv

    node = open_node(ctx)
    report = node.qc.report(since, until, by)
    node.close()
    if as_json:
        print_json(report)
    elif as_csv:
        click.echo(rows_csv(report["groups"]), nl=False)
    else:
        print_table(report["groups"], [by, "checked", "passed_checks", "pass_rate", "accepted", "rejected",
                                       "needs_fix", "pending"])
        click.echo("top failing checks: " + (", ".join(f"{r['code']} ({r['studies']})"
                                                       for r in report["top_failing_checks"]) or "none"))


@qc.command(name="preview")
@click.argument("study_uid")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="PNG file.")
@click.option("--tile", default=256, show_default=True, help="Tile size in pixels.")
@click.pass_context
def qc_preview(ctx: click.Context, study_uid: str, output: Path, tile: int) -> None:
    """Render a contact sheet: one tile per series.

    \b
    Example:
      pacsnode qc preview 1.2.826.0.1.3680043.10.1078.1.2 -o study.png
    """
    node = open_node(ctx)
    info = node.qc.preview(study_uid, output, tile)
    node.close()
    click.echo(f"wrote {output} ({info.width}x{info.height}, {len(info.tiles)} series)")
