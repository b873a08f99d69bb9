"""The recognition region: institutions, alliances, the exam-item catalog and qualifications.

A region is what one ``recognition.toml`` describes: the mark (e.g. ``黔HR``) and the facts
the rules need. It is parsed once, at start, into frozen objects (STYLE habit 7), and every
rule in this package takes it as an argument, so a test can build a region in a few lines.
:func:`load_region` is the only function of the package that touches a file.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
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


def geo_level(code: str) -> str:
    """``province``, ``prefecture`` or ``county`` for a 6-digit administrative division code
    (GB/T 2260: PPCCXX; a prefecture ends in 00, a province in 0000), "" when malformed."""
    if len(code) != 6 or not code.isascii() or not code.isdigit() or code[:2] == "00":
        return ""
    if code[2:] == "0000":
        return "province"
    if code[4:] == "00":
        return "prefecture" if code[2:4] != "00" else ""
    return "county"


def geo_within(code: str, scope: str) -> bool:
    """True when division ``code`` lies within division ``scope``: a county within its city
    (520121 within 520100) and province (520000); a city within its province. Malformed codes
    are within nothing."""
    level = geo_level(scope)
    if not geo_level(code) or not level:
        return False
    prefix = {"province": 2, "prefecture": 4, "county": 6}[level]
    return code[:prefix] == scope[:prefix]


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
    geo: str = ""  # administrative division code (GB/T 2260) of where it is
    in_scope: bool = True  # inside the geographic scope of the region's mark (from geo, or overridden)
    scope_override: str = ""  # why an admin set in_scope against geo ("" = no override)


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

    @property
    def scope_overrides(self) -> tuple[Institution, ...]:
        """Institutions whose scope an admin set against geography (audited at start)."""
        return tuple(i for i in self.institutions if i.scope_override)

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
    scope_geo = head.text("scope_geo", "", non_empty=False)
    if not geo_level(scope_geo):
        raise head.fail("scope_geo", f"{scope_geo!r} is not an administrative division code",
                        "write the mark's province or city code (GB/T 2260, 6 digits), e.g. 520000 for 黔HR")
    institutions = _institutions(top, scope_geo)
    if not any(geo_within(i.geo, scope_geo) for i in institutions):
        raise head.fail("scope_geo", f"{scope_geo} contains none of the institutions",
                        "check the code: the mark's scope must hold at least one institution's geo")
    codes = {i.code for i in institutions}
    catalog = _catalog(top)
    return Region(
        label=head.text("label"),
        scope_geo=scope_geo,
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


def _institutions(top: Table, scope_geo: str) -> tuple[Institution, ...]:
    out: list[Institution] = []
    seen_aet: dict[str, str] = {}
    seen_name: dict[str, str] = {}
    for t in top.tables("institutions"):
        t.reject_unknown(("code", "name", "aliases", "level", "ae_titles", "geo", "in_scope",
                          "scope_override_reason"))
        code = t.text("code")
        if any(i.code == code for i in out):
            raise t.fail("code", f"{code!r} is used twice", "give each institution its own registry code")
        inst = Institution(
            code=code,
            name=t.text("name"),
            level=t.choice("level", LEVELS, noun="level"),
            aliases=t.strings("aliases", ()),
            ae_titles=t.strings("ae_titles", ()),
            geo=_geo(t),
        )
        inst = _scope_of(t, inst, scope_geo)
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


def _geo(t: Table) -> str:
    """An institution's administrative division code: required, so that scope is geography."""
    geo = t.text("geo", "", non_empty=False)
    if not geo:
        raise t.fail("geo", "is missing", "give the institution's administrative division code "
                     "(GB/T 2260, 6 digits: county, city or province), e.g. 520121")
    if not geo_level(geo):
        raise t.fail("geo", f"{geo!r} is not an administrative division code",
                     "write 6 digits (GB/T 2260), e.g. 520121 for a county, 520100 for a city")
    return geo


def _scope_of(t: Table, inst: Institution, scope_geo: str) -> Institution:
    """Scope from geography (RECOGNITION.md: "X.region not within scope.geo -> out_of_scope").

    ``in_scope`` may only repeat what geography says, unless ``scope_override_reason`` says
    why an admin overrides it: a contradiction without a reason is refused, and a reason
    without a contradiction too (an override must be visible, and is audited at start).
    """
    by_geo = geo_within(inst.geo, scope_geo)
    stated = t.flag("in_scope", by_geo)
    reason = t.text("scope_override_reason", "", non_empty=False)
    if stated != by_geo and not reason:
        where = "within" if by_geo else "outside"
        raise t.fail("in_scope", f"= {str(stated).lower()} contradicts geo {inst.geo}, which is {where} "
                     f"scope_geo {scope_geo}", "fix geo, remove in_scope, or add scope_override_reason = "
                     '"why" to override geography on purpose')
    if reason and stated == by_geo:
        raise t.fail("scope_override_reason", f"is set but in_scope = {str(stated).lower()} agrees with geo "
                     f"{inst.geo}", "remove it: there is nothing to override")
    return replace(inst, in_scope=stated, scope_override=reason)


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
