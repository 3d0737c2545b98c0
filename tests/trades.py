"""Trades written as the matcher writes them, at chosen moments and between chosen
traders: for the tests of what is derived from trades (candles, snapshots, reports).
The matcher stamps a trade with its own clock, so a test that needs a trade on a bucket
edge or in a given year writes it itself."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.db.models import Max

from exchange.models import Account, Market, Order, OrderStatus, Side, Trade
from tests.factories import AccountFactory, OrderFactory

D = Decimal


def _finished(order: Order, quantity: Decimal, price: Decimal, at: datetime) -> Order:
    order.sequence, order.accepted_at, order.done_at = order.pk, at, at
    order.filled, order.remaining = quantity, order.quantity - quantity
    order.filled_quote, order.average_price = price * quantity, price
    order.status = OrderStatus.FILLED
    order.save()
    return order


def trade_at(
    market: Market,
    price,
    quantity,
    at: datetime,
    *,
    buyer: Account | None = None,
    seller: Account | None = None,
    taker_side: str = Side.BUY,
    maker_fee="0",
    taker_fee="0",
    sequence: int | None = None,
) -> Trade:
    """One fill of ``quantity`` at ``price`` executed at ``at``, both orders filled by it
    (finished at ``at`` too)."""
    price, quantity = D(price), D(quantity)
    buyer = buyer or AccountFactory()
    seller = seller or AccountFactory()
    maker_side = Side.SELL if taker_side == Side.BUY else Side.BUY
    accounts = {Side.BUY: buyer, Side.SELL: seller}
    maker = OrderFactory(
        market=market,
        account=accounts[maker_side],
        side=maker_side,
        price=price,
        quantity=quantity,
    )
    taker = OrderFactory(
        market=market,
        account=accounts[taker_side],
        side=taker_side,
        price=price,
        quantity=quantity,
    )
    if sequence is None:
        sequence = (Trade.objects.filter(market=market).aggregate(m=Max("sequence"))["m"] or 0) + 1
    trade = Trade.objects.create(
        market=market,
        sequence=sequence,
        maker_order=maker,
        taker_order=taker,
        buyer_id=buyer.pk,
        seller_id=seller.pk,
        aggressor_side=taker_side,
        price=price,
        quantity=quantity,
        quote_quantity=price * quantity,
        maker_fee=D(maker_fee),
        taker_fee=D(taker_fee),
        maker_remaining=0,
        taker_remaining=0,
        executed_at=at,
    )
    _finished(maker, quantity, price, at)
    _finished(taker, quantity, price, at)
    return trade
