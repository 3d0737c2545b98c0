"""A deterministic price-time-priority limit order book for one market.

Integer ticks and lots only, no clock, no I/O: the same commands in always give the same
events out, which is what lets the matcher replay pending commands after a crash.

Data layout, chosen for CPython speed:

- each price level is an intrusive doubly-linked FIFO of the resting ``Order`` objects
  themselves (O(1) append, O(1) cancel from anywhere, no per-order node allocation);
- a dict per side maps price -> level, a ``SortedList`` per side holds the level prices, and the
  best price of each side is cached so the common "does it cross?" test is one comparison;
- untriggered stops live in two ``SortedList``s keyed by stop price (one per trigger
  direction) so a trade only looks at the stops it actually fires;
- events are named tuples built with ``tuple.__new__`` in the hot loop.
"""

from collections import deque
from collections.abc import Hashable, Iterable
from heapq import heappop, heappush

from sortedcontainers import SortedList

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
from exchange.engine.types import OrderType, Reason, SelfTradePrevention, Side, TimeInForce

BUY = Side.BUY
SELL = Side.SELL
LIMIT = OrderType.LIMIT
MARKET = OrderType.MARKET
STOP_LIMIT = OrderType.STOP_LIMIT
STOP_MARKET = OrderType.STOP_MARKET
TAKE_PROFIT_LIMIT = OrderType.TAKE_PROFIT_LIMIT
TAKE_PROFIT_MARKET = OrderType.TAKE_PROFIT_MARKET
GTC = TimeInForce.GTC
GTT = TimeInForce.GTT
IOC = TimeInForce.IOC
FOK = TimeInForce.FOK
EXPIRE_TAKER = SelfTradePrevention.EXPIRE_TAKER
EXPIRE_MAKER = SelfTradePrevention.EXPIRE_MAKER
EXPIRE_BOTH = SelfTradePrevention.EXPIRE_BOTH
DECREMENT = SelfTradePrevention.DECREMENT

_SIDES = {s: s for s in Side}
_ORDER_TYPES = {t: t for t in OrderType}
_TIFS = {t: t for t in TimeInForce}
_STP_MODES = {m: m for m in SelfTradePrevention}
_MARKET_TYPES = frozenset({MARKET, STOP_MARKET, TAKE_PROFIT_MARKET})
_STOP_TYPES = frozenset({STOP_LIMIT, STOP_MARKET, TAKE_PROFIT_LIMIT, TAKE_PROFIT_MARKET})
_TAKE_PROFIT_TYPES = frozenset({TAKE_PROFIT_LIMIT, TAKE_PROFIT_MARKET})

_new = tuple.__new__
_ACCEPTED = EventKind.ACCEPTED
_REJECTED = EventKind.REJECTED
_TRADE = EventKind.TRADE
_RESTED = EventKind.RESTED
_CANCELLED = EventKind.CANCELLED
_LEVEL = EventKind.LEVEL


class _Level:
    """One price level: a FIFO of orders linked through their ``_prev``/``_next`` slots."""

    __slots__ = ("head", "price", "tail", "total")

    def __init__(self, price: int) -> None:
        self.price = price
        self.head: Order | None = None
        self.tail: Order | None = None
        # Sum of the visible quantities: what depth shows and what LevelChanged carries.
        self.total = 0


def _rises(order: Order) -> bool:
    """True if the stop fires on a trade at or above its stop price."""
    return (order.side is BUY) is (order.order_type not in _TAKE_PROFIT_TYPES)


