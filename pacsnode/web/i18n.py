"""Message catalogs of the workspace: Chinese (the programme's working language, the default)
and English (a switch). Templates only ever name message ids (``t("priors.title")``), so a
wording changes here, never in a template; a missing id shows the id itself (never a blank).

Reason codes and condition codes keep their stable codes in both languages: reports count by
them, and a physician who sees "N1" in the form sees "N1" in the report.
"""

from __future__ import annotations

from typing import Callable, Mapping

DEFAULT = "zh"
LANGUAGES = ("zh", "en")
LANG_COOKIE = "pacsnode_lang"

ZH: Mapping[str, str] = {
    "app.title": "互认工作台", "nav.patients": "患者既往检查", "nav.logout": "退出", "nav.lang": "English",
    "user.as": "当前用户", "priors.title": "患者既往检查结果", "priors.patient_id": "患者ID",
    "priors.issuer": "发放机构", "priors.resident_id": "居民身份证号", "priors.search": "查询",
    "priors.none": "没有找到既往检查。", "priors.name_patient": "请填写患者ID及发放机构，或居民身份证号。",
    "priors.peers": "各节点查询状态", "priors.peer": "节点", "priors.peer_status": "状态",
    "priors.timeout": "超时", "priors.answered": "已应答", "priors.not_reached": "未连通",
    "priors.local": "本节点", "col.date": "检查日期", "col.institution": "检查机构", "col.modality": "设备类型",
    "col.description": "检查描述", "col.item": "互认项目", "col.status": "互认状态", "col.failed": "未满足条件",
    "col.valid": "有效期至", "col.source": "来源", "col.actions": "操作", "act.view": "阅片", "act.decide": "决定",
    "status.HR_ELIGIBLE": "可互认", "status.NOT_ELIGIBLE": "不符合互认条件", "status.UNKNOWN": "状态未知",
    "decide.title": "互认决定", "decide.study": "检查", "decide.advice": "系统建议",
    "decide.accept": "认可（互认）", "decide.decline": "不认可，重新检查", "decide.decision": "决定",
    "decide.reasons": "不认可原因（可多选）", "decide.consent": "知情同意", "decide.informed": "告知对象",
    "decide.method": "告知方式", "decide.note": "备注（不超过200字）", "decide.physician": "决定医师",
    "decide.submit": "保存决定", "decide.saved": "决定已保存，编号", "decide.refused": "未保存：",
    "decide.history": "已记录的决定", "consent.given": "同意", "consent.refused": "拒绝",
    "consent.not-obtainable": "无法取得（急诊）", "informed.patient": "患者本人", "informed.family": "家属",
    "informed.guardian": "监护人", "method.signature": "书面签字", "method.e-sign": "电子签名",
    "method.verbal-witnessed": "口头告知（有见证）", "error.forbidden": "无权访问", "back": "返回",
    "cond.item_not_listed": "检查项目不在互认目录中", "cond.producer_unknown": "检查机构不明",
    "cond.producer_not_qualified": "检查机构该项目未通过质控认定", "cond.qc_not_accepted": "检查未通过质控审核",
    "cond.lossy": "图像经有损压缩", "cond.incomplete": "资料不完整（已去标识）", "cond.no_images": "没有图像",
    "cond.item_mismatch": "部位或项目不符", "cond.no_study_date": "缺少检查日期",
    "cond.outside_window": "超出有效期", "cond.viewer_unknown": "本机构不在互认区域内",
    "cond.out_of_scope": "超出互认标识的地域范围", "cond.level_rule": "不符合机构级别互认规则",
    "reason.N1": "病情变化或结果与临床不符", "reason.N2": "检查结果变化快", "reason.N3": "拟行重大医疗措施",
    "reason.N4": "急诊、抢救", "reason.N5": "司法、伤残或退休鉴定", "reason.N6": "其他临床需要",
    "reason.P1": "患者或家属要求", "reason.P2": "检验未通过室间质评", "reason.P3": "时间过久，参考价值不足",
    "reason.P4": "医师认为有必要", "reason.L1": "其他不可预见情况", "reason.T1": "超出有效期",
    "reason.Q1": "图像质量不足", "reason.B1": "部位或项目不符", "reason.X1": "图像或报告无法获取",
    "nav.qc": "质控审核", "qc.state": "质控状态", "qc.title": "质控审核队列", "qc.all": "全部", "qc.study": "检查质控",
    "qc.checks": "质控检查项", "qc.preview": "预览图", "qc.accept": "通过", "qc.grade": "等级",
    "qc.reject": "退回", "qc.reason": "退回原因", "qc.restore": "恢复", "qc.note": "备注", "qc.done": "已保存：",
    "qc.status.pending": "待审核", "qc.status.accepted": "已通过", "qc.status.rejected": "已退回",
    "qc.status.needs-fix": "需修正", "qc.failed": "未通过检查", "qc.open": "审核",
}

