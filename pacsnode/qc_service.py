"""The node's QC desk: runs the checks on stored studies, keeps each study's QC status,
records reviewer decisions, reports pass rates, renders previews.

``pacsnode.qc`` holds the pure pieces (rules, checks, transitions, rendering); this module
feeds them the study's files from the index and stores what they decide. A study with no
QC row is ``pending``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import threading
from collections import Counter, defaultdict
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from pacsnode.audit import AuditLog
from pacsnode.errors import InvalidInstance, NotFound, StorageUnavailable
from pacsnode.index import qc_store, work_queue
from pacsnode.index.regional_store import RegionalStore
from pacsnode.index.base import Index
from pacsnode.qc import (
    CheckOutcome,
    PreviewInfo,
    QcDecision,
    QcError,
    QcInstance,
    QcRules,
    QcStatus,
    accept,
    auto_decision,
    default_rules,
    load_rules,
    mark_needs_fix,
    on_new_instance,
    preview_series_for,
    reject,
    render_contact_sheet,
    restore,
    run_checks,
)
from pacsnode.storage.area import StorageArea

LOGGER = logging.getLogger(__name__)


def _parse_at(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text) if text else datetime.now(timezone.utc)
    except ValueError:
        return datetime.now(timezone.utc)


class QcDesk:
    """QC for the studies of one node."""

    def __init__(self, index: Index, storage: StorageArea, store: RegionalStore, audit: AuditLog,
                 rules_path: Path, auto_accept: bool) -> None:
        self.index = index
        self.storage = storage
        self.store = store
        self.audit = audit
        self.rules: QcRules = load_rules(rules_path) if rules_path.is_file() else default_rules()
        self.auto_accept = auto_accept
        self._lock = threading.Lock()
        #: Findings the node adds from what the files cannot show (e.g. provenance), per study.
        self.extra_checks: list[Callable[[str], list[CheckOutcome]]] = []

    # -- state ---------------------------------------------------------------------------
    def current(self, study_uid: str) -> QcDecision | None:
        row = self.store.qc_status(study_uid)
        if row is None:
            return None
        return QcDecision(QcStatus(row["status"]), row["reviewer"], _parse_at(row["reviewed_at"] or row["checked_at"]),
                          grade=row["grade"] or None, reason_code=row["reason_code"], note=row["note"])

    def _save(self, study_uid: str, decision: QcDecision, outcomes: list[CheckOutcome] | None = None) -> None:
        self.store.save_qc(study_uid, decision.status.value, grade=decision.grade or "", reviewer=decision.reviewer,
                           reason_code=decision.reason_code, note=decision.note,
                           ruleset_version=self.rules.version if outcomes is not None else None,
                           outcomes=[asdict(o) for o in outcomes] if outcomes is not None else None)
        self.audit.record("qc", decision.status.value, study_uid=study_uid,
                          detail={"reviewer": decision.reviewer, "grade": decision.grade or "",
                                  "reason": decision.reason_code, "note": decision.note})

    @contextmanager
    def instances(self, study_uid: str) -> Iterator[list[QcInstance]]:
        """The study's visible instances as local files for the checks (the storage area's own
        files on the filesystem; downloaded to the temp folder, removed after the block, on S3)."""
        locations = self.index.locations(study_uid, visible_only=True)  # rejected instances are not judged
        if not locations:
            raise NotFound(f"no study {study_uid} in this node")
        out = []
        with ExitStack() as files:
            for loc in locations:
                try:
                    out.append(QcInstance.from_path(str(files.enter_context(self.storage.local_file(loc.path)))))
                except (InvalidInstance, OSError, StorageUnavailable) as exc:
                    LOGGER.warning("QC cannot read %s: %s", loc.sop_instance_uid, exc)
            yield out

    # -- automatic checks ----------------------------------------------------------------
    def run(self, study_uid: str) -> tuple[QcDecision, list[CheckOutcome]]:
        """Run every check on a study and move its status as the checks justify."""
        with self._lock:
            with self.instances(study_uid) as instances:
                outcomes = run_checks(instances, self.rules)
            for extra in self.extra_checks:
                outcomes.extend(extra(study_uid))
            current = self.current(study_uid)
            decision = auto_decision(current, outcomes, auto_accept=self.auto_accept, at=datetime.now(timezone.utc))
            if decision is current and current is not None:
                self.store.save_qc(study_uid, current.status.value, grade=current.grade or "",
                                   reviewer=current.reviewer, reason_code=current.reason_code, note=current.note,
                                   ruleset_version=self.rules.version, outcomes=[asdict(o) for o in outcomes],
                                   history=False)
            else:
                self._save(study_uid, decision, outcomes)
            return decision, outcomes

    def run_stable(self, stable_seconds: int, batch: int = 20) -> list[str]:
        """Check studies with no new instance for ``stable_seconds`` (Orthanc's stable-study idea).

        Several nodes may share the index: each study is queued, then claimed by exactly one of
        them (``index.work_queue``), so it is checked once whichever nodes run this pass. Returns
        the studies this node checked.
        """
        before = (datetime.now(timezone.utc) - timedelta(seconds=stable_seconds)).isoformat(timespec="microseconds")
        work_queue.queue_quiet_studies(self.index, before)
        done = []
        node = self.audit.node
        while claimed := work_queue.claim(self.index, work_queue.QC_STABLE, node, limit=batch):
            for study_uid in claimed:
                try:
                    self.run(study_uid)
                    done.append(study_uid)
                except (QcError, NotFound) as exc:  # for good: not retried until the study changes
                    LOGGER.warning("QC of %s skipped: %s", study_uid, exc)
                work_queue.finish(self.index, work_queue.QC_STABLE, study_uid, node)
        return done

    def instance_arrived(self, study_uid: str) -> None:
        """A new instance: an accepted study goes back to pending.

        Every other state stays as it is (``on_new_instance``), so the status alone is read first:
        the whole row, its check outcomes parsed from JSON, only for an accepted study.
        """
        if self.store.qc_state(study_uid) != QcStatus.ACCEPTED.value:
            return
        current = self.current(study_uid)
        moved = on_new_instance(current, at=datetime.now(timezone.utc))
        if moved is not None and moved is not current:
            self._save(study_uid, moved)

    # -- reviewer decisions --------------------------------------------------------------
    def _modalities(self, study_uid: str) -> list[str]:
        rows = self.store.studies_by_uid([study_uid])
        if not rows:
            raise NotFound(f"no study {study_uid} in this node")
        return rows[0].modalities

    def accept(self, study_uid: str, grade: str, reviewer: str, note: str = "") -> QcDecision:
        decision = accept(self.current(study_uid), grade=grade, reviewer=reviewer, at=datetime.now(timezone.utc),
                          modalities=self._modalities(study_uid), note=note)
        self._save(study_uid, decision)
        return decision

    def reject(self, study_uid: str, reason_code: str, reviewer: str, note: str = "") -> QcDecision:
        self._modalities(study_uid)
        decision = reject(self.current(study_uid), reviewer=reviewer, at=datetime.now(timezone.utc),
                          reason_code=reason_code, note=note)
        self._save(study_uid, decision)
        return decision

    def needs_fix(self, study_uid: str, reviewer: str, note: str) -> QcDecision:
        self._modalities(study_uid)
        decision = mark_needs_fix(self.current(study_uid), reviewer=reviewer, at=datetime.now(timezone.utc), note=note)
        self._save(study_uid, decision)
        return decision

    def restore(self, study_uid: str, reviewer: str, note: str = "") -> QcDecision:
        self._modalities(study_uid)
        decision = restore(self.current(study_uid), reviewer=reviewer, at=datetime.now(timezone.utc), note=note)
        self._save(study_uid, decision)
        return decision

    # -- listing and reporting -----------------------------------------------------------
    def listing(self, status: str | None = None) -> list[dict[str, Any]]:
        """Every study with its QC status (no row = pending)."""
        rows = qc_store.listing_rows(self.index)
        out = []
        for row in rows:
            if status and row["status"] != status:
                continue
            item = dict(row)
            outcomes = json.loads(item.pop("outcomes") or "[]")
            item["modalities"] = [m for m in item["modalities"].split("\\") if m]
            item["failed_checks"] = sorted({o["code"] for o in outcomes if not o["passed"] and o["severity"] == "fail"})
            item["warnings"] = sorted({o["code"] for o in outcomes if not o["passed"] and o["severity"] == "warn"})
            out.append(item)
        return out

    def report(self, since: str = "", until: str = "", by: str = "institution") -> dict[str, Any]:
        """Pass rates per institution or modality, and the checks that fail most."""
        if by not in ("institution", "modality"):
            raise QcError(f"--by {by!r}: use institution or modality")
        groups: dict[str, Counter[str]] = defaultdict(Counter)
        failing: Counter[str] = Counter()
        for row in self.listing():
            if not row["checked_at"] or (since and row["checked_at"] < since) or (until and row["checked_at"] >= until):
                continue
            keys = [row["institution_code"] or row["institution_name"] or "(unknown)"] if by == "institution" \
                else (row["modalities"] or ["(unknown)"])
            for key in keys:
                groups[key]["checked"] += 1
                groups[key]["passed"] += not row["failed_checks"]
                groups[key][row["status"]] += 1
            failing.update(row["failed_checks"])
        rows = [{by: key, "checked": c["checked"], "passed_checks": c["passed"],
                 "pass_rate": round(c["passed"] / c["checked"], 4) if c["checked"] else None,
                 "accepted": c["accepted"], "rejected": c["rejected"], "needs_fix": c["needs-fix"],
                 "pending": c["pending"]} for key, c in sorted(groups.items())]
        return {"groups": rows, "top_failing_checks": [{"code": k, "studies": v} for k, v in failing.most_common(10)]}

    def preview(self, study_uid: str, out_path: Path, tile: int = 256) -> PreviewInfo:
        with self.instances(study_uid) as instances:
            return render_contact_sheet(preview_series_for(instances), out_path, tile=tile)


def rows_csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0].keys()))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


class StableStudyWatcher(threading.Thread):
    """Runs QC on studies that went quiet, every few seconds, while the node serves."""

    def __init__(self, desk: QcDesk, stable_seconds: int, interval: float = 5.0) -> None:
        super().__init__(name="qc-stable-studies", daemon=True)
        self.desk = desk
        self.stable_seconds = stable_seconds
        self.interval = interval
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            try:
                self.desk.run_stable(self.stable_seconds)
            except Exception:  # a background edge: log and keep watching
                LOGGER.exception("stable-study QC pass failed")

    def stop(self) -> None:
        self._halt.set()
