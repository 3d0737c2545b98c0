"""Between the database's orders (Decimal) and the engine's (integer ticks and lots)."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_DOWN, Decimal

from exchange import engine
from exchange.models import STOP_TYPES, Market, Order, OrderStatus, OrderType

QUANTUM = Decimal("0.00000001")

# A market buy by quantity enters the engine as the same order with its protection
# price as limit: it takes the best prices up to that one and never rests.
_PROTECTED = {
    OrderType.MARKET: engine.OrderType.LIMIT,
    OrderType.STOP_MARKET: engine.OrderType.STOP_LIMIT,
    OrderType.TAKE_PROFIT_MARKET: engine.OrderType.TAKE_PROFIT_LIMIT,
}


def market_units(market: Market) -> engine.MarketUnits:
    return engine.MarketUnits(market.tick_size, market.lot_size)


def epoch_ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def quote_budget(order: Order) -> Decimal:
    """What a market buy by quote amount may spend on the book: its amount less the
    taker fee it will pay on that spend, so spend + fee never exceeds what is held."""
    return (order.quote_quantity / (1 + order.taker_fee_rate)).quantize(QUANTUM, ROUND_DOWN)


def to_engine(order: Order, units: engine.MarketUnits, *, restoring: bool = False) -> engine.Order:
    """The engine's order for ``order``. When restoring, its quantity is what remains
    and it keeps its time-priority stamp."""
    order_type = engine.OrderType(order.type)
    price = order.price
    if order.protection_price is not None:
        order_type, price = _PROTECTED[order.type], order.protection_price
    quantity = order.remaining if restoring else order.quantity
    return engine.Order(
        order.pk,
        order.account_id,
        engine.Side(order.side),
        price=units.price_to_ticks(price) if price is not None else None,
        quantity=units.qty_to_lots(quantity) if quantity is not None else None,
        order_type=order_type,
        time_in_force=engine.TimeInForce(order.time_in_force),
        post_only=order.post_only,
        display_quantity=(
            units.qty_to_lots(order.display_quantity) if order.display_quantity else None
        ),
        stop_price=units.price_to_ticks(order.stop_price) if order.stop_price else None,
        expire_at=epoch_ms(order.expires_at),
        stp=engine.SelfTradePrevention(order.self_trade_prevention),
        quote_amount=(
            units.quote_to_units(quote_budget(order), round_down=True)
            if order.quote_quantity is not None
            else None
        ),
        sequence=order.sequence if restoring else None,
        triggered=(
            restoring and order.type in STOP_TYPES and order.status != OrderStatus.UNTRIGGERED
        ),
    )