EN: Mapping[str, str] = {
    "app.title": "Recognition workspace", "nav.patients": "Patient priors", "nav.logout": "Log out",
    "nav.lang": "中文", "user.as": "Signed in as", "priors.title": "Patient prior results",
    "priors.patient_id": "Patient ID", "priors.issuer": "Issuer", "priors.resident_id": "Resident ID",
    "priors.search": "Search", "priors.none": "No prior results found.",
    "priors.name_patient": "Give a Patient ID with its issuer, or a resident ID.",
    "priors.peers": "Nodes asked", "priors.peer": "Node", "priors.peer_status": "Status",
    "priors.timeout": "Timeout", "priors.answered": "answered", "priors.not_reached": "not reached",
    "priors.local": "this node", "col.date": "Study date", "col.institution": "Institution",
    "col.modality": "Modality", "col.description": "Description", "col.item": "Item", "col.status": "Status",
    "col.failed": "Failed conditions", "col.valid": "Valid until", "col.source": "Source",
    "col.actions": "Actions", "act.view": "View", "act.decide": "Decide",
    "status.HR_ELIGIBLE": "Recognisable", "status.NOT_ELIGIBLE": "Not eligible", "status.UNKNOWN": "Unknown",
    "decide.title": "Recognition decision", "decide.study": "Study", "decide.advice": "Advice",
    "decide.accept": "Accept (recognise)", "decide.decline": "Decline, re-examine", "decide.decision": "Decision",
    "decide.reasons": "Decline reasons (one or more)", "decide.consent": "Consent",
    "decide.informed": "Informed party", "decide.method": "Informed how", "decide.note": "Note (200 characters at most)",
    "decide.physician": "Deciding physician", "decide.submit": "Record decision",
    "decide.saved": "Decision recorded, number", "decide.refused": "Not recorded: ",
    "decide.history": "Decisions recorded", "consent.given": "given", "consent.refused": "refused",
    "consent.not-obtainable": "not obtainable (emergency)", "informed.patient": "patient",
    "informed.family": "family", "informed.guardian": "guardian", "method.signature": "signature",
    "method.e-sign": "e-signature", "method.verbal-witnessed": "verbal, witnessed",
    "error.forbidden": "Not permitted", "back": "Back",
    "cond.item_not_listed": "Exam item is not on the recognition list",
    "cond.producer_unknown": "Producing institution unknown",
    "cond.producer_not_qualified": "Producer not QC-qualified for this item",
    "cond.qc_not_accepted": "Study QC not accepted", "cond.lossy": "Lossy compressed images",
    "cond.incomplete": "Incomplete (de-identified copy)", "cond.no_images": "No images",
    "cond.item_mismatch": "Body part or item mismatch", "cond.no_study_date": "No study date",
    "cond.outside_window": "Outside the validity window", "cond.viewer_unknown": "Your institution is not in the region",
    "cond.out_of_scope": "Outside the mark's geographic scope", "cond.level_rule": "Institution level rule not met",
    "nav.qc": "QC review", "qc.state": "QC status", "qc.title": "QC queue", "qc.all": "all", "qc.study": "Study QC", "qc.checks": "Checks",
    "qc.preview": "Contact sheet", "qc.accept": "Accept", "qc.grade": "Grade", "qc.reject": "Reject",
    "qc.reason": "Reason", "qc.restore": "Restore", "qc.note": "Note", "qc.done": "Recorded: ",
    "qc.status.pending": "pending", "qc.status.accepted": "accepted", "qc.status.rejected": "rejected",
    "qc.status.needs-fix": "needs fix", "qc.failed": "Failed checks", "qc.open": "Review",
}

from pacsnode.web.i18n_report import REPORT_EN, REPORT_ZH  # noqa: E402  (the programme report, issue 15 item 5)

ZH = {**ZH, **REPORT_ZH}
EN = {**EN, **REPORT_EN}

from pacsnode.web import i18n_admin  # noqa: E402  (the admin pages' own catalog)

ZH = {**ZH, **i18n_admin.ZH}
EN = {**EN, **i18n_admin.EN}

from pacsnode.web import i18n_pages  # noqa: E402  (login, errors, refusals, validity window, QC checks)

ZH = {**ZH, **i18n_pages.ZH}
EN = {**EN, **i18n_pages.EN}
CATALOGS: Mapping[str, Mapping[str, str]] = {"zh": ZH, "en": EN}


def language(cookie_value: str | None) -> str:
    """The language of a request: the switch's cookie when it names a known one, else Chinese."""
    return cookie_value if cookie_value in LANGUAGES else DEFAULT


def translator(lang: str) -> Callable[[str], str]:
    """``t(message_id)`` in ``lang``; English, then the id itself, when a message is missing."""
    catalog = CATALOGS.get(lang, ZH)

    def t(message_id: str) -> str:
        if message_id in catalog:
            return catalog[message_id]
        if message_id.startswith("qccheck."):  # a check of the region's own rules: its code says it
            return ""
        if message_id.startswith("reason."):
            from pacsnode.recognition import REASON_CODES
            return REASON_CODES.get(message_id[7:], message_id)
        return EN.get(message_id, message_id)
    return t
