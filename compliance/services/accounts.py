"""Staff controls of trader accounts: freeze, unfreeze, close, and cancelling orders.

Orders are cancelled the only way an order changes: through the matcher's command
journal. A service writes the CANCEL or CANCEL_ALL commands in its own transaction,
with the account's new status and the audit record, and the matcher cancels the orders
(and releases their holds) when it applies them, in journal order.

Closing an account is refused while it holds any funds (available or held, which
includes funds reserved by open orders and by withdrawals in flight). An exchange does
not confiscate or silently write off a trader's money: staff cancel the account's
orders and have the trader withdraw first (unfreezing it for that, if it is frozen), or
settle what is left with a ledger adjustment, and then close it. A closed account is
final: it never trades or withdraws again.

Every refusal is a :class:`ControlError` and changes nothing.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from compliance.models import AccountFreeze
from compliance.services.audit import Actor, audit_record, model_state
from exchange.models import (
    LIVE_STATUSES,
    Account,
    AccountStatus,
    CommandKind,
    Market,
    Order,
    OrderCommand,
    OrderStatus,
)
from exchange.services.orders import order_cancel_all
from portfolio.models import Balance
from portfolio.services.vault import withdrawals_stop

# Orders the matcher has yet to finish: accepted but not yet applied, or live.
OPEN_ORDER_STATUSES = (OrderStatus.PENDING, *LIVE_STATUSES)


class ControlError(ValueError):
    """A staff control was refused; nothing changed."""


def reason_required(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ControlError("give a reason: it is kept in the audit trail")
    return reason


def _staff_user(actor: Actor, what: str):
    if actor.user is None:
        raise ControlError(f"{what} is made by a staff user, not by the platform")
    return actor.user


def _account_locked(account: Account) -> Account:
    """The account's row, locked until the transaction ends: two staff acting on one
    account at once act one after the other, each on the other's result."""
    return Account.objects.select_for_update(of=("self",)).get(pk=account.pk)


def _open_orders_cancel(account: Account) -> list[Market]:
    """Write a CANCEL_ALL command for ``account`` in every market where it has an open
    order; return those markets. Call inside the caller's transaction."""
    open_in = Order.objects.filter(account=account, status__in=OPEN_ORDER_STATUSES).values("market")
    markets = list(Market.objects.filter(pk__in=open_in).order_by("pk"))
    for market in markets:
        order_cancel_all(account=account, market=market)
    return markets


def _status_set(account: Account, status: str) -> None:
    account.status = status
    account.save(update_fields=["status"])


@transaction.atomic(durable=True)
def account_freeze(*, actor: Actor, account: Account, reason: str) -> AccountFreeze:
    """Freeze ``account``: it may no longer place orders or withdraw, every open order
    of it is cancelled through the matcher's journal, and every withdrawal of it not yet
    sent is rejected, its amount back to available."""
    reason = reason_required(reason)
    user = _staff_user(actor, "a freeze")
    locked = _account_locked(account)
    if locked.status != AccountStatus.ACTIVE:
        raise ControlError(f"{locked} is {locked.status}; only an active account can be frozen")
    before = model_state(locked, ["status"])
    _status_set(locked, AccountStatus.FROZEN)
    freeze = AccountFreeze.objects.create(account=locked, reason=reason, frozen_by=user)
    markets = _open_orders_cancel(locked)
    stopped = withdrawals_stop(account=locked, stopped_by=user, reason=f"account frozen: {reason}")
    audit_record(
        actor=actor,
        action="account.freeze",
        target=locked,
        before=before,
        after={
            **model_state(locked, ["status"]),
            "freeze": freeze.pk,
            "orders_cancelled_in": [m.symbol for m in markets],
            "withdrawals_rejected": [w.pk for w in stopped],
        },
        reason=reason,
    )
    account.status = locked.status
    return freeze


