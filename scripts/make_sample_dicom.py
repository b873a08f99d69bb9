#!/usr/bin/env python3
"""Generate pacsnode's synthetic sample region as DICOM Part 10 files.

Usage::

    python scripts/make_sample_dicom.py sample_dicom

Everything written here is synthetic: no real patient, no real device, no real
resident ID.  The output is fully deterministic (fixed UIDs, fixed dates, pixel
data computed from closed-form patterns with no random numbers), so running the
script twice - into any folder - produces byte-identical files.  The files under
``sample_dicom/`` are generated: change this script and re-run it rather than
editing them by hand.

Layout::

    <out>/<INSTITUTION_CODE>/<PatientID>/<StudyDate>_<AccessionNumber>/<SeriesNumber>_<Modality>/<InstanceNumber>.dcm
    docs/sample_dicom.md             description of the region, patients and studies (--readme)
    tests/data/sample_manifest.json  the same information, machine readable (--manifest)

Only DICOM files go under ``<out>``, so ``storescu +sd +r <out>`` and ``pacsnode import <out>``
send or import everything in it without tripping over a text file.

The "today" of the demo region is 2026-11-26 (``REFERENCE_DATE``); study dates
are chosen so that 7/14/30/90-day validity windows give different answers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
from pydicom import config as pydicom_config
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

# --------------------------------------------------------------------------- constants

UID_ROOT = "1.2.826.0.1.3680043.10.1078."
IMPLEMENTATION_CLASS_UID = UID_ROOT + "0.1"
IMPLEMENTATION_VERSION_NAME = "PACSNODE_SYN_1"
MANUFACTURER = "pacsnode-synthetic"
REFERENCE_DATE = date(2026, 11, 26)
TIMEZONE = "+0800"

RESIDENT_ID_ISSUER = "CN-RESIDENT-ID"
INSTITUTION_SCHEME = "CN-INST"
PROCEDURE_SCHEME = "CN-HR"

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
CR_IMAGE = "1.2.840.10008.5.1.4.1.1.1"
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"

SOP_CLASS_BY_KIND = {
    "CT": CT_IMAGE,
    "MR": MR_IMAGE,
    "DX": DX_PRESENTATION,
    "CR": CR_IMAGE,
    "US": US_IMAGE,
    "DOC": ENCAPSULATED_PDF,
    "SR": BASIC_TEXT_SR,
}

# --------------------------------------------------------------------------- the region


@dataclass(frozen=True)
class Institution:
    code: str
    name: str
    level: str
    alliance: bool
    address: str
    aes: tuple[str, ...]


INSTITUTIONS: dict[str, Institution] = {
    i.code: i
    for i in (
        Institution(
            "PRV001",
            "Qianzhong Provincial People's Hospital",
            "3A",
            True,
            "1 Zhongshan Road, Qianzhong (synthetic)",
            ("PRV_CT", "PRV_MR", "PRV_PACS"),
        ),
        Institution(
            "CTY001",
            "Anping County People's Hospital",
            "2A",
            True,
            "8 Xinhua Street, Anping County (synthetic)",
            ("CTY_CT", "CTY_DR", "CTY_PACS"),
        ),
        Institution(
            "TWN001",
            "Heping Township Health Centre",
            "1",
            True,
            "3 Market Lane, Heping Township (synthetic)",
            ("TWN_DR", "TWN_US", "TWN_PACS"),
        ),
        Institution(
            "PVT001",
            "Riverside Private Imaging Clinic",
            "unrated",
            False,
            "66 Riverside Avenue (synthetic)",
            ("PVT_CT",),
        ),
    )
}


@dataclass(frozen=True)
class Device:
    ae: str
    institution: str
    model: str
    serial: str
    software: str
    department: str = "Radiology"


DEVICES: dict[str, Device] = {
    d.ae: d
    for d in (
        Device("PRV_CT", "PRV001", "SynthCT 64", "PRVCT-0001", "syn-ct 2.1"),
        Device("PRV_MR", "PRV001", "SynthMR 1.5T", "PRVMR-0001", "syn-mr 1.4"),
        Device("PRV_PACS", "PRV001", "SynthPACS", "PRVPACS-0001", "syn-pacs 3.0"),
        Device("CTY_CT", "CTY001", "SynthCT 16", "CTYCT-0001", "syn-ct 1.8"),
        Device("CTY_DR", "CTY001", "SynthDR 43", "CTYDR-0001", "syn-dr 2.0"),
        Device("CTY_PACS", "CTY001", "SynthPACS", "CTYPACS-0001", "syn-pacs 3.0"),
        Device("TWN_DR", "TWN001", "SynthDR 35", "TWNDR-0001", "syn-dr 1.2"),
        Device("TWN_US", "TWN001", "SynthUS C5", "TWNUS-0001", "syn-us 4.2", "Ultrasound"),
        Device("TWN_PACS", "TWN001", "SynthPACS", "TWNPACS-0001", "syn-pacs 3.0"),
        Device("PVT_CT", "PVT001", "SynthCT 32", "PVTCT-0001", "syn-ct 2.0"),
    )
}


@dataclass(frozen=True)
class Patient:
    key: str
    name: str
    sex: str
    birth: str
    charset: str  # value of SpecificCharacterSet used in every file of the patient
    local_ids: dict[str, str]  # institution code -> PatientID assigned by that hospital
    resident_id: str | None = None
    note: str = ""


PATIENTS: dict[str, Patient] = {
    p.key: p
    for p in (
        Patient(
            "chen",
            "CHEN^JIANGUO",
            "M",
            "19900101",
            "ISO_IR 100",
            {"TWN001": "T00042", "CTY001": "P0815", "PRV001": "P0107"},
            "520100199001010011",
            "cross-region priors demo: studies at three institutions",
        ),
        Patient(
            "zhao",
            "ZHAO^LEI",
            "M",
            "19750612",
            "ISO_IR 100",
            {"CTY001": "P0001"},
            None,
            "PatientID P0001 collides with QIAN^MEI at PRV001",
        ),
        Patient(
            "qian",
            "QIAN^MEI",
            "F",
            "19880923",
            "ISO_IR 100",
            {"PRV001": "P0001"},
            None,
            "PatientID P0001 collides with ZHAO^LEI at CTY001",
        ),
        Patient(
            "wang",
            "王^小明",
            "M",
            "19650304",
            "GB18030",
            {"PRV001": "P0002"},
            "520102196503040013",
            "Chinese name, SpecificCharacterSet GB18030; contrast CT",
        ),
        Patient(
            "li",
            "李^华",
            "F",
            "19920815",
            "ISO_IR 192",
            {"TWN001": "T00017"},
            "520181199208150026",
            "Chinese name, SpecificCharacterSet ISO_IR 192 (UTF-8)",
        ),
        Patient(
            "wu",
            "WU^FANG",
            "F",
            "19580220",
            "ISO_IR 100",
            {"TWN001": "T00023"},
            None,
            "MONOCHROME1 chest radiograph",
        ),
        Patient(
            "zhou",
            "ZHOU^MING",
            "M",
            "19811130",
            "ISO_IR 100",
            {"PVT001": "RPI-2026-0007", "CTY001": "P0033"},
            "520103198111300038",
            "prior CT at the private clinic (outside the alliance)",
        ),
        Patient(
            "sun",
            "SUN^LI",
            "F",
            "19700709",
            "ISO_IR 100",
            {"PVT001": "RPI-2026-0012"},
            None,
            "Implicit VR Little Endian series",
        ),
    )
}

PROCEDURES: dict[str, str] = {
    "CT-CHEST-PLAIN": "CT chest, plain",
    "CT-CHEST-ENH": "CT chest, contrast enhanced",
    "CT-HEAD-PLAIN": "CT head, plain",
    "MR-BRAIN-PLAIN": "MR brain, plain",
    "DX-CHEST": "Chest radiograph",
    "US-ABDOMEN": "Ultrasound abdomen",
}


@dataclass(frozen=True)
class SeriesSpec:
    number: int
    kind: str  # CT, MR, DX, CR, US, DOC, SR
    description: str
    count: int = 1
    body_part: str = ""
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class StudySpec:
    sid: int  # fixed study number: the UIDs are derived from it
    institution: str
    patient: str
    study_date: str
    study_time: str
    procedure: str
    description: str
    device: str
    referring: str
    series: tuple[SeriesSpec, ...]
    implicit_vr: bool = False

    @property
    def accession(self) -> str:
        return f"{self.institution[:3]}{self.study_date[2:]}{self.sid:02d}"

    @property
    def patient_id(self) -> str:
        return PATIENTS[self.patient].local_ids[self.institution]

    @property
    def study_uid(self) -> str:
        return f"{UID_ROOT}1.{self.sid}"


STUDIES: tuple[StudySpec, ...] = (
    # --- CHEN^JIANGUO: the cross-region priors patient (resident ID 520100199001010011)
    StudySpec(
        1, "TWN001", "chen", "20261120", "091200", "DX-CHEST", "Chest PA", "TWN_DR", "HE^PING",
        (SeriesSpec(1, "DX", "Chest PA", 1, "CHEST", {"view": "PA"}),),
    ),
    StudySpec(
        2, "CTY001", "chen", "20261110", "143000", "CT-CHEST-PLAIN", "CT Chest plain", "CTY_CT", "AN^JING",
        (
            SeriesSpec(1, "CT", "Chest 5mm mediastinum", 5, "CHEST", {"region": "chest", "kernel": "B30f", "wc": "40", "ww": "400"}),
            SeriesSpec(2, "CT", "Chest 5mm lung", 5, "CHEST", {"region": "chest", "kernel": "B70f", "wc": "-600", "ww": "1500"}),
            SeriesSpec(100, "DOC", "CT chest report (PDF)", 1, "CHEST", {"source_ae": "CTY_PACS", "title": "CT Chest Plain Report"}),
        ),
    ),
    StudySpec(
        3, "PRV001", "chen", "20260801", "100500", "MR-BRAIN-PLAIN", "MR Brain plain", "PRV_MR", "YANG^LIN",
        (
            SeriesSpec(1, "MR", "Ax T2 FSE", 4, "BRAIN", {"weighting": "T2"}),
            SeriesSpec(2, "MR", "Ax T1 SE", 4, "BRAIN", {"weighting": "T1"}),
            SeriesSpec(100, "SR", "MR brain report", 1, "BRAIN", {"source_ae": "PRV_PACS"}),
        ),
    ),
    # --- ZHAO^LEI, P0001 at CTY001
    StudySpec(
        4, "CTY001", "zhao", "20261124", "084000", "DX-CHEST", "Chest PA and lateral (CR)", "CTY_DR", "AN^JING",
        (SeriesSpec(1, "CR", "Chest PA/LAT", 2, "CHEST", {"views": ("PA", "LL")}),),
    ),
    StudySpec(
        5, "CTY001", "zhao", "20260315", "162000", "CT-HEAD-PLAIN", "CT Head plain", "CTY_CT", "AN^JING",
        (SeriesSpec(1, "CT", "Head 5mm", 5, "HEAD", {"region": "head", "kernel": "H30s", "wc": "40", "ww": "80"}),),
    ),
    # --- QIAN^MEI, P0001 at PRV001
    StudySpec(
        6, "PRV001", "qian", "20261118", "110000", "MR-BRAIN-PLAIN", "MR Brain plain", "PRV_MR", "YANG^LIN",
        (SeriesSpec(1, "MR", "Ax T2 FSE", 4, "BRAIN", {"weighting": "T2"}),),
    ),
    StudySpec(
        7, "PRV001", "qian", "20261125", "151500", "CT-HEAD-PLAIN", "CT Head plain", "PRV_CT", "YANG^LIN",
        (SeriesSpec(1, "CT", "Head 5mm", 5, "HEAD", {"region": "head", "kernel": "H30s", "wc": "40", "ww": "80"}),),
    ),
    # --- 王^小明 (GB18030), contrast CT at PRV001
    StudySpec(
        8, "PRV001", "wang", "20261125", "103000", "CT-CHEST-ENH", "胸部CT增强", "PRV_CT", "YANG^LIN",
        (
            SeriesSpec(1, "CT", "平扫 Chest plain 5mm", 5, "CHEST", {"region": "chest", "kernel": "B30f", "wc": "40", "ww": "400"}),
            SeriesSpec(2, "CT", "增强 Chest arterial 5mm", 5, "CHEST", {"region": "chest", "kernel": "B30f", "wc": "40", "ww": "400", "contrast": True}),
        ),
    ),
    # --- 李^华 (UTF-8) at TWN001
    StudySpec(
        9, "TWN001", "li", "20261122", "151000", "US-ABDOMEN", "腹部超声 Abdominal US", "TWN_US", "HE^PING",
        (SeriesSpec(1, "US", "Liver / gallbladder", 3, "ABDOMEN"),),
    ),
    StudySpec(
        10, "TWN001", "li", "20260710", "094500", "DX-CHEST", "Chest PA", "TWN_DR", "HE^PING",
        (SeriesSpec(1, "DX", "Chest PA", 1, "CHEST", {"view": "PA"}),),
    ),
    # --- WU^FANG at TWN001, MONOCHROME1 radiographs
    StudySpec(
        11, "TWN001", "wu", "20261112", "101500", "DX-CHEST", "Chest PA and lateral", "TWN_DR", "HE^PING",
        (SeriesSpec(1, "DX", "Chest PA/LAT", 2, "CHEST", {"views": ("PA", "LL"), "monochrome1": True}),),
    ),
    # --- ZHOU^MING: private clinic CT, then county hospital radiograph
    StudySpec(
        12, "PVT001", "zhou", "20261119", "180500", "CT-CHEST-PLAIN", "CT Chest plain", "PVT_CT", "LIN^HE",
        (SeriesSpec(1, "CT", "Chest 5mm", 6, "CHEST", {"region": "chest", "kernel": "B30f", "wc": "40", "ww": "400"}),),
    ),
    StudySpec(
        13, "CTY001", "zhou", "20261123", "090000", "DX-CHEST", "Chest PA", "CTY_DR", "AN^JING",
        (SeriesSpec(1, "DX", "Chest PA", 1, "CHEST", {"view": "PA"}),),
    ),
    # --- SUN^LI at PVT001, Implicit VR Little Endian
    StudySpec(
        14, "PVT001", "sun", "20261030", "113000", "CT-HEAD-PLAIN", "CT Head plain", "PVT_CT", "LIN^HE",
        (SeriesSpec(1, "CT", "Head 5mm", 5, "HEAD", {"region": "head", "kernel": "H30s", "wc": "40", "ww": "80"}),),
        implicit_vr=True,
    ),
)

# --------------------------------------------------------------------------- helpers


def series_uid(study: StudySpec, series: SeriesSpec) -> str:
    return f"{UID_ROOT}2.{study.sid}.{series.number}"


def instance_uid(study: StudySpec, series: SeriesSpec, n: int) -> str:
    return f"{UID_ROOT}3.{study.sid}.{series.number}.{n}"


def frame_of_reference_uid(study: StudySpec, series: SeriesSpec) -> str:
    # one patient frame of reference per study: all its series were acquired in one session
    return f"{UID_ROOT}4.{study.sid}"


def add_time(hhmmss: str, minutes: int = 0, seconds: int = 0) -> str:
    t = datetime(2000, 1, 1, int(hhmmss[:2]), int(hhmmss[2:4]), int(hhmmss[4:6]))
    return (t + timedelta(minutes=minutes, seconds=seconds)).strftime("%H%M%S")


def patient_age(birth: str, on: str) -> str:
    b = date(int(birth[:4]), int(birth[4:6]), int(birth[6:]))
    d = date(int(on[:4]), int(on[4:6]), int(on[6:]))
    years = d.year - b.year - ((d.month, d.day) < (b.month, b.day))
    return f"{years:03d}Y"


def code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def grid(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised coordinates in [-1, 1], u along columns (x), v along rows (y)."""
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float64)
    u = (x - (cols - 1) / 2) / (cols / 2)
    v = (y - (rows - 1) / 2) / (rows / 2)
    return u, v


