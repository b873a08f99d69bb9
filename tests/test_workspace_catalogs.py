"""The workspace's words live in the message catalogs, not in the templates (issue 15: "message
catalogs, not strings in templates"), and every word a page can ask for is in both languages.

No server: the templates are read as text. Three checks:

1. no visible text in a template but message ids, data and a short list of unit and format
   names (CSV, JSON, GiB...): text between tags, and string literals a ``{{ }}`` prints;
2. every ``t('id')`` a template names is in the Chinese and the English catalog;
3. every id a template builds from a code (``'cond.' ~ code``) is there for every code the
   program can produce: conditions, reasons, consents, QC statuses and reasons, roles, the
   decide form's refusal rules, the fixed QC check codes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from support import REPO

TEMPLATES = REPO / "pacsnode" / "web" / "templates"
# words that are the same in both languages: file formats, units, protocol names
NEUTRAL = {"CSV", "JSON", "GiB", "TLS", "CN", "sha", "DICOM"}
# string literals an expression may print that are not words: CSS classes, attribute values, separators
NOT_WORDS = {"HR_ELIGIBLE", "NOT_ELIGIBLE", "checked", "selected", "readonly", "edit", "add", "en", "zh", "zh-CN",
             "expired", "yes", "&", "?", "-", ",", "…", "{n}", "{peer}", "%.1f", "%Y-%m-%d %H:%M:%S", "TLS"}


def _templates() -> list[Path]:
    return sorted(TEMPLATES.glob("*.html"))


def _visible_text(source: str) -> str:
    text = re.sub(r"{#.*?#}|{%.*?%}|{{.*?}}", " ", source, flags=re.S)
    text = re.sub(r"<!--.*?-->|<[^>]*>", " ", text, flags=re.S)
    return text


@pytest.mark.parametrize("template", _templates(), ids=lambda p: p.name)
def test_templates_show_no_words_of_their_own(template: Path) -> None:
    source = template.read_text(encoding="utf-8")
    words = [w for w in re.findall(r"[A-Za-z\u4e00-\u9fff]+", _visible_text(source)) if w not in NEUTRAL]
    assert not words, f"{template.name} shows words that are not in a catalog: {words}"
    for expression in re.findall(r"{{(.*?)}}", source, flags=re.S):
        literals = [s for s in _printed_literals(expression) if s not in NOT_WORDS and s not in NEUTRAL
                    and re.search(r"[A-Za-z\u4e00-\u9fff]", s)]
        assert not literals, f"{template.name} prints literal words {literals} in {{{{{expression.strip()}}}}}"


def _printed_literals(expression: str) -> list[str]:
    """The string literals ``{{ }}`` prints: the expression's first value and what follows
    ``else`` (``'a' if x else 'b'``); literals compared or subscripted are not shown."""
    return re.findall(r"(?:^\s*|\belse\s+)'([^']*)'", expression)


def test_the_check_finds_a_word_written_into_a_template() -> None:
    """The test above can fail: a word in a cell, and a word an expression prints."""
    assert re.findall(r"[A-Za-z]+", _visible_text("<td>{{ x }} pass</td>")) == ["pass"]
    assert _printed_literals(" 'pass' if o.passed else o.severity ") == ["pass"]
    assert _printed_literals(" t('qc.result.pass') if o.passed else 'fail' ") == ["fail"]
    assert _printed_literals(" 'checked' if form.decision == 'accept' ") == ["checked"]


def test_every_message_a_template_names_is_in_both_catalogs() -> None:
    from pacsnode.web import i18n

    used: set[str] = set()
    for template in _templates():
        used |= set(re.findall(r"\bt\('([A-Za-z0-9_.-]+)'\)", template.read_text(encoding="utf-8")))
    assert used, "no message ids found: the pattern is wrong"
    assert not used - set(i18n.ZH), sorted(used - set(i18n.ZH))
    assert not used - set(i18n.EN), sorted(used - set(i18n.EN))
    # English names reasons from the rules' own list (recognition.REASON_CODES), Chinese in the catalog
    assert {k for k in i18n.ZH if not k.startswith("reason.")} == set(i18n.EN), sorted(set(i18n.ZH) ^ set(i18n.EN))


def _refusal_rules() -> set[str]:
    """The ``rule`` of every RecognitionError the decision's validation raises: the last argument,
    a snake_case word ending its line."""
    rules: set[str] = set()
    for module in ("recognition/decisions.py", "recognition/reasons.py"):
        source = (REPO / "pacsnode" / module).read_text(encoding="utf-8")
        rules |= set(re.findall(r'"([a-z][a-z0-9]*(?:_[a-z0-9]+)+)"\s*\)?\s*$', source, flags=re.M))
    return rules


def test_every_code_a_page_shows_has_words_in_both_languages() -> None:
    from pacsnode import accounts
    from pacsnode.provenance_desk import FINDING
    from pacsnode.recognition import REASON_CODES
    from pacsnode.recognition.advice import CONDITION_CODES
    from pacsnode.recognition.decisions import CONSENTS, DECISIONS, INFORMED_HOW, INFORMED_PARTIES
    from pacsnode.web import i18n
    from pacsnode.web.workspace_qc import REJECT_REASONS, STATUSES

    qc_rules = (REPO / "pacsnode" / "defaults" / "qc_rules.toml").read_text(encoding="utf-8")
    checks = {*re.findall(r'^code = "(QC-[A-Z-]+)"', qc_rules, flags=re.M), FINDING, "QC-FMT-DATE", "QC-COUNT-GAP",
              "QC-COUNT-DECLARED", "QC-DOSE", "QC-REPORT", "QC-PIXEL-DECODE", "QC-PIXEL-DIMS", "QC-PIXEL-RANGE",
              "QC-LOSSY"}
    rules = _refusal_rules()
    assert {"decline_needs_reason", "accept_needs_note", "note_control", "reason_unknown"} <= rules, rules
    needed = {*(f"cond.{c}" for c in CONDITION_CODES), *(f"reason.{c}" for c in REASON_CODES),
              *(f"consent.{c}" for c in CONSENTS), *(f"informed.{c}" for c in INFORMED_PARTIES),
              *(f"method.{c}" for c in INFORMED_HOW), *(f"decision.{c}" for c in DECISIONS),
              *(f"qc.status.{s}" for s in STATUSES), *(f"qc.reason.{r}" for r in REJECT_REASONS),
              *(f"qc.result.{r}" for r in ("pass", "warn", "fail")), *(f"role.{r}" for r in accounts.ROLES),
              *(f"refuse.{r}" for r in rules), *(f"qccheck.{c}" for c in checks),
              *(f"status.{s}" for s in ("HR_ELIGIBLE", "NOT_ELIGIBLE", "UNKNOWN")),
              *(f"error.{s}" for s in (400, 401, 403, 404, 413, 429, 500))}
    for lang in ("zh", "en"):
        t = i18n.translator(lang)
        missing = sorted(m for m in needed if not t(m) or t(m) == m)
        assert not missing, (lang, missing)
    chinese = i18n.translator("zh")
    assert all(re.search(r"[\u4e00-\u9fff]", chinese(m)) for m in needed if not m.startswith("reason.")), \
        [m for m in needed if not re.search(r"[\u4e00-\u9fff]", chinese(m))]


# -- names, dates and windows as the users write them ---------------------------------------------
def test_names_dates_times_and_windows_are_written_as_chinese_users_write_them() -> None:
    from datetime import date

    from pacsnode.web import i18n
    from pacsnode.web.page_render import display_time, person_name, validity

    assert person_name("Zhao^Lei=赵^磊", "zh") == "赵磊" and person_name("Zhao^Lei=赵^磊", "en") == "Zhao Lei (赵磊)"
    assert person_name("ZHAO^LEI", "zh") == "ZHAO LEI" and person_name("", "zh") == ""
    assert display_time("2026-12-02T00:59:53+00:00", "zh") == "2026年12月2日 08:59"  # China Standard Time
    assert display_time("2026-12-02T00:59:53+00:00", "en") == "2026-12-02 08:59"
    zh, en = i18n.translator("zh"), i18n.translator("en")
    today = date(2026, 4, 20)
    assert validity("20260315", "20260414", "zh", zh, today) == {
        "span": "2026年3月15日 至 2026年4月14日（30天）", "state": "已过期 6 天", "expired": "yes"}
    assert validity("20260315", "20260414", "en", en, date(2026, 4, 4))["state"] == "10 days left"
    assert validity("20260315", "20260414", "zh", zh, date(2026, 4, 14))["state"] == "今日到期"
    assert validity("20260315", "", "zh", zh, today)["span"].startswith("无有效期")
