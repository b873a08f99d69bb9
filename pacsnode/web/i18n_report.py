"""Messages of the programme report page (issue 15 item 5), merged into ``i18n``'s catalogs.

Kept apart so the report's wording changes here without touching the physician's and QC
pages' catalogs. Reason codes keep their stable codes next to the words (``reason.N1``).
"""

from __future__ import annotations

from typing import Mapping

REPORT_ZH: Mapping[str, str] = {
    "nav.report": "互认统计", "report.title": "检查结果互认统计报表", "report.from": "开始日期",
    "report.to": "结束日期", "report.period": "时间粒度", "report.period.month": "按月", "report.period.day": "按日",
    "report.apply": "统计", "report.date_hint": "日期格式如 2026-11-26 或 2026年11月26日",
    "report.range": "统计区间", "report.all_time": "全部", "report.until_now": "至今",
    "report.summary": "总体情况", "report.over_time": "互认率趋势", "report.by_institution": "按检查机构",
    "report.by_modality": "按设备类型", "report.by_item": "按互认项目", "report.declines": "不认可原因分布",
    "report.qc": "各机构质控通过率", "report.group": "分组", "report.shown": "展示既往检查",
    "report.eligible_shown": "其中可互认", "report.accepted": "认可", "report.declined": "不认可",
    "report.rate": "互认率", "report.rate_all": "全部决定认可率", "report.reason": "原因", "report.count": "次数",
    "report.checked": "已质控", "report.passed": "自动检查通过", "report.pass_rate": "质控通过率",
    "report.qc_accepted": "审核通过", "report.qc_rejected": "审核退回", "report.needs_fix": "需修正",
    "report.pending": "待审核", "report.download": "下载", "report.none": "无数据",
    "report.no_decision": "无决定", "report.rate_note": "互认率 = 认可数 ÷（认可数 + 不认可数），仅统计系统判定为可互认的既往检查。",
    "report.bad_date": "日期无法识别，请按 2026-11-26 或 2026年11月26日 填写。",
    "report.bad_range": "开始日期晚于结束日期。", "report.bad_period": "时间粒度只能按月或按日。",
}

REPORT_EN: Mapping[str, str] = {
    "nav.report": "Recognition report", "report.title": "Mutual recognition report", "report.from": "From",
    "report.to": "To", "report.period": "Period", "report.period.month": "by month", "report.period.day": "by day",
    "report.apply": "Show", "report.date_hint": "Dates like 2026-11-26",
    "report.range": "Period shown", "report.all_time": "all time", "report.until_now": "now",
    "report.summary": "Overall", "report.over_time": "Recognition rate over time",
    "report.by_institution": "By producing institution", "report.by_modality": "By modality",
    "report.by_item": "By catalog item", "report.declines": "Declines by reason",
    "report.qc": "QC pass rate by institution", "report.group": "Group", "report.shown": "Priors shown",
    "report.eligible_shown": "of which eligible", "report.accepted": "Accepted", "report.declined": "Declined",
    "report.rate": "Recognition rate", "report.rate_all": "Accepted of all decisions", "report.reason": "Reason",
    "report.count": "Count", "report.checked": "Checked", "report.passed": "Passed checks",
    "report.pass_rate": "QC pass rate", "report.qc_accepted": "Accepted", "report.qc_rejected": "Rejected",
    "report.needs_fix": "Needs fix", "report.pending": "Pending", "report.download": "Download",
    "report.none": "no data", "report.no_decision": "no decision",
    "report.rate_note": "Recognition rate = accepted / (accepted + declined), over priors the rules found eligible.",
    "report.bad_date": "Date not understood: write it like 2026-11-26.",
    "report.bad_range": "The start date is after the end date.", "report.bad_period": "Period: by month or by day.",
}
