"""QIDO-RS (PS3.18 10.6): query parameters → ``pacsnode.model.Query`` → ``Node.find`` → DICOM JSON.

The same matching engine and the same access door as C-FIND: this module only translates.
Values are Python strings throughout, so the JSON is UTF-8 whatever character set the stored
instances used (a GB18030 ``王^小明`` stays ``王^小明``).

Choices where PS3.18 leaves room: ``fuzzymatching=true`` is refused (400) because pacsnode's
person-name matching is exact or wildcard only, never phonetic; UID lists take commas or
backslashes; a sequence key is written ``OtherPatientIDsSequence.PatientID`` (or tags).
"""

from __future__ import annotations

import functools
from typing import Any, Iterable, Mapping

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from pacsnode.errors import InvalidQuery
from pacsnode.index.matching import COLUMNS, SPECIAL, ALIASES
from pacsnode.model import InformationModel, Level, Query, QueryKey

# PS3.18 Table 6.7.1-2: attributes every QIDO answer carries at each level.
DEFAULT_KEYS: dict[Level, tuple[str, ...]] = {
    Level.STUDY: ("StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy", "ReferringPhysicianName",
                  "PatientName", "PatientID", "IssuerOfPatientID", "StudyInstanceUID", "StudyID",
                  "StudyDescription", "PatientBirthDate", "PatientSex", "NumberOfStudyRelatedSeries",
                  "NumberOfStudyRelatedInstances"),
    Level.SERIES: ("Modality", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "SeriesDate",
                   "SeriesTime", "BodyPartExamined", "NumberOfSeriesRelatedInstances", "StudyInstanceUID"),
    Level.IMAGE: ("SOPClassUID", "SOPInstanceUID", "InstanceNumber", "NumberOfFrames", "SeriesInstanceUID",
                  "StudyInstanceUID"),
}
MAX_PARAMS = 100  # a QIDO query is a handful of keys; thousands are an attack on the parser
MAX_VALUE = 4096
CONTROL_PARAMS = frozenset({"includefield", "limit", "offset", "fuzzymatching"})
_NUMERIC = frozenset({"US", "UL", "SS", "SL", "FL", "FD", "IS", "DS", "UV", "SV"})


class QidoRequest:
    """A parsed QIDO request: the Query for ``Node.find`` and the paging asked for."""

    def __init__(self, query: Query, limit: int, offset: int) -> None:
        self.query = query
        self.limit = limit
        self.offset = offset


@functools.lru_cache(maxsize=1024)  # names come from clients: bounded
def keyword_of(name: str) -> str:
    """A keyword or an 8-hex-digit tag → the keyword (unknown → InvalidQuery naming it)."""
    if len(name) == 8 and all(c in "0123456789abcdefABCDEF" for c in name):
        keyword = keyword_for_tag(int(name, 16))
        if keyword:
            return keyword
    elif tag_for_keyword(name) is not None:
        return name
    raise InvalidQuery(f"{name!r} is not a DICOM attribute keyword or tag")


