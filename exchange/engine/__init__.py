"""The matching engine: a pure-Python, deterministic price-time-priority order book.

No Django, no I/O, no clock.  Integer ticks and lots inside; ``MarketUnits`` converts the
market's Decimal prices and sizes at the boundary.
"""

from exchange.engine.book import OrderBook
from exchange.engine.events import (
    Accepted,
    Amended,
    Cancelled,
    Decremented,
    Event,
    EventKind,
    Expired,
    Halted,
    LevelChanged,
    Refilled,
    Rejected,
    Rested,
    Resumed,
    Trade,
    Triggered,
)
from exchange.engine.orders import Order
from exchange.engine.types import (
    OrderStatus,
    OrderType,
    Reason,
    SelfTradePrevention,
    Side,
    TimeInForce,
)
from exchange.engine.units import (
    MarketUnits,
    OffLotError,
    OffQuoteStepError,
    OffTickError,
    UnitError,
)

__all__ = [
    "Accepted",
    "Amended",
    "Cancelled",
    "Decremented",
    "Event",
    "EventKind",
    "Expired",
    "Halted",
    "LevelChanged",
    "MarketUnits",
    "OffLotError",
    "OffQuoteStepError",
    "OffTickError",
    "Order",
    "OrderBook",
    "OrderStatus",
    "OrderType",
    "Reason",
    "Refilled",
    "Rejected",
    "Rested",
    "Resumed",
    "SelfTradePrevention",
    "Side",
    "TimeInForce",
    "Trade",
    "Triggered",
    "UnitError",
]
