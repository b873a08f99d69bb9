"""Which catalog item a study is, and which institution produced it.

Free text in DICOM headers is unreliable, so both lookups try the most specific evidence
first: codes (Procedure Code Sequence, Institution Code Sequence), then descriptive
attributes (modality + body part + contrast; institution name and aliases), and for the
institution finally the AE title the study arrived from.
"""

from __future__ import annotations

from collections.abc import Iterable

from pacsnode.model import CodedEntry
from pacsnode.recognition.facts import StudyFacts
from pacsnode.recognition.region import ExamItem, Institution, Region, name_key


def resolve_item(region: Region, facts: StudyFacts) -> ExamItem | None:
    """The catalog item the study is, or None.

    1. Any of the study's procedure code values listed in an item's ``procedure_codes``
       (case-insensitive): that item, first in catalog order.
    2. Otherwise the items whose modalities include one of the study's modalities, whose
       body parts include one of the study's (an item without body parts takes any), and
       whose contrast fits (``plain`` needs no contrast, ``contrast`` needs it, ``any`` either).
       The most specific wins: a named body part beats "any body part", a stated contrast
       beats "any"; ties go to catalog order.
    Ineligible items are returned too: the advice says "not eligible", not "unknown".
    """
    wanted = {code.strip().casefold() for code in facts.procedure_codes if code and code.strip()}
    if wanted:
        for item in region.catalog:
            if any(code.casefold() in wanted for code in item.procedure_codes):
                return item
    modalities = set(facts.images_of)  # the images are what is recognised, not a report's series
    parts = set(facts.image_parts)
    best: ExamItem | None = None
    best_score = -1
    for item in region.catalog:
        if not modalities.intersection(item.modalities):
            continue
        if item.body_parts and not parts.intersection(item.body_parts):
            continue
        if item.contrast == "plain" and facts.contrast or item.contrast == "contrast" and not facts.contrast:
            continue
        score = 2 * bool(item.body_parts) + (item.contrast != "any")
        if score > best_score:
            best, best_score = item, score
    return best


def resolve_institution(
    region: Region,
    institution_codes: Iterable[str | CodedEntry],
    institution_name: str,
    calling_ae: str,
) -> Institution | None:
    """The institution that produced a study, or None.

    Tries, in order: a value of Institution Code Sequence that is a registry code; Institution
    Name against names and aliases (trimmed, case-insensitive, inner spaces collapsed); the
    calling AE title (trimmed, exact: AE titles are case-sensitive). The AE title comes last
    because a study forwarded by a PACS arrives from the PACS, not from its producer.
    """
    for entry in institution_codes:
        value = entry.value if isinstance(entry, CodedEntry) else entry
        found = region.institution((value or "").strip())
        if found is not None:
            return found
    name = name_key(institution_name or "")
    if name:
        for inst in region.institutions:
            if name in (name_key(n) for n in (inst.name, *inst.aliases)):
                return inst
    aet = (calling_ae or "").strip()
    if aet:
        for inst in region.institutions:
            if aet in inst.ae_titles:
                return inst
    return None
