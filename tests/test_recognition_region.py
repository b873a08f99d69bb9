"""Parsing recognition.toml: every mistake names the file, the key and the fix; the sample loads."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from typing import Any, Callable

import pytest

from pacsnode.errors import ConfigError
from pacsnode.recognition import (
    LEVELS,
    Institution,
    QueryContext,
    Region,
    StudyFacts,
    decide_access,
    load_region,
    parse_region,
    rank,
    recognition_advice,
    resolve_institution,
    resolve_item,
    tier,
)

SAMPLE = Path(__file__).resolve().parents[1] / "config" / "recognition.toml"
SRC = "recognition.toml"


def _minimal() -> dict[str, Any]:
    return {
        "region": {"label": "黔HR", "scope_geo": "520000"},
        "institutions": [
            {"code": "A1", "name": "Alpha", "level": "3A", "ae_titles": ["A_CT"], "geo": "520100"},
            {"code": "B1", "name": "Beta", "level": "2A", "ae_titles": ["B_CT"], "aliases": ["Beta County"],
             "geo": "520121"},
        ],
        "alliances": [{"id": "G", "name": "Group", "type": "city-medical-group", "members": ["A1", "B1"],
                       "valid_from": date(2024, 1, 1)}],
        "catalog": [{"code": "CT-CHEST", "name": "CT chest", "modalities": ["CT"], "body_parts": ["CHEST"],
                     "contrast": "plain", "procedure_codes": ["CT-CHEST-PLAIN"], "valid_days": 30}],
        "qualifications": [{"institution": "A1", "modality": "CT", "valid_from": date(2026, 1, 1),
                            "valid_to": date(2026, 12, 31)}],
    }


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation: set ``a.b[0].c`` to value (``DELETE`` removes the key)."""

    def apply(data: dict[str, Any]) -> None:
        *parents, last = path.replace("]", "").replace("[", ".").split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if value is DELETE:
            del node[last]
        elif last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return apply


DELETE = object()

