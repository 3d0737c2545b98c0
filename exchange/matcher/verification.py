"""Proof that a running matcher's book is the database's: ``manage.py verify_books``.

For each market the matcher's Redis snapshot (``dex:book:<symbol>``, the top
``SNAPSHOT_LEVELS`` levels a side) is compared with the depth recomputed from the open
orders in PostgreSQL, and its sequence with the journal's. ``books_verify()`` adds
``ledger_check()``; an empty list means every book is right.

Icebergs are the one approximation. The engine shows ``min(display, remaining)`` when
an iceberg rests or is restored, but a live iceberg whose visible slice was partly
taken shows less until it refills, and the database does not record the slice. So a
level holding icebergs is right when its quantity lies between the non-iceberg total
plus one lot per iceberg and the non-iceberg total plus every iceberg's full slice.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import Max

from exchange.matcher.publish import SNAPSHOT_LEVELS, book_key, redis_client
from exchange.models import CommandStatus, Market, Order, OrderCommand, OrderStatus, Side
from portfolio.reconciliation import ledger_check

BOOK_STATUSES = (OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED)
ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Level:
    """What the database says one price level must show: ``low`` ≤ visible ≤ ``high``
    (equal unless icebergs rest there)."""

    low: Decimal
    high: Decimal

    def holds(self, quantity: Decimal) -> bool:
        return self.low <= quantity <= self.high

    def __str__(self) -> str:
        return str(self.high) if self.low == self.high else f"{self.low}..{self.high}"


@dataclass(frozen=True, slots=True)
class BookState:
    """A market's book as PostgreSQL has it, read in one snapshot."""

    sequence: int
    pending: int
    bids: dict[Decimal, Level]
    asks: dict[Decimal, Level]


def book_state(market: Market, *, levels: int = SNAPSHOT_LEVELS) -> BookState:
    """The expected top ``levels`` of each side of ``market`` from its open orders."""
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost:  # read the orders and the journal in one snapshot
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        commands = OrderCommand.objects.filter(market=market)
        sequence = commands.aggregate(m=Max("sequence"))["m"] or 0
        pending = commands.filter(status=CommandStatus.PENDING).count()
        sums: dict[str, dict[Decimal, list[Decimal]]] = {
            Side.BUY: defaultdict(lambda: [ZERO, ZERO]),
            Side.SELL: defaultdict(lambda: [ZERO, ZERO]),
        }
        rows = Order.objects.filter(market=market, status__in=BOOK_STATUSES).values_list(
            "side", "price", "remaining", "display_quantity"
        )
        for side, price, remaining, display in rows:
            bounds = sums[side][price]
            if display is None or display >= remaining:
                bounds[0] += remaining
                bounds[1] += remaining
            else:
                bounds[0] += market.lot_size
                bounds[1] += display

    def top(side: str, best_first: bool) -> dict[Decimal, Level]:
        prices = sorted(sums[side], reverse=best_first)[:levels]
        return {p: Level(*sums[side][p]) for p in prices}

    return BookState(sequence, pending, top(Side.BUY, True), top(Side.SELL, False))


def snapshot_read(symbol: str) -> dict | None:
    raw = redis_client().get(book_key(symbol))
    return None if raw is None else json.loads(raw)


def book_differences(market: Market, snapshot: dict | None, state: BookState) -> list[str]:
    """How ``snapshot`` (the matcher's published book) differs from ``state`` (the
    database's). Empty when they agree."""
    symbol = market.symbol
    if snapshot is None:
        if state.sequence or state.bids or state.asks:
            return [f"{symbol}: no book snapshot in Redis, but the market has orders"]
        return []
    found = []
    if snapshot.get("symbol") != symbol:
        found.append(f"{symbol}: snapshot names market {snapshot.get('symbol')!r}")
    if snapshot["sequence"] != state.sequence:
        found.append(
            f"{symbol}: snapshot at sequence {snapshot['sequence']}, journal at "
            f"{state.sequence} ({state.pending} commands pending)"
        )
    for name, expected in (("bids", state.bids), ("asks", state.asks)):
        shown = {Decimal(p): Decimal(q) for p, q in snapshot[name]}
        for price in sorted(expected.keys() | shown.keys()):
            want, have = expected.get(price), shown.get(price)
            if want is None:
                found.append(f"{symbol} {name} {price}: book shows {have}, no open orders there")
            elif have is None:
                found.append(f"{symbol} {name} {price}: open orders for {want}, not on the book")
            elif not want.holds(have):
                found.append(f"{symbol} {name} {price}: book shows {have}, open orders {want}")
    return found


def books_verify(symbols: list[str] | None = None) -> list[str]:
    """Every difference between the matchers' books and the database, then every
    ledger discrepancy. Read while commands are pending or a batch is being
    published, a book may lag the journal; the caller retries before concluding."""
    markets = Market.objects.order_by("pk")
    if symbols:
        markets = markets.filter(symbol__in=symbols)
        missing = set(symbols) - {m.symbol for m in markets}
    else:
        missing = set()
    found = [f"{symbol}: no such market" for symbol in sorted(missing)]
    for market in markets:
        snapshot = snapshot_read(market.symbol)
        found += book_differences(market, snapshot, book_state(market))
    found += [str(d) for d in ledger_check()]
    return found
