"""``pacsnode send``: C-STORE instances to a peer on one of our own associations, then,
when asked, Storage Commitment for what the peer accepted (issue 13 item 4).

The instances go out as their stored bytes (``sending``); TLS follows the peer's
registration and fails closed (``outgoing``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from pacsnode.config import NodeConfig
from pacsnode.dimse import commit_scu, outgoing, sending
from pacsnode.errors import PeerError
from pacsnode.model import InstanceLocation, Peer

Progress = Callable[[str, "int | None", str], None]  # path, status (None: not sent), comment


@dataclass
class SendOutcome:
    sent: int = 0
    warning: int = 0
    failed: int = 0
    commitment: commit_scu.CommitmentResult | None = None
    commitment_error: str = ""  # why no report was obtained, when --commit was asked
    stored: list[tuple[str, str]] = field(default_factory=list)  # (class, instance) the peer accepted


def contexts_for(locations: list[InstanceLocation], commit: bool) -> list:
    """The storage contexts (stored syntax, then uncompressed) plus Storage Commitment when asked."""
    contexts = sending.proposed_contexts(locations)
    if commit:
        contexts = contexts[:sending.MAX_CONTEXTS - 1]
        contexts.append(commit_scu.commitment_context(2 * len(contexts) + 1))
    return contexts


def send_instances(peer: Peer, calling_aet: str, locations: list[InstanceLocation], config: NodeConfig | None,
                   progress: Progress | None = None, commit: bool = False,
                   commit_timeout: float = 60.0) -> SendOutcome:
    """C-STORE every location on one association; with ``commit``, ask the peer to commit them."""
    outcome = SendOutcome()
    with outgoing.open_association(peer, calling_aet, contexts_for(locations, commit), config) as assoc:
        for location in locations:
            try:
                response = assoc.send_stored(location)
            except sending.CannotSend as exc:
                outcome.failed += 1
                if progress:
                    progress(location.path, None, str(exc))
                continue
            kind = sending.store_outcome(response.status)
            if kind == "failure":
                outcome.failed += 1
            else:
                outcome.stored.append((location.sop_class_uid, location.sop_instance_uid))
                if kind == "warning":
                    outcome.warning += 1
                else:
                    outcome.sent += 1
            if progress:
                progress(location.path, response.status, response.error_comment)
        if commit and outcome.stored:
            try:
                outcome.commitment = commit_scu.request_commitment(assoc, outcome.stored, commit_timeout)
            except PeerError as exc:
                outcome.commitment_error = str(exc)
        elif commit:
            outcome.commitment_error = "nothing was stored, so nothing to commit"
    return outcome
