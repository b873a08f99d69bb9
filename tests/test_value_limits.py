"""Indexed values that break their VR are refused, never indexed as something else (issue 10, low).

A 100,000-character Patient ID used to be indexed as an empty Patient ID. Crafted files go to a
real ``pacsnode serve`` with DCMTK ``storescu`` (the failure status is read from the wire) and
through ``pacsnode import``; nothing of them is stored, and a valid file beside them is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
from pydicom import dcmread

from support import NodeProcess, needs_dcmtk, sample_files, write_instance

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns while we craft bad files
CANNOT_UNDERSTAND = 0xC000

CRAFTED = {
    "huge-patient-id": {"PatientID": "7" * 100_000},
    "patient-id-65": {"PatientID": "P" * 65},
    "issuer-65": {"IssuerOfPatientID": "I" * 65},
    "patient-name-group-65": {"PatientName": "A" * 65},
    "accession-17": {"AccessionNumber": "A" * 17},
    "study-date-format": {"StudyDate": "2024-01-02"},
    "study-time-huge": {"StudyTime": "1" * 5000},
    "sex-17": {"PatientSex": "M" * 17},
}


def _uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


@needs_dcmtk
def test_storescu_of_over_long_identifying_values_fails_0xc000_and_stores_nothing(
        node_process: Callable[..., NodeProcess], tmp_path: Path) -> None:
    node = node_process().start()
    template = sample_files()[0]
    crafted = {name: write_instance(template, tmp_path / f"{name}.dcm", **values) for name, values in CRAFTED.items()}
    valid = write_instance(template, tmp_path / "valid.dcm", PatientID="P" * 64, PatientName="B" * 64)
    result = node.store([*crafted.values(), valid])
    for name, path in crafted.items():
        assert result.status_of(_uid(path)) == CANNOT_UNDERSTAND, name
        assert node.stored_path(_uid(path)) is None, name
    assert result.status_of(_uid(valid)) == 0
    assert node.index_rows("SELECT patient_id FROM patients") == [("P" * 64,)]  # no empty or cut Patient ID
    assert "PatientID" in result.output  # the Error Comment names the attribute
    assert node.temp_files() == []


def test_import_names_the_over_long_attribute_and_stores_nothing(node_process: Callable[..., NodeProcess],
                                                                 tmp_path: Path) -> None:
    node = node_process()
    path = write_instance(sample_files()[0], tmp_path / "huge.dcm", PatientID="7" * 100_000)
    result = node.cli("import", str(path))
    assert "rejected 1" in result.stdout and "PatientID" in result.stdout, result.explain()
    assert json.loads(node.cli("studies", "--json").stdout) == []


@pytest.mark.parametrize("charset", ["GB18030", "ISO_IR 192"])
def test_limits_count_characters_not_bytes_for_chinese_names(tmp_path: Path, charset: str) -> None:
    """64 Chinese characters per component group fit PN (and LO), whatever bytes they take; 65 do not."""
    from pacsnode.dicom.extract import facts_from_file
    from pacsnode.dicom.limits import ValueTooLong

    name = "张" * 64
    ok = write_instance(sample_files()[0], tmp_path / "ok.dcm", SpecificCharacterSet=charset,
                        PatientName=f"Zhang^San={name}", InstitutionName="贵州省人民医院" * 9)
    facts = facts_from_file(ok)
    assert facts.patient_name.endswith(name)
    too_long = write_instance(sample_files()[0], tmp_path / "long.dcm", SpecificCharacterSet=charset,
                              PatientName=f"Zhang^San={name}张")
    with pytest.raises(ValueTooLong, match="PatientName"):
        facts_from_file(too_long)
