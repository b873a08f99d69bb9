"""Provenance over claims: does who delivered a study vouch for the producer its headers claim?

What a dataset says about its producer (Institution Code Sequence, Institution Name) is a
claim anybody can write; who delivered it is a fact the node recorded at ingest (THREATS.md
rule 5). Recognition trusts the claim only when every copy of the study came from a party
that vouches for it:

* the local admin's ``import`` (the admin answers for what they import);
* a registered peer, this node's own institution's modality or workstation, or a peer this
  node retrieved from, whose *registered* institution is the claimed producer.

An unregistered AE, a peer of another institution, and instances stored before provenance
was recorded vouch for nothing. An admin may vouch explicitly for (study, producer): that
covers every instance received up to the moment of vouching, not what arrives later.
Pure: facts in, answer out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

PRODUCER_NOT_VOUCHED = "producer_not_vouched"

#: Delivery kinds whose registered institution may vouch (see pacsnode.model.DeliveryKind).
_INSTITUTION_KINDS = ("peer", "own", "retrieved")


@dataclass(frozen=True)
class Delivery:
    """One way copies of the study arrived: kind, the deliverer's registered institution and
    name, and when the last such copy arrived (ISO text, UTC)."""

    kind: str
    institution: str = ""
    who: str = ""
    last_received_at: str = ""


@dataclass(frozen=True)
class Vouch:
    """An admin's explicit statement that ``producer`` made the study, at ``at`` (ISO, UTC)."""

    producer: str
    at: str


def producer_vouched(producer: str, deliveries: Iterable[Delivery], vouches: Iterable[Vouch]) -> tuple[bool, str]:
    """(vouched, why) for a study whose headers claim ``producer`` ("" = no claim resolved).

    With no producer resolved there is nothing to vouch for: ``producer_unknown`` already fails.
    """
    if not producer:
        return True, "no producer claimed"
    covering = [v.at for v in vouches if v.producer == producer]
    latest_vouch = max(covering) if covering else ""
    unvouched: list[str] = []
    deliveries = list(deliveries)
    for d in deliveries:
        if d.kind == "import" or (d.kind in _INSTITUTION_KINDS and d.institution == producer):
            continue
        if latest_vouch and d.last_received_at and d.last_received_at <= latest_vouch:
            continue
        unvouched.append(_describe(d))
    if not deliveries:
        return False, f"no delivery recorded: nothing vouches that {producer} produced it"
    if unvouched:
        return False, f"claims producer {producer} but was delivered by {'; '.join(unvouched)}"
    how = "an admin's vouch" if latest_vouch and any(
        not (d.kind == "import" or d.institution == producer) for d in deliveries) else "its deliverers"
    return True, f"producer {producer} vouched for by {how}"


def _describe(d: Delivery) -> str:
    if d.kind == "unregistered":
        return f"unregistered AE {d.who or '(blank)'}"
    if d.kind in _INSTITUTION_KINDS:
        return f"{d.kind} {d.who} of {d.institution or 'no institution'}"
    return "an unknown party (stored before provenance was recorded)"
