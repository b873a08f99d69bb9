"""The server-side function (index/pg_store_sql.py) writes the rows the shared SQL writes, on a real PostgreSQL.

The same batches go through both ways of indexing on two new databases: every row of every table
the ingest touches (natural keys in place of pks, timestamps left out) and every result must be
equal. The batches cover what the function does itself (patients filled in, other IDs, codes,
study flags, a second series and the study's modalities, DICOMweb metadata, kept-first
duplicates, rejection notes honoured or not) and what it leaves to the shared SQL (a replace, a
NUL in a text value, an integer beyond bigint, a lone surrogate: these fail alone there).
"""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from pacsnode.index import pg_ingest
from pacsnode.index.postgres import PostgresIndex
from pacsnode.index.sqlite import _Pending
from pacsnode.model import (CodedEntry, DeliveryKind, DuplicatePolicy, InstanceFacts, OtherPatientId, Provenance,
                            StoredFile)

pytestmark = pytest.mark.postgres

ROOT = "1.2.826.0.1.3680043.10.1173.19"
DUMPS = {
    "patients": "SELECT patient_id, issuer, patient_name, patient_name_folded, birth_date, sex FROM patients",
    "other_ids": "SELECT p.patient_id, o.other_id, o.other_issuer, o.type_of_id FROM patient_other_ids o "
                 "JOIN patients p ON p.pk = o.patient_pk",
    "studies": "SELECT s.study_uid, p.patient_id, s.study_date, s.study_time, s.accession_number, s.study_id, "
               "s.study_description, s.referring_physician, s.referring_physician_folded, s.institution_name, "
               "s.institution_code, s.modalities, s.body_parts, s.contrast, s.lossy, s.series_count, "
               "s.instance_count, s.size_bytes, s.calling_ae, s.specific_character_set, s.deidentified "
               "FROM studies s JOIN patients p ON p.pk = s.patient_pk",
    "codes": "SELECT s.study_uid, c.kind, c.code_value, c.scheme, c.meaning FROM study_codes c "
             "JOIN studies s ON s.pk = c.study_pk",
    "series": "SELECT e.series_uid, s.study_uid, e.modality, e.body_part, e.series_number, e.series_description, "
              "e.series_date, e.series_time, e.institution_name, e.station_name, e.device_serial, e.instance_count "
              "FROM series e JOIN studies s ON s.pk = e.study_pk",
    "instances": "SELECT i.sop_instance_uid, e.series_uid, i.sop_class_uid, i.instance_number, i.transfer_syntax, "
                 "i.path, i.size, i.sha256, i.number_of_frames, i.lossy, i.specific_character_set, i.calling_ae, "
                 "i.deidentified, i.delivered_by, i.delivered_peer, i.delivered_institution, i.hidden "
                 "FROM instances i JOIN series e ON e.pk = i.series_pk",
    "metadata": "SELECT sop_instance_uid, metadata, frames FROM instance_metadata",
}


def item(n: int, *, series: str = "1", policy: DuplicatePolicy = DuplicatePolicy.KEEP_FIRST, path: str = "",
         institution: str = "", web: tuple[str, str] | None = None, **fields: Any) -> _Pending:
    facts = InstanceFacts(sop_instance_uid=f"{ROOT}.1.{series}.{n}", sop_class_uid=str(CTImageStorage),
                          study_uid=f"{ROOT}.1", series_uid=f"{ROOT}.1.{series}",
                          transfer_syntax=ExplicitVRLittleEndian, **{"instance_number": n, **fields})
    provenance = Provenance(DeliveryKind.PEER, aet="SENDER", peer="sender", institution=institution)
    stored = StoredFile(path or f"p/{series}/{n}.dcm", 1000 + n, f"{n:064d}")
    return _Pending((facts, stored, "SENDER", policy, provenance, web))


