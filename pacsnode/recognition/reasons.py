"""Reason codes for declining an external result, and their human aliases.

N1-N6 are the six cases of the national Measures (2022); P1-P4 and L1 are provincial
extensions; T1, Q1, B1 and X1 are pacsnode's own (RECOGNITION.md). Codes are stable: reports
count declines by them, so a meaning may be reworded but a code never reused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from pacsnode.errors import RecognitionError

REASON_CODES: Mapping[str, str] = MappingProxyType(
    {
        "N1": "Condition changed, or result inconsistent with clinical picture",
        "N2": "Fast-changing result",
        "N3": "Major intervention pending (surgery, transfusion)",
        "N4": "Emergency or rescue",
        "N5": "Forensic, disability or retirement appraisal",
        "N6": "Other clinical need",
        "P1": "Patient or family request",
        "P2": "Lab failed EQA",
        "P3": "Too old to be informative",
        "P4": "Physician deems necessary",
        "L1": "Unforeseeable other",
        "T1": "Outside validity window",
        "Q1": "Image quality insufficient",
        "B1": "Body part or item mismatch",
        "X1": "Images or report unavailable",
    }
)

#: Words a physician or a form may send instead of a code (compared case-insensitively,
#: with "_" and " " read as "-").
REASON_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "condition-changed": "N1",
        "fast-changing": "N2",
        "intervention-pending": "N3",
        "emergency": "N4",
        "appraisal": "N5",
        "other": "N6",
        "patient-request": "P1",
        "eqa-failed": "P2",
        "too-old": "P3",
        "physician-judgement": "P4",
        "unforeseeable": "L1",
        "outdated": "T1",
        "poor-quality": "Q1",
        "item-mismatch": "B1",
        "unavailable": "X1",
    }
)

EMERGENCY = "N4"


def normalise_reason(code: str, reason_codes: Mapping[str, str] = REASON_CODES) -> str:
    """The stable code for ``code`` ("n4", "emergency", "Emergency " -> "N4").

    ``reason_codes`` is the region's list (national codes plus local additions). Raises
    :class:`RecognitionError` naming the valid codes when ``code`` is unknown.
    """
    text = code.strip() if isinstance(code, str) else ""
    if text.upper() in reason_codes:
        return text.upper()
    alias = REASON_ALIASES.get("-".join(text.replace("_", " ").replace("-", " ").split()).casefold())
    if alias is not None and alias in reason_codes:
        return alias
    raise RecognitionError(
        f"reason {code!r} is not a reason code; use one of {', '.join(reason_codes)} "
        f"or {', '.join(REASON_ALIASES)}", "reason_unknown"
    )


def normalise_reasons(codes: Iterable[str], reason_codes: Mapping[str, str] = REASON_CODES) -> tuple[str, ...]:
    """Stable codes for ``codes``, in the order given, each once (what the record stores)."""
    out: list[str] = []
    for code in codes:
        stable = normalise_reason(code, reason_codes)
        if stable not in out:
            out.append(stable)
    return tuple(out)