@functools.lru_cache(maxsize=1024)
def vr_of(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    if tag is None:
        return "UN"
    vr = str(dictionary_VR(tag))
    return vr.split(" or ")[0]


def _level_fields(level: Level) -> list[str]:
    """Every attribute the index can return at ``level`` (``includefield=all``)."""
    aliases = ALIASES[level]
    names = [k for k, c in COLUMNS.items() if c.alias in aliases]
    return names + [k for k, c in SPECIAL.items() if c.alias in aliases and k != "NumberOfPatientRelatedStudies"
                    and not k.startswith("NumberOfPatientRelated")]


def parse(params: Iterable[tuple[str, str]], level: Level, fixed: Mapping[str, str], max_results: int,
          case_insensitive_pn: bool) -> QidoRequest:
    """Build the Query of a QIDO request; ``fixed`` are the UIDs the URL path names."""
    matching: dict[str, str] = dict(fixed)
    items: dict[str, dict[str, str]] = {}
    include: list[str] = []
    limit, offset = max_results, 0
    params = list(params)
    if len(params) > MAX_PARAMS or any(len(v) > MAX_VALUE for _n, v in params):
        raise InvalidQuery(f"at most {MAX_PARAMS} query parameters of at most {MAX_VALUE} characters each")
    for name, value in params:
        if name == "fuzzymatching":
            if value.lower() == "true":
                raise InvalidQuery("fuzzymatching=true is not supported: person names match exactly or by "
                                   "wildcard (* ?), as on C-FIND")
            continue
        if name == "includefield":
            include.extend(v.strip() for v in value.split(",") if v.strip())
            continue
        if name in ("limit", "offset"):
            if not value.isdigit() or len(value) > 9:
                raise InvalidQuery(f"{name}={value!r}: give a whole number")
            if name == "limit":
                limit = min(int(value), max_results) if int(value) > 0 else max_results
            else:
                offset = int(value)
            continue
        if "." in name:
            outer, _, inner = name.partition(".")
            items.setdefault(keyword_of(outer), {})[keyword_of(inner)] = value
            continue
        keyword = keyword_of(name)
        if keyword in fixed and value != fixed[keyword]:
            raise InvalidQuery(f"{keyword} is given by the URL path")
        if vr_of(keyword) == "UI":
            value = value.replace(",", "\\")
        matching[keyword] = value
    keys: dict[str, QueryKey] = {}
    wanted = list(DEFAULT_KEYS[level])
    if "all" in include:
        wanted += _level_fields(level)
    else:
        wanted += [keyword_of(name) for name in include]
    for keyword in wanted:
        keys[keyword] = QueryKey(keyword, vr_of(keyword))
    for keyword, value in matching.items():
        keys[keyword] = QueryKey(keyword, vr_of(keyword), value)
    for keyword, item in items.items():
        keys[keyword] = QueryKey(keyword, "SQ", None,
                                 tuple(QueryKey(k, vr_of(k), v) for k, v in item.items()))
    query = Query(level, InformationModel.STUDY_ROOT, tuple(keys.values()),
                  combined_datetime=False, case_insensitive_pn=case_insensitive_pn)
    return QidoRequest(query, limit, offset)


RETRIEVE_URL = "00081190"


def to_json(query: Query, match: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    """One match as a DICOM JSON object holding every key the query asked for (PS3.18 F.2)."""
    return JsonPlan(query).object(match, base_url)


class JsonPlan:
    """The DICOM JSON objects of one query's matches, planned once per request.

    The tags in their sorted order and each key's VR are worked out once (not per match);
    each row then becomes its object in one pass, in the order ``json.dumps`` writes.
    """

    def __init__(self, query: Query) -> None:
        entries: dict[str, QueryKey | None] = {_tag_hex(key.keyword): key for key in query.keys}
        entries.setdefault(RETRIEVE_URL, None)
        self.level = query.level
        self.order = [(tag, key, _vr(key) if key is not None else "") for tag, key in sorted(entries.items())]

    def object(self, match: Mapping[str, Any], base_url: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for tag, key, vr in self.order:
            if tag == RETRIEVE_URL:
                url = self._url(match, base_url)
                if url:
                    out[tag] = {"vr": "UR", "Value": [url]}
                    continue
            if key is not None:
                out[tag] = _element(key, match.get(key.keyword), vr)
        return out

    def _url(self, match: Mapping[str, Any], base_url: str) -> str:
        study = match.get("StudyInstanceUID") or ""
        if not study:
            return ""
        url = f"{base_url}/studies/{study}"
        if self.level in (Level.SERIES, Level.IMAGE) and match.get("SeriesInstanceUID"):
            url += f"/series/{match['SeriesInstanceUID']}"
            if self.level is Level.IMAGE and match.get("SOPInstanceUID"):
                url += f"/instances/{match['SOPInstanceUID']}"
        return url


def _vr(key: QueryKey) -> str:
    return key.vr if key.vr and key.vr != "UN" else vr_of(key.keyword)


@functools.lru_cache(maxsize=1024)
def _tag_hex(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    return f"{int(tag):08X}" if tag is not None else keyword


def _element(key: QueryKey, value: Any, vr: str = "") -> dict[str, Any]:
    vr = vr or _vr(key)
    if vr == "SQ":
        items = value if isinstance(value, list) else []
        asked = [k for k in key.items]
        return {"vr": "SQ", "Value": [
            {_tag_hex(k.keyword): _element(k, item.get(k.keyword)) for k in (asked or
             [QueryKey(name, vr_of(name)) for name in item])} for item in items]} if items else {"vr": "SQ"}
    if value is None or value == "":
        return {"vr": vr}
    if vr in _NUMERIC:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return {"vr": vr, "Value": [value]}
        parts = [p for p in str(value).split("\\") if p.strip()]
        try:
            return {"vr": vr, "Value": [int(p) if vr not in ("DS", "FL", "FD") else float(p) for p in parts]}
        except ValueError:
            return {"vr": vr}
    texts = str(value).split("\\") if vr not in ("ST", "LT", "UT", "UR") else [str(value)]
    if vr == "PN":
        return {"vr": vr, "Value": [_person_name(t) for t in texts]}
    return {"vr": vr, "Value": texts}


def _person_name(text: str) -> dict[str, str]:
    groups = text.split("=")
    names = dict(zip(("Alphabetic", "Ideographic", "Phonetic"), groups))
    return {k: v for k, v in names.items() if v}
