"""The engine leaves no reference cycles behind, so a matcher can keep the cycle collector off
its (large, long-lived) book: see exchange/engine/README.md, "Garbage collector"."""

import gc
import random

from exchange.engine import Order, OrderBook, OrderType, SelfTradePrevention, Side, TimeInForce
from exchange.engine.book import _Level


def busy_book(seed: int = 7) -> OrderBook:
    rng = random.Random(seed)
    book = OrderBook(price_band_bps=300)
    for order_id in range(1, 3_000):
        roll = rng.random()
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        if roll < 0.25 and len(book):
            book.cancel(rng.choice(book.orders()).order_id)
        elif roll < 0.30 and len(book):
            victim = rng.choice(book.orders())
            book.amend(victim.order_id, price=rng.randint(95, 105))
        elif roll < 0.35:
            book.submit(
                Order(order_id, rng.randint(1, 5), side, None, rng.randint(1, 20), "MARKET")
            )
        elif roll < 0.40:
            kind = rng.choice([OrderType.STOP_LIMIT, OrderType.TAKE_PROFIT_MARKET])
            price = rng.randint(95, 105) if kind == OrderType.STOP_LIMIT else None
            book.submit(Order(order_id, 1, side, price, 5, kind, stop_price=rng.randint(95, 105)))
        elif roll < 0.42:
            book.expire(order_id)
        else:
            book.submit(
                Order(
                    order_id,
                    rng.randint(1, 5),
                    side,
                    rng.randint(95, 105),
                    rng.randint(1, 20),
                    time_in_force=rng.choice([None, TimeInForce.IOC, TimeInForce.GTT]),
                    expire_at=order_id + 50,
                    display_quantity=rng.choice([None, None, 2]),
                    stp=rng.choice(list(SelfTradePrevention)),
                )
                if rng.random() < 0.3
                else Order(order_id, rng.randint(1, 5), side, rng.randint(95, 105), 5)
            )
    return book


def test_commands_leave_no_cyclic_garbage():
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        book = busy_book()
        book.cancel_all(3)
        gc.collect()
        leaked = [o for o in gc.garbage if isinstance(o, Order | _Level | OrderBook)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert len(book) > 0
    assert leaked == []
