"""Rendering of the workspace's pages (and the login form): one Jinja2 environment, the page
headers, and the helpers templates use to show dates, times and validity windows the way the
programme's users write them. Every word comes from ``pacsnode.web.i18n``'s catalogs.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import Response

from pacsnode.web import i18n

CHINA = timezone(timedelta(hours=8))  # the programme's users read times in China Standard Time
# same-origin, not no-referrer: under no-referrer Chromium sends "Origin: null" with a form POST,
# which check_csrf refuses; same-origin still sends no Referer to another site.
PAGE_HEADERS = {"Cache-Control": "no-store", "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin",
                "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
                                           "form-action 'self'; frame-ancestors 'none'"}
ENV = Environment(loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
                  autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)


def display_date(value: str, lang: str) -> str:
    """YYYYMMDD as users write it: 2026年11月26日 in Chinese, 2026-11-26 in English."""
    if len(value) != 8 or not value.isdigit():
        return value
    if lang == "zh":
        return f"{value[:4]}年{int(value[4:6])}月{int(value[6:])}日"
    return f"{value[:4]}-{value[4:6]}-{value[6:]}"


def display_time(value: str, lang: str) -> str:
    """An ISO 8601 instant (as decisions store it, UTC) in China Standard Time:
    2026年12月2日 08:59 in Chinese, 2026-12-02 08:59 in English; anything else as given."""
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    local = moment.astimezone(CHINA)
    return f"{display_date(local.strftime('%Y%m%d'), lang)} {local.strftime('%H:%M')}"


def person_name(value: str, lang: str) -> str:
    """A DICOM person name (PN) as the programme's users write it: the ideographic group run
    together, family name first (``Zhao^Lei=赵^磊`` -> 赵磊) in Chinese; else the alphabetic group
    family name first with a space (ZHAO LEI), the ideographic form after it in English."""
    groups = (value or "").split("=")
    alphabetic = " ".join(p for p in groups[0].split("^")[:2] if p.strip())
    ideographic = "".join(p for p in groups[1].split("^")[:2] if p.strip()) if len(groups) > 1 else ""
    if ideographic and lang == "zh":
        return ideographic
    if ideographic:
        return f"{alphabetic} ({ideographic})" if alphabetic else ideographic
    return alphabetic


def _day(value: str) -> date | None:
    try:
        return datetime.strptime(value, "%Y%m%d").date() if len(value) == 8 else None
    except ValueError:
        return None


def validity(study_date: str, valid_until: str, lang: str, t: Callable[[str], str],
             today: date | None = None) -> dict[str, str]:
    """The validity window in words: ``span`` (from the study date to the last valid day, with
    its length) and ``state`` (days left, last day, or days since it expired)."""
    start, end = _day(study_date), _day(valid_until)
    if end is None:
        return {"span": t("window.none"), "state": "", "expired": ""}
    today = today or datetime.now(CHINA).date()
    span = display_date(valid_until, lang)
    if start is not None:
        span = (t("window.span").replace("{from}", display_date(study_date, lang)).replace("{until}", span)
                .replace("{days}", str((end - start).days)))
    left = (end - today).days
    state = (t("window.left").replace("{n}", str(left)) if left > 0 else t("window.today") if left == 0
             else t("window.expired").replace("{n}", str(-left)))
    return {"span": span, "state": state, "expired": "yes" if left < 0 else ""}


def render(request: Request, template: str, user: Any, status: int = 200, **context: Any) -> Response:
    """The page in the request's language (the switch's cookie, else Chinese)."""
    lang = i18n.language(request.cookies.get(i18n.LANG_COOKIE))
    t = i18n.translator(lang)
    html = ENV.get_template(template).render(
        t=t, lang=lang, user=user, csrf_field="csrf_token", status=status,
        date=lambda v: display_date(v, lang), time=lambda v: display_time(v, lang),
        person=lambda v: person_name(v, lang),
        window=lambda start, end: validity(start, end, lang, t), **context)
    return Response(html, status_code=status, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)
