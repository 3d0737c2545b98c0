"""Self-trade prevention, amend, cancel, cancel-all, halt, restore and rejections, as tables."""

import pytest

from exchange.engine import (
    Amended,
    Decremented,
    Order,
    OrderBook,
    OrderType,
    Reason,
    SelfTradePrevention,
    Side,
    TimeInForce,
)
from tests.exchange.engine.scenarios import book_with, buy, market_buy, outcomes, sell, trades

STP = SelfTradePrevention

STP_SCENARIOS = [
    pytest.param(
        STP.EXPIRE_TAKER,
        [(1, 9, 100, 2)],
        [("cancelled", 9, 6, "SELF_TRADE")],
        [(100, 5), (101, 5), (102, 5)],
        id="expire-taker-cancels-the-incoming-order-and-keeps-mine",
    ),
    pytest.param(
        STP.EXPIRE_MAKER,
        [(1, 9, 100, 2), (3, 9, 101, 5), (4, 9, 102, 1)],
        [("cancelled", 2, 5, "SELF_TRADE")],
        [(102, 4)],
        id="expire-maker-cancels-my-resting-order-and-keeps-matching",
    ),
    pytest.param(
        STP.EXPIRE_BOTH,
        [(1, 9, 100, 2)],
        [("cancelled", 2, 5, "SELF_TRADE"), ("cancelled", 9, 6, "SELF_TRADE")],
        [(101, 5), (102, 5)],
        id="expire-both-cancels-both-orders",
    ),
    pytest.param(
        STP.DECREMENT,
        [(1, 9, 100, 2), (3, 9, 101, 1)],
        [("cancelled", 2, 5, "SELF_TRADE")],
        [(101, 4), (102, 5)],
        id="decrement-takes-the-smaller-size-off-both-and-cancels-the-emptied-one",
    ),
]


@pytest.mark.parametrize(("mode", "fills", "story", "asks"), STP_SCENARIOS)
def test_self_trade_prevention(mode, fills, story, asks):
    # Asks: 100 x2 (another trader), then my own 100 x5, then 101 x5 and 102 x5 (others).
    book = book_with(
        sell(1, "other", 100, 2),
        sell(2, "me", 100, 5),
        sell(3, "other", 101, 5),
        sell(4, "other", 102, 5),
    )
    events = book.submit(buy(9, "me", 102, 8, stp=mode))
    assert trades(events) == fills
    assert outcomes(events) == story
    assert book.depth(10) == ([], asks)


def test_decrement_reports_what_it_took_off_each_order():
    book = book_with(sell(1, "me", 100, 5), sell(2, "other", 100, 5))
    events = book.submit(buy(9, "me", 100, 7, stp=STP.DECREMENT))
    decrements = [e for e in events if isinstance(e, Decremented)]
    assert decrements == [Decremented(9, "me", 5, 2)]
    assert outcomes(events)[0] == ("cancelled", 1, 5, "SELF_TRADE")
    assert trades(events) == [(2, 9, 100, 2)]
    assert book.depth(5) == ([], [(100, 3)])


def test_decrement_against_a_larger_maker_keeps_the_maker():
    book = book_with(sell(1, "me", 100, 5))
    events = book.submit(buy(9, "me", 100, 3, stp=STP.DECREMENT))
    assert [e for e in events if isinstance(e, Decremented)] == [Decremented(1, "me", 3, 2)]
    assert outcomes(events) == [("cancelled", 9, 3, "SELF_TRADE")]
    assert book.depth(5) == ([], [(100, 2)])


@pytest.mark.parametrize(
    ("price", "quantity", "keeps_priority", "front"),
    [
        pytest.param(None, 3, True, 1, id="lowering-quantity-keeps-priority"),
        pytest.param(None, 8, False, 2, id="raising-quantity-loses-priority"),
        pytest.param(101, None, False, 2, id="moving-away-and-back-loses-priority"),
    ],
)
def test_amend_and_queue_priority(price, quantity, keeps_priority, front):
    book = book_with(buy(1, "a", 100, 5), buy(2, "b", 100, 5))
    events = book.amend(1, price=price, quantity=quantity)
    amended = events[0]
    assert isinstance(amended, Amended)
    assert amended.priority_kept is keeps_priority
    if price is not None:
        book.amend(1, price=100)
    assert book.level_orders(Side.BUY, 100)[0].order_id == front


