"""Small DICOM studies for the QC tests, built with pydicom into a temporary folder.

Every study starts fully valid (it passes every QC check) and a test breaks exactly one
thing, so a failing check can only be the one under test. ``sample_copies`` gives copies
of the generated files in ``sample_dicom/`` (when present) to modify per test.
"""

from __future__ import annotations

import io
import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import config as pydicom_config
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, PYDICOM_IMPLEMENTATION_UID, UID

from pacsnode.qc.study import QcInstance

ROOT = "1.2.826.0.1.3680043.10.1078.99."
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
DX_IMAGE = "1.2.840.10008.5.1.4.1.1.1.1"
SC_IMAGE = "1.2.840.10008.5.1.4.1.1.7"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
XRAY_DOSE_SR = "1.2.840.10008.5.1.4.1.1.88.67"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
IMAGE_CLASSES = {"CT": CT_IMAGE, "MR": MR_IMAGE, "DX": DX_IMAGE, "CR": "1.2.840.10008.5.1.4.1.1.1"}
SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample_dicom"

Mutator = Callable[[Dataset], None]


@contextmanager
def lenient() -> Iterator[None]:
    """Let a test write deliberately invalid values (bad dates) without pydicom objecting."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pydicom_config.disable_value_validation():
            yield


def ramp(rows: int, columns: int, low: int = -1000, high: int = 1000) -> np.ndarray:
    """A diagonal ramp: non-constant, and predictable after windowing."""
    y, x = np.mgrid[0:rows, 0:columns]
    values = low + (x + y) * (high - low) / max(rows + columns - 2, 1)
    return values.astype(np.int16)


def base_header(modality: str, study: int, series: int, number: int, sop_class: str) -> Dataset:
    """A header carrying every attribute the default rules require."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(f"{ROOT}3.{study}.{series}.{number}")
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = f"{ROOT}1.{study}"
    ds.SeriesInstanceUID = f"{ROOT}2.{study}.{series}"
    ds.PatientName = "CHEN^JIANGUO"
    ds.PatientID = "P0815"
    ds.IssuerOfPatientID = "CTY001"
    ds.PatientSex = "M"
    ds.PatientBirthDate = "19900101"
    ds.StudyDate = "20261110"
    ds.StudyTime = "093000"
    ds.SeriesDate = "20261110"
    ds.AccessionNumber = f"ACC{study:04d}"
    ds.InstitutionName = "Anping County People's Hospital"
    ds.Modality = modality
    ds.BodyPartExamined = "CHEST"
    ds.SeriesNumber = series
    ds.InstanceNumber = number
    ds.SeriesDescription = f"{modality} series {series}"
    return ds


def set_pixels(ds: Dataset, pixels: np.ndarray, photometric: str = "MONOCHROME2") -> None:
    """Store native pixel data with matching image pixel attributes."""
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    color = pixels.ndim == 3
    ds.SamplesPerPixel = 3 if color else 1
    if color:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()


def set_jpeg_rgb(ds: Dataset, rgb: np.ndarray) -> None:
    """Encode an RGB array as lossy JPEG baseline (YBR_FULL_422), as a colour camera would."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=95)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.SamplesPerPixel = 3
    ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "01"
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"


def image(modality: str, study: int, series: int, number: int, size: int = 64) -> Dataset:
    ds = base_header(modality, study, series, number, IMAGE_CLASSES.get(modality, SC_IMAGE))
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    pixels = ramp(size, size)
    if modality in ("DX", "CR"):
        pixels = (pixels + 1000).astype(np.uint16)
        ds.ImageAndFluoroscopyAreaDoseProduct = "0.12"
    else:
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
    if modality == "CT":
        ds.CTDIvol = 5.2
    set_pixels(ds, pixels)
    return ds


def report(study: int, series: int = 100, sop_class: str = BASIC_TEXT_SR) -> Dataset:
    """A report-like non-image instance: an SR (default) or, with the PDF class, a PDF."""
    modality = "DOC" if sop_class == ENCAPSULATED_PDF else "SR"
    ds = base_header(modality, study, series, 1, sop_class)
    del ds.BodyPartExamined
    del ds.InstitutionName
    if modality == "DOC":
        ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
        ds.EncapsulatedDocument = b"%PDF-1.4\n%%EOF\n"
    else:
        ds.CompletionFlag = "COMPLETE"
        ds.VerificationFlag = "VERIFIED"
    return ds


@dataclass
class StudySpec:
    """What to build: a modality, series sizes, and whether a report is included."""

    modality: str = "CT"
    series_sizes: tuple[int, ...] = (3, 3)
    with_report: bool = True
    study: int = 1
    size: int = 64
    extra: list[Dataset] = field(default_factory=list)


def build_datasets(spec: StudySpec) -> list[Dataset]:
    datasets = [image(spec.modality, spec.study, series, number, spec.size)
                for series, count in enumerate(spec.series_sizes, start=1)
                for number in range(1, count + 1)]
    if spec.with_report:
        datasets.append(report(spec.study))
    return datasets + spec.extra


def write(datasets: list[Dataset], folder: Path) -> list[Path]:
    """Write datasets as Part 10 files named series_instance.dcm."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = folder / f"{ds.SeriesNumber}_{ds.InstanceNumber}_{ds.SOPInstanceUID.split('.')[-1]}.dcm"
        with lenient():
            ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def make_study(folder: Path, spec: StudySpec | None = None, mutate: Mutator | None = None,
               only: Callable[[Dataset], bool] | None = None) -> list[QcInstance]:
    """Build, optionally break (``mutate`` on datasets matching ``only``), write, load."""
    datasets = build_datasets(spec or StudySpec())
    if mutate is not None:
        with lenient():
            for ds in datasets:
                if only is None or only(ds):
                    mutate(ds)
    return load(write(datasets, folder))


def load(paths: list[Path]) -> list[QcInstance]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [QcInstance.from_path(p) for p in paths]


def in_series(number: int) -> Callable[[Dataset], bool]:
    return lambda ds: int(ds.SeriesNumber) == number


def first_of_series(number: int) -> Callable[[Dataset], bool]:
    return lambda ds: int(ds.SeriesNumber) == number and int(ds.InstanceNumber) == 1


def sample_study_dirs() -> list[Path]:
    """Study folders of the generated samples (empty when they are not generated yet)."""
    if not SAMPLE_DIR.is_dir():
        return []
    return sorted({p.parent.parent for p in SAMPLE_DIR.rglob("*.dcm")})


def sample_copies(study_dir: Path, folder: Path, mutate: Mutator | None = None,
                  only: Callable[[Dataset], bool] | None = None) -> list[QcInstance]:
    """Copy one sample study into ``folder``, modify matching files, load them."""
    paths = []
    for index, source in enumerate(sorted(study_dir.rglob("*.dcm"))):
        target = folder / f"{index:03d}_{source.name}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        if mutate is not None:
            ds = dcmread(target)
            if only is None or only(ds):
                with lenient():
                    mutate(ds)
                    ds.save_as(target)
        paths.append(target)
    return load(paths)


def add_item(ds: Dataset, keyword: str, **values: str) -> None:
    """Append one item with ``values`` to sequence ``keyword``."""
    item = Dataset()
    for key, value in values.items():
        setattr(item, key, value)
    setattr(ds, keyword, Sequence([*(ds.get(keyword) or []), item]))
