"""DICOMweb round trip against a real ``pacsnode serve`` with [web] on, driven by dicomweb-client.

STOW-RS a held-back set (pydicom's own test files), find it with QIDO-RS, get every instance
back byte-identical with WADO-RS, the metadata equal to pydicom's DICOM JSON of the stored
file (bulk data as URIs that resolve), frames equal to the pixel data, WADO-URI.
"""

from __future__ import annotations

import sqlite3

import io
import json
import time
from pathlib import Path
from typing import Any, Iterator

import pydicom
import pytest
from pydicom.encaps import generate_frames

from web_helpers import SAMPLE_GB18030, client, create_token, encoded, get, held_back, multipart_parts
from support import NodeProcess

pytestmark = [pytest.mark.web, pytest.mark.cluster]


@pytest.fixture(scope="module")
def web_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess, str, list[pydicom.Dataset]]]:
    node = NodeProcess(tmp_path_factory.mktemp("web") / "home", institution="PRV001")
    node.init()
    node.enable_web()
    node.configure("query", "max_results", 2)  # C-FIND refuses more than 2 matches; QIDO pages instead
    node.start()
    try:
        token = create_token(node, "local-rw", "PRV001", "find,get,store")
        datasets = held_back()
        client(node, token).store_instances(datasets)
        imported = node.cli("import", str(SAMPLE_GB18030))
        assert imported.returncode == 0, imported.explain()
        yield node, token, datasets
    finally:
        node.stop()


def _uids(ds: pydicom.Dataset) -> tuple[str, str, str]:
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def test_qido_finds_every_stowed_instance(web_node: Any) -> None:
    node, token, datasets = web_node
    web = client(node, token)
    studies = {s["0020000D"]["Value"][0] for s in web.search_for_studies()}
    for ds in datasets:
        study, series, sop = _uids(ds)
        assert study in studies
        found = web.search_for_instances(study, series)
        assert sop in {i["00080018"]["Value"][0] for i in found}


def test_wado_rs_returns_each_instance_byte_identical_to_what_was_stored(web_node: Any) -> None:
    node, token, datasets = web_node
    for ds in datasets:
        study, series, sop = _uids(ds)
        response = get(node, f"/studies/{study}/series/{series}/instances/{sop}", token,
                       Accept='multipart/related; type="application/dicom"')
        assert response.status_code == 200
        assert list(multipart_parts(response)) == [encoded(ds)]
        uri = get(node, f"/wado?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={sop}"
                  "&contentType=application%2Fdicom", token)
        assert uri.status_code == 200 and uri.content == encoded(ds)


def test_accept_naming_another_transfer_syntax_is_406_never_silently_other_bytes(web_node: Any) -> None:
    node, token, datasets = web_node
    jpeg2000 = datasets[1]
    study, series, sop = _uids(jpeg2000)
    stored = str(jpeg2000.file_meta.TransferSyntaxUID)
    path = f"/studies/{study}/series/{series}/instances/{sop}"
    jpeg_baseline = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'
    assert get(node, path, token, Accept=jpeg_baseline).status_code == 406
    same = get(node, path, token, Accept=f'multipart/related; type="application/dicom"; transfer-syntax={stored}')
    assert same.status_code == 200 and list(multipart_parts(same)) == [encoded(jpeg2000)]
    native = 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1'
    assert get(node, f"{path}/frames/1", token, Accept=native).status_code == 406


def test_explicit_little_endian_asked_for_transcodes_encapsulated_instances(web_node: Any) -> None:
    node, token, datasets = web_node
    explicit = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1'
    for ds in datasets[1:3]:  # JPEG 2000 and RLE
        study, series, sop = _uids(ds)
        response = get(node, f"/studies/{study}/series/{series}/instances/{sop}", token, Accept=explicit)
        assert response.status_code == 200
        (part,) = multipart_parts(response)
        received = pydicom.dcmread(pydicom.filebase.DicomBytesIO(part))
        assert received.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        original = pydicom.dcmread(pydicom.filebase.DicomBytesIO(encoded(ds)))
        assert (received.pixel_array == original.pixel_array).all()
        assert received.SOPInstanceUID == ds.SOPInstanceUID


def test_metadata_equals_pydicom_json_with_bulk_data_as_resolvable_uris(web_node: Any) -> None:
    node, token, datasets = web_node
    web = client(node, token)
    for ds in datasets:
        study, series, sop = _uids(ds)
        stored = pydicom.dcmread(pydicom.filebase.DicomBytesIO(encoded(ds)))
        expected = stored.to_json_dict(bulk_data_threshold=1024, bulk_data_element_handler=lambda _e: "URI")
        if "7FE00010" in expected:  # a choice: Pixel Data is always a BulkDataURI, however small
            expected["7FE00010"] = {"vr": expected["7FE00010"]["vr"], "BulkDataURI": "URI"}
        metadata = [m for m in web.retrieve_series_metadata(study, series) if m["00080018"]["Value"] == [sop]]
        assert len(metadata) == 1
        uris = _bulk_uris(metadata[0])
        assert _with_uris_replaced(metadata[0]) == expected
        if "PixelData" in stored:
            pixel_uri = metadata[0]["7FE00010"]["BulkDataURI"]
            assert pixel_uri.startswith(node.web_url) and pixel_uri in uris
            response = get(node, pixel_uri[len(node.web_url):], token)
            assert response.status_code == 200
            assert list(multipart_parts(response)) == [bytes(stored.PixelData)]


