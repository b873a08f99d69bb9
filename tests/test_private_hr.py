"""The PACSNODE HR block carries every failed-condition code whole (issue 10).

(0011,xx03) was CS and cut values to 16 characters: ``producer_not_qualified`` reached a peer
as ``PRODUCER_NOT_QUA``. Here every code goes through the bytes a response is made of (both
VR encodings a C-FIND response may use) and back through the reader ``pacsnode priors`` uses;
``test_regional_e2e.py`` sends them between real nodes and DCMTK ``findscu``.
"""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode, encode

from pacsnode.dicom.private_hr import read_hr_block, request_hr_block, write_hr_block
from pacsnode.recognition import CONDITION_CODES


def _over_the_wire(ds: Dataset, implicit: bool) -> Dataset:
    """Encode as pynetdicom encodes a DIMSE data set, and decode it as the receiving side does."""
    raw = encode(ds, implicit, True)
    assert raw is not None
    return decode(BytesIO(raw), implicit, True)


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit-vr", "explicit-vr"])
def test_every_condition_code_arrives_whole(implicit: bool) -> None:
    response = Dataset()
    response.SpecificCharacterSet = "ISO_IR 192"
    response.StudyInstanceUID = "1.2.3"
    write_hr_block(response, 0x10, {"status": "NOT_ELIGIBLE", "scope": "黔HR", "failed": list(CONDITION_CODES),
                                    "valid_until": "20261231", "item": "CT-CHEST-PLAIN", "producer": "CTY001"})
    assert max(len(code) for code in CONDITION_CODES) > 16  # the case CS could not carry
    block = read_hr_block(_over_the_wire(response, implicit))
    assert block["failed"] == list(CONDITION_CODES)
    assert (block["status"], block["scope"], block["producer"]) == ("NOT_ELIGIBLE", "黔HR", "CTY001")


def test_the_failed_element_is_lo_and_requested_as_lo() -> None:
    query = Dataset()
    request_hr_block(query, 0x42)
    assert query[0x00114203].VR == "LO"
    response = Dataset()
    write_hr_block(response, 0x42, {"failed": ["producer_not_qualified"]})
    assert (response[0x00114203].VR, response[0x00114203].value) == ("LO", "PRODUCER_NOT_QUALIFIED")


def test_an_older_node_sending_cs_is_still_read() -> None:
    response = Dataset()
    response.add_new(0x00110010, "LO", "PACSNODE HR")
    response.add_new(0x00111003, "CS", ["QC_NOT_ACCEPTED", "LOSSY"])
    assert read_hr_block(response)["failed"] == ["qc_not_accepted", "lossy"]


@pytest.mark.parametrize("bad", ["x" * 65, "A\\B", "line\nbreak"])
def test_a_code_that_does_not_fit_is_refused_not_cut(bad: str) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        write_hr_block(Dataset(), 0x10, {"failed": [bad]})
