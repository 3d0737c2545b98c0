"""Deposits and withdrawals through the on-chain vault."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.utils import timezone

from compliance.gates import GateRefusal, deposit_refusal, withdrawal_refusal
from compliance.services.audit import Actor, audit_record, model_state
from dex.db import HASH_REGEX
from exchange.models import Account, AccountStatus, Asset
from exchange.notify import balances_changed
from exchange.services.accounts import wallet_address_normalize
from portfolio.lock_objects import vault_operation_lock
from portfolio.models import (
    LedgerAccountKind,
    TransactionKind,
    VaultOperation,
    VaultOperationKind,
    VaultOperationStatus,
    WithdrawalLimit,
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


class VaultError(LedgerError):
    code = "VAULT_ERROR"


class IdempotencyConflict(VaultError):
    """The same idempotency key came with a different request."""

    code = "IDEMPOTENCY_CONFLICT"


class InvalidTransition(VaultError):
    code = "INVALID_STATE"


class InvalidAmount(VaultError):
    """An amount that cannot be moved: not positive, or finer than the token allows."""

    code = "INVALID_AMOUNT"


class InvalidChainReference(VaultError):
    """A transaction hash that is not one: ``0x`` and 64 hex digits."""

    code = "INVALID_TX_HASH"


_TX_HASH = re.compile(HASH_REGEX)


def _tx_hash(value: str) -> str:
    """The one spelling of a chain transaction's hash (lower case, ``0x``), so that one
    event reported twice, however spelt, is recognised as one."""
    if not isinstance(value, str):
        raise InvalidChainReference(f"a transaction hash is a string, not {value!r}")
    spelt = value.strip().lower()
    if not spelt.startswith("0x"):
        spelt = "0x" + spelt
    if not _TX_HASH.match(spelt):
        raise InvalidChainReference(f"{value!r} is not a transaction hash (0x and 64 hex digits)")
    return spelt


class ComplianceRefusal(VaultError):
    """A compliance rule refuses the movement: the trader's jurisdiction, or their KYC
    tier's daily limit. ``code`` says which."""

    def __init__(self, refusal: GateRefusal) -> None:
        super().__init__(refusal.message)
        self.code = refusal.code


_REASON_LENGTH = VaultOperation._meta.get_field("reason").max_length


def _positive(amount: Decimal) -> Decimal:
    if not isinstance(amount, Decimal) or not amount.is_finite() or amount <= 0:
        raise InvalidAmount(f"amount must be a positive decimal, not {amount!r}")
    if amount != amount.quantize(Decimal("0.00000001")):
        raise InvalidAmount(f"amount {amount} has more than 8 decimal places")
    return amount


def _payable(amount: Decimal, asset: Asset) -> Decimal:
    """``amount`` if a transfer of ``asset`` can carry it exactly: a token of 6 decimals
    cannot send 1.0000001, and what it could not send would stay on the ledger as dust
    the vault does not hold."""
    amount = _positive(amount)
    places = min(asset.decimals, 8)
    if amount != amount.quantize(Decimal(1).scaleb(-places)):
        raise InvalidAmount(
            f"{asset.symbol} moves in steps of {Decimal(1).scaleb(-places)}; {amount} is finer"
        )
    return amount


def _same_request(existing: VaultOperation, **fields) -> VaultOperation:
    for name, value in fields.items():
        if getattr(existing, name) != value:
            raise IdempotencyConflict(
                f"idempotency key {existing.idempotency_key!r} was used for a different "
                f"request ({name} {getattr(existing, name)!r} ≠ {value!r})"
            )
    return existing


