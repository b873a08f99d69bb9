"""Domain dataclasses shared by every layer (stdlib only).

These are the facts pacsnode passes between the DICOM adapters, the index, the storage
area and the rules. They carry no behaviour beyond small conveniences, so that any layer
can build them in a test without the others.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import BinaryIO, Callable


class DuplicatePolicy(str, enum.Enum):
    """What a repeated SOP Instance UID does."""

    KEEP_FIRST = "keep-first"
    REPLACE = "replace"


class StoreResult(str, enum.Enum):
    """How a C-STORE or an import ended for one instance."""

    STORED = "stored"
    DUPLICATE = "duplicate"  # kept the first copy, the new one was dropped
    REPLACED = "replaced"  # the new copy replaced the old file and row


class Level(str, enum.Enum):
    """Query/Retrieve levels of PS3.4 C.3, top to bottom."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"

    @property
    def depth(self) -> int:
        return list(Level).index(self)


class InformationModel(str, enum.Enum):
    """The Q/R information model a query uses."""

    PATIENT_ROOT = "patient"
    STUDY_ROOT = "study"


@dataclass(frozen=True)
class CodedEntry:
    """One item of a code sequence (Procedure Code, Institution Code ...)."""

    value: str
    scheme: str = ""
    meaning: str = ""


@dataclass(frozen=True)
class OtherPatientId:
    """One item of Other Patient IDs Sequence: an ID and its issuer (e.g. a resident ID)."""

    patient_id: str
    issuer: str = ""
    type_of_id: str = ""


@dataclass(frozen=True)
class InstanceFacts:
    """Everything the index records about one instance, extracted from its header.

    Text is already decoded with the dataset's Specific Character Set. Dates are DICOM
    strings (``YYYYMMDD``), times normalised ``HHMMSS.ffffff`` or empty.
    """

    sop_instance_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax: str
    patient_id: str = ""
    issuer_of_patient_id: str = ""
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    other_patient_ids: tuple[OtherPatientId, ...] = ()
    study_date: str = ""
    study_time: str = ""
    accession_number: str = ""
    study_id: str = ""
    study_description: str = ""
    referring_physician: str = ""
    institution_name: str = ""
    institution_codes: tuple[CodedEntry, ...] = ()
    procedure_codes: tuple[CodedEntry, ...] = ()
    modality: str = ""
    body_part: str = ""
    contrast_agent: str = ""
    series_number: int | None = None
    series_description: str = ""
    series_date: str = ""
    series_time: str = ""
    instance_number: int | None = None
    number_of_frames: int | None = None
    lossy: bool = False
    specific_character_set: str = ""
    device_serial: str = ""
    deidentified: bool = False  # Patient Identity Removed = YES or a De-identification Method
    station_name: str = ""


@dataclass(frozen=True)
class StoredFile:
    """Where an instance file lives and what it was when stored."""

    relative_path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ReceivedFile:
    """What a receiver already knows of the file it wrote: digest, size, whether it fsync'ed it.

    Lets the storage area skip reading the file back (the receive path hashed the bytes as
    they arrived) on the hottest path pacsnode has.
    """

    sha256: str
    size: int
    synced: bool = False
    #: the receiver's descriptor of the file, open until ``place`` returns (-1: none): the
    #: storage area syncs the data through it instead of opening the file again
    fd: int = -1
    #: the file's first bytes (up to ``dicom.header.SMALL_FILE``: a small instance whole), exactly
    #: as written: the facts are read from them instead of the file (empty: read the file)
    head: bytes = b""


@dataclass(frozen=True)
class StoreOutcome:
    """What storing one instance did."""

    result: StoreResult
    sop_instance_uid: str
    study_uid: str


# What a registered peer may be permitted to do (``peer add --permissions``), in display order.
ALL_PERMISSIONS = ("echo", "store", "find", "move", "get")


@dataclass(frozen=True)
class Peer:
    """A registered DICOM peer: another node, a modality, a workstation.

    ``permissions`` is a subset of {"echo", "store", "find", "move", "get"}. ``check_host``
    (on unless registered with ``--any-host``) means the AE title is only this peer when the
    association comes from ``host``. ``cert_fingerprint`` (SHA-256 of the DER certificate,
    lowercase hex) and ``cert_subject`` (the certificate subject's CN) bind the AE title to the
    TLS certificate the peer must present: any other certificate, or none, makes it nobody.
    """

    name: str
    aet: str
    host: str
    port: int
    institution: str = ""
    permissions: frozenset[str] = frozenset({"echo", "store", "find", "move", "get"})
    check_host: bool = True
    tls: bool = False
    cert_fingerprint: str = ""
    cert_subject: str = ""

    @property
    def cert_bound(self) -> bool:
        return bool(self.cert_fingerprint or self.cert_subject)


