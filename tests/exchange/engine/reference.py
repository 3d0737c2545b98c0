"""A slow, obviously-correct model of the order book, written apart from the engine.

No linked lists, no cached best prices, no sorted containers: every decision re-reads a flat
list of live orders and sorts it.  Only the event classes and enums are shared with the
engine, as plain vocabulary.  The stateful test drives both with the same commands and asserts
identical events and identical books.
"""

import copy
from dataclasses import dataclass

from exchange.engine import (
    Accepted,
    Amended,
    Cancelled,
    Decremented,
    Expired,
    Halted,
    LevelChanged,
    OrderType,
    Reason,
    Refilled,
    Rejected,
    Rested,
    Resumed,
    SelfTradePrevention,
    Side,
    TimeInForce,
    Trade,
    Triggered,
)

MARKET_TYPES = {OrderType.MARKET, OrderType.STOP_MARKET, OrderType.TAKE_PROFIT_MARKET}
STOP_TYPES = {
    OrderType.STOP_LIMIT,
    OrderType.STOP_MARKET,
    OrderType.TAKE_PROFIT_LIMIT,
    OrderType.TAKE_PROFIT_MARKET,
}
TAKE_PROFIT_TYPES = {OrderType.TAKE_PROFIT_LIMIT, OrderType.TAKE_PROFIT_MARKET}


@dataclass
class Spec:
    """An order command as plain data (the test builds an engine Order from the same)."""

    order_id: int
    account: object
    side: object
    price: object = None
    quantity: object = None
    order_type: object = OrderType.LIMIT
    time_in_force: object = None
    post_only: bool = False
    display_quantity: object = None
    stop_price: object = None
    expire_at: object = None
    stp: object = SelfTradePrevention.EXPIRE_TAKER
    quote_amount: object = None


@dataclass(eq=False)
class Live:
    order_id: int
    account: object
    side: Side
    price: int | None
    order_type: OrderType
    tif: TimeInForce
    display: int | None
    stop_price: int | None
    expire_at: int | None
    stp: SelfTradePrevention
    quote: bool
    post_only: bool
    remaining: int
    visible: int
    sequence: int
    accept_sequence: int
    on_book: bool = False
    triggered: bool = False


def _enum(cls, value):
    try:
        return cls(value)
    except (ValueError, TypeError):
        return None


def _is_int(value) -> bool:
    return type(value) is int


