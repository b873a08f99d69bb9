"""Pixel sanity on image series: decodable, big enough, not blank, lossy or not.

A study whose pixels cannot be decoded, or whose images are blank placeholders, is useless
to the receiving physician however complete its header. Decoding every image would make QC
as slow as a full read of the study, so one representative image per series (the middle
one by Instance Number, its middle frame when multi-frame) is decoded with pydicom; sizes
and lossy compression come from the headers of every instance.
"""

from __future__ import annotations

import logging

import numpy as np
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import pixel_array
from pydicom.uid import UID

from pacsnode.dicom import lossy
from pacsnode.qc.rules import PixelRules, QcRules
from pacsnode.qc.study import (
    CheckOutcome,
    OutcomeSeverity,
    QcInstance,
    SeriesView,
    StudyView,
    integer,
    outcome_severity,
    short_error,
    join_list,
    text,
)

LOGGER = logging.getLogger(__name__)

DECODE_CODE = "QC-PIXEL-DECODE"
DIMS_CODE = "QC-PIXEL-DIMS"
RANGE_CODE = "QC-PIXEL-RANGE"
LOSSY_CODE = "QC-LOSSY"


def middle_frame(instance: QcInstance) -> int:
    """Index of the middle frame (0 for single-frame images)."""
    frames = integer(instance.header, "NumberOfFrames") or 1
    return (max(frames, 1) - 1) // 2


def instance_label(instance: QcInstance) -> str:
    number = integer(instance.header, "InstanceNumber")
    return f"image {number}" if number is not None else f"image {text(instance.header, 'SOPInstanceUID')}"


def pixel_checks(study: StudyView, rules: QcRules) -> list[CheckOutcome]:
    """Per image series: ``QC-PIXEL-DIMS``, ``QC-PIXEL-DECODE``, ``QC-PIXEL-RANGE``, ``QC-LOSSY``."""
    outcomes: list[CheckOutcome] = []
    pixels = rules.pixels
    for series in study.image_series:
        if pixels.dims != "off":
            outcomes.append(_dims_outcome(series, pixels))
        if pixels.decode != "off" or pixels.range != "off":
            outcomes.extend(_decode_outcomes(series, pixels))
        if pixels.lossy != "off":
            outcomes.append(_lossy_outcome(series, pixels))
    return outcomes


def _dims_outcome(series: SeriesView, pixels: PixelRules) -> CheckOutcome:
    minimum = pixels.min_size(series.modality)
    small = [i for i in series.instances
             if (integer(i.header, "Rows") or 0) < minimum.rows
             or (integer(i.header, "Columns") or 0) < minimum.columns]
    severity = outcome_severity(pixels.dims)
    if not small:
        return CheckOutcome(DIMS_CODE, severity, True,
                            f"{series.label}: image size is at least {minimum.rows}x{minimum.columns}.",
                            series_uid=series.series_uid)
    first = small[0].header
    size = f"{integer(first, 'Rows') or 0}x{integer(first, 'Columns') or 0}"
    names = join_list(instance_label(i) for i in small)
    return CheckOutcome(DIMS_CODE, severity, False,
                        f"{series.label}: {names} {'is' if len(small) == 1 else 'are'} too small "
                        f"({size}; {series.modality or 'this modality'} needs at least "
                        f"{minimum.rows}x{minimum.columns}).",
                        series_uid=series.series_uid, sop_instance_uid=text(first, "SOPInstanceUID"))


def _decode_outcomes(series: SeriesView, pixels: PixelRules) -> list[CheckOutcome]:
    """Decode the middle image; report decode (and, when it decoded, the pixel range)."""
    instance = series.middle()
    where = f"{series.label}, {instance_label(instance)}"

    def decode_outcome(severity: OutcomeSeverity, passed: bool, message: str) -> list[CheckOutcome]:
        if pixels.decode == "off":
            return []
        return [CheckOutcome(DECODE_CODE, severity, passed, f"{where}: {message}.", series_uid=series.series_uid,
                             sop_instance_uid=text(instance.header, "SOPInstanceUID"))]

    missing_decoder = _missing_decoder(instance)
    if missing_decoder:
        # Not the study's fault: this node lacks a codec, so warn instead of failing it.
        return decode_outcome("warn", False, f"cannot check the pixels, {missing_decoder}")
    severity = outcome_severity(pixels.decode)
    try:
        array = pixel_array(instance.path, index=middle_frame(instance))
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the finding itself
        LOGGER.debug("decode failed for %s: %r", instance.path, exc)
        return decode_outcome(severity, False,
                              f"the pixel data cannot be decoded ({short_error(exc)})")
    outcomes = decode_outcome(severity, True, "pixel data decodes")
    if pixels.range != "off":
        outcomes.append(_range_outcome(series, instance, array, pixels))
    return outcomes


def _missing_decoder(instance: QcInstance) -> str:
    """Why this node cannot decode the instance's transfer syntax ("" when it can)."""
    meta = getattr(instance.header, "file_meta", None)
    syntax = UID(str(meta.get("TransferSyntaxUID", ""))) if meta is not None else UID("")
    if not syntax:
        return ""  # let the decode attempt report the real problem
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        return f"no pixel decoder is known for transfer syntax {syntax}"
    if decoder.is_available:
        return ""
    return f"no decoder for {syntax.name} is installed on this node"


def _range_outcome(series: SeriesView, instance: QcInstance, array: np.ndarray,
                   pixels: PixelRules) -> CheckOutcome:
    severity = outcome_severity(pixels.range)
    uid = text(instance.header, "SOPInstanceUID")
    where = f"{series.label}, {instance_label(instance)}"
    if array.size == 0:
        return CheckOutcome(RANGE_CODE, severity, False, f"{where} has no pixels.",
                            series_uid=series.series_uid, sop_instance_uid=uid)
    low, high = array.min(), array.max()
    if low == high:
        value = "0" if low == 0 else f"{low.item()}"
        return CheckOutcome(RANGE_CODE, severity, False,
                            f"{where} is blank: every pixel has the value {value}.",
                            series_uid=series.series_uid, sop_instance_uid=uid)
    return CheckOutcome(RANGE_CODE, severity, True, f"{where} has image content.",
                        series_uid=series.series_uid, sop_instance_uid=uid)


def is_lossy(instance: QcInstance) -> bool:
    """The one answer (``pacsnode.dicom.lossy``), as the recognition rules get it at ingest."""
    meta = getattr(instance.header, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    return lossy.is_lossy(syntax, text(instance.header, "LossyImageCompression"),
                          text(instance.header, "LossyImageCompressionMethod"))


def _lossy_outcome(series: SeriesView, pixels: PixelRules) -> CheckOutcome:
    lossy = [i for i in series.instances if is_lossy(i)]
    severity = outcome_severity(pixels.lossy)
    if not lossy:
        return CheckOutcome(LOSSY_CODE, severity, True, f"{series.label} is not lossy compressed.",
                            series_uid=series.series_uid)
    header = lossy[0].header
    details = [text(header, "LossyImageCompressionMethod"), text(header, "LossyImageCompressionRatio")]
    method, ratio = details
    how = ", ".join(x for x in (method, f"ratio {ratio}" if ratio else "") if x)
    share = "all images" if len(lossy) == len(series.instances) else f"{len(lossy)} of {len(series.instances)} images"
    return CheckOutcome(LOSSY_CODE, severity, False,
                        f"{series.label}: {share} were lossy compressed{f' ({how})' if how else ''}; "
                        "check they are still fit for diagnosis.",
                        series_uid=series.series_uid, sop_instance_uid=text(header, "SOPInstanceUID"))
