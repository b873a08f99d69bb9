"""STOW-RS under bad input: clear PS3.18 failures, nothing partial stored, the server goes on.

A broken boundary, a body cut before its closing boundary, a part that is not DICOM, a part
whose File Meta declares another SOP class or instance than its dataset, a part of another
study than the URL names, a 2 GB Content-Length, a chunked body over the limit.
"""

from __future__ import annotations

import socket
from pathlib import Path
import time
from typing import Any, Iterator

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file

from web_helpers import create_token, encoded, get, multipart_body
from support import LOOPBACK, NodeProcess

pytestmark = pytest.mark.web
MAX_BODY = 2_000_000
CT_SMALL = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"


@pytest.fixture(scope="module")
def stow_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess, str]]:
    node = NodeProcess(tmp_path_factory.mktemp("web-stow") / "home", institution="PRV001")
    node.init()
    node.enable_web()
    node.configure("web", "max_body_bytes", MAX_BODY)
    node.start()
    try:
        yield node, create_token(node, "writer", "PRV001", "find,get,store")
    finally:
        node.stop()


def _post(node: NodeProcess, token: str, body: bytes | Any, boundary: str = "TESTBOUNDARY",
          path: str = "/studies", content_type: str | None = None) -> requests.Response:
    return requests.post(node.web_url + path, data=body, timeout=60, headers={
        "Authorization": f"Bearer {token}",
        "Content-Type": content_type or f'multipart/related; type="application/dicom"; boundary={boundary}'})


def _ct() -> pydicom.Dataset:
    return pydicom.dcmread(get_testdata_file("CT_small.dcm"))


def _stored_instances(node: NodeProcess) -> int:
    return sum(int(s["instance_count"]) for s in node.studies())


def _failures(response: requests.Response) -> list[tuple[str, int]]:
    items = response.json().get("00081198", {}).get("Value", [])
    return [(i["00081155"].get("Value", [""])[0], i["00081197"]["Value"][0]) for i in items]


def _assert_nothing_left(node: NodeProcess) -> None:
    assert not [p for p in (node.home / "tmp").iterdir()], "temporary files left behind"
    assert node.check().returncode == 0


def test_broken_boundary_and_cut_body_store_nothing(stow_node: Any) -> None:
    node, token = stow_node
    before = _stored_instances(node)
    good = encoded(_ct())
    wrong_boundary = _post(node, token, multipart_body([("application/dicom", good)], "OTHER"), "TESTBOUNDARY")
    assert wrong_boundary.status_code == 400 and "multipart" in wrong_boundary.json()["error"]
    cut = multipart_body([("application/dicom", good), ("application/dicom", good)])[:-200]
    truncated = _post(node, token, cut)
    assert truncated.status_code == 400 and "closing boundary" in truncated.json()["error"]
    for content_type in ("application/dicom", 'multipart/related; type="application/dicom+json"; boundary=X',
                         'multipart/related; type="application/dicom"'):
        assert _post(node, token, good, content_type=content_type).status_code == 400
    assert _stored_instances(node) == before
    _assert_nothing_left(node)


def test_non_dicom_part_fails_alone_with_a_reason(stow_node: Any) -> None:
    node, token = stow_node
    body = multipart_body([("application/dicom", encoded(_ct())), ("application/dicom", b"MZ" + b"\0" * 300),
                           ("text/plain", b"hello")])
    response = _post(node, token, body)
    assert response.status_code == 202
    assert [reason for _uid, reason in _failures(response)] == [0xC000, 0xC000]
    assert response.json()["00081199"]["Value"][0]["00081155"]["Value"] == [CT_SMALL]
    assert "not a DICOM" in response.headers["warning"]
    _assert_nothing_left(node)


def test_declared_sop_class_or_instance_that_the_dataset_contradicts_is_refused(stow_node: Any) -> None:
    node, token = stow_node
    before = _stored_instances(node)
    lying = _ct()
    lying.SOPInstanceUID = lying.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.10.1078.77.1"
    lying.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage; the dataset is CT
    response = _post(node, token, multipart_body([("application/dicom", encoded(lying))]))
    assert response.status_code == 409
    assert _failures(response) == [("1.2.826.0.1.3680043.10.1078.77.1", 0xA900)]
    raw_rtdose = open(get_testdata_file("rtdose.dcm"), "rb").read()  # its meta names another instance
    response = _post(node, token, multipart_body([("application/dicom", raw_rtdose)]))
    assert response.status_code == 409 and _failures(response)[0][1] == 0xC000
    assert _stored_instances(node) == before
    _assert_nothing_left(node)