ERRORS = [
    pytest.param(_set("institution", []), "institution is not a known key; use one of alliances", id="unknown-top-level-key"),
    pytest.param(_set("region.label", DELETE), "region.label is missing", id="label-missing"),
    pytest.param(_set("region.lable", "x"), "region.lable is not a known key", id="typo-in-region-key"),
    pytest.param(_set("region.qc_required_status", "yes"), "region.qc_required_status 'yes' is not a QC requirement; use one of accepted, any",
                 id="bad-qc-requirement"),
    pytest.param(_set("region.share_within_region", "yes"), "region.share_within_region = 'yes' is a string; write true or false",
                 id="boolean-as-string"),
    pytest.param(_set("institutions", {"code": "A1"}), "institutions is a table; write each entry as a [[institutions]] table",
                 id="institutions-not-an-array"),
    pytest.param(_set("institutions.1.level", "X"), "institutions[1].level 'X' is not a level; use one of 3A, 3B, 3, 2A",
                 id="bad-level"),
    pytest.param(_set("institutions.1.code", "A1"), "institutions[1].code 'A1' is used twice", id="duplicate-institution-code"),
    pytest.param(_set("institutions.1.name", "  "), "institutions[1].name is empty; give it a value", id="blank-name"),
    pytest.param(_set("institutions.1.ae_titles", ["A_CT"]), "institutions[1].ae_titles 'A_CT' already belongs to A1",
                 id="duplicate-ae-title"),
    pytest.param(_set("institutions.1.ae_titles", ["WAY_TOO_LONG_AE_TITLE"]), "is not an AE title; use 1-16 printable",
                 id="ae-title-too-long"),
    pytest.param(_set("institutions.1.aliases", ["alpha "]), "institutions[1].aliases name 'alpha' already names A1; make names and aliases unique", id="alias-clashes-with-other-name"),
    pytest.param(_set("institutions.1.aliases", ["X", "X"]), "institutions[1].aliases[1] 'X' is listed twice", id="repeated-alias"),
    pytest.param(_set("institutions.0.in_scope", 1), "institutions[0].in_scope = 1 is a number; write true or false",
                 id="in-scope-not-boolean"),
    # --- issue 12.3: scope is geography --------------------------------------------------------
    pytest.param(_set("institutions.1.geo", DELETE), "institutions[1].geo is missing; give the institution's "
                 "administrative division code", id="institution-without-a-region"),
    pytest.param(_set("institutions.1.geo", "52012"), "institutions[1].geo '52012' is not an administrative division code",
                 id="institution-geo-malformed"),
    pytest.param(_set("region.scope_geo", DELETE), "region.scope_geo '' is not an administrative division code",
                 id="mark-whose-geo-is-unknown"),
    pytest.param(_set("region.scope_geo", "52X000"), "region.scope_geo '52X000' is not an administrative division code",
                 id="mark-geo-malformed"),
    pytest.param(_set("region.scope_geo", "420100"), "region.scope_geo 420100 contains none of the institutions",
                 id="mark-geo-holds-no-institution"),
    pytest.param(_set("institutions.1.in_scope", False), "institutions[1].in_scope = false contradicts geo 520121, "
                 "which is within scope_geo 520000; fix geo, remove in_scope, or add scope_override_reason",
                 id="contradictory-manual-out-of-scope"),
    pytest.param(lambda d: d["institutions"].append({"code": "C1", "name": "Gamma", "level": "1", "geo": "530102",
                                                     "in_scope": True}),
                 "institutions[2].in_scope = true contradicts geo 530102, which is outside scope_geo 520000",
                 id="contradictory-manual-in-scope"),
    pytest.param(_set("institutions.1.scope_override_reason", "because"),
                 "institutions[1].scope_override_reason is set but in_scope = true agrees with geo 520121; remove it",
                 id="override-reason-without-override"),
    pytest.param(_set("alliances.0.members", ["A1", "NOPE"]),
                 "alliances[0].members[1] 'NOPE' is not an institution; use a code from [[institutions]]", id="unknown-member"),
    pytest.param(_set("alliances.0.members", []), "alliances[0].members is missing or empty", id="alliance-without-members"),
    pytest.param(_set("alliances.0.members", ["A1", "A1"]), "members[1] 'A1' is listed twice", id="member-listed-twice"),
    pytest.param(_set("alliances.0.type", "club"), "alliances[0].type 'club' is not a alliance type; use one of county-medical-community",
                 id="bad-alliance-type"),
    pytest.param(_set("alliances.0.members", [{"institution": "A1", "valid_from": date(2026, 1, 1), "valid_to": date(2025, 1, 1)}]),
                 "members[0] valid_from is after valid_to", id="member-dates-reversed"),
    pytest.param(_set("alliances.0.valid_from", "2024-02-30"), "alliances[0].valid_from = '2024-02-30' is not a date; write it as YYYY-MM-DD",
                 id="impossible-date"),
    pytest.param(_set("alliances.0.lead_institution", "Z9"), "alliances[0].lead_institution 'Z9' is not an institution", id="unknown-lead"),
    pytest.param(_set("catalog.0.contrast", "enhanced"), "catalog[0].contrast 'enhanced' is not a contrast; use one of plain, contrast, any",
                 id="bad-contrast"),
    pytest.param(_set("catalog.0.valid_days", -1), "catalog[0].valid_days = -1 is not a whole number >= 0", id="negative-window"),
    pytest.param(_set("catalog.0.valid_days", "30"), "catalog[0].valid_days = '30' is not a whole number", id="window-as-string"),
    pytest.param(_set("catalog.0.valid_days", True), "catalog[0].valid_days = True is not a whole number", id="window-as-boolean"),
    pytest.param(_set("catalog.0.modalities", []), "catalog[0].modalities is empty", id="item-without-modality"),
    pytest.param(lambda d: d["catalog"].append({**d["catalog"][0], "code": "CT-CHEST-2"}),
                 "catalog[1].procedure_codes 'CT-CHEST-PLAIN' already maps to CT-CHEST", id="procedure-code-on-two-items"),
    pytest.param(_set("qualifications.0.institution", "Z9"), "qualifications[0].institution 'Z9' is not an institution",
                 id="qualification-unknown-institution"),
    pytest.param(_set("qualifications.0", {"institution": "A1", "item": "MR-X", "valid_from": date(2026, 1, 1),
                                           "valid_to": date(2026, 12, 31)}),
                 "qualifications[0].item 'MR-X' is not a catalog item; use a code from [[catalog]]", id="qualification-unknown-item"),
    pytest.param(_set("qualifications.0.item", "CT-CHEST"), "set exactly one of item or modality", id="qualification-item-and-modality"),
    pytest.param(_set("qualifications.0.modality", "PT"), "qualifications[0].modality 'PT' is used by no catalog item; use one of CT",
                 id="qualification-modality-unused"),
    pytest.param(_set("qualifications.0.valid_to", DELETE), "qualifications[0].valid_to is missing", id="qualification-without-end"),
    pytest.param(_set("qualifications.0.valid_from", date(2027, 1, 1)), "qualifications[0].valid_from is after valid_to",
                 id="qualification-dates-reversed"),
    pytest.param(_set("qualifications.0.result", "ok"), "qualifications[0].result 'ok' is not a result; use one of pass, fail",
                 id="bad-qualification-result"),
    pytest.param(_set("reason_codes", {"N1": "mine"}), "reason_codes.N1 redefines a standard reason code", id="redefined-reason-code"),
]


