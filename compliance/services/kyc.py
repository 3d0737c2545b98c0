"""KYC cases: a trader applies for a tier with the metadata of their documents, staff
review the case and approve it (the account gets the tier), reject it, or ask for more
information, after which the trader resubmits.

The case's state machine lives in the database (``KycCase`` FSM trigger):

    SUBMITTED → IN_REVIEW → APPROVED | REJECTED | MORE_INFO;  MORE_INFO → SUBMITTED

A service asks the database for the transition and turns its refusal into a
:class:`KycTransitionError`, so the rule is written once. Staff actions lock the case
row first, so two reviewers deciding one case act one after the other, the second on
the first's result. Every refusal is a :class:`KycError` and changes nothing; every
change writes one ``AuditEvent`` in its transaction.

A document's number is never stored: only ``0x`` + SHA-256 of the salted, normalised
number (``settings.KYC_DOCUMENT_SALT``), enough to spot one document used by two
accounts.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone

from compliance.models import (
    KYC_OPEN_STATUSES,
    KycCase,
    KycDocument,
    KycDocumentType,
    KycStatus,
)
from compliance.services.audit import SYSTEM, Actor, audit_record, model_state
from exchange.models import Account, AccountStatus

_COUNTRY = re.compile(r"^[A-Z]{2}$")
_CASE_FIELDS = [
    "status",
    "requested_tier",
    "approved_tier",
    "country",
    "reviewer",
    "reviewer_notes",
    "decided_at",
]

# The accounts' and limits' kyc_tier columns are smallint.
MAX_KYC_TIER = 32767


class KycError(ValueError):
    """A KYC request or decision was refused; nothing changed."""

    code = "KYC_ERROR"


class KycTransitionError(KycError):
    """The case is not in a state that allows the step."""

    code = "KYC_INVALID_TRANSITION"


@dataclass(frozen=True, slots=True)
class KycDocumentInput:
    """What the trader says about one identity document."""

    document_type: str
    number: str
    issuing_country: str
    expires_on: dt.date | None = None


def kyc_document_number_hash(number: str) -> str:
    """``0x`` + SHA-256 of the salted number, normalised (letters and digits only,
    upper case) so that ``ab 123-45`` and ``AB12345`` are one document."""
    normalised = re.sub(r"[^0-9A-Z]", "", number.upper())
    if not normalised:
        raise KycError("a document number needs letters or digits")
    salted = f"{settings.KYC_DOCUMENT_SALT}:{normalised}".encode()
    return "0x" + hashlib.sha256(salted).hexdigest()


def _country(value: str, what: str) -> str:
    country = (value or "").strip().upper()
    if not _COUNTRY.match(country):
        raise KycError(f"{what} must be an ISO 3166-1 alpha-2 code, not {value!r}")
    return country


def _documents_validated(documents: Sequence[KycDocumentInput]) -> list[KycDocument]:
    """Unsaved ``KycDocument`` rows for ``documents``; refuses an empty list, an
    unknown type or country, and a document that has expired."""
    if not documents:
        raise KycError("submit at least one identity document")
    today = timezone.now().date()
    rows = []
    for document in documents:
        if document.document_type not in KycDocumentType.values:
            raise KycError(
                f"unknown document type {document.document_type!r}; one of "
                f"{', '.join(KycDocumentType.values)}"
            )
        if document.expires_on is not None and document.expires_on < today:
            raise KycError(
                f"the {KycDocumentType(document.document_type).label} expired on "
                f"{document.expires_on.isoformat()}"
            )
        rows.append(
            KycDocument(
                document_type=document.document_type,
                number_hash=kyc_document_number_hash(document.number),
                issuing_country=_country(document.issuing_country, "the issuing country"),
                expires_on=document.expires_on,
            )
        )
    return rows


def _documents_state(documents: list[KycDocument]) -> list[dict[str, Any]]:
    return [
        model_state(d, ["document_type", "number_hash", "issuing_country", "expires_on"])
        for d in documents
    ]


def _notes_required(notes: str, what: str) -> str:
    notes = (notes or "").strip()
    if not notes:
        raise KycError(f"{what} needs notes for the trader and the audit trail")
    return notes


def _case_locked(case: KycCase) -> KycCase:
    """The case's row, locked until the transaction ends."""
    return KycCase.objects.select_for_update(of=("self",)).get(pk=case.pk)


def _transition(case: KycCase, to: str, step: str, **fields: Any) -> None:
    """Move a locked ``case`` to ``to`` (with ``fields``), as the database's state
    machine allows or refuses."""
    was = case.status
    if was == to:  # not a transition: the state machine's trigger would let it pass
        raise KycTransitionError(f"KYC case #{case.pk} is already {KycStatus(was).label}")
    case.status = to
    for name, value in fields.items():
        setattr(case, name, value)
    try:
        case.save(update_fields=["status", *fields])
    except DatabaseError as exc:
        if "Invalid transition" not in str(exc):
            raise
        raise KycTransitionError(
            f"KYC case #{case.pk} is {KycStatus(was).label}: it cannot be {step}"
        ) from None


def _reviewer(actor: Actor):
    if actor.user is None:
        raise KycError("KYC cases are reviewed by staff, not by the platform")
    return actor.user


# --------------------------------------------------------------------------------------
# The trader's side
# --------------------------------------------------------------------------------------


