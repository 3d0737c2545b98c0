"""Scenario tables for every order type and flag: resting orders, one command, then the trades,
the order outcomes and the book that must follow."""

import pytest

from exchange.engine import Order, OrderBook, OrderType, Side, TimeInForce
from tests.exchange.engine.scenarios import (
    book_with,
    buy,
    fok,
    ioc,
    market_buy,
    market_sell,
    outcomes,
    sell,
    trades,
)


def stop(
    order_id, account, side, stop_price, quantity, price=None, kind=OrderType.STOP_LIMIT, **kw
):
    return Order(order_id, account, side, price, quantity, kind, stop_price=stop_price, **kw)


LIMIT_SCENARIOS = [
    pytest.param(
        [sell(1, "m", 101, 5)],
        buy(9, "t", 100, 5),
        [],
        [("rested", 9, 5)],
        ([(100, 5)], [(101, 5)]),
        id="gtc-limit-that-does-not-cross-rests",
    ),
    pytest.param(
        [sell(1, "m", 101, 5), sell(2, "m", 102, 5), sell(3, "m", 104, 5)],
        buy(9, "t", 102, 12),
        [(1, 9, 101, 5), (2, 9, 102, 5)],
        [("rested", 9, 2)],
        ([(102, 2)], [(104, 5)]),
        id="gtc-limit-sweeps-levels-up-to-its-price-then-rests-the-rest",
    ),
    pytest.param(
        [buy(1, "m", 99, 3), buy(2, "m", 98, 3)],
        sell(9, "t", 90, 4),
        [(1, 9, 99, 3), (2, 9, 98, 1)],
        [],
        ([(98, 2)], []),
        id="trades-print-at-the-makers-price",
    ),
    pytest.param(
        [sell(1, "a", 101, 2), sell(2, "b", 101, 2), sell(3, "c", 101, 2)],
        buy(9, "t", 101, 5),
        [(1, 9, 101, 2), (2, 9, 101, 2), (3, 9, 101, 1)],
        [],
        ([], [(101, 1)]),
        id="fifo-within-a-level",
    ),
    pytest.param(
        [sell(1, "m", 101, 3), sell(2, "m", 103, 3)],
        ioc(buy(9, "t", 102, 5)),
        [(1, 9, 101, 3)],
        [("cancelled", 9, 2, "IOC_UNFILLED")],
        ([], [(103, 3)]),
        id="ioc-fills-what-it-can-and-cancels-the-rest",
    ),
    pytest.param(
        [sell(1, "m", 101, 3)],
        ioc(buy(9, "t", 100, 5)),
        [],
        [("cancelled", 9, 5, "IOC_UNFILLED")],
        ([], [(101, 3)]),
        id="ioc-that-cannot-trade-never-rests",
    ),
    pytest.param(
        [sell(1, "m", 101, 3), sell(2, "m", 102, 3)],
        fok(buy(9, "t", 102, 6)),
        [(1, 9, 101, 3), (2, 9, 102, 3)],
        [],
        ([], []),
        id="fok-fills-completely-when-it-can",
    ),
    pytest.param(
        [sell(1, "m", 101, 3), sell(2, "m", 103, 3)],
        fok(buy(9, "t", 102, 6)),
        [],
        [("cancelled", 9, 6, "FOK_NOT_FILLABLE")],
        ([], [(101, 3), (103, 3)]),
        id="fok-that-cannot-fill-completely-does-nothing",
    ),
    pytest.param(
        [sell(1, "m", 101, 10, display_quantity=2)],
        fok(buy(9, "t", 101, 9)),
        [(1, 9, 101, 2)] * 4 + [(1, 9, 101, 1)],
        [],
        ([], [(101, 1)]),
        id="fok-counts-an-icebergs-hidden-reserve",
    ),
    pytest.param(
        [sell(1, "me", 101, 3), sell(2, "m", 101, 3)],
        fok(buy(9, "me", 101, 3)),
        [],
        [("cancelled", 9, 3, "FOK_NOT_FILLABLE")],
        ([], [(101, 6)]),
        id="fok-that-would-meet-its-own-order-first-does-nothing",
    ),
]


