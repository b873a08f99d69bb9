"""The physician's side: explain the advice, record decisions and consent, shares, reports.

The rules (``pacsnode.recognition``) validate; this module finds the facts, keeps the
append-only records and counts them. A decision may concern a study held by a peer (seen
through ``priors``): its advice is then the snapshot recorded when it was shown.
"""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from pacsnode.audit import AuditLog
from pacsnode.errors import NotFound, RecognitionError
from pacsnode.index.regional_store import RegionalStore
from pacsnode.recognition import Advice, DecisionInput, normalise_reasons, validate_decision
from pacsnode.recognition.advice import HR_ELIGIBLE
from pacsnode.regional import Regional

REPORT_GROUPS = ("institution", "modality", "item", "month", "day", "all")
# what a row is grouped by: a column of the shown/decision rows, or a slice of its UTC timestamp
_GROUP_COLUMN = {"institution": "producer", "modality": "modality", "item": "item_code"}
_TIME_SLICE = {"month": 7, "day": 10}


@dataclass(frozen=True)
class AdviceSnapshot:
    """The advice as it was shown (locally computed, or received from a peer)."""

    study_uid: str
    status: str
    failed: tuple[str, ...]
    item_code: str
    producer: str
    modality: str

    @property
    def eligible(self) -> bool:
        return self.status == HR_ELIGIBLE


