"""Events returned by every OrderBook command.

Events are named tuples: immutable, no per-instance dict, cheap to build in the matching loop,
and ``_asdict()`` gives the matcher a row to persist.  ``kind`` is the last field so that two
events of different kinds never compare equal and so that it can default to the class's kind.

Quantities are lots, prices are ticks.  For a market BUY placed by quote amount, the taker's
``remaining``/``taker_remaining``/``quantity`` in Cancelled, Trade and Decremented are quote
units (ticks x lots) instead of lots.
"""

from collections.abc import Hashable
from typing import NamedTuple

from exchange.engine.types import Reason, Side, _FastStrEnum


class EventKind(_FastStrEnum):
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"
    TRADE = "TRADE"
    RESTED = "RESTED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"
    TRIGGERED = "TRIGGERED"
    AMENDED = "AMENDED"
    DECREMENTED = "DECREMENTED"
    REFILLED = "REFILLED"
    LEVEL = "LEVEL"
    HALTED = "HALTED"
    RESUMED = "RESUMED"


class Accepted(NamedTuple):
    """The order passed validation; ``sequence`` is its time-priority stamp."""

    order_id: int
    account: Hashable
    sequence: int
    kind: EventKind = EventKind.ACCEPTED


class Rejected(NamedTuple):
    """The command was refused and changed nothing (``account`` is None for cancel/amend)."""

    order_id: int
    account: Hashable
    reason: Reason
    kind: EventKind = EventKind.REJECTED


class Trade(NamedTuple):
    """A fill at the maker's price; remaining quantities are after this fill."""

    maker_order_id: int
    taker_order_id: int
    price: int
    quantity: int
    maker_account: Hashable
    taker_account: Hashable
    taker_side: Side
    maker_remaining: int
    taker_remaining: int
    kind: EventKind = EventKind.TRADE


class Rested(NamedTuple):
    """The order now rests on the book (``remaining`` includes an iceberg's hidden part)."""

    order_id: int
    account: Hashable
    side: Side
    price: int
    remaining: int
    visible: int
    kind: EventKind = EventKind.RESTED


class Cancelled(NamedTuple):
    """The order is finished; ``remaining`` is the unfilled quantity it releases."""

    order_id: int
    account: Hashable
    remaining: int
    reason: Reason
    kind: EventKind = EventKind.CANCELLED


class Expired(NamedTuple):
    """A GTT order reached its expiry time; ``remaining`` is what it releases."""

    order_id: int
    account: Hashable
    remaining: int
    kind: EventKind = EventKind.EXPIRED


class Triggered(NamedTuple):
    """A stop / take-profit order fired; it now enters as LIMIT or MARKET with this stamp."""

    order_id: int
    account: Hashable
    stop_price: int
    last_price: int
    sequence: int
    kind: EventKind = EventKind.TRIGGERED


class Amended(NamedTuple):
    """An amend applied; when ``priority_kept`` is False the order re-entered at ``sequence``."""

    order_id: int
    account: Hashable
    price: int
    remaining: int
    visible: int
    priority_kept: bool
    sequence: int
    kind: EventKind = EventKind.AMENDED


class Decremented(NamedTuple):
    """DECREMENT self-trade prevention took ``quantity`` off a live order, releasing it."""

    order_id: int
    account: Hashable
    quantity: int
    remaining: int
    kind: EventKind = EventKind.DECREMENTED


class Refilled(NamedTuple):
    """An iceberg showed a new slice and went to the back of its level with a new stamp."""

    order_id: int
    account: Hashable
    side: Side
    price: int
    visible: int
    sequence: int
    kind: EventKind = EventKind.REFILLED


class LevelChanged(NamedTuple):
    """The visible total at one book level is now ``quantity`` (0: the level is gone)."""

    side: Side
    price: int
    quantity: int
    kind: EventKind = EventKind.LEVEL


class Halted(NamedTuple):
    kind: EventKind = EventKind.HALTED


class Resumed(NamedTuple):
    kind: EventKind = EventKind.RESUMED


Event = (
    Accepted
    | Rejected
    | Trade
    | Rested
    | Cancelled
    | Expired
    | Triggered
    | Amended
    | Decremented
    | Refilled
    | LevelChanged
    | Halted
    | Resumed
)