@pytest.mark.parametrize(("resting", "incoming", "fills", "story", "depth"), LIMIT_SCENARIOS)
def test_limit_orders(resting, incoming, fills, story, depth):
    book = book_with(*resting)
    events = book.submit(incoming)
    assert trades(events) == fills
    assert outcomes(events) == story
    assert book.depth(10) == depth


MARKET_SCENARIOS = [
    pytest.param(
        [sell(1, "m", 100, 2), sell(2, "m", 101, 2)],
        market_buy(9, "t", 3),
        {},
        [(1, 9, 100, 2), (2, 9, 101, 1)],
        [],
        ([], [(101, 1)]),
        id="market-buy-sweeps-the-book",
    ),
    pytest.param(
        [buy(1, "m", 100, 2)],
        market_buy(9, "t", 3),
        {},
        [],
        [("cancelled", 9, 3, "NO_LIQUIDITY")],
        ([(100, 2)], []),
        id="market-order-into-an-empty-side-is-cancelled",
    ),
    pytest.param(
        [buy(1, "m", 100, 2)],
        market_sell(9, "t", 5),
        {},
        [(1, 9, 100, 2)],
        [("cancelled", 9, 3, "NO_LIQUIDITY")],
        ([], []),
        id="market-order-that-exhausts-the-book-cancels-the-rest",
    ),
    pytest.param(
        [sell(1, "m", 1000, 2), sell(2, "m", 1010, 2), sell(3, "m", 1011, 2)],
        market_buy(9, "t", 6),
        {"price_band_bps": 100},
        [(1, 9, 1000, 2), (2, 9, 1010, 2)],
        [("cancelled", 9, 2, "PRICE_BAND")],
        ([], [(1011, 2)]),
        id="market-order-stops-at-the-protection-band",
    ),
    pytest.param(
        [buy(1, "m", 1000, 2), buy(2, "m", 990, 2), buy(3, "m", 989, 2)],
        market_sell(9, "t", 6),
        {"price_band_bps": 100},
        [(1, 9, 1000, 2), (2, 9, 990, 2)],
        [("cancelled", 9, 2, "PRICE_BAND")],
        ([(989, 2)], []),
        id="market-sell-stops-at-the-protection-band-below-the-best-bid",
    ),
    pytest.param(
        [sell(1, "m", 100, 3), sell(2, "m", 110, 10)],
        market_buy(9, "t", quote_amount=650),
        {"price_band_bps": None},
        [(1, 9, 100, 3), (2, 9, 110, 3)],
        [("cancelled", 9, 20, "QUOTE_EXHAUSTED")],
        ([], [(110, 7)]),
        id="market-buy-by-quote-amount-spends-the-budget-not-a-cent-more",
    ),
    pytest.param(
        [sell(1, "m", 100, 3)],
        market_buy(9, "t", quote_amount=300),
        {},
        [(1, 9, 100, 3)],
        [],
        ([], []),
        id="market-buy-by-quote-amount-spent-exactly-is-filled",
    ),
]


@pytest.mark.parametrize(
    ("resting", "incoming", "options", "fills", "story", "depth"), MARKET_SCENARIOS
)
def test_market_orders(resting, incoming, options, fills, story, depth):
    book = book_with(*resting, **options)
    events = book.submit(incoming)
    assert trades(events) == fills
    assert outcomes(events) == story
    assert book.depth(10) == depth


def test_quote_amount_trades_report_the_unspent_budget_as_taker_remaining():
    book = book_with(sell(1, "m", 100, 3))
    events = book.submit(market_buy(9, "t", quote_amount=450))
    trade = next(e for e in events if e.kind == "TRADE")
    assert (trade.quantity, trade.taker_remaining) == (3, 150)
    assert outcomes(events) == [("cancelled", 9, 150, "NO_LIQUIDITY")]


