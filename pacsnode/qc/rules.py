"""The versioned QC rule set: what a study must carry to pass quality control.

Rules are data, not code, because QC centres change them yearly and every decision must be
traceable to the rules in force (``QcRules.version``). They are parsed once at start from
``config/qc_rules.toml`` into frozen dataclasses; a bad value raises
:class:`pacsnode.errors.ConfigError` naming the file, the key and the fix, so a node never
starts with half-understood rules. :func:`default_rules` gives the shipped rule set without
reading a node home (it is the package data ``pacsnode/defaults/qc_rules.toml``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from pacsnode.errors import ConfigError
from pacsnode.defaults import default_text

Severity = Literal["fail", "warn", "off"]
Scope = Literal["all", "images"]

SEVERITIES: tuple[str, ...] = ("fail", "warn", "off")
SCOPES: tuple[str, ...] = ("all", "images")


@dataclass(frozen=True)
class IdentityRule:
    """One identifying attribute a study must carry (check code ``QC-ID-*``).

    ``any_of`` entries are a keyword (``PatientID``), a sequence keyword (a non-empty item
    is enough) or ``Sequence.Keyword`` (some item carries the keyword). ``scope="images"``
    skips reports and other non-image instances, which often lack equipment attributes.
    ``consistent`` also requires a single value across the study (a study mixing two
    patient IDs must not be recognised for either). ``modalities`` empty means all.
    """

    code: str
    label: str
    any_of: tuple[str, ...]
    severity: Severity = "fail"
    scope: Scope = "all"
    consistent: bool = False
    modalities: tuple[str, ...] = ()


@dataclass(frozen=True)
class CountRules:
    """Severities of the completeness checks (``QC-COUNT-GAP``, ``QC-COUNT-DECLARED``)."""

    gap: Severity = "fail"
    declared: Severity = "fail"


@dataclass(frozen=True)
class MinSize:
    """Smallest acceptable image matrix for one modality (``"default"`` for the rest)."""

    modality: str
    rows: int
    columns: int


@dataclass(frozen=True)
class PixelRules:
    """Pixel sanity: severities and minimum sizes. Which images are lossy is not a QC setting:
    ``pacsnode.dicom.lossy`` gives the one answer the recognition rules use too."""

    decode: Severity = "fail"
    dims: Severity = "fail"
    range: Severity = "fail"
    lossy: Severity = "warn"
    min_sizes: tuple[MinSize, ...] = (MinSize("default", 32, 32),)

    def min_size(self, modality: str) -> MinSize:
        """The minimum for ``modality``, else the ``default`` entry (else 1x1)."""
        default = MinSize("default", 1, 1)
        for entry in self.min_sizes:
            if entry.modality == modality:
                return entry
            if entry.modality == "default":
                default = entry
        return default


@dataclass(frozen=True)
class DoseRule:
    """Where a dose record for one modality may be found (check code ``QC-DOSE``)."""

    modality: str
    any_of: tuple[str, ...]
    severity: Severity = "fail"


@dataclass(frozen=True)
class ReportRule:
    """Which modalities need a report in the study and what counts as one (``QC-REPORT``)."""

    severity: Severity = "warn"
    required_for: tuple[str, ...] = ()
    sop_classes: tuple[str, ...] = ()
    sop_class_prefixes: tuple[str, ...] = ()
    exclude_sop_classes: tuple[str, ...] = ()

    def is_report(self, sop_class_uid: str) -> bool:
        """True when an instance of this SOP Class is a diagnostic report."""
        if sop_class_uid in self.sop_classes:
            return True
        if sop_class_uid in self.exclude_sop_classes:
            return False
        return any(sop_class_uid.startswith(prefix) for prefix in self.sop_class_prefixes)


@dataclass(frozen=True)
class QcRules:
    """The whole rule set; ``version`` is recorded with every QC outcome."""

    version: str
    identity: tuple[IdentityRule, ...]
    dates: Severity = "fail"
    counts: CountRules = CountRules()
    pixels: PixelRules = PixelRules()
    dose: tuple[DoseRule, ...] = ()
    dose_sr_classes: tuple[str, ...] = ()
    report: ReportRule = ReportRule()

    def dose_for(self, modality: str) -> DoseRule | None:
        """The dose rule of ``modality``, or None when that modality needs none."""
        for rule in self.dose:
            if rule.modality == modality:
                return rule
        return None


def load_rules(path: str | Path) -> QcRules:
    """Read and validate a QC rules file.

    Raises :class:`ConfigError` when the file is missing, is not TOML, or has a bad value;
    the message names the file, the key and how to fix it.
    """
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the QC rules file ({exc.strerror}); "
                          "check the path or copy config/qc_rules.toml there") from exc
    return parse_rules(text, origin=str(source))


def default_rules() -> QcRules:
    """The rule set shipped with pacsnode (package data; ``config/qc_rules.toml`` is its source)."""
    return parse_rules(default_text("qc_rules.toml"), origin="<default qc rules>")


def parse_rules(text: str, origin: str = "<qc rules>") -> QcRules:
    """Parse rules from TOML text; ``origin`` names the source in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML ({exc}); fix the syntax at that line") from exc
    reader = _Reader(origin)
    reader.only(data, {"version", "dates", "identity", "counts", "pixels", "dose", "report"}, "")
    version = reader.text(data, "version")
    if not version:
        raise ConfigError(f'{origin}: key "version" is empty; set it, e.g. version = "2026.1"')
    dose_table = reader.table(data, "dose")
    return QcRules(
        version=version,
        identity=_identity_rules(reader, data),
        dates=_date_severity(reader, reader.table(data, "dates")),
        counts=_count_rules(reader, reader.table(data, "counts")),
        pixels=_pixel_rules(reader, reader.table(data, "pixels")),
        dose=_dose_rules(reader, dose_table),
        dose_sr_classes=reader.strings(dose_table, "sr_classes", "dose.sr_classes"),
        report=_report_rule(reader, reader.table(data, "report")),
    )