def test_amend_to_a_crossing_price_trades():
    book = book_with(sell(1, "m", 101, 2), buy(2, "t", 100, 5))
    events = book.amend(2, price=101)
    assert trades(events) == [(1, 2, 101, 2)]
    assert outcomes(events) == [("rested", 2, 3)]
    assert book.depth(5) == ([(101, 3)], [])


def test_amend_lowering_an_iceberg_keeps_its_visible_slice_within_the_new_size():
    book = book_with(sell(1, "m", 101, 10, display_quantity=4))
    events = book.amend(1, quantity=3)
    assert events[0] == Amended(1, "m", 101, 3, 3, True, 1)
    assert book.depth(5) == ([], [(101, 3)])


def test_cancel_releases_the_remaining_quantity():
    book = book_with(sell(1, "m", 101, 5), buy(2, "t", 101, 2))
    assert outcomes(book.cancel(1)) == [("cancelled", 1, 3, "USER_REQUEST")]
    assert book.depth(5) == ([], [])
    assert outcomes(book.cancel(1)) == [("rejected", 1, "UNKNOWN_ORDER")]


def test_cancel_all_for_one_account_leaves_the_others():
    stop = Order(4, "a", Side.SELL, None, 1, OrderType.STOP_MARKET, stop_price=50)
    book = book_with(buy(1, "a", 100, 1), buy(2, "b", 100, 1), sell(3, "a", 105, 1), stop)
    events = book.cancel_all("a")
    assert [e.order_id for e in events if e.kind == "CANCELLED"] == [1, 3, 4]
    assert {e.reason for e in events if e.kind == "CANCELLED"} == {Reason.CANCEL_ALL}
    assert book.depth(5) == ([(100, 1)], [])
    assert len(book) == 1


def test_halt_rejects_new_orders_keeps_the_book_and_allows_cancels():
    book = book_with(buy(1, "a", 100, 1), buy(2, "a", 99, 1))
    book.halt()
    assert outcomes(book.submit(sell(3, "b", 100, 1))) == [("rejected", 3, "MARKET_HALTED")]
    assert outcomes(book.amend(1, quantity=1)) == [("rejected", 1, "MARKET_HALTED")]
    assert book.depth(5) == ([(100, 1), (99, 1)], [])
    assert outcomes(book.cancel(2)) == [("cancelled", 2, 1, "USER_REQUEST")]
    book.resume()
    assert trades(book.submit(sell(3, "b", 100, 1))) == [(1, 3, 100, 1)]


def test_events_carry_book_level_deltas_that_rebuild_the_depth():
    book = OrderBook()
    levels: dict[tuple, int] = {}
    commands = [
        lambda: book.submit(buy(1, "a", 100, 5)),
        lambda: book.submit(buy(2, "b", 100, 3)),
        lambda: book.submit(sell(3, "c", 101, 4, display_quantity=2)),
        lambda: book.submit(sell(4, "d", 99, 6)),
        lambda: book.amend(2, quantity=1),
        lambda: book.submit(buy(5, "e", 101, 3)),
        lambda: book.cancel(3),
    ]
    for command in commands:
        for event in command():
            if event.kind == "LEVEL":
                levels[(event.side, event.price)] = event.quantity
    bids = sorted(((p, q) for (s, p), q in levels.items() if s == "BUY" and q), reverse=True)
    asks = sorted((p, q) for (s, p), q in levels.items() if s == "SELL" and q)
    assert (bids, asks) == book.depth(10)


