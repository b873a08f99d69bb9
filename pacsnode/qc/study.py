"""What the QC checks look at: instance headers grouped into one study and its series.

The checks read headers only (``stop_before_pixels``) so checking a 2,000-image CT costs a
header read per file; only the pixel checks open one middle image per series fully. This
module holds the shared vocabulary (instances, outcomes, series views) and small header
helpers, so each check module stays a list of pure functions over a :class:`StudyView`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence

from pacsnode.dicom.sop_classes import (  # noqa: F401  (re-exported for qc modules)
    ENCAPSULATED_PREFIX,
    NON_IMAGE_PREFIXES,
    RT_IMAGE,
    SR_PREFIX,
    is_image_sop_class,
)
from pacsnode.errors import InvalidInstance

OutcomeSeverity = Literal["fail", "warn"]

# SR_PREFIX, ENCAPSULATED_PREFIX, NON_IMAGE_PREFIXES and RT_IMAGE live in dicom.sop_classes: the
# recognition rules ask the same list which modalities a study has images of.


def outcome_severity(value: str) -> OutcomeSeverity:
    """The outcome severity for a rule severity ("fail" stays, anything else warns)."""
    return "fail" if value == "fail" else "warn"


@dataclass(frozen=True)
class QcInstance:
    """One instance to check: where it is and its header (read without pixel data)."""

    path: str
    header: Dataset

    @classmethod
    def from_path(cls, path: str | Path) -> QcInstance:
        """Read the header of a DICOM file; raise :class:`InvalidInstance` if it is not one."""
        try:
            header = dcmread(str(path), stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            raise InvalidInstance(f"{path}: not a readable DICOM file ({exc})") from exc
        return cls(path=str(path), header=header)


@dataclass(frozen=True)
class CheckOutcome:
    """The result of one check, for the study or (when ``series_uid`` is set) one series.

    ``severity`` says what a failure means: ``fail`` blocks automatic acceptance, ``warn``
    is shown to the reviewer. ``message`` is written for the technologist who must fix it.
    """

    code: str
    severity: OutcomeSeverity
    passed: bool
    message: str
    series_uid: str = ""
    sop_instance_uid: str = ""


@dataclass(frozen=True)
class SeriesView:
    """One series of the study as the checks see it (instances sorted by number)."""

    series_uid: str
    number: int | None
    modality: str
    description: str
    instances: tuple[QcInstance, ...]
    is_image: bool

    @property
    def label(self) -> str:
        """How a technologist names the series: "Series 3" (or its UID when unnumbered)."""
        return f"Series {self.number}" if self.number is not None else f"Series {self.series_uid}"

    def middle(self) -> QcInstance:
        """The middle instance by Instance Number: the representative image of the series."""
        return self.instances[(len(self.instances) - 1) // 2]


@dataclass(frozen=True)
class StudyView:
    """All instances of one study, grouped by series in series-number order."""

    study_uid: str
    series: tuple[SeriesView, ...]
    instances: tuple[QcInstance, ...] = field(repr=False)

    @property
    def image_series(self) -> tuple[SeriesView, ...]:
        return tuple(s for s in self.series if s.is_image)

    @property
    def image_modalities(self) -> tuple[str, ...]:
        """Modalities of the image series, in order of first appearance."""
        return tuple(dict.fromkeys(s.modality for s in self.image_series if s.modality))

    def series_of(self, instance: QcInstance) -> SeriesView | None:
        uid = text(instance.header, "SeriesInstanceUID")
        return next((s for s in self.series if s.series_uid == uid), None)


def build_study(instances: Sequence[QcInstance]) -> StudyView:
    """Group instances by series; the caller guarantees they are one study."""
    groups: dict[str, list[QcInstance]] = {}
    for instance in instances:
        groups.setdefault(text(instance.header, "SeriesInstanceUID"), []).append(instance)
    views = [_series_view(uid, members) for uid, members in groups.items()]
    views.sort(key=lambda s: (s.number is None, s.number or 0, s.series_uid))
    study_uid = text(instances[0].header, "StudyInstanceUID") if instances else ""
    return StudyView(study_uid=study_uid, series=tuple(views), instances=tuple(instances))


def _series_view(uid: str, members: list[QcInstance]) -> SeriesView:
    members.sort(key=lambda i: (integer(i.header, "InstanceNumber") is None,
                                integer(i.header, "InstanceNumber") or 0, i.path))
    first = members[0].header
    return SeriesView(
        series_uid=uid,
        number=next((n for m in members if (n := integer(m.header, "SeriesNumber")) is not None), None),
        modality=text(first, "Modality"),
        description=text(first, "SeriesDescription"),
        instances=tuple(members),
        is_image=all(is_image(m.header) for m in members),
    )


def is_image(header: Dataset) -> bool:
    """True for instances with a pixel matrix worth checking (not SR, PDF, PR, waveforms)."""
    if not is_image_sop_class(text(header, "SOPClassUID")):
        return False
    return "Rows" in header and "Columns" in header


def text(ds: Dataset, keyword: str) -> str:
    """The value of a top-level attribute as stripped text ("" when absent or empty)."""
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, MultiValue):
        return "\\".join(str(v) for v in value).strip()
    return str(value).strip()


def integer(ds: Dataset, keyword: str) -> int | None:
    """An IS/US attribute as int, or None when absent or unparsable."""
    try:
        value = ds.get(keyword)
        return None if value is None or str(value).strip() == "" else int(value)
    except (TypeError, ValueError):
        return None


def has_value(ds: Dataset, spec: str) -> bool:
    """True when ``spec`` (``Keyword``, ``Sequence`` or ``Sequence.Keyword``) is non-empty.

    A person name of only component separators (``^^``) counts as empty: it names no one.
    """
    head, _, tail = spec.partition(".")
    value = ds.get(head)
    if isinstance(value, DicomSequence):
        items = [item for item in value if isinstance(item, Dataset)]
        return any(has_value(item, tail) for item in items) if tail else any(len(i) for i in items)
    if tail:
        return False
    return _non_empty(value)


def first_value(ds: Dataset, specs: Iterable[str]) -> str:
    """The text of the first non-empty spec of ``specs`` (for consistency comparisons)."""
    for spec in specs:
        head, _, tail = spec.partition(".")
        value = ds.get(head)
        if isinstance(value, DicomSequence):
            for item in value:
                if tail and has_value(item, tail):
                    return text(item, tail)
            continue
        if _non_empty(value):
            return text(ds, head)
    return ""


def _non_empty(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, (bytes, bytearray)):
        return bool(value.strip(b"\x00 "))
    return bool(str(value).replace("^", "").replace("=", "").strip())


def find_anywhere(ds: Dataset, keyword: str, depth: int = 3) -> bool:
    """True when ``keyword`` has a value at the top level or inside nested sequences.

    Enhanced multi-frame objects keep per-frame facts (e.g. CTDIvol) in functional group
    sequences; ``depth`` bounds the walk so a huge header cannot make it slow.
    """
    if keyword in ds and _non_empty(ds.get(keyword)):
        return True
    if depth <= 0:
        return False
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                if find_anywhere(item, keyword, depth - 1):
                    return True
    return False


def join_list(items: Iterable[object], limit: int = 12) -> str:
    """Items as "4, 7 and 9" for messages, cut after ``limit`` entries."""
    values = [str(n) for n in items]
    if len(values) > limit:
        return ", ".join(values[:limit]) + f" and {len(values) - limit} more"
    if len(values) <= 1:
        return "".join(values)
    return ", ".join(values[:-1]) + " and " + values[-1]


def series_list(views: Iterable[SeriesView]) -> str:
    """Series as "series 1, 3" for messages."""
    labels = [str(v.number) if v.number is not None else v.series_uid for v in views]
    return "series " + ", ".join(labels)


def short_error(exc: BaseException, limit: int = 160) -> str:
    """First line of an exception, cut to ``limit`` characters, for people to read."""
    first = (str(exc).strip().splitlines() or [""])[0]
    text_ = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return text_ if len(text_) <= limit else text_[: limit - 3] + "..."