class _Reader:
    """Typed access to a parsed TOML table with errors that name the key and the fix."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def error(self, key: str, problem: str, fix: str) -> ConfigError:
        return ConfigError(f'{self.origin}: key "{key}" {problem}; {fix}')

    def only(self, data: dict[str, Any], allowed: set[str], where: str) -> None:
        """Refuse unknown keys: a misspelt key would otherwise silently keep a default."""
        for key in data:
            if key not in allowed:
                name = f"{where}.{key}" if where else key
                raise self.error(name, "is not a known QC rule key",
                                 f"remove it or use one of: {', '.join(sorted(allowed))}")

    def table(self, data: dict[str, Any], key: str, name: str = "") -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise self.error(name or key, "must be a table", f"write it as [{name or key}]")
        return cast(dict[str, Any], value)

    def text(self, data: dict[str, Any], key: str, name: str = "", default: str = "") -> str:
        value = data.get(key, default)
        if not isinstance(value, str):
            raise self.error(name or key, f"must be a string, not {value!r}", 'quote it: key = "value"')
        return value.strip()

    def boolean(self, data: dict[str, Any], key: str, name: str, default: bool) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            raise self.error(name, f"must be true or false, not {value!r}", "write true or false")
        return value

    def strings(self, data: dict[str, Any], key: str, name: str) -> tuple[str, ...]:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise self.error(name, f"must be a list of non-empty strings, not {value!r}",
                             'write it as ["A", "B"]')
        return tuple(v.strip() for v in value)

    def severity(self, data: dict[str, Any], key: str, name: str, default: Severity) -> Severity:
        value = data.get(key, default)
        if value not in SEVERITIES:
            raise self.error(name, f"is {value!r}", 'use "fail", "warn" or "off"')
        return cast(Severity, value)

    def size(self, value: Any, name: str) -> tuple[int, int]:
        ok = (isinstance(value, list) and len(value) == 2
              and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value))
        if not ok:
            raise self.error(name, f"is {value!r}", "write [rows, columns] with two positive integers")
        return int(value[0]), int(value[1])


def _identity_rules(reader: _Reader, data: dict[str, Any]) -> tuple[IdentityRule, ...]:
    entries = data.get("identity", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise reader.error("identity", "must be an array of tables", "write each rule as [[identity]]")
    rules: list[IdentityRule] = []
    seen: set[str] = set()
    for number, entry in enumerate(entries, start=1):
        where = f"identity[{number}]"
        reader.only(entry, {"code", "label", "any_of", "severity", "scope", "consistent", "modalities"}, where)
        code = reader.text(entry, "code", f"{where}.code")
        if not code.startswith("QC-ID-"):
            raise reader.error(f"{where}.code", f"is {code!r}", 'use a code starting "QC-ID-"')
        if code in seen:
            raise reader.error(f"{where}.code", f"repeats {code}", "give each identity rule its own code")
        seen.add(code)
        any_of = reader.strings(entry, "any_of", f"{where}.any_of")
        if not any_of:
            raise reader.error(f"{where}.any_of", "is empty", 'name at least one attribute, e.g. ["PatientID"]')
        scope = entry.get("scope", "all")
        if scope not in SCOPES:
            raise reader.error(f"{where}.scope", f"is {scope!r}", 'use "all" or "images"')
        rules.append(IdentityRule(
            code=code,
            label=reader.text(entry, "label", f"{where}.label") or code,
            any_of=any_of,
            severity=reader.severity(entry, "severity", f"{where}.severity", "fail"),
            scope=cast(Scope, scope),
            consistent=reader.boolean(entry, "consistent", f"{where}.consistent", False),
            modalities=reader.strings(entry, "modalities", f"{where}.modalities"),
        ))
    return tuple(rules)


def _date_severity(reader: _Reader, table: dict[str, Any]) -> Severity:
    reader.only(table, {"severity"}, "dates")
    return reader.severity(table, "severity", "dates.severity", "fail")


def _count_rules(reader: _Reader, table: dict[str, Any]) -> CountRules:
    reader.only(table, {"gap", "declared"}, "counts")
    return CountRules(
        gap=reader.severity(table, "gap", "counts.gap", "fail"),
        declared=reader.severity(table, "declared", "counts.declared", "fail"),
    )


def _pixel_rules(reader: _Reader, table: dict[str, Any]) -> PixelRules:
    for key in ("lossy_transfer_syntaxes", "possibly_lossy_transfer_syntaxes"):
        if key in table:  # removed: two lists here let QC and recognition disagree (issue 12.5)
            raise reader.error(f"pixels.{key}", "is no longer a QC setting",
                               "delete it: lossy transfer syntaxes are fixed in pacsnode.dicom.lossy, "
                               "shared with the recognition rules")
    reader.only(table, {"decode", "dims", "range", "lossy", "min_size"}, "pixels")
    sizes_table = reader.table(table, "min_size", "pixels.min_size")
    sizes = [MinSize(modality, *reader.size(value, f"pixels.min_size.{modality}"))
             for modality, value in sizes_table.items()]
    if not any(entry.modality == "default" for entry in sizes):
        sizes.append(MinSize("default", 1, 1))
    return PixelRules(
        decode=reader.severity(table, "decode", "pixels.decode", "fail"),
        dims=reader.severity(table, "dims", "pixels.dims", "fail"),
        range=reader.severity(table, "range", "pixels.range", "fail"),
        lossy=reader.severity(table, "lossy", "pixels.lossy", "warn"),
        min_sizes=tuple(sizes),
    )


def _dose_rules(reader: _Reader, table: dict[str, Any]) -> tuple[DoseRule, ...]:
    rules: list[DoseRule] = []
    for modality, entry in table.items():
        if modality == "sr_classes":
            continue
        if not isinstance(entry, dict):
            raise reader.error(f"dose.{modality}", "must be a table",
                               f'write it as [dose.{modality}] with any_of = [...]')
        reader.only(entry, {"any_of", "severity"}, f"dose.{modality}")
        rules.append(DoseRule(
            modality=modality,
            any_of=reader.strings(entry, "any_of", f"dose.{modality}.any_of"),
            severity=reader.severity(entry, "severity", f"dose.{modality}.severity", "fail"),
        ))
    return tuple(rules)


def _report_rule(reader: _Reader, table: dict[str, Any]) -> ReportRule:
    reader.only(table, {"severity", "required_for", "sop_classes", "sop_class_prefixes",
                        "exclude_sop_classes"}, "report")
    return ReportRule(
        severity=reader.severity(table, "severity", "report.severity", "warn"),
        required_for=reader.strings(table, "required_for", "report.required_for"),
        sop_classes=reader.strings(table, "sop_classes", "report.sop_classes"),
        sop_class_prefixes=reader.strings(table, "sop_class_prefixes", "report.sop_class_prefixes"),
        exclude_sop_classes=reader.strings(table, "exclude_sop_classes", "report.exclude_sop_classes"),
    )
