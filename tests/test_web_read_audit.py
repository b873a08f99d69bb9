"""Viewer reads over DICOMweb: audited per caller, study and window; access kept a few seconds only.

A served county node (CTY001, the shipped recognition rules) holds the county's sample studies; a
provincial token (PRV001) may see the county's CT chest through the recognition door, as a
physician's viewer in the province does. The tests prove that:

- a viewer's many frame requests leave one audit row when it starts reading the study in a window
  and one row with the window's count, and the counts add up to the requests it made;
- a refusal is audited at once, one row per refused request, never counted into a window;
- a QC rejection stops the frames reaching the other institution within ``[web]
  access_cache_seconds`` (the access answer is kept that long and no longer).
"""

from __future__ import annotations

import json
import shutil
import time
from collections import defaultdict
from typing import Any, Iterator

import pytest
from pydicom import dcmread

from support import REPO, SAMPLE_DIR, NodeProcess
from web_helpers import create_token, get

pytestmark = [pytest.mark.web,
              pytest.mark.skipif(not (SAMPLE_DIR / "CTY001").is_dir(), reason="sample_dicom/ is not generated")]
CT_CHEST = "1.2.826.0.1.3680043.10.1078.1.2"  # CHEN^JIANGUO @ CTY001: two CT series of 5
ACCESS_TTL = 2.0
WINDOW = 2  # seconds: short, so that windows close while the test runs


@pytest.fixture(scope="module")
def county(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    node = NodeProcess(tmp_path_factory.mktemp("web-read-audit") / "home", aet="CTY_PACS", institution="CTY001")
    node.init()
    for name in ("recognition.toml", "qc_rules.toml"):
        shutil.copyfile(REPO / "config" / name, node.home / name)
    node.enable_web()
    node.configure("web", "access_cache_seconds", ACCESS_TTL).configure("web", "read_audit_window_seconds", WINDOW)
    node.start()
    try:
        imported = node.cli("import", str(SAMPLE_DIR / "CTY001"))
        assert imported.returncode == 0, imported.explain()
        yield node
    finally:
        node.stop()


def _ct_frames() -> list[str]:
    """Frame paths of the county CT chest's images (series/instance from the sample files)."""
    paths = []
    for file in sorted(SAMPLE_DIR.joinpath("CTY001").rglob("*.dcm")):
        ds = dcmread(file, stop_before_pixels=True)
        if ds.StudyInstanceUID == CT_CHEST and ds.Modality == "CT":
            paths.append(f"/studies/{CT_CHEST}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/frames/1")
    assert len(paths) >= 5
    return paths


def _audit(node: NodeProcess, token_name: str) -> list[dict[str, Any]]:
    result = node.cli("audit", "--peer", f"token:{token_name}", "--json")
    assert result.returncode == 0, result.explain()
    return list(json.loads(result.stdout))


def _requests_by_window(events: list[dict[str, Any]], action: str) -> dict[str, int]:
    """Reads per window as the audit trail tells them: a window's total row, else its first row (1)."""
    firsts: dict[str, int] = defaultdict(int)
    totals: dict[str, int] = {}
    for event in events:
        if event["action"] != action or event["outcome"] != "answered":
            continue
        detail = json.loads(event["detail"])
        if detail.get("window_total"):
            totals[detail["window"]] = detail["requests"]
        else:
            firsts[detail["window"]] += detail["requests"]
    return {window: totals.get(window, count) for window, count in firsts.items()}


def test_viewer_frames_are_audited_once_per_window_with_the_count(county: NodeProcess) -> None:
    token = create_token(county, "viewer-count", "PRV001")
    frames = _ct_frames()
    asked = 0
    for _round in range(4):
        for path in frames:
            answer = get(county, path, token)
            assert answer.status_code == 200, (path, answer.text)
            asked += 1
    time.sleep(WINDOW + 2)  # the last window closes; its total is written without another request
    events = _audit(county, "viewer-count")
    by_window = _requests_by_window(events, "wado-frames")
    assert sum(by_window.values()) == asked  # every read counted, none twice
    rows = [e for e in events if e["action"] == "wado-frames"]
    assert len(rows) <= 2 * len(by_window) < asked  # one first row and one total per window, not one per read
    assert all(e["study_uid"] == CT_CHEST and e["outcome"] == "answered" for e in rows)
    first = next(json.loads(e["detail"]) for e in rows if not json.loads(e["detail"]).get("window_total"))
    assert first["instance"] and first["window_seconds"] == WINDOW  # who read what, and when to the window
    assert not [e for e in events if e["action"] == "get" and e["outcome"] == "started"]  # no row per read
    metrics = get(county, "/../metrics", create_token(county, "scraper", "CTY001", "metrics")).text
    served = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                 if line.startswith("pacsnode_http_requests_total{") and 'route="frames"' in line and 'status="200"' in line)
    assert served >= asked  # the reads answered before the router are counted like the others


def test_a_refused_frame_request_is_audited_at_once_every_time(county: NodeProcess) -> None:
    outsider = create_token(county, "viewer-outsider", "PVT001")  # a private clinic: no access to the county CT
    path = _ct_frames()[0]
    for attempt in range(1, 4):
        assert get(county, path, outsider).status_code == 404
        refused = [e for e in _audit(county, "viewer-outsider") if e["outcome"] == "refused"]
        assert len(refused) == attempt  # written before the answer left: no waiting for a window
        assert refused[-1]["study_uid"] == CT_CHEST and refused[-1]["action"] == "get"
    assert not [e for e in _audit(county, "viewer-outsider") if e["outcome"] == "answered"]


def test_a_qc_rejection_stops_the_frames_within_the_access_ttl(county: NodeProcess) -> None:
    token = create_token(county, "viewer-ttl", "PRV001")
    path = _ct_frames()[1]
    assert get(county, path, token).status_code == 200  # the access answer is now kept
    rejected = county.cli("qc", "reject", CT_CHEST, "--reviewer", "Dr Li", "--note", "motion artefact")
    assert rejected.returncode == 0, rejected.explain()
    try:
        time.sleep(ACCESS_TTL + 0.5)
        answer = get(county, path, token)
        assert answer.status_code == 404, "a rejected study must stop reaching another institution within the TTL"
        refused = [e for e in _audit(county, "viewer-ttl") if e["outcome"] == "refused"]
        assert refused and refused[-1]["study_uid"] == CT_CHEST
        local = create_token(county, "county-staff", "CTY001")
        assert get(county, path, local).status_code == 200  # local staff still see it, to fix it
    finally:
        restored = county.cli("qc", "restore", CT_CHEST, "--reviewer", "Dr Li")
        assert restored.returncode == 0, restored.explain()
    time.sleep(ACCESS_TTL + 0.5)  # a refusal is never kept: once restored, the frames come back
    assert get(county, path, token).status_code == 200
