"""Staff corrections to a trader's balance, under four eyes: one staff user asks,
a different one approves, and only then is anything posted."""

from __future__ import annotations

from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from compliance.services.audit import Actor, audit_record, model_state
from exchange.models import Account, Asset
from exchange.notify import balances_changed
from portfolio.lock_objects import adjustment_lock
from portfolio.models import (
    AdjustmentStatus,
    LedgerAccountKind,
    LedgerAdjustment,
    TransactionKind,
)
from portfolio.services.ledger import (
    Entry,
    LedgerError,
    Leg,
    entries_post,
    ledger_accounts_lock_keys,
    require_available,
    trader_account_key,
    venue_account_key,
)


class AdjustmentError(LedgerError):
    code = "ADJUSTMENT_ERROR"


def _require_staff(user: AbstractBaseUser) -> None:
    if not (user.is_active and user.is_staff):
        raise AdjustmentError(f"{user} is not active staff")


@transaction.atomic  # joins the caller's: the admin's add view runs in its own atomic block
def adjustment_request(
    *,
    account: Account,
    asset: Asset,
    amount: Decimal,
    reason: str,
    requested_by: AbstractBaseUser,
    actor: Actor | None = None,
) -> LedgerAdjustment:
    """Ask for a manual balance change, audited as ``actor`` (``requested_by`` by
    default); another staff user decides it (``adjustment_post``/``adjustment_reject``)."""
    _require_staff(requested_by)
    if not isinstance(amount, Decimal) or not amount.is_finite() or amount == 0:
        raise AdjustmentError(f"amount must be a non-zero decimal, not {amount!r}")
    if amount != amount.quantize(Decimal("0.00000001")):
        raise AdjustmentError(f"amount {amount} has more than 8 decimal places")
    if not reason.strip():
        raise AdjustmentError("an adjustment needs a reason")
    adjustment = LedgerAdjustment.objects.create(
        account=account, asset=asset, amount=amount, reason=reason, requested_by=requested_by
    )
    audit_record(
        actor=actor or Actor(user=requested_by),
        action="adjustment.request",
        target=adjustment,
        after=model_state(adjustment, _AUDITED),
        reason=reason,
    )
    return adjustment


_AUDITED = ["status", "account", "asset", "amount"]


def _decide(adjustment: LedgerAdjustment, decided_by: AbstractBaseUser) -> LedgerAdjustment:
    _require_staff(decided_by)
    locked = adjustment_lock(adjustment.pk)
    if locked.status != AdjustmentStatus.PENDING:
        raise AdjustmentError(f"adjustment {locked.pk} is already {locked.status}")
    if locked.requested_by_id == decided_by.pk:
        raise AdjustmentError("an adjustment must be decided by someone other than its requester")
    return locked


def _decided(
    locked: LedgerAdjustment,
    status: str,
    *,
    decided_by: AbstractBaseUser,
    actor: Actor | None,
    before: dict,
    reason: str = "",
) -> LedgerAdjustment:
    """Record the decision on ``locked`` and its audit event (``adjustment.post`` or
    ``adjustment.reject``), as ``actor`` or the deciding user."""
    locked.status = status
    locked.decided_by = decided_by
    locked.decided_at = timezone.now()
    locked.save(update_fields=["status", "decided_by", "decided_at"])
    action = "adjustment.post" if status == AdjustmentStatus.POSTED else "adjustment.reject"
    audit_record(
        actor=actor or Actor(user=decided_by),
        action=action,
        target=locked,
        before=before,
        after=model_state(locked, _AUDITED),
        reason=reason,
    )
    return locked


@transaction.atomic(durable=True)
def adjustment_post(
    *, adjustment: LedgerAdjustment, approved_by: AbstractBaseUser, actor: Actor | None = None
) -> LedgerAdjustment:
    """Approve and post: the trader's available balance moves by ``amount`` against
    the venue's adjustment account. A debit larger than what is available is refused.
    Audited as ``actor`` (``approved_by`` by default)."""
    locked = _decide(adjustment, approved_by)
    before = model_state(locked, _AUDITED)
    keys = [
        trader_account_key(LedgerAccountKind.AVAILABLE, locked.asset_id, locked.account_id),
        venue_account_key(LedgerAccountKind.ADJUSTMENT, locked.asset_id),
    ]
    accounts = ledger_accounts_lock_keys(keys)
    available, venue = (accounts[k] for k in keys)
    if locked.amount < 0:
        require_available(available, -locked.amount, locked.asset.symbol)
    entries_post(
        [
            Entry(
                kind=TransactionKind.ADJUSTMENT,
                idempotency_key=f"adjustment:{locked.pk}",
                adjustment_id=locked.pk,
                description=locked.reason[:255],
                legs=[Leg(available, locked.amount), Leg(venue, -locked.amount)],
            )
        ]
    )
    balances_changed([locked.account_id])
    return _decided(
        locked,
        AdjustmentStatus.POSTED,
        decided_by=approved_by,
        actor=actor,
        before=before,
        reason=locked.reason,
    )


@transaction.atomic(durable=True)
def adjustment_reject(
    *, adjustment: LedgerAdjustment, rejected_by: AbstractBaseUser, actor: Actor | None = None
) -> LedgerAdjustment:
    """Refuse a requested adjustment: nothing moves. Audited as ``actor``
    (``rejected_by`` by default)."""
    locked = _decide(adjustment, rejected_by)
    before = model_state(locked, _AUDITED)
    return _decided(
        locked, AdjustmentStatus.REJECTED, decided_by=rejected_by, actor=actor, before=before
    )
