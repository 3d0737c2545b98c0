"""Long random command sequences: the engine must agree with the reference model on every event
and every book, and keep its invariants after every step."""

import dataclasses
import os

import hypothesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from exchange.engine import (
    Amended,
    Cancelled,
    Decremented,
    Expired,
    LevelChanged,
    Order,
    OrderBook,
    OrderType,
    Rejected,
    SelfTradePrevention,
    Side,
    TimeInForce,
    Trade,
)
from tests.exchange.engine.reference import ReferenceBook, Spec

TICK = 2
LOT = 2
ACCOUNTS = (1, 2, 3)
ORDER_TYPES = list(OrderType)
STP_MODES = list(SelfTradePrevention)


@st.composite
def order_specs(draw, order_id: int, now: int) -> Spec:
    otype = draw(st.sampled_from(ORDER_TYPES * 3 + [OrderType.LIMIT] * 12 + ["ICEBERG_PLEASE"]))
    is_market = otype in (
        OrderType.MARKET,
        OrderType.STOP_MARKET,
        OrderType.TAKE_PROFIT_MARKET,
    )
    side = draw(st.sampled_from([Side.BUY, Side.SELL] * 20 + ["SIDEWAYS"]))
    ticks = st.integers(45, 55).map(lambda k: k * TICK)
    price = None if is_market else draw(ticks)
    quantity = draw(st.integers(1, 8).map(lambda k: k * LOT))
    quote_amount = None
    if is_market and side == Side.BUY and draw(st.booleans()):
        quantity = None
        quote_amount = draw(st.integers(50, 1500))
    tif = None
    expire_at = None
    if not is_market:
        tif = draw(st.sampled_from([None, None, TimeInForce.GTC, TimeInForce.GTT, *TimeInForce]))
        if tif == TimeInForce.GTT:
            expire_at = now + draw(st.integers(0, 12))
    stop_price = (
        draw(ticks)
        if otype
        in (
            OrderType.STOP_LIMIT,
            OrderType.STOP_MARKET,
            OrderType.TAKE_PROFIT_LIMIT,
            OrderType.TAKE_PROFIT_MARKET,
        )
        else None
    )
    display = None
    if not is_market and quantity is not None and quantity > LOT and draw(st.integers(0, 4)) == 0:
        display = draw(st.integers(1, quantity // LOT - 1).map(lambda k: k * LOT))
    post_only = otype == OrderType.LIMIT and draw(st.integers(0, 6)) == 0
    spec = Spec(
        order_id=order_id,
        account=draw(st.sampled_from(ACCOUNTS)),
        side=side,
        price=price,
        quantity=quantity,
        order_type=otype,
        time_in_force=tif,
        post_only=post_only,
        display_quantity=display,
        stop_price=stop_price,
        expire_at=expire_at,
        stp=draw(st.sampled_from(STP_MODES)),
        quote_amount=quote_amount,
    )
    # Now and then break exactly one thing, to exercise every rejection path.
    fault = draw(st.integers(0, 99))
    faults = {
        1: {"price": 101},
        2: {"quantity": 0},
        3: {"quantity": 3},
        4: {"price": 100 if is_market else None},
        5: {"stop_price": None},
        6: {"stop_price": 100},
        7: {"expire_at": now + 5},
        8: {"display_quantity": (quantity or 2) + 2},
        9: {"stp": "NOPE"},
        10: {"time_in_force": "DAY"},
        11: {"quote_amount": 100},
        12: {"price": -2},
        13: {"post_only": True},
        14: {"expire_at": now - 1, "time_in_force": TimeInForce.GTT},
        15: {"expire_at": None, "time_in_force": TimeInForce.GTT},
        16: {"quote_amount": 0, "quantity": None},
    }
    if fault in faults:
        spec = dataclasses.replace(spec, **faults[fault])
    return spec


def to_order(spec: Spec) -> Order:
    return Order(
        spec.order_id,
        spec.account,
        spec.side,
        spec.price,
        spec.quantity,
        spec.order_type,
        spec.time_in_force,
        post_only=spec.post_only,
        display_quantity=spec.display_quantity,
        stop_price=spec.stop_price,
        expire_at=spec.expire_at,
        stp=spec.stp,
        quote_amount=spec.quote_amount,
    )


class BookAgainstReference(RuleBasedStateMachine):
    @initialize(band=st.sampled_from([None, 0, 200, 300, 500, 10_000]))
    def start(self, band: int | None) -> None:
        self.book = OrderBook(tick_size=TICK, lot_size=LOT, price_band_bps=band)
        self.ref = ReferenceBook(tick_size=TICK, lot_size=LOT, price_band_bps=band)
        self.next_id = 1
        self.now = 0
        self.band = band
        # Per order: (quantity, filled, prevented) to prove nothing fills beyond its size.
        self.ledger: dict[int, list[int]] = {}
        # The book as a subscriber would rebuild it from LEVEL events alone.
        self.published: dict[tuple[Side, int], int] = {}

    def apply(self, engine_events: list, reference_events: list) -> None:
        assert engine_events == reference_events
        for event in engine_events:
            self.account_for(event)
            if isinstance(event, LevelChanged):
                self.published[(event.side, event.price)] = event.quantity
            # Shown by --hypothesis-show-statistics: proves the runs reach every event kind.
            hypothesis.event(str(event.kind), getattr(event, "reason", ""))

    def account_for(self, event) -> None:
        ledger = self.ledger
        if isinstance(event, Trade):
            for order_id, remaining in (
                (event.maker_order_id, event.maker_remaining),
                (event.taker_order_id, event.taker_remaining),
            ):
                if order_id in ledger:
                    entry = ledger[order_id]
                    entry[1] += event.quantity
                    assert entry[1] + entry[2] + remaining == entry[0]
                    if not remaining:
                        del ledger[order_id]
        elif isinstance(event, Decremented) and event.order_id in ledger:
            entry = ledger[event.order_id]
            entry[2] += event.quantity
            assert entry[1] + entry[2] + event.remaining == entry[0]
        elif isinstance(event, Amended) and event.order_id in ledger:
            entry = ledger[event.order_id]
            entry[0] = entry[1] + entry[2] + event.remaining
        elif isinstance(event, Cancelled | Expired) and event.order_id in ledger:
            entry = ledger[event.order_id]
            assert entry[1] + entry[2] + event.remaining == entry[0]
            del ledger[event.order_id]

    @rule(data=st.data(), fresh=st.integers(0, 9))
    def submit(self, data, fresh: int) -> None:
        if fresh == 0 and self.next_id > 1:
            order_id = data.draw(st.integers(1, self.next_id - 1))
        else:
            order_id = self.next_id
            self.next_id += 1
        spec = data.draw(order_specs(order_id, self.now))
        engine_events = self.book.submit(to_order(spec))
        reference_events = self.ref.submit(spec)
        if not isinstance(engine_events[0], Rejected):
            if spec.quantity is None:
                self.ledger.pop(order_id, None)
            else:
                self.ledger[order_id] = [spec.quantity, 0, 0]
        self.apply(engine_events, reference_events)

    @rule(data=st.data())
    def cancel(self, data) -> None:
        order_id = self.pick_id(data)
        self.apply(self.book.cancel(order_id), self.ref.cancel(order_id))

    @rule(
        data=st.data(),
        price=st.one_of(st.none(), st.integers(44, 56).map(lambda k: k * TICK), st.just(97)),
        quantity=st.one_of(st.none(), st.integers(0, 10).map(lambda k: k * LOT), st.just(3)),
    )
    def amend(self, data, price, quantity) -> None:
        order_id = self.pick_id(data)
        engine_events = self.book.amend(order_id, price=price, quantity=quantity)
        reference_events = self.ref.amend(order_id, price=price, quantity=quantity)
        self.apply(engine_events, reference_events)

    @rule(account=st.sampled_from([None, *ACCOUNTS]))
    def cancel_all(self, account) -> None:
        self.apply(self.book.cancel_all(account), self.ref.cancel_all(account))

    @rule(step=st.integers(0, 4))
    def expire(self, step: int) -> None:
        self.now += step
        self.apply(self.book.expire(self.now), self.ref.expire(self.now))

    @rule(halt=st.integers(0, 5))
    def halt_or_resume(self, halt: int) -> None:
        if halt == 0:
            self.apply(self.book.halt(), self.ref.halt())
        else:
            self.apply(self.book.resume(), self.ref.resume())

    @precondition(
        lambda self: all(
            o.display_quantity is None or o.visible == min(o.display_quantity, o.remaining)
            for o in self.book.orders()
        )
    )
    @rule()
    def restart_from_snapshot(self) -> None:
        """What the matcher does after a crash: a new book from the persisted open orders."""
        old = self.book
        snapshot = [
            Order(
                o.order_id,
                o.account,
                o.side,
                o.price,
                None if o.quote_amount is not None else o.remaining,
                o.order_type,
                o.time_in_force,
                post_only=o.post_only,
                display_quantity=o.display_quantity,
                stop_price=o.stop_price,
                expire_at=o.expire_at,
                stp=o.stp,
                quote_amount=o.remaining if o.quote_amount is not None else None,
                sequence=o.sequence,
                triggered=o.triggered,
            )
            for o in old.orders()
        ]
        new = OrderBook(
            tick_size=TICK, lot_size=LOT, price_band_bps=self.band, sequence=old.sequence
        )
        new.restore(snapshot, last_price=old.last_price, now=old.now)
        new.halted = old.halted
        assert new.depth(100) == old.depth(100)
        assert [o.order_id for o in new.orders()] == [o.order_id for o in old.orders()]
        self.book = new

    # Hypothesis picks rules uniformly; more submit rules make sequences build real books.
    @rule(data=st.data(), fresh=st.integers(1, 9))
    def submit_another(self, data, fresh: int) -> None:
        self.submit(data, fresh)

    @rule(data=st.data(), fresh=st.integers(1, 9))
    def submit_yet_another(self, data, fresh: int) -> None:
        self.submit(data, fresh)

    def pick_id(self, data) -> int:
        live = [o.order_id for o in self.book.orders()]
        if live and data.draw(st.integers(0, 5)):
            return data.draw(st.sampled_from(live))
        return data.draw(st.integers(0, self.next_id))

    @invariant()
    def same_book_as_reference(self) -> None:
        assert self.book.depth(1000) == self.ref.depth(1000)
        assert self.book.depth(2) == self.ref.depth(2)
        assert [(o.order_id, o.remaining, o.sequence) for o in self.book.stop_orders()] == [
            (o.order_id, o.remaining, o.sequence) for o in self.ref.stops()
        ]
        assert self.book.last_price == self.ref.last_price
        assert len(self.book) == len(self.ref.live)

    @invariant()
    def level_events_rebuild_the_book(self) -> None:
        published = self.published
        bids = sorted(((p, q) for (s, p), q in published.items() if s == "BUY" and q), reverse=True)
        asks = sorted((p, q) for (s, p), q in published.items() if s == "SELL" and q)
        assert (bids, asks) == self.book.depth(10_000)

    @invariant()
    def book_is_sound(self) -> None:
        book = self.book
        bids, asks = book.depth(10_000)
        if bids and asks:
            assert bids[0][0] < asks[0][0], "crossed book"
        assert [p for p, _ in bids] == sorted((p for p, _ in bids), reverse=True)
        assert [p for p, _ in asks] == sorted(p for p, _ in asks)
        resting = 0
        for side, levels in ((Side.BUY, bids), (Side.SELL, asks)):
            for price, total in levels:
                queue = book.level_orders(side, price)
                assert queue, "empty level kept"
                stamps = [o.sequence for o in queue]
                assert stamps == sorted(stamps), "not FIFO"
                assert len(set(stamps)) == len(stamps), "shared time-priority stamp"
                assert total == sum(o.visible for o in queue), "depth != visible sum"
                for o in queue:
                    assert 0 < o.visible <= o.remaining
                    assert o.price == price
                    assert o.side == side
                    if o.display_quantity is not None:
                        assert o.visible <= o.display_quantity
                resting += len(queue)
        assert resting + len(book.stop_orders()) == len(book)


# Sized for CI on two cores; ENGINE_HYPOTHESIS=deep runs far longer sequences for local soaks.
_DEEP = os.environ.get("ENGINE_HYPOTHESIS") == "deep"
BookAgainstReference.TestCase.settings = settings(
    max_examples=2_000 if _DEEP else 400,
    stateful_step_count=200 if _DEEP else 100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
test_book_matches_reference_model = BookAgainstReference.TestCase
