"""The audit events of the web side: logins, workspace refusals, decisions, QC, admin, reports.

The pages (``web/``) tell the node what a person did; this desk, owned by ``Node``
(``node.web_events``), decides what goes into the audit trail and in which shape, so that no
page writes audit records of its own (issue 13 item 7, as ``engine_events`` does for DIMSE).
It takes plain values (names, hosts, reasons), never an HTTP request, so the shape of a row
does not depend on the framework. The shapes are a contract: the admin audit page, ``pacsnode
audit`` and the tests read these actions, outcomes, ``user:NAME`` peers and detail keys.

Unlike the engine's events, a failure to record is not swallowed here: a web change or
refusal that cannot be audited fails its request (as it did when each page wrote its row).
"""

from __future__ import annotations

from typing import Any

from pacsnode.audit import AuditLog
from pacsnode.model import Caller


def _user(name: str) -> str:
    return f"user:{name}"


class WebEvents:
    """Audit records of what people do through the browser and its JSON twins, written in one place."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    # -- the DICOMweb door --------------------------------------------------------------
    def auth_refused(self, reason: str, host: str, method: str, path: str, similar_not_audited: int = 0) -> None:
        """A request without a valid token or session (the door throttles how often per address)."""
        detail: dict[str, Any] = {"reason": reason, "host": host, "method": method, "path": path[:200]}
        if similar_not_audited:
            detail["similar_refusals_not_audited"] = similar_not_audited
        self.audit.record("web-auth", "refused", peer_name="", detail=detail)

    def connection_refused(self, reason: str, host: str, similar_not_audited: int = 0) -> None:
        """An HTTP connection closed or refused before its request was whole (the web listener's
        per-address cap and deadlines, ``web/guarded_http.py``; throttled per address there)."""
        detail: dict[str, Any] = {"reason": reason, "host": host}
        if similar_not_audited:
            detail["similar_refusals_not_audited"] = similar_not_audited
        self.audit.record("web-connection", "refused", peer_name="", detail=detail)

    def caller_did(self, caller: Caller, action: str, outcome: str, study_uid: str = "", **detail: Any) -> None:
        """A DICOMweb request of a token or session caller (QIDO, STOW, WADO), as DIMSE peers are audited."""
        self.audit.record(action, outcome, peer_aet=caller.aet, peer_name=caller.peer.name if caller.peer else "",
                          study_uid=study_uid, detail=detail)

    # -- login ---------------------------------------------------------------------------
    def login_refused(self, who: str, reason: str, host: str, similar_not_audited: int = 0) -> None:
        """A login refused (throttled, or a wrong name or password); ``who`` as typed, cut to 64."""
        detail: dict[str, Any] = {"reason": reason, "host": host}
        if similar_not_audited:
            detail["similar_refusals_not_audited"] = similar_not_audited
        self.audit.record("web-login", "refused", peer_name=_user(who[:64]), detail=detail)

    def login_done(self, name: str, host: str) -> None:
        self.audit.record("web-login", "done", peer_name=_user(name), detail={"host": host})

    def logout(self, name: str, host: str) -> None:
        self.audit.record("web-logout", "done", peer_name=_user(name), detail={"host": host})

    # -- the workspace door --------------------------------------------------------------
    def workspace_refused(self, who: str, reason: str, host: str, method: str, path: str,
                          study_uid: str = "") -> None:
        """A workspace page or change refused: role, institution, CSRF, origin, a bad filter."""
        self.audit.record("workspace", "refused", peer_name=_user(who) if who else "", study_uid=study_uid[:64],
                          detail={"reason": reason, "host": host, "method": method, "path": path[:200]})

    # -- the physician's decision --------------------------------------------------------
    def decide_refused(self, who: str, study_uid: str, reason: str) -> None:
        self.audit.record("web-decide", "refused", peer_name=_user(who), study_uid=study_uid,
                          detail={"reason": reason})

    def decided(self, who: str, study_uid: str, decision_id: int, decision: str, informed_how: str,
                host: str) -> None:
        self.audit.record("web-decide", "done", peer_name=_user(who), study_uid=study_uid,
                          detail={"decision_id": decision_id, "decision": decision,
                                  "informed_how": informed_how, "host": host})

    # -- QC ------------------------------------------------------------------------------
    def qc_refused(self, who: str, study_uid: str, action: str, reason: str) -> None:
        self.audit.record("web-qc", "refused", peer_name=_user(who), study_uid=study_uid,
                          detail={"action": action[:20], "reason": reason})

    def qc_decided(self, who: str, study_uid: str, action: str, status: str, grade: str, reason: str) -> None:
        """A QC accept, reject or restore done (the outcome is the action's name)."""
        self.audit.record("web-qc", action, peer_name=_user(who), study_uid=study_uid,
                          detail={"status": status, "grade": grade[:8], "reason": reason[:16]})

    # -- admin ---------------------------------------------------------------------------
    def admin_refused(self, who: str, detail: dict[str, Any], reason: str) -> None:
        """An admin change refused; ``detail`` is the page, action, target and host."""
        self.audit.record("web-admin", "refused", peer_name=_user(who), detail={**detail, "reason": reason[:500]})

    def admin_done(self, who: str, detail: dict[str, Any], shown: dict[str, Any]) -> None:
        """An admin change done, with what its answer showed (never a secret: the page leaves them out)."""
        self.audit.record("web-admin", "done", peer_name=_user(who), detail={**detail, **shown})

    def admin_shown(self, who: str, page: str, filters: dict[str, str], host: str) -> None:
        """Reading the audit trail is itself audited (who looked for what; ``upto`` is paging, not a filter)."""
        self.audit.record("web-admin", "shown", peer_name=_user(who),
                          detail={"page": page, "filters": {k: v for k, v in filters.items() if v and k != "upto"},
                                  "host": host})

    # -- the programme report ------------------------------------------------------------
    def report_shown(self, who: str, what: str, filters: dict[str, Any]) -> None:
        self.audit.record("web-report", "shown", peer_name=_user(who), detail={"what": what, **filters})
