"""The recognition region: institutions, alliances, the exam-item catalog and qualifications.

A region is what one ``recognition.toml`` describes: the mark (e.g. ``黔HR``) and the facts
the rules need. It is parsed once, at start, into frozen objects (STYLE habit 7), and every
rule in this package takes it as an argument, so a test can build a region in a few lines.
:func:`load_region` is the only function of the package that touches a file.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from pacsnode.errors import ConfigError
from pacsnode.recognition._fields import Table
from pacsnode.recognition.reasons import REASON_CODES

#: Institution levels, highest first: 3A (三甲) ... 1 (一级), then unrated (未定级) and
#: independent (第三方独立机构). Unrated and independent share the lowest rank.
LEVELS: tuple[str, ...] = ("3A", "3B", "3", "2A", "2B", "2", "1", "unrated", "independent")
_RANK = {"3A": 8, "3B": 7, "3": 6, "2A": 5, "2B": 4, "2": 3, "1": 2, "unrated": 1, "independent": 1}
_TIER = {"3A": 3, "3B": 3, "3": 3, "2A": 2, "2B": 2, "2": 2, "1": 1, "unrated": 0, "independent": 0}

ALLIANCE_TYPES: tuple[str, ...] = (
    "county-medical-community",  # 县域医共体
    "city-medical-group",  # 城市医疗集团
    "specialist-alliance",  # 专科联盟
    "remote-collaboration",  # 远程协作网
    "region",  # 区域 (e.g. a cross-province region)
)
CONTRASTS: tuple[str, ...] = ("plain", "contrast", "any")
QC_REQUIREMENTS: tuple[str, ...] = ("accepted", "any")
SAME_LEVEL_BY: tuple[str, ...] = ("tier", "grade")


def rank(level: str) -> int:
    """Order of a level for the grade comparison: 3A highest (8), unrated/independent lowest (1).

    Raises ``ValueError`` for an unknown level (parsing has already refused those).
    """
    try:
        return _RANK[level]
    except KeyError:
        raise ValueError(f"{level!r} is not a level; use one of {', '.join(LEVELS)}") from None


def tier(level: str) -> int:
    """The 级 of a level (3 tertiary, 2 secondary, 1 primary, 0 unrated/independent).

    The rules say "同级互认" (same *level* recognises same level); in Chinese grading 级 is the
    tier and 甲/乙 the grade inside it, so 3A and 3B are the same level by default.
    """
    rank(level)
    return _TIER[level]


@dataclass(frozen=True)
class Institution:
    """A medical institution of the region, identified by its registry code."""

    code: str
    name: str
    level: str
    aliases: tuple[str, ...] = ()
    ae_titles: tuple[str, ...] = ()
    geo: str = ""  # administrative division code (GB/T 2260), informative
    in_scope: bool = True  # inside the geographic scope of the region's mark


@dataclass(frozen=True)
class AllianceMember:
    """One institution's membership of an alliance, valid on ``valid_from``..``valid_to`` inclusive."""

    institution: str
    valid_from: date | None = None
    valid_to: date | None = None

    def active_on(self, day: date) -> bool:
        """True when the membership covers ``day`` (open ends are unbounded)."""
        return (self.valid_from is None or self.valid_from <= day) and (self.valid_to is None or day <= self.valid_to)


@dataclass(frozen=True)
class Alliance:
    """A medical alliance (医联体): members recognise and share within it."""

    id: str
    name: str
    type: str
    members: tuple[AllianceMember, ...] = ()
    recognize_all_items: bool = False
    lead_institution: str = ""

    def has_member(self, institution: str, day: date) -> bool:
        """True when ``institution`` is a member on ``day``."""
        return any(m.institution == institution and m.active_on(day) for m in self.members)


@dataclass(frozen=True)
class ExamItem:
    """One catalog item: what a study must be (modality, body part, contrast) to be recognised."""

    code: str
    name: str
    modalities: tuple[str, ...]
    body_parts: tuple[str, ...] = ()  # DICOM Body Part Examined values; empty = any body part
    contrast: str = "any"  # "plain" | "contrast" | "any"
    procedure_codes: tuple[str, ...] = ()
    valid_days: int = 30
    eligible: bool = True


@dataclass(frozen=True)
class Qualification:
    """A QC centre's verdict on an institution for one item (``item``) or a modality (``modality``)."""

    institution: str
    valid_from: date
    valid_to: date
    item: str = ""
    modality: str = ""
    passed: bool = True

    def valid_on(self, day: date) -> bool:
        """True when the verdict covers ``day`` (inclusive)."""
        return self.valid_from <= day <= self.valid_to


