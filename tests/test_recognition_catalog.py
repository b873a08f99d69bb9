"""resolve_item and resolve_institution: codes first, then descriptive attributes, then the AE title."""

from __future__ import annotations

import pytest

from pacsnode.model import CodedEntry
from pacsnode.recognition import ExamItem, Institution, Region, StudyFacts, resolve_institution, resolve_item

REGION = Region(
    label="黔HR",
    institutions=(
        Institution("PRV001", "Qianzhong Provincial People's Hospital", "3A", aliases=("黔中省人民医院",),
                    ae_titles=("PRV_CT", "PRV_PACS")),
        Institution("CTY001", "Anping County People's Hospital", "2A", ae_titles=("CTY_CT",)),
    ),
    catalog=(
        ExamItem("CT-HEAD-PLAIN", "CT head", ("CT",), ("HEAD", "BRAIN"), "plain", ("CT-HEAD-PLAIN",), 30),
        ExamItem("CT-HEAD-ANY", "CT head any", ("CT",), ("HEAD",), "any", (), 30),
        ExamItem("CT-ANY", "CT any body part", ("CT",), (), "any", (), 30),
        ExamItem("DX-CHEST", "DR chest", ("DX", "CR"), ("CHEST",), "plain", ("DX-CHEST", "dr-chest-pa"), 30),
        ExamItem("MR-BRAIN-CONTRAST", "MR brain enh", ("MR",), ("BRAIN",), "contrast", (), 30),
    ),
)


def _f(modalities: tuple[str, ...] = (), body_parts: tuple[str, ...] = (), codes: tuple[str, ...] = (),
       contrast: bool = False) -> StudyFacts:
    return StudyFacts("1", modalities=modalities, body_parts=body_parts, procedure_codes=codes, contrast=contrast)


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        pytest.param(_f(codes=("DX-CHEST",)), "DX-CHEST", id="procedure-code-alone-suffices"),
        pytest.param(_f(codes=(" DR-CHEST-PA ",)), "DX-CHEST", id="procedure-code-trimmed-case-insensitive"),
        pytest.param(_f(("CT",), ("CHEST",), ("DX-CHEST",)), "DX-CHEST", id="procedure-code-beats-modality"),
        pytest.param(_f(("CR",), ("chest",)), "DX-CHEST", id="cr-and-lower-case-body-part"),
        pytest.param(_f(("CT",), ("HEAD",)), "CT-HEAD-PLAIN", id="stated-contrast-beats-any"),
        pytest.param(_f(("CT",), ("HEAD",), contrast=True), "CT-HEAD-ANY", id="contrast-study-skips-plain-item"),
        pytest.param(_f(("CT",), ("PELVIS",)), "CT-ANY", id="item-without-body-parts-takes-any"),
        pytest.param(_f(("CT",), ()), "CT-ANY", id="no-body-part-only-wildcard-item"),
        pytest.param(_f(("MR",), ("BRAIN",)), None, id="plain-study-does-not-match-contrast-item"),
        pytest.param(_f(("MR",), ("BRAIN",), contrast=True), "MR-BRAIN-CONTRAST", id="contrast-study-matches-contrast-item"),
        pytest.param(_f(("US",), ("ABDOMEN",)), None, id="unlisted-modality"),
        pytest.param(_f(("SR", "DX"), ("CHEST",)), "DX-CHEST", id="any-study-modality-may-match"),
        pytest.param(_f(), None, id="no-facts-no-item"),
    ],
)
def test_resolve_item(facts: StudyFacts, expected: str | None) -> None:
    item = resolve_item(REGION, facts)
    assert (item.code if item else None) == expected


@pytest.mark.parametrize(
    ("codes", "name", "aet", "expected"),
    [
        pytest.param(["PRV001"], "", "", "PRV001", id="institution-code"),
        pytest.param([CodedEntry("CTY001", "CN-REG")], "", "", "CTY001", id="coded-entry"),
        pytest.param(["CTY001"], "Qianzhong Provincial People's Hospital", "PRV_CT", "CTY001", id="code-beats-name-and-aet"),
        pytest.param(["XYZ"], "  anping   county people's HOSPITAL ", "", "CTY001", id="unknown-code-falls-back-to-name"),
        pytest.param([], "黔中省人民医院", "", "PRV001", id="alias"),
        pytest.param([], "Anping County People's Hospital", "PRV_PACS", "CTY001", id="name-beats-aet-of-forwarding-pacs"),
        pytest.param([], "Some Other Hospital", "PRV_CT", "PRV001", id="aet-as-last-resort"),
        pytest.param([], "", " CTY_CT ", "CTY001", id="aet-trimmed"),
        pytest.param([], "", "cty_ct", None, id="aet-is-case-sensitive"),
        pytest.param([], "", "", None, id="nothing-known"),
    ],
)
def test_resolve_institution(codes: list[str | CodedEntry], name: str, aet: str, expected: str | None) -> None:
    inst = resolve_institution(REGION, codes, name, aet)
    assert (inst.code if inst else None) == expected