def ellipse(u, v, cu, cv, ru, rv) -> np.ndarray:
    return ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 <= 1.0


# --------------------------------------------------------------------------- pixel data


def ct_pixels(region: str, k: int, n_slices: int, contrast: bool, size: int = 128) -> np.ndarray:
    """Return stored values (HU + 1024, 12 bit, unsigned) of one synthetic CT slice."""
    u, v = grid(size, size)
    phase = (k + 1) / (n_slices + 1)  # 0..1 through the volume
    hu = np.full((size, size), -1000.0)
    if region == "chest":
        body = ellipse(u, v, 0, 0.02, 0.86, 0.62)
        hu[body] = -90.0  # subcutaneous fat
        hu[ellipse(u, v, 0, 0.02, 0.80, 0.56)] = 40.0  # soft tissue
        scale = 0.75 + 0.25 * np.sin(np.pi * phase)
        lungs = ellipse(u, v, -0.38, -0.02, 0.27 * scale, 0.42 * scale) | ellipse(
            u, v, 0.38, -0.02, 0.25 * scale, 0.42 * scale
        )
        hu[lungs] = -850.0 + 40.0 * np.sin(u[lungs] * 23.0) * np.cos(v[lungs] * 17.0)
        hu[ellipse(u, v, 0.08, 0.05, 0.20 * (1.2 - phase * 0.4), 0.18)] = 180.0 if contrast else 45.0
        hu[ellipse(u, v, -0.05, -0.22, 0.06, 0.06)] = 320.0 if contrast else 50.0  # aorta
        hu[ellipse(u, v, 0, 0.45, 0.10, 0.09)] = 700.0  # vertebral body
        hu[ellipse(u, v, 0, 0.45, 0.035, 0.03)] = 20.0  # spinal canal
    else:  # head
        hu[ellipse(u, v, 0, 0, 0.78, 0.90)] = 1100.0  # skull
        brain = ellipse(u, v, 0, 0, 0.71, 0.83)
        hu[brain] = 38.0  # grey matter
        hu[ellipse(u, v, 0, 0, 0.55, 0.68)] = 28.0  # white matter
        vent = 0.10 + 0.10 * np.sin(np.pi * phase)
        hu[ellipse(u, v, -0.12, -0.05, vent, 0.30) | ellipse(u, v, 0.12, -0.05, vent, 0.30)] = 6.0
        hu[brain] += 1.5 * np.sin(u[brain] * 9.0 + v[brain] * 7.0 + k)  # faint grey-white texture
    if region == "chest":
        hu += 6.0 * np.sin(np.arange(size) * 0.9)[None, :] * (hu > -500)  # mild soft-tissue texture
    return np.clip(np.rint(hu + 1024.0), 0, 4095).astype(np.uint16)


