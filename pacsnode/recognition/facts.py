"""The facts the rules read: one study, one query's patient context, one consultation share.

The service layer builds these from the index (and the C-FIND identifier); the rules never
look anything up themselves, so every decision is a pure function of what is passed in.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from datetime import date, datetime

from pacsnode.model import OtherPatientId

#: An identifier with its issuer: an ``(id, issuer)`` pair, or a :class:`OtherPatientId`
#: straight from :class:`pacsnode.model.InstanceFacts`.
PatientIdentifier = tuple[str, str] | OtherPatientId

QC_STATUSES: tuple[str, ...] = ("pending", "accepted", "rejected", "needs-fix", "")

_WILDCARDS = ("*", "?")


@dataclass(frozen=True)
class StudyFacts:
    """What the rules need to know about one study.

    ``producer`` is the producing institution's registry code ("" when it could not be
    resolved; see :func:`pacsnode.recognition.catalog.resolve_institution`). ``qc_status`` is
    one of :data:`QC_STATUSES` ("" = unknown). ``restricted`` is a patient sharing restriction.
    ``other_patient_ids`` are (id, issuer) pairs from Other Patient IDs Sequence, e.g. the
    resident ID with issuer ``CN-RESIDENT-ID``.

    ``image_modalities`` are the modalities the study holds *images* of (not SR, PDF, KOS or
    presentation states): RECOGNITION.md, "for imaging, the images are what is recognised".
    None means the caller did not say, and ``modalities`` are taken as image modalities (pure
    rule tables); the node always says. ``image_body_parts`` likewise (None: ``body_parts``).
    ``deidentified``: Patient Identity Removed = YES or a De-identification Method on any instance.
    """

    study_uid: str
    _: KW_ONLY  # every other fact by name: positional dates and tuples are easy to swap
    study_date: date | None = None
    modalities: tuple[str, ...] = ()
    body_parts: tuple[str, ...] = ()
    procedure_codes: tuple[str, ...] = ()
    contrast: bool = False
    producer: str = ""
    qc_status: str = ""
    lossy: bool = False
    restricted: bool = False
    patient_id: str = ""
    issuer_of_patient_id: str = ""
    other_patient_ids: tuple[PatientIdentifier, ...] = ()
    deidentified: bool = False
    image_modalities: tuple[str, ...] | None = None
    image_body_parts: tuple[str, ...] | None = None

    #: Does who delivered the study vouch for ``producer``? (recognition.provenance); the
    #: explanation says who delivered it. Default True so table tests need not say.
    producer_vouched: bool = True
    provenance: str = ""

    @property
    def images_of(self) -> tuple[str, ...]:
        """The modalities the study holds images of (upper-case)."""
        found = self.modalities if self.image_modalities is None else self.image_modalities
        return tuple(m.strip().upper() for m in found if m and m.strip())

    @property
    def image_parts(self) -> tuple[str, ...]:
        """The body parts of the study's images (upper-case)."""
        found = self.body_parts if self.image_body_parts is None else self.image_body_parts
        return tuple(p.strip().upper() for p in found if p and p.strip())

    def patient_identifiers(self) -> frozenset[tuple[str, str]]:
        """Every issuer-qualified identifier of the study's patient (local and other)."""
        return qualified_ids(self.patient_id, self.issuer_of_patient_id, self.other_patient_ids)


@dataclass(frozen=True)
class QueryContext:
    """The patient a query names: Patient ID + Issuer, and/or (id, issuer) pairs such as a resident ID.

    An empty context names nobody. An ID without its issuer, or with a wildcard, names nobody
    either: a bare local ID is not unique across institutions and a wildcard is browsing.
    """

    patient_id: str = ""
    issuer_of_patient_id: str = ""
    other_patient_ids: tuple[PatientIdentifier, ...] = ()

    def patient_identifiers(self) -> frozenset[tuple[str, str]]:
        """The issuer-qualified identifiers the query names (wildcards dropped)."""
        return frozenset(
            pair for pair in qualified_ids(self.patient_id, self.issuer_of_patient_id, self.other_patient_ids)
            if not any(w in pair[0] or w in pair[1] for w in _WILDCARDS)
        )


@dataclass(frozen=True)
class ShareGrant:
    """A consultation share: ``institution`` may read ``study_uid`` from ``starts_at`` until ``expires_at``.

    Open ends are unbounded; ``expires_at`` is exclusive. Compare with a ``now`` of the same
    kind (both naive or both aware).
    """

    study_uid: str
    institution: str
    starts_at: datetime | None = None
    expires_at: datetime | None = None
    revoked: bool = False

    def active_at(self, now: datetime) -> bool:
        """True when the share is in force at ``now``."""
        if self.revoked:
            return False
        started = self.starts_at is None or self.starts_at <= now
        return started and (self.expires_at is None or now < self.expires_at)


def qualified_ids(
    patient_id: str, issuer: str, others: tuple[PatientIdentifier, ...]
) -> frozenset[tuple[str, str]]:
    """(id, issuer) pairs, trimmed, keeping only those with both parts present."""
    pairs = [(patient_id, issuer)]
    pairs += [(o.patient_id, o.issuer) if isinstance(o, OtherPatientId) else (o[0], o[1]) for o in others]
    out: set[tuple[str, str]] = set()
    for pid, iss in pairs:
        pid, iss = (pid or "").strip(), (iss or "").strip()
        if pid and iss:
            out.add((pid, iss))
    return frozenset(out)
