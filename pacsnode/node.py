"""``Node``: the service layer and composition root of one pacsnode.

Adapters (DIMSE handlers, CLI commands) call exactly one method here per request. The Node
owns the order of operations (validate → place file → index → answer), the policy checks
(who may store, what a duplicate does) and the audit trail, and knows nothing of pynetdicom
or click.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from pacsnode import identity
from pacsnode.audit import AuditLog, query_keys  # noqa: F401  (query_keys re-exported)
from pacsnode.engine_events import EngineEvents
from pacsnode.config import NodeConfig, load_config
from pacsnode.dicom.extract import facts_from_file
from pacsnode.errors import (DestinationNotAuthorized, NotFound, NothingToRetrieve, NotPermitted, PacsnodeError,
                             StorageFull, UnknownMoveDestination)
from pacsnode.observe import Event, Observer, notify
from pacsnode.index.peers import PeerRegistry
from pacsnode.index.regional_store import RegionalStore
from pacsnode.index.base import Index, open_index
from pacsnode.dicom.iocm import KOS_SOP_CLASS, rejection_note
from pacsnode.model import (
    Caller,
    CheckReport,
    InstanceFacts,
    InstanceLocation,
    Peer,
    Provenance,
    Query,
    ReceivedFile,
    StoreOutcome,
    StoreResult,
    StudySummary,
)
from pacsnode.physician import PhysicianDesk
from pacsnode.qc_service import QcDesk
from pacsnode.regional import Regional
from pacsnode import importing, maintenance, peer_admin, storage_commitment, web_events
from pacsnode.storage_commitment import COMMIT_NO_SUCH_INSTANCE, COMMIT_PROCESSING_FAILURE  # noqa: F401
from pacsnode.importing import ImportReport, iter_files  # noqa: F401  (re-exported: cli, tests)
from pacsnode.provenance_desk import ProvenanceDesk
from pacsnode.quota import QuotaMeter
from pacsnode.store_undo import undo_place
from pacsnode.rejection_desk import RejectionDesk
from pacsnode.storage.area import StorageArea, open_storage
from pacsnode.storage.archive_lock import OthersMayWrite, WriterLock, file_archive_lock
from pacsnode.storage import tempfiles

LOGGER = logging.getLogger(__name__)


def _web_metadata_at_ingest(path: Path) -> tuple[str, str] | None:
    from pacsnode.dicom import web_metadata  # only when DICOMweb is on

    return web_metadata.at_ingest(path)


def _no_hr_values() -> dict[str, Any]:
    """The HR block of a study without advice: empty status, scope and conditions."""
    return {"status": "", "failed": [], "scope": ""}


_STORED = {StoreResult.STORED.value, StoreResult.REPLACED.value}  # results that wrote bytes


class Node:
    """One node: its configuration, index, storage area, peers and audit trail."""

    #: How long ``check --repair`` leaves an unindexed file or an ownerless temp file alone while
    #: a server (or any writer) is running: far longer than a store can spend between linking its
    #: file and committing its row (the index's busy timeout is 60 s). Offline it is 0.
    REPAIR_GRACE_SECONDS = 300.0

    def __init__(self, config: NodeConfig, index: Index | None = None,
                 storage: StorageArea | None = None) -> None:
        self.config = config
        self.config.temp_path.mkdir(parents=True, exist_ok=True)
        self.index = index or open_index(config)
        self.storage = storage or open_storage(config)  # the folder, or [storage] url (S3)
        self.peers = PeerRegistry(self.index)
        self.quota = QuotaMeter(self.index.used_bytes)  # [store] quota_bytes, without a scan per store
        self.audit = AuditLog(self.index, node=config.node_name)
        self.events = EngineEvents(self.audit)  # the network's audit events (connections, associations)
        self.web_events = web_events.WebEvents(self.audit)  # the web side's (logins, workspace, admin)
        self.after_store: list[Callable[[StoreOutcome, InstanceFacts], None]] = []
        self.observers: list[Observer] = []  # metrics: associations, service latency (pacsnode.observe)
        self.regional_store = RegionalStore(self.index)
        self.regional = Regional.load(config, self.regional_store)
        self._audit_scope_overrides()
        self.desk = PhysicianDesk(self.regional, self.regional_store, self.audit)
        self.qc = QcDesk(self.index, self.storage, self.regional_store, self.audit, config.qc_rules_path,
                         auto_accept=config.qc.auto_accept)
        self.after_store.append(self._qc_on_store)
        # shared while this process may write (see new_temp_file): the home's serve.lock, and the
        # archive's when the index lives outside the home (several nodes, one archive: issue 16)
        self.home_lock: WriterLock = file_archive_lock(
            config.home, None if config.index.url else config.index_path,
            extra=[OthersMayWrite()] if config.index.url else None)
        self.rejections = RejectionDesk(self.regional_store, self.audit, self.qc)
        self.provenance = ProvenanceDesk(config, self.index, self.regional, self.regional_store, self.audit)
        self.qc.extra_checks.append(self.provenance.finding)

    def _audit_scope_overrides(self) -> None:
        """Audit every manual scope override of recognition.toml (``in_scope`` set against geography
        with ``scope_override_reason``) when it appears, changes or goes: an override widens or
        narrows where a mark is valid, so who changed it must be traceable (issue 12.3)."""
        region = self.regional.region
        if region is None:
            return
        overrides = {i.code: {"geo": i.geo, "in_scope": i.in_scope, "reason": i.scope_override}
                     for i in region.scope_overrides}
        detail = json.dumps(overrides, ensure_ascii=False, sort_keys=True)
        if (self.audit.last_detail("scope-override") or "{}") != detail:
            self.audit.record("scope-override", "set" if overrides else "cleared", detail=detail)

    @classmethod
    def open(cls, home: Path) -> "Node":
        return cls(load_config(home))

    def close(self) -> None:
        self.index.close()
        self.home_lock.release()

    # -- who is calling ------------------------------------------------------------------
    def identify(self, calling_aet: str, host: str = "", peer_certificate: bytes | None = None) -> Caller:
        """Who an association is: a registered peer when AE title, address and certificate agree, else nobody.

        Never the local admin, whatever the AE title (blank, NUL-padded, non-printable): see
        ``pacsnode.identity``. ``peer_certificate`` is the DER certificate a TLS peer showed.
        """
        problem = identity.calling_aet_problem(calling_aet)
        candidates = [] if problem else self.peers.all_by_aet(calling_aet.strip(" "))
        caller = identity.identify(candidates, calling_aet, host, peer_certificate)
        if self.observers:
            notify(self.observers, Event("association", "peer" if caller.peer else "nobody"))
        return caller

    def require_permission(self, caller: Caller, action: str) -> None:
        """Nobody may echo, and store when ``[store] accept_from = "any"``; peers per their flags."""
        if caller.is_local_admin:
            return
        peer = caller.peer
        if peer is None:
            if action == "echo" or (action == "store" and self.config.store.accept_from == "any"):
                return
            why = caller.refused or "not a registered peer"
            raise NotPermitted(f"calling AE {caller.aet!r} may not {action}: {why}")
        if action not in peer.permissions:
            raise NotPermitted(f"peer {peer.name!r} is not permitted to {action}")

    def new_temp_file(self) -> Path:
        """A temporary file on the storage filesystem (placing it later is a rename).

        Its name carries this process's pid (``storage.tempfiles``) so that ``check`` knows it
        may be held by an open association, and the process holds ``serve.lock`` shared from
        now on, so that an offline repair or a restore never runs while it may be storing.
        """
        path, fd = self.open_temp_file()
        os.close(fd)
        return path

    def open_temp_file(self) -> tuple[Path, int]:
        """``new_temp_file`` and its descriptor, open for writing (the receiver does not reopen it)."""
        self.home_lock.share()
        return tempfiles.create(self.config.temp_path)

    # -- storing -------------------------------------------------------------------------
    def provenance_of(self, caller: Caller, retrieved: bool = False) -> Provenance:
        """Who is delivering ``caller``'s instances, as recorded at ingest (see ProvenanceDesk.of)."""
        return self.provenance.of(caller, retrieved)

    def store_file(self, temp_path: Path, caller: Caller, expected_sop_class: str | None = None,
                   expected_sop_instance: str | None = None, received: ReceivedFile | None = None,
                   provenance: Provenance | None = None,
                   check: Callable[[InstanceFacts], None] | None = None) -> StoreOutcome:
        """Store a received file; ``temp_path`` is consumed (placed or removed) whatever happens.

        The order is fixed: validate and extract, place the file (fsync, rename), index in one
        transaction (with who delivered it: ``provenance``, by default built from ``caller``),
        undo the file on failure. Success is only returned after the commit. An IOCM rejection
        note is applied before Success too (again when it is sent twice: the retry of a note
        whose first application failed). ``check`` may refuse the instance on its facts (raise a
        PacsnodeError) before anything is placed: STOW-RS's study in the URL.
        """
        placed: str | None = None
        consumed = False  # place() took the temp file (StorageArea.place consumes it): no unlink to try
        started, size, status = time.perf_counter(), 0, "failed"
        provenance = provenance or self.provenance_of(caller)
        try:
            try:
                self.require_permission(caller, "store")
            except NotPermitted as exc:
                self._audit_caller(caller, "store", "refused", detail={"reason": str(exc)})
                status = "refused"
                raise
            facts = facts_from_file(temp_path, expected_sop_class, expected_sop_instance, received)
            if check is not None:
                check(facts)
            note = rejection_note(temp_path) if facts.sop_class_uid == KOS_SOP_CLASS else None
            policy = self.config.store.duplicates
            if policy.value == "keep-first" and self.index.has_instance(facts.sop_instance_uid):
                if note is not None:
                    self.rejections.apply(note, provenance, caller)
                status = StoreResult.DUPLICATE.value
                return StoreOutcome(StoreResult.DUPLICATE, facts.sop_instance_uid, facts.study_uid)
            size = received.size if received is not None else temp_path.stat().st_size
            used = self.quota.used() if self.storage.quota_bytes else 0
            self.storage.check_room(size, used)
            web = _web_metadata_at_ingest(temp_path) if self.config.web.enabled else None  # from the temp file
            try:
                stored = self.storage.place(temp_path, facts.sop_instance_uid, received)
            except OSError as exc:  # any backend: a full disk is Out of Resources, not an internal error
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise StorageFull(f"storage disk is full ({exc.strerror or exc})") from exc
                raise
            placed, consumed = stored.relative_path, True
            self.quota.placed(size)
            result, orphan = self.index.record_instance(facts, stored, caller.aet, policy, provenance,
                                                        web_metadata=web)
            placed = None  # the index owns it now
            if orphan:
                self.storage.remove(orphan)
            outcome = StoreOutcome(result, facts.sop_instance_uid, facts.study_uid)
            if note is not None:
                self.rejections.apply(note, provenance, caller)
            status = result.value
        except BaseException as exc:
            if status == "failed" and isinstance(exc, PacsnodeError):
                status = type(exc).__name__  # InvalidInstance, SopClassMismatch, StorageFull...
            if placed is not None:
                undo_place(self.index, self.storage, placed)  # never a file that a row names
            raise
        finally:
            if not consumed:
                temp_path.unlink(missing_ok=True)
            if self.observers:
                notify(self.observers, Event("store", status, time.perf_counter() - started,
                                             size if status in _STORED else 0))
        for hook in self.after_store:
            try:
                hook(outcome, facts)
            except Exception:  # a hook must never undo an acknowledged store
                LOGGER.exception("after-store hook failed")
        return outcome

    def _qc_on_store(self, outcome: StoreOutcome, _facts: InstanceFacts) -> None:
        """A new or replaced instance sends an accepted study back to pending."""
        if outcome.result is not StoreResult.DUPLICATE:
            self.qc.instance_arrived(outcome.study_uid)

    def import_paths(self, paths: Iterable[Path], progress: Callable[[Path], None] | None = None,
                     caller: Caller | None = None) -> ImportReport:
        """Import files and folders (recursive) from the local disk, copying each file in
        (``importing.import_paths``)."""
        return importing.import_paths(self, paths, progress, caller)

    # -- reading -------------------------------------------------------------------------
    def studies(self, patient_id: str | None = None) -> list[StudySummary]:
        return self.index.studies(patient_id=patient_id)

    def study(self, study_uid: str) -> tuple[StudySummary, list[dict[str, object]]]:
        """A study as the local admin sees it: every instance, hidden ones flagged with why."""
        found = self.index.studies(study_uids=[study_uid])
        if not found:
            raise NotFound(f"no study {study_uid} in this node")
        series = self.index.study_series(study_uid)
        hidden = self.regional_store.hidden_instances(study_uid)
        for item in series:
            for instance in item["instances"]:
                why = hidden.get(instance["sop_instance_uid"])
                instance["rejected"] = why or {}
        return found[0], series

    # -- query/retrieve ------------------------------------------------------------------
    def find(self, query: Query, caller: Caller, page_limit: int | None = None,
             page_offset: int = 0) -> Iterator[dict[str, Any]]:
        """C-FIND matches for ``caller``: one dict per matching entity (see index.matching.find).

        ``page_limit`` (QIDO-RS paging) returns at most that many + 1 matches in order instead
        of refusing a query with more than ``[query] max_results``, after skipping the first
        ``page_offset`` matches the caller may see (in SQL, not in Python).
        """
        started = time.perf_counter()
        with self.index.pinned():  # PostgreSQL: one connection for the match and its audit row
            return self._find(query, caller, page_limit, page_offset, started)

    def _find(self, query: Query, caller: Caller, page_limit: int | None, page_offset: int,
              started: float) -> Iterator[dict[str, Any]]:
        from pacsnode.index import matching

        try:
            self.require_permission(caller, "find")
            allowed, denied = self.regional.access(query, caller)
            matches = list(matching.find(self.index, query, allowed_study_uids=allowed,
                                         limit=self.config.query.max_results if page_limit is None else page_limit,
                                         truncate=page_limit is not None,
                                         offset=page_offset if page_limit is not None else 0,
                                         hide_rejected=not self.regional.is_local(caller)))
        except PacsnodeError as exc:
            self._audit_caller(caller, "find", "refused", detail={"keys": query_keys(query), "reason": str(exc)})
            self._observe("find", "refused", started)
            raise
        detail: dict[str, Any] = {"level": query.level.value, "keys": query_keys(query), "matches": len(matches)}
        if denied:
            detail["studies_withheld"] = denied  # access reason → count: why a peer saw less
        self._audit_caller(caller, "find", "answered", detail=detail)
        self._observe("find", "answered", started, withheld=denied)
        return iter(matches)

    def _observe(self, kind: str, status: str, started: float, withheld: dict[str, int] | None = None) -> None:
        if not self.observers:
            return
        notify(self.observers, Event(kind, status, time.perf_counter() - started))
        for reason, count in (withheld or {}).items():
            notify(self.observers, Event("withheld", str(reason), count=int(count)))

    def _audit_caller(self, caller: Caller, action: str, outcome: str, study_uid: str = "",
                      detail: dict[str, Any] | str = "") -> None:
        """Audit what a peer did (the CLI's own reads are not peer events)."""
        if caller.is_local_admin:
            return
        if caller.refused and isinstance(detail, dict):  # a registered AE title that did not check out
            detail = {**detail, "identity_refused": caller.refused}
        self.audit.record(action, outcome, peer_aet=caller.aet, peer_name=caller.peer.name if caller.peer else "",
                          study_uid=study_uid, detail=detail)

    def hr_values(self, study_uid: str, caller: Caller) -> dict[str, Any]:
        """The PACSNODE HR private block for one study as seen by ``caller``'s institution."""
        return self.hr_values_many([study_uid], caller).get(study_uid, _no_hr_values())

    def hr_values_many(self, study_uids: Iterable[str], caller: Caller) -> dict[str, dict[str, Any]]:
        """:meth:`hr_values` for every study of a C-FIND answer in one batch of index queries.

        A study without advice (no region, not in the index) gets empty values.
        """
        viewer = caller.peer.institution if caller.peer and caller.peer.institution else self.config.institution
        uids = list(study_uids)
        with self.index.pinned():  # PostgreSQL: every batch of study rows on one connection
            found = self.regional.advice_many(uids, viewer)
        out: dict[str, dict[str, Any]] = {}
        for uid in uids:
            if uid not in found:
                out[uid] = _no_hr_values()
                continue
            advice, row = found[uid]
            out[uid] = {"status": advice.status, "scope": advice.scope_label, "failed": list(advice.failed),
                        "valid_until": advice.valid_until.strftime("%Y%m%d") if advice.valid_until else "",
                        "item": advice.item_code, "producer": self.regional.producer_of(row)}
        return out

    def retrieve(self, query: Query, caller: Caller, action: str,
                 destination: Peer | None = None, audit_started: bool = True) -> list[InstanceLocation]:
        """Instances a C-MOVE/C-GET identifier names that ``caller`` (and ``destination``) may have.

        Hidden equals absent (THREATS.md rule 4): studies outside the caller's access are left
        out exactly like studies this node does not hold, and a retrieve left with nothing is
        refused with one generic answer (:class:`NothingToRetrieve`, 0x0124) whichever the
        cause; only the audit trail says which. For a C-MOVE every study is then decided for
        ``destination`` too, as if it had asked with this request's patient context: one it
        may not receive refuses the whole move (:class:`DestinationNotAuthorized`, 0x0124)
        before anything is sent. ``audit_started=False``: DICOMweb viewer reads (``read_audit``).
        """
        from pacsnode.index import matching

        started = time.perf_counter()
        detail: dict[str, Any] = {"keys": query_keys(query)}
        if destination is not None:
            detail["destination"] = destination.aet
            detail["destination_institution"] = destination.institution
        try:
            self.require_permission(caller, action)
            allowed, withheld = self.regional.access(query, caller)
            local = self.regional.is_local(caller) and (
                destination is None or self.regional.is_local(Caller.registered(destination, destination.host)))
            locations = self.openable(matching.match_instances(self.index, query, None, allowed_study_uids=allowed,
                                                               hide_rejected=not local))
            if withheld and self.observers:
                for why, count in withheld.items():
                    notify(self.observers, Event("withheld", why, count=count))
            if not locations:
                if withheld:
                    detail["studies_withheld"] = withheld
                reason = ", ".join(sorted(withheld)) if withheld else "no_match"
                raise NothingToRetrieve(f"{reason}: nothing {caller.aet} may retrieve matches")
            if destination is not None:
                refused = self.regional.destination_refusals(query, destination, {loc.study_uid for loc in locations})
                if refused:
                    detail["destination_refused"] = {uid: d.reason for uid, d in refused.items()}
                    reason = next(iter(refused.values())).reason
                    raise DestinationNotAuthorized(f"{reason}: destination {destination.aet} may not receive it")
        except PacsnodeError as exc:
            detail["reason"] = exc.audit_reason if isinstance(exc, NothingToRetrieve) else str(exc)
            study_uid = query.value("StudyInstanceUID")[:64]
            if isinstance(exc, DestinationNotAuthorized):
                study_uid = next(iter(detail["destination_refused"]))
            self._audit_caller(caller, action, "refused", study_uid=study_uid, detail=detail)
            self._observe(action, "refused", started)
            raise
        if action in ("get", "move") and audit_started:  # the DIMSE retrieves: their sub-operations start now
            sent: dict[str, Any] = {"destination": destination.aet} if destination is not None else {}
            self._audit_caller(caller, action, "started", study_uid=locations[0].study_uid,
                               detail={**sent, "instances": len(locations)})
        self._observe(action, "answered", started)
        return locations

    def commitment(self, refs: list[tuple[str, str]], caller: Caller) -> list[tuple[str, str, int]]:
        """Storage commitment (PS3.4 J): (SOP class, SOP instance, failure reason; 0 = committed)
        (``storage_commitment.commitment``)."""
        return storage_commitment.commitment(self, refs, caller)

    def openable(self, locations: list[InstanceLocation]) -> list[InstanceLocation]:
        """Locations of stored instances (relative paths) that open through the storage area."""
        return [replace(loc, opener=partial(self.storage.open, loc.path)) for loc in locations]

    def study_to_send(self, study_uid: str) -> list[InstanceLocation]:
        """Every instance of a stored study, openable (``send --study``)."""
        locations = self.index.locations(study_uid)
        if not locations:
            raise NotFound(f"no study {study_uid} in this node")
        return self.openable(locations)

    def files_to_send(self, study_uid: str | None, paths: list[Path]) -> list[tuple[str, str, str]]:
        """(path, SOP class, transfer syntax) of DICOM files on disk (a stored study: :meth:`study_to_send`)."""
        if study_uid:
            raise NotFound("a stored study is sent through study_to_send")
        return importing.files_on_disk(paths)

    def move_destination(self, aet: str, caller: Caller | None = None) -> Peer:
        """The registered peer a C-MOVE sends to (unknown → UnknownMoveDestination, 0xA801).

        With ``caller``: first whether it may move at all; a refusal is audited here.
        """
        try:
            if caller is not None:
                self.require_permission(caller, "move")
            peer = self.peers.by_aet(aet)
            if peer is None:
                raise UnknownMoveDestination(f"move destination {aet!r} is not a registered peer")
        except PacsnodeError as exc:
            if caller is not None:
                self._audit_caller(caller, "move", "refused", detail={"destination": aet[:16], "reason": str(exc)})
            raise
        return peer

    def visible_study_uids(self, query: Query, caller: Caller) -> set[str] | None:
        """Studies ``caller`` may see (None = all): the recognition rules' access decision per study."""
        return self.regional.visible_study_uids(query, caller)

    # -- peers ---------------------------------------------------------------------------
    def add_peer(self, peer: Peer, replace: bool = False) -> None:
        """Register a peer once what a typo would turn into a hole is checked: AE title, host, port, institution
        (known to recognition.toml or this node's own); AE titles unique. Leading/trailing spaces are not part
        of an AE title (PS3.5 6.2): " CTY_PACS" was stored as a second peer next to CTY_PACS, passing the
        uniqueness check (``peer_admin.add_peer``)."""
        peer_admin.add_peer(self, peer, replace)

    def known_institutions(self) -> list[str]:
        """Institution codes this node can decide for: recognition.toml's, and its own
        (``peer_admin.known_institutions``)."""
        return peer_admin.known_institutions(self)

    def own_institution_problem(self) -> str:
        """Why ``[node] institution`` is not one recognition.toml knows ("" when it is, or no rules)
        (``peer_admin.own_institution_problem``)."""
        return peer_admin.own_institution_problem(self)

    def require_known_institution(self, code: str, where: str) -> None:
        """Refuse an institution code the rules do not know (empty = none, allowed)
        (``peer_admin.require_known_institution``)."""
        peer_admin.require_known_institution(self, code, where)

    def resolve_peer(self, spec: str) -> Peer:
        """A registered peer name, or an ad-hoc ``AET@HOST:PORT`` (``peer_admin.resolve_peer``)."""
        return peer_admin.resolve_peer(self, spec)

    # -- consistency ---------------------------------------------------------------------
    def check(self, repair: bool = False, verify_checksums: bool = True) -> CheckReport:
        """Compare the index with the files (see ``maintenance.check``: safe next to a running server)."""
        return maintenance.check(self, repair=repair, verify_checksums=verify_checksums,
                                 grace_seconds=self.REPAIR_GRACE_SECONDS)

    def clean_temp(self) -> int:
        """Remove leftovers of interrupted, unacknowledged receives (called when serving starts).

        Files of live processes (an ``import`` running next to the starting server) are kept.
        """
        return maintenance.clean_temp(self.config.temp_path)