def mr_pixels(weighting: str, k: int, n_slices: int, size: int = 128) -> np.ndarray:
    u, v = grid(size, size)
    phase = (k + 1) / (n_slices + 1)
    t2 = weighting == "T2"
    img = np.zeros((size, size))
    img[ellipse(u, v, 0, 0, 0.82, 0.93)] = 250.0 if t2 else 850.0  # scalp fat
    img[ellipse(u, v, 0, 0, 0.77, 0.88)] = 30.0  # skull (no signal)
    brain = ellipse(u, v, 0, 0, 0.71, 0.83)
    img[brain] = 520.0 if t2 else 430.0  # grey matter
    img[ellipse(u, v, 0, 0, 0.55, 0.68)] = 360.0 if t2 else 600.0  # white matter
    vent = 0.08 + 0.12 * np.sin(np.pi * phase)
    img[ellipse(u, v, -0.12, -0.05, vent, 0.30) | ellipse(u, v, 0.12, -0.05, vent, 0.30)] = 950.0 if t2 else 140.0
    # coil shading: brighter towards the back of the head
    img *= 0.85 + 0.25 * (v + 1) / 2
    return np.clip(np.rint(img), 0, 4095).astype(np.uint16)


def radiograph_pixels(view: str, size: int = 128) -> np.ndarray:
    """MONOCHROME2 stored values (12 bit) of a synthetic chest radiograph."""
    u, v = grid(size, size)
    img = np.full((size, size), 250.0)  # direct exposure: dark
    if view == "PA":
        img[ellipse(u, v, 0, 0.15, 0.92, 1.05)] = 2300.0  # soft tissue of the trunk
        lungs = ellipse(u, v, -0.40, -0.02, 0.30, 0.62) | ellipse(u, v, 0.40, -0.02, 0.28, 0.62)
        img[lungs] = 1100.0 + 450.0 * (np.sin(v[lungs] * 26.0 + np.abs(u[lungs]) * 6.0) > 0.6)  # ribs
        img[ellipse(u, v, 0.10, 0.25, 0.28, 0.26)] = 2900.0  # heart
        img[(np.abs(u) < 0.07) & (v > -0.9)] = 3300.0  # spine
        img[ellipse(u, v, 0, 0.92, 0.95, 0.10)] = 2600.0  # diaphragm / abdomen
    else:  # lateral
        img[ellipse(u, v, 0, 0.1, 0.75, 1.05)] = 2300.0
        img[ellipse(u, v, -0.05, -0.05, 0.55, 0.65)] = 1250.0  # superimposed lungs
        img[ellipse(u, v, -0.25, 0.30, 0.30, 0.30)] = 2800.0  # heart
        img[(u > 0.45) & (u < 0.60) & (v > -0.9)] = 3200.0  # spine
    img += 120.0 * (v + 1) / 2  # heel effect
    return np.clip(np.rint(img), 0, 4095).astype(np.uint16)