def batches() -> list[list[_Pending]]:
    first = dict(patient_id="FN1", patient_name="Müller^Anna", modality="CT", body_part="CHEST",
                 other_patient_ids=(OtherPatientId("X1", "HOSP"), OtherPatientId("X2", "", "RFID")),
                 procedure_codes=(CodedEntry("P1", "LN", "Chest CT"), CodedEntry("P1", "LN", "again")),
                 study_description="Thorax", referring_physician="Dr^Öz", contrast_agent="Iodine",
                 series_number=3, station_name="ST1", device_serial="D1", specific_character_set="ISO_IR 192")
    later = dict(patient_id="FN1", patient_name="Other^Name", patient_birth_date="19700101", patient_sex="F",
                 modality="MR", body_part="HEAD", lossy=True, institution_name="Clinic",
                 institution_codes=(CodedEntry("I9", "DCM", "Clinic code"),), deidentified=True)
    return [
        [item(1, **first), item(2, **first, web=('{"a": 1}', "[1]"))],
        [item(1, series="2", **later), item(3, **first), item(1, **first, path="p/copy.dcm")],
        [item(2, **first, policy=DuplicatePolicy.REPLACE, path="p/replaced.dcm")],
        [item(5, **first, institution="INST-A"), item(6, **first, institution="INST-B"), item(7, **first)],
        [item(8, **{**first, "patient_name": "Nul\x00Name"})],
        [item(9, **{**first, "instance_number": 2 ** 70}), item(10, **first),  # beyond bigint; a lone surrogate
         item(11, **{**first, "specific_character_set": "bad \udcff"}), item(12, **first)],
    ]


def run(url: str, function: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[list[Any], dict[str, list[Any]]]:
    monkeypatch.setattr(pg_ingest, "FUNCTION", function)
    index = PostgresIndex(url)
    try:
        with index.write() as conn:  # notes kept before their instances arrive: honoured for 5 and 7, not 6
            for uid, kind, institution in ((f"{ROOT}.1.1.5", "peer", "INST-A"), (f"{ROOT}.1.1.6", "peer", "INST-A"),
                                           (f"{ROOT}.1.1.7", "own", "")):
                conn.execute("INSERT INTO rejections (note_uid, sop_instance_uid, reason_code, sender_kind, "
                             "sender_institution, received_at) VALUES (?,?,?,?,?,?)",
                             (f"{ROOT}.9", uid, "113001", kind, institution, "2026-01-01"))
        results: list[Any] = []
        for batch in batches():
            pg_ingest.commit_batch(index, batch)
            results += [(item.result, type(item.error).__name__ if item.error else None) for item in batch]
        return results, {name: sorted(map(tuple, index.query(sql)), key=repr) for name, sql in DUMPS.items()}
    finally:
        index.close()


def test_the_function_writes_the_rows_and_results_the_shared_sql_writes(postgres_server: Any,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    by_function = run(postgres_server.create_database(), True, monkeypatch)
    by_statements = run(postgres_server.create_database(), False, monkeypatch)
    assert by_function[1] == by_statements[1]
    assert by_function[0] == by_statements[0]
    rows = by_function[1]
    assert [result[0][0].value if result[0] else result[1] for result in by_function[0]] == \
        ["stored"] * 4 + ["duplicate", "replaced"] + ["stored"] * 4 + \
        ["NumericValueOutOfRange", "stored", "UnicodeEncodeError", "stored"]
    assert by_function[0][4][0][1] == "p/copy.dcm"  # the dropped copy is the caller's orphan
    hidden = {r[0].rsplit(".", 1)[1]: r[-1] for r in rows["instances"] if r[1].endswith(".1.1")}
    assert [hidden[n] for n in "5678"] == ["rejected", "", "rejected", ""]
    assert rows["studies"][0][11:13] == ("CT\\MR", "CHEST\\HEAD")


def test_the_call_has_at_most_50_parameters_so_psycopg_keeps_it_parsed() -> None:
    """psycopg parses a statement of more than 50 parameters again at each call (its query cache's limit):
    0.2 ms of the node's CPU per instance, a third of what the call costs it."""
    from pacsnode.index import pg_store, pg_store_sql

    assert len(pg_store_sql.ARGUMENTS) <= 50 and pg_store.CALL.count("%s") == len(pg_store_sql.ARGUMENTS)
