"""The exception hierarchy of pacsnode.

Everything below the adapters raises one of these; the DIMSE layer maps each class to a
status code (``pacsnode.dimse.statuses``) and the CLI to a one-line error. Keeping the
meaning here and the wire codes there means the domain never speaks pynetdicom.
"""

from __future__ import annotations


class PacsnodeError(Exception):
    """Base of every error pacsnode raises on purpose."""


class ConfigError(PacsnodeError):
    """A configuration file is missing, unreadable or has a bad value (message names key and fix)."""


class HomeError(PacsnodeError):
    """The node home folder is missing, or exists when it should not."""


class InvalidInstance(PacsnodeError):
    """A dataset cannot be stored: not DICOM, missing or invalid UIDs, inconsistent with its context."""


class SopClassMismatch(InvalidInstance):
    """The dataset's SOP Class differs from the presentation context it arrived on."""


class StorageFull(PacsnodeError):
    """No room left on the storage area or the quota is reached (DICOM: Out of Resources)."""


class StorageUnavailable(PacsnodeError):
    """The storage area cannot be reached or refused a write (an object store down, a timeout):
    DICOM Out of Resources, so the sender retries later; never Success."""


class IndexError_(PacsnodeError):
    """The index could not record or read something (named with a trailing underscore to
    leave the builtin ``IndexError`` alone)."""


class NotPermitted(PacsnodeError):
    """The calling peer may not do this (unknown AE, missing permission, access denied)."""


class PeerNotFound(PacsnodeError):
    """A peer name or AE title is not registered."""


class UnknownMoveDestination(PeerNotFound):
    """A C-MOVE names a destination AE title that is not a registered peer (DICOM 0xA801)."""


class InvalidQuery(PacsnodeError):
    """A C-FIND/C-MOVE/C-GET identifier breaks the rules of PS3.4 C.4 (level, unique keys)."""


class MissingPatientContext(NotPermitted):
    """A peer query does not name a patient, and the region requires it."""


class TooManyResults(PacsnodeError):
    """A query matched more than the configured result limit."""


class NotFound(PacsnodeError):
    """A study, series or instance asked for is not in this node."""


class PeerError(PacsnodeError):
    """A remote peer refused, aborted or could not be reached."""


class RecognitionError(PacsnodeError):
    """A physician decision or share request breaks the rules (e.g. decline without consent).

    ``rule`` names the broken rule in a stable word (``decline_needs_reason``) so that a page can
    say it in the user's language; the message stays the English sentence the CLI prints.
    """

    def __init__(self, message: str, rule: str = "") -> None:
        super().__init__(message)
        self.rule = rule


class NothingToRetrieve(NotPermitted):
    """A C-MOVE/C-GET matches no study the caller may have (DICOM 0x0124).

    One answer for "outside access" and "not in this node" (hidden equals absent, THREATS.md
    rule 4): the wire gets this generic message, the audit trail gets the real reason.
    """

    MESSAGE = "no study matches that this caller may retrieve"

    def __init__(self, audit_reason: str = "") -> None:
        super().__init__(self.MESSAGE)
        self.audit_reason = audit_reason or "no_match"


class DestinationNotAuthorized(NotPermitted):
    """A C-MOVE destination may not receive a study the caller may see (DICOM 0x0124): nothing is sent."""