@transaction.atomic(durable=True)
def deposit_credit(
    *,
    account: Account,
    asset: Asset,
    amount: Decimal,
    tx_hash: str,
    log_index: int,
    block_number: int,
) -> VaultOperation:
    """Credit a deposit seen on chain (the vault's Deposit event ``tx_hash``/``log_index``)
    to the trader's available balance. The same event credits once, however often it
    is reported.

    A deposit past the daily limit of the trader's KYC tier is refused
    (:class:`ComplianceRefusal`) and credits nothing: the funds wait in the vault,
    unallocated, and are credited when the event is reported again within the limit
    (a later day, or after the tier is raised)."""
    amount = _payable(amount, asset)
    tx_hash = _tx_hash(tx_hash)
    key = f"deposit:{tx_hash}:{log_index}"
    # Found by its chain event, whatever key an earlier version gave it.
    event = VaultOperation.objects.filter(
        kind=VaultOperationKind.DEPOSIT, tx_hash=tx_hash, log_index=log_index
    )
    existing = event.first()
    if existing:
        return _same_request(existing, account_id=account.pk, asset_id=asset.pk, amount=amount)

    keys = [
        venue_account_key(LedgerAccountKind.VAULT, asset.pk),
        trader_account_key(LedgerAccountKind.AVAILABLE, asset.pk, account.pk),
    ]
    accounts = ledger_accounts_lock_keys(keys)
    vault, available = (accounts[k] for k in keys)
    # Re-read under the lock: a concurrent report of the same event has committed.
    existing = event.first()
    if existing:
        return _same_request(existing, account_id=account.pk, asset_id=asset.pk, amount=amount)
    refusal = deposit_refusal(account=account, asset=asset, amount=amount)  # under the lock
    if refusal is not None:
        raise ComplianceRefusal(refusal)
    operation = VaultOperation.objects.create(
        account=account,
        asset=asset,
        kind=VaultOperationKind.DEPOSIT,
        status=VaultOperationStatus.COMPLETED,
        amount=amount,
        idempotency_key=key,
        tx_hash=tx_hash,
        log_index=log_index,
        block_number=block_number,
        completed_at=timezone.now(),
    )
    entries_post(
        [
            Entry(
                kind=TransactionKind.DEPOSIT,
                idempotency_key=key,
                vault_operation_id=operation.pk,
                legs=[Leg(vault, -amount), Leg(available, amount)],
            )
        ]
    )
    operation.balance_after = available.balance
    operation.save(update_fields=["balance_after"])
    balances_changed([account.pk])
    return operation


def _withdrawal_accounts(operation: VaultOperation):
    asset, owner = operation.asset_id, operation.account_id
    keys = [
        trader_account_key(LedgerAccountKind.AVAILABLE, asset, owner),
        trader_account_key(LedgerAccountKind.HELD, asset, owner),
        venue_account_key(LedgerAccountKind.VAULT, asset),
    ]
    accounts = ledger_accounts_lock_keys(keys)
    return (accounts[k] for k in keys)


def _account_status_now(account_id: int) -> str:
    """The account's status as it is now, not as the caller loaded it; its row stays
    share-locked until the transaction ends. A freeze (which locks the row to update it)
    therefore either waits for this withdrawal and then stops it, or commits first and
    this one sees the account frozen: no withdrawal slips past a freeze."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT status FROM {Account._meta.db_table} WHERE id = %s FOR SHARE", [account_id]
        )
        return cursor.fetchone()[0]


def _account_active(account_id: int) -> None:
    status = _account_status_now(account_id)
    if status != AccountStatus.ACTIVE:
        raise VaultError(f"account {account_id} is {status}: withdrawals are blocked")


def withdrawal_idempotency_key(*, account_id: int, client_key: str) -> str:
    """The stored key of a trader's withdrawal request: the trader's own id for it,
    scoped to the trader."""
    return f"withdrawal:{account_id}:{client_key}"


def withdrawal_request(
    *,
    account: Account,
    asset: Asset,
    amount: Decimal,
    destination_address: str,
    idempotency_key: str,
) -> VaultOperation:
    """Hold ``amount`` for a withdrawal to ``destination_address``. It is approved at
    once when within the trader's KYC-tier limit, otherwise it waits for staff. A retry
    with the same key returns the original request. Refused
    (:class:`ComplianceRefusal`) to residents of a country barred from every market,
    and past the daily withdrawal limit of the trader's KYC tier."""
    return withdrawal_requested(
        account=account,
        asset=asset,
        amount=amount,
        destination_address=destination_address,
        idempotency_key=idempotency_key,
    ).operation


@dataclass(frozen=True, slots=True)
class Requested:
    operation: VaultOperation
    created: bool  # False: a retry, answered with the original request


