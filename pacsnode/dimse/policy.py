"""The acceptance policy: which associations, contexts, syntaxes and roles the node accepts.

One module decides what every association may do, whatever service it then uses
(PS3.8 7.1.1, 9.3.3; PS3.7 D.3.3):

* the calling AE title must be printable and not blank (a blank title must never reach
  ``Node.identify``: it would look like nobody in particular, or worse), else
  A-ASSOCIATE-RJ rejected-permanent, service-user, calling AE title not recognized;
* contexts: Verification, every storage SOP class in every transfer syntax we know (we
  store what is received, byte for byte), Patient/Study Root FIND/MOVE/GET in the four
  uncompressed syntaxes, and Storage Commitment Push Model;
* SCP/SCU role selection: for storage SOP classes both roles are granted as proposed (a
  C-GET SCU must be the SCP of the C-STOREs we send back); for anything else only the SCU
  role (the requester never acts as our SCP for a query);
* extended negotiation: combined date-time matching for C-FIND (``find.sop_extended_answers``),
  the asynchronous operations window answered 1/1 (we run one operation at a time), user
  identity accepted without a response (we identify peers by AE title, address and TLS
  certificate, so a user name confirms nothing; PS3.7 D.3.3.7 lets the acceptor omit it);
* one Implementation Class UID and version name, in the A-ASSOCIATE-AC and in the file
  meta of every stored file.
"""

from __future__ import annotations

from pynetdicom import ALL_TRANSFER_SYNTAXES
from pynetdicom.presentation import StoragePresentationContexts

from pacsnode.config import NodeConfig
from pacsnode.dimse import find, pdu

IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.10.1078.100"
IMPLEMENTATION_VERSION_NAME = "PACSNODE_01"

VERIFICATION = "1.2.840.10008.1.1"
STORAGE_COMMITMENT_PUSH = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"  # the well-known SOP instance (PS3.4 J.3.2)
STORAGE_SOP_CLASSES = frozenset(str(cx.abstract_syntax) for cx in StoragePresentationContexts)
FIND_SOP_CLASSES = find.FIND_SOP_CLASSES
MOVE_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.2.1.2",  # Patient Root Q/R MOVE
    "1.2.840.10008.5.1.4.1.2.2.2",  # Study Root Q/R MOVE
})
GET_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.2.1.3",  # Patient Root Q/R GET
    "1.2.840.10008.5.1.4.1.2.2.3",  # Study Root Q/R GET
})
QR_SOP_CLASSES = FIND_SOP_CLASSES | MOVE_SOP_CLASSES | GET_SOP_CLASSES
SUPPORTED_ABSTRACT_SYNTAXES = (STORAGE_SOP_CLASSES | QR_SOP_CLASSES
                               | {VERIFICATION, STORAGE_COMMITMENT_PUSH})

IMPLICIT_LITTLE = "1.2.840.10008.1.2"
EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_LITTLE = "1.2.840.10008.1.2.1.99"
EXPLICIT_BIG_ENDIAN = "1.2.840.10008.1.2.2"
KNOWN_TRANSFER_SYNTAXES = frozenset(str(ts) for ts in ALL_TRANSFER_SYNTAXES)
# Identifiers, commitment requests: the uncompressed syntaxes (pynetdicom's ALL_TRANSFER_SYNTAXES[:4]).
QUERY_TRANSFER_SYNTAXES = frozenset({IMPLICIT_LITTLE, EXPLICIT_LITTLE, DEFLATED_EXPLICIT_LITTLE,
                                     EXPLICIT_BIG_ENDIAN})
ASYNC_WINDOW = (1, 1)  # one operation invoked and performed at a time


def calling_ae_acceptable(title: str) -> bool:
    """An AE title (PS3.5 AE VR) that names someone: printable ASCII, no backslash, not blank.

    The decoder keeps every byte (latin-1) and strips trailing NUL/space padding, so 16
    spaces or 16 NULs arrive here as "", a control character or non-ASCII byte as itself.
    Leading spaces are insignificant (PS3.5 6.2); leading NULs are not padding: such a title
    was accepted here and then identified as nobody, instead of being rejected.
    """
    stripped = title.strip(" ")
    return bool(stripped) and all(0x20 <= ord(ch) <= 0x7E and ch != "\\" for ch in stripped)


def transfer_syntaxes_for(abstract_syntax: str) -> frozenset[str]:
    """The transfer syntaxes we accept for one abstract syntax."""
    if abstract_syntax in STORAGE_SOP_CLASSES:
        return KNOWN_TRANSFER_SYNTAXES
    if abstract_syntax == VERIFICATION:
        return KNOWN_TRANSFER_SYNTAXES
    return QUERY_TRANSFER_SYNTAXES


