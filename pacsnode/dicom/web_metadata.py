"""DICOMweb's view of one instance, built once at ingest: DICOM JSON metadata and frame offsets.

OHIF asks ``/metadata`` for a whole study before it draws anything; servers that read every
file per request are slow exactly there. pacsnode builds the JSON (PS3.18 F.2) while the file
is being stored, and keeps it in the index with the instance row, so ``/metadata`` is a
concatenation of stored strings. Bulk data (Pixel Data, any value over 1 KiB) is a
BulkDataURI; the URIs hold ``BASE_MARKER`` where the server's address goes, because the
address a client used is only known per request.

The frame table records where each frame's bytes sit in the file (native pixel data: one
run per frame; encapsulated: the fragments of each frame), so ``/frames/N`` is an
``os.pread`` and never a parse. An empty table means "frames not served for this instance"
(1-bit native data, fragments that cannot be mapped to frames without decoding).
"""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.tag import BaseTag
from pydicom.dataelem import DataElement, RawDataElement

from pacsnode.dicom import dicom_json

LOGGER = logging.getLogger(__name__)

BASE_MARKER = "@@PACSNODE_WEB_BASE@@"
BULK_THRESHOLD = 1024
PIXEL_DATA = BaseTag(0x7FE00010)
ITEM, SEQ_DELIM = 0xFFFEE000, 0xFFFEE0DD


def instance_base(study_uid: str, series_uid: str, sop_uid: str) -> str:
    return f"{BASE_MARKER}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"


def build(path: Path | str) -> tuple[str, str]:
    """(DICOM JSON of the instance, JSON frame table) for a stored or about-to-be-stored file.

    The common file is encoded straight from its bytes (``dicom_json``, about a tenth of the
    CPU); anything that encoder does not reproduce exactly goes through pydicom, whose
    ``to_json_dict`` is the reference either way.
    """
    try:
        return _build_fast(path)
    except dicom_json.Unsupported:
        return _build_with_pydicom(path)


def at_ingest(path: Path | str) -> tuple[str, str] | None:
    """DICOMweb's metadata and frame table of a received file, or None when it cannot be built.

    Built from the temp file before it is placed (an S3 area would otherwise fetch the object
    back) and indexed in the instance's own transaction; a file it cannot describe is still
    stored (DICOMweb builds the metadata on first request instead).
    """
    try:
        return build(path)
    except Exception:  # never refuse a valid store because of its web view
        LOGGER.warning("DICOMweb metadata of %s not built at ingest", Path(path).name, exc_info=True)
        return None


def _build_fast(path: Path | str) -> tuple[str, str]:
    # the UIDs are known only once the data set is read: provisional URIs, fixed below
    encoded = dicom_json.encode(path, lambda tag: f"{BASE_MARKER}@@{tag:08X}")
    document = encoded.document
    study, series, sop = (_first(document, key) for key in ("0020000D", "0020000E", "00080018"))
    base = instance_base(study, series, sop)
    _resolve_bulk_uris(document, base)
    frames: list[list[tuple[int, int]]] = []
    if encoded.has_pixel_data:
        bits = _first_int(document, "00280100")
        vr = encoded.pixel_vr if encoded.pixel_vr in ("OB", "OW") else ("OW" if (bits or 16) > 8 else "OB")
        document["7FE00010"] = {"vr": vr, "BulkDataURI": f"{base}/bulkdata/7FE00010"}
        assert encoded.pixel_offset is not None and encoded.pixel_length is not None
        frames = frames_at(path, encoded.pixel_offset, encoded.pixel_length, _first_int(document, "00280008") or 1,
                           _first_int(document, "00280010"), _first_int(document, "00280011"),
                           _first_int(document, "00280002") or 1, bits or 0)
    table = {"transfer_syntax": encoded.transfer_syntax, "frames": frames} if frames else {}
    return (json.dumps(document, ensure_ascii=False, separators=(",", ":"), sort_keys=True),
            json.dumps(table, separators=(",", ":")) if table else "")


def _first(document: dict[str, Any], key: str) -> str:
    values = document.get(key, {}).get("Value") or [""]
    return str(values[0])


def _first_int(document: dict[str, Any], key: str) -> int | None:
    values = document.get(key, {}).get("Value") or [None]
    return values[0] if isinstance(values[0], int) else None


def _resolve_bulk_uris(node: Any, base: str) -> None:
    """Replace the provisional ``BASE_MARKER@@TAG`` URIs with the instance's (nested items too)."""
    if isinstance(node, dict):
        uri = node.get("BulkDataURI")
        if isinstance(uri, str) and uri.startswith(BASE_MARKER + "@@"):
            node["BulkDataURI"] = f"{base}/bulkdata/{uri[len(BASE_MARKER) + 2:]}"
        for value in node.values():
            if isinstance(value, (dict, list)):
                _resolve_bulk_uris(value, base)
    elif isinstance(node, list):
        for value in node:
            if isinstance(value, (dict, list)):
                _resolve_bulk_uris(value, base)