@transaction.atomic(durable=True)
def withdrawal_requested(
    *,
    account: Account,
    asset: Asset,
    amount: Decimal,
    destination_address: str,
    idempotency_key: str,
) -> Requested:
    """``withdrawal_request``, saying whether this call made the request."""
    amount = _payable(amount, asset)
    destination = wallet_address_normalize(destination_address)
    key = withdrawal_idempotency_key(account_id=account.pk, client_key=idempotency_key)
    # Requests with one key, whatever their asset, one after another: a concurrent retry
    # finds the first one's request here once it has committed.
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [key])
    existing = VaultOperation.objects.filter(idempotency_key=key).first()
    if existing:
        return Requested(
            _same_request(
                existing, asset_id=asset.pk, amount=amount, destination_address=destination
            ),
            created=False,
        )
    _account_active(account.pk)

    operation = VaultOperation(
        account=account,
        asset=asset,
        kind=VaultOperationKind.WITHDRAWAL,
        status=VaultOperationStatus.REQUESTED,
        amount=amount,
        idempotency_key=key,
        destination_address=destination,
    )
    available, held, _vault = _withdrawal_accounts(operation)
    refusal = withdrawal_refusal(account=account, asset=asset, amount=amount)
    if refusal is not None:
        raise ComplianceRefusal(refusal)
    require_available(available, amount, asset.symbol)
    operation.save()
    entries_post(
        [
            Entry(
                kind=TransactionKind.WITHDRAWAL_HOLD,
                idempotency_key=f"vaultop:{operation.pk}:hold",
                vault_operation_id=operation.pk,
                legs=[Leg(available, -amount), Leg(held, amount)],
            )
        ]
    )
    operation.balance_after = available.balance
    operation.save(update_fields=["balance_after"])
    balances_changed([account.pk])

    limit = WithdrawalLimit.objects.filter(kyc_tier=account.kyc_tier, asset=asset).first()
    if limit is not None and amount <= limit.auto_approve_max:
        _transition(operation, VaultOperationStatus.APPROVED, reviewed_at=timezone.now())
    return Requested(operation, created=True)


def _transition(operation: VaultOperation, to: str, **fields) -> VaultOperation:
    operation.status = to
    for name, value in fields.items():
        setattr(operation, name, value)
    operation.save(update_fields=["status", *fields])
    return operation


def _locked_withdrawal(operation: VaultOperation, *allowed: str) -> VaultOperation:
    locked = vault_operation_lock(operation.pk)
    if locked.kind != VaultOperationKind.WITHDRAWAL:
        raise VaultError(f"vault operation {locked.pk} is not a withdrawal")
    if locked.status not in allowed:
        raise InvalidTransition(
            f"withdrawal {locked.pk} is {locked.status}; expected {' or '.join(allowed)}"
        )
    return locked


def _release(operation: VaultOperation) -> None:
    balances_changed([operation.account_id])
    available, held, _vault = _withdrawal_accounts(operation)
    entries_post(
        [
            Entry(
                kind=TransactionKind.WITHDRAWAL_RELEASE,
                idempotency_key=f"vaultop:{operation.pk}:release",
                vault_operation_id=operation.pk,
                legs=[Leg(held, -operation.amount), Leg(available, operation.amount)],
            )
        ]
    )


@transaction.atomic(durable=True)
def withdrawal_approve(
    *, withdrawal: VaultOperation, approved_by: AbstractBaseUser, actor: Actor | None = None
) -> VaultOperation:
    """Approve a requested withdrawal, audited as ``actor`` (``approved_by`` by default;
    the admin passes the request's, with its address)."""
    operation = _locked_withdrawal(withdrawal, VaultOperationStatus.REQUESTED)
    _account_active(operation.account_id)
    before = model_state(operation, ["status"])
    _transition(
        operation,
        VaultOperationStatus.APPROVED,
        reviewed_by=approved_by,
        reviewed_at=timezone.now(),
    )
    audit_record(
        actor=actor or Actor(user=approved_by),
        action="withdrawal.approve",
        target=operation,
        before=before,
        after=model_state(operation, ["status", "amount", "asset", "destination_address"]),
    )
    return operation


