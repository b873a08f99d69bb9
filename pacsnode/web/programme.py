"""The programme report in the workspace (issue 15 item 5), for ``programme`` users (and admins).

The numbers are those of ``pacsnode report recognition`` (``PhysicianDesk.report``) and
``pacsnode qc report`` (``QcDesk.report``): the page only groups, draws and translates them, so
the office's page, its downloads and the CLI can never disagree. ``/api/report?by=`` returns
exactly what ``report recognition --by … --json`` prints; ``/report.csv?by=`` what ``--csv``
prints (with a BOM for spreadsheet programs, and formula-looking cells defused);
``/report.json`` every section in one document. Charts are SVG drawn here (``svg_charts``).

The date filters take dates as people write them (2026-11-26, 2026/11/26, 20261126,
2026年11月26日); ``to`` is inclusive, like the CLI's ``--to``. The QC twin
``/api/report/qc?from=A&to=B`` is therefore ``qc report --from A --to B+1 day`` (that CLI's
``--to`` is exclusive).
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pacsnode.physician import REPORT_GROUPS, report_csv
from pacsnode.qc_service import rows_csv
from pacsnode.web import i18n
from pacsnode.web.app import HttpError, _guard
from pacsnode.web.svg_charts import Bar, bar_chart, column_chart
from pacsnode.web.workspace_auth import WorkspaceUser, audit_refusal, require

if TYPE_CHECKING:
    from pacsnode.web.workspace import Workspace

PROGRAMME = ("programme", "admin")
PERIODS = ("month", "day")
SECTIONS = ("institution", "modality", "item")
CSV_KINDS = (*REPORT_GROUPS, "reasons", "qc")
QC_GROUPS = ("institution", "modality")
_DATE = re.compile(r"^(\d{4})\s*(?:[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?|(\d{2})(\d{2}))$")
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


class BadFilter(Exception):
    """A filter the report cannot use: ``message_id`` for the page, ``str()`` for the API."""

    def __init__(self, message_id: str, text: str) -> None:
        super().__init__(text)
        self.message_id = message_id


def parse_day(value: str, field: str) -> date | None:
    """A date as users write it (full-width digits too), or None when blank; BadFilter if not a day."""
    text = unicodedata.normalize("NFKC", value).strip()
    if not text:
        return None
    match = _DATE.match(text[:20]) if len(text) <= 20 else None
    if match is None:
        raise BadFilter("report.bad_date", f"{field} {value[:20]!r} is not a date; write it like 2026-11-26")
    year, month, day = int(match[1]), int(match[2] or match[4]), int(match[3] or match[5])
    try:
        parsed = date(year, month, day)
    except ValueError:
        raise BadFilter("report.bad_date", f"{field} {value[:20]!r} is not a date of the calendar") from None
    if not 2000 <= parsed.year <= 2100:
        raise BadFilter("report.bad_date", f"{field} {value[:20]!r} is outside 2000-2100")
    return parsed


@dataclass(frozen=True)
class Filters:
    """The report's period: from/to inclusive days (None = open), and the time grouping."""

    start: date | None
    end: date | None
    period: str = "month"

    @classmethod
    def of(cls, query: Any) -> "Filters":
        start = parse_day(str(query.get("from", "")), "from")
        end = parse_day(str(query.get("to", "")), "to")
        period = str(query.get("period", "") or "month")
        if period not in PERIODS:
            raise BadFilter("report.bad_period", f"period {period[:20]!r}: use one of {', '.join(PERIODS)}")
        if start and end and start > end:
            raise BadFilter("report.bad_range", f"from {start} is after to {end}")
        return cls(start, end, period)

    @property
    def since(self) -> str:
        return self.start.isoformat() if self.start else ""

    @property
    def until(self) -> str:
        """The exclusive upper bound the library compares timestamps with (the CLI's ``to`` + 1 day)."""
        return (self.end + timedelta(days=1)).isoformat() if self.end else ""

    def as_json(self) -> dict[str, str]:
        return {"from": self.since, "to": self.end.isoformat() if self.end else "", "period": self.period}


def collect(node: Any, filters: Filters) -> dict[str, Any]:
    """Every section of the programme report (what ``/report.json`` downloads)."""
    desk = node.desk
    recognition = {by: desk.report(filters.since, filters.until, by)
                   for by in ("all", filters.period, *SECTIONS)}
    total = recognition["all"][0] if recognition["all"] else None
    return {**filters.as_json(), "recognition": recognition,
            "declines_by_reason": dict(total["declined_by_reason"]) if total else {},
            "qc": node.qc.report(filters.since, filters.until, "institution")}