def _build_with_pydicom(path: Path | str) -> tuple[str, str]:
    dataset = dcmread(str(path), defer_size=BULK_THRESHOLD)
    pixel = dataset._dict.pop(PIXEL_DATA, None)  # never load pixel data for the metadata
    base = instance_base(str(dataset.StudyInstanceUID), str(dataset.SeriesInstanceUID),
                         str(dataset.SOPInstanceUID))

    def bulk_uri(element: DataElement) -> str:
        return f"{base}/bulkdata/{int(element.tag):08X}"

    document: dict[str, Any] = dataset.to_json_dict(bulk_data_threshold=BULK_THRESHOLD,
                                                    bulk_data_element_handler=bulk_uri)
    frames: list[list[tuple[int, int]]] = []
    if pixel is not None:
        vr = _pixel_vr(pixel, dataset)
        document["7FE00010"] = {"vr": vr, "BulkDataURI": f"{base}/bulkdata/7FE00010"}
        frames = frame_table(path, pixel, dataset)
    syntax = str(getattr(dataset.file_meta, "TransferSyntaxUID", "") or "")
    table = {"transfer_syntax": syntax, "frames": frames} if frames else {}
    return (json.dumps(document, ensure_ascii=False, separators=(",", ":"), sort_keys=True),
            json.dumps(table, separators=(",", ":")) if table else "")


def _pixel_vr(pixel: Any, dataset: Any) -> str:
    vr = getattr(pixel, "VR", None) or getattr(pixel, "vr", None)
    if vr in ("OB", "OW"):
        return str(vr)
    return "OW" if int(dataset.get("BitsAllocated", 16) or 16) > 8 else "OB"


def frame_table(path: Path | str, pixel: Any, dataset: Any) -> list[list[tuple[int, int]]]:
    """Per frame, the (offset, length) runs of its bytes in the file; [] when not mappable."""
    if not isinstance(pixel, RawDataElement) or pixel.value_tell is None:
        return []
    count = int(dataset.get("NumberOfFrames", 1) or 1)
    if pixel.length != 0xFFFFFFFF:
        bits = int(dataset.get("BitsAllocated", 0) or 0)
        if bits < 8 or bits % 8:
            return []
        return frames_at(path, pixel.value_tell, pixel.length, count, int(dataset.Rows), int(dataset.Columns),
                         int(dataset.get("SamplesPerPixel", 1) or 1), bits)
    return frames_at(path, pixel.value_tell, pixel.length, count, None, None, 1, 0)


def frames_at(path: Path | str, offset: int, length: int, count: int, rows: int | None, columns: int | None,
              samples: int, bits: int) -> list[list[tuple[int, int]]]:
    """``frame_table`` from the Pixel Data's offset and length and the image attributes."""
    if count < 1:
        return []
    if length != 0xFFFFFFFF:
        if bits < 8 or bits % 8 or not rows or not columns:
            return []
        size = rows * columns * samples * bits // 8
        if size <= 0 or size * count > length:
            return []
        return [[(offset + i * size, size)] for i in range(count)]
    with open(path, "rb") as handle:
        handle.seek(offset)
        items = _items(handle)
    if not items:
        return []
    (bot_offset, bot_length), fragments = items[0], items[1:]
    if not fragments:
        return []
    if count == 1:
        return [fragments]
    if len(fragments) == count:
        return [[fragment] for fragment in fragments]
    if bot_length >= 4 * count:  # Basic Offset Table: frame starts, relative to the first fragment's item
        with open(path, "rb") as handle:
            handle.seek(bot_offset)
            starts = list(struct.unpack(f"<{count}I", handle.read(4 * count)))
        first_item = fragments[0][0] - 8
        out: list[list[tuple[int, int]]] = [[] for _ in range(count)]
        for offset, length in fragments:
            relative = offset - 8 - first_item
            index = max(i for i, start in enumerate(starts) if start <= relative)
            out[index].append((offset, length))
        return out if all(out) else []
    return []


def _items(handle: Any) -> list[tuple[int, int]]:
    """(value offset, length) of each item of an encapsulated Pixel Data value (BOT first)."""
    items: list[tuple[int, int]] = []
    while True:
        header = handle.read(8)
        if len(header) < 8:
            return []
        group, element, length = struct.unpack("<HHI", header)
        tag = (group << 16) | element
        if tag == SEQ_DELIM:
            return items
        if tag != ITEM or length == 0xFFFFFFFF:
            return []
        items.append((handle.tell(), length))
        handle.seek(length, 1)
