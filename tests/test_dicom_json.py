"""The metadata built at ingest without pydicom's Dataset equals pydicom's ``to_json_dict``.

``dicom_json`` encodes the common file straight from its bytes (issue 14: the metadata cost
~10 ms of CPU per instance on the acknowledgement path); everything it is unsure of goes to
pydicom. Both paths are run on every pydicom test file and every sample, and must give the
same document and frame table; the fast path must also really be the one taken for the
common files, or the speed-up is gone without anyone noticing.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import pydicom
import pytest

from pacsnode.dicom import dicom_json, web_metadata

ROOT = Path(__file__).resolve().parents[1]
SKIP_SUFFIXES = {".py", ".pyc", ".json", ".txt", ".gz", ".bz2", ".zip", ".md"}


def corpus() -> list[Path]:
    data = Path(pydicom.__file__).parent / "data"
    files = [p for p in sorted(data.rglob("*")) if p.is_file() and p.suffix not in SKIP_SUFFIXES]
    return files + [p for p in sorted((ROOT / "sample_dicom").rglob("*")) if p.is_file()]


def test_fast_metadata_equals_pydicom_on_every_pydicom_test_file_and_sample() -> None:
    compared = fast_taken = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.CRITICAL)
        try:
            for path in corpus():
                try:
                    reference = web_metadata._build_with_pydicom(path)
                except Exception:  # pydicom cannot describe it: the fast path may not either
                    continue
                ours = web_metadata.build(path)
                assert json.loads(ours[0]) == json.loads(reference[0]), path
                assert ours[1] == reference[1], path
                compared += 1
                try:
                    dicom_json.encode(path, lambda tag: "URI")
                    fast_taken += 1
                except dicom_json.Unsupported:
                    pass
        finally:
            logging.disable(logging.NOTSET)
    assert compared > 150
    assert fast_taken > 0.75 * compared, f"fast path taken for only {fast_taken} of {compared} files"


def test_sample_instances_take_the_fast_path() -> None:
    samples = [p for p in sorted((ROOT / "sample_dicom").rglob("*")) if p.is_file()]
    assert samples
    for path in samples:
        encoded = dicom_json.encode(path, lambda tag: "URI")
        assert "0020000D" in encoded.document


@pytest.mark.parametrize("cut", [200, 300, 400])
def test_a_file_cut_short_is_never_described_by_the_fast_path(tmp_path: Path, cut: int) -> None:
    whole = next(p for p in sorted((ROOT / "sample_dicom").rglob("*")) if p.is_file())
    short = tmp_path / "short.dcm"
    short.write_bytes(whole.read_bytes()[:cut])
    with pytest.raises(dicom_json.Unsupported):
        dicom_json.encode(short, lambda tag: "URI")
