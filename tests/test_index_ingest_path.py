"""SQLite's few statements for an instance of a held series write exactly what the generic ones write.

``index.sqlite_ingest`` answers most instances with one read and one INSERT instead of the
per-row statements of ``SqliteIndex._record_rows``. The same mixed sequence of instances (fill-ins,
codes, other IDs, provenance, kept rejection notes, duplicates under both policies, a series under
another study, a study under another patient, DICOMweb metadata) goes through both, and every
table must come out the same, row for row.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pacsnode.index import rejections, sqlite_ingest
from pacsnode.index.sqlite import SqliteIndex
from pacsnode.model import (
    CodedEntry,
    DeliveryKind,
    DuplicatePolicy,
    InstanceFacts,
    OtherPatientId,
    Provenance,
    StoredFile,
    StoreResult,
)

ROOT = "1.2.826.0.1.3680043.10.1078.97"
KEEP, REPLACE = DuplicatePolicy.KEEP_FIRST, DuplicatePolicy.REPLACE
NOW = "2026-12-02T00:00:00+00:00"
TABLES = ("patients", "patient_other_ids", "studies", "study_codes", "series", "instances", "instance_metadata",
          "rejections")


def facts(n: int, study: int = 1, series: int = 1, patient_id: str = "P1", **changes: Any) -> InstanceFacts:
    base = InstanceFacts(
        sop_instance_uid=f"{ROOT}.3.{study}.{series}.{n}", sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        study_uid=f"{ROOT}.1.{study}", series_uid=f"{ROOT}.2.{study}.{series}", transfer_syntax="1.2.840.10008.1.2.1",
        patient_id=patient_id, issuer_of_patient_id="ISS", study_date="20261120", modality="CT", instance_number=n)
    return replace(base, **changes)


OWN = Provenance(DeliveryKind.OWN, aet="MOD", peer="modality", institution="HOSP")
PEER = Provenance(DeliveryKind.PEER, aet="OTHER", peer="other", institution="ELSEWHERE")
CODE = CodedEntry("P5-0001", "SCT", "CT head")

#: (facts, policy, provenance, file tag, web metadata) in arrival order
SEQUENCE: list[tuple[InstanceFacts, DuplicatePolicy, Provenance | None, str, tuple[str, str] | None]] = [
    (facts(1), KEEP, OWN, "", None),  # new patient, study, series: the generic statements
    (facts(2), KEEP, OWN, "", ("{}", "[]")),  # the common case, with DICOMweb metadata
    (facts(3, patient_name="DOE^JANE"), KEEP, None, "", None),  # each fill-in condition alone
    (facts(15, patient_birth_date="19700101"), KEEP, None, "", None),
    (facts(16, patient_sex="F"), KEEP, None, "", None),
    (facts(4, patient_name="OTHER^NAME", patient_sex="M"), KEEP, PEER, "", None),  # known attributes stay
    (facts(5, institution_name="General"), KEEP, OWN, "", None),
    (facts(17, institution_codes=(CodedEntry("H1", "L", "Hosp"),)), KEEP, OWN, "", None),
    (facts(6, contrast_agent="IODINE", procedure_codes=(CODE,)), KEEP, OWN, "", None),
    (facts(18, lossy=True), KEEP, OWN, "", None),
    (facts(19, deidentified=True), KEEP, OWN, "", None),
    (facts(7, other_patient_ids=(OtherPatientId("X9", "OTHERISS", "TEXT"),)), KEEP, OWN, "", None),
    (facts(8, institution_name="Other", lossy=True), KEEP, OWN, "", None),  # nothing left to fill in
    (facts(2), KEEP, OWN, ".b", ("{1}", "[1]")),  # keep-first duplicate: the second copy is named for removal
    (facts(2), KEEP, OWN, "", None),  # keep-first duplicate at the same path
    (facts(3), REPLACE, PEER, ".r", ("{2}", "[2]")),  # replace: the generic statements
    (facts(9), KEEP, OWN, "", None),  # rejected by a kept note of the own institution: hidden on arrival
    (facts(10), KEEP, PEER, "", None),  # named by NOWHERE's note, delivered by ELSEWHERE: not hidden
    (facts(11), KEEP, None, "", None),  # named by an import note: hidden whoever delivered it
    (facts(14), KEEP, PEER, "", None),  # named by ELSEWHERE's note, delivered by ELSEWHERE: hidden
    (facts(12, study_uid=f"{ROOT}.1.2"), KEEP, OWN, "", None),  # series 1.1 under another study UID
    (facts(13, patient_id="P2"), KEEP, OWN, "", None),  # study 1 under another patient
    (facts(1, series=2), KEEP, OWN, "", None),  # a second series: generic, then the common case
    (facts(2, series=2, body_part="HEAD"), KEEP, OWN, "", None),
]


def _keep_notes(index: SqliteIndex) -> None:
    reason = ("113001", "Rejected for Quality Reasons")
    senders = {9: {"kind": "own", "aet": "MOD", "peer": "modality", "institution": "HOSP"},
               10: {"kind": "peer", "aet": "X", "peer": "x", "institution": "NOWHERE"},
               11: {"kind": "import"},
               14: {"kind": "peer", "aet": "OTHER", "peer": "other", "institution": "ELSEWHERE"}}
    with index.write() as conn:
        for n, sender in senders.items():
            rejections.record_note(conn, f"{ROOT}.9.{n}", [rejections.RejectedRef(f"{ROOT}.3.1.1.{n}")], reason,
                                   sender, NOW)


def _run(index: SqliteIndex) -> tuple[list[tuple[StoreResult, str | None]], dict[str, list[tuple[Any, ...]]]]:
    _keep_notes(index)
    results = []
    for f, policy, provenance, tag, web in SEQUENCE:
        stored = StoredFile(f"aa/bb/{f.sop_instance_uid}{tag}.dcm", 100 + len(tag), f"sha-{tag}")
        results.append(index.record_instance(f, stored, "MODALITY", policy, provenance, web_metadata=web))
    tables = {name: [tuple(row) for row in index.query(f"SELECT * FROM {name} ORDER BY 1")] for name in TABLES}
    return results, tables


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pacsnode.index.sqlite_ingest.utc_now", lambda: NOW)
    monkeypatch.setattr("pacsnode.index.sqlite.utc_now", lambda: NOW)


def test_the_few_statements_write_what_the_generic_ones_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as generic_only:
        generic_only.setattr(sqlite_ingest, "record", lambda index, conn, *args: index._record(conn, *args))
        reference = SqliteIndex(tmp_path / "generic.sqlite")
        expected = _run(reference)
        reference.close()
    index = SqliteIndex(tmp_path / "fast.sqlite")
    got = _run(index)
    index.close()
    assert got[0] == expected[0]
    for name in TABLES:
        assert got[1][name] == expected[1][name], name
    hidden = {row[1]: row[-1] for row in got[1]["instances"] if row[1].startswith(f"{ROOT}.3.1.1.")}
    assert [hidden[f"{ROOT}.3.1.1.{n}"] for n in (8, 9, 10, 11, 14)] == ["", "rejected", "", "rejected", "rejected"]


def test_an_instance_of_a_held_series_is_six_statements(tmp_path: Path) -> None:
    """BEGIN, one read, one INSERT, the series' and the study's counts, COMMIT (relaxed commits or not)."""
    index = SqliteIndex(tmp_path / "index.sqlite")
    index.record_instance(facts(1), StoredFile("a/1.dcm", 1, "x"), "MOD", KEEP, OWN)
    statements: list[str] = []
    conn: sqlite3.Connection = index.connection()
    conn.set_trace_callback(statements.append)
    for n, relaxed in ((2, False), (3, True), (4, True)):
        statements.clear()
        index.relaxed_instance_commits = relaxed
        index.record_instance(facts(n), StoredFile(f"a/{n}.dcm", 1, "x"), "MOD", KEEP, OWN)
        kinds = [s.split()[0] for s in statements if not s.startswith("PRAGMA")]
        assert kinds == ["BEGIN", "SELECT", "INSERT", "UPDATE", "UPDATE", "COMMIT"], statements
    assert sum(s.startswith("PRAGMA") for s in statements) == 0  # the relaxed setting stays between commits
    index.close()
