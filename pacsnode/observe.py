"""What the service layer tells observers (metrics) about the work it does, without knowing them.

Why here and not in ``pacsnode/dimse``: every way in (DIMSE, DICOMweb, import) goes through
``Node``, so one hook per service counts them all, and the protocol engines stay free of
monitoring code. An observer must be cheap and must never fail the operation it watches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """One finished piece of work.

    ``kind``: association, store, find, move, get or withheld (studies the access rules kept
    from a caller; ``status`` is the rule's reason, ``count`` how many). ``status`` for the
    services: a store result (stored, duplicate, replaced), ``answered``, or ``refused`` /
    ``failed``. ``size``: bytes stored.
    """

    kind: str
    status: str
    seconds: float = 0.0
    size: int = 0
    count: int = 1


Observer = Callable[[Event], None]


def notify(observers: list[Observer], event: Event) -> None:
    for observer in observers:
        try:
            observer(event)
        except Exception:  # watching must never break the work watched
            LOGGER.exception("observer failed on %s", event.kind)