POST_ONLY_AND_ICEBERG_SCENARIOS = [
    pytest.param(
        [sell(1, "m", 101, 5)],
        buy(9, "t", 101, 5, post_only=True),
        [],
        [("rejected", 9, "POST_ONLY_WOULD_TAKE")],
        ([], [(101, 5)]),
        id="post-only-that-would-take-is-rejected",
    ),
    pytest.param(
        [sell(1, "m", 101, 5)],
        buy(9, "t", 100, 5, post_only=True),
        [],
        [("rested", 9, 5)],
        ([(100, 5)], [(101, 5)]),
        id="post-only-that-does-not-cross-rests",
    ),
    pytest.param(
        [],
        sell(9, "t", 101, 10, display_quantity=3),
        [],
        [("rested", 9, 10)],
        ([], [(101, 3)]),
        id="iceberg-shows-only-its-display-quantity",
    ),
    pytest.param(
        [sell(1, "ice", 101, 6, display_quantity=2), sell(2, "b", 101, 2)],
        buy(9, "t", 101, 5),
        [(1, 9, 101, 2), (2, 9, 101, 2), (1, 9, 101, 1)],
        [],
        ([], [(101, 1)]),
        id="iceberg-refill-goes-to-the-back-of-its-level",
    ),
    pytest.param(
        [sell(1, "ice", 101, 5, display_quantity=2)],
        buy(9, "t", 102, 7),
        [(1, 9, 101, 2), (1, 9, 101, 2), (1, 9, 101, 1)],
        [("rested", 9, 2)],
        ([(102, 2)], []),
        id="iceberg-is-consumed-slice-by-slice-down-to-its-last-lot",
    ),
]


@pytest.mark.parametrize(
    ("resting", "incoming", "fills", "story", "depth"), POST_ONLY_AND_ICEBERG_SCENARIOS
)
def test_post_only_and_iceberg_orders(resting, incoming, fills, story, depth):
    book = book_with(*resting)
    events = book.submit(incoming)
    assert trades(events) == fills
    assert outcomes(events) == story
    assert book.depth(10) == depth


def test_iceberg_refill_takes_a_new_time_priority_stamp():
    book = book_with(sell(1, "ice", 101, 4, display_quantity=2), sell(2, "b", 101, 2))
    events = book.submit(buy(9, "t", 101, 2))
    refill = next(e for e in events if e.kind == "REFILLED")
    assert (refill.order_id, refill.visible) == (1, 2)
    assert refill.sequence > book.get(2).sequence
    assert [o.order_id for o in book.level_orders(Side.SELL, 101)] == [2, 1]