@pytest.mark.parametrize(("mutate", "message"), ERRORS)
def test_parse_errors_name_file_key_and_fix(mutate: Callable[[dict[str, Any]], None], message: str) -> None:
    data = _minimal()
    mutate(data)
    with pytest.raises(ConfigError) as caught:
        parse_region(data, SRC)
    assert str(caught.value).startswith(f"{SRC}: ")
    assert message in str(caught.value)


def test_minimal_region_parses_with_defaults() -> None:
    region = parse_region(_minimal(), SRC)
    assert (region.require_patient_context, region.share_within_region, region.allow_higher_accepts_lower) == (True, False, False)
    assert (region.qc_required_status, region.same_level_by) == ("accepted", "tier")
    assert region.alliances[0].members[1].valid_from == date(2024, 1, 1)
    assert region.catalog[0].eligible is True


def test_member_tables_iso_dates_and_local_reason_codes() -> None:
    data = copy.deepcopy(_minimal())
    data["alliances"][0]["members"] = ["A1", {"institution": "B1", "valid_to": "2025-06-30"}]
    data["reason_codes"] = {"z1": "Local protocol"}
    region = parse_region(data, SRC)
    b1 = region.alliances[0].members[1]
    assert (b1.valid_from, b1.valid_to) == (date(2024, 1, 1), date(2025, 6, 30))
    assert region.reason_codes["Z1"] == "Local protocol" and "N4" in region.reason_codes


def test_load_region_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found; copy config/recognition.toml"):
        load_region(tmp_path / "recognition.toml")