def us_pixels(k: int, rows: int = 96, cols: int = 128) -> np.ndarray:
    """RGB (rows, cols, 3) uint8: grey sector scan with a colour Doppler box."""
    y, x = np.mgrid[0:rows, 0:cols]
    apex_x, apex_y = (cols - 1) / 2, -6.0
    r = np.hypot(x - apex_x, y - apex_y)
    theta = np.arctan2(x - apex_x, y - apex_y)
    sector = (np.abs(theta) < 0.62) & (r > 14) & (r < rows + 2)
    # deterministic "speckle" from integer hashing (no random number generator)
    speckle = ((x * 73856093) ^ ((y + 3 * k) * 19349663)) % 251 / 251.0
    grey = np.zeros((rows, cols))
    grey[sector] = 70 + 70 * speckle[sector] + 30 * np.sin(r[sector] / 5.0)
    liver = sector & (r > 30)
    grey[liver] += 25
    gall = ((x - (cols / 2 + 14 + k)) / 13.0) ** 2 + ((y - 58) / 9.0) ** 2 <= 1
    grey[gall & sector] = 8  # anechoic gallbladder
    grey = np.clip(grey, 0, 255)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    # colour Doppler: a vessel with red (towards) and blue (away) flow
    vessel = (np.abs(y - (40 + 0.15 * (x - cols / 2)) ) < 3) & (x > 40) & (x < 80) & sector
    towards = vessel & (x < 60 + k * 2)
    rgb[towards] = (200, 30, 20)
    rgb[vessel & ~towards] = (25, 60, 210)
    # yellow depth scale markers on the right border
    marks = (x >= cols - 4) & (y % 12 == 0)
    rgb[marks] = (230, 210, 40)
    return rgb.astype(np.uint8)


# --------------------------------------------------------------------------- documents


