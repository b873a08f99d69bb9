"""Hostile input: what a peer can send, and a server that survives every bit of it.

Three families of input, each a hypothesis strategy (``store_inputs``, ``find_inputs``,
``pdu_inputs``) shared with the short, derandomized version in ``tests/test_fuzz.py``:

* C-STORE datasets (sent with pynetdicom, ``STORE_SEND_CHUNKED_DATASET`` so the crafted bytes
  go out as they are): random bytes after a valid File Meta, truncated elements, wrong VRs,
  huge declared lengths, bad Specific Character Set values, UIDs with ``../`` and ``/``,
  over-long UIDs, broken sequences; and C-STORE commands whose Affected SOP Instance UID is
  itself hostile (sent by the raw SCU below: pynetdicom refuses to encode those);
* C-FIND identifiers (raw SCU): missing or bad Query/Retrieve Level, garbage sequences, bad
  character sets, wrong VRs, huge lengths, random bytes;
* PDUs on a raw socket: random bytes, an A-ASSOCIATE-RQ header with an absurd length,
  truncated and mutated A-ASSOCIATE-RQs, and garbage after a valid association (P-DATA with
  inconsistent lengths, unknown PDU types, a C-STORE abandoned in the middle of its dataset).

After each input (``FuzzTarget.after``): the server process is alive and answers C-ECHO
within a timeout, ``<home>/tmp`` is empty once the association has ended, no refused
instance has a row; at the end ``pacsnode check`` is clean.

Usage::

    python -m bench.fuzz --count 3000 --seed 5
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sqlite3
import struct
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from bench.node_process import NodeProcess
from bench.soak_crash import (
    chunked_send,
    echo,
    free_port,
    init_home,
    pacsnode,
    quiet_pynetdicom,
    run_check,
    write_instance,
)

UID_ROOT = "1.2.826.0.1.3680043.10.1078.68"
CT = str(CTImageStorage)
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
PATIENT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT, EXPLICIT = str(ImplicitVRLittleEndian), str(ExplicitVRLittleEndian)
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
ALL_VRS = [b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB", b"OD",
           b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM", b"UC", b"UI",
           b"UL", b"UN", b"UR", b"US", b"UT", b"UV"]
FUZZ_AET = "FUZZSCU"
_RUN = int(time.time()) % 10**9 + 10**9  # ten digits: every UID has the same length, whatever the counter
_counter = iter(range(10**12, 10**13))


def next_uid() -> str:
    """A fresh UID of constant length (hypothesis needs draws not to depend on outside state)."""
    return f"{UID_ROOT}.{_RUN}.{next(_counter)}"


# -- encoding by hand (so that anything can be wrong) ------------------------------------------
def element(group: int, elem: int, vr: bytes | None, value: bytes, length: int | None = None) -> bytes:
    """One data element, Explicit VR Little Endian (``vr``) or Implicit (``vr=None``); ``length`` lies."""
    declared = len(value) if length is None else length
    if vr is None:
        return struct.pack("<HHI", group, elem, declared & 0xFFFFFFFF) + value
    if vr in LONG_VRS:
        return struct.pack("<HH2sHI", group, elem, vr, 0, declared & 0xFFFFFFFF) + value
    return struct.pack("<HH2sH", group, elem, vr, declared & 0xFFFF) + value


def pad(value: bytes, filler: bytes = b" ") -> bytes:
    return value + filler if len(value) % 2 else value


def uid_value(uid: str | bytes) -> bytes:
    raw = uid.encode("utf-8", "surrogateescape") if isinstance(uid, str) else uid
    return pad(raw, b"\0")


def file_meta(sop_instance_uid: str | bytes, sop_class: str = CT, syntax: str = EXPLICIT) -> bytes:
    """Preamble, DICM and a valid File Meta group (whatever the UID says)."""
    body = (element(2, 0x0001, b"OB", b"\x00\x01") + element(2, 0x0002, b"UI", uid_value(sop_class))
            + element(2, 0x0003, b"UI", uid_value(sop_instance_uid)) + element(2, 0x0010, b"UI", uid_value(syntax))
            + element(2, 0x0012, b"UI", uid_value(f"{UID_ROOT}.1")))
    return b"\0" * 128 + b"DICM" + element(2, 0x0000, b"UL", struct.pack("<I", len(body))) + body


def base_elements(sop_uid: str | bytes, study: str, series: str, charset: bytes = b"ISO_IR 192") -> list[tuple]:
    """(group, elem, vr, value) of a small valid CT instance, in tag order."""
    return [
        (0x0008, 0x0005, b"CS", pad(charset)),
        (0x0008, 0x0016, b"UI", uid_value(CT)),
        (0x0008, 0x0018, b"UI", uid_value(sop_uid)),
        (0x0008, 0x0020, b"DA", b"20260301"),
        (0x0008, 0x0060, b"CS", b"CT"),
        (0x0008, 0x0080, b"LO", pad(b"Fuzz Hospital")),
        (0x0010, 0x0010, b"PN", pad(b"FUZZ^PATIENT")),
        (0x0010, 0x0020, b"LO", pad(b"FUZZ1")),
        (0x0010, 0x0021, b"LO", pad(b"FUZZ")),
        (0x0020, 0x000D, b"UI", uid_value(study)),
        (0x0020, 0x000E, b"UI", uid_value(series)),
        (0x0020, 0x0013, b"IS", b"1 "),
        (0x0028, 0x0002, b"US", struct.pack("<H", 1)),
        (0x0028, 0x0004, b"CS", pad(b"MONOCHROME2")),
        (0x0028, 0x0010, b"US", struct.pack("<H", 8)),
        (0x0028, 0x0011, b"US", struct.pack("<H", 8)),
        (0x0028, 0x0100, b"US", struct.pack("<H", 16)),
        (0x0028, 0x0101, b"US", struct.pack("<H", 12)),
        (0x0028, 0x0102, b"US", struct.pack("<H", 11)),
        (0x0028, 0x0103, b"US", struct.pack("<H", 0)),
        (0x7FE0, 0x0010, b"OW", bytes(range(128))),
    ]


def encode(elements: list[tuple], explicit: bool = True) -> bytes:
    out = b""
    for item in elements:
        group, elem, vr, value = item[:4]
        length = item[4] if len(item) > 4 else None
        out += element(group, elem, vr if explicit else None, value, length)
    return out


# -- C-STORE inputs ----------------------------------------------------------------------------
@dataclass
class StoreInput:
    """A crafted Part 10 file and how to send it; ``uids`` may never be indexed unless Success."""

    kind: str
    data: bytes
    command_uid: str | bytes
    uids: tuple[str, ...] = ()
    raw_command: bool = False  # send with the raw SCU (a UID pynetdicom would not encode)
    syntax: str = EXPLICIT


_SEQUENCE_GARBAGE = st.sampled_from([
    b"\xfe\xff\x00\xe0\xff\xff\xff\xff",  # item, undefined length, never delimited
    b"\xfe\xff\x00\xe0\x10\x00\x00\x00" + b"\x10\x00\x20\x00LO\x04\x00ABCD",  # item longer than its content
    b"\xfe\xff\xdd\xe0\x00\x00\x00\x00",  # sequence delimiter first
    b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" * 3,  # item delimiters, no item
    b"\xfe\xff\x00\xe0\xff\xff\xff\xff" * 64,  # deep nesting start
    b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 192",  # an element where an item must be
])
_HOSTILE_UIDS = st.one_of(
    st.sampled_from(["../../../../etc/passwd", "/etc/passwd", "1.2.3/../../x", "..", "../", "1.2.3\\..\\x",
                     "1.2.3\x00.4", "1.2.3 ", " 1.2.3", "1..2", ".1.2", "1.2.", "", "1.2.3\n4", "%2e%2e%2f",
                     "1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17.18.19.20.21.22.23.24.25.26.27.28.29.30.31.32",
                     "1" * 65, "1." * 40 + "1", "1.2." + "9" * 200, "１.２.３", "1.2.3;rm -rf /", "C:\\x", "~/x",
                     "NUL", "1.2.3.dcm/..", "./1.2.3"]),
    st.text(alphabet=st.sampled_from("0123456789./\\-_ \x00"), min_size=0, max_size=120),
)
_CHARSETS = st.one_of(
    st.sampled_from([b"", b"\\", b"ISO_IR 999", b"ISO 2022 IR 87\\ISO 2022 IR 159", b"GB18030\\GBK",
                     b"ISO 2022 IR 58", b"\\\\\\ISO_IR 100", b"ISO_IR 192\\ISO_IR 100", b"\xff\xfe", b"\x00" * 8,
                     b"ISO-IR 100", b"utf-8", b"ISO 2022 IR 6\\ISO 2022 IR 13\\ISO 2022 IR 87\\ISO 2022 IR 149"]),
    st.binary(max_size=64),
)


@st.composite
def store_inputs(draw: Any) -> StoreInput:
    kind = draw(st.sampled_from(["garbage_after_meta", "truncated", "wrong_vr", "huge_length", "bad_charset",
                                 "bad_uid", "command_uid", "bad_sequence", "implicit_garbage"]))
    sop, study, series = next_uid(), next_uid(), next_uid()
    elements = base_elements(sop, study, series)
    if kind == "garbage_after_meta":
        return StoreInput(kind, file_meta(sop) + draw(st.binary(min_size=0, max_size=4096)), sop, (sop,))
    if kind == "implicit_garbage":
        body = encode(elements, explicit=False)
        cut = draw(st.integers(0, len(body)))
        return StoreInput(kind, file_meta(sop, syntax=IMPLICIT) + body[:cut] + draw(st.binary(max_size=512)), sop,
                          (sop,), syntax=IMPLICIT)
    if kind == "truncated":
        body = encode(elements)
        cut = draw(st.integers(0, len(body) - 1))
        return StoreInput(kind, file_meta(sop) + body[:cut], sop, (sop,))
    if kind == "wrong_vr":
        for _ in range(draw(st.integers(1, 4))):
            index = draw(st.integers(0, len(elements) - 1))
            group, elem, _vr, value = elements[index][:4]
            vr = draw(st.one_of(st.sampled_from(ALL_VRS), st.binary(min_size=2, max_size=2)))
            elements[index] = (group, elem, vr, value)
        return StoreInput(kind, file_meta(sop) + encode(elements), sop, (sop,))
    if kind == "huge_length":
        index = draw(st.integers(0, len(elements) - 1))
        group, elem, vr, value = elements[index][:4]
        if draw(st.booleans()):
            vr = draw(st.sampled_from([b"OB", b"UN", b"UT", b"SQ", b"OW"]))
        limit = 0xFFFFFFFF if vr in LONG_VRS else 0xFFFF
        length = draw(st.one_of(st.just(limit), st.just(limit - 1), st.integers(len(value) + 1, limit)))
        elements[index] = (group, elem, vr, value, length)
        return StoreInput(kind, file_meta(sop) + encode(elements), sop, (sop,))
    if kind == "bad_charset":
        elements[0] = (0x0008, 0x0005, b"CS", pad(draw(_CHARSETS)))
        name = draw(st.binary(min_size=1, max_size=80))
        elements[6] = (0x0010, 0x0010, b"PN", pad(name))
        elements[5] = (0x0008, 0x0080, b"LO", pad(draw(st.binary(max_size=64))))
        return StoreInput(kind, file_meta(sop) + encode(elements), sop, (sop,))
    if kind == "bad_sequence":
        garbage = draw(_SEQUENCE_GARBAGE) + draw(st.binary(max_size=64))
        defined = draw(st.booleans())
        seq = (0x0010, 0x1002, b"SQ", garbage, None if defined else 0xFFFFFFFF)
        elements.insert(9, seq)
        return StoreInput(kind, file_meta(sop) + encode(elements), sop, (sop,))
    hostile = draw(_HOSTILE_UIDS)
    if kind == "bad_uid":  # the dataset's UID is hostile; the command and meta carry it when pynetdicom can
        elements[2] = (0x0008, 0x0018, b"UI", uid_value(hostile))
        if draw(st.booleans()):
            elements[9] = (0x0020, 0x000D, b"UI", uid_value(draw(_HOSTILE_UIDS)))
        carries = 0 < len(hostile) <= 64 and "\\" not in hostile
        command = hostile if carries else sop
        return StoreInput(kind, file_meta(command) + encode(elements), command, (sop, hostile))
    # command_uid: the C-STORE command's Affected SOP Instance UID itself is hostile (raw SCU)
    if draw(st.booleans()):
        elements[2] = (0x0008, 0x0018, b"UI", uid_value(hostile))
    return StoreInput(kind, file_meta(sop) + encode(elements), hostile, (sop, hostile), raw_command=True)


# -- C-FIND inputs -----------------------------------------------------------------------------
@dataclass
class FindInput:
    kind: str
    identifier: bytes
    sop_class: str
    syntax: str


_LEVELS = st.one_of(st.sampled_from([None, b"", b"PATIENT", b"STUDY", b"SERIES", b"IMAGE", b"FOO", b"STUDY\\SERIES",
                                     b"study", b" STUDY", b"\x00\x00", b"FRAME"]),
                    st.binary(max_size=24))
_KEY_VALUES = st.one_of(st.sampled_from([b"", b"*", b"?", b"FUZZ1", b"FUZZ*", b"\\", b"\\\\\\", b"A=B=C=D",
                                         b"^^^^^", b"20260301-", b"-", b"abc-def", b"2026-1-1", b"99999999",
                                         b"1.2.3\\1.2.4", b"../", b"*" * 64]),
                        st.binary(max_size=128))
_FIND_TAGS = [(0x0008, 0x0020, b"DA"), (0x0008, 0x0030, b"TM"), (0x0008, 0x0050, b"SH"), (0x0008, 0x0061, b"CS"),
              (0x0008, 0x0090, b"PN"), (0x0010, 0x0010, b"PN"), (0x0010, 0x0030, b"DA"), (0x0010, 0x0040, b"CS"),
              (0x0020, 0x000D, b"UI"), (0x0020, 0x000E, b"UI"), (0x0020, 0x0010, b"SH"), (0x0008, 0x0018, b"UI"),
              (0x0008, 0x0060, b"CS"), (0x0020, 0x1208, b"IS"), (0x0008, 0x1030, b"LO"), (0x0011, 0x0010, b"LO"),
              (0x0011, 0x1001, b"CS"), (0x0009, 0x0010, b"LO"), (0x0009, 0x1001, b"UN"), (0x4321, 0x1234, b"UN")]


@st.composite
def find_inputs(draw: Any) -> FindInput:
    sop_class = draw(st.sampled_from([STUDY_FIND, PATIENT_FIND]))
    syntax = draw(st.sampled_from([IMPLICIT, EXPLICIT]))
    explicit = syntax == EXPLICIT
    if draw(st.integers(0, 9)) == 0:
        return FindInput("random_bytes", draw(st.binary(max_size=2048)), sop_class, syntax)
    elements: list[tuple] = []
    kind = "structured"
    charset = draw(st.one_of(st.none(), _CHARSETS))
    if charset is not None:
        elements.append((0x0008, 0x0005, b"CS", pad(charset)))
    level = draw(_LEVELS)
    if level is not None:
        elements.append((0x0008, 0x0052, b"CS", pad(level)))
    if draw(st.booleans()):  # patient context, so that access rules let the query reach matching
        elements.append((0x0010, 0x0020, b"LO", pad(draw(_KEY_VALUES))))
        elements.append((0x0010, 0x0021, b"LO", pad(b"FUZZ")))
    for group, elem, vr in draw(st.lists(st.sampled_from(_FIND_TAGS), max_size=8, unique=True)):
        elements.append((group, elem, vr, pad(draw(_KEY_VALUES))))
    if draw(st.booleans()):
        kind = "sequence"
        item = encode([(0x0010, 0x0020, b"LO", pad(draw(_KEY_VALUES))), (0x0010, 0x0021, b"LO", b"FUZZ")], explicit)
        body = draw(st.sampled_from([
            b"\xfe\xff\x00\xe0" + struct.pack("<I", len(item)) + item,  # one well-formed item
            (b"\xfe\xff\x00\xe0" + struct.pack("<I", len(item)) + item) * 2,  # two items: not allowed in a key
            b"\xfe\xff\x00\xe0\xff\xff\xff\xff" + item,  # undefined-length item, no delimiter
            b"",
        ])) + draw(_SEQUENCE_GARBAGE if draw(st.booleans()) else st.just(b""))
        elements.append((0x0010, 0x1002, b"SQ", body, draw(st.sampled_from([None, 0xFFFFFFFF]))))
    if draw(st.booleans()):
        kind = "wrong_vr" if explicit else "odd_elements"
        index = draw(st.integers(0, max(0, len(elements) - 1)))
        if elements:
            group, elem, _vr, value = elements[index][:4]
            elements[index] = (group, elem, draw(st.sampled_from(ALL_VRS)), value)
    if elements and draw(st.integers(0, 4)) == 0:
        kind = "huge_length"
        index = draw(st.integers(0, len(elements) - 1))
        group, elem, vr, value = elements[index][:4]
        elements[index] = (group, elem, vr, value, draw(st.sampled_from([0xFFFF, 0xFFFFFFFE, 0x7FFFFFFF, 1 << 20])))
    if draw(st.integers(0, 5)) == 0:
        kind = "unsorted"
        elements = list(reversed(elements))
    else:
        elements.sort(key=lambda e: (e[0], e[1]))
    return FindInput(kind, encode(elements, explicit), sop_class, syntax)


# -- PDU inputs --------------------------------------------------------------------------------
@dataclass
class PduInput:
    kind: str
    chunks: list[bytes]  # sent one after another (a valid RQ first for the "after association" kinds)
    associate_first: bool = False
    storage_and_find: bool = False  # propose Q/R too (pynetdicom serves such associations)


def _item(item_type: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(payload)) + payload


def associate_rq(contexts: list[tuple[int, str, list[str]]], calling: str = FUZZ_AET, called: str = "PACSNODE",
                 max_pdu: int = 65536) -> bytes:
    body = struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode() + b"\0" * 32
    body += _item(0x10, b"1.2.840.10008.3.1.1.1")
    for pcid, abstract, syntaxes in contexts:
        sub = _item(0x30, abstract.encode()) + b"".join(_item(0x40, ts.encode()) for ts in syntaxes)
        body += _item(0x20, bytes([pcid, 0, 0, 0]) + sub)
    user = _item(0x51, struct.pack(">I", max_pdu)) + _item(0x52, f"{UID_ROOT}.1".encode()) + _item(0x55, b"FUZZ")
    body += _item(0x50, user)
    return struct.pack(">BBI", 1, 0, len(body)) + body


def pdata(pcid: int, flags: int, fragment: bytes) -> bytes:
    pdv = struct.pack(">IBB", len(fragment) + 2, pcid, flags) + fragment
    return struct.pack(">BBI", 4, 0, len(pdv)) + pdv


def command_set(fields: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(struct.pack("<HHI", 0, elem, len(value)) + value for elem, value in sorted(fields))
    return struct.pack("<HHI", 0, 0, 4) + struct.pack("<I", len(body)) + body


def store_command(sop_uid: str | bytes, message_id: int = 1, sop_class: str = CT) -> bytes:
    return command_set([(0x0002, uid_value(sop_class)), (0x0100, struct.pack("<H", 0x0001)),
                        (0x0110, struct.pack("<H", message_id)), (0x0700, struct.pack("<H", 0)),
                        (0x0800, struct.pack("<H", 0x0000)), (0x1000, uid_value(sop_uid))])


def find_command(sop_class: str, message_id: int = 1) -> bytes:
    return command_set([(0x0002, uid_value(sop_class)), (0x0100, struct.pack("<H", 0x0020)),
                        (0x0110, struct.pack("<H", message_id)), (0x0700, struct.pack("<H", 0)),
                        (0x0800, struct.pack("<H", 0x0000))])


STORE_CONTEXTS = [(1, CT, [EXPLICIT]), (3, CT, [IMPLICIT]), (5, VERIFICATION, [IMPLICIT])]
MIXED_CONTEXTS = STORE_CONTEXTS + [(7, STUDY_FIND, [IMPLICIT])]
FIND_CONTEXTS = [(1, STUDY_FIND, [IMPLICIT]), (3, STUDY_FIND, [EXPLICIT]), (5, PATIENT_FIND, [IMPLICIT]),
                 (7, PATIENT_FIND, [EXPLICIT])]


@st.composite
def pdu_inputs(draw: Any) -> PduInput:
    kind = draw(st.sampled_from(["random", "absurd_length", "truncated_rq", "mutated_rq", "garbage_pdata",
                                 "bad_pdv_length", "unknown_pdu", "store_abandoned", "store_abandoned_mixed",
                                 "release_first", "second_rq", "huge_pdata"]))
    rq = associate_rq(STORE_CONTEXTS)
    if kind == "random":
        return PduInput(kind, [draw(st.binary(min_size=1, max_size=4096))])
    if kind == "absurd_length":
        pdu_type = draw(st.sampled_from([1, 1, 1, 2, 4, 5, 7, 0x99]))
        length = draw(st.one_of(st.just(0xFFFFFFFF), st.integers(1 << 20, 0xFFFFFFFF)))
        return PduInput(kind, [struct.pack(">BBI", pdu_type, 0, length) + draw(st.binary(max_size=256))])
    if kind == "truncated_rq":
        return PduInput(kind, [rq[:draw(st.integers(1, len(rq) - 1))]])
    if kind == "mutated_rq":
        data = bytearray(rq)
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return PduInput(kind, [bytes(data)])
    if kind == "release_first":
        return PduInput(kind, [draw(st.sampled_from([b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00",
                                                     b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00",
                                                     b"\x04\x00\x00\x00\x00\x06\x00\x00\x00\x02\x01\x03"]))])
    # the rest runs after a valid A-ASSOCIATE-RQ (the AC is read first)
    if kind == "garbage_pdata":
        body = draw(st.binary(max_size=2048))
        return PduInput(kind, [struct.pack(">BBI", 4, 0, len(body)) + body], associate_first=True)
    if kind == "bad_pdv_length":
        fragment = store_command(next_uid())
        declared = draw(st.sampled_from([0, 1, 2, len(fragment) + 100, 0xFFFFFFFF]))
        pdv = struct.pack(">IBB", declared, draw(st.sampled_from([1, 2, 3, 255])), 3) + fragment
        return PduInput(kind, [struct.pack(">BBI", 4, 0, len(pdv)) + pdv], associate_first=True)
    if kind == "unknown_pdu":
        pdu_type = draw(st.sampled_from([0, 8, 9, 0x41, 0xFF, 2, 3, 6]))
        body = draw(st.binary(max_size=64))
        return PduInput(kind, [struct.pack(">BBI", pdu_type, 0, len(body)) + body], associate_first=True)
    if kind == "second_rq":
        return PduInput(kind, [rq], associate_first=True)
    if kind == "huge_pdata":
        return PduInput(kind, [struct.pack(">BBI", 4, 0, draw(st.integers(1 << 24, 0xFFFFFFFF))) + b"\0" * 64],
                        associate_first=True)
    # store_abandoned(_mixed): a C-STORE whose dataset stops half-way; then close or A-ABORT
    sop = next_uid()
    dataset = encode(base_elements(sop, next_uid(), next_uid()))
    cut = draw(st.integers(1, len(dataset) - 1))
    chunks = [pdata(1, 0x03, store_command(sop)), pdata(1, 0x00, dataset[:cut])]
    if draw(st.booleans()):
        chunks.append(b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00")  # A-ABORT
    return PduInput(kind, chunks, associate_first=True, storage_and_find=kind.endswith("mixed"))


# -- a raw SCU ---------------------------------------------------------------------------------
class RawAssociation:
    """Just enough of an association requestor to send bytes no library would encode."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.timeout = timeout
        self.accepted: dict[int, bool] = {}
        self.answer = ""

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def read_pdu(self, timeout: float | None = None) -> tuple[int, bytes] | None:
        """(type, body) of the next PDU, or None when the peer closed."""
        self.sock.settimeout(timeout or self.timeout)
        header = self._recv(6)
        if header is None:
            return None
        pdu_type, length = struct.unpack(">BxI", header)
        body = self._recv(length) if length else b""
        return (pdu_type, body) if body is not None else None

    def _recv(self, size: int) -> bytes | None:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def associate(self, contexts: list[tuple[int, str, list[str]]]) -> bool:
        self.sock.sendall(associate_rq(contexts))
        pdu = self.read_pdu()
        self.answer = "closed" if pdu is None else f"pdu-0x{pdu[0]:02x}"
        if pdu is None or pdu[0] != 2:
            return False
        body, offset = pdu[1], 68
        while offset + 4 <= len(body):
            item_type, length = struct.unpack(">BxH", body[offset:offset + 4])
            if item_type == 0x21:
                self.accepted[body[offset + 4]] = body[offset + 6] == 0
            offset += 4 + length
        return True

    def send_dimse(self, pcid: int, command: bytes, dataset: bytes | None, fragment: int = 16000) -> None:
        self.sock.sendall(pdata(pcid, 0x03, command))
        if dataset is None:
            return
        if not dataset:
            self.sock.sendall(pdata(pcid, 0x02, b""))
        for start in range(0, len(dataset), fragment):
            last = start + fragment >= len(dataset)
            self.sock.sendall(pdata(pcid, 0x02 if last else 0x00, dataset[start:start + fragment]))

    def responses(self, timeout: float) -> list[int] | str:
        """Statuses of DIMSE responses until a final one; or "aborted"/"closed"/"timeout"."""
        statuses: list[int] = []
        command = b""
        deadline = time.monotonic() + timeout
        try:
            while True:
                pdu = self.read_pdu(max(0.1, deadline - time.monotonic()))
                if pdu is None:
                    return "closed"
                if pdu[0] == 7:
                    return "aborted"
                if pdu[0] != 4:
                    return f"pdu-0x{pdu[0]:02x}"
                body, offset = pdu[1], 0
                while offset + 6 <= len(body):
                    length, _pcid, flags = struct.unpack(">IBB", body[offset:offset + 6])
                    fragment = body[offset + 6:offset + 4 + length]
                    offset += 4 + length
                    if not flags & 1:
                        continue  # dataset fragment
                    command += fragment
                    if flags & 2:
                        status = parse_status(command)
                        command = b""
                        statuses.append(status)
                        if status not in (0xFF00, 0xFF01):
                            return statuses
        except (TimeoutError, socket.timeout):
            return "timeout"
        except OSError:
            return "closed"

    def release(self) -> None:
        try:
            self.sock.sendall(b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00")
            self.read_pdu(2.0)
        except OSError:
            pass
        self.close()


def parse_status(command: bytes) -> int:
    offset = 0
    while offset + 8 <= len(command):
        _group, elem, length = struct.unpack("<HHI", command[offset:offset + 8])
        if elem == 0x0900 and length == 2:
            return int(struct.unpack("<H", command[offset + 8:offset + 10])[0])
        offset += 8 + length
    return -1


# -- the target and the checks -----------------------------------------------------------------
class FuzzFailure(AssertionError):
    pass


@dataclass
class FuzzTarget:
    """A served node, its checks after each input, and counts of what was tried and what came back."""

    workdir: Path
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    tried: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    server: NodeProcess = field(init=False)

    def __post_init__(self) -> None:
        quiet_pynetdicom()
        port = free_port()
        home = init_home(self.workdir / "home", port, settings=self.settings)
        pacsnode(home, "peer", "add", "fuzz", "--aet", FUZZ_AET, "--host", "127.0.0.1", "--port", "1",
                 "--institution", "PRV001", check=True)
        seed = self.workdir / "seed"
        seed.mkdir(parents=True, exist_ok=True)
        for i in range(1, 4):
            write_instance(seed / f"{i}.dcm", f"{UID_ROOT}.0.{i}", f"{UID_ROOT}.0.{i}.1", f"{UID_ROOT}.0.{i}.1.1",
                           "FUZZ1")
        pacsnode(home, "import", str(seed), check=True)
        self.server = NodeProcess(home, port=port, log_path=self.workdir / "serve.log", ready="echo", start_timeout=30)
        self.server.start()

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def home(self) -> Path:
        return self.server.home

    def stop(self) -> None:
        self.server.stop()

    @property
    def total(self) -> int:
        return sum(self.tried.values())

    def after(self, label: str, refused_uids: tuple[str | bytes, ...] = ()) -> None:
        """The checks after one input; raises FuzzFailure (and restarts a dead server)."""
        problems: list[str] = []
        if not self.server.alive():
            problems.append(f"server died (exit {self.server.proc.returncode if self.server.proc else '?'})")
            self.server.start()
        elif not echo(self.port, timeout=10):
            problems.append("no C-ECHO answer within 10 s")
        deadline = time.monotonic() + 8  # the server may linger for the peer to hang up (ARTIM)
        while (left := [p.name for p in (self.home / "tmp").glob("*")]) and time.monotonic() < deadline:
            time.sleep(0.02)
        if left:
            problems.append(f"temporary file(s) left after the association ended: {left[:3]}")
            for name in left:  # so that the next input is judged on its own
                (self.home / "tmp" / name).unlink(missing_ok=True)
        stored = self.indexed([u for u in refused_uids if isinstance(u, str) and u])
        if stored:
            problems.append(f"refused instance(s) indexed: {stored[:3]}")
        if problems:
            message = f"{label} [{time.strftime('%H:%M:%S')}]: " + "; ".join(problems)
            self.failures.append(message)
            raise FuzzFailure(message)

    def indexed(self, uids: list[str]) -> list[str]:
        if not uids:
            return []
        conn = sqlite3.connect(f"file:{self.home / 'index.sqlite'}?mode=ro", uri=True, timeout=30)
        try:
            marks = ",".join("?" * len(uids))
            return [r[0] for r in conn.execute(f"SELECT sop_instance_uid FROM instances WHERE sop_instance_uid "
                                               f"IN ({marks})", uids)]
        finally:
            conn.close()

    def final_check(self) -> None:
        result = run_check(self.home)
        if not result.clean:
            self.failures.append(f"check not clean at the end: {result.text.strip()[-600:]}")
            raise FuzzFailure(self.failures[-1])


def send_store(target: FuzzTarget, item: StoreInput) -> None:
    """Send one crafted C-STORE; Success is allowed only for an instance that is intact on disk."""
    target.tried[f"store/{item.kind}"] += 1
    # a UID an earlier input stored legitimately (hostile-looking "1" is a valid UID) is not
    # this input's doing: only rows this input would have added count against a refusal
    already = set(target.indexed([u for u in item.uids if isinstance(u, str) and u]))
    status: int | str
    if item.raw_command:
        raw = RawAssociation(target.port)
        try:
            if not raw.associate(STORE_CONTEXTS):
                status = "rejected"
            else:
                offset = item.data.index(b"DICM") + 4
                meta_length = struct.unpack("<I", item.data[offset + 8:offset + 12])[0]
                raw.send_dimse(1, store_command(item.command_uid), item.data[offset + 12 + meta_length:])
                answer = raw.responses(30)
                status = answer[-1] if isinstance(answer, list) else answer
                raw.release()
        except OSError as exc:
            status = f"error:{exc.__class__.__name__}"
        finally:
            raw.close()
    else:
        path = target.workdir / "input.dcm"
        path.write_bytes(item.data)
        ae = AE(ae_title=FUZZ_AET)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.add_requested_context(CT, [item.syntax])
        assoc = ae.associate("127.0.0.1", target.port, ae_title="PACSNODE")
        status = "rejected"
        if assoc.is_established:
            try:
                with chunked_send():
                    rsp = assoc.send_c_store(path)
                status = int(rsp.Status) if rsp is not None and "Status" in rsp else "no-response"
            except (ValueError, TypeError, AttributeError, RuntimeError, OSError) as exc:  # pynetdicom refused it
                status = f"client:{exc.__class__.__name__}"
            finally:
                assoc.release() if assoc.is_established else assoc.abort()
    label = f"store/{item.kind}"
    target.outcomes[f"{label} -> {status if isinstance(status, str) else hex(status)}"] += 1
    if status == 0:
        target.after(label)  # accepted: must then be a whole, valid instance (final check verifies files)
    else:
        target.after(label, refused_uids=tuple(u for u in item.uids if u not in already))


def send_find(target: FuzzTarget, item: FindInput) -> None:
    target.tried[f"find/{item.kind}"] += 1
    raw = RawAssociation(target.port)
    outcome: str
    try:
        if not raw.associate(FIND_CONTEXTS):
            outcome = "rejected"
        else:
            pcid = {(STUDY_FIND, IMPLICIT): 1, (STUDY_FIND, EXPLICIT): 3, (PATIENT_FIND, IMPLICIT): 5,
                    (PATIENT_FIND, EXPLICIT): 7}[(item.sop_class, item.syntax)]
            raw.send_dimse(pcid, find_command(item.sop_class), item.identifier)
            answer = raw.responses(30)
            outcome = hex(answer[-1]) if isinstance(answer, list) else answer
            raw.release()
    except OSError as exc:
        outcome = f"error:{exc.__class__.__name__}"
    finally:
        raw.close()
    target.outcomes[f"find/{item.kind} -> {outcome}"] += 1
    if outcome == "timeout":
        target.failures.append(f"find/{item.kind}: no final response within 30 s")
        raise FuzzFailure(target.failures[-1])
    target.after(f"find/{item.kind}")


def send_pdu(target: FuzzTarget, item: PduInput) -> None:
    target.tried[f"pdu/{item.kind}"] += 1
    outcome = "sent"
    try:
        raw = RawAssociation(target.port, timeout=5)
    except OSError as exc:
        target.failures.append(f"pdu/{item.kind}: cannot connect: {exc}")
        raise FuzzFailure(target.failures[-1]) from None
    try:
        if item.associate_first and not raw.associate(MIXED_CONTEXTS if item.storage_and_find else STORE_CONTEXTS):
            outcome = f"not-associated({raw.answer})"
        else:
            for chunk in item.chunks:
                raw.sock.sendall(chunk)
            answer = raw.read_pdu(0.3)
            outcome = "closed" if answer is None else f"pdu-0x{answer[0]:02x}"
    except (TimeoutError, socket.timeout):
        outcome = "silent"
    except OSError as exc:
        outcome = f"error:{exc.__class__.__name__}"
    finally:
        raw.close()
    target.outcomes[f"pdu/{item.kind} -> {outcome}"] += 1
    target.after(f"pdu/{item.kind}")


# -- the long run ------------------------------------------------------------------------------
def run(target: FuzzTarget, count: int, seed: int | None, derandomize: bool = False,
        on_failure: Callable[[str], None] = print, only: str | None = None) -> None:
    """``count`` inputs split over the three families, each a hypothesis run (shrinks on failure)."""
    shares = {"store": (store_inputs(), send_store, 0.4), "find": (find_inputs(), send_find, 0.3),
              "pdu": (pdu_inputs(), send_pdu, 0.3)}
    if only:
        shares = {only: (shares[only][0], shares[only][1], 1.0)}
    for name, (strategy, send, share) in shares.items():
        options = settings(max_examples=max(1, int(count * share)), deadline=None, database=None,
                           derandomize=derandomize, print_blob=False,
                           suppress_health_check=list(HealthCheck))

        @options
        @given(strategy)
        def one(item: Any) -> None:
            send(target, item)

        if seed is not None and not derandomize:
            one = hypothesis_seed(seed)(one)
        try:
            one()
        except Exception as exc:  # FuzzFailure, or hypothesis' group of several distinct ones
            on_failure(f"{name}: FAILED (minimal input above): {exc}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=3000, help="inputs to try in all (default 3000)")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random)")
    parser.add_argument("--only", choices=["store", "find", "pdu"], help="one family of inputs only")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (printed)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # pydicom warns about every invalid value we send on purpose
    workdir = Path(tempfile.mkdtemp(prefix="fuzz-"))
    started = time.monotonic()
    target = FuzzTarget(workdir)
    try:
        run(target, args.count, args.seed, only=args.only)
        try:
            target.final_check()
        except FuzzFailure:
            pass
    finally:
        target.stop()
        if args.keep:
            print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nfuzz: {target.total} inputs in {time.monotonic() - started:.0f}s")
    for key, value in sorted(target.tried.items()):
        print(f"  tried {key}: {value}")
    print("outcomes:")
    for key, value in sorted(target.outcomes.items()):
        print(f"  {key}: {value}")
    print(f"failures: {len(target.failures)}")
    for failure in target.failures[:30]:
        print(f"  {failure}")
    print("RESULT:", "FAIL" if target.failures else "PASS (server alive and answering, nothing partial stored)")
    return 1 if target.failures else 0


if __name__ == "__main__":
    sys.exit(main())