def test_metadata_and_frame_offsets_are_indexed_at_ingest(web_node: Any) -> None:
    """Every stored instance (STOW-RS and CLI import alike) has its DICOM JSON in the index."""
    node, _token, datasets = web_node
    rows = dict(node.index_rows("SELECT i.sop_instance_uid, m.frames FROM instances i "
                                "LEFT JOIN instance_metadata m ON m.sop_instance_uid = i.sop_instance_uid"))
    assert None not in rows.values()
    for ds in datasets:
        assert bool(rows[str(ds.SOPInstanceUID)]) == ("PixelData" in ds)


def test_study_metadata_lists_every_instance_of_the_study(web_node: Any) -> None:
    node, token, datasets = web_node
    study = str(datasets[0].StudyInstanceUID)
    response = get(node, f"/studies/{study}/metadata", token)
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/dicom+json")
    wanted = {str(d.SOPInstanceUID) for d in datasets if str(d.StudyInstanceUID) == study}
    assert {m["00080018"]["Value"][0] for m in response.json()} == wanted


def test_frames_equal_the_pixel_data_native_and_encapsulated(web_node: Any) -> None:
    node, token, datasets = web_node
    web = client(node, token)
    checked = 0
    for ds in datasets:
        if "PixelData" not in ds:
            continue
        study, series, sop = _uids(ds)
        count = int(ds.get("NumberOfFrames", 1) or 1)
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            expected = list(generate_frames(ds.PixelData, number_of_frames=count))
        else:
            size = len(ds.PixelData) // count
            expected = [ds.PixelData[i * size:(i + 1) * size] for i in range(count)]
        numbers = list(range(1, count + 1))
        assert web.retrieve_instance_frames(study, series, sop, numbers) == expected
        checked += 1
    assert checked == 4


def test_qido_answers_gb18030_patient_in_utf8_json(web_node: Any) -> None:
    node, token, _ = web_node
    response = get(node, "/studies?PatientName=%E7%8E%8B*", token)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom+json; charset=utf-8"
    studies = json.loads(response.content.decode("utf-8"))
    assert studies and all(s["00100010"]["Value"][0]["Alphabetic"] == "王^小明" for s in studies)
    assert "王^小明".encode("utf-8") in response.content


def test_qido_includefield_limit_offset_and_refused_fuzzymatching(web_node: Any) -> None:
    node, token, _ = web_node
    everything = get(node, "/studies", token).json()
    assert len(everything) >= 4  # more than [query] max_results: QIDO pages, it does not refuse
    first = get(node, "/studies?limit=1", token)
    second = get(node, "/studies?limit=1&offset=1", token)
    assert [s["0020000D"] for s in first.json() + second.json()] == [s["0020000D"] for s in everything[:2]]
    assert "additional results" in first.headers.get("warning", "")
    all_fields = get(node, "/studies?includefield=all&limit=1", token).json()[0]
    assert "00080080" in all_fields and "00100010" in all_fields  # InstitutionName is not a default key
    one_field = get(node, "/studies?includefield=InstitutionName&limit=1", token).json()[0]
    assert "00080080" in one_field
    fuzzy = get(node, "/studies?PatientName=wang&fuzzymatching=true", token)
    assert fuzzy.status_code == 400 and "fuzzymatching" in fuzzy.json()["error"]
    assert get(node, "/studies?" + "&".join(f"PatientID=P{i}" for i in range(101)), token).status_code == 400
    assert get(node, "/studies?PatientID=" + "9" * 5000, token).status_code == 400
    assert get(node, "/studies?NotAnAttribute=1", token).status_code == 400


def _bulk_uris(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["BulkDataURI"]] if "BulkDataURI" in value else []
        return found + [u for v in value.values() for u in _bulk_uris(v)]
    if isinstance(value, list):
        return [u for v in value for u in _bulk_uris(v)]
    return []


