"""The physician's side and the programme's: priors, recognition explain/decide, shares,
the recognition report and the audit trail."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date, datetime

import click

from pacsnode.cli.app import main, open_node, print_json, print_table
from pacsnode.cli.output import safe


@main.command()
@click.option("--patient-id", default=None, help="The patient's ID at one hospital (with --issuer).")
@click.option("--issuer", default=None, help="Issuer of that Patient ID (the hospital's code).")
@click.option("--resident-id", default=None, help="Resident ID (Other Patient IDs, issuer CN-RESIDENT-ID).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def priors(ctx: click.Context, patient_id: str | None, issuer: str | None, resident_id: str | None,
           as_json: bool) -> None:
    """A patient's prior results across the region, with recognition status and reasons.

    Queries every registered peer in parallel (and this node's index) and merges the answers.

    \b
    Example:
      pacsnode priors --resident-id 520100199001010011
      pacsnode priors --patient-id P0815 --issuer CTY001 --json
    """
    from pacsnode.priors import gather_priors

    if not (resident_id or (patient_id and issuer)):
        raise click.UsageError("name the patient: --patient-id with --issuer, or --resident-id")
    node = open_node(ctx)
    result = gather_priors(node, patient_id, issuer, resident_id)
    node.close()
    if as_json:
        print_json(result.as_json())
        return
    rows = [asdict(p) for p in result.priors]
    for row in rows:
        row["institution"] = row["institution_code"] or row["institution"]
        row["failed"] = row["failed"] or ""
    print_table(rows, ["study_date", "institution", "modalities", "item_code", "status", "failed", "valid_until",
                       "source", "study_uid"])
    for peer, error in result.errors.items():
        click.echo(f"peer {safe(peer)} not reached: {safe(error)}", err=True)


@main.group()
def recognition() -> None:
    """Recognition advice and the physician's decisions.

    \b
    Example:
      pacsnode recognition explain 1.2.3 --for TWN001
      pacsnode recognition decide 1.2.3 --accept --physician "Dr Wang"
    """


def _parse_day(value: str | None) -> date | None:
    if not value:
        return None
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)")


@recognition.command(name="explain")
@click.argument("study_uid")
@click.option("--for", "for_institution", default=None, help="Viewer institution (default: this node's).")
@click.option("--at", "at", default=None, help="As of this date (YYYY-MM-DD; default today).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def explain(ctx: click.Context, study_uid: str, for_institution: str | None, at: str | None, as_json: bool) -> None:
    """Every recognition condition for a study, and whether it holds.

    \b
    Example:
      pacsnode recognition explain 1.2.826.0.1.3680043.10.1078.1.2 --for TWN001 --at 2026-11-26
    """
    from pacsnode.recognition import SUGGESTED_REASON, TIME_RULE

    node = open_node(ctx)
    advice = node.desk.explain(study_uid, for_institution, _parse_day(at))
    node.close()
    if as_json:
        print_json({"study_uid": study_uid, "status": advice.status, "failed": list(advice.failed),
                    "item_code": advice.item_code, "scope_label": advice.scope_label,
                    "valid_until": advice.valid_until.isoformat() if advice.valid_until else None,
                    "conditions": [{"code": c.code, "holds": c.holds, "explanation": c.explanation,
                                    "decline_reason": SUGGESTED_REASON.get(c.code, "")}
                                   for c in advice.conditions],
                    "time_rule": TIME_RULE})
        return
    click.echo(f"{safe(advice.status)} ({safe(advice.scope_label)})  item {safe(advice.item_code or '-')}  "
               f"valid until {advice.valid_until or '-'}")
    for condition in advice.conditions:
        reason = SUGGESTED_REASON.get(condition.code, "") if not condition.holds else ""
        click.echo(f"  {'ok  ' if condition.holds else 'FAIL'} {safe(condition.code):24} {safe(condition.explanation)}"
                   f"{f'  [decline reason {reason}]' if reason else ''}")
    click.echo(f"  time: {TIME_RULE}")


@recognition.command(name="decide")
@click.argument("study_uid")
@click.option("--accept", "decision", flag_value="accept", help="Recognize the result.")
@click.option("--decline", "decision", flag_value="decline", help="Order a re-examination.")
@click.option("--reason", "reasons", multiple=True,
              help="Reason code (N1-N6, P1-P4, L1, T1, Q1, B1, X1) or alias (condition-changed, emergency, "
                   "outdated, poor-quality, patient-request, other); repeat or comma-separate.")
@click.option("--note", default="", help="Free text (at most 200 characters); needed to accept against the advice.")
@click.option("--consent", type=click.Choice(["given", "refused", "not-obtainable"]), default=None)
@click.option("--informed", type=click.Choice(["patient", "family", "guardian"]), default=None)
@click.option("--informed-how", "informed_how", type=click.Choice(["signature", "e-sign", "verbal-witnessed"]),
              default=None, help="How the informed party was told (kept with a decline's consent record).")
@click.option("--physician", required=True, help="The deciding physician.")
@click.pass_context
def decide(ctx: click.Context, study_uid: str, decision: str | None, reasons: tuple[str, ...], note: str,
           consent: str | None, informed: str | None, informed_how: str | None, physician: str) -> None:
    """Record the physician's decision on a prior result (append-only).

    \b
    Example:
      pacsnode recognition decide 1.2.3 --decline --reason condition-changed \\
          --consent given --informed patient --physician "Dr Wang"
      pacsnode recognition decide 1.2.3 --accept --physician "Dr Wang"
    """
    from pacsnode.recognition import DecisionInput

    if decision is None:
        raise click.UsageError("say --accept or --decline")
    codes = tuple(code.strip() for item in reasons for code in item.split(",") if code.strip())
    node = open_node(ctx)
    decision_id = node.desk.decide(study_uid, DecisionInput(decision, physician, codes, consent or "", informed or "",
                                                           note, study_uid, node.config.institution,
                                                           informed_how=informed_how or ""))
    node.close()
    click.echo(f"decision {decision_id} recorded: {decision} {study_uid}")


@recognition.command(name="vouch")
@click.argument("study_uid")
@click.option("--producer", required=True, help="The producing institution's code (as in recognition.toml).")
@click.option("--note", required=True, help="How the producer was verified (kept in the audit trail).")
@click.option("--by", "vouched_by", default="admin", show_default=True, help="Who vouches.")
@click.pass_context
def vouch(ctx: click.Context, study_uid: str, producer: str, note: str, vouched_by: str) -> None:
    """Vouch that PRODUCER made a study its deliverers do not vouch for (audited).

    Recognition trusts the producer a study claims only when who delivered it vouches for it
    (a peer of that institution, an admin import); this is the explicit exception. It covers
    the instances received until now, not copies that arrive later.

    \b
    Example:
      pacsnode recognition vouch 1.2.3 --producer PRV001 --note "phoned PRV001 radiology, ticket 4711"
    """
    node = open_node(ctx)
    at = node.provenance.vouch(study_uid, producer, note, vouched_by)
    node.close()
    click.echo(f"vouched: {study_uid} produced by {producer} (covers instances received until {at})")


@recognition.command(name="provenance")
@click.argument("study_uid")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def provenance(ctx: click.Context, study_uid: str, as_json: bool) -> None:
    """Who delivered a study, the producer it claims, and whether the one vouches for the other.

    \b
    Example:
      pacsnode recognition provenance 1.2.3
    """
    node = open_node(ctx)
    data = node.provenance.describe(study_uid)
    node.close()
    if as_json:
        print_json(data)
        return
    click.echo(f"producer {data['producer'] or '(unknown)'}: {'vouched' if data['vouched'] else 'NOT vouched'}"
               f" ({data['explanation']})")
    for d in data["deliveries"]:
        click.echo(f"  {d['instances']} instance(s) by {d['kind']} {d['who'] or '-'} "
                   f"[{d['institution'] or 'no institution'}], last {d['last_received_at']}")
    for v in data["vouches"]:
        click.echo(f"  vouched {v['producer']} by {v['vouched_by']} at {v['vouched_at']}: {v['note']}")

@main.group()
def share() -> None:
    """Consultation shares: let another institution see one study.

    \b
    Example:
      pacsnode share grant 1.2.3 --to PRV001 --days 14
    """


@share.command(name="grant")
@click.argument("study_uid")
@click.option("--to", "institution", required=True, help="Institution code.")
@click.option("--days", required=True, type=int, help="How long the share lasts.")
@click.option("--by", "granted_by", default="", help="Who grants it.")
@click.pass_context
def share_grant(ctx: click.Context, study_uid: str, institution: str, days: int, granted_by: str) -> None:
    """Share a study with an institution for N days (a consultation).

    \b
    Example:
      pacsnode share grant 1.2.3 --to PRV001 --days 14
    """
    node = open_node(ctx)
    expires = node.desk.grant_share(study_uid, institution, days, granted_by)
    node.close()
    click.echo(f"shared {study_uid} with {institution} until {expires.isoformat(timespec='minutes')}")


@share.command(name="revoke")
@click.argument("study_uid")
@click.option("--to", "institution", required=True, help="Institution code.")
@click.pass_context
def share_revoke(ctx: click.Context, study_uid: str, institution: str) -> None:
    """Revoke a share.

    \b
    Example:
      pacsnode share revoke 1.2.3 --to PRV001
    """
    node = open_node(ctx)
    node.desk.revoke_share(study_uid, institution)
    node.close()
    click.echo(f"revoked the share of {study_uid} with {institution}")


@share.command(name="list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def share_list(ctx: click.Context, as_json: bool) -> None:
    """List shares.

    \b
    Example:
      pacsnode share list --json
    """
    node = open_node(ctx)
    rows = node.regional_store.shares()
    node.close()
    if as_json:
        print_json(rows)
    else:
        print_table(rows, ["study_uid", "institution", "granted_at", "expires_at", "revoked_at", "granted_by"])


@main.group()
def report() -> None:
    """Programme reports.

    \b
    Example:
      pacsnode report recognition --by modality --json
    """


@report.command(name="recognition")
@click.option("--from", "since", default=None, help="From date (YYYY-MM-DD).")
@click.option("--to", "until", default=None, help="Until date (YYYY-MM-DD), inclusive.")
@click.option("--by", type=click.Choice(["institution", "modality", "item", "month", "day", "all"]),
              default="institution", show_default=True,
              help="Group by producing institution, modality, catalog item, UTC month or day, or all together.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--csv", "as_csv", is_flag=True)
@click.pass_context
def report_recognition(ctx: click.Context, since: str | None, until: str | None, by: str, as_json: bool,
                       as_csv: bool) -> None:
    """Eligible priors shown, accepted, declined by reason; the recognition rate.

    rate = accepted / (accepted + declined) over decisions on eligible priors.

    \b
    Example:
      pacsnode report recognition --from 2026-11-01 --by modality --csv
    """
    from datetime import timedelta

    from pacsnode.physician import report_csv

    start = _parse_day(since)
    end = _parse_day(until)
    node = open_node(ctx)
    rows = node.desk.report(start.isoformat() if start else "",
                            (end + timedelta(days=1)).isoformat() if end else "", by)
    node.close()
    if as_json:
        print_json(rows)
    elif as_csv:
        click.echo(report_csv(rows), nl=False)
    else:
        for row in rows:
            row["declined_by_reason"] = ", ".join(f"{k}:{v}" for k, v in row["declined_by_reason"].items())
        print_table(rows, [by, "shown", "eligible_shown", "accepted", "declined", "declined_by_reason",
                           "recognition_rate"])


@main.command()
@click.option("--study", "study_uid", default=None, help="Only this study.")
@click.option("--peer", default=None, help="Only this peer (name or AE title).")
@click.option("--since", default=None, help="From date (YYYY-MM-DD).")
@click.option("--node", "node_name", default=None, help="Only what this node served (its [node] name).")
@click.option("--limit", default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def audit(ctx: click.Context, study_uid: str | None, peer: str | None, since: str | None, node_name: str | None,
          limit: int, as_json: bool) -> None:
    """The audit trail: associations, queries, retrievals, refusals, shares, QC and decisions.

    Nodes sharing one archive share its audit: the node column says which one served.

    \b
    Example:
      pacsnode audit --peer county --since 2026-11-01 --json
    """
    node = open_node(ctx)
    day = _parse_day(since)
    events = node.audit.events(study_uid=study_uid, peer=peer, since=day.isoformat() if day else None, limit=limit,
                               node=node_name)
    node.close()
    rows = [asdict(e) for e in events]
    if as_json:
        print_json(rows)
    else:
        print_table(rows, ["at", "node", "action", "outcome", "peer_name", "peer_aet", "study_uid", "detail"])
