"""What an order may still cost, and what a fill costs: the arithmetic behind holds
and fees. Pure functions of ``Decimal`` values and order rows, no database access.

Amounts are kept to 8 decimal places. Two roundings, chosen so that money can only
ever be over-reserved, never under-reserved, and the venue never pays out on a fill:

- A fee is ``notional × rate`` rounded **toward zero** — a taker fee down (the
  trader's favour), a maker rebate down in size (the venue's favour). With taker
  rate ≥ |maker rate| the venue's net take on any fill is ≥ 0.
- A buy's fee reserve is ``hold price × remaining × taker rate`` rounded **up**.
  Because each fill's fee rounds down and fills never cost more than the hold price,
  the reserve always covers the fees still to come, whatever the fills look like.
"""

from decimal import ROUND_CEILING, ROUND_DOWN, Decimal

from exchange.models import LIMIT_TYPES, TERMINAL_STATUSES, Order, OrderStatus, Side

QUANTUM = Decimal("0.00000001")
ZERO = Decimal(0)


def fee_amount(notional: Decimal, rate: Decimal) -> Decimal:
    """The fee on one fill (negative for a maker rebate), rounded toward zero."""
    return (notional * rate).quantize(QUANTUM, rounding=ROUND_DOWN)


def buy_hold(price: Decimal, quantity: Decimal, taker_fee_rate: Decimal) -> Decimal:
    """Quote reserved for buying ``quantity`` at no more than ``price``, fees included."""
    notional = price * quantity
    return notional + (notional * taker_fee_rate).quantize(QUANTUM, rounding=ROUND_CEILING)


def hold_price(order: Order) -> Decimal | None:
    """The worst price a buy can fill at: its limit, or a market buy's protection."""
    return order.price if order.type in LIMIT_TYPES else order.protection_price


def order_hold_asset_id(order: Order) -> int:
    market = order.market
    return market.quote_id if order.side == Side.BUY else market.base_id


def order_hold_required(order: Order) -> Decimal:
    """The worst-case cost of what is left of ``order`` — what must be held for it.

    A sell holds its remaining quantity of base; a buy holds its remaining quantity at
    its hold price plus the fee reserve; a market buy by quote amount holds the whole
    amount until the matcher has worked it (it never rests). Finished orders hold
    nothing.
    """
    if order.status in TERMINAL_STATUSES:
        return ZERO
    if order.side == Side.SELL:
        return order.remaining
    if order.quantity is None:
        return order.quote_quantity if order.status == OrderStatus.PENDING else ZERO
    return buy_hold(hold_price(order), order.remaining, order.taker_fee_rate)


def buy_fill_consumes(
    order: Order,
    *,
    quantity: Decimal,
    remaining_after: Decimal | None,
    notional: Decimal,
    fee: Decimal,
) -> Decimal:
    """How much of a buy order's hold one fill uses up: the part reserved for the
    filled quantity (at the hold price, with its fee reserve). What the fill did not
    spend of it — price improvement, fee headroom — goes back to available."""
    if order.quantity is None:  # sized by quote amount: spends exactly what it pays
        return notional + fee
    price = hold_price(order)
    rate = order.taker_fee_rate
    before = buy_hold(price, remaining_after + quantity, rate)
    after = buy_hold(price, remaining_after, rate)
    return before - after