def test_part_of_another_study_than_the_url_names_is_refused(stow_node: Any) -> None:
    node, token = stow_node
    other = _ct()
    other.SOPInstanceUID = other.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.10.1078.77.2"
    response = _post(node, token, multipart_body([("application/dicom", encoded(other))]),
                     path="/studies/1.2.826.0.1.3680043.10.1078.77.999")
    assert response.status_code == 409 and _failures(response) == [("1.2.826.0.1.3680043.10.1078.77.2", 0xC409)]


def test_huge_declared_length_is_refused_unread_and_the_server_goes_on(stow_node: Any) -> None:
    node, token = stow_node
    with socket.create_connection((LOOPBACK, node.web_port), timeout=10) as conn:
        conn.sendall((f"POST /dicom-web/studies HTTP/1.1\r\nHost: {LOOPBACK}\r\nAuthorization: Bearer {token}\r\n"
                      'Content-Type: multipart/related; type="application/dicom"; boundary=B\r\n'
                      "Content-Length: 2147483648\r\n\r\n--B\r\n").encode())
        started = time.monotonic()
        answer = conn.recv(4096)
        assert answer.startswith(b"HTTP/1.1 413") and time.monotonic() - started < 5
    def chunks() -> Iterator[bytes]:
        yield b"--TESTBOUNDARY\r\nContent-Type: application/dicom\r\n\r\n"
        for _ in range(40):
            yield b"\0" * 100_000
    assert _post(node, token, chunks()).status_code == 413
    _assert_nothing_left(node)
    assert get(node, "/../healthz").status_code == 200
    fresh = _ct()
    fresh.SOPInstanceUID = fresh.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.10.1078.77.3"
    assert _post(node, token, multipart_body([("application/dicom", encoded(fresh))])).status_code == 200


def test_a_full_quota_fails_the_part_with_out_of_resources(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "home", institution="PRV001")
    node.init()
    node.enable_web()
    node.configure("store", "quota_bytes", 1000)  # smaller than any instance
    with node:
        token = create_token(node, "writer", "PRV001", "find,get,store")
        response = _post(node, token, multipart_body([("application/dicom", encoded(_ct()))]))
        assert response.status_code == 409 and _failures(response) == [(CT_SMALL, 0xA700)]
        assert _stored_instances(node) == 0
        _assert_nothing_left(node)


def test_a_client_that_hangs_up_mid_body_leaves_nothing(stow_node: Any) -> None:
    node, token = stow_node
    before = _stored_instances(node)
    body = multipart_body([("application/dicom", encoded(_ct()))])
    with socket.create_connection((LOOPBACK, node.web_port), timeout=10) as conn:
        conn.sendall((f"POST /dicom-web/studies HTTP/1.1\r\nHost: {LOOPBACK}\r\nAuthorization: Bearer {token}\r\n"
                      'Content-Type: multipart/related; type="application/dicom"; boundary=TESTBOUNDARY\r\n'
                      f"Content-Length: {len(body)}\r\n\r\n").encode() + body[:len(body) // 2])
        time.sleep(0.5)
    deadline = time.monotonic() + 10
    while any((node.home / "tmp").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _stored_instances(node) == before
    _assert_nothing_left(node)
    assert get(node, "/../healthz").status_code == 200


def test_declared_uids_read_quickly_equal_pydicoms_file_meta_on_every_test_file() -> None:
    """STOW-RS reads a part's declared SOP Class and Instance without pydicom (issue 14 STOW
    profile) for a plain File Meta group; it must say what pydicom's reader says, or defer."""
    from pydicom.filereader import read_file_meta_info

    from pacsnode.web import stow

    root = Path(pydicom.__file__).parent / "data"
    quick = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc", ".json")):
        head = path.read_bytes()[:stow.META_READ]
        if head[128:132] != b"DICM":
            continue
        ours = stow._declared_quickly(head)
        if ours is None:
            continue
        quick += 1
        meta = read_file_meta_info(str(path))
        assert ours == (str(meta.MediaStorageSOPClassUID), str(meta.MediaStorageSOPInstanceUID)), path
    assert quick > 100