class ReferenceBook:
    def __init__(self, *, tick_size=1, lot_size=1, price_band_bps=500):
        self.tick = tick_size
        self.lot = lot_size
        self.band = price_band_bps
        self.live: list[Live] = []
        self.sequence = 0
        self.last_price = None
        self.now = None
        self.halted = False

    # ------------------------------------------------------------ read-outs

    def find(self, order_id):
        for o in self.live:
            if o.order_id == order_id:
                return o
        return None

    def resting(self, side):
        """Orders on one side of the book in priority order."""
        rows = [o for o in self.live if o.on_book and o.side == side]
        if side == Side.BUY:
            return sorted(rows, key=lambda o: (-o.price, o.sequence))
        return sorted(rows, key=lambda o: (o.price, o.sequence))

    def level_total(self, side, price):
        return sum(
            o.visible for o in self.live if o.on_book and o.side == side and o.price == price
        )

    def depth(self, levels):
        out = []
        for side in (Side.BUY, Side.SELL):
            prices = []
            for o in self.resting(side):
                if o.price not in prices:
                    prices.append(o.price)
            out.append([(p, self.level_total(side, p)) for p in prices[:levels]])
        return tuple(out)

    def stops(self):
        return sorted([o for o in self.live if not o.on_book], key=lambda o: o.sequence)

    # ------------------------------------------------------------- commands

    def next_sequence(self):
        self.sequence += 1
        return self.sequence

    def validate(self, s: Spec):
        side = _enum(Side, s.side)
        if side is None:
            return Reason.INVALID_SIDE, None
        otype = _enum(OrderType, s.order_type)
        if otype is None:
            return Reason.INVALID_ORDER_TYPE, None
        stp = _enum(SelfTradePrevention, s.stp)
        if stp is None:
            return Reason.INVALID_STP_MODE, None
        is_market = otype in MARKET_TYPES
        if s.time_in_force is None:
            tif = TimeInForce.IOC if is_market else TimeInForce.GTC
        else:
            tif = _enum(TimeInForce, s.time_in_force)
            if tif is None:
                return Reason.INVALID_TIME_IN_FORCE, None
        if is_market and tif != TimeInForce.IOC:
            return Reason.INVALID_TIME_IN_FORCE, None
        if s.quote_amount is not None:
            if not is_market or side != Side.BUY or s.quantity is not None:
                return Reason.QUOTE_AMOUNT_NOT_ALLOWED, None
            if not _is_int(s.quote_amount) or s.quote_amount <= 0:
                return Reason.INVALID_QUOTE_AMOUNT, None
            remaining = s.quote_amount
        else:
            if not _is_int(s.quantity) or s.quantity <= 0:
                return Reason.INVALID_QUANTITY, None
            if s.quantity % self.lot != 0:
                return Reason.QUANTITY_OFF_LOT, None
            remaining = s.quantity
        if is_market:
            if s.price is not None:
                return Reason.MARKET_ORDER_WITH_PRICE, None
        else:
            if s.price is None:
                return Reason.MISSING_PRICE, None
            if not _is_int(s.price) or s.price <= 0:
                return Reason.INVALID_PRICE, None
            if s.price % self.tick != 0:
                return Reason.PRICE_OFF_TICK, None
        if otype in STOP_TYPES:
            if s.stop_price is None:
                return Reason.MISSING_STOP_PRICE, None
            if not _is_int(s.stop_price) or s.stop_price <= 0:
                return Reason.INVALID_STOP_PRICE, None
            if s.stop_price % self.tick != 0:
                return Reason.PRICE_OFF_TICK, None
        elif s.stop_price is not None:
            return Reason.STOP_PRICE_NOT_ALLOWED, None
        if tif == TimeInForce.GTT:
            if s.expire_at is None:
                return Reason.MISSING_EXPIRE_TIME, None
            if not _is_int(s.expire_at):
                return Reason.INVALID_EXPIRE_TIME, None
            if self.now is not None and s.expire_at <= self.now:
                return Reason.ALREADY_EXPIRED, None
        elif s.expire_at is not None:
            return Reason.EXPIRE_TIME_NOT_ALLOWED, None
        d = s.display_quantity
        if d is not None and (
            is_market or not _is_int(d) or d <= 0 or d > s.quantity or d % self.lot != 0
        ):
            return Reason.INVALID_DISPLAY_QUANTITY, None
        if s.post_only and (otype != OrderType.LIMIT or tif in (TimeInForce.IOC, TimeInForce.FOK)):
            return Reason.POST_ONLY_NOT_ALLOWED, None
        order = Live(
            order_id=s.order_id,
            account=s.account,
            side=side,
            price=s.price,
            order_type=otype,
            tif=tif,
            display=d,
            stop_price=s.stop_price,
            expire_at=s.expire_at,
            stp=stp,
            quote=s.quote_amount is not None,
            post_only=bool(s.post_only),
            remaining=remaining,
            visible=0,
            sequence=0,
            accept_sequence=0,
        )
        return None, order

    def would_take(self, side, price):
        opposite = self.resting(Side.SELL if side == Side.BUY else Side.BUY)
        if not opposite:
            return False
        best = opposite[0].price
        return price >= best if side == Side.BUY else price <= best

    def submit(self, s: Spec):
        if self.halted:
            return [Rejected(s.order_id, s.account, Reason.MARKET_HALTED)]
        if self.find(s.order_id) is not None:
            return [Rejected(s.order_id, s.account, Reason.DUPLICATE_ORDER_ID)]
        reason, order = self.validate(s)
        if reason is not None:
            return [Rejected(s.order_id, s.account, reason)]
        if order.post_only and self.would_take(order.side, order.price):
            return [Rejected(s.order_id, s.account, Reason.POST_ONLY_WOULD_TAKE)]
        order.sequence = order.accept_sequence = self.next_sequence()
        events = [Accepted(order.order_id, order.account, order.sequence)]
        if order.order_type in STOP_TYPES:
            if self.last_price is not None and self.fires_at(order, self.last_price):
                traded = self.fire(order, events)
            else:
                self.live.append(order)
                return events
        else:
            traded = self.enter(order, events)
        self.cascade(traded, events)
        return events

    def rises(self, order):
        return (order.side == Side.BUY) == (order.order_type not in TAKE_PROFIT_TYPES)

    def fires_at(self, order, price):
        return price >= order.stop_price if self.rises(order) else price <= order.stop_price

    def fire(self, order, events):
        order.sequence = self.next_sequence()
        order.triggered = True
        events.append(
            Triggered(
                order.order_id, order.account, order.stop_price, self.last_price, order.sequence
            )
        )
        return self.enter(order, events)

    def cascade(self, traded, events):
        pending = []
        while True:
            if traded:
                low, high = min(traded), max(traded)
                fired = [
                    o
                    for o in self.stops()
                    if (o.stop_price <= high if self.rises(o) else o.stop_price >= low)
                ]
                for o in fired:
                    self.live.remove(o)
                pending.extend(fired)
            if not pending:
                return
            traded = self.fire(pending.pop(0), events)

    def enter(self, order, events):
        """Match an accepted order and rest or cancel the rest; return its trade prices."""
        is_market = order.order_type in MARKET_TYPES
        opposite = Side.SELL if order.side == Side.BUY else Side.BUY
        if is_market:
            book = self.resting(opposite)
            if not book:
                events.append(
                    Cancelled(order.order_id, order.account, order.remaining, Reason.NO_LIQUIDITY)
                )
                return []
            best = book[0].price
            if self.band is None:
                limit = None
            elif order.side == Side.BUY:
                limit = best + best * self.band // 10_000
            else:
                limit = best - best * self.band // 10_000
            reason, traded = self.match(order, limit, events)
            if order.remaining:
                if reason is None:
                    reason = (
                        Reason.NO_LIQUIDITY if not self.resting(opposite) else Reason.PRICE_BAND
                    )
                events.append(Cancelled(order.order_id, order.account, order.remaining, reason))
            return traded
        if order.tif == TimeInForce.FOK and not self.fillable(order):
            events.append(
                Cancelled(order.order_id, order.account, order.remaining, Reason.FOK_NOT_FILLABLE)
            )
            return []
        reason, traded = self.match(order, order.price, events)
        if order.remaining == 0:
            return traded
        if reason is None and order.tif in (TimeInForce.IOC, TimeInForce.FOK):
            reason = Reason.IOC_UNFILLED
        if reason is not None:
            events.append(Cancelled(order.order_id, order.account, order.remaining, reason))
            return traded
        self.rest(order, events)
        return traded

    def fillable(self, order):
        """Dry-run the real matching on a copy of the model and see if it fills completely."""
        scratch = copy.deepcopy(self)
        probe = copy.deepcopy(order)
        want = probe.remaining
        events = []
        scratch.match(probe, probe.price, events)
        return sum(e.quantity for e in events if isinstance(e, Trade)) == want

    def rest(self, order, events):
        order.visible = min(order.display or order.remaining, order.remaining)
        order.on_book = True
        if order not in self.live:
            self.live.append(order)
        events.append(
            Rested(
                order.order_id,
                order.account,
                order.side,
                order.price,
                order.remaining,
                order.visible,
            )
        )
        events.append(
            LevelChanged(order.side, order.price, self.level_total(order.side, order.price))
        )

    def refill(self, maker, events):
        maker.visible = min(maker.display, maker.remaining)
        maker.sequence = self.next_sequence()
        events.append(
            Refilled(
                maker.order_id,
                maker.account,
                maker.side,
                maker.price,
                maker.visible,
                maker.sequence,
            )
        )

    def drop(self, maker):
        self.live.remove(maker)
        maker.on_book = False

    def match(self, taker, limit, events):
        opposite = Side.SELL if taker.side == Side.BUY else Side.BUY
        traded = []
        reason = None
        while taker.remaining > 0 and reason is None:
            book = self.resting(opposite)
            if limit is not None:
                if taker.side == Side.BUY:
                    book = [o for o in book if o.price <= limit]
                else:
                    book = [o for o in book if o.price >= limit]
            if not book:
                break
            price = book[0].price
            before = self.level_total(opposite, price)
            while taker.remaining > 0:
                queue = [o for o in self.resting(opposite) if o.price == price]
                if not queue:
                    break
                maker = queue[0]
                if taker.quote:
                    cap = taker.remaining // price
                    cap -= cap % self.lot
                    if cap == 0:
                        reason = Reason.QUOTE_EXHAUSTED
                        break
                else:
                    cap = taker.remaining
                if maker.account == taker.account:
                    if self.prevent(taker, maker, cap, price, events):
                        reason = Reason.SELF_TRADE
                        break
                    continue
                quantity = min(maker.visible, cap)
                maker.remaining -= quantity
                maker.visible -= quantity
                taker.remaining -= quantity * price if taker.quote else quantity
                traded.append(price)
                self.last_price = price
                events.append(
                    Trade(
                        maker.order_id,
                        taker.order_id,
                        price,
                        quantity,
                        maker.account,
                        taker.account,
                        taker.side,
                        maker.remaining,
                        taker.remaining,
                    )
                )
                if maker.remaining == 0:
                    self.drop(maker)
                elif maker.visible == 0:
                    self.refill(maker, events)
            after = self.level_total(opposite, price)
            if after != before:
                events.append(LevelChanged(opposite, price, after))
        return reason, traded

    def prevent(self, taker, maker, cap, price, events):
        """Self-trade prevention; True if the taker must stop."""
        mode = taker.stp
        if mode == SelfTradePrevention.EXPIRE_TAKER:
            return True
        if mode in (SelfTradePrevention.EXPIRE_MAKER, SelfTradePrevention.EXPIRE_BOTH):
            events.append(
                Cancelled(maker.order_id, maker.account, maker.remaining, Reason.SELF_TRADE)
            )
            self.drop(maker)
            return mode == SelfTradePrevention.EXPIRE_BOTH
        amount = min(maker.visible, cap)
        maker.remaining -= amount
        maker.visible -= amount
        if maker.remaining == 0:
            events.append(Cancelled(maker.order_id, maker.account, amount, Reason.SELF_TRADE))
            self.drop(maker)
        else:
            events.append(Decremented(maker.order_id, maker.account, amount, maker.remaining))
            if maker.visible == 0:
                self.refill(maker, events)
        taker_amount = amount * price if taker.quote else amount
        if taker_amount == taker.remaining:
            return True
        taker.remaining -= taker_amount
        events.append(Decremented(taker.order_id, taker.account, taker_amount, taker.remaining))
        return False

    def remove(self, order, events):
        self.live.remove(order)
        if order.on_book:
            order.on_book = False
            events.append(
                LevelChanged(order.side, order.price, self.level_total(order.side, order.price))
            )

    def cancel(self, order_id):
        order = self.find(order_id)
        if order is None:
            return [Rejected(order_id, None, Reason.UNKNOWN_ORDER)]
        events = [Cancelled(order_id, order.account, order.remaining, Reason.USER_REQUEST)]
        self.remove(order, events)
        return events

    def cancel_all(self, account=None):
        events = []
        targets = [o for o in self.live if account is None or o.account == account]
        for order in sorted(targets, key=lambda o: o.sequence):
            events.append(
                Cancelled(order.order_id, order.account, order.remaining, Reason.CANCEL_ALL)
            )
            self.remove(order, events)
        return events

    def expire(self, now):
        if self.now is None or now > self.now:
            self.now = now
        due = [
            o
            for o in self.live
            if o.tif == TimeInForce.GTT and o.expire_at is not None and o.expire_at <= now
        ]
        events = []
        for order in sorted(due, key=lambda o: (o.expire_at, o.sequence)):
            events.append(Expired(order.order_id, order.account, order.remaining))
            self.remove(order, events)
        return events

    def halt(self):
        self.halted = True
        return [Halted()]

    def resume(self):
        self.halted = False
        return [Resumed()]

    def amend(self, order_id, price=None, quantity=None):
        if self.halted:
            return [Rejected(order_id, None, Reason.MARKET_HALTED)]
        order = self.find(order_id)
        if order is None:
            return [Rejected(order_id, None, Reason.UNKNOWN_ORDER)]
        reason = None
        if not order.on_book:
            reason = Reason.NOT_AMENDABLE
        elif price is None and quantity is None:
            reason = Reason.NOTHING_TO_AMEND
        elif quantity is not None and (not _is_int(quantity) or quantity <= 0):
            reason = Reason.INVALID_QUANTITY
        elif quantity is not None and quantity % self.lot != 0:
            reason = Reason.QUANTITY_OFF_LOT
        elif price is not None and (not _is_int(price) or price <= 0):
            reason = Reason.INVALID_PRICE
        elif price is not None and price % self.tick != 0:
            reason = Reason.PRICE_OFF_TICK
        if reason is not None:
            return [Rejected(order_id, order.account, reason)]
        new_price = order.price if price is None else price
        new_quantity = order.remaining if quantity is None else quantity
        if new_price == order.price and new_quantity == order.remaining:
            return [Rejected(order_id, order.account, Reason.NOTHING_TO_AMEND)]
        if new_price == order.price and new_quantity < order.remaining:
            old_visible = order.visible
            order.remaining = new_quantity
            order.visible = min(order.visible, new_quantity)
            events = [
                Amended(
                    order_id,
                    order.account,
                    new_price,
                    new_quantity,
                    order.visible,
                    True,
                    order.sequence,
                )
            ]
            if order.visible != old_visible:
                events.append(
                    LevelChanged(order.side, order.price, self.level_total(order.side, order.price))
                )
            return events
        if order.post_only and self.would_take(order.side, new_price):
            return [Rejected(order_id, order.account, Reason.POST_ONLY_WOULD_TAKE)]
        sequence = self.next_sequence()
        visible = min(order.display or new_quantity, new_quantity)
        events = [
            Amended(order_id, order.account, new_price, new_quantity, visible, False, sequence)
        ]
        self.remove(order, events)
        order.sequence = sequence
        order.price = new_price
        order.remaining = new_quantity
        order.visible = visible
        traded = self.enter(order, events)
        self.cascade(traded, events)
        return events