@dataclass(frozen=True)
class Region:
    """Everything ``recognition.toml`` says; lookups are by code."""

    label: str
    scope_geo: str = ""
    institutions: tuple[Institution, ...] = ()
    alliances: tuple[Alliance, ...] = ()
    catalog: tuple[ExamItem, ...] = ()
    qualifications: tuple[Qualification, ...] = ()
    allow_higher_accepts_lower: bool = False
    require_patient_context: bool = True
    share_within_region: bool = False
    qc_required_status: str = "accepted"  # "accepted", or "any" before QC exists
    same_level_by: str = "tier"  # "tier" (3A == 3B) or "grade" (3A above 3B)
    catalog_version: str = ""
    alliance_item_valid_days: int = 30
    reason_codes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType(dict(REASON_CODES)))
    _by_code: Mapping[str, Institution] = field(init=False, repr=False, compare=False)
    _items: Mapping[str, ExamItem] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_code", MappingProxyType({i.code: i for i in self.institutions}))
        object.__setattr__(self, "_items", MappingProxyType({i.code: i for i in self.catalog}))

    def institution(self, code: str | None) -> Institution | None:
        """The institution with this registry code, or None."""
        return self._by_code.get(code or "")

    def item(self, code: str | None) -> ExamItem | None:
        """The catalog item with this code, or None."""
        return self._items.get(code or "")

    def common_alliances(self, first: str, second: str, *days: date) -> tuple[Alliance, ...]:
        """Alliances that have both institutions as members on every one of ``days``."""
        return tuple(
            a for a in self.alliances if all(a.has_member(first, d) and a.has_member(second, d) for d in days)
        )


# --- parsing -------------------------------------------------------------------------------