def _with_uris_replaced(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("URI" if k == "BulkDataURI" else _with_uris_replaced(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_uris_replaced(v) for v in value]
    return value


def test_health_and_readiness_answer_without_a_token_and_wado_uri_checks_its_parameters(web_node: Any) -> None:
    node, token, datasets = web_node
    assert get(node, "/../healthz").text == "ok\n"
    assert get(node, "/../readyz").status_code == 200
    study, series, sop = _uids(datasets[0])
    assert get(node, f"/wado?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={sop}").status_code == 401
    assert get(node, f"/wado?requestType=WADO&studyUID={study}&seriesUID={series}", token).status_code == 400
    assert get(node, f"/wado?studyUID={study}&seriesUID={series}&objectUID={sop}", token).status_code == 400
    wrong_series = f"/wado?requestType=WADO&studyUID={study}&seriesUID=1.2.3&objectUID={sop}"
    assert get(node, wrong_series, token).status_code == 404
    jpeg = f"/wado?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={sop}&contentType=image/jpeg"
    assert get(node, jpeg, token).status_code == 406


@pytest.mark.one_node("it breaks the SQLite index file of one home")
def test_readiness_names_the_part_that_fails_never_the_error(web_node: Any) -> None:
    """/readyz answers anyone: an index error's text (PostgreSQL's names host and user) stays in the log."""
    node, _token, _datasets = web_node
    index_file = node.home / "index.sqlite"
    with sqlite3.connect(index_file) as db:
        db.execute("ALTER TABLE migrations RENAME TO migrations_away")
    try:
        answer = get(node, "/../readyz")
        assert answer.status_code == 503
        assert answer.text == "not ready: index unreachable\n"
        assert "migrations" not in answer.text and "no such table" not in answer.text
    finally:
        with sqlite3.connect(index_file) as db:
            db.execute("ALTER TABLE migrations_away RENAME TO migrations")
    assert get(node, "/../readyz").status_code == 200


def _listeners(port: int) -> int:
    """How many sockets listen on ``port`` (IPv4), from /proc/net/tcp."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
            count += 1
    return count


@pytest.mark.one_node("the workers of one serve process share its HTTP port")
def test_every_worker_serves_http_too(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "home", institution="PRV001")
    node.init()
    node.enable_web()
    node.configure("network", "workers", 2)
    with node:
        token = create_token(node, "w", "PRV001", "find,get,metrics")
        deadline = time.monotonic() + 20
        while _listeners(node.web_port) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _listeners(node.web_port) == 2  # the parent and its worker share the port (SO_REUSEPORT)
        assert all(get(node, "/studies", token).status_code == 204 for _ in range(20))
        scraped = get(node, "/../metrics", token).text  # any worker answers for all of them
        assert _sample(scraped, 'pacsnode_http_requests_total{method="GET",route="search",status="204"}') == 20


def _sample(exposition: str, name: str) -> float:
    for line in exposition.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics:\n{exposition[:3000]}")


@pytest.mark.one_node("Prometheus counters are per process: each node of an archive is scraped on its own")
def test_metrics_need_a_token_and_count_requests_and_stores(web_node: Any) -> None:
    node, token, datasets = web_node
    assert get(node, "/../metrics").status_code == 401
    assert get(node, "/../metrics", token).status_code == 403  # find/get/store is not enough
    scraped = get(node, "/../metrics", create_token(node, "scraper", "PRV001", "metrics"))
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    assert _sample(scraped.text, 'pacsnode_instances_stored_total{result="stored"}') >= len(datasets)
    assert _sample(scraped.text, "pacsnode_storage_free_bytes") > 0
    assert _sample(scraped.text, 'pacsnode_http_requests_total{method="POST",route="stow",status="200"}') >= 1


def test_rendered_and_thumbnail_use_the_qc_preview_rendering(web_node: Any, tmp_path: Path) -> None:
    from PIL import Image

    from pacsnode.qc.render import render_instance

    node, token, datasets = web_node
    ct = datasets[0]
    study, series, sop = _uids(ct)
    local = tmp_path / "ct.dcm"
    local.write_bytes(encoded(ct))
    base = f"/studies/{study}/series/{series}/instances/{sop}"
    png = get(node, f"{base}/rendered", token, Accept="image/png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    served = Image.open(io.BytesIO(png.content))
    assert served.tobytes() == render_instance(local).tobytes()
    windowed = get(node, f"{base}/rendered?window=40,80", token, Accept="image/png")
    assert Image.open(io.BytesIO(windowed.content)).tobytes() == render_instance(local, window=(40, 80)).tobytes()
    assert windowed.content != png.content
    jpeg = get(node, f"{base}/frames/1/rendered", token)
    assert jpeg.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(jpeg.content)).format == "JPEG"
    for path in (f"{base}/thumbnail", f"/studies/{study}/thumbnail", f"/studies/{study}/series/{series}/thumbnail"):
        thumb = get(node, path, token)
        assert thumb.status_code == 200 and max(Image.open(io.BytesIO(thumb.content)).size) <= 128
    sr = datasets[-1]
    assert get(node, "/studies/{}/series/{}/instances/{}/rendered".format(*_uids(sr)), token).status_code == 400
    assert get(node, f"{base}/rendered?window=40", token).status_code == 400
    assert get(node, f"{base}/rendered", token, Accept="application/pdf").status_code == 406