def test_load_region_bad_toml(tmp_path: Path) -> None:
    path = tmp_path / "recognition.toml"
    path.write_text("[region\nlabel = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_region(path)


def test_level_order() -> None:
    assert [rank(level) for level in LEVELS[:7]] == sorted((rank(level) for level in LEVELS[:7]), reverse=True)
    assert tier("3A") == tier("3B") == tier("3") > tier("2A") > tier("1") > tier("unrated") == tier("independent")
    with pytest.raises(ValueError):
        rank("4A")


# --- the sample region: a contract with the sample DICOM ----------------------------------------


@pytest.fixture(scope="module")
def sample() -> Region:
    return load_region(SAMPLE)


def _code(institution: Institution | None) -> str | None:
    return institution.code if institution else None


INSTITUTIONS = {
    "PRV001": ("Qianzhong Provincial People's Hospital", "3A", ("PRV_CT", "PRV_MR", "PRV_PACS"), True),
    "CTY001": ("Anping County People's Hospital", "2A", ("CTY_CT", "CTY_DR", "CTY_PACS"), True),
    "TWN001": ("Heping Township Health Centre", "1", ("TWN_DR", "TWN_US", "TWN_PACS"), True),
    "PVT001": ("Riverside Private Imaging Clinic", "unrated", ("PVT_CT",), False),  # geo 530102: Yunnan
}


def test_sample_institutions_are_the_contract(sample: Region) -> None:
    assert sample.label == "黔HR"
    assert {i.code: (i.name, i.level, i.ae_titles, i.in_scope) for i in sample.institutions} == INSTITUTIONS
    for code, (name, _, aets, _) in INSTITUTIONS.items():
        assert _code(resolve_institution(sample, [code], "", "")) == code
        assert _code(resolve_institution(sample, [], name.upper(), "")) == code
        for aet in aets:
            assert _code(resolve_institution(sample, [], "", aet)) == code


def test_sample_alliances_and_settings(sample: Region) -> None:
    alliances = {a.name: (a.type, {m.institution for m in a.members}, a.recognize_all_items) for a in sample.alliances}
    assert alliances == {
        "Qianzhong City Medical Group": ("city-medical-group", {"PRV001", "CTY001", "TWN001"}, False),
        "Anping County Medical Community": ("county-medical-community", {"CTY001", "TWN001"}, True),
    }
    assert all(m.valid_from == date(2024, 1, 1) for a in sample.alliances for m in a.members)
    assert (sample.share_within_region, sample.allow_higher_accepts_lower, sample.require_patient_context) == (False, False, True)
    quals = {(q.institution, q.modality) for q in sample.qualifications if q.passed}
    assert quals == {("PRV001", m) for m in ("CT", "MR", "DX", "CR", "US")} | {("CTY001", "CT"), ("CTY001", "DX"), ("CTY001", "CR"),
                                                                             ("TWN001", "DX"), ("TWN001", "US")}
    assert all((q.valid_from, q.valid_to) == (date(2026, 1, 1), date(2026, 12, 31)) for q in sample.qualifications)


def test_sample_catalog_resolves_every_item(sample: Region) -> None:
    for item in sample.catalog:
        for code in item.procedure_codes:
            assert resolve_item(sample, StudyFacts("1", procedure_codes=(code,))) == item
        facts = StudyFacts("1", modalities=item.modalities[:1], body_parts=item.body_parts[:1],
                           contrast=item.contrast == "contrast")
        assert resolve_item(sample, facts) == item, item.code
    windows = {i.code: i.valid_days for i in sample.catalog}
    assert (windows["CT-CHEST-PLAIN"], windows["MR-SPINE-PLAIN"], windows["DX-BONE"], windows["US-ABDOMEN"]) == (30, 90, 90, 14)
    for code in ("CT-CHEST-PLAIN", "CT-HEAD-PLAIN", "CT-ABDOMEN-PLAIN", "CT-CHEST-CONTRAST", "MR-BRAIN-PLAIN",
                 "DX-CHEST", "US-ABDOMEN"):
        assert sample.item(code) is not None


@pytest.mark.parametrize(
    ("producer", "modality", "body_part", "viewer", "failed"),
    [
        pytest.param("PRV001", "CT", "CHEST", "CTY001", (), id="provincial-ct-recognised-at-county"),
        pytest.param("CTY001", "CT", "CHEST", "PRV001", (), id="county-ct-recognised-at-provincial-in-city-group"),
        pytest.param("TWN001", "DX", "CHEST", "CTY001", (), id="township-dr-recognised-in-county-community"),
        pytest.param("TWN001", "US", "ABDOMEN", "PRV001", (), id="township-us-recognised-at-provincial-in-city-group"),
        pytest.param("TWN001", "US", "THYROID", "CTY001", (), id="unlisted-item-recognised-in-recognise-all-community"),
        pytest.param("TWN001", "US", "THYROID", "PRV001",
                     ("item_not_listed", "item_mismatch", "no_images", "producer_not_qualified", "outside_window"),
                     id="unlisted-item-not-recognised-in-city-group"),
        pytest.param("PVT001", "CT", "CHEST", "PRV001", ("producer_not_qualified", "level_rule"),
                     id="private-clinic-not-recognised-at-provincial-outside-alliances"),
        pytest.param("CTY001", "MR", "BRAIN", "TWN001", ("producer_not_qualified",), id="county-mr-not-qualified"),
        pytest.param("PVT001", "CT", "CHEST", "TWN001", ("producer_not_qualified", "level_rule"), id="private-clinic-not-qualified"),
        pytest.param("PRV001", "CT", "CHEST", "PVT001", ("out_of_scope",), id="out-of-scope-viewer"),
    ],
)
def test_sample_region_advice(sample: Region, producer: str, modality: str, body_part: str, viewer: str,
                              failed: tuple[str, ...]) -> None:
    study = StudyFacts("1.2", study_date=date(2026, 6, 1), modalities=(modality,), body_parts=(body_part,), producer=producer, qc_status="accepted")
    assert recognition_advice(sample, study, viewer, datetime(2026, 6, 10)).failed == failed


def test_sample_region_access(sample: Region) -> None:
    study = StudyFacts("1.2", study_date=date(2026, 6, 1), modalities=("CT",), producer="PRV001", patient_id="P1", issuer_of_patient_id="PRV001")
    context = QueryContext("P1", "PRV001")
    now = datetime(2026, 6, 10)
    assert decide_access(sample, "PRV001", "TWN001", True, study, context, (), now).reason == "alliance"
    assert decide_access(sample, "PRV001", "PVT001", True, study, context, (), now).reason == "no_relationship"


MANIFEST = SAMPLE.parents[1] / "tests" / "data" / "sample_manifest.json"


@pytest.mark.skipif(not MANIFEST.exists(), reason="sample DICOM not generated")
def test_sample_dicom_manifest_resolves_in_sample_region(sample: Region) -> None:
    """The contract with scripts/make_sample_dicom.py: its institutions, AEs and procedures resolve."""
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    for entry in manifest["institutions"]:
        assert _code(resolve_institution(sample, [entry["code"]], "", "")) == entry["code"]
        assert _code(resolve_institution(sample, [], entry["name"], "")) == entry["code"]
        assert sample.institution(entry["code"]).level == entry["level"]  # type: ignore[union-attr]
        for aet in entry["calling_aes"]:
            assert _code(resolve_institution(sample, [], "", aet)) == entry["code"]
    for study in manifest["studies"]:
        series = study["series"]
        facts = StudyFacts(
            study["accession_number"],
            modalities=tuple(s["modality"] for s in series),
            body_parts=tuple(s["body_part"] for s in series if s.get("body_part")),
            procedure_codes=(study["procedure_code"],),
            contrast=study["contrast"],
        )
        item = resolve_item(sample, facts)
        assert item is not None, study["procedure_code"]
        assert set(item.modalities) & set(facts.modalities), study["accession_number"]
        assert resolve_item(sample, replace(facts, procedure_codes=())) == item, study["accession_number"]


# -- issue 12.3: scope by geography ---------------------------------------------------------------
GEO = [
    ("520121", "520100", True),  # a county lies within its city
    ("520121", "520000", True),  # ... and its province
    ("520100", "520000", True),  # a city within its province
    ("520100", "520100", True),
    ("520201", "520100", False),  # another city of the same province
    ("520000", "520100", False),  # the province is not within one of its cities
    ("530102", "520000", False),  # another province
    ("520121", "520122", False),  # a neighbouring county
    ("", "520000", False), ("5201", "520000", False), ("520100", "", False), ("000000", "000000", False),
]


@pytest.mark.parametrize(("code", "scope", "within"), GEO)
def test_administrative_division_lies_within_scope(code: str, scope: str, within: bool) -> None:
    from pacsnode.recognition import geo_within

    assert geo_within(code, scope) is within


def _city_mark() -> dict[str, Any]:
    """筑HR, a city mark of Guiyang (520100): valid in the city and its counties, not elsewhere."""
    data = _minimal()
    data["region"] = {"label": "筑HR", "scope_geo": "520100"}
    data["institutions"].append({"code": "C1", "name": "Zunyi Hospital", "level": "3A", "geo": "520300"})
    return data


def test_city_mark_is_not_valid_outside_the_city() -> None:
    region = parse_region(_city_mark(), SRC)
    assert {i.code: i.in_scope for i in region.institutions} == {"A1": True, "B1": True, "C1": False}
    study = StudyFacts("1.2", study_date=date(2026, 6, 1), modalities=("CT",), body_parts=("CHEST",), producer="A1",
                       qc_status="accepted")
    inside = recognition_advice(region, study, "B1", datetime(2026, 6, 10))
    outside = recognition_advice(region, study, "C1", datetime(2026, 6, 10))
    assert inside.failed == ()
    assert outside.failed == ("out_of_scope",)
    why = next(c.explanation for c in outside.conditions if c.code == "out_of_scope")
    assert why == "C1 (geo 520300) is outside 筑HR (scope 520100)"


def test_manual_scope_override_is_explicit_and_listed() -> None:
    data = _city_mark()
    data["institutions"][2].update(in_scope=True, scope_override_reason="Zunyi joins the Guiyang pilot (doc 2026-17)")
    region = parse_region(data, SRC)
    zunyi = region.institution("C1")
    assert zunyi is not None and zunyi.in_scope and zunyi.scope_override.startswith("Zunyi joins")
    assert [i.code for i in region.scope_overrides] == ["C1"]
    study = StudyFacts("1.2", study_date=date(2026, 6, 1), modalities=("CT",), body_parts=("CHEST",), producer="A1",
                       qc_status="accepted")
    advice = recognition_advice(region, study, "C1", datetime(2026, 6, 10))
    assert advice.failed == ()
    why = next(c.explanation for c in advice.conditions if c.code == "out_of_scope")
    assert why.endswith("by manual override: Zunyi joins the Guiyang pilot (doc 2026-17)")