def test_sequence_stamps_time_priority_and_restore_continues_it():
    book = book_with(buy(1, "a", 100, 5), sell(2, "b", 105, 5))
    stop = Order(3, "c", Side.BUY, None, 1, OrderType.STOP_MARKET, stop_price=110)
    book.submit(stop)
    snapshot = [
        Order(
            o.order_id,
            o.account,
            o.side,
            o.price,
            o.remaining,
            o.order_type,
            o.time_in_force,
            stop_price=o.stop_price,
            sequence=o.sequence,
        )
        for o in book.orders()
    ]
    restored = OrderBook(sequence=book.sequence)
    restored.restore(snapshot, last_price=book.last_price)
    assert restored.depth(5) == book.depth(5)
    assert [o.order_id for o in restored.stop_orders()] == [3]
    accepted = restored.submit(buy(4, "d", 100, 1))[0]
    assert accepted.sequence == book.sequence + 1


def test_restore_rebuilds_queue_order_without_matching_or_events():
    book = OrderBook()
    result = book.restore(
        [buy(1, "a", 100, 2), buy(2, "b", 100, 3), sell(3, "c", 101, 1), buy(4, "d", 99, 1)]
    )
    assert result is None
    assert [o.order_id for o in book.level_orders(Side.BUY, 100)] == [1, 2]
    assert book.depth(5) == ([(100, 5), (99, 1)], [(101, 1)])


@pytest.mark.parametrize(
    "orders",
    [
        pytest.param([buy(1, "a", 101, 1), sell(2, "b", 100, 1)], id="crossed"),
        pytest.param([buy(1, "a", 101, 1), buy(1, "b", 100, 1)], id="duplicate-id"),
        pytest.param([market_buy(1, "a", 1)], id="market-order"),
        pytest.param([buy(1, "a", 0, 1)], id="invalid-price"),
    ],
)
def test_restore_refuses_state_that_cannot_be_a_book(orders):
    with pytest.raises(ValueError, match=r"."):
        OrderBook().restore(orders)