class OrderBook:
    """The order book of one market; every command returns the list of events it caused.

    ``tick_size`` and ``lot_size`` are integer steps inside the engine's own units (1 when the
    caller already converted to ticks and lots with ``MarketUnits``): a price that is not a
    multiple of ``tick_size`` is rejected with PRICE_OFF_TICK.  ``price_band_bps`` bounds how
    far a market order may sweep from the best opposite price when it starts (None: no band).

    Time priority: ``sequence`` is a counter the book bumps each time an order takes a place
    in the queue (accepted, triggered, re-entered by an amend, or an iceberg refilled); the
    stamp is on the order (``order.sequence``) and on the Accepted / Triggered / Amended /
    Refilled event.  Persist it and hand it back to ``restore``; pass ``sequence`` to the
    constructor to continue numbering from a known value.

    Time: the book never reads a clock.  ``expire(now)`` expires GTT orders with
    ``expire_at <= now`` and remembers ``now`` so that a GTT order arriving already expired is
    rejected.
    """

    __slots__ = (
        "_ask_prices",
        "_asks",
        "_best_ask",
        "_best_bid",
        "_bid_prices",
        "_bids",
        "_expiries",
        "_falling",
        "_first_px",
        "_orders",
        "_rising",
        "halted",
        "last_price",
        "lot_size",
        "now",
        "price_band_bps",
        "sequence",
        "tick_size",
    )

    def __init__(
        self,
        *,
        tick_size: int = 1,
        lot_size: int = 1,
        price_band_bps: int | None = 500,
        sequence: int = 0,
    ) -> None:
        if type(tick_size) is not int or tick_size <= 0:
            raise ValueError(f"tick_size must be a positive int, got {tick_size!r}")
        if type(lot_size) is not int or lot_size <= 0:
            raise ValueError(f"lot_size must be a positive int, got {lot_size!r}")
        if price_band_bps is not None and (type(price_band_bps) is not int or price_band_bps < 0):
            raise ValueError(f"price_band_bps must be a non-negative int, got {price_band_bps!r}")
        self.tick_size = tick_size
        self.lot_size = lot_size
        self.price_band_bps = price_band_bps
        self.sequence = sequence
        self.last_price: int | None = None
        self.now: int | None = None
        self.halted = False
        self._orders: dict[int, Order] = {}
        self._bids: dict[int, _Level] = {}
        self._asks: dict[int, _Level] = {}
        self._bid_prices = SortedList()
        self._ask_prices = SortedList()
        self._best_bid: int | None = None
        self._best_ask: int | None = None
        # (stop_price, sequence, order): fire when a trade prints >= / <= the stop price.
        self._rising = SortedList()
        self._falling = SortedList()
        # (expire_at, sequence at acceptance, order); stale entries are skipped when popped.
        self._expiries: list[tuple[int, int, Order]] = []
        self._first_px: int | None = None

    # ------------------------------------------------------------------ queries

    def best_bid(self) -> int | None:
        """The highest bid price in ticks, or None."""
        return self._best_bid

    def best_ask(self) -> int | None:
        """The lowest ask price in ticks, or None."""
        return self._best_ask

    def depth(self, levels: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The top ``levels`` of each side as (price, visible total), best first."""
        bids = self._bids
        asks = self._asks
        bid_prices = self._bid_prices
        top = len(bid_prices)
        return (
            # islice(reverse=True) reverses the slice it is given: take the highest bids.
            [(p, bids[p].total) for p in bid_prices.islice(max(0, top - levels), top, True)],
            [(p, asks[p].total) for p in self._ask_prices.islice(0, levels)],
        )

    def get(self, order_id: int) -> Order | None:
        """The live order (resting or untriggered) with this id, or None."""
        return self._orders.get(order_id)

    def __len__(self) -> int:
        """Live orders: resting plus untriggered stops."""
        return len(self._orders)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._orders

    def orders(self) -> list[Order]:
        """Live orders in time priority (by ``sequence``), e.g. for a snapshot."""
        return sorted(self._orders.values(), key=_by_sequence)

    def level_orders(self, side: Side, price: int) -> list[Order]:
        """The orders resting at one level, front of the queue first."""
        level = (self._bids if side is BUY else self._asks).get(price)
        result = []
        order = level.head if level is not None else None
        while order is not None:
            result.append(order)
            order = order._next
        return result

    def stop_orders(self) -> list[Order]:
        """Untriggered stop and take-profit orders in time priority."""
        return sorted([entry[2] for entry in (*self._rising, *self._falling)], key=_by_sequence)

    # ----------------------------------------------------------------- commands

    def submit(self, order: Order) -> list[Event]:
        """Validate, accept and match a new order, then run any stops its trades fire."""
        order_id = order.order_id
        if self.halted:
            return [_new(Rejected, (order_id, order.account, Reason.MARKET_HALTED, _REJECTED))]
        orders = self._orders
        if order_id in orders:
            return [_new(Rejected, (order_id, order.account, Reason.DUPLICATE_ORDER_ID, _REJECTED))]
        side = order.side
        price = order.price
        quantity = order.quantity
        # Fast path for the bulk of the flow, a plain GTC limit order: the same checks as
        # _check() for this shape, without the call and without the generic branches.
        if (
            order.order_type is LIMIT
            and order.time_in_force is None
            and (side is BUY or side is SELL)
            and type(price) is int
            and price > 0
            and type(quantity) is int
            and quantity > 0
            and order.stp is EXPIRE_TAKER
            and order.stop_price is None
            and order.expire_at is None
            and order.display_quantity is None
            and order.quote_amount is None
            and not order.post_only
            and not price % self.tick_size
            and not quantity % self.lot_size
        ):
            order.time_in_force = GTC
            order.remaining = quantity
            self.sequence = seq = self.sequence + 1
            order.sequence = seq
            account = order.account
            if side is BUY:
                best = self._best_ask
                if best is not None and price >= best:
                    events: list[Event] = [_new(Accepted, (order_id, account, seq, _ACCEPTED))]
                    self._first_px = None
                    self._enter(order, False, events)
                    if self._first_px is not None and (self._rising or self._falling):
                        self._cascade(events)
                    return events
                level = self._bids.get(price)
            else:
                best = self._best_bid
                if best is not None and price <= best:
                    events = [_new(Accepted, (order_id, account, seq, _ACCEPTED))]
                    self._first_px = None
                    self._enter(order, False, events)
                    if self._first_px is not None and (self._rising or self._falling):
                        self._cascade(events)
                    return events
                level = self._asks.get(price)
            if level is None:
                level = self._add_level(side, price)
                level.head = order
                order._prev = None
            else:
                tail = level.tail
                tail._next = order
                order._prev = tail
            order._next = None
            level.tail = order
            order._level = level
            order.visible = quantity
            level.total = total = level.total + quantity
            orders[order_id] = order
            return [
                _new(Accepted, (order_id, account, seq, _ACCEPTED)),
                _new(Rested, (order_id, account, side, price, quantity, quantity, _RESTED)),
                _new(LevelChanged, (side, price, total, _LEVEL)),
            ]

        reason = self._check(order)
        if reason is not None:
            return [_new(Rejected, (order_id, order.account, reason, _REJECTED))]
        side = order.side
        otype = order.order_type
        if order.post_only:
            price = order.price
            if side is BUY:
                best = self._best_ask
                if best is not None and price >= best:
                    reason = Reason.POST_ONLY_WOULD_TAKE
            else:
                best = self._best_bid
                if best is not None and price <= best:
                    reason = Reason.POST_ONLY_WOULD_TAKE
            if reason is not None:
                return [_new(Rejected, (order_id, order.account, reason, _REJECTED))]

        self.sequence = seq = self.sequence + 1
        order.sequence = seq
        events: list[Event] = [_new(Accepted, (order_id, order.account, seq, _ACCEPTED))]
        if order.expire_at is not None:
            heappush(self._expiries, (order.expire_at, seq, order))

        if otype is LIMIT:
            tif = order.time_in_force
            price = order.price
            if side is BUY:
                best = self._best_ask
                crosses = best is not None and price >= best
            else:
                best = self._best_bid
                crosses = best is not None and price <= best
            if not crosses and (tif is GTC or tif is GTT):
                self._rest(order, events)
                return events
            self._first_px = None
            self._enter(order, False, events)
        elif otype is MARKET:
            self._first_px = None
            self._enter(order, True, events)
        else:
            last = self.last_price
            if last is None or not (
                last >= order.stop_price if _rises(order) else last <= order.stop_price
            ):
                order.visible = 0
                order._level = None
                self._orders[order_id] = order
                stops = self._rising if _rises(order) else self._falling
                stops.add((order.stop_price, seq, order))
                return events
            self._first_px = None
            self._fire(order, events)
        if self._first_px is not None and (self._rising or self._falling):
            self._cascade(events)
        return events

    def cancel(self, order_id: int) -> list[Event]:
        """Cancel a live order (resting or untriggered); allowed while halted."""
        order = self._orders.get(order_id)
        if order is None:
            return [_new(Rejected, (order_id, None, Reason.UNKNOWN_ORDER, _REJECTED))]
        cancelled = _new(
            Cancelled, (order_id, order.account, order.remaining, Reason.USER_REQUEST, _CANCELLED)
        )
        level = order._level
        if level is None:
            events: list[Event] = [cancelled]
            self._remove(order, events)
            return events
        # Inlined _remove(): cancels are a third of the flow.
        del self._orders[order_id]
        prev = order._prev
        nxt = order._next
        if prev is None:
            level.head = nxt
        else:
            prev._next = nxt
        if nxt is None:
            level.tail = prev
        else:
            nxt._prev = prev
        order._prev = order._next = order._level = None
        level.total = total = level.total - order.visible
        side = order.side
        price = level.price
        if level.head is None:
            self._drop_level(side, price)
        return [cancelled, _new(LevelChanged, (side, price, total, _LEVEL))]

    def amend(
        self, order_id: int, *, price: int | None = None, quantity: int | None = None
    ) -> list[Event]:
        """Change a resting order's price and/or open quantity.

        ``quantity`` is the new *remaining* (open) quantity.  Lowering it at the same price
        keeps the order's place in the queue; a new price or a larger quantity re-enters the
        order at the back with a new sequence stamp, and a new price may trade.  Untriggered
        stops cannot be amended (cancel and place again).
        """
        if self.halted:
            return [_new(Rejected, (order_id, None, Reason.MARKET_HALTED, _REJECTED))]
        order = self._orders.get(order_id)
        if order is None:
            return [_new(Rejected, (order_id, None, Reason.UNKNOWN_ORDER, _REJECTED))]
        reason = None
        if order._level is None:
            reason = Reason.NOT_AMENDABLE
        elif price is None and quantity is None:
            reason = Reason.NOTHING_TO_AMEND
        elif quantity is not None and (type(quantity) is not int or quantity <= 0):
            reason = Reason.INVALID_QUANTITY
        elif quantity is not None and quantity % self.lot_size:
            reason = Reason.QUANTITY_OFF_LOT
        elif price is not None and (type(price) is not int or price <= 0):
            reason = Reason.INVALID_PRICE
        elif price is not None and price % self.tick_size:
            reason = Reason.PRICE_OFF_TICK
        if reason is not None:
            return [_new(Rejected, (order_id, order.account, reason, _REJECTED))]
        old_price = order.price
        new_price = old_price if price is None else price
        new_qty = order.remaining if quantity is None else quantity
        if new_price == old_price and new_qty == order.remaining:
            return [_new(Rejected, (order_id, order.account, Reason.NOTHING_TO_AMEND, _REJECTED))]
        side = order.side
        if new_price == old_price and new_qty < order.remaining:
            level = order._level
            visible = order.visible
            new_visible = new_qty if new_qty < visible else visible
            order.remaining = new_qty
            order.visible = new_visible
            events: list[Event] = [
                Amended(
                    order_id, order.account, new_price, new_qty, new_visible, True, order.sequence
                )
            ]
            if new_visible != visible:
                level.total -= visible - new_visible
                events.append(_new(LevelChanged, (side, new_price, level.total, _LEVEL)))
            return events
        if order.post_only and (
            (self._best_ask is not None and new_price >= self._best_ask)
            if side is BUY
            else (self._best_bid is not None and new_price <= self._best_bid)
        ):
            return [
                _new(Rejected, (order_id, order.account, Reason.POST_ONLY_WOULD_TAKE, _REJECTED))
            ]
        self.sequence = seq = self.sequence + 1
        display = order.display_quantity
        new_visible = new_qty if display is None or display >= new_qty else display
        events = [Amended(order_id, order.account, new_price, new_qty, new_visible, False, seq)]
        self._remove(order, events)
        order.sequence = seq
        order.price = new_price
        order.remaining = new_qty
        order.visible = new_visible
        self._first_px = None
        self._enter(order, False, events)
        if self._first_px is not None and (self._rising or self._falling):
            self._cascade(events)
        return events

    def cancel_all(self, account: Hashable | None = None) -> list[Event]:
        """Cancel every live order of ``account`` (all accounts if None), oldest stamp first."""
        if account is None:
            targets = list(self._orders.values())
        else:
            targets = [o for o in self._orders.values() if o.account == account]
        targets.sort(key=_by_sequence)
        events: list[Event] = []
        for order in targets:
            events.append(
                _new(
                    Cancelled,
                    (
                        order.order_id,
                        order.account,
                        order.remaining,
                        Reason.CANCEL_ALL,
                        _CANCELLED,
                    ),
                )
            )
            self._remove(order, events)
        return events

    def expire(self, now: int) -> list[Event]:
        """Expire GTT orders (resting or untriggered) with ``expire_at <= now``.

        Orders expire in order of expiry time, then of time priority (``sequence``).  The book
        remembers the latest ``now`` it was given; it never moves backwards.
        """
        if self.now is None or now > self.now:
            self.now = now
        heap = self._expiries
        orders = self._orders
        due = []
        while heap and heap[0][0] <= now:
            order = heappop(heap)[2]
            # Entries of orders that already finished (or whose id was reused) are stale.
            if orders.get(order.order_id) is order:
                due.append(order)
        due.sort(key=_by_expiry)
        events: list[Event] = []
        for order in due:
            events.append(Expired(order.order_id, order.account, order.remaining))
            self._remove(order, events)
        return events

    def halt(self) -> list[Event]:
        """Stop accepting orders and amends; the book, cancels and expiry carry on."""
        self.halted = True
        return [Halted()]

    def resume(self) -> list[Event]:
        self.halted = False
        return [Resumed()]

    def restore(
        self,
        resting_orders: Iterable[Order],
        *,
        last_price: int | None = None,
        now: int | None = None,
    ) -> None:
        """Rebuild an empty book from persisted state, without matching and without events.

        ``resting_orders`` are open limit orders and stop orders, in time priority; each one's
        ``quantity`` is its *remaining* quantity.  A stop order goes back to the untriggered
        list unless ``order.triggered`` is set (a fired stop-limit resting on the book).  A preset
        ``order.sequence`` is kept (and the book's counter moves past it), otherwise the next
        stamp is assigned.  An iceberg comes back showing a full display slice.  Raises
        ValueError on an invalid order, a duplicate id, a market/IOC/FOK order, or a crossed
        result, leaving the book in an unspecified state.
        """
        if self._orders:
            raise ValueError("restore() needs an empty book")
        self.last_price = last_price
        if now is not None:
            self.now = now
        for order in resting_orders:
            if order.order_id in self._orders:
                raise ValueError(f"duplicate order id {order.order_id!r} in restore")
            # A resting GTT that expired while the matcher was down is still restored; the
            # caller's first expire(now) removes it with a proper Expired event.
            saved_now, self.now = self.now, None
            reason = self._check(order, restoring=True)
            self.now = saved_now
            if reason is not None:
                raise ValueError(f"cannot restore {order!r}: {reason}")
            if order.order_type is MARKET:
                raise ValueError(f"cannot restore a market order: {order!r}")
            tif = order.time_in_force
            if order.order_type is LIMIT and (tif is IOC or tif is FOK):
                raise ValueError(f"cannot restore an {tif} order: {order!r}")
            if order.sequence is None:
                self.sequence += 1
                order.sequence = self.sequence
            elif order.sequence > self.sequence:
                self.sequence = order.sequence
            if order.expire_at is not None:
                heappush(self._expiries, (order.expire_at, order.sequence, order))
            if order.order_type in _STOP_TYPES and not order.triggered:
                order.visible = 0
                order._level = None
                self._orders[order.order_id] = order
                stops = self._rising if _rises(order) else self._falling
                stops.add((order.stop_price, order.sequence, order))
            else:
                self._rest(order, [])
        if (
            self._best_bid is not None
            and self._best_ask is not None
            and self._best_bid >= self._best_ask
        ):
            raise ValueError(f"restored book is crossed: {self._best_bid} >= {self._best_ask}")

    # ---------------------------------------------------------------- internals

    def _check(self, order: Order, restoring: bool = False) -> Reason | None:
        """Return why ``order`` is invalid, or None; normalises its enums and sets remaining.

        Checks run in a fixed order so that the reason for an order with several faults is
        deterministic.
        """
        side = order.side
        if side is not BUY and side is not SELL:
            side = _SIDES.get(side)
            if side is None:
                return Reason.INVALID_SIDE
            order.side = side
        otype = order.order_type
        if otype is not LIMIT:
            otype = _ORDER_TYPES.get(otype)
            if otype is None:
                return Reason.INVALID_ORDER_TYPE
            order.order_type = otype
        stp = order.stp
        if stp is not EXPIRE_TAKER:
            stp = _STP_MODES.get(stp)
            if stp is None:
                return Reason.INVALID_STP_MODE
            order.stp = stp
        is_market = otype is MARKET or otype is STOP_MARKET or otype is TAKE_PROFIT_MARKET
        tif = order.time_in_force
        if tif is None:
            order.time_in_force = tif = IOC if is_market else GTC
        elif tif is not GTC:
            tif = _TIFS.get(tif)
            if tif is None:
                return Reason.INVALID_TIME_IN_FORCE
            order.time_in_force = tif
        if is_market and tif is not IOC:
            return Reason.INVALID_TIME_IN_FORCE
        quantity = order.quantity
        if order.quote_amount is not None:
            quote = order.quote_amount
            if not is_market or side is not BUY or quantity is not None:
                return Reason.QUOTE_AMOUNT_NOT_ALLOWED
            if type(quote) is not int or quote <= 0:
                return Reason.INVALID_QUOTE_AMOUNT
            order.remaining = quote
        else:
            if type(quantity) is not int or quantity <= 0:
                return Reason.INVALID_QUANTITY
            if quantity % self.lot_size:
                return Reason.QUANTITY_OFF_LOT
            order.remaining = quantity
        price = order.price
        if is_market:
            if price is not None:
                return Reason.MARKET_ORDER_WITH_PRICE
        else:
            if price is None:
                return Reason.MISSING_PRICE
            if type(price) is not int or price <= 0:
                return Reason.INVALID_PRICE
            if price % self.tick_size:
                return Reason.PRICE_OFF_TICK
        stop = order.stop_price
        if otype is not LIMIT and otype is not MARKET:
            if stop is None:
                return Reason.MISSING_STOP_PRICE
            if type(stop) is not int or stop <= 0:
                return Reason.INVALID_STOP_PRICE
            if stop % self.tick_size:
                return Reason.PRICE_OFF_TICK
        elif stop is not None:
            return Reason.STOP_PRICE_NOT_ALLOWED
        expire_at = order.expire_at
        if tif is GTT:
            if expire_at is None:
                return Reason.MISSING_EXPIRE_TIME
            if type(expire_at) is not int:
                return Reason.INVALID_EXPIRE_TIME
            if self.now is not None and expire_at <= self.now:
                return Reason.ALREADY_EXPIRED
        elif expire_at is not None:
            return Reason.EXPIRE_TIME_NOT_ALLOWED
        display = order.display_quantity
        if display is not None and (
            is_market
            or type(display) is not int
            or display <= 0
            or (display > quantity and not restoring)
            or display % self.lot_size
        ):
            return Reason.INVALID_DISPLAY_QUANTITY
        if order.post_only and (otype is not LIMIT or tif is IOC or tif is FOK):
            return Reason.POST_ONLY_NOT_ALLOWED
        return None

    def _fire(self, order: Order, events: list[Event]) -> None:
        """Enter a stop whose condition holds, as a LIMIT or MARKET with a new stamp."""
        self.sequence = seq = self.sequence + 1
        order.sequence = seq
        order.triggered = True
        events.append(
            Triggered(order.order_id, order.account, order.stop_price, self.last_price, seq)
        )
        self._enter(order, order.order_type in _MARKET_TYPES, events)

    def _cascade(self, events: list[Event]) -> None:
        """Fire every stop that this command's trades reached, until no more fire.

        Stops fired by one order's trades enter in acceptance order, after any stops fired
        earlier in the same command; each one's own trades may fire more.
        """
        pending: deque[Order] = deque()
        while True:
            first = self._first_px
            if first is not None:
                last = self.last_price
                low, high = (first, last) if first <= last else (last, first)
                pending.extend(self._collect(low, high))
            if not pending:
                return
            self._first_px = None
            self._fire(pending.popleft(), events)

    def _collect(self, low: int, high: int) -> list[Order]:
        """Remove and return the stops fired by trades printed between ``low`` and ``high``."""
        fired = []
        rising = self._rising
        while rising and rising[0][0] <= high:
            fired.append(rising.pop(0)[2])
        falling = self._falling
        while falling and falling[-1][0] >= low:
            fired.append(falling.pop()[2])
        if len(fired) > 1:
            fired.sort(key=_by_sequence)
        orders = self._orders
        for order in fired:
            del orders[order.order_id]
        return fired

    def _enter(self, order: Order, is_market: bool, events: list[Event]) -> None:
        """Match an accepted order, then rest or cancel what is left."""
        side = order.side
        if is_market:
            best = self._best_ask if side is BUY else self._best_bid
            if best is None:
                events.append(
                    _new(
                        Cancelled,
                        (
                            order.order_id,
                            order.account,
                            order.remaining,
                            Reason.NO_LIQUIDITY,
                            _CANCELLED,
                        ),
                    )
                )
                return
            band = self.price_band_bps
            if band is None:
                limit = None
            elif side is BUY:
                limit = best + best * band // 10_000
            else:
                limit = best - best * band // 10_000
            reason = self._match(order, limit, order.quote_amount is not None, events)
            if order.remaining:
                if reason is None:
                    opposite = self._best_ask if side is BUY else self._best_bid
                    reason = Reason.NO_LIQUIDITY if opposite is None else Reason.PRICE_BAND
                events.append(
                    _new(
                        Cancelled,
                        (order.order_id, order.account, order.remaining, reason, _CANCELLED),
                    )
                )
            return
        tif = order.time_in_force
        if tif is FOK and not self._fillable(order):
            events.append(
                _new(
                    Cancelled,
                    (
                        order.order_id,
                        order.account,
                        order.remaining,
                        Reason.FOK_NOT_FILLABLE,
                        _CANCELLED,
                    ),
                )
            )
            return
        price = order.price
        if side is BUY:
            best = self._best_ask
            crosses = best is not None and price >= best
        else:
            best = self._best_bid
            crosses = best is not None and price <= best
        reason = self._match(order, price, False, events) if crosses else None
        if not order.remaining:
            return
        if reason is None and (tif is IOC or tif is FOK):
            reason = Reason.IOC_UNFILLED
        if reason is not None:
            events.append(
                _new(
                    Cancelled,
                    (order.order_id, order.account, order.remaining, reason, _CANCELLED),
                )
            )
            return
        self._rest(order, events)

    def _rest(self, order: Order, events: list[Event]) -> None:
        """Append a limit order to the back of its level."""
        price = order.price
        remaining = order.remaining
        display = order.display_quantity
        visible = remaining if display is None or display >= remaining else display
        order.visible = visible
        side = order.side
        level = (self._bids if side is BUY else self._asks).get(price)
        if level is None:
            level = self._add_level(side, price)
        tail = level.tail
        order._prev = tail
        order._next = None
        if tail is None:
            level.head = order
        else:
            tail._next = order
        level.tail = order
        order._level = level
        level.total = total = level.total + visible
        order_id = order.order_id
        self._orders[order_id] = order
        events.append(
            _new(Rested, (order_id, order.account, side, price, remaining, visible, _RESTED))
        )
        events.append(_new(LevelChanged, (side, price, total, _LEVEL)))

    def _remove(self, order: Order, events: list[Event]) -> None:
        """Take a live order out of the book (or the stop lists) and forget it."""
        del self._orders[order.order_id]
        level = order._level
        if level is None:
            stops = self._rising if _rises(order) else self._falling
            stops.remove((order.stop_price, order.sequence, order))
            return
        prev = order._prev
        nxt = order._next
        if prev is None:
            level.head = nxt
        else:
            prev._next = nxt
        if nxt is None:
            level.tail = prev
        else:
            nxt._prev = prev
        order._prev = order._next = order._level = None
        level.total = total = level.total - order.visible
        side = order.side
        events.append(_new(LevelChanged, (side, level.price, total, _LEVEL)))
        if level.head is None:
            self._drop_level(side, level.price)

    def _add_level(self, side: Side, price: int) -> _Level:
        level = _Level(price)
        if side is BUY:
            self._bids[price] = level
            self._bid_prices.add(price)
            best = self._best_bid
            if best is None or price > best:
                self._best_bid = price
        else:
            self._asks[price] = level
            self._ask_prices.add(price)
            best = self._best_ask
            if best is None or price < best:
                self._best_ask = price
        return level

    def _drop_level(self, side: Side, price: int) -> None:
        if side is BUY:
            del self._bids[price]
            prices = self._bid_prices
            prices.remove(price)
            if price == self._best_bid:
                self._best_bid = prices[-1] if prices else None
        else:
            del self._asks[price]
            prices = self._ask_prices
            prices.remove(price)
            if price == self._best_ask:
                self._best_ask = prices[0] if prices else None

    def _refill(self, level: _Level, order: Order, remaining: int, events: list[Event]) -> None:
        """Show an iceberg's next slice and send it to the back of its level.

        Call after the exhausted slice's quantity has already been taken off ``level.total``.
        """
        display = order.display_quantity
        visible = remaining if display >= remaining else display
        order.visible = visible
        level.total += visible
        self.sequence = seq = self.sequence + 1
        order.sequence = seq
        nxt = order._next
        if nxt is not None:
            prev = order._prev
            if prev is None:
                level.head = nxt
            else:
                prev._next = nxt
            nxt._prev = prev
            tail = level.tail
            tail._next = order
            order._prev = tail
            order._next = None
            level.tail = order
        events.append(
            Refilled(order.order_id, order.account, order.side, level.price, visible, seq)
        )

    def _match(
        self, taker: Order, limit: int | None, quote: bool, events: list[Event]
    ) -> Reason | None:
        """Trade ``taker`` against the opposite side up to ``limit`` (None: no limit).

        Returns SELF_TRADE if self-trade prevention stopped the taker, QUOTE_EXHAUSTED if a
        quote-amount order cannot afford one more lot, else None.  Leaves the taker's
        ``remaining`` updated; records the first trade price in ``_first_px``.
        """
        is_buy = taker.side is BUY
        if is_buy:
            levels = self._asks
            maker_side = SELL
        else:
            levels = self._bids
            maker_side = BUY
        orders = self._orders
        append = events.append
        taker_id = taker.order_id
        taker_account = taker.account
        taker_side = taker.side
        remaining = taker.remaining
        lot = self.lot_size
        reason = None
        first = None
        traded = None
        while True:
            price = self._best_ask if is_buy else self._best_bid
            if price is None:
                break
            if limit is not None and (price > limit if is_buy else price < limit):
                break
            level = levels[price]
            start_total = level.total
            maker = level.head
            while maker is not None:
                if quote:
                    cap = remaining // price
                    if lot != 1:
                        cap -= cap % lot
                    if not cap:
                        reason = Reason.QUOTE_EXHAUSTED
                        break
                else:
                    cap = remaining
                if maker.account == taker_account:
                    maker, remaining, stopped = self._prevent(
                        taker, maker, level, remaining, cap, price, quote, events
                    )
                    if stopped:
                        reason = Reason.SELF_TRADE
                        break
                    continue
                visible = maker.visible
                traded = price
                if visible <= cap:
                    maker_left = maker.remaining - visible
                    remaining -= visible * price if quote else visible
                    append(
                        _new(
                            Trade,
                            (
                                maker.order_id,
                                taker_id,
                                price,
                                visible,
                                maker.account,
                                taker_account,
                                taker_side,
                                maker_left,
                                remaining,
                                _TRADE,
                            ),
                        )
                    )
                    level.total -= visible
                    if maker_left:
                        maker.remaining = maker_left
                        self._refill(level, maker, maker_left, events)
                        maker = level.head
                    else:
                        del orders[maker.order_id]
                        maker.remaining = maker.visible = 0
                        nxt = maker._next
                        maker._level = maker._next = None
                        level.head = nxt
                        if nxt is None:
                            level.tail = None
                        else:
                            nxt._prev = None
                        maker = nxt
                    if not remaining:
                        break
                else:
                    maker.visible = visible - cap
                    maker.remaining = maker_left = maker.remaining - cap
                    level.total -= cap
                    remaining = remaining - cap * price if quote else 0
                    append(
                        _new(
                            Trade,
                            (
                                maker.order_id,
                                taker_id,
                                price,
                                cap,
                                maker.account,
                                taker_account,
                                taker_side,
                                maker_left,
                                remaining,
                                _TRADE,
                            ),
                        )
                    )
                    if not remaining:
                        break
            if first is None:
                first = traded
            total = level.total
            if total != start_total:
                append(_new(LevelChanged, (maker_side, price, total, _LEVEL)))
            if level.head is None:
                self._drop_level(maker_side, price)
            if reason is not None or not remaining:
                break
        taker.remaining = remaining
        if traded is not None:
            self._first_px = first
            self.last_price = traded
        return reason

    def _prevent(
        self,
        taker: Order,
        maker: Order,
        level: _Level,
        remaining: int,
        cap: int,
        price: int,
        quote: bool,
        events: list[Event],
    ) -> tuple[Order | None, int, bool]:
        """Apply the taker's self-trade prevention mode against one of its own makers.

        Returns the next maker to look at, the taker's remaining, and whether the taker must
        stop (its remainder is then cancelled with SELF_TRADE by the caller).
        """
        mode = taker.stp
        if mode is EXPIRE_TAKER:
            return maker, remaining, True
        nxt = maker._next
        if mode is not DECREMENT:
            events.append(
                _new(
                    Cancelled,
                    (
                        maker.order_id,
                        maker.account,
                        maker.remaining,
                        Reason.SELF_TRADE,
                        _CANCELLED,
                    ),
                )
            )
            self._unlink(maker, level)
            return nxt, remaining, mode is EXPIRE_BOTH
        visible = maker.visible
        amount = visible if visible <= cap else cap
        maker_left = maker.remaining - amount
        if not maker_left:
            events.append(
                _new(
                    Cancelled,
                    (maker.order_id, maker.account, amount, Reason.SELF_TRADE, _CANCELLED),
                )
            )
            self._unlink(maker, level)
        else:
            maker.remaining = maker_left
            events.append(Decremented(maker.order_id, maker.account, amount, maker_left))
            level.total -= amount
            if amount == visible:
                self._refill(level, maker, maker_left, events)
                nxt = level.head
            else:
                maker.visible = visible - amount
                nxt = maker
        taker_amount = amount * price if quote else amount
        if taker_amount == remaining:
            return nxt, remaining, True
        remaining -= taker_amount
        events.append(Decremented(taker.order_id, taker.account, taker_amount, remaining))
        return nxt, remaining, False

    def _unlink(self, order: Order, level: _Level) -> None:
        """Take an order out of its level during a sweep (the sweep drops empty levels)."""
        del self._orders[order.order_id]
        prev = order._prev
        nxt = order._next
        if prev is None:
            level.head = nxt
        else:
            prev._next = nxt
        if nxt is None:
            level.tail = prev
        else:
            nxt._prev = prev
        level.total -= order.visible
        order.remaining = order.visible = 0
        order._prev = order._next = order._level = None

    def _fillable(self, taker: Order) -> bool:
        """Would a FOK limit order fill completely right now?  Decided before any fill.

        Walks the same queue the match would, iceberg refills and self-trade prevention
        included, on a scratch copy of each level.
        """
        need = taker.remaining
        limit = taker.price
        account = taker.account
        mode = taker.stp
        if taker.side is BUY:
            levels = self._asks
            prices = self._ask_prices.irange(maximum=limit)
        else:
            levels = self._bids
            prices = self._bid_prices.irange(minimum=limit, reverse=True)
        for price in prices:
            queue = deque()
            maker = levels[price].head
            while maker is not None:
                queue.append([maker.account, maker.visible, maker.remaining, maker])
                maker = maker._next
            while queue:
                maker_account, visible, left, maker = queue[0]
                if maker_account == account:
                    if mode is EXPIRE_MAKER:
                        queue.popleft()
                        continue
                    return False
                if visible >= need:
                    return True
                need -= visible
                left -= visible
                queue.popleft()
                if left:
                    display = maker.display_quantity
                    queue.append([maker_account, min(display, left), left, maker])
        return False


def _by_sequence(order: Order) -> int:
    return order.sequence


def _by_expiry(order: Order) -> tuple[int, int]:
    return order.expire_at, order.sequence
