"""SQL for the regional side of the index: study facts for the rules, QC status, shares,
physician decisions and the advice shown. Nothing here decides anything; it reads and
appends rows for ``pacsnode.regional`` and ``pacsnode.qc_service``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable

from pacsnode.dicom.sop_classes import is_image_sop_class
from pacsnode.index import rejections
from pacsnode.index.rejections import RejectedRef
from pacsnode.index.schema import utc_now
from pacsnode.index.base import Index

STUDY_FACTS_SQL = (
    "SELECT s.pk, s.study_uid, s.study_date, s.study_time, s.modalities, s.body_parts, s.contrast, s.lossy, "
    "s.deidentified, "
    "s.institution_name, s.institution_code, s.calling_ae, s.accession_number, s.study_description, "
    "s.instance_count, s.series_count, p.pk AS patient_pk, p.patient_id, p.issuer, p.patient_name, "
    "COALESCE(q.status, '') AS qc_status FROM studies s JOIN patients p ON p.pk = s.patient_pk "
    "LEFT JOIN study_qc q ON q.study_uid = s.study_uid")


@dataclass
class StudyRow:
    """A study with what the rules read about it, straight from the index."""

    study_uid: str
    study_date: str
    study_time: str
    modalities: list[str]
    body_parts: list[str]
    contrast: bool
    lossy: bool
    institution_name: str
    institution_codes: list[str]
    calling_ae: str
    patient_id: str
    issuer: str
    patient_name: str
    qc_status: str
    accession_number: str
    study_description: str
    instance_count: int
    series_count: int
    procedure_codes: list[str] = field(default_factory=list)
    other_patient_ids: list[tuple[str, str]] = field(default_factory=list)
    deidentified: bool = False
    #: Modalities of the study's image series (SR, PDF, KOS, PR ... left out): what is recognised.
    image_modalities: list[str] = field(default_factory=list)
    #: Body parts of the study's image series.
    image_body_parts: list[str] = field(default_factory=list)


class RegionalStore:
    """Reads and appends the regional tables of one index."""

    def __init__(self, index: Index) -> None:
        self.index = index

    # -- study facts ---------------------------------------------------------------------
    def studies_of_patients(self, identifiers: Iterable[tuple[str, str]]) -> list[StudyRow]:
        """Studies of every patient known by one of these (id, issuer) pairs, locally or as an other ID."""
        pairs = list(identifiers)
        if not pairs:
            return []
        clauses = " OR ".join(["(patient_id = ? AND issuer = ?)"] * len(pairs))
        other = " OR ".join(["(other_id = ? AND other_issuer = ?)"] * len(pairs))
        flat = [v for pair in pairs for v in pair]
        sql = (f"{STUDY_FACTS_SQL} WHERE s.patient_pk IN (SELECT pk FROM patients WHERE {clauses} "
               f"UNION SELECT patient_pk FROM patient_other_ids WHERE {other})")
        return self._rows(self.index.query(sql, flat + flat))

    def studies_by_uid(self, study_uids: Iterable[str]) -> list[StudyRow]:
        uids = list(study_uids)
        if not uids:
            return []
        return self._rows(self.index.query(f"{STUDY_FACTS_SQL} WHERE s.study_uid IN ({','.join('?' * len(uids))})",
                                           uids))

    def all_studies(self) -> list[StudyRow]:
        return self._rows(self.index.query(STUDY_FACTS_SQL))

    def _rows(self, rows: list[Any]) -> list[StudyRow]:
        if not rows:
            return []
        study_pks = [r["pk"] for r in rows]
        patient_pks = sorted({r["patient_pk"] for r in rows})
        codes: dict[int, dict[str, list[str]]] = {}
        for code in self.index.query(
                f"SELECT study_pk, kind, code_value FROM study_codes WHERE study_pk IN ({','.join('?' * len(study_pks))})",
                study_pks):
            codes.setdefault(code[0], {}).setdefault(code[1], []).append(code[2])
        images = self._image_series(study_pks)
        others: dict[int, list[tuple[str, str]]] = {}
        for other in self.index.query(
                f"SELECT patient_pk, other_id, other_issuer FROM patient_other_ids "
                f"WHERE patient_pk IN ({','.join('?' * len(patient_pks))})", patient_pks):
            others.setdefault(other[0], []).append((other[1], other[2]))
        out = []
        for r in rows:
            study_codes = codes.get(r["pk"], {})
            institution_codes = study_codes.get("institution", [])
            if r["institution_code"] and r["institution_code"] not in institution_codes:
                institution_codes.insert(0, r["institution_code"])
            out.append(StudyRow(
                study_uid=r["study_uid"], study_date=r["study_date"], study_time=r["study_time"],
                modalities=[m for m in r["modalities"].split("\\") if m],
                body_parts=[b for b in r["body_parts"].split("\\") if b], contrast=bool(r["contrast"]),
                lossy=bool(r["lossy"]), institution_name=r["institution_name"], institution_codes=institution_codes,
                calling_ae=r["calling_ae"], patient_id=r["patient_id"], issuer=r["issuer"],
                patient_name=r["patient_name"], qc_status=r["qc_status"], accession_number=r["accession_number"],
                study_description=r["study_description"], instance_count=r["instance_count"],
                series_count=r["series_count"], procedure_codes=study_codes.get("procedure", []),
                other_patient_ids=others.get(r["patient_pk"], []), deidentified=bool(r["deidentified"]),
                image_modalities=sorted(images.get(r["pk"], ({}, {}))[0]),
                image_body_parts=sorted(images.get(r["pk"], ({}, {}))[1])))
        return out

    def _image_series(self, study_pks: list[int]) -> dict[int, tuple[set[str], set[str]]]:
        """Per study: the modalities and body parts of series that hold images (by SOP Class)."""
        out: dict[int, tuple[set[str], set[str]]] = {}
        for row in self.index.query(
                f"SELECT DISTINCT se.study_pk, se.modality, se.body_part, i.sop_class_uid FROM series se "
                f"JOIN instances i ON i.series_pk = se.pk WHERE se.study_pk IN ({','.join('?' * len(study_pks))})",
                study_pks):
            if not is_image_sop_class(row["sop_class_uid"]):
                continue
            modalities, parts = out.setdefault(row["study_pk"], (set(), set()))
            if row["modality"]:
                modalities.add(row["modality"])
            if row["body_part"]:
                parts.add(row["body_part"])
        return out

    # -- shares --------------------------------------------------------------------------
    def grant_share(self, study_uid: str, institution: str, expires_at: str, granted_by: str) -> None:
        with self.index.write() as conn:
            conn.execute("INSERT INTO shares (study_uid, institution, granted_at, expires_at, granted_by) "
                         "VALUES (?,?,?,?,?)", (study_uid, institution, utc_now(), expires_at, granted_by))

    def revoke_share(self, study_uid: str, institution: str) -> int:
        with self.index.write() as conn:
            return conn.execute("UPDATE shares SET revoked_at=? WHERE study_uid=? AND institution=? AND revoked_at=''",
                                (utc_now(), study_uid, institution)).rowcount

    def shares(self, study_uids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM shares"
        params: list[str] = []
        if study_uids is not None:
            uids = list(study_uids)
            if not uids:
                return []
            sql += f" WHERE study_uid IN ({','.join('?' * len(uids))})"
            params = uids
        return [dict(r) for r in self.index.query(sql + " ORDER BY pk", params)]

    # -- decisions and advice ------------------------------------------------------------
    def record_decision(self, row: dict[str, str]) -> int:
        columns = ["study_uid", "decided_at", "decision", "reasons", "note", "consent", "informed", "physician",
                   "deciding_institution", "producer", "modality", "item_code", "advice_status", "advice_failed",
                   "informed_how"]
        with self.index.write() as conn:
            cursor = conn.execute(
                f"INSERT INTO recognition_decisions ({','.join(columns)}) VALUES ({','.join('?' * len(columns))})",
                [row.get(c, "") for c in columns])
            return int(cursor.lastrowid or 0)

    def decisions(self, since: str = "", until: str = "") -> list[dict[str, Any]]:
        sql = "SELECT * FROM recognition_decisions WHERE decided_at >= ?"
        params = [since]
        if until:
            sql += " AND decided_at < ?"
            params.append(until)
        return [dict(r) for r in self.index.query(sql + " ORDER BY pk", params)]

    def record_advice_shown(self, rows: list[dict[str, str]]) -> None:
        if not rows:
            return
        with self.index.write() as conn:
            conn.executemany(
                "INSERT INTO advice_shown (at, study_uid, viewer_institution, producer, modality, item_code, status, "
                "failed) VALUES (?,?,?,?,?,?,?,?)",
                [(utc_now(), r["study_uid"], r.get("viewer_institution", ""), r.get("producer", ""),
                  r.get("modality", ""), r.get("item_code", ""), r["status"], r.get("failed", "")) for r in rows])

    def advice_shown(self, since: str = "", until: str = "") -> list[dict[str, Any]]:
        sql = "SELECT * FROM advice_shown WHERE at >= ?"
        params = [since]
        if until:
            sql += " AND at < ?"
            params.append(until)
        return [dict(r) for r in self.index.query(sql + " ORDER BY pk", params)]

    # -- QC status -----------------------------------------------------------------------
    def qc_state(self, study_uid: str) -> str | None:
        """Only the study's QC status (None without a QC row): what every stored instance asks."""
        rows = self.index.query("SELECT status FROM study_qc WHERE study_uid=?", (study_uid,))
        return str(rows[0][0]) if rows else None

    def qc_status(self, study_uid: str) -> dict[str, Any] | None:
        rows = self.index.query("SELECT * FROM study_qc WHERE study_uid=?", (study_uid,))
        if not rows:
            return None
        row = dict(rows[0])
        row["outcomes"] = json.loads(row["outcomes"] or "[]")
        return row

    def qc_list(self, status: str | None = None) -> list[dict[str, Any]]:
        sql = ("SELECT q.*, s.study_date, s.modalities, s.institution_name, s.institution_code, p.patient_id, "
               "p.issuer, p.patient_name FROM study_qc q JOIN studies s ON s.study_uid = q.study_uid "
               "JOIN patients p ON p.pk = s.patient_pk")
        params: list[str] = []
        if status:
            sql += " WHERE q.status = ?"
            params.append(status)
        rows = [dict(r) for r in self.index.query(sql + " ORDER BY s.study_date DESC, q.study_uid", params)]
        for row in rows:
            row["outcomes"] = json.loads(row["outcomes"] or "[]")
        return rows

    def save_qc(self, study_uid: str, status: str, *, grade: str = "", reviewer: str = "", reason_code: str = "",
                note: str = "", ruleset_version: str | None = None, outcomes: list[dict[str, Any]] | None = None,
                history: bool = True) -> None:
        """Upsert the current QC status (and append to the history when a person or rule decided)."""
        now = utc_now()
        with self.index.write() as conn:
            exists = conn.execute("SELECT 1 FROM study_qc WHERE study_uid=?", (study_uid,)).fetchone()
            if not exists:
                conn.execute("INSERT INTO study_qc (study_uid) VALUES (?)", (study_uid,))
            conn.execute("UPDATE study_qc SET status=?, grade=?, reviewer=?, reviewed_at=?, reason_code=?, note=? "
                         "WHERE study_uid=?", (status, grade, reviewer, now if reviewer else "", reason_code, note,
                                               study_uid))
            if outcomes is not None:
                conn.execute("UPDATE study_qc SET outcomes=?, checked_at=?, ruleset_version=? WHERE study_uid=?",
                             (json.dumps(outcomes, ensure_ascii=False), now, ruleset_version or "", study_uid))
            if history:
                conn.execute("INSERT INTO qc_history (study_uid, at, status, grade, reviewer, reason_code, note) "
                             "VALUES (?,?,?,?,?,?,?)", (study_uid, now, status, grade, reviewer, reason_code, note))

    def studies_quiet_since(self, before: str) -> list[str]:
        """Studies whose last instance arrived before ``before`` and that have no QC check yet since."""
        rows = self.index.query(
            "SELECT s.study_uid FROM studies s LEFT JOIN study_qc q ON q.study_uid = s.study_uid "
            "WHERE s.updated_at < ? AND (q.checked_at IS NULL OR q.checked_at = '' OR q.checked_at < s.updated_at)",
            (before,))
        return [r[0] for r in rows]

    # -- provenance ----------------------------------------------------------------------
    def deliveries(self, study_uid: str) -> list[dict[str, Any]]:
        """How copies of a study arrived: one row per (kind, institution, deliverer), with the last arrival."""
        return self.deliveries_many([study_uid]).get(study_uid, [])

    def deliveries_many(self, study_uids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """:meth:`deliveries` for many studies in one query (the C-FIND HR block asks for all matches)."""
        out: dict[str, list[dict[str, Any]]] = {}
        if not study_uids:
            return out
        marks = ",".join("?" * len(study_uids))
        rows = self.index.query(
            "SELECT s.study_uid, i.delivered_by, i.delivered_institution, i.delivered_peer, i.calling_ae, "
            "MAX(i.received_at), COUNT(*) FROM instances i JOIN series se ON se.pk = i.series_pk "
            f"JOIN studies s ON s.pk = se.study_pk WHERE s.study_uid IN ({marks}) AND i.hidden = '' "
            "GROUP BY 1, 2, 3, 4, 5 ORDER BY 6", tuple(study_uids))
        for r in rows:
            out.setdefault(r[0], []).append({
                "kind": r[1] or "unknown", "institution": r[2],
                "who": r[3] if r[3] == r[4] or not r[4] else (f"{r[3]} ({r[4]})" if r[3] else r[4]),
                "last_received_at": r[5], "instances": r[6]})
        return out

    def vouches(self, study_uid: str) -> list[dict[str, Any]]:
        return self.vouches_many([study_uid]).get(study_uid, [])

    def vouches_many(self, study_uids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """:meth:`vouches` for many studies in one query."""
        out: dict[str, list[dict[str, Any]]] = {}
        if not study_uids:
            return out
        marks = ",".join("?" * len(study_uids))
        for r in self.index.query(
                "SELECT study_uid, producer, note, vouched_by, vouched_at FROM producer_vouches "
                f"WHERE study_uid IN ({marks}) ORDER BY pk", tuple(study_uids)):
            row = dict(r)
            out.setdefault(row.pop("study_uid"), []).append(row)
        return out

    def add_vouch(self, study_uid: str, producer: str, note: str, vouched_by: str) -> str:
        """Record an admin's vouch; returns its time (it covers instances received up to then)."""
        at = utc_now()
        with self.index.write() as conn:
            conn.execute("INSERT INTO producer_vouches (study_uid, producer, note, vouched_by, vouched_at) "
                         "VALUES (?,?,?,?,?)", (study_uid, producer, note, vouched_by, at))
        return at

    # -- IOCM rejection notes ------------------------------------------------------------
    def record_rejection(self, note_uid: str, refs: list[RejectedRef], reason: tuple[str, str],
                         sender: dict[str, str]) -> dict[str, Any]:
        """Keep a rejection note and hide what it may reject, in one transaction (see index.rejections)."""
        with self.index.write() as conn:
            return rejections.record_note(conn, note_uid, refs, reason, sender, utc_now())

    def hidden_instances(self, study_uid: str) -> dict[str, dict[str, str]]:
        return rejections.hidden_instances(self.index.connection(), study_uid)
