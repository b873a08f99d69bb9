"""Query → SQL on the index: C-FIND matching per PS3.4 C.2.2.2 and the instances a retrieve names.

Everything is matched in SQL, with bound parameters only, against the columns of
``schema.py``; no instance file is opened. One row comes back per entity at the query level
(patients are grouped over their studies, studies never join their series), so a study with
a thousand instances is one response.

The matching rules for one value (PS3.4 C.2.2.2, and the choices it leaves to us) are in
``conditions.py``; this module maps keys to columns, levels to joins, and runs the queries.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Collection, Iterator, Sequence

from pacsnode.errors import InvalidQuery, TooManyResults
from pacsnode.index.conditions import (
    DATE,
    NEVER,
    Column,
    Condition,
    Where,
    split_range,
    time_bounds,
    value_condition,
)
from pacsnode.index.dialect import JsonList
from pacsnode.index.base import Index
from pacsnode.model import InstanceLocation, Level, Query, QueryKey

LOGGER = logging.getLogger(__name__)

BATCH = 500


COLUMNS: dict[str, Column] = {
    "PatientID": Column("p.patient_id", "LO", "p"),
    "IssuerOfPatientID": Column("p.issuer", "LO", "p"),
    "PatientName": Column("p.patient_name", "PN", "p", folded="p.patient_name_folded"),
    "PatientBirthDate": Column("p.birth_date", "DA", "p"),
    "PatientSex": Column("p.sex", "CS", "p"),
    "StudyInstanceUID": Column("s.study_uid", "UI", "s"),
    "StudyDate": Column("s.study_date", "DA", "s"),
    "StudyTime": Column("s.study_time", "TM", "s"),
    "AccessionNumber": Column("s.accession_number", "SH", "s"),
    "StudyID": Column("s.study_id", "SH", "s"),
    "StudyDescription": Column("s.study_description", "LO", "s"),
    "ReferringPhysicianName": Column("s.referring_physician", "PN", "s", folded="s.referring_physician_folded"),
    "InstitutionName": Column("s.institution_name", "LO", "s"),
    "ModalitiesInStudy": Column("s.modalities", "CS", "s", special="modalities"),
    "NumberOfStudyRelatedSeries": Column("s.series_count", "IS", "s", special="count"),
    "NumberOfStudyRelatedInstances": Column("s.instance_count", "IS", "s", special="count"),
    "SeriesInstanceUID": Column("se.series_uid", "UI", "se"),
    "Modality": Column("se.modality", "CS", "se"),
    "SeriesNumber": Column("se.series_number", "IS", "se"),
    "SeriesDescription": Column("se.series_description", "LO", "se"),
    "SeriesDate": Column("se.series_date", "DA", "se"),
    "SeriesTime": Column("se.series_time", "TM", "se"),
    "BodyPartExamined": Column("se.body_part", "CS", "se"),
    "StationName": Column("se.station_name", "SH", "se"),
    "DeviceSerialNumber": Column("se.device_serial", "LO", "se"),
    "NumberOfSeriesRelatedInstances": Column("se.instance_count", "IS", "se", special="count"),
    "SOPInstanceUID": Column("i.sop_instance_uid", "UI", "i"),
    "SOPClassUID": Column("i.sop_class_uid", "UI", "i"),
    "InstanceNumber": Column("i.instance_number", "IS", "i"),
    "NumberOfFrames": Column("i.number_of_frames", "IS", "i"),
}
# Keys computed outside the main SELECT (matched by a sub-select, or return only).
SPECIAL: dict[str, Column] = {
    "OtherPatientIDsSequence": Column("", "SQ", "p", special="other_ids"),
    "ProcedureCodeSequence": Column("", "SQ", "s", special="codes:procedure"),
    "InstitutionCodeSequence": Column("", "SQ", "s", special="codes:institution"),
    "SOPClassesInStudy": Column("", "UI", "s", special="sop_classes"),
    "NumberOfPatientRelatedStudies": Column("", "IS", "p", special="count"),
    "NumberOfPatientRelatedSeries": Column("", "IS", "p", special="count"),
    "NumberOfPatientRelatedInstances": Column("", "IS", "p", special="count"),
}
OTHER_ID_ITEM = {"PatientID": Column("o.other_id", "LO", "o"), "IssuerOfPatientID": Column("o.other_issuer", "LO", "o"),
                 "TypeOfPatientID": Column("o.type_of_id", "CS", "o")}
CODE_ITEM = {"CodeValue": Column("c.code_value", "SH", "c"), "CodingSchemeDesignator": Column("c.scheme", "SH", "c"),
             "CodeMeaning": Column("c.meaning", "LO", "c")}
DATE_TIME_PAIRS = (("StudyDate", "StudyTime"), ("SeriesDate", "SeriesTime"))

ALIASES: dict[Level, frozenset[str]] = {
    Level.PATIENT: frozenset({"p"}),
    Level.STUDY: frozenset({"p", "s"}),
    Level.SERIES: frozenset({"p", "s", "se"}),
    Level.IMAGE: frozenset({"p", "s", "se", "i"}),
}
_FROM = {
    Level.PATIENT: "patients p JOIN studies s ON s.patient_pk = p.pk",
    Level.STUDY: "studies s JOIN patients p ON p.pk = s.patient_pk",
    Level.SERIES: "series se JOIN studies s ON s.pk = se.study_pk JOIN patients p ON p.pk = s.patient_pk",
    Level.IMAGE: ("instances i JOIN series se ON se.pk = i.series_pk JOIN studies s ON s.pk = se.study_pk "
                  "JOIN patients p ON p.pk = s.patient_pk"),
}
_ORDER = {
    Level.PATIENT: "p.pk",
    Level.STUDY: "s.study_date DESC, s.study_time DESC, s.pk",
    Level.SERIES: "s.pk, se.series_number, se.pk",
    Level.IMAGE: "se.pk, i.instance_number, i.pk",
}


def _combined_condition(query: Query, date_kw: str, time_kw: str) -> Condition:
    """DA+TM pair of the same range form as one date-time (PS3.4 C.2.2.2.5.4), else None."""
    date_value, time_value = query.value(date_kw), query.value(time_kw)
    if not ("-" in date_value and "-" in time_value) or "\\" in date_value + time_value:
        return None
    date_low, date_high = split_range(date_value)
    time_low, time_high = split_range(time_value)
    if (bool(date_low), bool(date_high)) != (bool(time_low), bool(time_high)):
        return None
    date_col, time_col = COLUMNS[date_kw].expr, COLUMNS[time_kw].expr
    low_t = time_bounds(time_low) if time_low else None
    high_t = time_bounds(time_high) if time_high else None
    if any(v and not DATE.match(v) for v in (date_low, date_high)) or (time_low and not low_t) \
            or (time_high and not high_t):
        return NEVER, []
    clauses, params = [f"{date_col} <> ''", f"{time_col} <> ''"], []
    if date_low and low_t:
        clauses.append(f"{date_col} >= ? AND {date_col} || {time_col} >= ?")
        params += [date_low, date_low + low_t[0]]
    if date_high and high_t:
        clauses.append(f"{date_col} <= ? AND {date_col} || {time_col} <= ?")
        params += [date_high, date_high + high_t[1]]
    return " AND ".join(clauses), params


# -- key conditions --------------------------------------------------------------------------
def _has_value(key: QueryKey) -> bool:
    if key.vr == "SQ" or key.items:
        return any(_has_value(item) for item in key.items)
    return bool(key.value and key.value.strip() and key.value.strip() != "*")


def _item_where(items: Sequence[QueryKey], columns: dict[str, Column], case_insensitive: bool) -> Where:
    where = Where()
    for item in items:
        column = columns.get(item.keyword)
        if column is not None:
            condition = value_condition(column, item.value, case_insensitive)
            if condition:
                where.add(*condition)
    return where


_SUBSELECTS = {
    "modalities": "s.pk IN (SELECT se2.study_pk FROM series se2 WHERE {})",
    "sop_classes": "s.pk IN (SELECT se2.study_pk FROM instances i2 JOIN series se2 ON se2.pk = i2.series_pk WHERE {})",
    "other_ids": "p.pk IN (SELECT o.patient_pk FROM patient_other_ids o WHERE {})",
    "codes": "s.pk IN (SELECT c.study_pk FROM study_codes c WHERE {})",
}
_SUBSELECT_VALUES = {"modalities": Column("se2.modality", "CS", "se2"),
                     "sop_classes": Column("i2.sop_class_uid", "UI", "i2")}


def _special_condition(column: Column, key: QueryKey) -> Condition:
    """Keys matched in another table, as one non-correlated ``pk IN (SELECT ...)``."""
    kind, _, code_kind = column.special.partition(":")
    if kind in _SUBSELECT_VALUES:
        where = Where()
        where.add(*(value_condition(_SUBSELECT_VALUES[kind], key.value) or (None, ())))
    elif kind in ("other_ids", "codes"):
        where = _item_where(key.items, OTHER_ID_ITEM if kind == "other_ids" else CODE_ITEM, False)
    else:
        return None  # counts: return only
    if not where.clauses:
        return None
    if code_kind:
        where.add("c.kind = ?", [code_kind])
    return _SUBSELECTS[kind].format(where.sql()), where.params


def query_where(query: Query, aliases: Collection[str]) -> Where:
    """All matching conditions of ``query`` over the tables ``aliases`` joins.

    Below PATIENT level the patient conditions go into one ``p.pk IN (SELECT ...)``: a name
    matched in every component group cannot use an index, and written as a plain join
    condition SQLite walks all studies in ORDER BY order and tests each one's patient
    (300 ms at 100k studies); as a sub-select it scans the patients once (10 ms).
    """
    where, patient = Where(), Where()
    group_patient = "s" in aliases
    handled: set[str] = set()
    if query.combined_datetime:
        for date_kw, time_kw in DATE_TIME_PAIRS:
            if COLUMNS[date_kw].alias in aliases:
                condition = _combined_condition(query, date_kw, time_kw)
                if condition:
                    where.add(*condition)
                    handled |= {date_kw, time_kw}
    for key in query.keys:
        column = COLUMNS.get(key.keyword) or SPECIAL.get(key.keyword)
        if column is None or key.keyword in handled or not _has_value(key):
            continue
        if column.alias not in aliases:
            raise InvalidQuery(f"{key.keyword} cannot match at {query.level.value} level")
        if column.special:
            where.add(*(_special_condition(column, key) or (None, ())))
        else:
            target = patient if group_patient and column.alias == "p" else where
            target.add(*(value_condition(column, key.value, query.case_insensitive_pn) or (None, ())))
    if patient.clauses and set(patient.clauses) <= _BY_PATIENT_KEY and _PATIENT_ID_EQUALS in patient.clauses:
        where.add(patient.sql(), patient.params)  # the patient's unique key: a plain join, driven by its index
    elif patient.clauses:
        where.add(f"p.pk IN (SELECT p.pk FROM patients p WHERE {patient.sql()})", patient.params)
    return where


#: An exact Patient ID (with or without its issuer) names the patient through its unique index: as a
#: plain join condition PostgreSQL plans it in ~0.2 ms instead of ~0.5 as a sub-select (at 1M
#: instances; a statement is planned at each of its first ten uses on a pool connection) and runs it
#: in half the time; SQLite starts from that index either way.
_PATIENT_ID_EQUALS = "p.patient_id = ?"
_BY_PATIENT_KEY = frozenset({_PATIENT_ID_EQUALS, "p.issuer = ?"})


def _allowed(where: Where, allowed_study_uids: Collection[str] | None) -> None:
    if allowed_study_uids is not None:
        where.add("s.study_uid IN (SELECT value FROM json_each(?))", [JsonList.of(sorted(allowed_study_uids))])


# -- find ------------------------------------------------------------------------------------
def find(index: Index, query: Query, *, allowed_study_uids: Collection[str] | None = None,
         limit: int = 0, truncate: bool = False, hide_rejected: bool = False,
         offset: int = 0) -> Iterator[dict[str, Any]]:
    """Matches of a C-FIND ``query``: one dict per patient/study/series/instance at its level.

    Keys are DICOM keywords (values str, int, or a list of item dicts for sequences) plus
    ``_patient_id``, ``_issuer`` and, from STUDY down, ``_study_uid``. ``allowed_study_uids``
    (None = all) hides every other study, the patients left without a visible study, and
    keeps them out of patient-level counts. With ``limit`` > 0, more matches than ``limit``
    raise :class:`TooManyResults` before anything is returned, or with ``truncate`` (QIDO-RS
    paging) the first ``limit`` + 1 are returned, the extra one saying that more exist; ``offset``
    (QIDO-RS, with ``truncate``) skips that many matches in SQL first (``LIMIT ? OFFSET ?``, after
    the access filter, so a hidden study never takes a place in a page). The rows are read at once,
    so no read transaction stays open while responses travel.

    ``hide_rejected`` (every peer) is the normal view of IOCM: hidden instances (rejected,
    rejection notes) are not matched, series and studies left with none are not either, and
    the counts are recounted without them. Otherwise (local callers) hidden instances come
    back flagged with Instance Availability UNAVAILABLE.
    """
    if allowed_study_uids is not None and not allowed_study_uids:
        return iter(())
    level = query.level
    where = query_where(query, ALIASES[level])
    _allowed(where, allowed_study_uids)
    if hide_rejected:
        where.add(_VISIBLE[level])
    columns = _visible_columns(level) if hide_rejected else _select_columns(level)
    sql = f"SELECT {', '.join(columns)} FROM {_FROM[level]} WHERE {where.sql()}"
    if level is Level.PATIENT:
        sql += " GROUP BY p.pk"
    sql += f" ORDER BY {_ORDER[level]}"
    params = list(where.params)
    if limit > 0:
        sql += " LIMIT ?"
        params.append(limit + 1)
        if truncate and offset > 0:
            sql += " OFFSET ?"
            params.append(offset)
    names = [_alias(column) for column in columns]  # zip, not dict(row): a Row looks names up one by one
    rows = [dict(zip(names, row)) for row in index.query(sql, params)]
    if limit > 0 and len(rows) > limit and not truncate:
        LOGGER.warning("C-FIND at %s level matched more than the limit of %d; refused", level.value, limit)
        raise TooManyResults(f"more than {limit} matches; narrow the query (e.g. a date range)")
    return _matches(index, query, rows, allowed_study_uids, hide_rejected)


# -- the normal view (IOCM): what peers see of hidden instances ---------------------------------
_VISIBLE_IN_STUDY = ("SELECT 1 FROM instances vi JOIN series vse ON vse.pk = vi.series_pk "
                     "WHERE vse.study_pk = s.pk AND vi.hidden = ''")
_VISIBLE = {
    Level.PATIENT: f"EXISTS ({_VISIBLE_IN_STUDY})",
    Level.STUDY: f"EXISTS ({_VISIBLE_IN_STUDY})",
    Level.SERIES: "EXISTS (SELECT 1 FROM instances vi WHERE vi.series_pk = se.pk AND vi.hidden = '')",
    Level.IMAGE: "i.hidden = ''",
}
_VISIBLE_COUNTS = {
    "NumberOfStudyRelatedInstances": ("SELECT COUNT(*) FROM instances vi JOIN series vse ON vse.pk = vi.series_pk "
                                      "WHERE vse.study_pk = s.pk AND vi.hidden = ''"),
    "NumberOfStudyRelatedSeries": ("SELECT COUNT(DISTINCT vi.series_pk) FROM instances vi JOIN series vse "
                                   "ON vse.pk = vi.series_pk WHERE vse.study_pk = s.pk AND vi.hidden = ''"),
    "NumberOfSeriesRelatedInstances": "SELECT COUNT(*) FROM instances vi WHERE vi.series_pk = se.pk AND vi.hidden = ''",
}


def _alias(column: str) -> str:
    """The result name of one SELECT column (``expr AS "Keyword"`` or ``expr AS _name``)."""
    return column.rsplit(" AS ", 1)[-1].strip('"')


def _visible_columns(level: Level) -> list[str]:
    """The SELECT of :func:`_select_columns` with every count recounted over visible instances."""
    columns = []
    for column in _select_columns(level):
        keyword = _alias(column)
        if keyword in _VISIBLE_COUNTS:
            column = f'({_VISIBLE_COUNTS[keyword]}) AS "{keyword}"'
        elif keyword == "NumberOfPatientRelatedSeries":
            column = f'SUM(({_VISIBLE_COUNTS["NumberOfStudyRelatedSeries"]})) AS "{keyword}"'
        elif keyword == "NumberOfPatientRelatedInstances":
            column = f'SUM(({_VISIBLE_COUNTS["NumberOfStudyRelatedInstances"]})) AS "{keyword}"'
        columns.append(column)
    return columns


def _select_columns(level: Level) -> list[str]:
    aliases = ALIASES[level]
    columns = [f'{col.expr} AS "{kw}"' for kw, col in COLUMNS.items() if col.alias in aliases]
    columns.append("p.pk AS _p_pk")
    if level is Level.IMAGE:
        columns.append("i.hidden AS _hidden")
    if level is Level.PATIENT:
        columns += ['COUNT(s.pk) AS "NumberOfPatientRelatedStudies"',
                    'SUM(s.series_count) AS "NumberOfPatientRelatedSeries"',
                    'SUM(s.instance_count) AS "NumberOfPatientRelatedInstances"']
    else:
        columns.append("s.pk AS _s_pk")
    return columns


def _matches(index: Index, query: Query, rows: list[dict[str, Any]],
             allowed: Collection[str] | None, hide_rejected: bool = False) -> Iterator[dict[str, Any]]:
    wanted = {key.keyword: key for key in query.keys}
    for start in range(0, len(rows), BATCH):
        batch = rows[start:start + BATCH]
        _add_extras(index, query, batch, wanted, allowed, hide_rejected)
        for row in batch:
            row["_patient_id"] = row["PatientID"]
            row["_issuer"] = row["IssuerOfPatientID"]
            if "StudyInstanceUID" in row:
                row["_study_uid"] = row["StudyInstanceUID"]
            row["InstanceAvailability"] = "UNAVAILABLE" if row.pop("_hidden", "") else "ONLINE"  # IOCM flag
            row.pop("_p_pk", None)
            row.pop("_s_pk", None)
            yield row


def _add_extras(index: Index, query: Query, rows: list[dict[str, Any]], wanted: dict[str, QueryKey],
                allowed: Collection[str] | None, hide_rejected: bool = False) -> None:
    """Values that need another table, fetched once per batch and only when asked for."""
    patient_pks = sorted({row["_p_pk"] for row in rows})
    study_pks = sorted({row["_s_pk"] for row in rows if "_s_pk" in row})
    if query.level is not Level.PATIENT and any(k.startswith("NumberOfPatientRelated") for k in wanted):
        counts = _patient_counts(index, patient_pks, allowed, hide_rejected)
        for row in rows:
            row.update(counts.get(row["_p_pk"], {}))
    if "OtherPatientIDsSequence" in wanted:
        items = _other_ids(index, patient_pks, wanted["OtherPatientIDsSequence"])
        for row in rows:
            row["OtherPatientIDsSequence"] = items.get(row["_p_pk"], [])
    for keyword, kind in (("ProcedureCodeSequence", "procedure"), ("InstitutionCodeSequence", "institution")):
        if keyword in wanted and study_pks:
            codes = _codes(index, study_pks, kind, wanted[keyword])
            for row in rows:
                row[keyword] = codes.get(row["_s_pk"], [])
    if "SOPClassesInStudy" in wanted and study_pks:
        classes = _sop_classes(index, study_pks, hide_rejected)
        for row in rows:
            row["SOPClassesInStudy"] = "\\".join(classes.get(row["_s_pk"], []))


def _in_json(expr: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
    return f"{expr} IN (SELECT value FROM json_each(?))", [JsonList.of(values)]


def _patient_counts(index: Index, patient_pks: list[int],
                    allowed: Collection[str] | None, hide_rejected: bool = False) -> dict[int, dict[str, int]]:
    where = Where()
    where.add(*_in_json("s.patient_pk", patient_pks))
    _allowed(where, allowed)
    series, instances = "SUM(s.series_count)", "SUM(s.instance_count)"
    if hide_rejected:
        where.add(_VISIBLE[Level.STUDY])
        series = f"SUM(({_VISIBLE_COUNTS['NumberOfStudyRelatedSeries']}))"
        instances = f"SUM(({_VISIBLE_COUNTS['NumberOfStudyRelatedInstances']}))"
    rows = index.query(
        f"SELECT s.patient_pk, COUNT(*), {series}, {instances} FROM studies s "
        f"WHERE {where.sql()} GROUP BY s.patient_pk", where.params)
    return {r[0]: {"NumberOfPatientRelatedStudies": r[1], "NumberOfPatientRelatedSeries": r[2],
                   "NumberOfPatientRelatedInstances": r[3]} for r in rows}


def _other_ids(index: Index, patient_pks: list[int], key: QueryKey) -> dict[int, list[dict[str, Any]]]:
    """Items of OtherPatientIDsSequence: only the matching ones when the key has item values."""
    where = _item_where(key.items, OTHER_ID_ITEM, False)
    where.add(*_in_json("o.patient_pk", patient_pks))
    rows = index.query("SELECT o.patient_pk, o.other_id, o.other_issuer, o.type_of_id FROM patient_other_ids o "
                       f"WHERE {where.sql()} ORDER BY o.rowid", where.params)
    out: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r[0], []).append({"PatientID": r[1], "IssuerOfPatientID": r[2], "TypeOfPatientID": r[3]})
    return out


def _codes(index: Index, study_pks: list[int], kind: str, key: QueryKey) -> dict[int, list[dict[str, Any]]]:
    where = _item_where(key.items, CODE_ITEM, False)
    where.add("c.kind = ?", [kind])
    where.add(*_in_json("c.study_pk", study_pks))
    rows = index.query("SELECT c.study_pk, c.code_value, c.scheme, c.meaning FROM study_codes c "
                       f"WHERE {where.sql()} ORDER BY c.rowid", where.params)
    out: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r[0], []).append({"CodeValue": r[1], "CodingSchemeDesignator": r[2], "CodeMeaning": r[3]})
    return out


def _sop_classes(index: Index, study_pks: list[int], hide_rejected: bool = False) -> dict[int, list[str]]:
    clause, params = _in_json("se.study_pk", study_pks)
    if hide_rejected:
        clause += " AND i.hidden = ''"
    rows = index.query("SELECT DISTINCT se.study_pk, i.sop_class_uid FROM instances i JOIN series se "
                       f"ON se.pk = i.series_pk WHERE {clause} ORDER BY 1, 2", params)
    out: dict[int, list[str]] = {}
    for r in rows:
        out.setdefault(r[0], []).append(r[1])
    return out


# -- retrieve --------------------------------------------------------------------------------
def match_instances(index: Index, query: Query, storage_root: Path | None, *,
                    allowed_study_uids: Collection[str] | None = None,
                    hide_rejected: bool = False) -> list[InstanceLocation]:
    """Every instance under the entities a C-MOVE/C-GET identifier names, with absolute paths.

    A query that names nothing (only universal keys) is refused rather than sending the
    whole archive. ``hide_rejected`` leaves out hidden instances (IOCM normal view).
    """
    where = query_where(query, ALIASES[Level.IMAGE])
    if not where.clauses:
        raise InvalidQuery(f"a {query.level.value} retrieve must name what to retrieve")
    if allowed_study_uids is not None and not allowed_study_uids:
        return []
    _allowed(where, allowed_study_uids)
    if hide_rejected:
        where.add(_VISIBLE[Level.IMAGE])
    rows = index.query(
        "SELECT i.sop_instance_uid, i.sop_class_uid, i.transfer_syntax, i.path, s.study_uid, se.series_uid, i.size "
        f"FROM {_FROM[Level.IMAGE]} WHERE {where.sql()} "
        "ORDER BY s.pk, se.series_number, se.pk, i.instance_number, i.pk", where.params)
    root = Path(storage_root) if storage_root is not None else None  # None: the recorded relative paths
    return [InstanceLocation(sop_instance_uid=r[0], sop_class_uid=r[1], transfer_syntax=r[2],
                             path=str((root / r[3]).absolute()) if root else r[3], study_uid=r[4], series_uid=r[5], size=r[6])
            for r in rows]
