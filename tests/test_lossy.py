"""One answer to "is it lossy?" (issue 12.5): ingest (recognition) and QC ask the same function.

Before, a JPEG 2000 image (.91) with Lossy Image Compression = 00 was lossy to the index
(and so to the recognition rules) and not lossy to QC. Every row here is checked three ways:
the function itself, the facts the index records (both header readers), and QC's check.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID

from pacsnode.dicom.extract import facts_from_dataset, facts_from_scan
from pacsnode.dicom import header
from pacsnode.dicom.lossy import is_lossy
from pacsnode.qc.pixels import is_lossy as qc_is_lossy
from pacsnode.qc.study import QcInstance

ROOT = "1.2.826.0.1.3680043.10.1078.98"
J2K = "1.2.840.10008.1.2.4.91"

# (transfer syntax, Lossy Image Compression, Lossy Image Compression Method) -> lossy
ROWS = [
    pytest.param("1.2.840.10008.1.2.1", "", "", False, id="explicit-le-uncompressed"),
    pytest.param("1.2.840.10008.1.2.1", "00", "", False, id="uncompressed-flag-00"),
    pytest.param("1.2.840.10008.1.2.1", "01", "", True, id="decompressed-from-lossy-is-still-lossy"),
    pytest.param("1.2.840.10008.1.2.1", "", "ISO_10918_1", True, id="a-named-lossy-method-is-lossy"),
    pytest.param("1.2.840.10008.1.2.4.50", "", "", True, id="jpeg-baseline"),
    pytest.param("1.2.840.10008.1.2.4.50", "00", "", True, id="jpeg-baseline-flag-00-does-not-unsay-it"),
    pytest.param("1.2.840.10008.1.2.4.51", "", "", True, id="jpeg-extended"),
    pytest.param("1.2.840.10008.1.2.4.57", "", "", False, id="jpeg-lossless"),
    pytest.param("1.2.840.10008.1.2.4.70", "", "", False, id="jpeg-lossless-sv1"),
    pytest.param("1.2.840.10008.1.2.4.80", "", "", False, id="jpeg-ls-lossless"),
    pytest.param("1.2.840.10008.1.2.4.81", "", "", True, id="jpeg-ls-near-lossless"),
    pytest.param("1.2.840.10008.1.2.4.90", "", "", False, id="jpeg-2000-lossless-only"),
    pytest.param(J2K, "", "", True, id="jpeg-2000-lossy-allowed"),
    pytest.param(J2K, "00", "", True, id="jpeg-2000-91-with-flag-00-is-lossy"),
    pytest.param("1.2.840.10008.1.2.4.201", "", "", False, id="htj2k-lossless"),
    pytest.param("1.2.840.10008.1.2.4.203", "00", "", True, id="htj2k-lossy-allowed"),
    pytest.param("1.2.840.10008.1.2.4.102", "", "", True, id="mpeg4"),
    pytest.param("1.2.840.10008.1.2.4.107", "", "", True, id="hevc"),
    pytest.param("1.2.840.10008.1.2.4.110", "", "", False, id="jpeg-xl-lossless"),
    pytest.param("1.2.840.10008.1.2.5", "", "", False, id="rle"),
]


def _dataset(syntax: str, flag: str, method: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = f"{ROOT}.3"
    ds.StudyInstanceUID = f"{ROOT}.1"
    ds.SeriesInstanceUID = f"{ROOT}.2"
    ds.Modality = "CT"
    if flag:
        ds.LossyImageCompression = flag
    if method:
        ds.LossyImageCompressionMethod = method
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    return ds


@pytest.mark.parametrize(("syntax", "flag", "method", "lossy"), ROWS)
def test_recognition_and_qc_give_one_answer(tmp_path: Path, syntax: str, flag: str, method: str,
                                            lossy: bool) -> None:
    assert is_lossy(syntax, flag, method) is lossy
    ds = _dataset(syntax, flag, method)
    assert facts_from_dataset(ds, syntax).lossy is lossy  # what the index records at ingest
    assert qc_is_lossy(QcInstance(path="", header=ds)) is lossy  # what QC-LOSSY says


@pytest.mark.parametrize(("syntax", "method", "pixels"), [
    ("1.2.840.10008.1.2.1", "ISO_10918_1", b"\x00" * 128),  # only the method says lossy
    (J2K, "", encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 60])),  # .91 + "00"; the code-stream is never decoded
])
def test_the_fast_header_scan_gives_the_same_answer(tmp_path: Path, syntax: str, method: str, pixels: bytes) -> None:
    """The store path's one-pass reader sees (0028,2110)/(0028,2114) as the full read does."""
    ds = _dataset(syntax, "00", method)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.SamplesPerPixel = 8, 8, 16, 1
    ds.PixelData = pixels
    ds.preamble = b"\x00" * 128
    path = tmp_path / "x.dcm"
    dcmwrite(path, ds, enforce_file_format=True)
    scanned = header.scan(path)
    assert scanned is not None and scanned.complete
    assert facts_from_scan(scanned).lossy is True
