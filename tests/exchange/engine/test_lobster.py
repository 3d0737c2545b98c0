"""Replay of real NASDAQ data (LOBSTER sample, AAPL 2012-06-21, first 998 events).

The book is seeded from orderbook row 1 (one synthetic order per level), then messages apply
from row 2 on: 1 = new limit order, 2 = partial cancel (amend down, which keeps priority),
3 = delete (cancel), 4 = execution of a visible order (an IOC order from the opposite side),
5/6 = hidden and cross executions (the visible book does not change), 7 = halt.  Prices are
dollars x 10000, so the book runs with tick_size=100 (one cent).

Orders that rested before the window starts have ids the messages never introduced; they live
inside the seeded synthetic order at their price, so an execution or cancel of an unknown id
is applied to the synthetic order at that price (it was first in the queue, being older than
every order that arrived in the window).

The file only shows the top 10 levels.  When a price level enters the window from beyond it,
the file may show a level we never saw, or a level whose size changed while it was out of
view (its events were not reported).  Such levels, and only those, are reconciled to the file
(``reconciled`` counts them); levels that were inside the window stay untouched and levels
1-9 must equal the file after every message.
"""

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from exchange.engine import Order, OrderBook, Side, TimeInForce

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "lobster"
STEM = "AAPL_2012-06-21_34200000_57600000"
TAKER = "incoming"

# The sample ships beside the repository (../shared/data/lobster), in CI too: a missing
# file is a broken checkout, and the replay fails rather than skips.

Levels = list[tuple[int, int]]


@dataclass(frozen=True)
class Message:
    row: int
    kind: int
    order_id: int
    size: int
    price: int
    side: Side  # the side of the resting order


def load() -> tuple[list[Message], list[tuple[Levels, Levels]]]:
    with (DATA / f"{STEM}_message_10.csv").open() as f:
        messages = [
            Message(
                row,
                int(kind),
                int(order_id),
                int(size),
                int(price),
                Side.BUY if direction == "1" else Side.SELL,
            )
            for row, (_, kind, order_id, size, price, direction) in enumerate(csv.reader(f))
        ]
    books = []
    with (DATA / f"{STEM}_orderbook_10.csv").open() as f:
        for values in csv.reader(f):
            row = list(map(int, values))
            # Empty levels read +-9999999999 with size 0.
            asks = [(row[i], row[i + 1]) for i in range(0, 40, 4) if row[i + 1] > 0]
            bids = [(row[i + 2], row[i + 3]) for i in range(0, 40, 4) if row[i + 3] > 0]
            books.append((bids, asks))
    return messages, books


