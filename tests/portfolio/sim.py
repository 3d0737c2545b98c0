"""What the matcher does to orders and money, written plainly for the ledger's tests:
place an order with its hold, accept it onto the book, fill it against another
(writing the trade as the matcher will), and cancel it."""

from __future__ import annotations

import itertools
from contextlib import nullcontext
from datetime import datetime
from decimal import Decimal

import pgtrigger
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from exchange.models import (
    LIMIT_TYPES,
    Account,
    Market,
    Order,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    Trade,
)
from portfolio.holds import fee_amount
from portfolio.models import Balance
from portfolio.services.ledger import hold_place, hold_release, trade_settle
from portfolio.services.vault import deposit_credit
from tests.factories import random_hex

_log_index = itertools.count(1)


def balance(account: Account, asset) -> tuple[Decimal, Decimal]:
    """A trader's (available, held) of ``asset``."""
    row = Balance.objects.filter(account=account, asset=asset).first()
    return (row.available, row.held) if row else (Decimal(0), Decimal(0))


def deposit(account: Account, asset, amount) -> None:
    deposit_credit(
        account=account,
        asset=asset,
        amount=Decimal(amount),
        tx_hash=random_hex(32),
        log_index=next(_log_index),
        block_number=1,
    )


@transaction.atomic
def place(
    account: Account,
    market: Market,
    side: str,
    quantity,
    price=None,
    *,
    type: str = OrderType.LIMIT,
    quote_quantity=None,
    protection_price=None,
    accept: bool = True,
) -> Order:
    """A new order with its hold (raises InsufficientFunds and writes nothing when the
    trader cannot cover it), then accepted onto the book as the matcher would."""
    limit = type in LIMIT_TYPES
    order = Order.objects.create(
        account=account,
        market=market,
        client_order_id=random_hex(8)[2:],
        side=side,
        type=type,
        time_in_force=TimeInForce.GTC if limit else TimeInForce.IOC,
        price=Decimal(price) if price is not None else None,
        quantity=Decimal(quantity) if quantity is not None else None,
        remaining=Decimal(quantity) if quantity is not None else None,
        quote_quantity=Decimal(quote_quantity) if quote_quantity is not None else None,
        protection_price=Decimal(protection_price) if protection_price is not None else None,
        maker_fee_rate=market.maker_fee_rate,
        taker_fee_rate=market.taker_fee_rate,
        nonce=int(random_hex(6), 16),
        signature=random_hex(65),
        order_hash=random_hex(32),
    )
    hold_place(order=order)
    if accept and limit:
        order.status = OrderStatus.OPEN
        order.sequence = order.pk
        order.accepted_at = timezone.now()
        order.save(update_fields=["status", "sequence", "accepted_at"])
    return order


def _apply_fill(order: Order, quantity: Decimal, notional: Decimal) -> None:
    # A market order's later fills in one sweep land on the order its first fill
    # finished: the matcher writes a sweep once, this a fill at a time, so the rule that
    # a finished order never changes is set aside for them.
    swept = order.is_terminal
    order.filled += quantity
    order.filled_quote += notional
    order.average_price = (order.filled_quote / order.filled).quantize(Decimal("0.00000001"))
    if order.quantity is not None:
        order.remaining -= quantity
    done = order.quantity is not None and order.remaining == 0
    if order.status == OrderStatus.PENDING:
        order.sequence = order.pk
        order.accepted_at = timezone.now()
    if done:
        order.status, order.done_at = OrderStatus.FILLED, timezone.now()
    elif order.type not in LIMIT_TYPES:
        # A market order never rests: what its sweep leaves is cancelled (IOC).
        order.status, order.done_at, order.reason = (
            OrderStatus.CANCELLED,
            timezone.now(),
            "IOC_REMAINDER",
        )
    else:
        order.status = OrderStatus.PARTIALLY_FILLED
    with pgtrigger.ignore("exchange.Order:finished_read_only") if swept else nullcontext():
        order.save()


@transaction.atomic
def fill(maker: Order, taker: Order, quantity, price=None) -> Trade:
    """One fill at the maker's price (or ``price``), written and settled."""
    quantity = Decimal(quantity)
    price = Decimal(price) if price is not None else maker.price
    notional = price * quantity
    _apply_fill(maker, quantity, notional)
    _apply_fill(taker, quantity, notional)
    buyer, seller = (taker, maker) if taker.side == Side.BUY else (maker, taker)
    sequence = Trade.objects.filter(market=maker.market).aggregate(m=Max("sequence"))["m"] or 0
    trade = Trade.objects.create(
        market=maker.market,
        sequence=sequence + 1,
        maker_order=maker,
        taker_order=taker,
        buyer_id=buyer.account_id,
        seller_id=seller.account_id,
        aggressor_side=taker.side,
        price=price,
        quantity=quantity,
        quote_quantity=notional,
        maker_fee=fee_amount(notional, maker.maker_fee_rate),
        taker_fee=fee_amount(notional, taker.taker_fee_rate),
        maker_remaining=maker.remaining,
        taker_remaining=taker.remaining,
    )
    return trade


def fill_and_settle(maker: Order, taker: Order, quantity, price=None) -> Trade:
    trade = fill(maker, taker, quantity, price)
    trade_settle(trade=trade)
    return trade


@transaction.atomic
def cancel(order: Order, status: str = OrderStatus.CANCELLED) -> None:
    """Cancel (or expire) what is left of ``order`` and release its hold; for an order
    the matcher already finished, only the release."""
    if order.is_terminal:
        hold_release(order=order)
        return
    if order.status == OrderStatus.PENDING:
        order.sequence = order.pk
        order.accepted_at = timezone.now()
    order.status = status
    order.reason = "USER_CANCEL"
    order.done_at = timezone.now()
    order.save()
    hold_release(order=order)


def backdate(order: Order, moment: datetime) -> Order:
    """``order`` as if it had been placed and finished at ``moment``, so that archiving
    takes it (its placing time is read-only, and so is a finished order: the rules are
    set aside for this update)."""
    with pgtrigger.ignore("exchange.Order:identity_read_only", "exchange.Order:finished_read_only"):
        Order.objects.filter(pk=order.pk).update(created_at=moment, done_at=moment)
    return Order.objects.get(pk=order.pk)