REJECTIONS = [
    pytest.param(buy(1, "x", 100, 0), "INVALID_QUANTITY", id="zero-quantity"),
    pytest.param(buy(1, "x", 100, -5), "INVALID_QUANTITY", id="negative-quantity"),
    pytest.param(buy(1, "x", 100, 2.5), "INVALID_QUANTITY", id="fractional-quantity"),
    pytest.param(buy(1, "x", 100, None), "INVALID_QUANTITY", id="missing-quantity"),
    pytest.param(buy(1, "x", 100, 3), "QUANTITY_OFF_LOT", id="quantity-off-lot"),
    pytest.param(buy(1, "x", 105, 2), "PRICE_OFF_TICK", id="price-off-tick"),
    pytest.param(buy(1, "x", 0, 2), "INVALID_PRICE", id="zero-price"),
    pytest.param(buy(1, "x", None, 2), "MISSING_PRICE", id="limit-without-price"),
    pytest.param(
        Order(1, "x", Side.BUY, 100, 2, OrderType.MARKET),
        "MARKET_ORDER_WITH_PRICE",
        id="market-order-with-a-price",
    ),
    pytest.param(
        Order(1, "x", Side.BUY, 100, 2, OrderType.STOP_LIMIT),
        "MISSING_STOP_PRICE",
        id="stop-order-without-stop-price",
    ),
    pytest.param(buy(1, "x", 100, 2, stop_price=90), "STOP_PRICE_NOT_ALLOWED", id="limit-stop"),
    pytest.param(
        Order(1, "x", Side.BUY, 100, 2, OrderType.STOP_LIMIT, stop_price=95),
        "PRICE_OFF_TICK",
        id="stop-price-off-tick",
    ),
    pytest.param(Order(1, "x", "UP", 100, 2), "INVALID_SIDE", id="unknown-side"),
    pytest.param(Order(1, "x", Side.BUY, 100, 2, "ICEBERG"), "INVALID_ORDER_TYPE", id="type"),
    pytest.param(buy(1, "x", 100, 2, time_in_force="DAY"), "INVALID_TIME_IN_FORCE", id="tif"),
    pytest.param(
        Order(1, "x", Side.BUY, None, 2, OrderType.MARKET, TimeInForce.GTC),
        "INVALID_TIME_IN_FORCE",
        id="market-gtc",
    ),
    pytest.param(buy(1, "x", 100, 2, stp="NONE"), "INVALID_STP_MODE", id="stp-mode"),
    pytest.param(
        buy(1, "x", 100, 2, time_in_force=TimeInForce.GTT),
        "MISSING_EXPIRE_TIME",
        id="gtt-without-expiry",
    ),
    pytest.param(buy(1, "x", 100, 2, expire_at=5), "EXPIRE_TIME_NOT_ALLOWED", id="gtc-expiry"),
    pytest.param(
        buy(1, "x", 100, 4, display_quantity=6), "INVALID_DISPLAY_QUANTITY", id="display-gt-qty"
    ),
    pytest.param(
        market_buy(1, "x", 2, display_quantity=2), "INVALID_DISPLAY_QUANTITY", id="market-ice"
    ),
    pytest.param(
        buy(1, "x", 100, 2, post_only=True, time_in_force=TimeInForce.IOC),
        "POST_ONLY_NOT_ALLOWED",
        id="post-only-ioc",
    ),
    pytest.param(
        Order(1, "x", Side.SELL, None, None, OrderType.MARKET, quote_amount=100),
        "QUOTE_AMOUNT_NOT_ALLOWED",
        id="quote-amount-on-a-sell",
    ),
    pytest.param(
        market_buy(1, "x", 2, quote_amount=100),
        "QUOTE_AMOUNT_NOT_ALLOWED",
        id="quote-amount-and-quantity",
    ),
    pytest.param(market_buy(1, "x", quote_amount=-1), "INVALID_QUOTE_AMOUNT", id="bad-quote"),
    pytest.param(buy(7, "x", 100, 2), "DUPLICATE_ORDER_ID", id="duplicate-order-id"),
]


@pytest.mark.parametrize(("order", "reason"), REJECTIONS)
def test_bad_orders_are_rejected_not_raised(order, reason):
    book = book_with(buy(7, "y", 90, 2), tick_size=10, lot_size=2)
    before = book.depth(5)
    assert outcomes(book.submit(order)) == [("rejected", order.order_id, reason)]
    assert book.depth(5) == before


@pytest.mark.parametrize(
    ("order_id", "changes", "reason"),
    [
        pytest.param(99, {"quantity": 2}, "UNKNOWN_ORDER", id="unknown-order"),
        pytest.param(7, {}, "NOTHING_TO_AMEND", id="no-change-asked"),
        pytest.param(7, {"quantity": 4, "price": 90}, "NOTHING_TO_AMEND", id="same-values"),
        pytest.param(7, {"quantity": 0}, "INVALID_QUANTITY", id="zero-quantity"),
        pytest.param(7, {"quantity": 3}, "QUANTITY_OFF_LOT", id="quantity-off-lot"),
        pytest.param(7, {"price": 95}, "PRICE_OFF_TICK", id="price-off-tick"),
        pytest.param(7, {"price": -10}, "INVALID_PRICE", id="negative-price"),
        pytest.param(8, {"quantity": 2}, "NOT_AMENDABLE", id="untriggered-stop"),
        pytest.param(6, {"price": 90}, "POST_ONLY_WOULD_TAKE", id="post-only-to-crossing"),
    ],
)
def test_bad_amends_are_rejected(order_id, changes, reason):
    book = book_with(
        buy(7, "y", 90, 4),
        sell(6, "z", 100, 2, post_only=True),
        Order(8, "y", Side.SELL, None, 2, OrderType.STOP_MARKET, stop_price=50),
        tick_size=10,
        lot_size=2,
    )
    assert outcomes(book.amend(order_id, **changes)) == [("rejected", order_id, reason)]
