"""One mapping from domain exceptions to DIMSE statuses (PS3.4 Annex B/C, PS3.7 Annex C).

Handlers never pick a number themselves: they ask ``status_for`` and attach the exception's
message as the Error Comment (truncated to the 64 characters LO allows).
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from pacsnode import errors

SUCCESS = 0x0000
PENDING = 0xFF00
PENDING_WARNING = 0xFF01  # C-FIND: pending, some optional keys not supported
CANCEL = 0xFE00
WARNING_SUBOPS = 0xB000  # C-MOVE/C-GET: some sub-operations failed
REFUSED_NOT_AUTHORIZED = 0x0124
REFUSED_OUT_OF_RESOURCES = 0xA700
STORE_OUT_OF_RESOURCES = 0xA700
STORE_DATASET_MISMATCH = 0xA900
STORE_CANNOT_UNDERSTAND = 0xC000
QR_OUT_OF_RESOURCES_MATCHES = 0xA701
QR_OUT_OF_RESOURCES_SUBOPS = 0xA702
QR_MOVE_DESTINATION_UNKNOWN = 0xA801
QR_IDENTIFIER_MISMATCH = 0xA900
QR_UNABLE_TO_PROCESS = 0xC000
QR_FAILED_SUBOPS_ALL = 0xA702
PROCESSING_FAILURE = 0x0110

# Most specific class first: the first isinstance match wins.
_STORE: list[tuple[type[BaseException], int]] = [
    (errors.StorageFull, STORE_OUT_OF_RESOURCES),
    (errors.StorageUnavailable, STORE_OUT_OF_RESOURCES),
    (errors.IndexError_, STORE_OUT_OF_RESOURCES),  # index busy or unreachable (PostgreSQL down): retry later
    (errors.SopClassMismatch, STORE_DATASET_MISMATCH),
    (errors.InvalidInstance, STORE_CANNOT_UNDERSTAND),
    (errors.NotPermitted, REFUSED_NOT_AUTHORIZED),
]
_QUERY: list[tuple[type[BaseException], int]] = [
    (errors.UnknownMoveDestination, QR_MOVE_DESTINATION_UNKNOWN),
    (errors.TooManyResults, QR_OUT_OF_RESOURCES_MATCHES),
    (errors.InvalidQuery, QR_IDENTIFIER_MISMATCH),
    (errors.DestinationNotAuthorized, REFUSED_NOT_AUTHORIZED),  # the Error Comment names the destination
    (errors.NotPermitted, REFUSED_NOT_AUTHORIZED),
    (errors.NotFound, QR_UNABLE_TO_PROCESS),
    (errors.StorageFull, REFUSED_OUT_OF_RESOURCES),
    (errors.StorageUnavailable, REFUSED_OUT_OF_RESOURCES),
    (errors.IndexError_, REFUSED_OUT_OF_RESOURCES),
]


def _lookup(table: list[tuple[type[BaseException], int]], exc: BaseException) -> int:
    for kind, status in table:
        if isinstance(exc, kind):
            return status
    return PROCESSING_FAILURE


def store_status(exc: BaseException) -> int:
    return _lookup(_STORE, exc)


def query_status(exc: BaseException) -> int:
    return _lookup(_QUERY, exc)


def status_dataset(status: int, comment: str = "") -> Dataset:
    """A status with an Error Comment (LO: at most 64 characters, no backslash)."""
    ds = Dataset()
    ds.Status = status
    if comment:
        ds.ErrorComment = comment.replace("\\", "/").encode("ascii", "replace").decode()[:64]
    return ds