@dataclass
class Replay:
    book: OrderBook = field(default_factory=lambda: OrderBook(tick_size=100, price_band_bps=None))
    synthetic: dict[tuple[Side, int], list[int]] = field(default_factory=dict)
    known: set[int] = field(default_factory=set)
    next_synthetic: int = 0
    next_taker: int = 10**12
    reconciled: int = 0

    def seed(self, side: Side, price: int, size: int) -> None:
        self.next_synthetic -= 1
        order_id = self.next_synthetic
        events = self.book.submit(Order(order_id, ("seed", order_id), side, price, size))
        assert events[1].kind == "RESTED", events
        self.synthetic.setdefault((side, price), []).append(order_id)

    def resting_id(self, message: Message) -> int | None:
        """The engine order a message's order id refers to (a synthetic one if unknown)."""
        if message.order_id in self.known:
            return message.order_id
        for order_id in self.synthetic.get((message.side, message.price), []):
            if order_id in self.book:
                return order_id
        return None

    def reduce(self, message: Message) -> None:
        order_id = self.resting_id(message)
        assert order_id is not None, f"row {message.row}: nothing rests for {message}"
        order = self.book.get(order_id)
        if order.remaining == message.size:
            events = self.book.cancel(order_id)
            assert events[0].kind == "CANCELLED", events
        else:
            events = self.book.amend(order_id, quantity=order.remaining - message.size)
            assert events[0].kind == "AMENDED", events
            assert events[0].priority_kept

    def take(self, resting_side: Side, price: int, size: int) -> list[tuple[int, int]]:
        """Send one IOC order from the other side; return (maker, quantity) of its fills."""
        self.next_taker += 1
        side = Side.SELL if resting_side is Side.BUY else Side.BUY
        order = Order(self.next_taker, TAKER, side, price, size, time_in_force=TimeInForce.IOC)
        events = self.book.submit(order)
        assert not any(e.kind == "CANCELLED" for e in events), f"IOC not filled: {events}"
        return [(e.maker_order_id, e.quantity) for e in events if e.kind == "TRADE"]

    def apply(self, message: Message) -> None:
        if message.kind == 1:
            events = self.book.submit(
                Order(message.order_id, message.order_id, message.side, message.price, message.size)
            )
            assert [e.kind for e in events][:2] == ["ACCEPTED", "RESTED"], events
            self.known.add(message.order_id)
        elif message.kind in (2, 3):
            self.reduce(message)
        elif message.kind == 4:
            expected = [(self.resting_id(message), message.size)]
            assert self.take(message.side, message.price, message.size) == expected, message
        elif message.kind == 7:
            # LOBSTER marks halts with price -1 and resumption with price 1.
            if message.price == -1:
                self.book.halt()
            elif message.price == 1:
                self.book.resume()

    def reconcile(self, now: tuple[Levels, Levels], before: tuple[Levels, Levels]) -> None:
        """Adopt the file's view of levels that have just entered the window from beyond it."""
        for index, side in ((0, Side.BUY), (1, Side.SELL)):
            if len(before[index]) < 10:
                continue  # the whole side was in view: nothing can come from beyond
            higher_is_better = side is Side.BUY
            old_edge = before[index][9][0]
            edge = now[index][9][0] if len(now[index]) == 10 else None

            def was_out_of_view(price: int, old_edge=old_edge, up=higher_is_better) -> bool:
                return price < old_edge if up else price > old_edge

            def is_in_view(price: int, edge=edge, up=higher_is_better) -> bool:
                return edge is None or (price >= edge if up else price <= edge)

            ours = dict(self.book.depth(10_000)[index])
            theirs = dict(now[index])
            for price in sorted(ours.keys() | theirs.keys()):
                if not (was_out_of_view(price) and is_in_view(price)):
                    continue
                have, want = ours.get(price, 0), theirs.get(price, 0)
                if have == want:
                    continue
                self.reconciled += 1
                if want > have:
                    self.seed(side, price, want - have)
                    continue
                # Which hidden-from-view orders went away is unknowable: take the newest.
                extra = have - want
                for order in reversed(self.book.level_orders(side, price)):
                    if order.remaining <= extra:
                        extra -= order.remaining
                        self.book.cancel(order.order_id)
                    else:
                        self.book.amend(order.order_id, quantity=order.remaining - extra)
                        extra = 0
                    if not extra:
                        break


def seeded() -> tuple[Replay, list[Message], list[tuple[Levels, Levels]]]:
    messages, books = load()
    replay = Replay()
    bids, asks = books[0]
    for price, size in bids:
        replay.seed(Side.BUY, price, size)
    for price, size in asks:
        replay.seed(Side.SELL, price, size)
    # Message 1's order is inside row 1 already: it is one of the seeded orders.
    return replay, messages, books


def top9(levels: tuple[Levels, Levels]) -> tuple[Levels, Levels]:
    return levels[0][:9], levels[1][:9]


def test_every_row_of_the_real_book_is_reproduced():
    replay, messages, books = seeded()
    for message in messages[1:]:
        replay.apply(message)
        replay.reconcile(books[message.row], books[message.row - 1])
        assert replay.book.depth(9) == top9(books[message.row]), f"row {message.row + 1}"
    # Only levels that came from beyond the top 10 were ever taken from the file.
    assert replay.reconciled <= 20


def execution_runs(messages: list[Message]) -> Iterator[list[Message]]:
    """Split messages into runs: consecutive type-4 executions against one side, or singles."""
    run: list[Message] = []
    for message in messages:
        if run and not (message.kind == 4 and run[-1].kind == 4 and message.side is run[-1].side):
            yield run
            run = []
        run.append(message)
    if run:
        yield run


def merged(fills: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """One incoming order fills a resting order once even if two messages reported it."""
    result: list[tuple[int, int]] = []
    for maker, quantity in fills:
        if result and result[-1][0] == maker:
            result[-1] = (maker, result[-1][1] + quantity)
        else:
            result.append((maker, quantity))
    return result


def test_each_run_of_executions_as_one_order_fills_the_same_resting_orders():
    replay, messages, books = seeded()
    runs = list(execution_runs(messages[1:]))
    multi = 0
    for run in runs:
        first, last = run[0], run[-1]
        if first.kind == 4:
            expected = merged([(replay.resting_id(m), m.size) for m in run])
            fills = replay.take(first.side, last.price, sum(m.size for m in run))
            assert fills == expected, f"rows {first.row + 1}-{last.row + 1}"
            multi += len(run) > 1
        else:
            replay.apply(first)
        replay.reconcile(books[last.row], books[first.row - 1])
        assert replay.book.depth(9) == top9(books[last.row]), f"row {last.row + 1}"
    assert multi >= 20, "the sample has many multi-execution runs; the grouping lost them"