def load_region(path: str | Path) -> Region:
    """Read and validate ``recognition.toml``; the only I/O of the package."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path} not found; copy config/recognition.toml there and edit it") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror}); check its permissions") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the syntax at that line") from None
    return parse_region(data, str(path))


def parse_region(data: Mapping[str, object], source: str) -> Region:
    """Build a :class:`Region` from parsed TOML, checking every key and cross-reference.

    ``source`` names the file in messages. Raises :class:`ConfigError` naming the key and the fix.
    """
    top = Table(data, source, "")
    top.reject_unknown(("region", "institutions", "alliances", "catalog", "qualifications", "reason_codes"))
    head = top.table("region")
    head.reject_unknown(
        ("label", "scope_geo", "allow_higher_accepts_lower", "require_patient_context", "share_within_region",
         "qc_required_status", "same_level_by", "catalog_version", "alliance_item_valid_days")
    )
    institutions = _institutions(top)
    codes = {i.code for i in institutions}
    catalog = _catalog(top)
    return Region(
        label=head.text("label"),
        scope_geo=head.text("scope_geo", "", non_empty=False),
        institutions=institutions,
        alliances=_alliances(top, codes),
        catalog=catalog,
        qualifications=_qualifications(top, codes, catalog),
        allow_higher_accepts_lower=head.flag("allow_higher_accepts_lower", False),
        require_patient_context=head.flag("require_patient_context", True),
        share_within_region=head.flag("share_within_region", False),
        qc_required_status=head.choice("qc_required_status", QC_REQUIREMENTS, "accepted", noun="QC requirement"),
        same_level_by=head.choice("same_level_by", SAME_LEVEL_BY, "tier", noun="level comparison"),
        catalog_version=head.text("catalog_version", "", non_empty=False),
        alliance_item_valid_days=head.whole("alliance_item_valid_days", 30, minimum=1),
        reason_codes=_reason_codes(top.table("reason_codes")),
    )


def _institutions(top: Table) -> tuple[Institution, ...]:
    out: list[Institution] = []
    seen_aet: dict[str, str] = {}
    seen_name: dict[str, str] = {}
    for t in top.tables("institutions"):
        t.reject_unknown(("code", "name", "aliases", "level", "ae_titles", "geo", "in_scope"))
        code = t.text("code")
        if any(i.code == code for i in out):
            raise t.fail("code", f"{code!r} is used twice", "give each institution its own registry code")
        inst = Institution(
            code=code,
            name=t.text("name"),
            level=t.choice("level", LEVELS, noun="level"),
            aliases=t.strings("aliases", ()),
            ae_titles=t.strings("ae_titles", ()),
            geo=t.text("geo", "", non_empty=False),
            in_scope=t.flag("in_scope", True),
        )
        for aet in inst.ae_titles:
            if len(aet) > 16 or "\\" in aet or not aet.isprintable():
                raise t.fail("ae_titles", f"{aet!r} is not an AE title",
                             "use 1-16 printable characters, no backslash")
            if aet in seen_aet:
                raise t.fail("ae_titles", f"{aet!r} already belongs to {seen_aet[aet]}",
                             "an AE title names one institution")
            seen_aet[aet] = code
        for name in (inst.name, *inst.aliases):
            key = name_key(name)
            if key in seen_name and seen_name[key] != code:
                raise t.fail("aliases", f"name {name!r} already names {seen_name[key]}",
                             "make names and aliases unique")
            seen_name[key] = code
        out.append(inst)
    return tuple(out)


def _alliances(top: Table, codes: set[str]) -> tuple[Alliance, ...]:
    out: list[Alliance] = []
    for t in top.tables("alliances"):
        t.reject_unknown(("id", "name", "type", "members", "recognize_all_items", "valid_from", "valid_to",
                          "lead_institution"))
        ident = t.text("id")
        if any(a.id == ident for a in out):
            raise t.fail("id", f"{ident!r} is used twice", "give each alliance its own id")
        start, end = t.day("valid_from", None), t.day("valid_to", None)
        raw = t.data.get("members", [])
        if not isinstance(raw, list) or not raw:
            raise t.fail("members", "is missing or empty", 'list member codes, e.g. ["PRV001", "CTY001"]')
        members: list[AllianceMember] = []
        for index, entry in enumerate(raw):
            if isinstance(entry, str):
                member = AllianceMember(entry.strip(), start, end)
            else:
                m = Table(entry, t.source, f"{t.path}.members[{index}]")
                m.reject_unknown(("institution", "valid_from", "valid_to"))
                member = AllianceMember(m.text("institution"), m.day("valid_from", start), m.day("valid_to", end))
            where = f"members[{index}]"
            _known(t, where, member.institution, codes)
            if any(x.institution == member.institution for x in members):
                raise t.fail(where, f"{member.institution!r} is listed twice", "list each member once")
            if member.valid_from and member.valid_to and member.valid_from > member.valid_to:
                raise t.fail(where, "valid_from is after valid_to", "swap or correct the dates")
            members.append(member)
        lead = t.text("lead_institution", "", non_empty=False)
        if lead:
            _known(t, "lead_institution", lead, codes)
        out.append(Alliance(ident, t.text("name"), t.choice("type", ALLIANCE_TYPES, noun="alliance type"),
                            tuple(members), t.flag("recognize_all_items", False), lead))
    return tuple(out)


def _catalog(top: Table) -> tuple[ExamItem, ...]:
    out: list[ExamItem] = []
    owner: dict[str, str] = {}
    for t in top.tables("catalog"):
        t.reject_unknown(("code", "name", "modalities", "body_parts", "contrast", "procedure_codes", "valid_days",
                          "eligible"))
        code = t.text("code")
        if any(i.code == code for i in out):
            raise t.fail("code", f"{code!r} is used twice", "give each catalog item its own code")
        item = ExamItem(
            code=code,
            name=t.text("name"),
            modalities=t.strings("modalities", upper=True),
            body_parts=t.strings("body_parts", (), upper=True),
            contrast=t.choice("contrast", CONTRASTS, "any", noun="contrast"),
            procedure_codes=t.strings("procedure_codes", ()),
            valid_days=t.whole("valid_days"),
            eligible=t.flag("eligible", True),
        )
        if not item.modalities:
            raise t.fail("modalities", "is empty", 'name at least one DICOM modality, e.g. ["CT"]')
        for proc in item.procedure_codes:
            key = proc.casefold()
            if key in owner:
                raise t.fail("procedure_codes", f"{proc!r} already maps to {owner[key]}",
                             "a procedure code names one item")
            owner[key] = code
        out.append(item)
    return tuple(out)


def _qualifications(top: Table, codes: set[str], catalog: tuple[ExamItem, ...]) -> tuple[Qualification, ...]:
    items = {i.code for i in catalog}
    modalities = {m for i in catalog for m in i.modalities}
    out: list[Qualification] = []
    for t in top.tables("qualifications"):
        t.reject_unknown(("institution", "item", "modality", "valid_from", "valid_to", "result"))
        inst = t.text("institution")
        _known(t, "institution", inst, codes)
        item = t.text("item", "", non_empty=False)
        modality = t.text("modality", "", non_empty=False).upper()
        if bool(item) == bool(modality):
            raise t.fail("item", "and modality are both set or both missing", "set exactly one of item or modality")
        if item and item not in items:
            raise t.fail("item", f"{item!r} is not a catalog item", "use a code from [[catalog]]")
        if modality and modality not in modalities:
            raise t.fail("modality", f"{modality!r} is used by no catalog item",
                         f"use one of {', '.join(sorted(modalities))}")
        start, end = t.day("valid_from"), t.day("valid_to")
        assert start is not None and end is not None  # required keys
        if start > end:
            raise t.fail("valid_from", "is after valid_to", "swap or correct the dates")
        result = t.choice("result", ("pass", "fail"), "pass", noun="result")
        out.append(Qualification(inst, start, end, item, modality, result == "pass"))
    return tuple(out)


def _reason_codes(t: Table) -> Mapping[str, str]:
    """Local reason codes add to the national and provincial list; they may not redefine it."""
    codes = dict(REASON_CODES)
    for key in t.data:
        if key.upper() in REASON_CODES:
            raise t.fail(key, "redefines a standard reason code", "pick a new code, e.g. Z1")
        codes[key.upper()] = t.text(key)
    return MappingProxyType(codes)


def _known(t: Table, key: str, code: str, codes: set[str]) -> None:
    if code not in codes:
        raise t.fail(key, f"{code!r} is not an institution", "use a code from [[institutions]]")


def name_key(name: str) -> str:
    """How names compare: trimmed, inner whitespace collapsed, case-folded."""
    return " ".join(name.split()).casefold()