@transaction.atomic(durable=True)
def kyc_case_submit(
    *,
    account: Account,
    requested_tier: int,
    country: str,
    documents: Sequence[KycDocumentInput],
    actor: Actor = SYSTEM,
) -> KycCase:
    """Open a case for ``account`` to reach ``requested_tier``, declaring residence in
    ``country``. An account has at most one open case; after a request for more
    information use :func:`kyc_case_resubmit`."""
    country = _country(country, "the country of residence")
    rows = _documents_validated(documents)
    # Serialises the account's submissions, so "one open case" is checked on the
    # latest state (the database's unique index backs it up).
    account = Account.objects.select_for_update(of=("self",)).get(pk=account.pk)
    if account.status == AccountStatus.CLOSED:
        raise KycError("this account is closed")
    if requested_tier <= account.kyc_tier:
        raise KycError(f"the account already has KYC tier {account.kyc_tier}")
    open_case = KycCase.objects.filter(account=account, status__in=KYC_OPEN_STATUSES).first()
    if open_case is not None:
        raise KycError(
            f"KYC case #{open_case.pk} is still {KycStatus(open_case.status).label}"
            + (": resubmit it" if open_case.status == KycStatus.MORE_INFO else "")
        )
    case = KycCase.objects.create(account=account, requested_tier=requested_tier, country=country)
    for row in rows:
        row.case = case
    KycDocument.objects.bulk_create(rows)
    audit_record(
        actor=actor,
        action="kyc.submit",
        target=case,
        after=model_state(case, _CASE_FIELDS) | {"documents": _documents_state(rows)},
    )
    return case


@transaction.atomic(durable=True)
def kyc_case_resubmit(
    *, case: KycCase, documents: Sequence[KycDocumentInput], actor: Actor = SYSTEM
) -> KycCase:
    """Answer a request for more information: add ``documents`` and put the case back
    in the review queue."""
    rows = _documents_validated(documents)
    case = _case_locked(case)
    before = model_state(case, _CASE_FIELDS)
    _transition(case, KycStatus.SUBMITTED, "resubmitted")
    for row in rows:
        row.case = case
    KycDocument.objects.bulk_create(rows)
    audit_record(
        actor=actor,
        action="kyc.resubmit",
        target=case,
        before=before,
        after=model_state(case, _CASE_FIELDS) | {"documents": _documents_state(rows)},
    )
    return case


# --------------------------------------------------------------------------------------
# Staff review
# --------------------------------------------------------------------------------------


@transaction.atomic(durable=True)
def kyc_case_start_review(*, actor: Actor, case: KycCase) -> KycCase:
    """Take a submitted case off the queue: ``actor`` is now its reviewer."""
    reviewer = _reviewer(actor)
    case = _case_locked(case)
    before = model_state(case, _CASE_FIELDS)
    _transition(case, KycStatus.IN_REVIEW, "taken into review", reviewer=reviewer)
    audit_record(
        actor=actor,
        action="kyc.start_review",
        target=case,
        before=before,
        after=model_state(case, _CASE_FIELDS),
    )
    return case


@transaction.atomic(durable=True)
def kyc_case_approve(*, actor: Actor, case: KycCase, tier: int, notes: str = "") -> KycCase:
    """Approve a case in review at ``tier`` (which may differ from the tier asked
    for): the account gets the tier, and the case's country as its residence."""
    reviewer = _reviewer(actor)
    if not isinstance(tier, int) or not 1 <= tier <= MAX_KYC_TIER:
        raise KycError(
            f"the approved tier must be a whole number from 1 to {MAX_KYC_TIER}, not {tier!r}"
        )
    case = _case_locked(case)
    account = Account.objects.select_for_update(of=("self",)).get(pk=case.account_id)
    if account.status == AccountStatus.CLOSED:
        raise KycError("the account is closed")
    before = model_state(case, _CASE_FIELDS) | _account_state(account)
    _transition(
        case,
        KycStatus.APPROVED,
        "approved",
        approved_tier=tier,
        reviewer=reviewer,
        reviewer_notes=(notes or "").strip(),
        decided_at=timezone.now(),
    )
    account.kyc_tier = tier
    account.country = case.country
    account.save(update_fields=["kyc_tier", "country"])
    audit_record(
        actor=actor,
        action="kyc.approve",
        target=case,
        before=before,
        after=model_state(case, _CASE_FIELDS) | _account_state(account),
    )
    return case


def _account_state(account: Account) -> dict[str, Any]:
    return {"account_kyc_tier": account.kyc_tier, "account_country": account.country}


@transaction.atomic(durable=True)
def kyc_case_reject(*, actor: Actor, case: KycCase, notes: str) -> KycCase:
    """Refuse a case in review; the account keeps its tier."""
    reviewer = _reviewer(actor)
    notes = _notes_required(notes, "a rejection")
    case = _case_locked(case)
    before = model_state(case, _CASE_FIELDS)
    _transition(
        case,
        KycStatus.REJECTED,
        "rejected",
        reviewer=reviewer,
        reviewer_notes=notes,
        decided_at=timezone.now(),
    )
    audit_record(
        actor=actor,
        action="kyc.reject",
        target=case,
        before=before,
        after=model_state(case, _CASE_FIELDS),
        reason=notes,
    )
    return case


@transaction.atomic(durable=True)
def kyc_case_request_info(*, actor: Actor, case: KycCase, notes: str) -> KycCase:
    """Send a case in review back to the trader, saying what is missing in ``notes``."""
    reviewer = _reviewer(actor)
    notes = _notes_required(notes, "a request for more information")
    case = _case_locked(case)
    before = model_state(case, _CASE_FIELDS)
    _transition(
        case,
        KycStatus.MORE_INFO,
        "sent back for more information",
        reviewer=reviewer,
        reviewer_notes=notes,
    )
    audit_record(
        actor=actor,
        action="kyc.request_info",
        target=case,
        before=before,
        after=model_state(case, _CASE_FIELDS),
        reason=notes,
    )
    return case