def choose_transfer_syntax(proposed: tuple[str, ...] | list[str],
                           acceptable: frozenset[str] = KNOWN_TRANSFER_SYNTAXES) -> str | None:
    """The requestor's first acceptable syntax, but never retired Explicit VR Big Endian when a
    little-endian one is also proposed: storescu offers [Explicit BE, Implicit LE] as its
    second context, and taking BE there would make it convert Implicit VR files instead of
    sending them as they are (we store what is received, byte for byte)."""
    known = [ts for ts in proposed if ts in acceptable]
    preferred = [ts for ts in known if ts != EXPLICIT_BIG_ENDIAN]
    candidates = preferred or known
    return candidates[0] if candidates else None


def _context_answers(rq: pdu.AssociateRQ) -> list[pdu.PresentationContextAC]:
    answers = []
    for pc in rq.presentation_contexts:
        chosen = choose_transfer_syntax(pc.transfer_syntaxes, transfer_syntaxes_for(pc.abstract_syntax))
        if pc.abstract_syntax not in SUPPORTED_ABSTRACT_SYNTAXES:
            result = pdu.PC_ABSTRACT_SYNTAX_NOT_SUPPORTED
        elif chosen is None:
            result = pdu.PC_TRANSFER_SYNTAXES_NOT_SUPPORTED
        else:
            result = pdu.PC_ACCEPTANCE
        answers.append(pdu.PresentationContextAC(pc.context_id, result, chosen or pc.transfer_syntaxes[0]))
    return answers


def role_answers(rq: pdu.AssociateRQ, accepted: set[str]) -> tuple[pdu.RoleSelection, ...]:
    """SCP/SCU role selection answers (PS3.7 D.3.3.4) for the accepted abstract syntaxes."""
    answers = []
    for role in rq.user_information.role_selections:
        if role.sop_class_uid not in accepted:
            continue
        storage = role.sop_class_uid in STORAGE_SOP_CLASSES
        answers.append(pdu.RoleSelection(role.sop_class_uid, role.scu_role, role.scp_role and storage))
    return tuple(answers)


def extended_negotiations(rq: pdu.AssociateRQ, accepted: set[str]) -> tuple[pdu.ExtendedNegotiation, ...]:
    """Our SOP Class Extended Negotiation answers for the accepted FIND SOP classes (PS3.7 D.3.3.5)."""
    asked = {ext.sop_class_uid: ext.application_information for ext in rq.user_information.extended_negotiations
             if ext.sop_class_uid in accepted}
    return tuple(pdu.ExtendedNegotiation(uid, info) for uid, info in find.sop_extended_answers(asked).items())


def negotiate(rq: pdu.AssociateRQ, config: NodeConfig) -> pdu.AssociateAC | pdu.AssociateRJ:
    """The acceptor's answer to an A-ASSOCIATE-RQ (see the module docstring)."""
    if not rq.protocol_version & 1:
        return pdu.AssociateRJ(pdu.RJ_PERMANENT, pdu.RJ_SOURCE_ACSE, pdu.RJ_ACSE_PROTOCOL_VERSION)
    if not calling_ae_acceptable(rq.calling_ae):
        return pdu.AssociateRJ(pdu.RJ_PERMANENT, pdu.RJ_SOURCE_USER, pdu.RJ_USER_CALLING_AE)
    if config.network.strict_called_aet and rq.called_ae.strip() != config.aet:
        return pdu.AssociateRJ(pdu.RJ_PERMANENT, pdu.RJ_SOURCE_USER, pdu.RJ_USER_CALLED_AE)
    if rq.application_context != pdu.APPLICATION_CONTEXT:
        return pdu.AssociateRJ(pdu.RJ_PERMANENT, pdu.RJ_SOURCE_USER, pdu.RJ_USER_APPLICATION_CONTEXT)
    answers = _context_answers(rq)
    accepted = {pc.abstract_syntax for pc, ac in zip(rq.presentation_contexts, answers)
                if ac.result == pdu.PC_ACCEPTANCE}
    asked = rq.user_information
    user = pdu.UserInformation(maximum_length=config.network.max_pdu,
                               implementation_class_uid=IMPLEMENTATION_CLASS_UID,
                               implementation_version_name=IMPLEMENTATION_VERSION_NAME,
                               async_operations_window=ASYNC_WINDOW if asked.async_operations_window else None,
                               role_selections=role_answers(rq, accepted),
                               extended_negotiations=extended_negotiations(rq, accepted))
    return pdu.AssociateAC(rq.called_ae, rq.calling_ae, tuple(answers), user)


def scp_role_granted(ac: pdu.AssociateAC, sop_class_uid: str) -> bool:
    """Whether the requester may act as SCP for ``sop_class_uid`` (receive our C-STOREs of a C-GET)."""
    return any(role.sop_class_uid == sop_class_uid and role.scp_role
               for role in ac.user_information.role_selections)
