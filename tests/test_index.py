"""The SQLite index: recording instances, duplicate policies, aggregates, patients, migrations, concurrency."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import pytest

from pacsnode.index.schema import MIGRATIONS, migrate
from pacsnode.index.sqlite import SqliteIndex
from pacsnode.model import CodedEntry, DuplicatePolicy, InstanceFacts, OtherPatientId, StoredFile, StoreResult

ROOT = "1.2.826.0.1.3680043.10.1078.98"
KEEP, REPLACE = DuplicatePolicy.KEEP_FIRST, DuplicatePolicy.REPLACE


@pytest.fixture
def index(tmp_path: Path, index_factory: Any) -> Iterator[SqliteIndex]:
    yield index_factory.index(tmp_path)


def facts(n: int, study: int = 1, series: int = 1, modality: str = "CT", patient_id: str = "P0001",
          issuer: str = "PRV001", **changes: object) -> InstanceFacts:
    base = InstanceFacts(
        sop_instance_uid=f"{ROOT}.3.{study}.{series}.{n}", sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        study_uid=f"{ROOT}.1.{study}", series_uid=f"{ROOT}.2.{study}.{series}", transfer_syntax="1.2.840.10008.1.2.1",
        patient_id=patient_id, issuer_of_patient_id=issuer, patient_name="TEST^PATIENT", study_date="20261120",
        modality=modality, instance_number=n, series_number=series)
    return replace(base, **changes)  # type: ignore[arg-type]


def stored(f: InstanceFacts, size: int = 100, tag: str = "") -> StoredFile:
    return StoredFile(f"aa/bb/{f.sop_instance_uid}{tag}.dcm", size, f"sha-{f.sop_instance_uid}{tag}")


def record(index: SqliteIndex, f: InstanceFacts, policy: DuplicatePolicy = KEEP, size: int = 100,
           tag: str = "") -> tuple[StoreResult, str | None]:
    return index.record_instance(f, stored(f, size, tag), "MODALITY", policy)


def study_row(index: SqliteIndex, study: int = 1) -> sqlite3.Row:
    return index.query("SELECT * FROM studies WHERE study_uid = ?", (f"{ROOT}.1.{study}",))[0]


def test_a_new_instance_is_recorded_with_its_file(index: SqliteIndex) -> None:
    f = facts(1)
    assert record(index, f, size=1234) == (StoreResult.STORED, None)
    assert index.has_instance(f.sop_instance_uid)
    row = index.query("SELECT path, size, sha256, calling_ae FROM instances")[0]
    assert tuple(row) == (f"aa/bb/{f.sop_instance_uid}.dcm", 1234, f"sha-{f.sop_instance_uid}", "MODALITY")
    assert index.used_bytes() == 1234
    [summary] = index.studies()
    assert (summary.study_uid, summary.modalities, summary.series_count, summary.instance_count) == (
        f.study_uid, ["CT"], 1, 1)


def test_keep_first_drops_the_second_copy_and_names_it_for_removal(index: SqliteIndex) -> None:
    f = facts(1)
    record(index, f, size=100)
    second = replace(f, patient_name="SECOND^COPY")
    assert record(index, second, size=999, tag=".b") == (StoreResult.DUPLICATE, f"aa/bb/{f.sop_instance_uid}.b.dcm")
    rows = index.query("SELECT path, size, sha256 FROM instances")
    assert [tuple(r) for r in rows] == [(f"aa/bb/{f.sop_instance_uid}.dcm", 100, f"sha-{f.sop_instance_uid}")]
    assert index.studies()[0].instance_count == 1
    assert index.studies()[0].patient_name == "TEST^PATIENT"
    assert index.used_bytes() == 100


def test_keep_first_with_the_same_path_names_nothing_for_removal(index: SqliteIndex) -> None:
    f = facts(1)
    record(index, f)
    assert record(index, f) == (StoreResult.DUPLICATE, None)


def test_replace_updates_the_one_row_and_names_the_old_file(index: SqliteIndex) -> None:
    f = facts(1)
    record(index, f, size=100)
    result = record(index, f, REPLACE, size=300, tag=".new")
    assert result == (StoreResult.REPLACED, f"aa/bb/{f.sop_instance_uid}.dcm")
    rows = index.query("SELECT path, size, sha256 FROM instances")
    assert [tuple(r) for r in rows] == [(f"aa/bb/{f.sop_instance_uid}.new.dcm", 300,
                                         f"sha-{f.sop_instance_uid}.new")]
    study = study_row(index)
    assert (study["instance_count"], study["series_count"], study["size_bytes"]) == (1, 1, 300)
    assert index.used_bytes() == 300


def test_replace_that_moves_an_instance_to_another_study_keeps_aggregates_right(index: SqliteIndex) -> None:
    record(index, facts(1, study=1))
    record(index, facts(2, study=1))
    moved = replace(facts(2, study=1), study_uid=f"{ROOT}.1.2", series_uid=f"{ROOT}.2.2.1", modality="MR")
    assert record(index, moved, REPLACE, tag=".moved")[0] is StoreResult.REPLACED
    counts = {s.study_uid: (s.modalities, s.series_count, s.instance_count) for s in index.studies()}
    assert counts == {f"{ROOT}.1.1": (["CT"], 1, 1), f"{ROOT}.1.2": (["MR"], 1, 1)}
    record(index, replace(facts(1, study=1), study_uid=f"{ROOT}.1.2", series_uid=f"{ROOT}.2.2.1", modality="MR"),
           REPLACE, tag=".moved")
    counts = {s.study_uid: (s.modalities, s.series_count, s.instance_count) for s in index.studies()}
    assert counts == {f"{ROOT}.1.2": (["MR"], 1, 2)}  # the emptied study is gone, not listed with 0 instances


def test_aggregates_stay_right_as_instances_arrive(index: SqliteIndex) -> None:
    arrivals = [
        (facts(1, series=1, modality="CT"), ["CT"], 1, 1),
        (facts(2, series=1, modality="CT"), ["CT"], 1, 2),
        (facts(1, series=2, modality="MR"), ["CT", "MR"], 2, 3),
        (facts(3, series=1, modality="CT"), ["CT", "MR"], 2, 4),
        (facts(1, series=100, modality="SR"), ["CT", "MR", "SR"], 3, 5),
        (facts(2, series=1, modality="CT"), ["CT", "MR", "SR"], 3, 5),  # a duplicate changes nothing
    ]
    for n, (f, modalities, series_count, instance_count) in enumerate(arrivals, start=1):
        record(index, f, size=10)
        [summary] = index.studies()
        assert (summary.modalities, summary.series_count, summary.instance_count) == (
            modalities, series_count, instance_count), f"after arrival {n}"
    assert study_row(index)["size_bytes"] == 50
    per_series = {r["series_uid"]: r["instance_count"] for r in index.query("SELECT * FROM series")}
    assert per_series == {f"{ROOT}.2.1.1": 3, f"{ROOT}.2.1.2": 1, f"{ROOT}.2.1.100": 1}


def test_two_hospitals_reusing_a_patient_id_stay_two_patients(index: SqliteIndex) -> None:
    record(index, facts(1, study=1, patient_id="P0001", issuer="CTY001", patient_name="ZHAO^LEI"))
    record(index, facts(1, study=2, patient_id="P0001", issuer="PRV001", patient_name="QIAN^MEI"))
    patients = index.query("SELECT patient_id, issuer, patient_name FROM patients ORDER BY issuer")
    assert [tuple(p) for p in patients] == [("P0001", "CTY001", "ZHAO^LEI"), ("P0001", "PRV001", "QIAN^MEI")]
    by_study = {s.study_uid: (s.issuer_of_patient_id, s.patient_name) for s in index.studies(patient_id="P0001")}
    assert by_study == {f"{ROOT}.1.1": ("CTY001", "ZHAO^LEI"), f"{ROOT}.1.2": ("PRV001", "QIAN^MEI")}


def test_a_patient_gains_missing_attributes_but_keeps_known_ones(index: SqliteIndex) -> None:
    record(index, facts(1, patient_name="", patient_sex="M"))
    record(index, facts(2, patient_name="FIRST^NAME", patient_birth_date="19900101", patient_sex="F"))
    record(index, facts(3, patient_name="OTHER^NAME"))
    row = index.query("SELECT patient_name, birth_date, sex FROM patients")[0]
    assert tuple(row) == ("FIRST^NAME", "19900101", "M")


def test_other_ids_and_codes_are_recorded_once(index: SqliteIndex) -> None:
    extra = dict(other_patient_ids=(OtherPatientId("520102196503040013", "CN-RESIDENT-ID", "TEXT"),),
                 procedure_codes=(CodedEntry("CT-CHEST-PLAIN", "CN-HR", "CT chest plain"),),
                 institution_codes=(CodedEntry("PRV001", "CN-INST", "Provincial"),))
    record(index, facts(1, **extra))
    record(index, facts(2, **extra))
    assert index.patient_other_ids("P0001", "PRV001") == [("520102196503040013", "CN-RESIDENT-ID")]
    assert index.study_codes(f"{ROOT}.1.1", "procedure") == [("CT-CHEST-PLAIN", "CN-HR", "CT chest plain")]
    assert index.studies()[0].institution_code == "PRV001"


def test_deleting_rows_whose_file_is_gone_keeps_aggregates_right(index: SqliteIndex) -> None:
    record(index, facts(1, series=1))
    record(index, facts(1, series=2, modality="MR"))
    record(index, facts(1, study=2))
    pks = [r["pk"] for r in index.query("SELECT i.pk FROM instances i JOIN series s ON s.pk = i.series_pk "
                                        "WHERE s.modality = 'MR' OR s.series_uid = ?", (f"{ROOT}.2.2.1",))]
    index.delete_instance_rows(pks)
    [summary] = index.studies()
    assert (summary.study_uid, summary.modalities, summary.series_count, summary.instance_count) == (
        f"{ROOT}.1.1", ["CT"], 1, 1)


def test_migrations_are_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    SqliteIndex(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn) == []
    applied = [r[0] for r in conn.execute("SELECT name FROM migrations ORDER BY name")]
    assert applied == sorted(name for name, _sql in MIGRATIONS)
    extra = MIGRATIONS + [("9999_test_extra", "CREATE TABLE extra (x INTEGER)")]
    assert migrate(conn, extra) == ["9999_test_extra"]
    assert migrate(conn, extra) == []
    conn.close()
    again = SqliteIndex(path)  # reopening an up-to-date index changes nothing
    assert again.query("SELECT COUNT(*) FROM migrations")[0][0] == len(MIGRATIONS) + 1
    again.close()


def test_a_failed_migration_leaves_nothing_half_applied(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "index.sqlite", isolation_level=None)
    broken = [("0001_ok", "CREATE TABLE a (x INTEGER)"),
              ("0002_broken", "CREATE TABLE b (x INTEGER); CREATE TABLE a (y INTEGER)")]
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn, broken)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "a" in tables and "b" not in tables
    assert [r[0] for r in conn.execute("SELECT name FROM migrations")] == ["0001_ok"]
    conn.close()


def _write_many(index: SqliteIndex, study: int, count: int, errors: list[BaseException],
                barrier: threading.Barrier) -> None:
    try:
        barrier.wait()
        for n in range(count):
            record(index, facts(n, study=study, series=n % 3), size=10)
    except BaseException as exc:  # collected and asserted by the test
        errors.append(exc)


def test_concurrent_writers_from_threads_lose_nothing(index: SqliteIndex) -> None:
    threads_n, per_thread = 8, 25
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads_n)
    threads = [threading.Thread(target=_write_many, args=(index, t, per_thread, errors, barrier))
               for t in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert index.query("SELECT COUNT(*) FROM instances")[0][0] == threads_n * per_thread
    assert sorted(s.instance_count for s in index.studies()) == [per_thread] * threads_n
    assert all(s.series_count == 3 for s in index.studies())


def test_two_index_objects_on_one_file_write_side_by_side(tmp_path: Path) -> None:
    """Like ``pacsnode import`` running next to ``serve``: two connections pools, one file, no 'locked'."""
    first = SqliteIndex(tmp_path / "index.sqlite", synchronous="NORMAL")
    second = SqliteIndex(tmp_path / "index.sqlite", synchronous="NORMAL")
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)
    threads = [threading.Thread(target=_write_many, args=(ix, n, 30, errors, barrier))
               for n, ix in enumerate((first, second, first, second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert first.query("SELECT COUNT(*) FROM instances")[0][0] == 120
    assert sorted(s.instance_count for s in second.studies()) == [30] * 4
    first.close()
    second.close()