def make_pdf(lines: list[str]) -> bytes:
    """A minimal, valid one-page PDF 1.4 (Helvetica text, exact xref offsets)."""

    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    text = ["BT", "/F1 16 Tf", "56 780 Td", f"({esc(lines[0])}) Tj", "/F1 11 Tf"]
    for line in lines[1:]:
        text += ["0 -20 Td", f"({esc(line)}) Tj"]
    text.append("ET")
    stream = ("\n".join(text) + "\n").encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"endstream",
        b"<< /Title (Synthetic radiology report) /Producer (pacsnode make_sample_dicom) >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n" % (len(objects) + 1)
    out += b"0000000000 65535 f \n"
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 6 0 R >>\n" % (len(objects) + 1)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


# --------------------------------------------------------------------------- datasets


def base_dataset(study: StudySpec, series: SeriesSpec, n: int, device: Device) -> Dataset:
    """Patient, study, series, equipment and SOP common attributes shared by every IOD."""
    patient = PATIENTS[study.patient]
    inst = INSTITUTIONS[study.institution]
    series_time = add_time(study.study_time, minutes=2 + series.number % 50)
    content_time = add_time(series_time, seconds=15 * n)

    ds = Dataset()
    ds.SpecificCharacterSet = patient.charset
    ds.InstanceCreationDate = study.study_date
    ds.InstanceCreationTime = content_time
    ds.SOPClassUID = SOP_CLASS_BY_KIND[series.kind]
    ds.SOPInstanceUID = instance_uid(study, series, n)
    ds.TimezoneOffsetFromUTC = TIMEZONE

    # Patient
    ds.PatientName = patient.name
    ds.PatientID = study.patient_id
    ds.IssuerOfPatientID = study.institution
    ds.PatientBirthDate = patient.birth
    ds.PatientSex = patient.sex
    if patient.resident_id:
        other = Dataset()
        other.PatientID = patient.resident_id
        other.IssuerOfPatientID = RESIDENT_ID_ISSUER
        other.TypeOfPatientID = "TEXT"
        ds.OtherPatientIDsSequence = Sequence([other])
    ds.PatientAge = patient_age(patient.birth, study.study_date)

    # General Study
    ds.StudyInstanceUID = study.study_uid
    ds.StudyDate = study.study_date
    ds.StudyTime = study.study_time
    ds.ReferringPhysicianName = study.referring
    ds.StudyID = f"{study.sid:04d}"
    ds.AccessionNumber = study.accession
    ds.StudyDescription = study.description
    ds.ProcedureCodeSequence = Sequence(
        [code_item(study.procedure, PROCEDURE_SCHEME, PROCEDURES[study.procedure])]
    )

    # General Series
    ds.Modality = series.kind
    ds.SeriesInstanceUID = series_uid(study, series)
    ds.SeriesNumber = series.number
    ds.SeriesDescription = series.description
    ds.SeriesDate = study.study_date
    ds.SeriesTime = series_time
    if series.body_part:
        ds.BodyPartExamined = series.body_part

    # General Equipment
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = device.model
    ds.DeviceSerialNumber = device.serial
    ds.SoftwareVersions = device.software
    ds.StationName = device.ae
    ds.InstitutionName = inst.name
    ds.InstitutionAddress = inst.address
    ds.InstitutionalDepartmentName = device.department
    ds.InstitutionCodeSequence = Sequence([code_item(inst.code, INSTITUTION_SCHEME, inst.name)])

    # General Image / content
    ds.InstanceNumber = n
    ds.ContentDate = study.study_date
    ds.ContentTime = content_time
    return ds


def set_monochrome_pixels(ds: Dataset, pixels: np.ndarray, bits_stored: int, photometric: str) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype("<u2").tobytes()