STOP_SCENARIOS = [
    pytest.param(
        [buy(1, "m", 100, 5), buy(2, "m", 95, 5), stop(3, "s", Side.SELL, 100, 4, price=94)],
        sell(9, "t", 100, 1),
        [(1, 9, 100, 1), (1, 3, 100, 4)],
        [("triggered", 3)],
        ([(95, 5)], []),
        id="stop-limit-sell-fires-on-a-trade-at-its-stop-and-trades",
    ),
    pytest.param(
        [buy(1, "m", 100, 5), stop(3, "s", Side.SELL, 99, 4, price=94)],
        sell(9, "t", 100, 1),
        [(1, 9, 100, 1)],
        [],
        ([(100, 4)], []),
        id="stop-sell-above-the-trade-price-stays-untriggered-and-invisible",
    ),
    pytest.param(
        [
            sell(1, "m", 100, 1),
            sell(2, "m", 105, 5),
            stop(3, "s", Side.BUY, 100, 2, kind=OrderType.STOP_MARKET),
        ],
        buy(9, "t", 100, 1),
        [(1, 9, 100, 1), (2, 3, 105, 2)],
        [("triggered", 3)],
        ([], [(105, 3)]),
        id="stop-market-buy-fires-on-a-trade-at-or-above-its-stop",
    ),
    pytest.param(
        [
            buy(1, "m", 110, 1),
            buy(2, "m", 108, 5),
            stop(3, "s", Side.SELL, 110, 2, kind=OrderType.TAKE_PROFIT_MARKET),
        ],
        sell(9, "t", 110, 1),
        [(1, 9, 110, 1), (2, 3, 108, 2)],
        [("triggered", 3)],
        ([(108, 3)], []),
        id="take-profit-sell-fires-on-a-trade-at-or-above-its-stop",
    ),
    pytest.param(
        [
            buy(1, "m", 90, 1),
            sell(2, "m", 91, 5),
            stop(3, "s", Side.BUY, 90, 2, price=91, kind=OrderType.TAKE_PROFIT_LIMIT),
        ],
        sell(9, "t", 90, 1),
        [(1, 9, 90, 1), (2, 3, 91, 2)],
        [("triggered", 3)],
        ([], [(91, 3)]),
        id="take-profit-buy-fires-on-a-trade-at-or-below-its-stop",
    ),
    pytest.param(
        [
            buy(1, "m", 100, 1),
            buy(2, "m", 99, 10),
            stop(3, "s2", Side.SELL, 100, 2, kind=OrderType.STOP_MARKET),
            stop(4, "s1", Side.SELL, 101, 3, kind=OrderType.STOP_MARKET),
        ],
        sell(9, "t", 100, 1),
        [(1, 9, 100, 1), (2, 3, 99, 2), (2, 4, 99, 3)],
        [("triggered", 3), ("triggered", 4)],
        ([(99, 5)], []),
        id="stops-fired-by-the-same-trade-enter-in-acceptance-order",
    ),
    pytest.param(
        [
            buy(1, "m", 100, 1),
            buy(2, "m", 98, 1),
            buy(3, "m", 97, 5),
            stop(4, "s", Side.SELL, 100, 1, kind=OrderType.STOP_MARKET),
            stop(5, "s", Side.SELL, 98, 2, kind=OrderType.STOP_MARKET),
        ],
        sell(9, "t", 100, 1),
        [(1, 9, 100, 1), (2, 4, 98, 1), (3, 5, 97, 2)],
        [("triggered", 4), ("triggered", 5)],
        ([(97, 3)], []),
        id="cascade-a-fired-stops-trades-fire-further-stops",
    ),
]


@pytest.mark.parametrize(("resting", "incoming", "fills", "story", "depth"), STOP_SCENARIOS)
def test_stop_and_take_profit_orders(resting, incoming, fills, story, depth):
    book = book_with(*resting)
    events = book.submit(incoming)
    assert trades(events) == fills
    assert outcomes(events) == story
    assert book.depth(10) == depth


def test_untriggered_stop_is_listed_apart_from_the_book():
    book = book_with(buy(1, "m", 100, 5), stop(2, "s", Side.SELL, 90, 4, price=89))
    assert book.depth(10) == ([(100, 5)], [])
    assert [o.order_id for o in book.stop_orders()] == [2]


def test_stop_whose_condition_already_holds_fires_on_arrival():
    book = book_with(sell(1, "m", 100, 1), buy(2, "n", 100, 1), sell(3, "m", 101, 5))
    assert book.last_price == 100
    events = book.submit(stop(4, "s", Side.BUY, 99, 2, kind=OrderType.STOP_MARKET))
    assert outcomes(events) == [("triggered", 4)]
    assert trades(events) == [(3, 4, 101, 2)]


def test_gtt_order_expires_at_the_time_the_caller_passes():
    book = OrderBook()
    book.submit(buy(1, "m", 100, 5, time_in_force=TimeInForce.GTT, expire_at=1_000))
    book.submit(buy(2, "m", 100, 5))
    assert book.expire(999) == []
    events = book.expire(1_000)
    assert outcomes(events) == [("expired", 1, 5)]
    assert book.depth(5) == ([(100, 5)], [])


def test_gtt_order_arriving_already_expired_is_rejected():
    book = OrderBook()
    book.expire(500)
    events = book.submit(buy(1, "m", 100, 5, time_in_force=TimeInForce.GTT, expire_at=500))
    assert outcomes(events) == [("rejected", 1, "ALREADY_EXPIRED")]


def test_untriggered_gtt_stop_expires_too():
    book = OrderBook()
    gtt_stop = stop(1, "s", Side.SELL, 90, 4, price=89, time_in_force=TimeInForce.GTT, expire_at=10)
    book.submit(gtt_stop)
    assert outcomes(book.expire(10)) == [("expired", 1, 4)]
    assert book.stop_orders() == []