@transaction.atomic(durable=True)
def account_unfreeze(*, actor: Actor, account: Account, reason: str) -> AccountFreeze | None:
    """Lift the freeze in force on ``account`` and make it active again; return the
    lifted freeze (None for an account frozen without a freeze record)."""
    reason = reason_required(reason)
    user = _staff_user(actor, "an unfreeze")
    locked = _account_locked(account)
    if locked.status != AccountStatus.FROZEN:
        raise ControlError(f"{locked} is {locked.status}, not frozen")
    before = model_state(locked, ["status"])
    freeze = AccountFreeze.objects.filter(account=locked, lifted_at__isnull=True).first()
    if freeze is not None:
        freeze.lifted_by = user
        freeze.lifted_at = timezone.now()
        freeze.lift_reason = reason
        freeze.save(update_fields=["lifted_by", "lifted_at", "lift_reason"])
    _status_set(locked, AccountStatus.ACTIVE)
    audit_record(
        actor=actor,
        action="account.unfreeze",
        target=locked,
        before=before,
        after={**model_state(locked, ["status"]), "freeze": freeze.pk if freeze else None},
        reason=reason,
    )
    account.status = locked.status
    return freeze


@transaction.atomic(durable=True)
def account_close(*, actor: Actor, account: Account, reason: str) -> Account:
    """Close ``account`` for good. Refused while it holds any funds (see the module's
    docstring); its open orders, if any are left, are cancelled."""
    reason = reason_required(reason)
    locked = _account_locked(account)
    if locked.status == AccountStatus.CLOSED:
        raise ControlError(f"{locked} is closed already")
    funds = list(
        Balance.objects.filter(account=locked)
        .exclude(available=0, held=0)
        .select_related("asset")
        .order_by("asset__symbol")
    )
    if funds:
        listed = ", ".join(f"{b.total.normalize():f} {b.asset.symbol}" for b in funds)
        raise ControlError(
            f"{locked} still holds {listed}: cancel its orders and have the trader withdraw "
            "(unfreeze it first if it is frozen), or settle the balances with a ledger "
            "adjustment, then close it"
        )
    before = model_state(locked, ["status"])
    markets = _open_orders_cancel(locked)
    _status_set(locked, AccountStatus.CLOSED)
    # A closed account has no freeze in force: the closure supersedes it.
    freeze = AccountFreeze.objects.filter(account=locked, lifted_at__isnull=True).first()
    if freeze is not None:
        freeze.lifted_by = _staff_user(actor, "a closure of a frozen account")
        freeze.lifted_at = timezone.now()
        freeze.lift_reason = f"account closed: {reason}"
        freeze.save(update_fields=["lifted_by", "lifted_at", "lift_reason"])
    audit_record(
        actor=actor,
        action="account.close",
        target=locked,
        before=before,
        after={
            **model_state(locked, ["status"]),
            "orders_cancelled_in": [m.symbol for m in markets],
        },
        reason=reason,
    )
    account.status = locked.status
    return locked


@transaction.atomic(durable=True)
def account_cancel_all_orders(*, actor: Actor, account: Account, reason: str) -> list[Market]:
    """Cancel every open order of ``account``, in every market; return the markets."""
    reason = reason_required(reason)
    locked = _account_locked(account)
    markets = _open_orders_cancel(locked)
    if not markets:
        raise ControlError(f"{locked} has no open orders")
    audit_record(
        actor=actor,
        action="account.cancel_all_orders",
        target=locked,
        after={"orders_cancelled_in": [m.symbol for m in markets]},
        reason=reason,
    )
    return markets


@transaction.atomic(durable=True)
def order_force_cancel(*, actor: Actor, order: Order, reason: str) -> OrderCommand:
    """Cancel one trader's order on staff's decision, through the matcher's journal."""
    reason = reason_required(reason)
    locked = Order.objects.select_for_update(of=("self",)).get(pk=order.pk)
    if locked.is_terminal:
        raise ControlError(f"order #{locked.pk} is {locked.status} already")
    command = OrderCommand.objects.create(
        market_id=locked.market_id,
        kind=CommandKind.CANCEL,
        account_id=locked.account_id,
        order=locked,
    )
    audit_record(
        actor=actor,
        action="order.force_cancel",
        target=locked,
        before=model_state(locked, ["status", "remaining"]),
        after={"account": locked.account_id, "command": command.pk},
        reason=reason,
    )
    return command
