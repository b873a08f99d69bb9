"""Helpers of the DICOMweb tests: a served node with [web] on, tokens, raw multipart."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Iterator

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file

from support import NodeProcess

# pydicom's own test files, held back from sample_dicom: native CT, JPEG 2000, 2-frame RLE,
# a 2-frame native RT dose, and an SR without pixel data.
HELD_BACK = ("CT_small.dcm", "JPEG2000.dcm", "SC_rgb_rle_2frame.dcm", "rtdose.dcm", "reportsi.dcm")
SAMPLE_GB18030 = Path(__file__).resolve().parents[1] / "sample_dicom" / "PRV001" / "P0002"


def held_back() -> list[pydicom.Dataset]:
    """The held-back set. rtdose.dcm's File Meta names another SOP Instance UID than its
    dataset (pacsnode refuses that, see test_web_stow); here its meta is made consistent."""
    datasets = [pydicom.dcmread(get_testdata_file(name)) for name in HELD_BACK]
    for ds in datasets:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return datasets


def encoded(dataset: pydicom.Dataset) -> bytes:
    """The bytes dicomweb-client sends for ``dataset`` (it writes each with ``dcmwrite``)."""
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset)
    return buffer.getvalue()


def served_node(home: Path, institution: str = "PRV001") -> NodeProcess:
    node = NodeProcess(home, institution=institution)
    node.init()
    node.enable_web()
    return node.start()


def create_token(node: NodeProcess, name: str, institution: str, permissions: str = "find,get") -> str:
    result = node.cli("token", "create", name, "--institution", institution, "--permissions", permissions)
    assert result.returncode == 0, result.explain()
    return result.stdout.strip().splitlines()[-1]


def client(node: NodeProcess, token: str) -> DICOMwebClient:
    return DICOMwebClient(node.web_url, headers={"Authorization": f"Bearer {token}"})


def get(node: NodeProcess, path: str, token: str | None = None, **headers: str) -> requests.Response:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.get(node.web_url + path, headers=headers, timeout=30)


def multipart_parts(response: requests.Response) -> Iterator[bytes]:
    """The part bodies of a multipart/related response (boundary from its Content-Type)."""
    boundary = re.search(r"boundary=\"?([^\";]+)", response.headers["content-type"]).group(1).encode()
    for chunk in response.content.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, body = chunk.partition(b"\r\n\r\n")
        yield body[:-2] if body.endswith(b"\r\n") else body


def multipart_body(parts: list[tuple[str, bytes]], boundary: str = "TESTBOUNDARY") -> bytes:
    out = b""
    for content_type, data in parts:
        out += f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()