@transaction.atomic(durable=True)
def withdrawal_reject(
    *,
    withdrawal: VaultOperation,
    rejected_by: AbstractBaseUser,
    reason: str,
    actor: Actor | None = None,
) -> VaultOperation:
    """Refuse a withdrawal that has not been sent; its amount returns to available.
    Audited as ``actor`` (``rejected_by`` by default)."""
    if not reason.strip():
        raise VaultError("a rejection needs a reason")
    if len(reason) > _REASON_LENGTH:
        raise VaultError(f"a reason is at most {_REASON_LENGTH} characters, not {len(reason)}")
    operation = _locked_withdrawal(
        withdrawal, VaultOperationStatus.REQUESTED, VaultOperationStatus.APPROVED
    )
    before = model_state(operation, ["status"])
    _rejected(operation, rejected_by=rejected_by, reason=reason)
    audit_record(
        actor=actor or Actor(user=rejected_by),
        action="withdrawal.reject",
        target=operation,
        before=before,
        after=model_state(operation, ["status", "amount", "asset"]),
        reason=reason,
    )
    return operation


def _rejected(
    operation: VaultOperation, *, rejected_by: AbstractBaseUser, reason: str
) -> VaultOperation:
    _release(operation)
    return _transition(
        operation,
        VaultOperationStatus.REJECTED,
        reason=reason,
        reviewed_by=rejected_by,
        reviewed_at=timezone.now(),
    )


def withdrawals_stop(
    *, account: Account, stopped_by: AbstractBaseUser, reason: str
) -> list[VaultOperation]:
    """Reject every withdrawal of ``account`` not yet sent (REQUESTED or APPROVED), each
    amount back to available: a freeze's, inside its transaction, with the account's row
    locked. One already being sent on chain (PROCESSING) is past stopping."""
    if not reason.strip():
        raise VaultError("a rejection needs a reason")
    if len(reason) > _REASON_LENGTH:  # the freeze keeps the whole of it
        reason = reason[: _REASON_LENGTH - 1] + "…"
    waiting = VaultOperation.objects.filter(
        account_id=account.pk,
        kind=VaultOperationKind.WITHDRAWAL,
        status__in=[VaultOperationStatus.REQUESTED, VaultOperationStatus.APPROVED],
    ).order_by("pk")
    return [
        _rejected(
            _locked_withdrawal(
                operation, VaultOperationStatus.REQUESTED, VaultOperationStatus.APPROVED
            ),
            rejected_by=stopped_by,
            reason=reason,
        )
        for operation in waiting
    ]


@transaction.atomic(durable=True)
def withdrawal_process(*, withdrawal: VaultOperation) -> VaultOperation:
    """The sender has picked an approved withdrawal up and is sending it on chain."""
    operation = _locked_withdrawal(withdrawal, VaultOperationStatus.APPROVED)
    _account_active(operation.account_id)
    return _transition(operation, VaultOperationStatus.PROCESSING)


@transaction.atomic(durable=True)
def withdrawal_complete(
    *, withdrawal: VaultOperation, tx_hash: str, block_number: int
) -> VaultOperation:
    """The withdrawal is final on chain: the held amount leaves the vault."""
    tx_hash = _tx_hash(tx_hash)
    operation = _locked_withdrawal(withdrawal, VaultOperationStatus.PROCESSING)
    _available, held, vault = _withdrawal_accounts(operation)
    balances_changed([operation.account_id])
    entries_post(
        [
            Entry(
                kind=TransactionKind.WITHDRAWAL,
                idempotency_key=f"vaultop:{operation.pk}:paid",
                vault_operation_id=operation.pk,
                legs=[Leg(held, -operation.amount), Leg(vault, operation.amount)],
            )
        ]
    )
    return _transition(
        operation,
        VaultOperationStatus.COMPLETED,
        tx_hash=tx_hash,
        block_number=block_number,
        completed_at=timezone.now(),
    )


@transaction.atomic(durable=True)
def withdrawal_fail(*, withdrawal: VaultOperation, reason: str) -> VaultOperation:
    """Sending failed on chain: nothing left the vault, the amount returns to available."""
    if not reason.strip():
        raise VaultError("a failure needs a reason")
    operation = _locked_withdrawal(withdrawal, VaultOperationStatus.PROCESSING)
    _release(operation)
    return _transition(operation, VaultOperationStatus.FAILED, reason=reason)