def safe_csv(text: str) -> str:
    """Defuse cells a spreadsheet would run as a formula (a producer name comes from DICOM headers)."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out)
    for row in csv.reader(io.StringIO(text)):
        writer.writerow(["'" + cell if cell.startswith(_FORMULA) else cell for cell in row])
    return out.getvalue()


def review_pass_rate(group: dict[str, Any]) -> float | None:
    """Accepted of the studies a reviewer decided (accepted, rejected, needs-fix) in one ``qc report``
    group: what the office calls the QC pass rate. ``pass_rate`` there counts automatic checks only,
    so a study a reviewer rejected for motion would not lower it."""
    reviewed = group["accepted"] + group["rejected"] + group["needs_fix"]
    return round(group["accepted"] / reviewed, 4) if reviewed else None


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


class ProgrammePages:
    """The report page, its downloads and its JSON twins."""

    def __init__(self, ws: "Workspace") -> None:
        self.ws = ws
        self.node = ws.node

    def _user(self, request: Request) -> WorkspaceUser:
        return require(self.ws.web, request, PROGRAMME)

    def _filters(self, request: Request, user: WorkspaceUser) -> Filters:
        try:
            return Filters.of(request.query_params)
        except BadFilter as exc:
            audit_refusal(self.ws.web, request, user.name, f"report filter: {exc}")
            raise HttpError(400, str(exc)) from None

    def _audit(self, user: WorkspaceUser, what: str, filters: Filters) -> None:
        self.node.web_events.report_shown(user.name, what, filters.as_json())

    # -- the page ------------------------------------------------------------------------
    def page(self, request: Request) -> Response:
        user = self.ws.page_user(request, PROGRAMME)
        if isinstance(user, Response):
            return user
        lang = i18n.language(request.cookies.get(i18n.LANG_COOKIE))
        t = i18n.translator(lang)
        q = request.query_params
        form = {k: str(q.get(k, ""))[:40] for k in ("from", "to", "period")}
        try:
            filters = Filters.of(q)
        except BadFilter as exc:
            audit_refusal(self.ws.web, request, user.name, f"report filter: {exc}")
            return self.ws.render(request, "report.html", user, status=400, form=form, error=t(exc.message_id),
                                  error_detail=str(exc), report=None, periods=PERIODS)
        data = collect(self.node, filters)
        self._audit(user, "page", filters)
        views = self._views(data, filters, lang, t)
        return self.ws.render(request, "report.html", user, form=form, error="", report=data, periods=PERIODS,
                              filters=filters, views=views, query=_query(filters), pct=_pct)

    def _label(self, by: str, key: str, lang: str) -> str:
        """A group as users name it: an institution with its name, a month or day as they write it."""
        region = self.node.regional.region
        if by == "institution" and region is not None and (inst := region.institution(key)) is not None:
            return f"{key} {inst.name}"
        if by == "item" and region is not None and (item := region.item(key)) is not None:
            return f"{key} {getattr(item, 'name', '')}".strip()
        if by in PERIODS and key[:4].isdigit():
            from pacsnode.web.workspace import _display_date

            if by == "month":
                return f"{key[:4]}年{int(key[5:7])}月" if lang == "zh" else key
            return _display_date(key.replace("-", ""), lang)
        return key

    def _views(self, data: dict[str, Any], filters: Filters, lang: str, t: Callable[[str], str]) -> dict[str, Any]:
        """Labelled rows and the SVG charts of each section."""
        views: dict[str, Any] = {}
        none = t("report.no_decision")
        for by in (filters.period, *SECTIONS):
            rows = [{**row, "label": self._label(by, str(row[by]), lang), "key": row[by]}
                    for row in data["recognition"][by]]
            bars = [Bar(r["label"], r["recognition_rate"], _pct(r["recognition_rate"])) for r in rows]
            title = t("report.over_time" if by in PERIODS else f"report.by_{by}")
            chart = column_chart(f"chart-{by}", title, bars, none) if by in PERIODS else \
                bar_chart(f"chart-{by}", title, bars, 1.0, none)
            views[by] = {"rows": rows, "chart": chart, "title": title}
        reasons = sorted(data["declines_by_reason"].items(), key=lambda kv: (-kv[1], kv[0]))
        views["reasons"] = {"rows": [{"code": c, "label": t("reason." + c), "count": n} for c, n in reasons],
                            "chart": bar_chart("chart-reasons", t("report.declines"),
                                               [Bar(f"{c} {t('reason.' + c)}", n, str(n)) for c, n in reasons],
                                               None, t("report.none"))}
        qc_rows = [{**r, "label": self._label("institution", str(r["institution"]), lang),
                    "review_pass_rate": review_pass_rate(r)} for r in data["qc"]["groups"]]
        views["qc"] = {"rows": qc_rows,
                       "chart": bar_chart("chart-qc", t("report.qc"),
                                          [Bar(r["label"], r["review_pass_rate"], _pct(r["review_pass_rate"]))
                                           for r in qc_rows], 1.0, t("report.none"))}
        return views

    # -- downloads and JSON twins --------------------------------------------------------
    def download_csv(self, request: Request) -> Response:
        user = self._user(request)
        filters = self._filters(request, user)
        kind = request.query_params.get("by", "institution")
        if kind not in CSV_KINDS:
            audit_refusal(self.ws.web, request, user.name, f"report csv by {kind[:20]!r}")
            raise HttpError(400, f"by {kind[:20]!r}: use one of {', '.join(CSV_KINDS)}")
        if kind == "qc":
            body = rows_csv(self.node.qc.report(filters.since, filters.until, "institution")["groups"])
        elif kind == "reasons":
            total = self.node.desk.report(filters.since, filters.until, "all")
            reasons = total[0]["declined_by_reason"] if total else {}
            body = "reason,declined\r\n" + "".join(f"{k},{v}\r\n" for k, v in reasons.items()) if reasons else ""
        else:
            body = report_csv(self.node.desk.report(filters.since, filters.until, kind))
        self._audit(user, f"csv:{kind}", filters)
        name = f"recognition-{kind}-{filters.since or 'start'}-{filters.end or 'now'}.csv"
        return Response("\ufeff" + safe_csv(body), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store",
                                 "X-Content-Type-Options": "nosniff"})

    def download_json(self, request: Request) -> Response:
        user = self._user(request)
        filters = self._filters(request, user)
        data = collect(self.node, filters)
        self._audit(user, "json", filters)
        name = f"recognition-report-{filters.since or 'start'}-{filters.end or 'now'}.json"
        return Response(json.dumps(data, ensure_ascii=False, indent=2), media_type="application/json",
                        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})

    def api_report(self, request: Request) -> Response:
        """What ``pacsnode report recognition --by BY [--from] [--to] --json`` prints."""
        user = self._user(request)
        filters = self._filters(request, user)
        by = request.query_params.get("by", "institution")
        if by not in REPORT_GROUPS:
            audit_refusal(self.ws.web, request, user.name, f"report by {by[:20]!r}")
            raise HttpError(400, f"by {by[:20]!r}: use one of {', '.join(REPORT_GROUPS)}")
        self._audit(user, f"api:{by}", filters)
        return JSONResponse(self.node.desk.report(filters.since, filters.until, by),
                            headers={"Cache-Control": "no-store"})

    def api_qc(self, request: Request) -> Response:
        """What ``pacsnode qc report --by BY --json`` prints (``to`` inclusive here, see the module)."""
        user = self._user(request)
        filters = self._filters(request, user)
        by = request.query_params.get("by", "institution")
        if by not in QC_GROUPS:
            audit_refusal(self.ws.web, request, user.name, f"qc report by {by[:20]!r}")
            raise HttpError(400, f"by {by[:20]!r}: use one of {', '.join(QC_GROUPS)}")
        self._audit(user, f"api-qc:{by}", filters)
        return JSONResponse(self.node.qc.report(filters.since, filters.until, by),
                            headers={"Cache-Control": "no-store"})


def _query(filters: Filters) -> str:
    from urllib.parse import urlencode

    return urlencode({k: v for k, v in filters.as_json().items() if v and k != "period"})


def routes(web: Any) -> list[Route]:
    """The report's routes, for ``create_app`` (over the workspace's rendering and sessions)."""
    from pacsnode.web.workspace import Workspace

    pages = ProgrammePages(Workspace(web))
    g = _guard
    return [Route("/report", g(pages.page), methods=["GET"]),
            Route("/report.csv", g(pages.download_csv), methods=["GET"]),
            Route("/report.json", g(pages.download_json), methods=["GET"]),
            Route("/api/report", g(pages.api_report), methods=["GET"]),
            Route("/api/report/qc", g(pages.api_qc), methods=["GET"])]
