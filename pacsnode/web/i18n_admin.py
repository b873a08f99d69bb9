"""Message catalogs of the admin pages (issue 15 item 6), merged into ``pacsnode.web.i18n``.

Kept apart from the workspace's catalogs so that each page family owns its wording; ids are
prefixed ``admin.``. Chinese first, English the switch, as everywhere in the workspace.
"""

from __future__ import annotations

from typing import Mapping

ZH: Mapping[str, str] = {
    "col.thumbnail": "缩略图", "nav.admin": "系统管理", "admin.title": "系统管理", "admin.peers": "对端节点", "admin.tokens": "访问令牌",
    "admin.users": "用户账号", "admin.audit": "审计日志", "admin.health": "节点状态",
    "admin.done": "已完成：", "admin.refused": "未执行：", "admin.shown_once": "只显示这一次，请立即妥善保存：",
    "admin.name": "名称", "admin.aet": "AE 名称", "admin.host": "地址", "admin.port": "端口",
    "admin.institution": "机构代码", "admin.permissions": "权限", "admin.any_host": "允许任何地址",
    "admin.tls": "TLS 加密", "admin.fingerprint": "证书指纹 (SHA-256)", "admin.subject": "证书主题 CN",
    "admin.add": "添加", "admin.edit": "修改", "admin.save": "保存", "admin.remove": "删除",
    "admin.actions": "操作", "admin.peer": "对应节点", "admin.created": "创建时间", "admin.revoked": "吊销时间",
    "admin.create": "创建", "admin.revoke": "吊销", "admin.role": "角色", "admin.password": "密码（留空则自动生成）",
    "admin.disabled": "停用时间", "admin.disable": "停用", "admin.reset": "重置密码", "admin.active": "启用",
    "admin.from": "起始日期", "admin.until": "截止日期", "admin.actor": "操作者", "admin.action": "动作",
    "admin.outcome": "结果", "admin.study": "检查 UID", "admin.filter": "筛选", "admin.at": "时间",
    "admin.detail": "详情", "admin.prev": "上一页", "admin.next": "下一页", "admin.page": "第 {n} 页",
    "admin.ready": "就绪", "admin.not_ready": "未就绪", "admin.storage": "存储", "admin.free": "可用空间",
    "admin.index": "索引数据库", "admin.listener": "DICOM 监听", "admin.accepting": "正在接受连接",
    "admin.not_accepting": "未接受连接", "admin.workers": "工作进程", "admin.running": "运行中",
    "admin.configured": "配置数", "admin.last_errors": "最近的拒绝与失败", "admin.ok": "正常", "admin.problem": "异常",
    "admin.replace_note": "修改时名称不变；AE 名称在所有节点中唯一。", "admin.none": "（无）",
    "role.admin": "系统管理员", "role.physician": "医师", "role.qc": "质控人员", "role.programme": "项目办公室",
    "role.viewer": "阅片",
}

EN: Mapping[str, str] = {
    "col.thumbnail": "Thumbnail", "nav.admin": "Administration", "admin.title": "Administration", "admin.peers": "Peers", "admin.tokens": "Tokens",
    "admin.users": "Users", "admin.audit": "Audit trail", "admin.health": "Node health",
    "admin.done": "Done: ", "admin.refused": "Not done: ", "admin.shown_once": "Shown this once only; keep it now:",
    "admin.name": "Name", "admin.aet": "AE title", "admin.host": "Host", "admin.port": "Port",
    "admin.institution": "Institution", "admin.permissions": "Permissions", "admin.any_host": "Any host",
    "admin.tls": "TLS", "admin.fingerprint": "Certificate fingerprint (SHA-256)", "admin.subject": "Certificate CN",
    "admin.add": "Add", "admin.edit": "Edit", "admin.save": "Save", "admin.remove": "Remove",
    "admin.actions": "Actions", "admin.peer": "Peer", "admin.created": "Created", "admin.revoked": "Revoked",
    "admin.create": "Create", "admin.revoke": "Revoke", "admin.role": "Role",
    "admin.password": "Password (blank: generate one)", "admin.disabled": "Disabled", "admin.disable": "Disable",
    "admin.reset": "Reset password", "admin.active": "active",
    "admin.from": "From", "admin.until": "Until", "admin.actor": "Actor", "admin.action": "Action",
    "admin.outcome": "Outcome", "admin.study": "Study UID", "admin.filter": "Filter", "admin.at": "At",
    "admin.detail": "Detail", "admin.prev": "Previous", "admin.next": "Next", "admin.page": "Page {n}",
    "admin.ready": "ready", "admin.not_ready": "NOT READY", "admin.storage": "Storage", "admin.free": "Free",
    "admin.index": "Index", "admin.listener": "DICOM listener", "admin.accepting": "accepting",
    "admin.not_accepting": "not accepting", "admin.workers": "Workers", "admin.running": "running",
    "admin.configured": "configured", "admin.last_errors": "Latest refusals and failures", "admin.ok": "ok",
    "admin.problem": "problem",
    "admin.replace_note": "Editing keeps the name; an AE title belongs to one peer only.", "admin.none": "(none)",
    "role.admin": "administrator", "role.physician": "physician", "role.qc": "QC staff", "role.programme": "programme office",
    "role.viewer": "viewer",
}