class CallerKind(str, enum.Enum):
    """What kind of party a Caller is."""

    LOCAL_ADMIN = "local-admin"  # the CLI on the node's machine: no association can be this
    PEER = "peer"  # a registered peer whose AE title, host and certificate checked out
    TOKEN = "token"  # an HTTP client that showed a valid, unrevoked bearer token (DICOMweb)
    WEB_USER = "web-user"  # a person logged in through the web form (session cookie)
    NOBODY = "nobody"  # anything else: a blank, padded, unknown or spoofed AE title


_BUILT_HERE = object()  # only Caller's named constructors hold this


@dataclass(frozen=True)
class Caller:
    """Who is asking: a typed value, never a string a peer can send.

    Built only by the named constructors (``local_admin``, ``registered``, ``nobody``), so that
    no value arriving from the network (an empty or blank AE title) can turn into the admin.
    ``aet`` is the calling AE title as claimed (for the audit trail); it grants nothing.
    ``refused`` says why an AE title that names a registered peer was still nobody.
    """

    kind: CallerKind
    aet: str = ""
    host: str = ""
    peer: Peer | None = None
    refused: str = ""
    _token: object = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._token is not _BUILT_HERE:
            raise TypeError("build a Caller with Caller.local_admin(), Caller.registered() or Caller.nobody()")
        if (self.kind in (CallerKind.PEER, CallerKind.TOKEN, CallerKind.WEB_USER)) != (self.peer is not None):
            raise TypeError("a peer or token Caller carries its Peer, and only those do")

    @classmethod
    def local_admin(cls) -> "Caller":
        """The CLI of this node's own machine (whoever can read the home folder)."""
        return cls(CallerKind.LOCAL_ADMIN, _token=_BUILT_HERE)

    @classmethod
    def registered(cls, peer: Peer, host: str = "") -> "Caller":
        """A registered peer, once its AE title, host and certificate were checked."""
        return cls(CallerKind.PEER, aet=peer.aet, host=host, peer=peer, _token=_BUILT_HERE)

    @classmethod
    def nobody(cls, aet: str = "", host: str = "", refused: str = "") -> "Caller":
        """Anybody else: may echo, and store only where ``accept_from = "any"``."""
        return cls(CallerKind.NOBODY, aet=aet, host=host, refused=refused, _token=_BUILT_HERE)

    @classmethod
    def web_token(cls, token_name: str, institution: str, permissions: frozenset[str],
                  peer: Peer | None = None, host: str = "") -> "Caller":
        """An HTTP client whose bearer token checked out (``pacsnode token create``).

        It is decided exactly like a registered peer of ``institution`` (the one door of
        ``Regional``): the token's Peer is the registered peer it was issued for (``--peer``),
        or a peer-shaped stand-in named ``token:NAME`` that has no AE title and no address.
        """
        stand_in = peer or Peer(name=f"token:{token_name}", aet="", host="", port=0,
                                institution=institution, permissions=permissions, check_host=False)
        if peer is not None:
            stand_in = Peer(name=peer.name, aet=peer.aet, host=peer.host, port=peer.port, institution=institution,
                            permissions=permissions & peer.permissions, check_host=peer.check_host, tls=peer.tls)
        return cls(CallerKind.TOKEN, aet=stand_in.aet, host=host, peer=stand_in, _token=_BUILT_HERE)

    @classmethod
    def web_user(cls, user_name: str, institution: str, role: str, permissions: frozenset[str],
                 host: str = "") -> "Caller":
        """A person logged in through the web form; decided like a peer of ``institution``.

        ``role`` (admin, physician, viewer) is recorded for the audit trail and decides the
        permissions; a web "admin" is never the local admin, which only the CLI can be.
        """
        stand_in = Peer(name=f"user:{user_name}", aet="", host="", port=0, institution=institution,
                        permissions=permissions, check_host=False)
        return cls(CallerKind.WEB_USER, aet="", host=host, peer=stand_in, refused="", _token=_BUILT_HERE)

    @property
    def is_token(self) -> bool:
        return self.kind is CallerKind.TOKEN

    @property
    def is_local_admin(self) -> bool:
        return self.kind is CallerKind.LOCAL_ADMIN

    @property
    def is_peer(self) -> bool:
        return self.kind is CallerKind.PEER