class PhysicianDesk:
    """Explain, decide, share and report, for the physicians of this node's institution."""

    def __init__(self, regional: Regional, store: RegionalStore, audit: AuditLog) -> None:
        self.regional = regional
        self.store = store
        self.audit = audit

    @property
    def institution(self) -> str:
        return self.regional.config.institution

    def explain(self, study_uid: str, for_institution: str | None = None, at: date | None = None) -> Advice:
        """Every condition for a study of this node, for an institution (default: this node's)."""
        now = datetime.now(timezone.utc) if at is None else datetime.combine(at, datetime.min.time(), timezone.utc)
        if self.regional.region is None:
            raise RecognitionError(f"no recognition rules: {self.regional.config.recognition_path} is missing")
        advice = self.regional.advice(study_uid, for_institution or self.institution, now)
        if advice is None:
            raise NotFound(f"no study {study_uid} in this node")
        return advice

    def snapshot(self, study_uid: str) -> AdviceSnapshot | None:
        """The advice for a decision: computed now for a local study, else the last one shown."""
        rows = self.store.studies_by_uid([study_uid])
        if rows and self.regional.region is not None:
            advice = self.explain(study_uid)
            return AdviceSnapshot(study_uid, advice.status, advice.failed, advice.item_code,
                                  self.regional.producer_of(rows[0]), "\\".join(rows[0].modalities))
        shown = [r for r in self.store.advice_shown() if r["study_uid"] == study_uid]
        if not shown:
            return None
        last = shown[-1]
        return AdviceSnapshot(study_uid, last["status"], tuple(f for f in last["failed"].split(",") if f),
                              last["item_code"], last["producer"], last["modality"])

    def decide(self, study_uid: str, decision: DecisionInput) -> int:
        """Validate and append a decision (with its consent record); returns the decision id."""
        snapshot = self.snapshot(study_uid)
        if snapshot is None:
            raise NotFound(f"study {study_uid} is neither in this node nor among the priors shown; "
                           "run `pacsnode priors` for the patient first")
        advice = Advice(snapshot.status, snapshot.failed, snapshot.item_code, "", None, ())
        validate_decision(decision, advice)
        reasons = normalise_reasons(decision.reason_codes) if decision.reason_codes else ()
        kind = decision.decision.strip().lower()
        decision_id = self.store.record_decision({
            "study_uid": study_uid, "decided_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "decision": kind, "reasons": ",".join(reasons), "note": decision.note.strip(),
            "consent": decision.consent.strip().lower().replace("_", "-"),
            "informed": decision.informed_party.strip().lower(), "physician": decision.physician.strip(),
            "deciding_institution": self.institution, "producer": snapshot.producer,
            "modality": snapshot.modality, "item_code": snapshot.item_code, "advice_status": snapshot.status,
            "advice_failed": ",".join(snapshot.failed), "informed_how": decision.informed_how.strip().lower()})
        self.audit.record("recognition-decision", kind, study_uid=study_uid,
                          detail={"decision_id": decision_id, "reasons": list(reasons),
                                  "consent": decision.consent, "informed_how": decision.informed_how.strip().lower(),
                                  "physician": decision.physician,
                                  "advice": snapshot.status})
        return decision_id

    def grant_share(self, study_uid: str, institution: str, days: int, granted_by: str = "") -> datetime:
        if days <= 0:
            raise RecognitionError("--days must be at least 1")
        if not self.store.studies_by_uid([study_uid]):
            raise NotFound(f"no study {study_uid} in this node")
        region = self.regional.region
        if region is not None and region.institution(institution) is None:
            raise RecognitionError(f"institution {institution!r} is not in {self.regional.config.recognition_path}")
        expires = datetime.now(timezone.utc) + timedelta(days=days)
        self.store.grant_share(study_uid, institution, expires.isoformat(timespec="seconds"), granted_by)
        self.audit.record("share-grant", "granted", study_uid=study_uid,
                          detail={"institution": institution, "days": days, "expires": expires.isoformat()})
        return expires

    def revoke_share(self, study_uid: str, institution: str) -> None:
        if not self.store.revoke_share(study_uid, institution):
            raise NotFound(f"no active share of {study_uid} with {institution}")
        self.audit.record("share-revoke", "revoked", study_uid=study_uid, detail={"institution": institution})

    # -- reporting -----------------------------------------------------------------------
    def report(self, since: str = "", until: str = "", by: str = "institution") -> list[dict[str, Any]]:
        """Priors shown (and eligible), accepted, declined by reason, and the recognition rate.

        rate = accepted / (accepted + declined) over decisions on eligible priors
        (RECOGNITION.md's proposal); ``rate_all`` counts every decision.
        """
        if by not in REPORT_GROUPS:
            raise RecognitionError(f"--by {by!r}: use one of {', '.join(REPORT_GROUPS)}")
        groups: dict[str, Counter[str]] = defaultdict(Counter)
        reasons: dict[str, Counter[str]] = defaultdict(Counter)
        for row in self.store.advice_shown(since, until):
            counts = groups[_group_of(row, by, "at")]
            counts["shown"] += 1
            counts["eligible_shown"] += row["status"] == HR_ELIGIBLE
        for row in self.store.decisions(since, until):
            group = _group_of(row, by, "decided_at")
            eligible = row["advice_status"] == HR_ELIGIBLE
            groups[group][row["decision"] + ("d" if row["decision"] == "decline" else "ed")] += 1
            if eligible:
                groups[group]["eligible_" + row["decision"]] += 1
            for reason in filter(None, row["reasons"].split(",")):
                reasons[group][reason] += 1
        out = []
        for group in sorted(groups):
            c = groups[group]
            decided = c["eligible_accept"] + c["eligible_decline"]
            total = c["accepted"] + c["declined"]
            out.append({by: group, "shown": c["shown"], "eligible_shown": c["eligible_shown"],
                        "accepted": c["accepted"], "declined": c["declined"],
                        "declined_by_reason": dict(sorted(reasons[group].items())),
                        "recognition_rate": round(c["eligible_accept"] / decided, 4) if decided else None,
                        "rate_all": round(c["accepted"] / total, 4) if total else None})
        return out


def _group_of(row: dict[str, Any], by: str, time_column: str) -> str:
    """The report group of a shown-advice or decision row: a column, a month or day of its UTC
    timestamp (the dates the ``--from``/``--to`` filters compare), or ``all`` for the total."""
    if by == "all":
        return "all"
    if by in _TIME_SLICE:
        return str(row[time_column] or "")[:_TIME_SLICE[by]] or "(unknown)"
    return row[_GROUP_COLUMN[by]] or "(unknown)"


def report_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    if not rows:
        return ""
    writer = csv.writer(buffer)
    header = list(rows[0].keys())
    writer.writerow(header)
    for row in rows:
        writer.writerow([";".join(f"{k}={v}" for k, v in row[h].items()) if isinstance(row[h], dict) else row[h]
                         for h in header])
    return buffer.getvalue()
