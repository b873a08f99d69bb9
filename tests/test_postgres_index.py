"""PostgreSQL-only properties of the index (issue 16.1): the C-FIND keys are indexable there.

The matching results themselves are proven identical on both backends by the matching suite
(``index_factory`` runs it on SQLite and PostgreSQL); here the plans: with sequential scans
and plain index scans disabled (only bitmap scans, which need a condition an index serves), a
condition no index can serve still shows a Seq Scan, so a plan whose every scan is bounded by an
Index Cond proves the C-FIND condition is served by an index.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pacsnode.index import matching
from pacsnode.index.dialect import pg_params, pg_statement
from pacsnode.index.postgres import PostgresIndex
from pacsnode.model import InformationModel, Level, Query, QueryKey

pytestmark = pytest.mark.postgres


def _plan(index: PostgresIndex, query: Query) -> str:
    captured: list[tuple[str, Any]] = []
    original = index.query

    def spy(sql: str, params: Any = ()) -> Any:
        captured.append((sql, params))
        return original(sql, params)

    index.query = spy  # type: ignore[method-assign]
    list(matching.find(index, query))
    sql, params = captured[0]
    conn = index._pool.getconn()
    try:
        conn.execute("SET enable_seqscan = off")
        conn.execute("SET enable_indexscan = off")  # a whole-index scan with a Filter is no index use either
        rows = conn.execute("EXPLAIN " + pg_statement(sql), pg_params(params)).fetchall()
        conn.execute("RESET ALL")
    finally:
        index._pool.putconn(conn)
    return "\n".join(r[0] for r in rows)


def _fill(url: str, count: int) -> None:
    """Enough patients and studies, analysed, for the planner to weigh indexes as at a real site."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO patients (patient_id, issuer, patient_name, patient_name_folded) "
                     "SELECT 'P' || g, 'H', n, lower(n) FROM generate_series(1, %s) g, LATERAL (SELECT "
                     "(ARRAY['WANG','LI','ZHANG','CHEN'])[g %% 4 + 1] || md5(g::text) || '^X' AS n) x", (count,))
        conn.execute("INSERT INTO studies (study_uid, patient_pk, study_date, accession_number) "
                     "SELECT '1.2.' || pk, pk, to_char(date '2020-01-01' + (pk % 1500)::int, 'YYYYMMDD'), 'A' || pk "
                     "FROM patients")
        conn.execute("ANALYZE")


def _full_scans(plan: str) -> list[str]:
    """Scan nodes that read a whole table or index (no Index Cond / Recheck Cond bounds them)."""
    lines = [line.strip().lstrip("->").strip() for line in plan.splitlines()]
    return [line for i, line in enumerate(lines) if " Scan" in line and not line.startswith("Bitmap Heap")
            and not (i + 1 < len(lines) and lines[i + 1].startswith(("Index Cond", "Recheck Cond")))]


@pytest.mark.parametrize("keyword,value,ci", [
    ("PatientName", "WANGc4c*", False),       # prefix: b-tree on the COLLATE "C" column + trigram for "*=WANG*"
    ("PatientName", "wangc4c*", True),        # case-insensitive: the folded column
    ("PatientID", "P1", False),
    ("AccessionNumber", "A1", False),
    ("StudyDate", "20240101-20240105", False),
])
def test_c_find_keys_are_served_by_indexes_on_postgresql(postgres_url: str, keyword: str, value: str,
                                                        ci: bool, tmp_path: Path) -> None:
    index = PostgresIndex(postgres_url)
    _fill(postgres_url, 20_000)
    try:
        query = Query(Level.STUDY, InformationModel.STUDY_ROOT,
                      (QueryKey(keyword, "", value), QueryKey("StudyInstanceUID", "", "")), case_insensitive_pn=ci)
        plan = _plan(index, query)
        assert not _full_scans(plan), plan
    finally:
        index.close()
