"""Turn one DICOM image (its middle frame) into an 8-bit Pillow image for display.

The pipeline is the standard display chain of PS3.4 N.2, done by pydicom: decode (its
plugins, no hand-written codec), modality LUT / rescale, VOI LUT or window, then a linear
map of the VOI output range to 0-255, inverted for MONOCHROME1. Colour images are
converted from YBR to RGB when the decoder left them in YBR; palette colour goes through
the palette. Enhanced multi-frame objects keep their window and rescale in functional
groups, so those are lifted to the top level for the frame shown.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi_lut, convert_color_space

from pacsnode.qc.study import short_error
from pacsnode.qc.workflow import QcError

_PIXEL_KEYWORDS = (
    "PhotometricInterpretation", "BitsAllocated", "BitsStored", "PixelRepresentation",
    "SamplesPerPixel", "ModalityLUTSequence", "RescaleSlope", "RescaleIntercept", "RescaleType",
    "VOILUTSequence", "WindowCenter", "WindowWidth", "VOILUTFunction",
)
# Functional group sequences that hold per-frame display attributes in enhanced objects.
_FRAME_GROUPS = ("FrameVOILUTSequence", "PixelValueTransformationSequence")


class RenderError(QcError):
    """An image cannot be displayed (unreadable file, no decoder, corrupt pixel data)."""


def render_instance(path: str | Path, frame: int | None = None,
                    window: tuple[float, float] | None = None) -> Image.Image:
    """Render ``frame`` (default: the middle frame) of the image at ``path`` as L or RGB.

    ``window`` (center, width) replaces the instance's own VOI (DICOMweb ``/rendered?window=``).
    """
    try:
        ds = dcmread(str(path))
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise RenderError(f"not a readable DICOM file ({short_error(exc)})") from exc
    frames = _int(ds.get("NumberOfFrames")) or 1
    index = (frames - 1) // 2 if frame is None else frame
    array, photometric = _decode(ds, index)
    view = frame_view(ds, index)
    if window is not None:
        for keyword in ("VOILUTSequence", "VOILUTFunction"):
            if keyword in view:
                delattr(view, keyword)
        view.WindowCenter, view.WindowWidth = window
    if photometric.startswith("MONOCHROME"):
        return Image.fromarray(_grey(array, view, photometric), "L")
    if photometric == "PALETTE COLOR":
        coloured = apply_color_lut(array, ds)
        return Image.fromarray(_to_uint8(coloured, *_dtype_range(coloured, ds, lut=True)), "RGB")
    if photometric.startswith("YBR"):
        array = convert_color_space(array, photometric, "RGB")
    if array.ndim != 3 or array.shape[-1] != 3:
        raise RenderError(f"unexpected pixel layout {array.shape} for {photometric}")
    return Image.fromarray(_to_uint8(array, *_dtype_range(array, ds)), "RGB")


def _decode(ds: Dataset, index: int) -> tuple[np.ndarray, str]:
    """Decode one frame with pydicom, unconverted; return it and its colour space."""
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is None:
        raise RenderError("the file has no transfer syntax")
    try:
        decoder = get_decoder(syntax)
        if not decoder.is_available:
            raise RenderError(f"no decoder for {syntax.name} is installed")
        array, info = decoder.as_array(ds, index=index, raw=True)
    except RenderError:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom's plugins raise many types on bad data
        raise RenderError(f"cannot decode pixel data ({short_error(exc)})") from exc
    photometric = info.get("photometric_interpretation") or ds.get("PhotometricInterpretation", "")
    # pydicom may report an enum member; its .value is the DICOM string.
    return array, str(getattr(photometric, "value", photometric)).strip()


def frame_view(ds: Dataset, index: int) -> Dataset:
    """A small dataset with the display attributes that apply to frame ``index``.

    Top-level values win; otherwise they come from the frame's Per-Frame Functional Group
    or the Shared one (enhanced CT/MR keep window and rescale there).
    """
    view = Dataset()
    for keyword in _PIXEL_KEYWORDS:
        if keyword in ds:
            setattr(view, keyword, ds[keyword].value)
    for group in _functional_groups(ds, index):
        for sequence in _FRAME_GROUPS:
            for item in group.get(sequence) or []:
                for keyword in _PIXEL_KEYWORDS:
                    if keyword in item and keyword not in view:
                        setattr(view, keyword, item[keyword].value)
    return view


def _functional_groups(ds: Dataset, index: int) -> list[Dataset]:
    groups: list[Dataset] = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if 0 <= index < len(per_frame):
        groups.append(per_frame[index])
    groups.extend(ds.get("SharedFunctionalGroupsSequence") or [])
    return groups


def _grey(array: np.ndarray, view: Dataset, photometric: str) -> np.ndarray:
    """Modality LUT, then VOI (LUT or window) mapped to 0-255; min-max when no VOI."""
    values = apply_modality_lut(array, view) if _has_modality(view) else array.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if "VOILUTSequence" in view or ("WindowCenter" in view and "WindowWidth" in view):
        try:
            windowed = apply_voi_lut(values, view)
            low, high = _voi_range(view)
            values = windowed
        except (ValueError, TypeError, IndexError, AttributeError, KeyError):
            pass  # a broken window must not hide the image: fall back to min-max
    scaled = _to_uint8(values, low, high)
    return 255 - scaled if photometric == "MONOCHROME1" else scaled


def _has_modality(view: Dataset) -> bool:
    return "ModalityLUTSequence" in view or ("RescaleSlope" in view and "RescaleIntercept" in view)


def _voi_range(view: Dataset) -> tuple[float, float]:
    """The output range of the VOI transform: the LUT's values or the window's clamp."""
    if "VOILUTSequence" in view:
        item = view.VOILUTSequence[0]
        data = np.asarray(item.LUTData if not isinstance(item.LUTData, bytes)
                          else np.frombuffer(item.LUTData, dtype=np.uint16))
        return float(data.min()), float(data.max())
    probe = apply_voi_lut(np.array([-1e12, 1e12]), view)
    return float(probe.min()), float(probe.max())


def _dtype_range(array: np.ndarray, ds: Dataset, lut: bool = False) -> tuple[float, float]:
    """Full scale of colour samples: 8-bit stays, 16-bit LUT output or BitsStored scale."""
    if lut:
        return (0.0, 255.0) if array.dtype == np.uint8 else (0.0, 65535.0)
    bits = _int(ds.get("BitsStored")) or 8
    return 0.0, float(2**bits - 1)


def _to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (np.asarray(values, dtype=np.float64) - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _int(value: object) -> int | None:
    try:
        return int(str(value)) if value is not None and str(value).strip() else None
    except ValueError:
        return None