def ct_instance(study: StudySpec, series: SeriesSpec, n: int, device: Device) -> Dataset:
    opt = series.options
    region = opt["region"]
    ds = base_dataset(study, series, n, device)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImageComments = "SYNTHETIC - not a real patient"
    ds.AcquisitionDate = study.study_date
    ds.AcquisitionTime = ds.SeriesTime
    ds.AcquisitionNumber = 1
    ds.PatientPosition = "HFS"
    ds.ProtocolName = series.description if series.description.isascii() else study.procedure
    ds.FrameOfReferenceUID = frame_of_reference_uid(study, series)
    ds.PositionReferenceIndicator = ""
    spacing = 3.0 if region == "chest" else 1.8
    thickness = 5.0
    z = (-150.0 if region == "chest" else 20.0) - thickness * (n - 1)
    half = spacing * 128 / 2
    ds.PixelSpacing = [f"{spacing:.1f}", f"{spacing:.1f}"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.ImagePositionPatient = [f"{-half:.1f}", f"{-half:.1f}", f"{z:.1f}"]
    ds.SliceLocation = f"{z:.1f}"
    ds.SliceThickness = f"{thickness:.1f}"
    ds.KVP = "120"
    ds.CTDIvol = 8.4 if region == "chest" else 52.0
    ds.XRayTubeCurrent = 180 if region == "chest" else 260
    ds.ExposureTime = 500
    ds.ConvolutionKernel = opt["kernel"]
    ds.ReconstructionDiameter = f"{spacing * 128:.1f}"
    ds.GantryDetectorTilt = "0"
    ds.RotationDirection = "CW"
    if opt.get("contrast"):
        ds.ContrastBolusAgent = "IOPAMIDOL 370"
        ds.ContrastBolusRoute = "IV"
        ds.ContrastBolusVolume = "80"
        ds.ContrastBolusIngredient = "IODINE"
    pixels = ct_pixels(region, n - 1, series.count, bool(opt.get("contrast")))
    set_monochrome_pixels(ds, pixels, 12, "MONOCHROME2")
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = opt["wc"]
    ds.WindowWidth = opt["ww"]
    return ds


def mr_instance(study: StudySpec, series: SeriesSpec, n: int, device: Device) -> Dataset:
    t2 = series.options["weighting"] == "T2"
    ds = base_dataset(study, series, n, device)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.ImageComments = "SYNTHETIC - not a real patient"
    ds.AcquisitionDate = study.study_date
    ds.AcquisitionTime = ds.SeriesTime
    ds.AcquisitionNumber = 1
    ds.PatientPosition = "HFS"
    ds.ProtocolName = series.description
    ds.FrameOfReferenceUID = frame_of_reference_uid(study, series)
    ds.PositionReferenceIndicator = ""
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "SK" if t2 else "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.SequenceName = "tse2d" if t2 else "se2d"
    ds.RepetitionTime = "4000" if t2 else "500"
    ds.EchoTime = "100" if t2 else "12"
    ds.EchoTrainLength = 16 if t2 else 1
    ds.NumberOfAverages = "2"
    ds.ImagingFrequency = "63.87"
    ds.ImagedNucleus = "1H"
    ds.MagneticFieldStrength = "1.5"
    ds.FlipAngle = "90"
    thickness = 5.0
    z = 60.0 - 6.0 * (n - 1)
    ds.SliceThickness = f"{thickness:.1f}"
    ds.SpacingBetweenSlices = "6.0"
    ds.PixelSpacing = ["1.8", "1.8"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.ImagePositionPatient = ["-115.2", "-115.2", f"{z:.1f}"]
    ds.SliceLocation = f"{z:.1f}"
    pixels = mr_pixels(series.options["weighting"], n - 1, series.count)
    set_monochrome_pixels(ds, pixels, 12, "MONOCHROME2")
    ds.WindowCenter = "500" if t2 else "450"
    ds.WindowWidth = "1000" if t2 else "900"
    return ds


def radiograph_instance(study: StudySpec, series: SeriesSpec, n: int, device: Device) -> Dataset:
    opt = series.options
    views = opt.get("views") or (opt.get("view", "PA"),)
    view = views[n - 1]
    mono1 = bool(opt.get("monochrome1"))
    ds = base_dataset(study, series, n, device)
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.ImageComments = "SYNTHETIC - not a real patient"
    ds.AcquisitionDate = study.study_date
    ds.AcquisitionTime = ds.ContentTime
    ds.AcquisitionNumber = n
    ds.ViewPosition = view
    ds.PatientOrientation = ["L", "F"] if view == "PA" else ["P", "F"]
    ds.KVP = "125" if view == "PA" else "110"
    ds.ExposureTime = 8 if view == "PA" else 20
    ds.XRayTubeCurrent = 320
    ds.Exposure = 3 if view == "PA" else 6
    ds.DistanceSourceToDetector = "1800"
    ds.ImagerPixelSpacing = ["2.8", "2.8"]
    pixels = radiograph_pixels(view)
    wc, ww = 1900, 3200
    if mono1:
        pixels = (4095 - pixels).astype(np.uint16)
        wc = 4095 - wc
    set_monochrome_pixels(ds, pixels, 12, "MONOCHROME1" if mono1 else "MONOCHROME2")
    ds.WindowCenter = str(wc)
    ds.WindowWidth = str(ww)
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    if series.kind == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ImageLaterality = "U"
        ds.AnatomicRegionSequence = Sequence([code_item("51185008", "SCT", "Chest")])
        ds.RescaleType = "US"
        ds.PixelIntensityRelationship = "LOG"
        ds.PixelIntensityRelationshipSign = 1
        ds.PresentationLUTShape = "INVERSE" if mono1 else "IDENTITY"
        ds.LossyImageCompression = "00"
        ds.BurnedInAnnotation = "NO"
        ds.DetectorType = "SCINTILLATOR"
        ds.PixelSpacing = ["2.8", "2.8"]
        ds.ImageAndFluoroscopyAreaDoseProduct = "0.12" if view == "PA" else "0.31"
    else:  # CR
        ds.PlateID = f"PLATE{n:02d}"
    return ds


def us_instance(study: StudySpec, series: SeriesSpec, n: int, device: Device) -> Dataset:
    ds = base_dataset(study, series, n, device)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL", "0001"]
    ds.ImageComments = "SYNTHETIC - not a real patient"
    ds.AcquisitionDate = study.study_date
    ds.AcquisitionTime = ds.ContentTime
    ds.PatientOrientation = ""
    ds.LossyImageCompression = "00"
    rgb = us_pixels(n - 1)
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = rgb.tobytes()
    return ds


def pdf_instance(study: StudySpec, series: SeriesSpec, n: int, device: Device) -> Dataset:
    patient = PATIENTS[study.patient]
    inst = INSTITUTIONS[study.institution]
    ds = base_dataset(study, series, n, device)
    ds.ConversionType = "WSD"
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = series.options["title"]
    ds.ConceptNameCodeSequence = Sequence([code_item("18748-4", "LN", "Diagnostic imaging report")])
    ds.AcquisitionDateTime = study.study_date + ds.ContentTime
    pdf = make_pdf(
        [
            f"{inst.name} - {series.options['title']}",
            "SYNTHETIC REPORT - not a real patient (generated by pacsnode)",
            f"Patient: {patient.name}   ID: {study.patient_id} ({study.institution})",
            f"Accession: {study.accession}   Study date: {study.study_date}",
            f"Procedure: {study.procedure} ({PROCEDURES[study.procedure]})",
            "Findings: lungs clear, no nodule, no effusion. Mediastinum normal.",
            "Impression: normal plain CT of the chest.",
        ]
    )
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.EncapsulatedDocument = pdf if len(pdf) % 2 == 0 else pdf + b"\x00"
    return ds


def sr_instance(study: StudySpec, series: SeriesSpec, n: int, device: Device) -> Dataset:
    inst = INSTITUTIONS[study.institution]
    ds = base_dataset(study, series, n, device)
    ds.ReferencedPerformedProcedureStepSequence = Sequence()
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "VERIFIED"
    observer = Dataset()
    observer.VerifyingObserverName = study.referring
    observer.VerifyingObserverIdentificationCodeSequence = Sequence()
    observer.VerifyingOrganization = inst.name
    observer.VerificationDateTime = study.study_date + add_time(study.study_time, minutes=90)
    ds.VerifyingObserverSequence = Sequence([observer])
    ds.PerformedProcedureCodeSequence = Sequence(
        [code_item(study.procedure, PROCEDURE_SCHEME, PROCEDURES[study.procedure])]
    )
    # evidence: every image series of the study
    evidence = Dataset()
    evidence.StudyInstanceUID = study.study_uid
    ref_series = []
    for other in study.series:
        if other.kind in ("SR", "DOC"):
            continue
        rs = Dataset()
        rs.SeriesInstanceUID = series_uid(study, other)
        refs = []
        for i in range(1, other.count + 1):
            ref = Dataset()
            ref.ReferencedSOPClassUID = SOP_CLASS_BY_KIND[other.kind]
            ref.ReferencedSOPInstanceUID = instance_uid(study, other, i)
            refs.append(ref)
        rs.ReferencedSOPSequence = Sequence(refs)
        ref_series.append(rs)
    evidence.ReferencedSeriesSequence = Sequence(ref_series)
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([evidence])
    # content tree: CONTAINER root with two TEXT children
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([code_item("18748-4", "LN", "Diagnostic imaging report")])
    ds.ContinuityOfContent = "SEPARATE"
    items = []
    for code, meaning, text in (
        ("121071", "Finding", "No acute intracranial abnormality. Ventricles normal in size. "
         "SYNTHETIC REPORT - not a real patient."),
        ("121073", "Impression", "Normal plain MR of the brain."),
    ):
        item = Dataset()
        item.RelationshipType = "CONTAINS"
        item.ValueType = "TEXT"
        item.ConceptNameCodeSequence = Sequence([code_item(code, "DCM", meaning)])
        item.TextValue = text
        items.append(item)
    ds.ContentSequence = Sequence(items)
    return ds


BUILDERS = {
    "CT": ct_instance,
    "MR": mr_instance,
    "DX": radiograph_instance,
    "CR": radiograph_instance,
    "US": us_instance,
    "DOC": pdf_instance,
    "SR": sr_instance,
}

# --------------------------------------------------------------------------- writing


def study_dir(study: StudySpec) -> Path:
    return Path(study.institution) / study.patient_id / f"{study.study_date}_{study.accession}"


def series_dir(study: StudySpec, series: SeriesSpec) -> Path:
    return study_dir(study) / f"{series.number:03d}_{series.kind}"


def write_instance(path: Path, ds: Dataset, implicit_vr: bool, source_ae: str) -> None:
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit_vr else ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    meta.SourceApplicationEntityTitle = source_ae
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128
    path.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(path, ds, enforce_file_format=True)


def days_before_reference(yyyymmdd: str) -> int:
    d = date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:]))
    return (REFERENCE_DATE - d).days


