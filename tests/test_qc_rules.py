"""The QC rule set: the shipped file, lookups, and errors that name the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from pacsnode.errors import ConfigError
from pacsnode.qc.checks import CHECK_CODES
from pacsnode.qc.rules import IdentityRule, MinSize, QcRules, default_rules, load_rules, parse_rules

CONFIG = Path(__file__).resolve().parent.parent / "config" / "qc_rules.toml"


def test_config_file_and_packaged_defaults_are_the_same() -> None:
    assert load_rules(CONFIG) == default_rules()


def test_default_rules_content() -> None:
    rules = default_rules()
    assert rules.version == "2026.1"
    codes = [rule.code for rule in rules.identity]
    assert set(codes) <= set(CHECK_CODES)
    assert {"QC-ID-PATIENT-ID", "QC-ID-ISSUER", "QC-ID-NAME", "QC-ID-SEX", "QC-ID-BIRTH-DATE",
            "QC-ID-STUDY-DATE", "QC-ID-STUDY-TIME", "QC-ID-ACCESSION", "QC-ID-INSTITUTION",
            "QC-ID-MODALITY", "QC-ID-BODY-PART"} == set(codes)
    assert all(rule.severity == "fail" for rule in rules.identity)
    assert rules.report.required_for == ("CT", "MR") and rules.report.severity == "warn"
    assert rules.pixels.lossy == "warn"
    assert isinstance(rules, QcRules) and isinstance(rules.identity[0], IdentityRule)


def test_rules_are_frozen() -> None:
    rules = default_rules()
    with pytest.raises(AttributeError):
        rules.version = "x"  # type: ignore[misc]


def test_dose_rules_cover_ct_dx_cr() -> None:
    rules = default_rules()
    ct, dx, cr = (rules.dose_for(m) for m in ("CT", "DX", "CR"))
    assert ct is not None and ct.any_of == ("CTDIvol",)
    assert dx is not None and "ImageAndFluoroscopyAreaDoseProduct" in dx.any_of and "EntranceDoseInmGy" in dx.any_of
    assert cr is not None and cr.any_of == dx.any_of
    assert rules.dose_for("MR") is None
    assert "1.2.840.10008.5.1.4.1.1.88.67" in rules.dose_sr_classes


@pytest.mark.parametrize(("sop_class", "is_report"), [
    ("1.2.840.10008.5.1.4.1.1.88.11", True),  # Basic Text SR
    ("1.2.840.10008.5.1.4.1.1.88.33", True),  # Comprehensive SR
    ("1.2.840.10008.5.1.4.1.1.104.1", True),  # Encapsulated PDF
    ("1.2.840.10008.5.1.4.1.1.88.67", False),  # X-Ray Radiation Dose SR
    ("1.2.840.10008.5.1.4.1.1.88.59", False),  # Key Object Selection
    ("1.2.840.10008.5.1.4.1.1.2", False),  # CT Image
])
def test_what_counts_as_a_report(sop_class: str, is_report: bool) -> None:
    assert default_rules().report.is_report(sop_class) is is_report


def test_min_size_falls_back_to_default() -> None:
    pixels = default_rules().pixels
    assert pixels.min_size("CT") == MinSize("CT", 64, 64)
    assert pixels.min_size("DX") == MinSize("DX", 128, 128)
    assert pixels.min_size("XC").modality == "default"


MINIMAL = 'version = "2026.1"\n'


def test_minimal_file_gets_defaults() -> None:
    rules = parse_rules(MINIMAL)
    assert rules.identity == () and rules.dates == "fail" and rules.counts.gap == "fail"
    assert rules.pixels.min_size("CT").rows == 1


@pytest.mark.parametrize(("text", "key", "fix"), [
    ("", '"version"', "2026.1"),
    ('version = "2026.1"\n[dates]\nseverity = "fatal"\n', '"dates.severity"', '"fail", "warn" or "off"'),
    ('version = "2026.1"\n[counts]\ngaps = "fail"\n', '"counts.gaps"', "declared, gap"),
    ('version = "2026.1"\n[pixels.min_size]\nCT = [0, 64]\n', '"pixels.min_size.CT"', "[rows, columns]"),
    ('version = "2026.1"\n[pixels.min_size]\nCT = 64\n', '"pixels.min_size.CT"', "[rows, columns]"),
    ('version = "2026.1"\n[[identity]]\ncode = "PATIENT"\nany_of = ["PatientID"]\n',
     '"identity[1].code"', 'QC-ID-'),
    ('version = "2026.1"\n[[identity]]\ncode = "QC-ID-X"\nany_of = []\n', '"identity[1].any_of"', "at least one"),
    ('version = "2026.1"\n[[identity]]\ncode = "QC-ID-X"\nany_of = ["A"]\nscope = "some"\n',
     '"identity[1].scope"', '"images"'),
    ('version = "2026.1"\n[[identity]]\ncode = "QC-ID-X"\nany_of = ["A"]\n'
     '[[identity]]\ncode = "QC-ID-X"\nany_of = ["B"]\n', '"identity[2].code"', "its own code"),
    ('version = "2026.1"\n[dose]\nCT = "CTDIvol"\n', '"dose.CT"', "[dose.CT]"),
    ('version = "2026.1"\n[dose.CT]\nany_of = "CTDIvol"\n', '"dose.CT.any_of"', '["A", "B"]'),
    ('version = "2026.1"\n[report]\nrequired_for = "CT"\n', '"report.required_for"', '["A", "B"]'),
    ('version = 2026\n', '"version"', "quote it"),
    ('version = "2026.1"\nextra = 1\n', '"extra"', "remove it"),
    # issue 12.5: QC no longer keeps its own list of lossy transfer syntaxes (it disagreed with recognition)
    ('version = "2026.1"\n[pixels]\npossibly_lossy_transfer_syntaxes = ["1.2.840.10008.1.2.4.91"]\n',
     '"pixels.possibly_lossy_transfer_syntaxes"', "pacsnode.dicom.lossy"),
    ('version = "2026.1"\n[pixels]\nlossy_transfer_syntaxes = []\n', '"pixels.lossy_transfer_syntaxes"',
     "shared with the recognition rules"),
])
def test_bad_values_name_the_key_and_the_fix(text: str, key: str, fix: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_rules(text, origin="qc_rules.toml")
    message = str(caught.value)
    assert message.startswith("qc_rules.toml: ")
    assert key in message and fix in message


def test_not_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "qc_rules.toml"
    path.write_text("version = \n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_rules(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_rules(tmp_path / "absent.toml")


def test_an_edited_copy_loads(tmp_path: Path) -> None:
    text = CONFIG.read_text(encoding="utf-8").replace('version = "2026.1"', 'version = "2026.2"')
    text = text.replace('[report]\nseverity = "warn"', '[report]\nseverity = "fail"')
    path = tmp_path / "qc_rules.toml"
    path.write_text(text, encoding="utf-8")
    rules = load_rules(path)
    assert rules.version == "2026.2" and rules.report.severity == "fail"