@dataclass(frozen=True)
class QueryKey:
    """One attribute of a C-FIND identifier.

    ``value`` is the matching value as text (already decoded); None or "" is universal
    matching. ``items`` holds the keys of a sequence's single item for sequence matching.
    """

    keyword: str
    vr: str
    value: str | None = None
    items: tuple["QueryKey", ...] = ()


@dataclass(frozen=True)
class Query:
    """A hierarchical query: the level, the model, the matching keys and the return keys.

    ``keys`` are all keys of the identifier (matching and return). ``combined_datetime`` is
    set when the SCU negotiated combined date-time range matching (PS3.4 C.3.4).
    """

    level: Level
    model: InformationModel
    keys: tuple[QueryKey, ...]
    combined_datetime: bool = False
    case_insensitive_pn: bool = False

    def key(self, keyword: str) -> QueryKey | None:
        for key in self.keys:
            if key.keyword == keyword:
                return key
        return None

    def value(self, keyword: str) -> str:
        key = self.key(keyword)
        return (key.value or "") if key else ""


@dataclass(frozen=True)
class InstanceLocation:
    """What a retrieve needs to send one instance."""

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax: str
    path: str  # the storage area's relative path (with ``opener``), or a file's path (``send PATH``)
    study_uid: str = ""
    series_uid: str = ""
    #: the file's size as indexed (None: not known, ``send PATH``); a stored file of another size is not sent
    size: int | None = None
    #: how to open the stored file (``StorageArea.open`` of ``path``); None: ``open(path)``
    opener: "Callable[[], BinaryIO] | None" = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class StudySummary:
    """One study as the ``studies`` listing shows it."""

    study_uid: str
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str
    study_date: str
    accession_number: str
    modalities: list[str]
    series_count: int
    instance_count: int
    institution_name: str
    study_description: str = ""
    institution_code: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    study_time: str = ""
    received_at: str = ""


@dataclass
class CheckReport:
    """What ``pacsnode check`` found (and repaired)."""

    orphan_files: list[str] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)
    changed_files: list[str] = field(default_factory=list)
    temp_files: list[str] = field(default_factory=list)
    repaired: bool = False
    in_flight: list[str] = field(default_factory=list)  # unindexed but young: a store may be committing it
    temp_in_use: int = 0  # temporary files of live processes (open associations): not a problem
    #: unindexed files while a dead process's unclean-stop marker waits: rows a crash may have lost
    #: (acknowledged instances among them); the recovery indexes them again, nothing may delete them
    awaiting_recovery: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.orphan_files or self.missing_files or self.changed_files or self.temp_files
                    or self.awaiting_recovery)


@dataclass(frozen=True)
class AuditEvent:
    """One append-only audit record."""

    action: str
    outcome: str
    peer_aet: str = ""
    peer_name: str = ""
    study_uid: str = ""
    detail: str = ""
    at: datetime | None = None
    node: str = ""  # which node of the archive served ("" = written before nodes were named)


class DeliveryKind(str, enum.Enum):
    """How an instance reached this node: a fact recorded at ingest (DESIGN.md "Who is asking")."""

    PEER = "peer"  # a registered peer of another institution stored it
    OWN = "own"  # a registered peer of this node's own institution (its modality, workstation)
    RETRIEVED = "retrieved"  # this node fetched it from a peer (C-GET; a C-MOVE arrives as PEER/OWN)
    IMPORT = "import"  # the local admin imported it from disk
    UNREGISTERED = "unregistered"  # an AE that is no registered peer (accept_from = "any")
    UNKNOWN = "unknown"  # stored before provenance was recorded


@dataclass(frozen=True)
class Provenance:
    """Who delivered an instance, as opposed to what its header claims about its producer.

    ``institution`` is the delivering peer's registered institution ("" for import and
    unregistered AEs); ``aet`` and ``peer`` name the association partner for the record.
    """

    kind: DeliveryKind
    aet: str = ""
    peer: str = ""
    institution: str = ""