REPO = Path(__file__).resolve().parents[1]
DEFAULT_README = REPO / "docs" / "sample_dicom.md"
DEFAULT_MANIFEST = REPO / "tests" / "data" / "sample_manifest.json"


def generate(out: Path, manifest_path: Path = DEFAULT_MANIFEST, readme_path: Path = DEFAULT_README) -> dict:
    """Write the DICOM files under ``out`` and their description to the two other paths."""
    out.mkdir(parents=True, exist_ok=True)
    # only the folders this script owns are replaced
    for code in INSTITUTIONS:
        if (out / code).is_dir():
            shutil.rmtree(out / code)

    manifest_studies = []
    for study in STUDIES:
        device = DEVICES[study.device]
        assert device.institution == study.institution, study
        series_out = []
        for series in study.series:
            source_ae = series.options.get("source_ae", device.ae)
            series_device = DEVICES[source_ae]
            assert series_device.institution == study.institution, (study, series)
            files = []
            for n in range(1, series.count + 1):
                ds = BUILDERS[series.kind](study, series, n, series_device)
                rel = series_dir(study, series) / f"{n}.dcm"
                write_instance(out / rel, ds, study.implicit_vr, source_ae)
                files.append(rel.as_posix())
            series_out.append(
                {
                    "series_number": series.number,
                    "modality": series.kind,
                    "sop_class_uid": SOP_CLASS_BY_KIND[series.kind],
                    "series_instance_uid": series_uid(study, series),
                    "description": series.description,
                    "body_part": series.body_part,
                    "source_ae": source_ae,
                    "transfer_syntax_uid": str(ImplicitVRLittleEndian if study.implicit_vr else ExplicitVRLittleEndian),
                    "files": files,
                }
            )
        patient = PATIENTS[study.patient]
        manifest_studies.append(
            {
                "study_instance_uid": study.study_uid,
                "institution": study.institution,
                "patient_key": study.patient,
                "patient_id": study.patient_id,
                "issuer_of_patient_id": study.institution,
                "resident_id": patient.resident_id,
                "accession_number": study.accession,
                "study_date": study.study_date,
                "study_time": study.study_time,
                "days_before_reference_date": days_before_reference(study.study_date),
                "procedure_code": study.procedure,
                "description": study.description,
                "calling_ae": device.ae,
                "contrast": any(s.options.get("contrast") for s in study.series),
                "series": series_out,
            }
        )

    manifest = {
        "generated_by": "scripts/make_sample_dicom.py",
        "reference_date": REFERENCE_DATE.strftime("%Y%m%d"),
        "uid_root": UID_ROOT,
        "institutions": [
            {
                "code": i.code,
                "name": i.name,
                "level": i.level,
                "in_alliance": i.alliance,
                "calling_aes": list(i.aes),
            }
            for i in INSTITUTIONS.values()
        ],
        "patients": [
            {
                "key": p.key,
                "name": p.name,
                "sex": p.sex,
                "birth_date": p.birth,
                "specific_character_set": p.charset,
                "resident_id": p.resident_id,
                "local_ids": [{"patient_id": pid, "issuer": code} for code, pid in p.local_ids.items()],
                "note": p.note,
            }
            for p in PATIENTS.values()
        ],
        "studies": manifest_studies,
    }
    for path in (manifest_path, readme_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(
        json.dumps(manifest, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8"
    )
    readme_path.write_text(readme(manifest), encoding="utf-8")
    return manifest


def readme(manifest: dict) -> str:
    n_files = sum(len(s["files"]) for st in manifest["studies"] for s in st["series"])
    lines = [
        "# Sample DICOM region (synthetic)",
        "",
        "**Generated by `scripts/make_sample_dicom.py` - do not edit by hand.** Change the script",
        "and regenerate with `python scripts/make_sample_dicom.py sample_dicom` (or `make samples`).",
        "The generator is deterministic: re-running it produces byte-identical files.",
        "",
        "Everything here is synthetic: patients, resident IDs, devices and hospitals are made up.",
        f"There are {len(manifest['studies'])} studies and {n_files} DICOM Part 10 files. UIDs live under",
        f"`{manifest['uid_root']}` (study `1.<n>`, series `2.<n>.<series>`, instance `3.<n>.<series>.<i>`,",
        "frame of reference `4.<n>`). The demo's \"today\" is 2026-11-26: the `Age` column",
        "gives the age of each study in days relative to it.",
        "",
        "Layout of `sample_dicom/` (DICOM files only, so `storescu +sd +r sample_dicom` sends all of it):",
        "`<INSTITUTION_CODE>/<PatientID>/<StudyDate>_<AccessionNumber>/<SeriesNumber>_<Modality>/<InstanceNumber>.dcm`.",
        "`tests/data/sample_manifest.json` holds the same information as this file in machine-readable form.",
        "",
        "All files use Explicit VR Little Endian except "
        + ", ".join(
            f"study {st['study_instance_uid'].rsplit('.', 1)[1]} ({st['institution']}, {st['accession_number']})"
            for st in manifest["studies"]
            if any(s["transfer_syntax_uid"] == str(ImplicitVRLittleEndian) for s in st["series"])
        )
        + ",",
        "which uses Implicit VR Little Endian. No compressed transfer syntaxes are used.",
        "",
        "## Institutions",
        "",
        "Every instance carries InstitutionName and InstitutionCodeSequence (CodeValue = code,",
        "CodingSchemeDesignator `CN-INST`, CodeMeaning = name), StationName (= the sending AE title),",
        "Manufacturer `pacsnode-synthetic` and DeviceSerialNumber. The file meta",
        "SourceApplicationEntityTitle is the AE title that would send the file.",
        "",
        "| Code | Name | Level | Alliance | Calling AE titles |",
        "|---|---|---|---|---|",
    ]
    for i in manifest["institutions"]:
        lines.append(
            f"| {i['code']} | {i['name']} | {i['level']} | {'yes' if i['in_alliance'] else 'no'} "
            f"| {', '.join(i['calling_aes'])} |"
        )
    lines += [
        "",
        "## Patients",
        "",
        "A patient is identified by PatientID + IssuerOfPatientID (the code of the hospital that",
        "assigned the ID). Resident IDs are in OtherPatientIDsSequence with IssuerOfPatientID",
        "`CN-RESIDENT-ID` and TypeOfPatientID `TEXT`; they are synthetic and do not carry a valid",
        "GB 11643 check digit.",
        "",
        "| Name | Sex | Birth date | SpecificCharacterSet | Local IDs (PatientID @ issuer) | Resident ID | Note |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in manifest["patients"]:
        ids = ", ".join(f"{x['patient_id']} @ {x['issuer']}" for x in p["local_ids"])
        lines.append(
            f"| {p['name']} | {p['sex']} | {p['birth_date']} | {p['specific_character_set']} | {ids} "
            f"| {p['resident_id'] or '-'} | {p['note']} |"
        )
    lines += [
        "",
        "## Studies",
        "",
        "| # | Institution | Patient | PatientID @ issuer | Accession | Date | Age (days) | Procedure code | Series (modality x files) | Study Instance UID |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    names = {p["key"]: p["name"] for p in manifest["patients"]}
    for st in manifest["studies"]:
        series = "; ".join(f"{s['series_number']} {s['modality']} x{len(s['files'])}" for s in st["series"])
        proc = st["procedure_code"] + (" (contrast)" if st["contrast"] else "")
        lines.append(
            f"| {st['study_instance_uid'].rsplit('.', 1)[1]} | {st['institution']} | {names[st['patient_key']]} "
            f"| {st['patient_id']} @ {st['issuer_of_patient_id']} | {st['accession_number']} | {st['study_date']} "
            f"| {st['days_before_reference_date']} | {proc} | {series} | `{st['study_instance_uid']}` |"
        )
    lines += [
        "",
        "Procedure codes use CodingSchemeDesignator `CN-HR` in ProcedureCodeSequence. The CR study",
        "(study 4) is coded `DX-CHEST` like the DX chest radiographs.",
        "",
        "## Things to look for",
        "",
        "- CHEN^JIANGUO (resident ID 520100199001010011) has a DX chest at TWN001 (6 days old), a plain",
        "  CT chest at CTY001 (16 days, with an encapsulated PDF report) and an MR brain at PRV001",
        "  (117 days, with a Basic Text SR report), each under that hospital's own PatientID.",
        "- PatientID `P0001` is ZHAO^LEI at CTY001 and QIAN^MEI at PRV001: different people.",
        "- 王^小明 (GB18030) has the contrast CT (ContrastBolusAgent on the arterial series).",
        "- 李^华 uses ISO_IR 192 (UTF-8) and has the RGB ultrasound.",
        "- WU^FANG's radiographs are MONOCHROME1 (PresentationLUTShape INVERSE).",
        "- ZHOU^MING's CT chest was done at PVT001, which is in no alliance.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    # any value that does not fit its VR is a bug in this script: fail loudly
    pydicom_config.settings.writing_validation_mode = pydicom_config.RAISE
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output folder, normally sample_dicom")
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST, help="where the JSON manifest goes")
    parser.add_argument("--readme", type=Path, default=DEFAULT_README, help="where the Markdown description goes")
    args = parser.parse_args(argv)
    manifest = generate(args.out, args.manifest, args.readme)
    n_files = sum(len(s["files"]) for st in manifest["studies"] for s in st["series"])
    print(f"wrote {n_files} files in {len(manifest['studies'])} studies to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
