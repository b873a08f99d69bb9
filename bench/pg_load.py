"""Bulk-load bench.query's synthetic region into a PostgreSQL index with COPY (bench data, not ingest).

``load(url, studies, per_study)`` lets pacsnode's own migrations create the schema
(``PostgresIndex(url)``), then writes ``studies`` studies of bench.query's region (the same
patients, names, dates, accession numbers as ``bench.query.study(i)``; one series each) with
``per_study`` instances per study, rows shaped as ``SqliteIndex.record_instance`` writes them
(folded names, study counts and modalities, ``received_at``), straight through COPY: 1M instances
in about a minute instead of the hours the store path would take. Then ANALYZE, so the planner
sees the real table sizes.

    .venv/bin/python -m bench.pg_load URL [--studies 100000] [--per-study 10]
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Iterator

from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from bench.query import instance_uid, study

CALLING_AE = "BENCH"
NOW = "2026-11-26T00:00:00.000000+00:00"
SIZE = 1024  # bytes per (unwritten) instance file: C-FIND never opens it


def _patients(studies: int) -> Iterator[tuple[Any, ...]]:
    from pacsnode.index.sqlite import fold

    for i in range(0, studies, 2):  # two studies per patient: study 2p is the patient's first
        s = study(i)
        yield (i // 2 + 1, s["patient_id"], s["issuer"], s["patient_name"], fold(s["patient_name"]),
               s["birth_date"], s["sex"])


def _studies(studies: int, per_study: int) -> Iterator[tuple[Any, ...]]:
    for i in range(studies):
        s = study(i)
        yield (i + 1, s["study_uid"], i // 2 + 1, s["study_date"], f"{s['study_time']}.000000", s["accession"],
               s["description"], s["institution"], s["modality"], 1, per_study, per_study * SIZE, CALLING_AE,
               NOW, NOW)


def _series(studies: int, per_study: int) -> Iterator[tuple[Any, ...]]:
    for i in range(studies):
        s = study(i)
        yield i + 1, s["series_uid"], i + 1, s["modality"], 1, s["institution"], per_study


def _instances(studies: int, per_study: int) -> Iterator[tuple[Any, ...]]:
    pk = 0
    for i in range(studies):
        for k in range(1, per_study + 1):
            pk += 1
            yield (pk, instance_uid(i, k), i + 1, CTImageStorage, k, ExplicitVRLittleEndian, f"bench/{i}/{k}.dcm",
                   SIZE, "0" * 64, CALLING_AE, NOW)


TABLES: tuple[tuple[str, str, Any], ...] = (
    ("patients", "pk, patient_id, issuer, patient_name, patient_name_folded, birth_date, sex", _patients),
    ("studies", "pk, study_uid, patient_pk, study_date, study_time, accession_number, study_description, "
                "institution_name, modalities, series_count, instance_count, size_bytes, calling_ae, received_at, "
                "updated_at", _studies),
    ("series", "pk, series_uid, study_pk, modality, series_number, institution_name, instance_count", _series),
    ("instances", "pk, sop_instance_uid, series_pk, sop_class_uid, instance_number, transfer_syntax, path, size, "
                  "sha256, calling_ae, received_at", _instances),
)


def load(url: str, studies: int, per_study: int) -> float:
    """COPY ``studies`` × ``per_study`` instances into the (empty) index at ``url``; returns seconds."""
    import psycopg

    from pacsnode.index.postgres import PostgresIndex

    PostgresIndex(url).close()  # pacsnode's migrations create the schema and its indexes
    began = time.perf_counter()
    with psycopg.connect(url) as conn:
        for table, columns, rows in TABLES:
            args = (studies,) if table == "patients" else (studies, per_study)
            with conn.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows(*args):
                    copy.write_row(row)
            conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'pk'), "
                         f"(SELECT COALESCE(MAX(pk), 1) FROM {table}))")
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - began


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--per-study", type=int, default=10)
    args = parser.parse_args(argv)
    seconds = load(args.url, args.studies, args.per_study)
    print(f"{args.studies * args.per_study:,} instances ({args.studies:,} studies) in {seconds:.0f} s")


if __name__ == "__main__":
    main()
